"""Table definitions (SQLAlchemy Core) and the plain row objects the store hands out.

Rows are frozen dataclasses built from result rows inside the transaction, so callers never
touch a session, never lazy-load, and may pass them between threads freely.

Conventions shared by both engines:

* every timestamp is stored through :class:`UTCDateTime` and comes back timezone-aware UTC
  (``timestamptz`` on PostgreSQL, ISO text on SQLite);
* JSON values (raw inbound messages, outbox payloads, user data) are stored as text through
  :class:`JSONText`, so both engines keep exactly what was written;
* ilink ids (bot ids, user ids, message ids, client ids) are TEXT; message ids are uint64 on
  the wire and are never squeezed into a signed 64-bit column.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import DateTime, TypeDecorator

__all__ = [
    "Account",
    "AccountState",
    "InboundRecord",
    "InboxRow",
    "JSONText",
    "OutboxRow",
    "OutboxState",
    "Peer",
    "PendingLogin",
    "UTCDateTime",
    "dump_json",
    "metadata",
    "settings",
]


class AccountState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    LOGGED_OUT = "logged_out"


class OutboxState(StrEnum):
    PENDING = "pending"  # waiting to be claimed
    SENDING = "sending"  # claimed by a sender until ``claimed_until``
    SENT = "sent"  # server answered with success (and usually a message id)
    HELD = "held"  # parked (reply window / quota); released when the user writes
    UNCONFIRMED = "unconfirmed"  # ret=0 without message_id: accepted, delivery unknown
    FAILED = "failed"  # gave up (permanent error or attempts exhausted)
    DEAD = "dead"  # dropped by an operator; kept for history
    # the server answered -14 (stale bot token): kept until the owner logs in again, then
    # moved to the new account as ``held``
    SESSION_EXPIRED = "session_expired"


def require_aware(value: datetime, name: str) -> datetime:
    """Return ``value`` in UTC; naive datetimes are refused (they are always a bug here)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


