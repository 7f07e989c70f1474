"""The inbox: getupdates batches recorded atomically with the cursor, and handler outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Executable, bindparam, case, func, literal, select, update
from sqlalchemy.sql.elements import BindParameter

from .db import ACCOUNT_KNOWN, PG_BATCH_LOCK_NAMESPACE, PG_LOCK_KNOWN_ACCOUNT, StoreBase
from .driver import InsertFactory, Sql
from .errors import NotFoundError, UnknownAccountError
from .log import get_logger
from .models import InboundRecord, InboxRow, UTCDateTime, cursors, inbox, peers
from .rows import inbox_row

__all__ = ["InboxStore"]

log = get_logger(__name__)


def _insert_inbox(insert: InsertFactory) -> Executable:
    """A message not seen before (by ``(bot_id, message_id)``), returning its id."""
    return (
        insert(inbox)
        .values(
            bot_id=bindparam("bot_id"),
            message_id=bindparam("message_id"),
            user_id=bindparam("user_id"),
            context_token=bindparam("context_token"),
            raw=bindparam("raw"),
            created_at=bindparam("created_at"),
            received_at=bindparam("now"),
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=[inbox.c.bot_id, inbox.c.message_id])
        .returning(inbox.c.id)
    )


def _touch_peer(insert: InsertFactory) -> Executable:
    """A user wrote: newest token (a message without one keeps the old), reply window
    reset, last_inbound_at never moved backwards, first seen kept."""
    stmt = insert(peers).values(
        bot_id=bindparam("bot_id"),
        user_id=bindparam("user_id"),
        context_token=bindparam("context_token"),
        last_inbound_at=bindparam("inbound_at"),
        sent_since_inbound=0,
        first_seen_at=bindparam("now"),
        last_seen_at=bindparam("now"),
    )
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[peers.c.bot_id, peers.c.user_id],
        set_={
            "context_token": func.coalesce(new.context_token, peers.c.context_token),
            "last_inbound_at": case(
                (
                    peers.c.last_inbound_at.is_(None)
                    | (peers.c.last_inbound_at < new.last_inbound_at),
                    new.last_inbound_at,
                ),
                else_=peers.c.last_inbound_at,
            ),
            "sent_since_inbound": 0,
            "first_seen_at": func.coalesce(peers.c.first_seen_at, new.first_seen_at),
            "last_seen_at": new.last_seen_at,
        },
    )


def _save_cursor(insert: InsertFactory) -> Executable:
    stmt = insert(cursors).values(
        bot_id=bindparam("bot_id"), cursor=bindparam("cursor"), updated_at=bindparam("now")
    )
    return stmt.on_conflict_do_update(
        index_elements=[cursors.c.bot_id],
        set_={"cursor": stmt.excluded.cursor, "updated_at": stmt.excluded.updated_at},
    )


_INSERT_INBOX = Sql(_insert_inbox)
_TOUCH_PEER = Sql(_touch_peer)
_SAVE_CURSOR = Sql(_save_cursor)


def _ts(value: datetime) -> BindParameter[datetime]:
    """A timestamp literal typed as UTCDateTime (needed inside SQL functions)."""
    return literal(value, UTCDateTime())


class InboxStore(StoreBase):
    """The cursor and the inbox of each account."""

    def get_cursor(self, bot_id: str) -> str:
        """The stored ``get_updates_buf``; ``""`` when none."""
        with self._db.read() as conn:
            value = conn.execute(
                select(cursors.c.cursor).where(cursors.c.bot_id == bot_id)
            ).scalar_one_or_none()
        return value or ""

    def record_batch(
        self, bot_id: str, records: Sequence[InboundRecord], new_cursor: str
    ) -> list[InboxRow]:
        """Record one getupdates answer atomically.

        In one transaction: insert the messages not seen before (by ``(bot_id, message_id)``),
        update each writing user's peer (newest context token, ``last_inbound_at``, reply
        window reset, first/last seen), and advance the cursor if ``new_cursor`` is non-empty.
        Returns the newly inserted rows, in batch order. A crash at any point leaves either
        everything or nothing, so the cursor never gets ahead of the inbox.
        """
        now = self._db.now()
        raws = [record.raw_dict() for record in records]  # validate before taking the lock
        inserted: list[InboxRow] = []
        with self._db.lane.write() as cur:
            if self._db.pg:
                known = cur.rows(
                    PG_LOCK_KNOWN_ACCOUNT, namespace=PG_BATCH_LOCK_NAMESPACE, bot_id=bot_id
                )
            else:
                known = cur.rows(ACCOUNT_KNOWN, bot_id=bot_id)
            if not known:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
            created_at = [
                record.created_at.astimezone(UTC) if record.created_at else None
                for record in records
            ]
            new_ids = cur.scalars_many(
                _INSERT_INBOX,
                [
                    {
                        "bot_id": bot_id,
                        "message_id": record.message_id,
                        "user_id": record.user_id,
                        "context_token": record.context_token or None,
                        "raw": raw,
                        "created_at": created,
                        "now": now,
                    }
                    for record, raw, created in zip(records, raws, created_at, strict=True)
                ],
            )
            # user -> (token, inbound time) folded over the new messages in batch order
            latest: dict[str, tuple[str | None, datetime]] = {}
            for record, raw, created, new_id in zip(
                records, raws, created_at, new_ids, strict=True
            ):
                if new_id is None:
                    continue  # seen before (a replay, or a duplicate within the batch)
                inserted.append(
                    InboxRow(
                        id=int(new_id),
                        bot_id=bot_id,
                        message_id=record.message_id,
                        user_id=record.user_id,
                        context_token=record.context_token or None,
                        raw=raw,
                        created_at=created,
                        received_at=now,
                        handled_at=None,
                        attempts=0,
                        last_error=None,
                        dead_at=None,
                    )
                )
                if not record.is_user:
                    continue
                inbound_at = min(created or now, now)
                token, previous_at = latest.get(record.user_id, (None, inbound_at))
                latest[record.user_id] = (
                    record.context_token or token,
                    max(previous_at, inbound_at),
                )
            # Sorted, so that concurrent writers lock peer rows in one order (PostgreSQL).
            cur.execute_many(
                _TOUCH_PEER,
                [
                    {
                        "bot_id": bot_id,
                        "user_id": user_id,
                        "context_token": latest[user_id][0],
                        "inbound_at": latest[user_id][1],
                        "now": now,
                    }
                    for user_id in sorted(latest)
                ],
            )
            if new_cursor:
                cur.execute(_SAVE_CURSOR, bot_id=bot_id, cursor=new_cursor, now=now)
        return inserted  # the caller logs what came in (bot.inbound: inbound_batch)

    def unhandled(self, bot_id: str, limit: int | None = None) -> list[InboxRow]:
        """Inbox rows neither handled nor dead, in arrival order."""
        query = (
            select(inbox)
            .where(
                inbox.c.bot_id == bot_id,
                inbox.c.handled_at.is_(None),
                inbox.c.dead_at.is_(None),
            )
            .order_by(inbox.c.id)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._db.read() as conn:
            return [inbox_row(r) for r in conn.execute(query).mappings()]

    def get_inbox(self, inbox_id: int) -> InboxRow | None:
        with self._db.read() as conn:
            row = conn.execute(select(inbox).where(inbox.c.id == inbox_id)).mappings().first()
        return inbox_row(row) if row is not None else None

    def mark_handled(self, inbox_id: int) -> None:
        with self._db.write() as conn:
            result = conn.execute(
                update(inbox)
                .where(inbox.c.id == inbox_id)
                .values(handled_at=func.coalesce(inbox.c.handled_at, _ts(self._db.now())))
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no inbox row {inbox_id}")

    def record_handler_failure(self, inbox_id: int, error: str, *, max_attempts: int) -> InboxRow:
        """attempts += 1, keep the error; the row is dead once attempts >= max_attempts."""
        now = self._db.now()
        with self._db.write() as conn:
            result = conn.execute(
                update(inbox)
                .where(inbox.c.id == inbox_id)
                .values(
                    attempts=inbox.c.attempts + 1,
                    last_error=error,
                    dead_at=case(
                        (
                            inbox.c.attempts + 1 >= max_attempts,
                            func.coalesce(inbox.c.dead_at, _ts(now)),
                        ),
                        else_=inbox.c.dead_at,
                    ),
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no inbox row {inbox_id}")
            row = inbox_row(
                conn.execute(select(inbox).where(inbox.c.id == inbox_id)).mappings().one()
            )
        if row.dead:
            log.warning("inbox_dead", bot_id=row.bot_id, inbox_id=inbox_id, attempts=row.attempts)
        return row

    def recent_inbox(
        self,
        bot_id: str,
        user_id: str | None = None,
        *,
        limit: int = 20,
        after_id: int | None = None,
    ) -> list[InboxRow]:
        """Inbox rows of ``bot_id`` (of ``user_id`` only, when given), newest first, at
        most ``limit``; with ``after_id`` only rows stored after that row. Handled or not:
        reading never changes a row."""
        query = select(inbox).where(inbox.c.bot_id == bot_id)
        if user_id is not None:
            query = query.where(inbox.c.user_id == user_id)
        if after_id is not None:
            query = query.where(inbox.c.id > after_id)
        query = query.order_by(inbox.c.id.desc()).limit(max(0, int(limit)))
        with self._db.read() as conn:
            return [inbox_row(r) for r in conn.execute(query).mappings()]

    def last_inbox_id(self, bot_id: str) -> int:
        """The id of the newest inbox row of ``bot_id``; 0 when there is none."""
        with self._db.read() as conn:
            value = conn.execute(
                select(func.max(inbox.c.id)).where(inbox.c.bot_id == bot_id)
            ).scalar_one_or_none()
        return int(value or 0)

    def dead_inbox(self, bot_id: str) -> list[InboxRow]:
        with self._db.read() as conn:
            rows = conn.execute(
                select(inbox)
                .where(inbox.c.bot_id == bot_id, inbox.c.dead_at.is_not(None))
                .order_by(inbox.c.id)
            ).mappings()
            return [inbox_row(r) for r in rows]
