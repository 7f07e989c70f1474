"""What every subcommand shares: config, store, output, account choice, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NoReturn

from ..config import Config, load_config
from ..exitcodes import Exit

__all__ = ["App", "CliError", "Command", "row_id"]

#: Row ids are signed 64-bit integers in both databases.
_MAX_ROW_ID = 2**63 - 1


def row_id(text: str) -> int:
    """argparse type of an outbox id: a usage error (exit 2) unless it could be a row."""
    if not text.isdigit() or len(text) > 19 or not 0 < int(text) <= _MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"not an outbox id: {text[:40]!r}")
    return int(text)


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
        from ilinkbot.store import Store

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

    def ilink_client(self, base_url: str | None = None, token: str | None = None) -> Any:
        """An ``IlinkClient`` with this configuration (its own HTTP pool; use ``async with``)."""
        from ilinkbot.ilink.client import IlinkClient

        c = self.config
        return IlinkClient(
            base_url or c.base_url,
            token,
            channel_version=c.channel_version,
            bot_agent=c.bot_agent,
            route_tag=c.route_tag,
        )

    def say(self, text: str) -> None:
        """Progress for people: stderr, so stdout stays machine-readable."""
        sys.stderr.write(text.rstrip("\n") + "\n")
        sys.stderr.flush()

    def fail(self, message: str, code: Exit = Exit.ERROR, **fields: Any) -> NoReturn:
        raise CliError(message, code, **fields)

    # ---- accounts -------------------------------------------------------------------

    def account(
        self,
        wanted: str | None = None,
        *,
        for_users: list[str] | None = None,
        active_only: bool = True,
    ) -> Any:
        """The account named by ``--account`` (raw or normalised id), else the default."""
        from ..accounts import choose_account

        wanted = wanted if wanted is not None else getattr(self.args, "account", None)
        return choose_account(self.store, wanted, for_users=for_users, active_only=active_only)


Command = Callable[[App], int]
