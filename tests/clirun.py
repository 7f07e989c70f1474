"""Run the ``ilinkbot`` CLI inside the test process, through ``main(argv)``.

A subprocess costs ~0.5 s of interpreter start and imports on a loaded machine; the exit-code
matrix only needs what ``main`` returns, prints and stores. Tests where the process boundary
is the point (signals, crashes, undecodable argv, the console script) still start a real one.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ilinkbot.bot.cli.main import main


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """stdout must be exactly one JSON object."""
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        assert len(lines) == 1, f"expected one JSON line on stdout, got: {self.stdout!r}"
        obj = json.loads(lines[0])
        assert isinstance(obj, dict)
        return obj


def _stream(data: bytes = b"") -> io.TextIOWrapper:
    # Like a pipe: has .buffer, is not a tty, decodes as UTF-8.
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", write_through=True)


@contextmanager
def _isolated(env: Mapping[str, str] | None, cwd: Path | None) -> Iterator[None]:
    """``env`` and ``cwd`` for the run; afterwards the environment, working directory, import
    path and logging set-up put back (``main`` configures structlog for the whole process)."""
    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    saved_log = structlog.get_config() if structlog.is_configured() else None
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path  # `run BOT` puts the bot's folder first
        os.environ.clear()
        os.environ.update(saved_env)
        structlog.reset_defaults()
        if saved_log is not None:
            structlog.configure(**saved_log)


def run_cli(
    env: Mapping[str, str] | None,
    *args: str,
    stdin: str = "",
    cwd: Path | None = None,
) -> Result:
    """``ilinkbot ARGS`` with ``env`` (if given) as its whole environment and ``stdin`` piped
    in."""
    out, err = _stream(), _stream()
    saved = sys.stdin, sys.stdout, sys.stderr
    with _isolated(env, cwd):
        sys.stdin = _stream(stdin.encode())
        sys.stdout, sys.stderr = out, err
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
    return Result(code, _text(out), _text(err))


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8", "replace")
