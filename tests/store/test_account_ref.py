"""The platform's user id (``ref``) kept with an account (serve's accounts API, issue 16)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from ilinkbot.store import SCHEMA_VERSION, Store, UnknownAccountError

from .conftest import BOT

OTHER = "c0ffee000002@im.bot"


def test_ref_is_kept_found_and_cleared(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.save_account(BOT, token="t1", base_url=None, owner_user_id="o1")
        store.save_account(OTHER, token="t2", base_url=None, owner_user_id="o2")
        assert store.accounts_by_ref("user-42") == []
        store.set_account_ref(BOT, "user-42")
        with pytest.raises(UnknownAccountError):
            store.set_account_ref("nobody@im.bot", "user-42")
    with Store.open(db_url) as store:  # another process sees it
        assert [a.bot_id for a in store.accounts_by_ref("user-42")] == [BOT]
        assert store.get_account(BOT).ref == "user-42"  # type: ignore[union-attr]
        assert store.get_account(OTHER).ref is None  # type: ignore[union-attr]
        store.save_account(BOT, token="t3", base_url=None, owner_user_id=None)
        assert store.get_account(BOT).ref == "user-42"  # type: ignore[union-attr]  # kept
        store.set_account_ref(OTHER, "user-42")
        assert {a.bot_id for a in store.accounts_by_ref("user-42")} == {BOT, OTHER}
        store.set_account_ref(BOT, None)
        assert [a.bot_id for a in store.accounts_by_ref("user-42")] == [OTHER]


def test_a_version_4_database_gains_the_ref_column(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.save_account(BOT, token="t1", base_url=None, owner_user_id=None)
        with store.engine.begin() as conn:  # back to what version 4 created
            conn.execute(text("DROP INDEX ix_accounts_ref"))
            conn.execute(text("ALTER TABLE accounts DROP COLUMN ref"))
            conn.execute(text("UPDATE ilinkbot_schema SET version = 4"))
        assert store.schema_version == 4
    with Store.open(db_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("accounts")}
        assert "ix_accounts_ref" in indexes
        assert store.get_account(BOT).ref is None  # type: ignore[union-attr]
        store.set_account_ref(BOT, "user-7")
        assert [a.bot_id for a in store.accounts_by_ref("user-7")] == [BOT]
