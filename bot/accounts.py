"""Choosing the account (and recipient) a command acts on."""

from __future__ import annotations

from typing import Any

from ilinkbot.ilink.log import get_logger
from ilinkbot.ilink.wire import account_id_candidates
from ilinkbot.store import Account, Peer

from .errors import AccountError, AmbiguousAccount, UnknownAccount, UnknownRecipient
from .exitcodes import Exit

_log = get_logger("ilinkbot.accounts")

__all__ = ["choose_account", "find_account", "recipient_and_peer", "resolve_recipient"]


def find_account(store: Any, wanted: str) -> Any | None:
    """The stored account named ``wanted``, raw (``abc@im.bot``) or normalised (``abc-im-bot``)."""
    ids = set(account_id_candidates(wanted))
    for acc in store.list_accounts():
        if acc.bot_id in ids or account_id_candidates(acc.bot_id)[0] in ids:
            return acc
    return None


def _usable(acc: Account, what: str = "account") -> Any:
    if acc.state == "expired":
        raise AccountError(
            f"{what} {acc.bot_id}: the session expired; run `ilinkbot login`",
            Exit.SESSION_EXPIRED,
        )
    if acc.state != "active" or not acc.token:
        raise AccountError(f"{what} {acc.bot_id} is logged out; run `ilinkbot login`")
    return acc


_CHOOSE = "use --account, or change the default with `ilinkbot accounts default ID|--clear`"


def choose_account(
    store: Any,
    wanted: str | None = None,
    *,
    for_users: list[str] | None = None,
    active_only: bool = True,
) -> Any:
    """``wanted`` if given; else the default account (``ilinkbot accounts default``); else
    the only active account; else the only one that knows all ``for_users``. Anything
    else is ambiguous and an error: a push never guesses. Errors say what to do."""
    if wanted:
        acc = find_account(store, wanted)
        if acc is None:
            raise UnknownAccount(f"no account {wanted!r}; see `ilinkbot status`")
        return _usable(acc) if active_only else acc
    default = store.default_account()
    if default is not None:
        acc = store.get_account(default)
        if acc is None:
            raise AccountError(f"the default account {default} no longer exists; {_CHOOSE}")
        if not active_only:
            return acc
        try:
            return _usable(acc, "the default account")
        except AccountError as exc:
            # Never fall back to another account: say so, and how to choose.
            raise AccountError(f"{exc}, {_CHOOSE}", exc.exit_code) from None
    accounts = store.list_accounts()
    active = [a for a in accounts if a.state == "active" and a.token]
    if not active:
        if any(a.state == "expired" for a in accounts):
            raise AccountError(
                "the bot session expired; run `ilinkbot login`", Exit.SESSION_EXPIRED
            )
        raise AccountError("no account is logged in; run `ilinkbot login`")
    if len(active) == 1:
        return active[0]
    names = ", ".join(a.bot_id for a in active)
    if for_users:
        knowing = [a for a in active if all(_knows(store, a.bot_id, u) for u in for_users)]
        if len(knowing) == 1:
            return knowing[0]
        if len(knowing) > 1:
            names = ", ".join(a.bot_id for a in knowing)
            raise AmbiguousAccount(
                f"several accounts can reach {', '.join(for_users)} ({names}); "
                "choose one with --account or `ilinkbot accounts default ID`"
            )
    raise AmbiguousAccount(
        f"several accounts are logged in ({names}); choose one with --account "
        "or set a default with `ilinkbot accounts default ID`"
    )


def _knows(store: Any, bot_id: str, user: str) -> bool:
    return store.get_peer(bot_id, user) is not None or store.resolve_alias(bot_id, user) is not None


def resolve_recipient(store: Any, account: Account, to: str | None) -> str:
    """A user id from an alias, a user id, or ``None`` (the account's owner)."""
    return recipient_and_peer(store, account, to)[0]


def recipient_and_peer(store: Any, account: Account, to: str | None) -> tuple[str, Peer | None]:
    """:func:`resolve_recipient`, and that user's peer (None if they never wrote), in one
    read: a push needs both."""
    if not to:
        if not account.owner_user_id:
            raise UnknownRecipient(f"account {account.bot_id} has no owner; use --to USER")
        owner = str(account.owner_user_id)
        return owner, store.get_peer(account.bot_id, owner)
    peer = store.peer_named(account.bot_id, to)
    if peer is not None and peer.alias == to:  # an alias wins over a user id
        return peer.user_id, peer
    if "@" in to:
        return to, peer
    raise UnknownRecipient(
        f"unknown recipient {to!r}: not an alias of {account.bot_id} "
        "and not a user id (user ids look like xxx@im.wechat)"
    )


def mark_expired(store: Any, bot_id: str) -> None:
    """The server answered -14 for ``bot_id``: its token is stale. The one place that marks an
    account expired, and says what to do about it."""
    store.set_account_state(bot_id, "expired")
    _log.error("session_expired", account=bot_id, hint="run `ilinkbot login`")
