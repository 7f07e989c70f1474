"""What ``ilinkbot status``, the MCP server and ``/metrics`` report, built in one place.

:func:`summary` costs a few aggregate reads however many accounts there are; per-account
detail (:func:`account_status`) reads each account's users, held and dead rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ilinkbot.store import Account, Peer, Store

from .config import Config
from .window import window_state

__all__ = ["account_status", "iso", "peer_status", "summary"]


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def peer_status(config: Config, peer: Peer, now: datetime) -> dict[str, Any]:
    """One known user: context token age and the reply window left."""
    ws = window_state(
        peer, quota=config.reply_quota, window_seconds=config.reply_window_seconds, now=now
    )
    token_age = None
    if peer.context_token and peer.last_inbound_at is not None:
        token_age = round((now - peer.last_inbound_at).total_seconds())
    return {
        "user_id": peer.user_id,
        "alias": peer.alias,
        "has_context_token": bool(peer.context_token),
        "context_token_age_seconds": token_age,
        "last_inbound_at": iso(peer.last_inbound_at),
        "sent_since_inbound": peer.sent_since_inbound,
        "window_open": ws.open,
        "window_messages_left": ws.messages_left,
        "window_seconds_left": round(ws.seconds_left),
        "window_reason": ws.reason,
    }


def account_status(
    store: Store, config: Config, account: Account, *, default: str | None, now: datetime
) -> dict[str, Any]:
    """One account with its users, held messages and failed inbound messages."""
    return {
        "account": account.bot_id,
        "state": str(account.state),
        "owner": account.owner_user_id,
        "base_url": account.base_url,
        "created_at": iso(account.created_at),
        "last_used_at": iso(account.last_used_at),
        "default": account.bot_id == default,
        "users": [peer_status(config, p, now) for p in store.list_peers(account.bot_id)],
        "held_messages": len(store.list_outbox(account.bot_id, state="held")),
        "dead_inbox": len(store.dead_inbox(account.bot_id)),
    }


def summary(store: Store) -> dict[str, Any]:
    """Accounts and outbox rows by state, failed inbound messages, accounts being polled
    (a live lease) and live workers: the same numbers at 1 or 10,000 accounts."""
    return store.counts()
