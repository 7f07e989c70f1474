"""The repository: one API over SQLite and PostgreSQL.

Every public method is one transaction. Write transactions take SQLite's write lock up front
(``BEGIN IMMEDIATE``, see :mod:`store.engine`); on PostgreSQL (READ COMMITTED) they rely on
single-statement upserts / increments, row locks (``FOR UPDATE``, ``SKIP LOCKED`` for claims)
and a per-account advisory lock around batch recording. Read-only methods use deferred
transactions and never wait for the writer.

The object is thread-safe (it holds only the engine and its pool) and several processes may
open the same database.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    case,
    delete,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from . import migrations
from .driver import DriverLane, columns
from .engine import BEGIN_MODE_OPTION, create_store_engine, resolve_url
from .errors import (
    InvalidTransitionError,
    NotFoundError,
    StoreUnavailable,
    UnknownAccountError,
    one_line,
)
from .holders import holder_gone, this_holder
from .log import get_logger
from .models import (
    Account,
    AccountState,
    InboundRecord,
    InboxRow,
    OutboxRow,
    OutboxState,
    Peer,
    PendingLogin,
    UTCDateTime,
    accounts,
    cursors,
    dump_json,
    inbox,
    leases,
    outbox,
    peers,
    pending_login,
    require_aware,
    settings,
    user_data,
    workers,
)

__all__ = ["Store", "new_client_id"]

log = get_logger(__name__)

# PostgreSQL advisory-lock namespaces (two-int4 keys: namespace, hashtext(bot_id)).
_PG_BATCH_LOCK_NAMESPACE = 0x696D  # one batch recorder per account at a time
_PG_CLAIM_LOCK_NAMESPACE = 0x696E  # one claim per account at a time
#: Takes one of those locks for the rest of the transaction: (namespace, bot_id).
_PG_ACCOUNT_LOCK = "SELECT pg_advisory_xact_lock(?, hashtext(?))"
#: The ``settings`` key of the account pushes use when none is named.
_DEFAULT_ACCOUNT_KEY = "default_account"


def new_client_id() -> str:
    """``ilinkbot:<epoch ms>-<8 hex>``: fixed when the outbox row is created."""
    return f"ilinkbot:{int(time.time() * 1000)}-{secrets.token_hex(4)}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(value: datetime) -> BindParameter[datetime]:
    """A timestamp literal typed as UTCDateTime (needed inside SQL functions)."""
    return literal(value, UTCDateTime())


_REOPENABLE = frozenset(
    {
        OutboxState.FAILED,
        OutboxState.HELD,
        OutboxState.UNCONFIRMED,
        OutboxState.DEAD,
        OutboxState.SESSION_EXPIRED,
    }
)
#: Not sent yet: what a new login of the same owner takes over (see ``hand_over``).
_UNSENT = (
    OutboxState.PENDING,
    OutboxState.SENDING,
    OutboxState.HELD,
    OutboxState.SESSION_EXPIRED,
)


class Store:
    """The ilinkbot store. Build it with :meth:`open`."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or _utcnow
        self._pg = engine.dialect.name == "postgresql"
        # SQLite: writers of this process queue here instead of in SQLite's busy handler,
        # which sleeps in steps of up to 100 ms and so turns contention into latency.
        self._write_lock = threading.Lock() if not self._pg else None
        # The send path's statements run on the driver directly (see store.driver).
        self._lane = DriverLane(engine, self._write_lock)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        database_url: str | None = None,
        *,
        home: Path | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> Store:
        """Open (creating and migrating as needed) the store.

        ``database_url`` None: SQLite at ``(home or $ILINKBOT_HOME or ~/.ilinkbot)/ilinkbot.db``,
        directory 0700 and file 0600. ``sqlite:///path`` or ``postgresql+psycopg://...``
        otherwise; ``sqlite://`` (in memory, one shared connection) is for single-threaded
        tests only. ``clock`` (aware UTC ``now``) is for tests.
        """
        url = resolve_url(database_url, home)
        engine = create_store_engine(url)
        try:
            migrations.migrate(engine)
        except (DBAPIError, sqlite3.Error) as exc:  # not SQLite, read-only, PG unreachable...
            engine.dispose()
            where = url.render_as_string(hide_password=True)
            raise StoreUnavailable(f"cannot open the database {where}: {one_line(exc)}") from None
        except BaseException:
            engine.dispose()
            raise
        log.debug(
            "store_opened",
            url=url.render_as_string(hide_password=True),
            dialect=engine.dialect.name,
        )
        return cls(engine, clock=clock)

    def close(self) -> None:
        self._lane.close()
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            version = migrations.current_version(conn)
        return version or 0

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        if self._write_lock is None:
            with self._engine.begin() as conn:
                yield conn
            return
        with self._write_lock, self._engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(**{BEGIN_MODE_OPTION: "DEFERRED"})
            with conn.begin():
                yield conn

    def _now(self) -> datetime:
        return require_aware(self._clock(), "clock()")

    def _insert(self, table: Any) -> Any:
        """A dialect INSERT supporting ON CONFLICT (same API on both engines)."""
        if self._pg:
            # imported here: the PostgreSQL dialect costs a SQLite user ~40 ms at start-up
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        return sqlite_dialect.insert(table)

    def _require_account(self, conn: Connection, bot_id: str) -> None:
        found = conn.execute(select(accounts.c.bot_id).where(accounts.c.bot_id == bot_id)).first()
        if found is None:
            raise UnknownAccountError(f"unknown account {bot_id!r}")

    def _outbox_for_update(self, conn: Connection, outbox_id: int) -> OutboxRow:
        query = select(outbox).where(outbox.c.id == outbox_id)
        if self._pg:
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFoundError(f"no outbox row {outbox_id}")
        return _outbox_row(row)

    def _outbox_by_id(self, conn: Connection, outbox_id: int) -> OutboxRow:
        row = conn.execute(select(outbox).where(outbox.c.id == outbox_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no outbox row {outbox_id}")
        return _outbox_row(row)

    def _outbox_by_ids(self, conn: Connection, ids: Sequence[int]) -> list[OutboxRow]:
        if not ids:
            return []
        rows = conn.execute(
            select(outbox).where(outbox.c.id.in_(list(ids))).order_by(outbox.c.id)
        ).mappings()
        return [_outbox_row(r) for r in rows]

    # ------------------------------------------------------------------ accounts

    def save_account(
        self,
        bot_id: str,
        *,
        token: str,
        base_url: str | None,
        owner_user_id: str | None,
    ) -> Account:
        """Insert or update an account after a login: state active, ``last_used_at`` now.

        Empty/None ``base_url`` or ``owner_user_id`` keep the stored value (new non-empty
        values win, as the protocol's reference client merges them).
        """
        if not bot_id:
            raise ValueError("bot_id must be non-empty")
        if not token:
            raise ValueError("token must be non-empty")
        now = self._now()
        base_url = base_url or None
        owner_user_id = owner_user_id or None
        stmt = self._insert(accounts).values(
            bot_id=bot_id,
            token=token,
            base_url=base_url,
            owner_user_id=owner_user_id,
            state=AccountState.ACTIVE.value,
            created_at=now,
            updated_at=now,
            last_used_at=now,
            token_saved_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[accounts.c.bot_id],
            set_={
                "token": stmt.excluded.token,
                "base_url": func.coalesce(stmt.excluded.base_url, accounts.c.base_url),
                "owner_user_id": func.coalesce(
                    stmt.excluded.owner_user_id, accounts.c.owner_user_id
                ),
                "state": AccountState.ACTIVE.value,
                "updated_at": now,
                "last_used_at": now,
                "token_saved_at": now,
            },
        )
        with self._write() as conn:
            conn.execute(stmt)
            row = conn.execute(select(accounts).where(accounts.c.bot_id == bot_id)).mappings()
            account = _account(row.one())
        log.info("account_saved", bot_id=bot_id)
        return account

    def get_account(self, bot_id: str) -> Account | None:
        with self._lane.read() as cur:
            row = cur.one(
                accounts, f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE bot_id = ?", (bot_id,)
            )
        return _account(row) if row is not None else None

    def list_accounts(self) -> list[Account]:
        """All accounts, most recently used first."""
        with self._lane.read() as cur:
            rows = cur.all(
                accounts, f"SELECT {_ACCOUNT_COLS} FROM accounts ORDER BY last_used_at DESC, bot_id"
            )
        return [_account(r) for r in rows]

    def set_account_state(self, bot_id: str, state: AccountState | str) -> None:
        state = AccountState(state)
        with self._write() as conn:
            result = conn.execute(
                update(accounts)
                .where(accounts.c.bot_id == bot_id)
                .values(state=state.value, updated_at=self._now())
            )
            if result.rowcount == 0:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
        log.info("account_state", bot_id=bot_id, state=state.value)

    def logout(self, bot_id: str) -> None:
        """Forget the token, mark logged out; cursor, peers, inbox and outbox stay."""
        with self._write() as conn:
            result = conn.execute(
                update(accounts)
                .where(accounts.c.bot_id == bot_id)
                .values(
                    token=None,
                    token_saved_at=None,
                    state=AccountState.LOGGED_OUT.value,
                    updated_at=self._now(),
                )
            )
            if result.rowcount == 0:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
        log.info("account_logged_out", bot_id=bot_id)

    def set_account_ref(self, bot_id: str, ref: str | None) -> None:
        """Keep the platform's own user id (``ref``) with an account (None clears it)."""
        with self._write() as conn:
            result = conn.execute(
                update(accounts)
                .where(accounts.c.bot_id == bot_id)
                .values(ref=ref or None, updated_at=self._now())
            )
            if result.rowcount == 0:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
        log.info("account_ref_set", bot_id=bot_id)

    def accounts_by_ref(self, ref: str) -> list[Account]:
        """The accounts kept with ``ref``, most recently used first (any state)."""
        with self._lane.read() as cur:
            rows = cur.all(
                accounts,
                f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE ref = ? "
                "ORDER BY last_used_at DESC, bot_id",
                (ref,),
            )
        return [_account(r) for r in rows]

    def hand_over(self, new_bot_id: str, old_bot_ids: Sequence[str]) -> int:
        """A new login of the same owner replaces ``old_bot_ids``, in one transaction.

        Each old account is logged out (its history stays readable); its aliases move to
        ``new_bot_id`` (unless the new account already uses the alias or names that user),
        as does the default-account setting when it named one of them,
        and its unsent rows (pending, sending, held, session_expired) move too, as ``held``:
        context tokens belong to the bot that received them, so each row waits until its
        user writes to the new bot, then goes out in order. The new account's own
        ``session_expired`` rows (the server gave back the same bot id) become ``held`` the
        same way. A row whose client_id the new account already has stays where it is.
        Returns the number of rows made ``held``.
        """
        now = self._now()
        reason = "kept across a new login: goes out when the user writes to the bot"
        old_ids = [b for b in dict.fromkeys(old_bot_ids) if b != new_bot_id]
        with self._write() as conn:
            self._require_account(conn, new_bot_id)
            moved = 0
            for old in old_ids:
                conn.execute(
                    update(accounts)
                    .where(accounts.c.bot_id == old)
                    .values(
                        token=None,
                        token_saved_at=None,
                        state=AccountState.LOGGED_OUT.value,
                        updated_at=now,
                    )
                )
                self._move_aliases(conn, old, new_bot_id)
                clash = outbox.alias("clash")
                moved += conn.execute(
                    update(outbox)
                    .where(
                        outbox.c.bot_id == old,
                        outbox.c.state.in_([s.value for s in _UNSENT]),
                        ~exists().where(
                            clash.c.bot_id == new_bot_id, clash.c.client_id == outbox.c.client_id
                        ),
                    )
                    .values(
                        bot_id=new_bot_id,
                        state=OutboxState.HELD.value,
                        last_error=reason,
                        claimed_until=None,
                        claimed_by=None,
                        updated_at=now,
                    )
                ).rowcount
            if old_ids:  # a default that named a replaced account follows the owner
                conn.execute(
                    update(settings)
                    .where(settings.c.key == _DEFAULT_ACCOUNT_KEY, settings.c.value.in_(old_ids))
                    .values(value=new_bot_id, updated_at=now)
                )
            moved += conn.execute(
                update(outbox)
                .where(
                    outbox.c.bot_id == new_bot_id,
                    outbox.c.state == OutboxState.SESSION_EXPIRED.value,
                )
                .values(state=OutboxState.HELD.value, last_error=reason, updated_at=now)
            ).rowcount
        log.info("account_handed_over", bot_id=new_bot_id, replaced=old_ids, held=moved)
        return moved

    def _move_aliases(self, conn: Connection, old: str, new: str) -> None:
        named = conn.execute(
            select(peers.c.user_id, peers.c.alias).where(
                peers.c.bot_id == old, peers.c.alias.is_not(None)
            )
        ).all()
        for user_id, alias in named:
            taken = conn.execute(
                select(peers.c.user_id).where(
                    peers.c.bot_id == new,
                    (peers.c.alias == alias)
                    | ((peers.c.user_id == user_id) & peers.c.alias.is_not(None)),
                )
            ).first()
            if taken is not None:
                continue  # the new account's own naming wins
            stmt = self._insert(peers).values(
                bot_id=new, user_id=user_id, alias=alias, sent_since_inbound=0
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[peers.c.bot_id, peers.c.user_id],
                set_={"alias": stmt.excluded.alias},
            )
            conn.execute(stmt)
            conn.execute(
                update(peers)
                .where(peers.c.bot_id == old, peers.c.user_id == user_id)
                .values(alias=None)
            )

    def touch_account(self, bot_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                update(accounts).where(accounts.c.bot_id == bot_id).values(last_used_at=self._now())
            )

    def local_tokens(self, limit: int = 10) -> list[str]:
        """Non-empty stored tokens, newest registration first (for ``local_token_list``)."""
        with self._read() as conn:
            rows = conn.execute(
                select(accounts.c.token)
                .where(accounts.c.token.is_not(None), accounts.c.token != "")
                .order_by(accounts.c.created_at.desc(), accounts.c.bot_id.desc())
                .limit(limit)
            ).scalars()
            return [str(t) for t in rows]

    def delete_account(self, bot_id: str) -> bool:
        """Remove the account and everything kept for it. True if it existed."""
        with self._write() as conn:
            conn.execute(delete(leases).where(leases.c.bot_id == bot_id))
            # Children first: do not depend on ON DELETE CASCADE having been honoured.
            for table in (user_data, outbox, inbox, peers, cursors):
                conn.execute(delete(table).where(table.c.bot_id == bot_id))
            result = conn.execute(delete(accounts).where(accounts.c.bot_id == bot_id))
            existed = result.rowcount > 0
        if existed:
            log.info("account_deleted", bot_id=bot_id)
        return existed

    def default_account(self) -> str | None:
        """The bot id chosen with :meth:`set_default_account`, or None. It may name an
        account that has since logged out or been deleted: callers say so, never skip it."""
        with self._read() as conn:
            value = conn.execute(
                select(settings.c.value).where(settings.c.key == _DEFAULT_ACCOUNT_KEY)
            ).scalar_one_or_none()
        return str(value) if value is not None else None

    def set_default_account(self, bot_id: str | None) -> None:
        """Make ``bot_id`` (an existing account) the default of pushes; None clears it."""
        with self._write() as conn:
            if bot_id is None:
                conn.execute(delete(settings).where(settings.c.key == _DEFAULT_ACCOUNT_KEY))
            else:
                self._require_account(conn, bot_id)
                stmt = self._insert(settings).values(
                    key=_DEFAULT_ACCOUNT_KEY, value=bot_id, updated_at=self._now()
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[settings.c.key],
                        set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
                    )
                )
        log.info("default_account", bot_id=bot_id)

    # ------------------------------------------------------------------ pending QR login

    def save_pending_login(
        self,
        *,
        qrcode: str,
        qr_url: str,
        poll_base: str,
        png_path: str | Path | None,
        issued_at: datetime,
    ) -> PendingLogin:
        """Remember the QR login in progress (one at a time; a new one replaces it)."""
        login = PendingLogin(
            qrcode=qrcode,
            qr_url=qr_url,
            poll_base=poll_base,
            png_path=str(png_path) if png_path is not None else None,
            issued_at=require_aware(issued_at, "issued_at"),
        )
        values = {
            "qrcode": login.qrcode,
            "qr_url": login.qr_url,
            "poll_base": login.poll_base,
            "png_path": login.png_path,
            "issued_at": login.issued_at,
        }
        stmt = self._insert(pending_login).values(id=1, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[pending_login.c.id], set_=values)
        with self._write() as conn:
            conn.execute(stmt)
        return login

    def get_pending_login(self) -> PendingLogin | None:
        with self._read() as conn:
            row = (
                conn.execute(select(pending_login).where(pending_login.c.id == 1))
                .mappings()
                .first()
            )
        if row is None:
            return None
        return PendingLogin(
            qrcode=row["qrcode"],
            qr_url=row["qr_url"],
            poll_base=row["poll_base"],
            png_path=row["png_path"],
            issued_at=row["issued_at"],
        )

    def clear_pending_login(self) -> None:
        with self._write() as conn:
            conn.execute(delete(pending_login))

    # ------------------------------------------------------------------ cursor and inbox

    def get_cursor(self, bot_id: str) -> str:
        """The stored ``get_updates_buf``; ``""`` when none."""
        with self._read() as conn:
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
        now = self._now()
        stamp = self._lane.ts(now)
        raws = [record.raw_dict() for record in records]  # validate before taking the lock
        inserted: list[InboxRow] = []
        with self._lane.write() as cur:
            if self._pg:
                cur.execute(_PG_ACCOUNT_LOCK, (_PG_BATCH_LOCK_NAMESPACE, bot_id))
            if cur.scalar("SELECT 1 FROM accounts WHERE bot_id = ?", (bot_id,)) is None:
                raise UnknownAccountError(f"unknown account {bot_id!r}")
            # user -> (token, inbound time) folded over the new messages in batch order
            latest: dict[str, tuple[str | None, datetime]] = {}
            for record, raw in zip(records, raws, strict=True):
                created = record.created_at.astimezone(UTC) if record.created_at else None
                new_id = cur.scalar(
                    "INSERT INTO inbox (bot_id, message_id, user_id, context_token, raw, "
                    "created_at, received_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 0) "
                    "ON CONFLICT (bot_id, message_id) DO NOTHING RETURNING id",
                    (
                        bot_id,
                        record.message_id,
                        record.user_id,
                        record.context_token or None,
                        dump_json(raw),
                        self._lane.ts(created),
                        stamp,
                    ),
                )
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
            for user_id in sorted(latest):
                token, inbound_at = latest[user_id]
                cur.execute(
                    _TOUCH_PEER, (bot_id, user_id, token, self._lane.ts(inbound_at), stamp, stamp)
                )
            if new_cursor:
                cur.execute(
                    "INSERT INTO cursors (bot_id, cursor, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (bot_id) DO UPDATE SET cursor = excluded.cursor, "
                    "updated_at = excluded.updated_at",
                    (bot_id, new_cursor, stamp),
                )
        if records:
            log.debug(
                "batch_recorded",
                bot_id=bot_id,
                received=len(records),
                new=len(inserted),
                cursor_advanced=bool(new_cursor),
            )
        return inserted

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
        with self._read() as conn:
            return [_inbox_row(r) for r in conn.execute(query).mappings()]

    def get_inbox(self, inbox_id: int) -> InboxRow | None:
        with self._read() as conn:
            row = conn.execute(select(inbox).where(inbox.c.id == inbox_id)).mappings().first()
        return _inbox_row(row) if row is not None else None

    def mark_handled(self, inbox_id: int) -> None:
        with self._write() as conn:
            result = conn.execute(
                update(inbox)
                .where(inbox.c.id == inbox_id)
                .values(handled_at=func.coalesce(inbox.c.handled_at, _ts(self._now())))
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no inbox row {inbox_id}")

    def record_handler_failure(self, inbox_id: int, error: str, *, max_attempts: int) -> InboxRow:
        """attempts += 1, keep the error; the row is dead once attempts >= max_attempts."""
        now = self._now()
        with self._write() as conn:
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
            row = _inbox_row(
                conn.execute(select(inbox).where(inbox.c.id == inbox_id)).mappings().one()
            )
        if row.dead:
            log.warning("inbox_dead", bot_id=row.bot_id, inbox_id=inbox_id, attempts=row.attempts)
        return row

    def dead_inbox(self, bot_id: str) -> list[InboxRow]:
        with self._read() as conn:
            rows = conn.execute(
                select(inbox)
                .where(inbox.c.bot_id == bot_id, inbox.c.dead_at.is_not(None))
                .order_by(inbox.c.id)
            ).mappings()
            return [_inbox_row(r) for r in rows]

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
        with self._read() as conn:
            return [_inbox_row(r) for r in conn.execute(query).mappings()]

    def last_inbox_id(self, bot_id: str) -> int:
        """The id of the newest inbox row of ``bot_id``; 0 when there is none."""
        with self._read() as conn:
            value = conn.execute(
                select(func.max(inbox.c.id)).where(inbox.c.bot_id == bot_id)
            ).scalar_one_or_none()
        return int(value or 0)

    # ------------------------------------------------------------------ peers

    def get_peer(self, bot_id: str, user_id: str) -> Peer | None:
        with self._lane.read() as cur:
            row = cur.one(
                peers,
                f"SELECT {_PEER_COLS} FROM peers WHERE bot_id = ? AND user_id = ?",
                (bot_id, user_id),
            )
        return _peer(row) if row is not None else None

    def list_peers(self, bot_id: str) -> list[Peer]:
        """Peers of an account, most recently seen first."""
        with self._read() as conn:
            rows = conn.execute(
                select(peers)
                .where(peers.c.bot_id == bot_id)
                .order_by(peers.c.last_seen_at.desc().nulls_last(), peers.c.user_id)
            ).mappings()
            return [_peer(r) for r in rows]

    def set_alias(self, bot_id: str, user_id: str, alias: str | None) -> None:
        """Name a user (unique per account); None clears. Creates the peer if unknown."""
        alias = alias or None
        with self._write() as conn:
            self._require_account(conn, bot_id)
            if alias is not None:
                owner = conn.execute(
                    select(peers.c.user_id).where(peers.c.bot_id == bot_id, peers.c.alias == alias)
                ).scalar_one_or_none()
                if owner is not None and owner != user_id:
                    raise InvalidTransitionError(
                        f"alias {alias!r} already names {owner!r} on {bot_id!r}"
                    )
            stmt = self._insert(peers).values(
                bot_id=bot_id, user_id=user_id, alias=alias, sent_since_inbound=0
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[peers.c.bot_id, peers.c.user_id],
                set_={"alias": stmt.excluded.alias},
            )
            conn.execute(stmt)

    def resolve_alias(self, bot_id: str, alias: str) -> str | None:
        with self._lane.read() as cur:
            value = cur.scalar(
                "SELECT user_id FROM peers WHERE bot_id = ? AND alias = ?", (bot_id, alias)
            )
        return str(value) if value is not None else None

    # ------------------------------------------------------------------ outbox

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
        now = self._now()
        stamp = self._lane.ts(now)
        rows: list[OutboxRow] = []
        inserted: set[int] = set()
        with self._lane.write(nowait=nowait) as cur:
            claiming = claim_lease_seconds is not None and state == OutboxState.PENDING
            if claiming and self._pg:  # claims of one account take turns (see claim)
                cur.execute(_PG_ACCOUNT_LOCK, (_PG_CLAIM_LOCK_NAMESPACE, bot_id))
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
            until = self._lane.ts(claimed_until)
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
                        f"SELECT {_OUTBOX_COLS} FROM outbox WHERE bot_id = ? AND client_id = ?",
                        (bot_id, given),
                    )
                    assert existing is not None  # the conflict said it is there
                    rows.append(_outbox_row(existing))
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
        now = self._now()
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
        if self._pg:
            query = query.with_for_update(of=outbox, skip_locked=True)
        with self._write() as conn:
            if self._pg and ids is None:
                # Claims of one account take turns (they are short), so the in-flight test
                # above sees the previous claimer's committed rows: per-user order stays strict
                # with several sender processes. SKIP LOCKED still keeps a claim from waiting
                # on rows another transaction (mark_*, retry, release) holds.
                conn.exec_driver_sql(
                    self._lane.sql(_PG_ACCOUNT_LOCK), (_PG_CLAIM_LOCK_NAMESPACE, bot_id)
                )

            def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in conn.exec_driver_sql(self._lane.sql(sql), tuple(params))]

            def execute(sql: str, params: Sequence[Any]) -> int:
                return int(conn.exec_driver_sql(self._lane.sql(sql), tuple(params)).rowcount)

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
            rows = self._outbox_by_ids(conn, claimed)
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
        params: list[Any] = [bot_id, OutboxState.SENDING.value, self._lane.ts(now)]
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
                    self._lane.ts(now),
                    outbox_id,
                    OutboxState.SENDING.value,
                ),
            )
        if gone:
            log.warning("outbox_claim_taken_over", bot_id=bot_id, outbox_ids=gone)

    def _peer_sent(self, conn: Connection, row: OutboxRow) -> None:
        conn.execute(
            update(peers)
            .where(peers.c.bot_id == row.bot_id, peers.c.user_id == row.user_id)
            .values(sent_since_inbound=peers.c.sent_since_inbound + 1)
        )

    def mark_sent(self, outbox_id: int, message_id: str | None) -> OutboxRow:
        """State ``sent`` (+ server message id); counts against the peer's reply window."""
        return self.mark_sent_many([(outbox_id, message_id)])[0]

    def mark_sent_many(
        self, sent: Sequence[tuple[int, str | None]], *, nowait: bool = False
    ) -> list[OutboxRow]:
        """:meth:`mark_sent` for several rows in one transaction (a sender's pass).
        ``nowait``: raise :class:`StoreBusy` instead of waiting for SQLite's write lock."""
        now = self._now()
        stamp = self._lane.ts(now)
        lock = " FOR UPDATE" if self._pg else ""
        out: list[OutboxRow] = []
        with self._lane.write(nowait=nowait) as cur:
            for outbox_id, message_id in sent:
                updated = cur.one(
                    outbox,
                    "UPDATE outbox SET state = ?, message_id = ?, last_error = NULL, "
                    "claimed_until = NULL, sent_at = ?, updated_at = ? "
                    f"WHERE id = ? AND state <> ? RETURNING {_OUTBOX_COLS}",
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
                    row = _outbox_row(updated)
                    cur.execute(
                        "UPDATE peers SET sent_since_inbound = sent_since_inbound + 1 "
                        "WHERE bot_id = ? AND user_id = ?",
                        (row.bot_id, row.user_id),
                    )
                    out.append(row)
                    continue
                # Missing, or already sent: a sent row is never re-counted.
                found = cur.one(
                    outbox, f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?{lock}", (outbox_id,)
                )
                if found is None:
                    raise NotFoundError(f"no outbox row {outbox_id}")
                row = _outbox_row(found)
                if message_id and not row.message_id:  # a late id for a sent row
                    cur.execute(
                        "UPDATE outbox SET message_id = ?, updated_at = ? WHERE id = ?",
                        (message_id, stamp, outbox_id),
                    )
                    row = replace(row, message_id=message_id, updated_at=now)
                out.append(row)
        return out

    def mark_unconfirmed(self, outbox_id: int, reason: str) -> OutboxRow:
        """ret=0 without a message id: accepted, delivery unknown. Counts against the window."""
        now = self._now()
        with self._write() as conn:
            row = self._outbox_for_update(conn, outbox_id)
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
            self._peer_sent(conn, row)
            result = self._outbox_by_id(conn, outbox_id)
        log.warning("outbox_unconfirmed", bot_id=row.bot_id, outbox_id=outbox_id)
        return result

    def mark_held(self, outbox_id: int, reason: str) -> OutboxRow:
        """Park the row (reply window closed, quota used); :meth:`release_held` re-queues it."""
        with self._write() as conn:
            row = self._outbox_for_update(conn, outbox_id)
            if row.state in (OutboxState.SENT, OutboxState.DEAD):
                return row
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    state=OutboxState.HELD.value,
                    last_error=reason,
                    claimed_until=None,
                    updated_at=self._now(),
                )
            )
            return self._outbox_by_id(conn, outbox_id)

    def mark_failed(
        self, outbox_id: int, error: str, *, retryable: bool, max_attempts: int
    ) -> OutboxRow:
        """Retryable and attempts < max_attempts: back to ``pending``; else ``failed``."""
        with self._write() as conn:
            row = self._outbox_for_update(conn, outbox_id)
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
                    updated_at=self._now(),
                )
            )
            result = self._outbox_by_id(conn, outbox_id)
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
        with self._write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(list(ids)), outbox.c.state == OutboxState.SENDING.value)
                .values(
                    state=OutboxState.SESSION_EXPIRED.value,
                    last_error=reason,
                    claimed_until=None,
                    claimed_by=None,
                    updated_at=self._now(),
                )
            )
            return self._outbox_by_ids(conn, ids)

    def release_held(self, bot_id: str, user_id: str) -> list[OutboxRow]:
        """``held`` -> ``pending`` for that user (call it when the user writes), in order."""
        with self._read() as conn:  # nearly always nothing is held: no write lock for that
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
        with self._write() as conn:
            released = conn.execute(
                update(outbox)
                .where(
                    outbox.c.bot_id == bot_id,
                    outbox.c.user_id == user_id,
                    outbox.c.state == OutboxState.HELD.value,
                )
                .values(state=OutboxState.PENDING.value, updated_at=self._now())
                .returning(outbox.c.id)
            ).scalars()
            rows = self._outbox_by_ids(conn, sorted(int(i) for i in released))
        if rows:
            log.info("outbox_released", bot_id=bot_id, count=len(rows))
        return rows

    def unclaim(self, outbox_id: int) -> OutboxRow:
        """Hand a claimed row back untouched: ``sending`` -> ``pending``, the claim's attempt
        not counted (a sender that claimed more than it may send now, to keep order)."""
        with self._write() as conn:
            row = self._outbox_for_update(conn, outbox_id)
            if row.state != OutboxState.SENDING:
                return row
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(
                    state=OutboxState.PENDING.value,
                    attempts=func.max(outbox.c.attempts - 1, 0)
                    if not self._pg
                    else func.greatest(outbox.c.attempts - 1, 0),
                    claimed_until=None,
                    claimed_by=None,
                    updated_at=self._now(),
                )
            )
            return self._outbox_by_id(conn, outbox_id)

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
        with self._read() as conn:
            return [_outbox_row(r) for r in conn.execute(query).mappings()]

    def get_outbox(self, outbox_id: int) -> OutboxRow | None:
        with self._lane.read() as cur:
            row = cur.one(outbox, f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?", (outbox_id,))
        return _outbox_row(row) if row is not None else None

    def retry_outbox(self, outbox_id: int) -> OutboxRow:
        """failed / held / unconfirmed / dead (or an expired sending) -> pending, attempts 0."""
        now = self._now()
        with self._write() as conn:
            row = self._outbox_for_update(conn, outbox_id)
            if row.state == OutboxState.PENDING:
                return row
            stale = row.state == OutboxState.SENDING and (
                row.claimed_until is None or row.claimed_until < now
            )
            if row.state not in _REOPENABLE and not stale:
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
            return self._outbox_by_id(conn, outbox_id)

    def drop_outbox(self, outbox_id: int) -> OutboxRow:
        """-> ``dead`` (kept for history). A sent row cannot be dropped."""
        with self._write() as conn:
            row = self._outbox_for_update(conn, outbox_id)
            if row.state == OutboxState.DEAD:
                return row
            if row.state == OutboxState.SENT:
                raise InvalidTransitionError(f"outbox row {outbox_id} was already sent")
            conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(state=OutboxState.DEAD.value, claimed_until=None, updated_at=self._now())
            )
            return self._outbox_by_id(conn, outbox_id)

    def update_outbox_payload(self, outbox_id: int, payload: Mapping[str, Any]) -> OutboxRow:
        with self._write() as conn:
            result = conn.execute(
                update(outbox)
                .where(outbox.c.id == outbox_id)
                .values(payload=dict(payload), updated_at=self._now())
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no outbox row {outbox_id}")
            return self._outbox_by_id(conn, outbox_id)

    # ------------------------------------------------------------------ user data

    def get_user_data(self, bot_id: str, user_id: str) -> dict[str, Any]:
        with self._read() as conn:
            rows = conn.execute(
                select(user_data.c.key, user_data.c.value)
                .where(user_data.c.bot_id == bot_id, user_data.c.user_id == user_id)
                .order_by(user_data.c.key)
            ).all()
        return {str(r.key): r.value for r in rows}

    def set_user_value(self, bot_id: str, user_id: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key`` for that user."""
        now = self._now()
        stmt = self._insert(user_data).values(
            bot_id=bot_id, user_id=user_id, key=key, value=value, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[user_data.c.bot_id, user_data.c.user_id, user_data.c.key],
            set_={"value": stmt.excluded.value, "updated_at": now},
        )
        with self._write() as conn:
            self._require_account(conn, bot_id)
            conn.execute(stmt)

    def delete_user_value(self, bot_id: str, user_id: str, key: str) -> bool:
        with self._write() as conn:
            result = conn.execute(
                delete(user_data).where(
                    user_data.c.bot_id == bot_id,
                    user_data.c.user_id == user_id,
                    user_data.c.key == key,
                )
            )
            return result.rowcount > 0

    # ------------------------------------------------------------------ polling leases

    def acquire_lease(self, bot_id: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the account's polling lease; True if it is now ``owner``'s.

        Succeeds when the lease is free, expired (a crashed holder) or already ``owner``'s.
        """
        now = self._now()
        expires = now + timedelta(seconds=ttl_seconds)
        stmt = self._insert(leases).values(
            bot_id=bot_id, owner=owner, acquired_at=now, expires_at=expires
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[leases.c.bot_id],
            set_={
                "owner": stmt.excluded.owner,
                "acquired_at": case(
                    (leases.c.owner == stmt.excluded.owner, leases.c.acquired_at),
                    else_=stmt.excluded.acquired_at,
                ),
                "expires_at": stmt.excluded.expires_at,
            },
            where=(leases.c.owner == stmt.excluded.owner) | (leases.c.expires_at < now),
        ).returning(leases.c.owner)
        with self._write() as conn:
            got = conn.execute(stmt).scalar_one_or_none()
        return got is not None

    def renew_leases(self, owner: str, ttl_seconds: float) -> set[str]:
        """Extend every live lease ``owner`` holds by ``ttl_seconds``, in one statement (a
        worker polling 1,000 accounts renews them together); the accounts still held."""
        now = self._now()
        with self._write() as conn:
            held = conn.execute(
                update(leases)
                .where(leases.c.owner == owner, leases.c.expires_at >= now)
                .values(expires_at=now + timedelta(seconds=ttl_seconds))
                .returning(leases.c.bot_id)
            ).scalars()
            return {str(bot_id) for bot_id in held}

    def unpolled_accounts(self) -> set[str]:
        """Active accounts (with a token) that nobody holds a live polling lease on."""
        now = self._now()
        live = select(leases.c.bot_id).where(leases.c.expires_at >= now)
        with self._read() as conn:
            found = conn.execute(
                select(accounts.c.bot_id).where(
                    accounts.c.state == AccountState.ACTIVE.value,
                    accounts.c.token.is_not(None),
                    accounts.c.bot_id.not_in(live),
                )
            ).scalars()
            return {str(bot_id) for bot_id in found}

    def accounts_with_unsent(self) -> set[str]:
        """The accounts with rows waiting to be sent (pending, or a claim that ran out)."""
        now = self._now()
        with self._read() as conn:
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

    def release_lease(self, bot_id: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(delete(leases).where(leases.c.bot_id == bot_id, leases.c.owner == owner))

    def heartbeat_worker(self, owner: str, ttl_seconds: float) -> int:
        """Say ``owner`` (a running receive loop) is alive for ``ttl_seconds`` more, forget
        workers whose heartbeat ran out, and return how many are alive, ``owner`` included."""
        now = self._now()
        stmt = self._insert(workers).values(
            owner=owner, seen_at=now, expires_at=now + timedelta(seconds=ttl_seconds)
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[workers.c.owner],
            set_={"seen_at": stmt.excluded.seen_at, "expires_at": stmt.excluded.expires_at},
        )
        with self._write() as conn:
            conn.execute(stmt)
            conn.execute(delete(workers).where(workers.c.expires_at < now))
            alive = conn.execute(select(func.count()).select_from(workers)).scalar_one()
        return int(alive)

    def retire_worker(self, owner: str) -> None:
        """``owner`` stops: the others take its share at once instead of after its TTL."""
        with self._write() as conn:
            conn.execute(delete(workers).where(workers.c.owner == owner))

    def counts(self) -> dict[str, Any]:
        """What a status page or ``/metrics`` needs, in a few aggregate reads however many
        accounts there are: accounts and outbox rows by state, dead inbox rows, polling
        leases held and live workers."""
        now = self._now()
        with self._read() as conn:
            by_state = conn.execute(
                select(accounts.c.state, func.count()).group_by(accounts.c.state)
            ).all()
            out_state = conn.execute(
                select(outbox.c.state, func.count()).group_by(outbox.c.state)
            ).all()
            dead = conn.execute(
                select(func.count()).select_from(inbox).where(inbox.c.dead_at.is_not(None))
            ).scalar_one()
            polled = conn.execute(
                select(func.count()).select_from(leases).where(leases.c.expires_at >= now)
            ).scalar_one()
            alive = conn.execute(
                select(func.count()).select_from(workers).where(workers.c.expires_at >= now)
            ).scalar_one()
        return {
            "accounts": {str(state): int(n) for state, n in by_state},
            "outbox": {str(state): int(n) for state, n in out_state},
            "dead_inbox": int(dead),
            "polled_accounts": int(polled),
            "workers": int(alive),
        }

    def lease_holder(self, bot_id: str) -> str | None:
        """The current holder, or None if the lease is free or expired."""
        with self._lane.read() as cur:
            value = cur.scalar(
                "SELECT owner FROM leases WHERE bot_id = ? AND expires_at >= ?",
                (bot_id, self._lane.ts(self._now())),
            )
        return str(value) if value is not None else None


# ---------------------------------------------------------------------- row conversion


# A user wrote: newest token (a message without one keeps the old), reply window reset,
# last_inbound_at never moved backwards, first seen kept.
_TOUCH_PEER = (
    "INSERT INTO peers (bot_id, user_id, context_token, last_inbound_at, sent_since_inbound, "
    "first_seen_at, last_seen_at) VALUES (?, ?, ?, ?, 0, ?, ?) "
    "ON CONFLICT (bot_id, user_id) DO UPDATE SET "
    "context_token = COALESCE(excluded.context_token, peers.context_token), "
    "last_inbound_at = CASE WHEN peers.last_inbound_at IS NULL "
    "OR peers.last_inbound_at < excluded.last_inbound_at "
    "THEN excluded.last_inbound_at ELSE peers.last_inbound_at END, "
    "sent_since_inbound = 0, "
    "first_seen_at = COALESCE(peers.first_seen_at, excluded.first_seen_at), "
    "last_seen_at = excluded.last_seen_at"
)
_ACCOUNT_COLS = columns(accounts)
_PEER_COLS = columns(peers)
_OUTBOX_COLS = columns(outbox)


def _account(r: Mapping[Any, Any]) -> Account:
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


def _peer(r: Mapping[Any, Any]) -> Peer:
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


def _inbox_row(r: RowMapping) -> InboxRow:
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


def _outbox_row(r: Mapping[Any, Any]) -> OutboxRow:
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
