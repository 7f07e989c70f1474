"""What every subcommand shares: config, store, output, account choice, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn

from ilink.wire import account_id_candidates

from ..config import Config, load_config
from ..exitcodes import Exit

__all__ = ["App", "CliError", "Command"]


class CliError(Exception):
    """A user-facing failure: one line on stderr (or in the JSON object) and an exit code."""

    def __init__(self, message: str, code: Exit = Exit.ERROR, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.fields = fields


@dataclass
class App:
    """Per-invocation state handed to each subcommand."""

    args: argparse.Namespace
    config: Config
    json: bool = False
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> App:
        config = load_config(getattr(args, "config", None))
        return cls(args=args, config=config, json=bool(getattr(args, "json", False)))

    @cached_property
    def store(self) -> Any:
        from store import Store

        st = Store.open(self.config.database_url, home=self.config.home)
        self._closers.append(st.close)
        return st

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer()
        self._closers.clear()

    # ---- output ---------------------------------------------------------------------

    def emit(self, result: dict[str, Any], human: str | None = None) -> None:
        """``--json``: exactly one JSON object on stdout; otherwise the human text."""
        if self.json:
            sys.stdout.write(json.dumps(result, ensure_ascii=False, default=str) + "\n")
        elif human:
            sys.stdout.write(human.rstrip("\n") + "\n")
        sys.stdout.flush()

    def say(self, text: str) -> None:
        """Progress for people: stderr, so stdout stays machine-readable."""
        sys.stderr.write(text.rstrip("\n") + "\n")
        sys.stderr.flush()

    def fail(self, message: str, code: Exit = Exit.ERROR, **fields: Any) -> NoReturn:
        raise CliError(message, code, **fields)

    # ---- accounts -------------------------------------------------------------------

    def account(self, wanted: str | None = None, *, active_only: bool = True) -> Any:
        """The account named by ``--account`` (raw or normalised id), else the default:
        the only active one, else the most recently used active one."""
        wanted = wanted if wanted is not None else getattr(self.args, "account", None)
        accounts = self.store.list_accounts()
        if wanted:
            ids = set(account_id_candidates(wanted))
            for acc in accounts:
                if acc.bot_id in ids or account_id_candidates(acc.bot_id)[0] in ids:
                    if active_only and acc.state != "active":
                        if acc.state == "expired":
                            self.fail(
                                f"account {acc.bot_id} session expired: run `ilinkbot login`",
                                Exit.SESSION_EXPIRED,
                            )
                        self.fail(
                            f"account {acc.bot_id} is logged out: run `ilinkbot login`",
                            Exit.NO_ACCOUNT,
                        )
                    return acc
            self.fail(f"no account {wanted!r} (see `ilinkbot status`)", Exit.NO_ACCOUNT)
        active = [a for a in accounts if a.state == "active"]
        if not active:
            if any(a.state == "expired" for a in accounts):
                self.fail("the session expired: run `ilinkbot login`", Exit.SESSION_EXPIRED)
            self.fail("no account logged in: run `ilinkbot login`", Exit.NO_ACCOUNT)
        return active[0]  # list_accounts() is ordered by last use, newest first


Command = Callable[[App], int]
