"""Fixtures for the store suite: every repository test runs on SQLite and on PostgreSQL.

PostgreSQL: ``$ILINKBOT_TEST_PG_URL`` or ``postgresql+psycopg://postgres@127.0.0.1:5432/test``.
Each test gets a fresh schema (selected through ``search_path``) that is dropped afterwards, so
parallel or repeated runs never collide. When no server answers the PostgreSQL cases are skipped
with the reason, unless ``ILINKBOT_TEST_PG_REQUIRED=1`` (set by ``.ci/run``): then they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import Connection, text

from ilinkbot.store import Store

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)]

_pg_state: dict[str, str | None] = {}


def pg_base_url() -> str:
    return os.environ.get("ILINKBOT_TEST_PG_URL") or DEFAULT_PG_URL


def _libpq_url(url: str) -> str:
    """The SQLAlchemy URL as a plain libpq URL, for psycopg.connect."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


def pg_unavailable_reason() -> str | None:
    """None if the test server answers, else why not (checked once per session)."""
    if "reason" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(_libpq_url(pg_base_url()), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _pg_state["reason"] = None
        except Exception as exc:  # any failure means "no usable server"
            _pg_state["reason"] = (
                f"PostgreSQL test server not reachable at {pg_base_url()!r} "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}); "
                "set ILINKBOT_TEST_PG_URL, or ILINKBOT_TEST_PG_REQUIRED=1 to fail instead"
            )
    return _pg_state["reason"]


def require_pg() -> None:
    reason = pg_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("ILINKBOT_TEST_PG_REQUIRED") == "1":
        pytest.fail(f"ILINKBOT_TEST_PG_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _with_search_path(url: str, schema: str) -> str:
    options = quote(f"-csearch_path={schema}", safe="")
    return f"{url}{'&' if '?' in url else '?'}options={options}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a brand-new schema, dropped after the test."""
    require_pg()
    import psycopg

    schema = f"ilinkbot_test_{secrets.token_hex(6)}"
    base = pg_base_url()
    with psycopg.connect(_libpq_url(base), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield _with_search_path(base, schema)
    finally:
        with psycopg.connect(_libpq_url(base), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=ENGINES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty database on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'home' / 'ilinkbot.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@dataclass
class FakeClock:
    now: datetime = field(default_factory=lambda: datetime(2025, 1, 1, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_store(db_url: str) -> Iterator[Callable[..., Store]]:
    """Open stores on the test database (several may be open at once); all closed after."""
    opened: list[Store] = []

    def _open(**kwargs: object) -> Store:
        store = Store.open(db_url, **kwargs)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


BOT = "b0f5860fdecb@im.bot"
USER = "o9cq80_alice@im.wechat"


@pytest.fixture
def bot(store: Store) -> str:
    store.save_account(
        BOT, token="tok-1", base_url="https://ilinkai.weixin.qq.com", owner_user_id=USER
    )
    return BOT


def outbox_before_version_4(conn: Connection) -> None:
    """Give a fresh database's outbox the shape versions 1-3 created (no ``claimed_by``,
    no ``session_expired`` state), for upgrade tests."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE outbox DROP COLUMN claimed_by"))
        conn.execute(text("ALTER TABLE outbox DROP CONSTRAINT ck_outbox_state"))
        conn.execute(
            text(
                "ALTER TABLE outbox ADD CONSTRAINT ck_outbox_state CHECK (state IN "
                "('pending', 'sending', 'sent', 'held', 'unconfirmed', 'failed', 'dead'))"
            )
        )
        return
    sql = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'")
    ).scalar_one()
    old = sql.replace("\tclaimed_by VARCHAR(255), \n", "").replace(", 'session_expired'", "")
    assert old != sql and "claimed_by" not in old
    conn.execute(text("DROP TABLE outbox"))
    conn.execute(text(old))
    conn.execute(text("CREATE INDEX ix_outbox_bot_id_state_id ON outbox (bot_id, state, id)"))
