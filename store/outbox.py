"""The outbox's transitions after sending (sent, unconfirmed, held, failed), and its
administration (list, retry, drop)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from .db import Db, StoreBase
from .driver import Cursor, Sql
from .errors import InvalidTransitionError, NotFoundError, StoreBusy, StoreError
from .log import get_logger
from .models import OutboxRow, OutboxState, outbox, peers
from .rows import outbox_row

__all__ = [
    "REOPENABLE",
    "UNSENT",
    "OutboxStore",
    "outbox_by_id",
    "outbox_by_ids",
    "outbox_for_update",
]

log = get_logger(__name__)

REOPENABLE = frozenset(
    {
        OutboxState.FAILED,
        OutboxState.HELD,
        OutboxState.UNCONFIRMED,
        OutboxState.DEAD,
        OutboxState.SESSION_EXPIRED,
    }
)
#: Not sent yet: what a new login of the same owner takes over (see ``hand_over``).
UNSENT = (
    OutboxState.PENDING,
    OutboxState.SENDING,
    OutboxState.HELD,
    OutboxState.SESSION_EXPIRED,
)


OUTBOX = Sql(lambda _: select(outbox).where(outbox.c.id == bindparam("outbox_id")))
#: The row, locked on PostgreSQL until the transaction ends (SQLite's lock is the database's).
OUTBOX_FOR_UPDATE = Sql(
    lambda _: select(outbox).where(outbox.c.id == bindparam("outbox_id")).with_for_update()
)
#: A row went out (or may have): it counts against the peer's reply window. (Core reads an
#: UPDATE's parameters named like a column as SET values: hence ``bot``, ``user``.)
PEER_SENT = Sql(
    lambda _: (
        update(peers)
        .where(peers.c.bot_id == bindparam("bot"), peers.c.user_id == bindparam("user"))
        .values(sent_since_inbound=peers.c.sent_since_inbound + 1)
    )
)


def _mark_sent(*returning: Any) -> Sql:
    return Sql(
        lambda _: (
            update(outbox)
            .where(outbox.c.id == bindparam("outbox_id"), outbox.c.state != OutboxState.SENT.value)
            .values(
                state=OutboxState.SENT.value,
                message_id=bindparam("message_id"),
                last_error=None,
                claimed_until=None,
                sent_at=bindparam("now"),
                updated_at=bindparam("now"),
            )
            .returning(*returning)
        )
    )


_MARK_SENT = _mark_sent(*outbox.columns)
#: The same, for a sender that needs no row back: only what counts the peer's window.
_MARK_SENT_LEAN = _mark_sent(outbox.c.bot_id, outbox.c.user_id)
_LATE_MESSAGE_ID = Sql(
    lambda _: (
        update(outbox)
        .where(outbox.c.id == bindparam("outbox_id"))
        .values(message_id=bindparam("message_id"), updated_at=bindparam("now"))
    )
)


def outbox_for_update(db: Db, conn: Connection, outbox_id: int) -> OutboxRow:
    row = db.run(conn, OUTBOX_FOR_UPDATE, outbox_id=outbox_id).mappings().first()
    if row is None:
        raise NotFoundError(f"no outbox row {outbox_id}")
    return outbox_row(row)


def outbox_by_id(db: Db, conn: Connection, outbox_id: int) -> OutboxRow:
    row = db.run(conn, OUTBOX, outbox_id=outbox_id).mappings().first()
    if row is None:
        raise NotFoundError(f"no outbox row {outbox_id}")
    return outbox_row(row)


def outbox_by_ids(conn: Connection, ids: Sequence[int]) -> list[OutboxRow]:
    if not ids:
        return []
    rows = conn.execute(
        select(outbox).where(outbox.c.id.in_(list(ids))).order_by(outbox.c.id)
    ).mappings()
    return [outbox_row(r) for r in rows]


class OutboxStore(StoreBase):
    """Outbox rows once sent (or not), and by hand."""

    def mark_sent(self, outbox_id: int, message_id: str | None) -> OutboxRow:
        """State ``sent`` (+ server message id); counts against the peer's reply window."""
        return self.mark_sent_many([(outbox_id, message_id)])[0]

    def mark_sent_groups(
        self, groups: Sequence[Sequence[tuple[int, str | None]]], *, nowait: bool = False
    ) -> list[int | StoreError]:
        """:meth:`mark_sent_many` for the passes of several senders in one transaction
        (group commit), without reading the rows back: per group, how many of its rows were
        newly marked sent. Should one group fail (a row gone), each group is marked in a
        transaction of its own, and only the failing one gets its error."""
        flat = [one for group in groups for one in group]
        try:
            with self._db.lane.write(nowait=nowait) as cur:
                marked = self._mark_sent(cur, flat, self._db.now(), rows=False)
        except StoreBusy:
            raise
        except StoreError:
            if len(groups) == 1:
                raise
            out: list[int | StoreError] = []
            for group in groups:
                try:
                    with self._db.lane.write(nowait=nowait) as cur:
                        out.append(sum(self._mark_sent(cur, group, self._db.now(), rows=False)))
                except StoreBusy:
                    raise
                except StoreError as exc:
                    out.append(exc)
            return out
        split: list[int | StoreError] = []
        start = 0
        for group in groups:
            split.append(sum(marked[start : start + len(group)]))
            start += len(group)
        return split

    def mark_sent_many(
        self, sent: Sequence[tuple[int, str | None]], *, nowait: bool = False
    ) -> list[OutboxRow]:
        """:meth:`mark_sent` for several rows in one transaction (a sender's pass).
        ``nowait``: raise :class:`StoreBusy` instead of waiting for SQLite's write lock."""
        with self._db.lane.write(nowait=nowait) as cur:
            return self._mark_sent(cur, sent, self._db.now(), rows=True)

    def _mark_sent(
        self, cur: Cursor, sent: Sequence[tuple[int, str | None]], now: datetime, *, rows: bool
    ) -> list[Any]:
        """Per row: with ``rows``, the row as it is now; else 1 if this marked it sent, 0
        if it already was."""
        out: list[Any] = []
        for outbox_id, message_id in sent:
            params = {"outbox_id": outbox_id, "message_id": message_id or None, "now": now}
            if rows:
                updated = cur.one(_MARK_SENT, **params)
                if updated is not None:
                    row = outbox_row(updated)
                    cur.execute(PEER_SENT, bot=row.bot_id, user=row.user_id)
                    out.append(row)
                    continue
            else:
                counted = cur.rows(_MARK_SENT_LEAN, **params)
                if counted:
                    ((bot_id, user_id),) = counted
                    cur.execute(PEER_SENT, bot=bot_id, user=user_id)
                    out.append(1)
                    continue
            # Missing, or already sent: a sent row is never re-counted.
            found = cur.one(OUTBOX_FOR_UPDATE, outbox_id=outbox_id)
            if found is None:
                raise NotFoundError(f"no outbox row {outbox_id}")
            row = outbox_row(found)
            if message_id and not row.message_id:  # a late id for a sent row
                cur.execute(_LATE_MESSAGE_ID, outbox_id=outbox_id, message_id=message_id, now=now)
                row = replace(row, message_id=message_id, updated_at=now)
            out.append(row if rows else 0)
        return out

    def mark_unconfirmed(self, outbox_id: int, reason: str) -> OutboxRow:
        """ret=0 without a message id: accepted, delivery unknown. Counts against the window."""
        now = self._db.now()
        with self._db.write() as conn:
            row = outbox_for_update(self._db, conn, outbox_id)
            if row.state in (OutboxState.SENT, OutboxState.UNCONFIRMED):
                return row
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    state=OutboxState.UNCONFIRMED.value,
                    last_error=reason,
                    claimed_until=None,
                    sent_at=now,
                    updated_at=now,
                )
            )
            self._db.run(conn, PEER_SENT, bot=row.bot_id, user=row.user_id)
            result = outbox_by_id(self._db, conn, outbox_id)
        log.warning("outbox_unconfirmed", bot_id=row.bot_id, outbox_id=outbox_id)
        return result

    def mark_held(self, outbox_id: int, reason: str) -> OutboxRow:
        """Park the row (reply window closed, quota used); :meth:`release_held` re-queues it."""
        with self._db.write() as conn:
            row = outbox_for_update(self._db, conn, outbox_id)
            if row.state in (OutboxState.SENT, OutboxState.DEAD):
                return row
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    state=OutboxState.HELD.value,
                    last_error=reason,
                    claimed_until=None,
                    updated_at=self._db.now(),
                )
            )
            return outbox_by_id(self._db, conn, outbox_id)

    def mark_failed(
        self, outbox_id: int, error: str, *, retryable: bool, max_attempts: int
    ) -> OutboxRow:
        """Retryable and attempts < max_attempts: back to ``pending``; else ``failed``."""
        with self._db.write() as conn:
            row = outbox_for_update(self._db, conn, outbox_id)
            if row.state in (OutboxState.SENT, OutboxState.DEAD):
                return row
            again = retryable and row.attempts < max_attempts
            state = OutboxState.PENDING if again else OutboxState.FAILED
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    state=state.value,
                    last_error=error,
                    claimed_until=None,
                    updated_at=self._db.now(),
                )
            )
            result = outbox_by_id(self._db, conn, outbox_id)
        if not again:
            log.warning(
                "outbox_failed", bot_id=row.bot_id, outbox_id=outbox_id, attempts=row.attempts
            )
        return result

    def mark_session_expired(self, ids: Sequence[int], reason: str) -> list[OutboxRow]:
        """Claimed rows whose send met ``-14`` -> ``session_expired``, kept for the next login
        (:meth:`hand_over`). A row no longer ``sending`` (sent meanwhile, already handed
        over to a new login) is left as it is."""
        if not ids:
            return []
        with self._db.write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(list(ids)), outbox.c.state == OutboxState.SENDING.value)
                .values(
                    state=OutboxState.SESSION_EXPIRED.value,
                    last_error=reason,
                    claimed_until=None,
                    claimed_by=None,
                    updated_at=self._db.now(),
                )
            )
            return outbox_by_ids(conn, ids)

    def release_held(self, bot_id: str, user_id: str) -> list[OutboxRow]:
        """``held`` -> ``pending`` for that user (call it when the user writes), in order."""
        with self._db.read() as conn:  # nearly always nothing is held: no write lock for that
            any_held = conn.execute(
                select(outbox.c.id)
                .where(
                    outbox.c.bot_id == bot_id,
                    outbox.c.user_id == user_id,
                    outbox.c.state == OutboxState.HELD.value,
                )
                .limit(1)
            ).first()
        if any_held is None:
            return []
        with self._db.write() as conn:
            released = conn.execute(
                update(outbox)
                .where(
                    outbox.c.bot_id == bot_id,
                    outbox.c.user_id == user_id,
                    outbox.c.state == OutboxState.HELD.value,
                )
                .values(state=OutboxState.PENDING.value, updated_at=self._db.now())
                .returning(outbox.c.id)
            ).scalars()
            rows = outbox_by_ids(conn, sorted(int(i) for i in released))
        if rows:
            log.info("outbox_released", bot_id=bot_id, count=len(rows))
        return rows

    def unclaim(self, outbox_id: int) -> OutboxRow:
        """Hand a claimed row back untouched: ``sending`` -> ``pending``, the claim's attempt
        not counted (a sender that claimed more than it may send now, to keep order)."""
        with self._db.write() as conn:
            row = outbox_for_update(self._db, conn, outbox_id)
            if row.state != OutboxState.SENDING:
                return row
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    state=OutboxState.PENDING.value,
                    attempts=func.max(outbox.c.attempts - 1, 0)
                    if not self._db.pg
                    else func.greatest(outbox.c.attempts - 1, 0),
                    claimed_until=None,
                    claimed_by=None,
                    updated_at=self._db.now(),
                )
            )
            return outbox_by_id(self._db, conn, outbox_id)

    def accounts_with_unsent(self) -> set[str]:
        """The accounts with rows waiting to be sent (pending, or a claim that ran out)."""
        now = self._db.now()
        with self._db.read() as conn:
            found = conn.execute(
                select(outbox.c.bot_id)
                .where(
                    (outbox.c.state == OutboxState.PENDING.value)
                    | (
                        (outbox.c.state == OutboxState.SENDING.value)
                        & (outbox.c.claimed_until < now)
                    )
                )
                .distinct()
            ).scalars()
            return {str(bot_id) for bot_id in found}

    def list_outbox(
        self,
        bot_id: str | None = None,
        *,
        state: OutboxState | str | Sequence[OutboxState | str] | None = None,
        user_id: str | None = None,
        limit: int | None = None,
    ) -> list[OutboxRow]:
        """Outbox rows in enqueue order, filtered by account, state(s) and user."""
        query = select(outbox).order_by(outbox.c.id)
        if bot_id is not None:
            query = query.where(outbox.c.bot_id == bot_id)
        if user_id is not None:
            query = query.where(outbox.c.user_id == user_id)
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            query = query.where(outbox.c.state.in_([OutboxState(s).value for s in states]))
        if limit is not None:
            query = query.limit(limit)
        with self._db.read() as conn:
            return [outbox_row(r) for r in conn.execute(query).mappings()]

    def get_outbox(self, outbox_id: int) -> OutboxRow | None:
        with self._db.lane.read() as cur:
            row = cur.one(OUTBOX, outbox_id=outbox_id)
        return outbox_row(row) if row is not None else None

    def retry_outbox(self, outbox_id: int) -> OutboxRow:
        """failed / held / unconfirmed / dead (or an expired sending) -> pending, attempts 0."""
        now = self._db.now()
        with self._db.write() as conn:
            row = outbox_for_update(self._db, conn, outbox_id)
            if row.state == OutboxState.PENDING:
                return row
            stale = row.state == OutboxState.SENDING and (
                row.claimed_until is None or row.claimed_until < now
            )
            if row.state not in REOPENABLE and not stale:
                raise InvalidTransitionError(
                    f"outbox row {outbox_id} is {row.state.value}, cannot retry"
                )
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    state=OutboxState.PENDING.value,
                    attempts=0,
                    claimed_until=None,
                    updated_at=now,
                )
            )
            return outbox_by_id(self._db, conn, outbox_id)

    def drop_outbox(self, outbox_id: int) -> OutboxRow:
        """-> ``dead`` (kept for history). A sent row cannot be dropped."""
        with self._db.write() as conn:
            row = outbox_for_update(self._db, conn, outbox_id)
            if row.state == OutboxState.DEAD:
                return row
            if row.state == OutboxState.SENT:
                raise InvalidTransitionError(f"outbox row {outbox_id} was already sent")
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(state=OutboxState.DEAD.value, claimed_until=None, updated_at=self._db.now())
            )
            return outbox_by_id(self._db, conn, outbox_id)

    def update_outbox_payload(self, outbox_id: int, payload: Mapping[str, Any]) -> OutboxRow:
        with self._db.write() as conn:
            result = conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(payload=dict(payload), updated_at=self._db.now())
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no outbox row {outbox_id}")
            return outbox_by_id(self._db, conn, outbox_id)
