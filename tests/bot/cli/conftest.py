"""Fixtures for CLI tests: a sandbox over real HTTP and the CLI run in-process (``run``) or
as a real process (``start``).

Every test gets its own sandbox and ``ILINKBOT_HOME``. Everything the CLI printed (stdout,
stderr) and every file it wrote outside the database is scanned for bot tokens when the
test ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from tests.clirun import Result, run_cli

CLI = [sys.executable, "-c", "import sys; from ilinkbot.bot.cli.main import main; sys.exit(main())"]
DEFAULT_TIMEOUT = 30.0


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Running:
    """A CLI process in the background; its output is collected by reader threads."""

    def __init__(self, proc: subprocess.Popen[bytes], sink: list[str]) -> None:
        self.proc = proc
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._sink = sink
        self._threads = [
            threading.Thread(target=self._pump, args=(proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: Any, into: list[bytes]) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            into.append(chunk)

    @property
    def stdout(self) -> str:
        return b"".join(self._out).decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return b"".join(self._err).decode("utf-8", "replace")

    def wait_stderr(self, text: str, timeout: float = 15.0, count: int = 1) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and self.stderr.count(text) < count:
                time.sleep(0.1)  # let the readers drain
                if self.stderr.count(text) < count:
                    raise AssertionError(
                        f"CLI exited ({self.proc.returncode}) before printing {text!r}:\n"
                        f"{self.stderr}"
                    )
            return self.stderr.count(text) >= count

        wait_until(seen, timeout, f"{text!r} on stderr")

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def finish(self, timeout: float = DEFAULT_TIMEOUT) -> Result:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"CLI did not finish in {timeout} s:\n{self.stderr}") from None
        for t in self._threads:
            t.join(5)
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        result = Result(code, self.stdout, self.stderr)
        self._sink.extend([result.stdout, result.stderr])
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Cli:
    """Runs ``ilinkbot`` against the sandbox with an isolated home."""

    def __init__(self, env: dict[str, str], home: Path) -> None:
        self.env = env
        self.home = home
        self.outputs: list[str] = []
        self._running: list[Running] = []

    def run(self, *args: str, input: str | None = "") -> Result:
        """In this process; :meth:`start` runs a real one."""
        result = run_cli(self.env, *args, stdin=input or "")
        self.outputs.extend([result.stdout, result.stderr])
        return result

    def start(self, *args: str) -> Running:
        proc = subprocess.Popen(
            [*CLI, *args],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        running = Running(proc, self.outputs)
        self._running.append(running)
        return running

    def cleanup(self) -> None:
        for r in self._running:
            if r.proc.poll() is None:
                r.kill()
            self.outputs.extend([r.stdout, r.stderr])


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, SandboxServer]]:
    sb = Sandbox(qr_poll_seconds=0.3)
    with SandboxServer(sb) as srv:
        yield sb, srv


@pytest.fixture
def sb(sandbox: tuple[Sandbox, SandboxServer]) -> Sandbox:
    return sandbox[0]


@pytest.fixture
def srv(sandbox: tuple[Sandbox, SandboxServer]) -> SandboxServer:
    return sandbox[1]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "ilinkbot-home"
    h.mkdir()
    return h


@pytest.fixture
def cli_env(srv: SandboxServer, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    env.update(
        {
            "ILINKBOT_HOME": str(home),
            "ILINKBOT_BASE_URL": srv.base_url,
            "ILINKBOT_CDN_BASE_URL": srv.cdn_base_url,
            "ILINKBOT_QR_POLL_INTERVAL": "0.05",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


_DB_SUFFIXES = ("ilinkbot.db", "ilinkbot.db-wal", "ilinkbot.db-shm", "ilinkbot.db-journal")


@pytest.fixture
def cli(cli_env: dict[str, str], home: Path, sb: Sandbox) -> Iterator[Cli]:
    c = Cli(cli_env, home)
    yield c
    c.cleanup()
    # Token-leak scan: nothing the CLI printed, and no file it wrote outside the
    # database, may contain a bot token (or its secret part).
    secrets: set[str] = set()
    for bot in sb.bots():
        token = bot["bot_token"]
        secrets.add(token)
        if ":" in token:
            secrets.add(token.split(":", 1)[1])
    texts = list(c.outputs)
    for path in home.rglob("*"):
        if path.is_file() and path.name not in _DB_SUFFIXES:
            texts.append(path.read_bytes().decode("latin-1"))
    for secret in secrets:
        for text in texts:
            assert secret not in text, "a bot token leaked into the CLI's output or files"


def qr_count(sb: Sandbox) -> int:
    return len(sb.qr_codes())


def wait_qr(sb: Sandbox, n: int = 1, timeout: float = 15.0) -> str:
    """Wait until the sandbox issued ``n`` QR codes; return the newest one."""
    wait_until(lambda: qr_count(sb) >= n, timeout, f"QR code #{n}")
    return str(sb.qr_codes()[-1]["qrcode"])
