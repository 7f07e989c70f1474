"""`ilinkbot mcp` as a command: the SDK stays out of every other command, and without
the SDK the command says how to install it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ilinkbot.bot.exitcodes import Exit
from tests.clirun import run_cli
from tests.processes import ROOT

CLI = [sys.executable, "-m", "ilinkbot.bot.cli"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    env.update({"ILINKBOT_HOME": str(home), "PYTHONPATH": str(ROOT), **extra})
    return env


def test_send_does_not_import_the_mcp_sdk(tmp_path: Path) -> None:
    done = _run(sys.executable, "-X", "importtime", *CLI[1:], "send", "--help", env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "ilinkbot.bot.push" in modules  # the send machinery was loaded
    assert not {m for m in modules if m == "mcp" or m.startswith(("mcp.", "pydantic"))}


def test_without_the_sdk_it_prints_the_install_command(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "mcp.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mcp'\", name='mcp')\n"
    )
    env = _env(tmp_path, PYTHONPATH=f"{shadow}{os.pathsep}{ROOT}")
    done = _run(*CLI, "mcp", env=env)
    assert done.returncode == Exit.USAGE
    assert done.stderr.strip().splitlines() == [
        "ilinkbot: the MCP server needs the MCP SDK: pip install 'ilinkbot[mcp]'"
    ]
    assert done.stdout == ""


def test_bad_http_address_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(_env(tmp_path), "mcp", "--http", "localhost")
    assert done.code == Exit.USAGE
    assert "expected HOST:PORT" in done.stderr and "Traceback" not in done.stderr
