"""Sending: enqueue (and claim in the same transaction), claim, and mark sent."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.sql.elements import ColumnElement

from .db import PG_ACCOUNT_LOCK, PG_CLAIM_LOCK_NAMESPACE, StoreBase
from .errors import NotFoundError, UnknownAccountError
from .holders import holder_gone, this_holder
from .log import get_logger
from .models import OutboxRow, OutboxState, dump_json, outbox
from .outbox import outbox_by_ids
from .rows import OUTBOX_COLS, outbox_row

__all__ = ["SendingStore", "new_client_id"]

log = get_logger(__name__)


def new_client_id() -> str:
    """``ilinkbot:<epoch ms>-<8 hex>``: fixed when the outbox row is created."""
    return f"ilinkbot:{int(time.time() * 1000)}-{secrets.token_hex(4)}"


class SendingStore(StoreBase):
    """The send path's outbox transitions (enqueue, claim, mark sent)."""

    def enqueue(
        self,
        bot_id: str,
        user_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        client_ids: Sequence[str] | None = None,
        state: OutboxState | str = OutboxState.PENDING,
        group: str | None = None,
    ) -> list[OutboxRow]:
        """Add one outbox row per payload, in order, in one transaction.

        ``client_id`` is fixed here (generated unless given). Enqueuing a ``client_id`` that
        already exists for the account returns the existing row untouched, so a handler re-run
        after a crash does not send twice. ``state`` is ``pending``, ``held`` or
        ``session_expired`` (the account's token is stale: kept for the next login).
        """
        rows, _ = self._enqueue(
            bot_id,
            user_id,
            items,
            client_ids=client_ids,
            state=state,
            group=group,
            claim_lease_seconds=None,
            nowait=False,
        )
        return rows

    def enqueue_claimed(
        self,
        bot_id: str,
        user_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        client_ids: Sequence[str] | None = None,
        lease_seconds: float = 60,
        nowait: bool = False,
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """:meth:`enqueue`, and claim the new rows for the caller in the same transaction
        (``sending``, attempts 1, as :meth:`claim` would) when that user has nothing else
        waiting (pending, sending or held): one transaction instead of two per send.

        Returns ``(rows, claimed)``; ``claimed`` is empty when older rows wait (the new ones
        are then ``pending`` behind them) and never holds a row that existed before.
        ``nowait``: raise :class:`StoreBusy` instead of waiting for SQLite's write lock.
        """
        return self._enqueue(
            bot_id,
            user_id,
            items,
            client_ids=client_ids,
            state=OutboxState.PENDING,
            group=None,
            claim_lease_seconds=lease_seconds,
            nowait=nowait,
        )

    def _enqueue(
        self,
        bot_id: str,
        user_id: str,
        items: Sequence[Mapping[str, Any]],
        *,
        client_ids: Sequence[str] | None,
        state: OutboxState | str,
        group: str | None,
        claim_lease_seconds: float | None,
        nowait: bool,
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        items = list(items)
        if client_ids is not None and len(client_ids) != len(items):
            raise ValueError("client_ids must have one id per item")
        if client_ids is not None and len(set(client_ids)) != len(client_ids):
            raise ValueError("client_ids must be distinct")
        state = OutboxState(state)
        if state not in (OutboxState.PENDING, OutboxState.HELD, OutboxState.SESSION_EXPIRED):
            raise ValueError(f"cannot enqueue in state {state.value!r}")
        if not user_id:
            raise ValueError("user_id must be non-empty")
        payloads = [dict(item) for item in items]
        now = self._db.now()
        stamp = self._db.lane.ts(now)
        rows: list[OutboxRow] = []
        inserted: set[int] = set()
        with self._db.lane.write(nowait=nowait) as cur:
            claiming = claim_lease_seconds is not None and state == OutboxState.PENDING
            if claiming and self._db.pg:  # claims of one account take turns (see claim)
                cur.execute(PG_ACCOUNT_LOCK, (PG_CLAIM_LOCK_NAMESPACE, bot_id))
            # One statement: is the account known, and does anything of this user wait?
            known, waiting = cur.row(
                "SELECT EXISTS (SELECT 1 FROM accounts WHERE bot_id = ?), "
                "EXISTS (SELECT 1 FROM outbox WHERE bot_id = ? AND user_id = ? "
                "AND state IN (?, ?, ?))",
                (
                    bot_id,
                    bot_id,
                    user_id,
                    OutboxState.PENDING.value,
                    OutboxState.SENDING.value,
                    OutboxState.HELD.value,
                ),
            )
            if not known:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
            if claiming and waiting:
                self._take_over_dead_claims(cur.rows, cur.execute, bot_id, now, user_id)
            claimed_until = None
            if claiming and not waiting:
                assert claim_lease_seconds is not None
                claimed_until = now + timedelta(seconds=claim_lease_seconds)
            new_state = OutboxState.SENDING if claimed_until else state
            attempts = 1 if claimed_until else 0
            until = self._db.lane.ts(claimed_until)
            holder = this_holder() if claimed_until else None
            for seq, payload in enumerate(payloads):
                given = client_ids[seq] if client_ids is not None else None
                payload_json = dump_json(payload)
                while True:
                    client_id = given or new_client_id()
                    new_id = cur.scalar(
                        "INSERT INTO outbox (bot_id, user_id, client_id, payload, state, "
                        "attempts, claimed_until, claimed_by, seq, group_key, created_at, "
                        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (bot_id, client_id) DO NOTHING RETURNING id",
                        (
                            bot_id,
                            user_id,
                            client_id,
                            payload_json,
                            new_state.value,
                            attempts,
                            until,
                            holder,
                            seq,
                            group,
                            stamp,
                            stamp,
                        ),
                    )
                    if new_id is not None:
                        # The row is exactly what was just written.
                        rows.append(
                            OutboxRow(
                                id=int(new_id),
                                bot_id=bot_id,
                                user_id=user_id,
                                client_id=client_id,
                                payload=payload,
                                state=new_state,
                                attempts=attempts,
                                last_error=None,
                                message_id=None,
                                seq=seq,
                                group=group,
                                created_at=now,
                                updated_at=now,
                                sent_at=None,
                                claimed_until=claimed_until,
                                claimed_by=holder,
                            )
                        )
                        inserted.add(int(new_id))
                        break
                    if given is None:
                        continue  # a generated id collided: draw another
                    existing = cur.one(
                        outbox,
                        f"SELECT {OUTBOX_COLS} FROM outbox WHERE bot_id = ? AND client_id = ?",
                        (bot_id, given),
                    )
                    assert existing is not None  # the conflict said it is there
                    rows.append(outbox_row(existing))
                    if rows[-1].user_id != user_id:
                        log.warning(
                            "outbox_client_id_reused",
                            bot_id=bot_id,
                            client_id=given,
                            outbox_id=rows[-1].id,
                        )
                    break
        claimed = [r for r in rows if claimed_until is not None and r.id in inserted]
        return rows, claimed

    def claim(
        self,
        bot_id: str,
        *,
        limit: int = 10,
        user_id: str | None = None,
        ids: Sequence[int] | None = None,
        lease_seconds: float = 60,
    ) -> list[OutboxRow]:
        """Take rows to send: ``pending`` (or ``sending`` with an expired lease) -> ``sending``.

        attempts += 1 and ``claimed_until = now + lease_seconds``. Rows come in enqueue order.
        Without ``ids``, a user with a row in flight (sending, lease alive) is skipped, so two
        senders never interleave one user's messages; with ``ids``, exactly those rows are
        claimed if claimable and ``limit`` is ignored. No row is ever handed to two claimers:
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite. A claim whose
        holder process is gone on this host is taken over at once (see :mod:`store.holders`).
        """
        now = self._db.now()
        until = now + timedelta(seconds=lease_seconds)
        claimable = (outbox.c.state == OutboxState.PENDING.value) | (
            (outbox.c.state == OutboxState.SENDING.value) & (outbox.c.claimed_until < now)
        )
        query = (
            select(outbox.c.id, outbox.c.state)
            .where(outbox.c.bot_id == bot_id, claimable)
            .order_by(outbox.c.id)
        )
        if user_id is not None:
            query = query.where(outbox.c.user_id == user_id)
        if ids is not None:
            if not ids:
                return []
            query = query.where(outbox.c.id.in_(list(ids)))
        else:
            if limit <= 0:
                return []
            busy = outbox.alias("busy")
            in_flight: ColumnElement[bool] = exists().where(
                busy.c.bot_id == outbox.c.bot_id,
                busy.c.user_id == outbox.c.user_id,
                busy.c.state == OutboxState.SENDING.value,
                busy.c.claimed_until >= now,
            )
            query = query.where(~in_flight).limit(limit)
        if self._db.pg:
            query = query.with_for_update(of=outbox, skip_locked=True)
        with self._db.write() as conn:
            if self._db.pg and ids is None:
                # Claims of one account take turns (they are short), so the in-flight test
                # above sees the previous claimer's committed rows: per-user order stays strict
                # with several sender processes. SKIP LOCKED still keeps a claim from waiting
                # on rows another transaction (mark_*, retry, release) holds.
                conn.exec_driver_sql(
                    self._db.lane.sql(PG_ACCOUNT_LOCK), (PG_CLAIM_LOCK_NAMESPACE, bot_id)
                )

            def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                return [
                    tuple(r) for r in conn.exec_driver_sql(self._db.lane.sql(sql), tuple(params))
                ]

            def execute(sql: str, params: Sequence[Any]) -> int:
                return int(conn.exec_driver_sql(self._db.lane.sql(sql), tuple(params)).rowcount)

            self._take_over_dead_claims(fetch, execute, bot_id, now, user_id)
            candidates = conn.execute(query).all()
            if not candidates:
                return []
            claimed = [int(c.id) for c in candidates]
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(claimed))
                .values(
                    state=OutboxState.SENDING.value,
                    attempts=outbox.c.attempts + 1,
                    claimed_until=until,
                    claimed_by=this_holder(),
                    updated_at=now,
                )
            )
            rows = outbox_by_ids(conn, claimed)
        expired = [int(c.id) for c in candidates if c.state == OutboxState.SENDING.value]
        if expired:
            log.warning("outbox_lease_expired_reclaimed", bot_id=bot_id, outbox_ids=expired)
        return rows

    def _take_over_dead_claims(
        self,
        rows: Callable[[str, Sequence[Any]], list[tuple[Any, ...]]],
        execute: Callable[[str, Sequence[Any]], int],
        bot_id: str,
        now: datetime,
        user_id: str | None,
    ) -> None:
        """Live claims (``sending``) held by a process of this host that is gone go back to
        ``pending`` inside the caller's write transaction, so they are sent again in order
        now instead of after their lease."""
        sql = (
            "SELECT id, claimed_by FROM outbox WHERE bot_id = ? AND state = ? "
            "AND claimed_until >= ? AND claimed_by IS NOT NULL"
        )
        params: list[Any] = [bot_id, OutboxState.SENDING.value, self._db.lane.ts(now)]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        gone = [int(i) for i, holder in rows(sql, params) if holder_gone(holder)]
        for outbox_id in gone:
            execute(
                "UPDATE outbox SET state = ?, claimed_until = NULL, claimed_by = NULL, "
                "updated_at = ? WHERE id = ? AND state = ?",
                (
                    OutboxState.PENDING.value,
                    self._db.lane.ts(now),
                    outbox_id,
                    OutboxState.SENDING.value,
                ),
            )
        if gone:
            log.warning("outbox_claim_taken_over", bot_id=bot_id, outbox_ids=gone)

    def mark_sent(self, outbox_id: int, message_id: str | None) -> OutboxRow:
        """State ``sent`` (+ server message id); counts against the peer's reply window."""
        return self.mark_sent_many([(outbox_id, message_id)])[0]

    def mark_sent_many(
        self, sent: Sequence[tuple[int, str | None]], *, nowait: bool = False
    ) -> list[OutboxRow]:
        """:meth:`mark_sent` for several rows in one transaction (a sender's pass).
        ``nowait``: raise :class:`StoreBusy` instead of waiting for SQLite's write lock."""
        now = self._db.now()
        stamp = self._db.lane.ts(now)
        lock = " FOR UPDATE" if self._db.pg else ""
        out: list[OutboxRow] = []
        with self._db.lane.write(nowait=nowait) as cur:
            for outbox_id, message_id in sent:
                updated = cur.one(
                    outbox,
                    "UPDATE outbox SET state = ?, message_id = ?, last_error = NULL, "
                    "claimed_until = NULL, sent_at = ?, updated_at = ? "
                    f"WHERE id = ? AND state <> ? RETURNING {OUTBOX_COLS}",
                    (
                        OutboxState.SENT.value,
                        message_id or None,
                        stamp,
                        stamp,
                        outbox_id,
                        OutboxState.SENT.value,
                    ),
                )
                if updated is not None:
                    row = outbox_row(updated)
                    cur.execute(
                        "UPDATE peers SET sent_since_inbound = sent_since_inbound + 1 "
                        "WHERE bot_id = ? AND user_id = ?",
                        (row.bot_id, row.user_id),
                    )
                    out.append(row)
                    continue
                # Missing, or already sent: a sent row is never re-counted.
                found = cur.one(
                    outbox, f"SELECT {OUTBOX_COLS} FROM outbox WHERE id = ?{lock}", (outbox_id,)
                )
                if found is None:
                    raise NotFoundError(f"no outbox row {outbox_id}")
                row = outbox_row(found)
                if message_id and not row.message_id:  # a late id for a sent row
                    cur.execute(
                        "UPDATE outbox SET message_id = ?, updated_at = ? WHERE id = ?",
                        (message_id, stamp, outbox_id),
                    )
                    row = replace(row, message_id=message_id, updated_at=now)
                out.append(row)
        return out