_LAST_SQLITE_TS: list[tuple[datetime | None, str | None]] = [(None, None)]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every engine.

    SQLite has no timestamp type: values are stored as naive UTC ISO text (which sorts and
    compares correctly as text); PostgreSQL gets ``timestamptz``. Reads always return aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = require_aware(value, "timestamp")
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite's DATETIME writes "YYYY-MM-DD HH:MM:SS.ffffff" through a %-format of a dict,
        # several times slower than isoformat, which writes that same text. A transaction
        # binds its one "now" several times: the last value's text is kept (one atomic slot).
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            seen, text = _LAST_SQLITE_TS[0]
            if seen is value:
                return text
            naive = require_aware(value, "timestamp").replace(tzinfo=None)
            text = naive.isoformat(" ", "microseconds")
            _LAST_SQLITE_TS[0] = (value, text)
            return text

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def dump_json(value: Any) -> str | None:
    """JSON text as :class:`JSONText` stores it (compact, non-ASCII kept as is)."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class JSONText(TypeDecorator[Any]):
    """Any JSON value stored as text (compact, non-ASCII kept as is)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return dump_json(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # Text binds as it is on both drivers: skip TypeDecorator's wrapper (a message's
        # raw JSON is bound once per inbox row).
        if self.impl_instance.dialect_impl(dialect).bind_processor(dialect) is None:
            return dump_json
        return super().bind_processor(dialect)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return json.loads(value)


# Integer primary keys: BIGINT identity on PostgreSQL, the rowid alias on SQLite.
_PK = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

schema_table = Table(
    "ilinkbot_schema",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)


def _states(enum: type[StrEnum]) -> str:
    return ", ".join(f"'{m.value}'" for m in enum)


accounts = Table(
    "accounts",
    metadata,
    Column("bot_id", String(255), primary_key=True),
    Column("token", Text, nullable=True),  # NULL after logout
    Column("base_url", Text, nullable=True),
    Column("owner_user_id", String(255), nullable=True),
    Column("state", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=False),
    Column("token_saved_at", UTCDateTime, nullable=True),
    # the platform's own id for the user who bound this account (serve's accounts API)
    Column("ref", String(255), nullable=True),
    CheckConstraint(f"state IN ({_states(AccountState)})", name="state"),
    Index("ix_accounts_ref", "ref"),
)

cursors = Table(
    "cursors",
    metadata,
    Column(
        "bot_id", String(255), ForeignKey("accounts.bot_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("cursor", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

peers = Table(
    "peers",
    metadata,
    Column(
        "bot_id", String(255), ForeignKey("accounts.bot_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("user_id", String(255), primary_key=True),
    Column("context_token", Text, nullable=True),
    Column("last_inbound_at", UTCDateTime, nullable=True),
    Column("sent_since_inbound", Integer, nullable=False, default=0),
    Column("first_seen_at", UTCDateTime, nullable=True),
    Column("last_seen_at", UTCDateTime, nullable=True),
    Column("alias", String(255), nullable=True),
    UniqueConstraint("bot_id", "alias"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column(
        "bot_id", String(255), ForeignKey("accounts.bot_id", ondelete="CASCADE"), nullable=False
    ),
    Column("message_id", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("context_token", Text, nullable=True),
    Column("raw", JSONText, nullable=False),
    Column("created_at", UTCDateTime, nullable=True),  # the message's create time, if known
    Column("received_at", UTCDateTime, nullable=False),
    Column("handled_at", UTCDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("dead_at", UTCDateTime, nullable=True),
    UniqueConstraint("bot_id", "message_id"),
    Index(None, "bot_id", "handled_at", "dead_at", "id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", _PK, primary_key=True, autoincrement=True),
    Column(
        "bot_id", String(255), ForeignKey("accounts.bot_id", ondelete="CASCADE"), nullable=False
    ),
    Column("user_id", String(255), nullable=False),
    Column("client_id", String(128), nullable=False),
    Column("payload", JSONText, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("message_id", String(64), nullable=True),
    Column("seq", Integer, nullable=False, default=0),
    Column("group_key", String(255), nullable=True),
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime, nullable=True),
    # who holds the claim while ``sending``: "<host>/<pid>" (a dead holder is taken over)
    Column("claimed_by", String(255), nullable=True),
    UniqueConstraint("bot_id", "client_id"),
    CheckConstraint(f"state IN ({_states(OutboxState)})", name="state"),
    Index(None, "bot_id", "state", "id"),
    Index(None, "bot_id", "user_id", "state", "id"),
)

user_data = Table(
    "user_data",
    metadata,
    Column(
        "bot_id", String(255), ForeignKey("accounts.bot_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("user_id", String(255), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", JSONText, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("bot_id", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

#: Processes running a receive loop on this store, each with a heartbeat: how many share the
#: accounts, so that each polls its fair share.
workers = Table(
    "workers",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

pending_login = Table(
    "pending_login",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("qrcode", Text, nullable=False),
    Column("qr_url", Text, nullable=False),
    Column("poll_base", Text, nullable=False),
    Column("png_path", Text, nullable=True),
    Column("issued_at", UTCDateTime, nullable=False),
)

#: Installation-wide choices (one row per key), e.g. the default account of pushes.
settings = Table(
    "settings",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)


# --------------------------------------------------------------------------- row objects
# Secrets (bot tokens, context tokens, raw messages and payloads that may carry them) are
# excluded from repr() so that logging a row never leaks them.


@dataclass(frozen=True, slots=True)
class Account:
    bot_id: str
    token: str | None = field(repr=False)
    base_url: str | None
    owner_user_id: str | None
    state: AccountState
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime
    token_saved_at: datetime | None
    ref: str | None = None  # the platform's user id (serve's accounts API)


@dataclass(frozen=True, slots=True)
class Peer:
    bot_id: str
    user_id: str
    context_token: str | None = field(repr=False)
    last_inbound_at: datetime | None  # the user's latest message (reply window start)
    sent_since_inbound: int  # bot messages sent (or unconfirmed) since that message
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    alias: str | None

    def after_sends(self, count: int = 1) -> Peer:
        """This peer with ``count`` more bot messages counted against its reply window (what
        a sender keeps in memory between the store's reads; cheaper than ``replace``)."""
        return Peer(
            self.bot_id,
            self.user_id,
            self.context_token,
            self.last_inbound_at,
            self.sent_since_inbound + count,
            self.first_seen_at,
            self.last_seen_at,
            self.alias,
        )


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """One message from a getupdates batch, as handed to :meth:`Store.record_batch`.

    ``raw`` is the message as JSON: a dict, or the JSON text of an object. ``is_user`` is
    False for messages the bot itself authored (``message_type`` 2): they are kept in the
    inbox but do not reset the reply window nor replace the peer's context token.
    """

    message_id: str
    user_id: str
    context_token: str | None = field(repr=False)
    raw: dict[str, Any] | str = field(repr=False)
    created_at: datetime | None = None
    is_user: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.message_id, str) or not self.message_id:
            raise ValueError("message_id must be a non-empty string")
        if not self.user_id:
            raise ValueError("user_id must be non-empty")
        if self.created_at is not None:
            object.__setattr__(self, "created_at", require_aware(self.created_at, "created_at"))

    def raw_dict(self) -> dict[str, Any]:
        value = json.loads(self.raw) if isinstance(self.raw, str) else self.raw
        if not isinstance(value, dict):
            raise ValueError(f"raw of message {self.message_id} is not a JSON object")
        return value


@dataclass(frozen=True, slots=True)
class InboxRow:
    id: int
    bot_id: str
    message_id: str
    user_id: str
    context_token: str | None = field(repr=False)
    raw: dict[str, Any] = field(repr=False)
    created_at: datetime | None
    received_at: datetime
    handled_at: datetime | None
    attempts: int
    last_error: str | None
    dead_at: datetime | None

    @property
    def handled(self) -> bool:
        return self.handled_at is not None

    @property
    def dead(self) -> bool:
        return self.dead_at is not None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    bot_id: str
    user_id: str
    client_id: str
    payload: dict[str, Any] = field(repr=False)
    state: OutboxState
    attempts: int
    last_error: str | None
    message_id: str | None
    seq: int  # position within its enqueue call (0, 1, ...); order across calls is ``id``
    group: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    claimed_until: datetime | None
    claimed_by: str | None = None  # "<host>/<pid>" of the sender, meaningful while sending


@dataclass(frozen=True, slots=True)
class PendingLogin:
    qrcode: str
    qr_url: str
    poll_base: str
    png_path: str | None
    issued_at: datetime
