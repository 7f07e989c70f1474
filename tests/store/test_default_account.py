"""The default account of pushes, kept in the store (issue 13), on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from ilinkbot.store import SCHEMA_VERSION, Store, UnknownAccountError

from .conftest import BOT, outbox_before_version_4

OTHER = "c0ffee000001@im.bot"


def test_default_account_is_stored_changed_and_cleared(db_url: str) -> None:
    with Store.open(db_url) as store:
        assert store.default_account() is None
        store.save_account(BOT, token="t1", base_url=None, owner_user_id=None)
        store.save_account(OTHER, token="t2", base_url=None, owner_user_id=None)
        store.set_default_account(BOT)
    with Store.open(db_url) as store:  # another process sees it
        assert store.default_account() == BOT
        store.set_default_account(OTHER)
        assert store.default_account() == OTHER
        with pytest.raises(UnknownAccountError):
            store.set_default_account("nobody@im.bot")
        assert store.default_account() == OTHER
        store.set_default_account(None)
        assert store.default_account() is None
        store.set_default_account(None)  # clearing twice is fine


def test_a_version_1_database_gains_the_settings_and_workers_tables(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.save_account(BOT, token="t1", base_url=None, owner_user_id=None)
        with store.engine.begin() as conn:  # back to what version 1 created
            outbox_before_version_4(conn)
            conn.execute(text("DROP TABLE settings"))
            conn.execute(text("DROP TABLE workers"))
            conn.execute(text("DROP INDEX ix_accounts_ref"))  # version 5
            conn.execute(text("ALTER TABLE accounts DROP COLUMN ref"))
            conn.execute(text("UPDATE ilinkbot_schema SET version = 1"))
        assert store.schema_version == 1
    with Store.open(db_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert {"settings", "workers"} <= set(inspect(store.engine).get_table_names())
        assert store.heartbeat_worker("w1", 30) == 1
        assert store.get_account(BOT) is not None
        store.set_default_account(BOT)
        assert store.default_account() == BOT
