"""The versioned migration scheme (store/migrations.py), on both engines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, inspect, text

from ilinkbot.store import SCHEMA_VERSION, SchemaTooNewError, Store, migrations
from ilinkbot.store.migrations import Step

from .conftest import BOT, outbox_before_version_4


@pytest.fixture
def restore_steps() -> Iterator[None]:
    saved = dict(migrations.STEPS)
    yield
    migrations.STEPS.clear()
    migrations.STEPS.update(saved)


def test_fresh_database_is_stamped_current(db_url: str) -> None:
    with Store.open(db_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        names = set(inspect(store.engine).get_table_names())
    assert {
        "accounts",
        "cursors",
        "peers",
        "inbox",
        "outbox",
        "user_data",
        "leases",
        "pending_login",
        "ilinkbot_schema",
    } <= names


def test_reopen_keeps_data_and_version(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.save_account(BOT, token="t", base_url=None, owner_user_id=None)
    with Store.open(db_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.get_account(BOT) is not None


def test_steps_upgrade_an_older_database(db_url: str, restore_steps: None) -> None:
    with Store.open(db_url) as store:
        store.save_account(BOT, token="t", base_url=None, owner_user_id=None)
        engine = store.engine
        url = engine.url.render_as_string(hide_password=False)
    migrations.STEPS[SCHEMA_VERSION + 1] = Step(
        "accounts.note", lambda c: c.execute(text("ALTER TABLE accounts ADD COLUMN note TEXT"))
    )
    with Store.open(url) as store:
        assert store.schema_version == SCHEMA_VERSION  # not asked to go further
        assert migrations.migrate(store.engine, target=SCHEMA_VERSION + 1) == SCHEMA_VERSION + 1
        assert store.schema_version == SCHEMA_VERSION + 1
        columns = {c["name"] for c in inspect(store.engine).get_columns("accounts")}
        assert "note" in columns
        assert store.get_account(BOT) is not None
        # the database is now newer than this code: refused, not misread
        with pytest.raises(SchemaTooNewError):
            migrations.migrate(store.engine)


def test_failed_step_leaves_the_old_version(db_url: str, restore_steps: None) -> None:
    def broken(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE half_done (x INTEGER)"))
        raise RuntimeError("step failed")

    with Store.open(db_url) as store:
        migrations.STEPS[SCHEMA_VERSION + 1] = Step("adds then fails", broken)
        with pytest.raises(RuntimeError, match="step failed"):
            migrations.migrate(store.engine, target=SCHEMA_VERSION + 1)
        assert store.schema_version == SCHEMA_VERSION
        assert "half_done" not in inspect(store.engine).get_table_names()


def test_missing_step_is_an_error(db_url: str, restore_steps: None) -> None:
    with Store.open(db_url) as store, pytest.raises(RuntimeError, match="no migration step"):
        migrations.migrate(store.engine, target=SCHEMA_VERSION + 1)


def test_version_3_outbox_gains_session_expired_and_claimed_by(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.save_account(BOT, token="t", base_url=None, owner_user_id=None)
        with store.engine.begin() as conn:
            outbox_before_version_4(conn)
            conn.execute(text("DROP INDEX ix_accounts_ref"))  # version 5
            conn.execute(text("ALTER TABLE accounts DROP COLUMN ref"))
            conn.execute(text("UPDATE ilinkbot_schema SET version = 3"))  # stamped fresh: one row
        with store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO outbox (bot_id, user_id, client_id, payload, state, attempts, "
                    "seq, created_at, updated_at) VALUES (:b, 'u@im.wechat', 'c1', '{}', "
                    "'held', 0, 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"b": BOT},
            )
        assert store.schema_version == 3
    with Store.open(db_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        (row,) = store.list_outbox(BOT)
        assert row.client_id == "c1" and row.state == "held" and row.claimed_by is None
        kept = store.enqueue(BOT, "u@im.wechat", [{"n": 1}], state="session_expired")
        assert kept[0].id > row.id and store.list_outbox(BOT, state="session_expired") == kept
        assert "claimed_by" in {c["name"] for c in inspect(store.engine).get_columns("outbox")}
