"""An unusable configuration, database or disk is one clear line and a documented exit code
(2: configuration, 11: storage), never "unexpected error" with a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ilinkbot.bot.exitcodes import Exit
from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from ilinkbot.store import Store
from tests.clirun import Result, run_cli
from tests.processes import OWNER, ROOT, env_for, login, write_config

PG = "postgresql://postgres@127.0.0.1:5432"


def base_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    env.update(ILINKBOT_HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def assert_one_clear_line(r: Result, code: int, words: str) -> None:
    assert r.code == code, (r.code, r.stderr)
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ilinkbot: ") and words in last, r.stderr


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_file_that_is_not_a_database_is_exit_11(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "ilinkbot.db").write_bytes(b"these are not the bytes of a SQLite database" * 100)
    r = run_cli(base_env(home), "status")
    assert_one_clear_line(r, Exit.STORAGE, "file is not a database")
    r = run_cli(base_env(home), "--json", "status")
    assert json.loads(r.stdout)["exit_code"] == 11


def test_a_read_only_home_is_exit_11(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro", "size=64k") as ro:
        r = run_cli(base_env(ro / "home"), "status")
        assert_one_clear_line(r, Exit.STORAGE, "Read-only file system")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://u@h/db", "unsupported database 'mysql'"),
        ("no url at all", "not a URL"),
        ("sqlite:///{tmp}", "is a directory"),
    ],
)
def test_a_database_url_that_names_no_usable_database_is_exit_2(
    tmp_path: Path, url: str, words: str
) -> None:
    env = base_env(tmp_path / "home", ILINKBOT_DATABASE_URL=url.format(tmp=tmp_path))
    assert_one_clear_line(run_cli(env, "status"), Exit.USAGE, words)


def test_missing_or_unreachable_postgresql_is_exit_11(tmp_path: Path) -> None:
    missing = f"{PG}/nodb_{uuid.uuid4().hex[:8]}"
    r = run_cli(base_env(tmp_path / "h", ILINKBOT_DATABASE_URL=missing), "status")
    assert_one_clear_line(r, Exit.STORAGE, "does not exist")
    unreachable = "postgresql://postgres:hunter22@127.0.0.1:1/test"
    r = run_cli(base_env(tmp_path / "h", ILINKBOT_DATABASE_URL=unreachable), "status")
    assert_one_clear_line(r, Exit.STORAGE, "cannot open the database")
    assert "hunter22" not in r.stderr


def test_a_config_nested_100000_deep_is_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    assert_one_clear_line(run_cli(base_env(home), "status"), Exit.USAGE, "nested too deep")


def test_an_outbox_id_past_64_bits_is_exit_2(tmp_path: Path) -> None:
    r = run_cli(base_env(tmp_path / "home"), "outbox", "retry", "99999999999999999999")
    assert_one_clear_line(r, Exit.USAGE, "not an outbox id")


def test_a_full_disk_during_send_is_exit_11_and_keeps_what_was_stored(tmp_path: Path) -> None:
    sb = Sandbox(longpoll_seconds=0.5, qr_poll_seconds=0.5)
    with SandboxServer(sb) as srv, tmpfs(tmp_path / "small", "size=2m") as disk:
        home = disk / "home"
        write_config(home)
        account = login(sb, srv, home)
        sb.user_says(OWNER, "hi")
        env = env_for(home, srv)
        assert run_cli(env, "send", "before the disk filled").code == 0
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        # room to open the database, not for the 400 kB message: it fills the disk mid-send
        os.truncate(filler, filler.stat().st_size - 128 * 1024)
        r = run_cli(env, "send", "-", stdin="many chunks of text " * 20_000)
        assert_one_clear_line(r, Exit.STORAGE, "database or disk is full")
        filler.unlink()
        with Store.open(None, home=home) as store:
            sent = store.list_outbox(state=["sent"])
            assert [row.bot_id for row in sent] == [account.bot_id]
