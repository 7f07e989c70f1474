"""Taking in a getupdates batch: store it (inbox, cursor, context tokens in one
transaction), then release what was held for the users who just wrote."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from ilinkbot.ilink import UpdatesBatch, WeixinMessage
from ilinkbot.ilink.log import get_logger, register_secret
from ilinkbot.store import Account, InboundRecord, InboxRow

from .outbox import Outbox
from .textsplit import encodable

__all__ = ["MALFORMED_SENDER", "absorb_batch", "inbound_record", "writers"]

#: Stands in for the sender of an entry that has none (the store needs a user id); such a
#: row is never handled: the runner marks it dead as malformed.
MALFORMED_SENDER = "(malformed)"

_log = get_logger("ilinkbot.inbound")


def _scrub(value: Any) -> Any:
    """Replace lone surrogates (JSON escapes like ``\\ud800``: valid JSON, not valid
    Unicode, unstorable as UTF-8) with U+FFFD, so one such message cannot block a batch."""
    if isinstance(value, str):
        return encodable(value)[0]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def inbound_record(msg: WeixinMessage | Any) -> InboundRecord:
    """The store record of one inbound message; a malformed entry is kept too, under a
    content-derived id, so it is logged and stored rather than lost or crashing the loop."""
    if isinstance(msg, WeixinMessage):
        raw = msg.to_dict()
        clean = _scrub(raw)
        if clean != raw:
            msg, raw = WeixinMessage.from_dict(clean), clean
        mid = msg.provider_id
        user = msg.from_user_id or ""
        token = msg.context_token
        created = (
            datetime.fromtimestamp(msg.create_time_ms / 1000, UTC)
            if isinstance(msg.create_time_ms, int) and 0 < msg.create_time_ms < 2**45
            else None
        )
    else:
        raw = {"malformed": _scrub(msg)}
        mid, user, token, created = None, "", None, None
    if not mid:
        digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
        mid = f"noid:{digest[:32]}"
    register_secret(token)
    if not user:
        return InboundRecord(
            message_id=mid,
            user_id=MALFORMED_SENDER,
            context_token=None,
            raw=raw,
            created_at=created,
            is_user=False,
        )
    return InboundRecord(
        message_id=mid, user_id=user, context_token=token, raw=raw, created_at=created
    )


async def absorb_batch(
    outbox: Outbox, account: Account, batch: UpdatesBatch, *, release: bool = True
) -> list[Any]:
    """Record ``batch`` and (with ``release``) deliver what was held for everyone who wrote
    in it. A poller releases itself, so that delivery runs in a task of its own.

    Returns the newly stored inbox rows (messages seen before are not returned)."""
    svc = outbox.svc
    records = [inbound_record(m) for m in batch.messages]
    for bad in batch.malformed:
        _log.warning("malformed_message", account=account.bot_id, entry=repr(bad)[:200])
        records.append(inbound_record(bad))
    rows = await svc.call(svc.store.record_batch, account.bot_id, records, batch.cursor or "")
    if rows:
        _log.info("inbound_batch", account=account.bot_id, new=len(rows))
    if release:
        for user in writers(rows):
            await outbox.release(account, user)
    return list(rows)


def writers(rows: list[InboxRow]) -> list[str]:
    """The users who wrote the inbox ``rows``, once each, in order."""
    return list(
        dict.fromkeys(r.user_id for r in rows if r.user_id and r.user_id != MALFORMED_SENDER)
    )
