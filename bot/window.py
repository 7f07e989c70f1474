"""The reply window: a bot may message a user only within ``window_seconds`` of the
user's last message, and at most ``quota`` times per user message (PROTOCOL.md §8.4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ilinkbot.store import Peer

__all__ = ["WindowState", "window_state"]


@dataclass(frozen=True)
class WindowState:
    open: bool
    messages_left: int
    seconds_left: float
    reason: str | None  # why it is closed

    def to_dict(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "messages_left": self.messages_left,
            "seconds_left": round(self.seconds_left),
            "reason": self.reason,
        }


def window_state(
    peer: Peer, *, quota: int, window_seconds: float, now: datetime | None = None
) -> WindowState:
    """Predict whether the server would accept one more bot message to ``peer``."""
    if peer is None or not getattr(peer, "context_token", None) or peer.last_inbound_at is None:
        return WindowState(False, 0, 0.0, "the user has not written to this bot yet")
    now = now or datetime.now(UTC)
    last = peer.last_inbound_at
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    seconds_left = max(0.0, window_seconds - (now - last).total_seconds())
    messages_left = max(0, quota - int(peer.sent_since_inbound or 0))
    if seconds_left <= 0:
        return WindowState(
            False,
            messages_left,
            0.0,
            f"reply window closed: the user's last message is older than {int(window_seconds)} s",
        )
    if messages_left <= 0:
        return WindowState(
            False,
            0,
            seconds_left,
            f"reply quota used: {quota} messages since the user's last message",
        )
    return WindowState(True, messages_left, seconds_left, None)
