"""Observers of a running bot: what was received and how deliveries went.

A :class:`Events` hangs off the :class:`~ilinkbot.bot.runtime.Runtime` (and any
:class:`~ilinkbot.bot.outbox.Outbox`); ``serve --webhook`` subscribes to it. Observers are
called synchronously on the event loop, so they must only queue work (never wait); one that
raises is logged and skipped, never breaking the receive loop or a send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ilinkbot.ilink.log import get_logger
from ilinkbot.store import Account

__all__ = ["Events"]

_log = get_logger("ilinkbot.events")

#: ``(account, inbox_rows)``: a batch of new inbound messages was stored.
Received = Callable[[Any, Sequence[Any]], None]
#: ``(account, outcome)``: an outbox row changed state (a ``MessageOutcome``).
DeliveryChanged = Callable[[Any, Any], None]


@dataclass
class Events:
    received: list[Received] = field(default_factory=list)
    delivery: list[DeliveryChanged] = field(default_factory=list)

    def messages_stored(self, account: Account, rows: Sequence[Any]) -> None:
        if rows:
            for observer in self.received:
                _call(observer, account, rows)

    def delivery_changed(self, account: Account, outcome: Any) -> None:
        for observer in self.delivery:
            _call(observer, account, outcome)


def _call(observer: Callable[..., None], *args: Any) -> None:
    try:
        observer(*args)
    except Exception:
        _log.exception("observer_failed", observer=getattr(observer, "__qualname__", "?"))
