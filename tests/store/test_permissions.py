"""Where the SQLite database lives and who may read it (tokens are inside)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ilinkbot.store import Store, default_home, resolve_url

from .conftest import BOT


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask022", "umask000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _exercise(store: Store) -> None:
    store.save_account(BOT, token="secret-token", base_url=None, owner_user_id=None)
    store.set_user_value(BOT, "u", "k", "v")


def test_default_location_is_created_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    home = tmp_path / "deep" / "ilinkbot-home"
    monkeypatch.setenv("ILINKBOT_HOME", str(home))
    assert default_home() == home
    store = Store.open()
    try:
        _exercise(store)
        db = home / "ilinkbot.db"
        assert db.is_file()
        assert mode(home) == 0o700
        assert mode(db) == 0o600
        # the store is open in WAL mode: the -wal and -shm files exist and are private too
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        assert wal.exists() and shm.exists()
        assert mode(wal) == 0o600 and mode(shm) == 0o600
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    finally:
        store.close()


def test_home_argument_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ILINKBOT_HOME", str(tmp_path / "env"))
    with Store.open(home=tmp_path / "arg") as store:
        _exercise(store)
    assert (tmp_path / "arg" / "ilinkbot.db").is_file()
    assert not (tmp_path / "env").exists()


def test_default_home_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ILINKBOT_HOME", raising=False)
    assert default_home() == Path.home() / ".ilinkbot"
    assert resolve_url(None).database == str(Path.home() / ".ilinkbot" / "ilinkbot.db")


def test_existing_loose_file_is_tightened(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    db = home / "ilinkbot.db"
    db.touch()
    os.chmod(db, 0o644)
    with Store.open(home=home) as store:
        _exercise(store)
    assert mode(db) == 0o600


def test_explicit_sqlite_url_gets_the_same_treatment(tmp_path: Path) -> None:
    db = tmp_path / "new-dir" / "bot.sqlite"
    with Store.open(f"sqlite:///{db}") as store:
        _exercise(store)
    assert mode(db.parent) == 0o700 and mode(db) == 0o600


def test_url_normalisation() -> None:
    assert resolve_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert resolve_url("sqlite:///x.db").drivername == "sqlite+pysqlite"
    with pytest.raises(ValueError):
        resolve_url("mysql://u@h/db")
    with pytest.raises(ValueError):
        resolve_url("postgresql+psycopg2://u@h/db")
