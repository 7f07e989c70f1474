"""Errors of the bot layer; each knows the CLI exit code that reports it."""

from __future__ import annotations

from .exitcodes import Exit

__all__ = [
    "AccountError",
    "AmbiguousAccount",
    "BotError",
    "NoContextError",
    "UnknownAccount",
    "UnknownRecipient",
]


class BotError(Exception):
    """Base of bot-layer errors: a one-line message and an exit code."""

    exit_code: Exit = Exit.ERROR

    def __init__(self, message: str, exit_code: Exit | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class AccountError(BotError):
    """No usable account, an ambiguous choice, or an expired/logged-out one."""

    exit_code = Exit.NO_ACCOUNT


class UnknownAccount(AccountError):
    """An account named (``--account``, ``?account=``) that is not stored."""


class AmbiguousAccount(AccountError):
    """Several accounts could do it: the caller must name one."""


class UnknownRecipient(BotError):
    """An alias or user id this account has never seen."""

    exit_code = Exit.NOT_FOUND


class NoContextError(BotError):
    """The user never wrote to this bot: there is no context token to message them with."""

    exit_code = Exit.NO_CONTEXT

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"{user_id} has never written to this bot (no context token); "
            "a bot can only message a user who wrote to it first"
        )
        self.user_id = user_id
