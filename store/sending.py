"""Sending: enqueue (and claim in the same transaction) and claim. Marking sent is in
:mod:`store.outbox`."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Executable, bindparam, exists, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from .db import PG_ACCOUNT_LOCK, PG_CLAIM_LOCK_NAMESPACE, StoreBase
from .driver import CoreRunner, Cursor, InsertFactory, Sql
from .errors import StoreError, UnknownAccountError
from .holders import holder_gone, this_holder
from .log import get_logger
from .models import OutboxRow, OutboxState, accounts, outbox
from .outbox import outbox_by_ids
from .rows import outbox_row

__all__ = ["ClaimedSend", "SendingStore", "new_client_id"]

log = get_logger(__name__)


def new_client_id() -> str:
    """``ilinkbot:<epoch ms>-<8 hex>``: fixed when the outbox row is created."""
    return f"ilinkbot:{int(time.time() * 1000)}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class ClaimedSend:
    """One send of :meth:`SendingStore.enqueue_claimed_many`."""

    bot_id: str
    user_id: str
    items: Sequence[Mapping[str, Any]]
    client_ids: Sequence[str] | None = None
    #: False: store the rows pending, never claimed (whoever sends to the user next
    #: takes them in order).
    claim: bool = True


def _checked(
    items: Sequence[Mapping[str, Any]],
    client_ids: Sequence[str] | None,
    state: OutboxState,
    user_id: str,
) -> list[dict[str, Any]]:
    """The payloads to store, or ValueError for a send that cannot be stored."""
    payloads = [dict(item) for item in items]
    if client_ids is not None and len(client_ids) != len(payloads):
        raise ValueError("client_ids must have one id per item")
    if client_ids is not None and len(set(client_ids)) != len(client_ids):
        raise ValueError("client_ids must be distinct")
    if state not in (OutboxState.PENDING, OutboxState.HELD, OutboxState.SESSION_EXPIRED):
        raise ValueError(f"cannot enqueue in state {state.value!r}")
    if not user_id:
        raise ValueError("user_id must be non-empty")
    return payloads


def _insert_outbox(insert: InsertFactory) -> Executable:
    """A new row, unless its client_id exists for the account; returns its id."""
    columns = ["bot_id", "user_id", "client_id", "payload", "state", "attempts"]
    columns += ["claimed_until", "claimed_by", "seq", "group_key"]
    values: dict[str, Any] = {name: bindparam(name) for name in columns}
    return (
        insert(outbox)
        .values(**values, created_at=bindparam("now"), updated_at=bindparam("now"))
        .on_conflict_do_nothing(index_elements=[outbox.c.bot_id, outbox.c.client_id])
        .returning(outbox.c.id)
    )


def _live_claims(of_user: bool) -> Sql:
    def build(_: InsertFactory) -> Executable:
        query = select(outbox.c.id, outbox.c.claimed_by).where(
            outbox.c.bot_id == bindparam("bot_id"),
            outbox.c.state == OutboxState.SENDING.value,
            outbox.c.claimed_until >= bindparam("now"),
            outbox.c.claimed_by.is_not(None),
        )
        return query.where(outbox.c.user_id == bindparam("user_id")) if of_user else query

    return Sql(build)


def _waits() -> ColumnElement[bool]:
    """A row that waits in its user's queue: pending, in flight or held. (``=`` ... ``OR``:
    the lane cannot run an expanding ``IN``.)"""
    return or_(
        *(
            outbox.c.state == s.value
            for s in (OutboxState.PENDING, OutboxState.SENDING, OutboxState.HELD)
        )
    )


#: One statement: is the account known, and does anything of this user wait?
_KNOWN_AND_WAITING = Sql(
    lambda _: select(
        exists().where(accounts.c.bot_id == bindparam("bot_id")),
        exists().where(
            outbox.c.bot_id == bindparam("bot_id"),
            outbox.c.user_id == bindparam("user_id"),
            _waits(),
        ),
    )
)
_INSERT_OUTBOX = Sql(_insert_outbox)
_OUTBOX_BY_CLIENT_ID = Sql(
    lambda _: select(outbox).where(
        outbox.c.bot_id == bindparam("bot_id"), outbox.c.client_id == bindparam("client_id")
    )
)
_LIVE_CLAIMS = _live_claims(of_user=False)
_LIVE_CLAIMS_OF_USER = _live_claims(of_user=True)
#: A claim whose holder is gone goes back to pending.
_RETURN_CLAIM = Sql(
    lambda _: (
        update(outbox)
        .where(outbox.c.id == bindparam("outbox_id"), outbox.c.state == OutboxState.SENDING.value)
        .values(
            state=OutboxState.PENDING.value,
            claimed_until=None,
            claimed_by=None,
            updated_at=bindparam("now"),
        )
    )
)

#: The user's rows that wait (pending, sending or held), up to a given id.
_WAITING_UP_TO = Sql(
    lambda _: select(outbox.c.id).where(
        outbox.c.bot_id == bindparam("bot_id"),
        outbox.c.user_id == bindparam("user_id"),
        outbox.c.id <= bindparam("last_id"),
        _waits(),
    )
)
_CLAIM_PENDING = Sql(
    lambda _: (
        update(outbox)
        .where(outbox.c.id == bindparam("outbox_id"), outbox.c.state == OutboxState.PENDING.value)
        .values(
            state=OutboxState.SENDING.value,
            attempts=outbox.c.attempts + 1,
            claimed_until=bindparam("until"),
            claimed_by=bindparam("holder"),
            updated_at=bindparam("now"),
        )
        .returning(*outbox.columns)
    )
)


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

    def enqueue_claimed_many(
        self,
        sends: Sequence[ClaimedSend],
        *,
        lease_seconds: float = 60,
        nowait: bool = False,
    ) -> list[tuple[list[OutboxRow], list[OutboxRow]] | StoreError | ValueError]:
        """:meth:`enqueue_claimed` for several sends in one transaction (group commit of
        concurrent pushes). Each send's ``(rows, claimed)``, in order; or the error of a send
        that wrote nothing (its account is unknown, its items are invalid), while the
        others are stored. Sends to one user are stored in the order given, so the first
        claims and the later ones wait behind it, as one after the other would."""
        checked: list[list[dict[str, Any]] | ValueError] = []
        for send in sends:
            try:
                checked.append(
                    _checked(send.items, send.client_ids, OutboxState.PENDING, send.user_id)
                )
            except ValueError as exc:
                checked.append(exc)
        now = self._db.now()
        out: list[tuple[list[OutboxRow], list[OutboxRow]] | StoreError | ValueError] = list(checked)  # type: ignore[arg-type]
        # By account (stable: a user's sends keep their order), so that transactions
        # take PostgreSQL's per-account claim locks in one order and cannot deadlock.
        order = sorted(range(len(sends)), key=lambda i: sends[i].bot_id)
        with self._db.lane.write(nowait=nowait) as cur:
            for i in order:
                payloads = checked[i]
                if isinstance(payloads, ValueError):
                    continue
                send = sends[i]
                try:
                    out[i] = self._insert_rows(
                        cur, send.bot_id, send.user_id, payloads, send.client_ids,
                        OutboxState.PENDING, None, lease_seconds if send.claim else None, now,
                    )  # fmt: skip
                except UnknownAccountError as exc:  # raised before this send wrote a row
                    out[i] = exc
        return out

    def claim_next(
        self,
        bot_id: str,
        user_id: str,
        ids: Sequence[int],
        *,
        lease_seconds: float = 60,
        nowait: bool = False,
    ) -> list[OutboxRow]:
        """Claim ``ids``, rows of one user stored earlier, when they are next in that user's
        queue: nothing else of the user before or among them waits (pending, sending or
        held). Else nothing is claimed, and the rows go out in order with the user's
        queue. A send whose rows were stored while another went out to the same user takes
        them this way when its turn comes (one lane transaction instead of a claim)."""
        if not ids:
            return []
        now = self._db.now()
        until = now + timedelta(seconds=lease_seconds)
        holder = this_holder()
        mine = set(ids)
        out: list[OutboxRow] = []
        with self._db.lane.write(nowait=nowait) as cur:
            waiting = cur.rows(_WAITING_UP_TO, bot_id=bot_id, user_id=user_id, last_id=max(ids))
            if any(int(found) not in mine for (found,) in waiting):
                return []
            for outbox_id in sorted(ids):
                row = cur.one(
                    _CLAIM_PENDING, outbox_id=outbox_id, until=until, holder=holder, now=now
                )
                if row is not None:  # else sent or held meanwhile by another sender
                    out.append(outbox_row(row))
        return out

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
        state = OutboxState(state)
        payloads = _checked(items, client_ids, state, user_id)
        now = self._db.now()
        with self._db.lane.write(nowait=nowait) as cur:
            return self._insert_rows(
                cur, bot_id, user_id, payloads, client_ids, state, group, claim_lease_seconds, now
            )

    def _insert_rows(
        self,
        cur: Cursor,
        bot_id: str,
        user_id: str,
        payloads: list[dict[str, Any]],
        client_ids: Sequence[str] | None,
        state: OutboxState,
        group: str | None,
        claim_lease_seconds: float | None,
        now: datetime,
    ) -> tuple[list[OutboxRow], list[OutboxRow]]:
        """One send's rows, in the caller's write transaction. An unknown account raises
        :class:`UnknownAccountError` before anything is written."""
        rows: list[OutboxRow] = []
        inserted: set[int] = set()
        claiming = claim_lease_seconds is not None and state == OutboxState.PENDING
        if claiming and self._db.pg:  # claims of one account take turns (see claim)
            cur.execute(PG_ACCOUNT_LOCK, namespace=PG_CLAIM_LOCK_NAMESPACE, bot_id=bot_id)
        # One statement: is the account known, and does anything of this user wait?
        known, waiting = cur.row(_KNOWN_AND_WAITING, bot_id=bot_id, user_id=user_id)
        if not known:
            raise UnknownAccountError(f"unknown account {bot_id!r}")
        if claiming and waiting:
            self._take_over_dead_claims(cur, bot_id, now, user_id)
        claimed_until = None
        if claiming and not waiting:
            assert claim_lease_seconds is not None
            claimed_until = now + timedelta(seconds=claim_lease_seconds)
        new_state = OutboxState.SENDING if claimed_until else state
        attempts = 1 if claimed_until else 0
        holder = this_holder() if claimed_until else None
        for seq, payload in enumerate(payloads):
            given = client_ids[seq] if client_ids is not None else None
            while True:
                client_id = given or new_client_id()
                new_id = cur.scalar(
                    _INSERT_OUTBOX,
                    bot_id=bot_id,
                    user_id=user_id,
                    client_id=client_id,
                    payload=payload,
                    state=new_state.value,
                    attempts=attempts,
                    claimed_until=claimed_until,
                    claimed_by=holder,
                    seq=seq,
                    group_key=group,
                    now=now,
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
                existing = cur.one(_OUTBOX_BY_CLIENT_ID, bot_id=bot_id, client_id=given)
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
                self._db.run(
                    conn, PG_ACCOUNT_LOCK, namespace=PG_CLAIM_LOCK_NAMESPACE, bot_id=bot_id
                )
            self._take_over_dead_claims(CoreRunner(conn), bot_id, now, user_id)
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
        self, run: Cursor | CoreRunner, bot_id: str, now: datetime, user_id: str | None
    ) -> None:
        """Live claims (``sending``) held by a process of this host that is gone go back to
        ``pending`` inside the caller's write transaction, so they are sent again in order
        now instead of after their lease."""
        if user_id is None:
            live = run.rows(_LIVE_CLAIMS, bot_id=bot_id, now=now)
        else:
            live = run.rows(_LIVE_CLAIMS_OF_USER, bot_id=bot_id, now=now, user_id=user_id)
        gone = [int(i) for i, holder in live if holder_gone(holder)]
        for outbox_id in gone:
            run.execute(_RETURN_CLAIM, outbox_id=outbox_id, now=now)
        if gone:
            log.warning("outbox_claim_taken_over", bot_id=bot_id, outbox_ids=gone)
