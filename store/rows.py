"""Store rows (mappings from either lane) as the store's row types (:mod:`store.models`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .models import (
    Account,
    AccountState,
    InboxRow,
    OutboxRow,
    OutboxState,
    Peer,
)

__all__ = [
    "account_row",
    "inbox_row",
    "outbox_row",
    "peer_row",
]


def account_row(r: Mapping[Any, Any]) -> Account:
    return Account(
        bot_id=r["bot_id"],
        token=r["token"],
        base_url=r["base_url"],
        owner_user_id=r["owner_user_id"],
        state=AccountState(r["state"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        last_used_at=r["last_used_at"],
        token_saved_at=r["token_saved_at"],
        ref=r["ref"],
    )


def peer_row(r: Mapping[Any, Any]) -> Peer:
    return Peer(
        bot_id=r["bot_id"],
        user_id=r["user_id"],
        context_token=r["context_token"],
        last_inbound_at=r["last_inbound_at"],
        sent_since_inbound=int(r["sent_since_inbound"]),
        first_seen_at=r["first_seen_at"],
        last_seen_at=r["last_seen_at"],
        alias=r["alias"],
    )


def inbox_row(r: Mapping[Any, Any]) -> InboxRow:
    return InboxRow(
        id=int(r["id"]),
        bot_id=r["bot_id"],
        message_id=r["message_id"],
        user_id=r["user_id"],
        context_token=r["context_token"],
        raw=r["raw"],
        created_at=r["created_at"],
        received_at=r["received_at"],
        handled_at=r["handled_at"],
        attempts=int(r["attempts"]),
        last_error=r["last_error"],
        dead_at=r["dead_at"],
    )


def outbox_row(r: Mapping[Any, Any]) -> OutboxRow:
    return OutboxRow(
        id=int(r["id"]),
        bot_id=r["bot_id"],
        user_id=r["user_id"],
        client_id=r["client_id"],
        payload=r["payload"],
        state=OutboxState(r["state"]),
        attempts=int(r["attempts"]),
        last_error=r["last_error"],
        message_id=r["message_id"],
        seq=int(r["seq"]),
        group=r["group_key"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        sent_at=r["sent_at"],
        claimed_until=r["claimed_until"],
        claimed_by=r["claimed_by"],
    )
