"""What every figure of ``bench/run.py`` shares: the paths, the sandbox in its own process,
the statistics and the table cell for a target."""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PY = sys.executable
BIN = Path(PY).parent
ECHO_BOT = ROOT / "tests" / "bots" / "echo_bot.py"
OWNER = "owner@im.wechat"
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# One line of the printed table: figure, ilinkbot, floor, ratio, target met.
Row = tuple[str, str, str, str, str]


def met(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "NO")


# ---------------------------------------------------------------------------- sandbox


class SandboxProc:
    """``python -m ilinkbot.ilink.sandbox`` on a free port, driven through its admin HTTP API."""

    def __init__(self, *, longpoll: float = 25.0, quota: int = 1_000_000) -> None:
        import httpx

        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "ilinkbot.ilink.sandbox",
                "--port",
                "0",
                "--quota",
                str(quota),
                "--longpoll-seconds",
                str(longpoll),
                "--qr-poll-seconds",
                "1",
                "--log-level",
                "error",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.search(r"(http://\S+)", line)
        if not m:
            self.proc.kill()
            raise SystemExit(f"the sandbox did not start: {line!r}")
        self.api = m.group(1)
        self.cdn = self.api + "/c2c"
        self.admin = httpx.Client(base_url=self.api + "/_sandbox/", timeout=30)

    def get(self, path: str, **params: Any) -> Any:
        r = self.admin.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self.admin.post(path, json=body or {})
        r.raise_for_status()
        return r.json()

    def say(self, user: str, text: str, bot_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.post(
            f"users/{quote(user)}/messages", {"text": text, "bot_id": bot_id}
        )
        return result

    def login(self) -> tuple[str, str]:
        """A new bot: (bot_id, bot_token)."""
        import httpx

        from ilinkbot.ilink import IlinkClient

        async def qr() -> str:
            async with httpx.AsyncClient() as http:
                return (await IlinkClient(self.api, http=http).get_bot_qrcode()).qrcode

        code = asyncio.run(qr())
        self.post("login/scan", {"qrcode": code})
        bot = self.post("login/confirm", {"qrcode": code, "user_id": OWNER})
        return bot["bot_id"], bot["bot_token"]

    # The phone's side of a QR login, as ``ilinkbot.testing.sandbox_login`` drives it.
    def scan(self, qrcode: str) -> Any:
        return self.post("login/scan", {"qrcode": qrcode})

    def confirm(self, user_id: str, qrcode: str) -> Any:
        return self.post("login/confirm", {"qrcode": qrcode, "user_id": user_id})

    def delivered(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("delivered")
        return result

    def close(self) -> None:
        self.admin.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def sandbox(**kw: Any) -> Iterator[SandboxProc]:
    sp = SandboxProc(**kw)
    try:
        yield sp
    finally:
        sp.close()


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def env_for(home: Path, sp: SandboxProc) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILINKBOT_")}
    env.update(
        ILINKBOT_HOME=str(home),
        ILINKBOT_BASE_URL=sp.api,
        ILINKBOT_CDN_BASE_URL=sp.cdn,
        PYTHONPATH=str(ROOT),
    )
    return env


# ---------------------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` size in kB (``VmHWM``: peak RSS, ``VmRSS``: now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def pg_schema() -> tuple[str, str, str] | None:
    """A fresh PostgreSQL schema: (SQLAlchemy URL selecting it, libpq URL, schema), or None
    (with one printed line) when no server answers. The caller drops the schema."""
    import secrets

    base = os.environ.get("ILINKBOT_TEST_PG_URL") or DEFAULT_PG_URL
    libpq = "postgresql://" + base.split("://", 1)[1]
    try:
        import psycopg

        schema = f"ilinkbot_bench_{secrets.token_hex(4)}"
        with psycopg.connect(libpq, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        print(f"  (PostgreSQL skipped: {type(exc).__name__}: {str(exc)[:80]})")
        return None
    options = quote(f"-csearch_path={schema}", safe="")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={options}", f"{libpq}{sep}options={options}", schema
