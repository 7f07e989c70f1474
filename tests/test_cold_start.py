"""Cold start: each command imports what it uses and no more (a cron ``ilinkbot send`` pays
for the store and HTTP, not for QR codes, the web gateway, media crypto or the MCP SDK)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from ilinkbot.bot.cli.main import build_parser
build_parser(sys.argv[1:])
import {module}
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def imported(module: str, *argv: str) -> set[str]:
    r = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


def test_version_imports_no_library() -> None:
    tops = imported("ilinkbot.bot.cli.main", "--version")
    assert not tops & {"httpx", "sqlalchemy", "structlog", "cryptography", "h11"}


@pytest.mark.parametrize("command", ["send", "status"])
def test_send_and_status_import_no_qr_web_crypto_or_mcp(command: str) -> None:
    tops = imported(f"ilinkbot.bot.cli.{command}_cmd", command)
    assert "sqlalchemy" in tops
    assert not tops & {"qrcode", "PIL", "starlette", "uvicorn", "cryptography", "mcp", "croniter"}
