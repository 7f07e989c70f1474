"""Figure 4, ``coldstart``: ``ilinkbot send`` as cron runs it, against ``python -c pass``."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import BIN, OWNER, PY, ROOT, Row, env_for, median, met, sandbox

NAME = "coldstart"
TARGET = "<= 2.5x python -c pass"


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True)
    elapsed = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"{cmd[:3]} exited {r.returncode}: {r.stderr.decode()[-500:]}")
    return elapsed


def _import_profile(env: dict[str, str]) -> list[dict[str, Any]]:
    """Import time of ``ilinkbot send`` by top-level package (``python -X importtime``)."""
    r = subprocess.run(
        [PY, "-X", "importtime", "-m", "ilinkbot.bot.cli.main", "send", "--help"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    by_root: dict[str, float] = {}
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if m:
            root = m.group(3).split(".")[0]
            by_root[root] = by_root.get(root, 0.0) + int(m.group(1)) / 1000
    rows = [{"package": k, "self_ms": round(v, 1)} for k, v in by_root.items()]
    rows.sort(key=lambda x: -float(x["self_ms"]))  # type: ignore[arg-type]
    return rows[:10]


def measure(quick: bool) -> dict[str, Any]:
    from ilinkbot.store import Store

    runs = 5 if quick else 15
    with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp, sandbox(longpoll=0.05) as sp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "config.json").write_text(json.dumps({"reply_quota": 1_000_000}))
        bot_id, token = sp.login()
        sp.say(OWNER, "hi", bot_id)
        store = Store.open(None, home=home)
        store.save_account(bot_id, token=token, base_url=sp.api, owner_user_id=OWNER)
        store.close()
        env = env_for(home, sp)
        # An installed ilinkbot has its bytecode cached; an editable checkout run with
        # PYTHONDONTWRITEBYTECODE (as on these machines) would recompile it every start.
        subprocess.run(
            [PY, "-m", "compileall", "-q", "bot", "cdn", "ilink", "store"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        ilinkbot = str(BIN / "ilinkbot")
        _wall([ilinkbot, "send", "warm-up"], env)
        t: dict[str, list[float]] = {"python": [], "deps": [], "version": [], "send": []}
        for i in range(runs):
            t["python"].append(_wall([PY, "-c", "pass"], env))
            # Only importing the libraries a send cannot do without (the design card's).
            t["deps"].append(_wall([PY, "-c", "import httpx, sqlalchemy, structlog"], env))
            t["version"].append(_wall([ilinkbot, "--version"], env))
            t["send"].append(_wall([ilinkbot, "send", f"cron {i}"], env))
        delivered = len(sp.delivered())
        profile = _import_profile(env)
    if delivered != runs + 1:
        raise SystemExit(f"cold start: {delivered} delivered, expected {runs + 1}")
    py, deps, ver, send = (median(t[k]) * 1000 for k in ("python", "deps", "version", "send"))
    return {
        "runs": runs,
        "python_c_pass_ms": round(py, 1),
        "import_deps_ms": round(deps, 1),
        "import_deps_ratio": round(deps / py, 2),
        "ilinkbot_version_ms": round(ver, 1),
        "ilinkbot_send_ms": round(send, 1),
        "ratio": round(send / py, 2),
        "version_ratio": round(ver / py, 2),
        "heaviest_imports": profile,
        "target": TARGET,
        "met": send / py <= 2.5,
    }


def rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    rows.append(
        (
            "cold start: ilinkbot send",
            f"{s['ilinkbot_send_ms']} ms",
            f"{s['python_c_pass_ms']} ms",
            f"{s['ratio']:.2f}",
            met(s["met"]),
        )
    )
    rows.append(
        (
            "  floor: import httpx, sqlalchemy, structlog",
            f"{s['import_deps_ms']} ms",
            f"{s['python_c_pass_ms']} ms",
            f"{s['import_deps_ratio']:.2f}",
            "-",
        )
    )
    rows.append(
        (
            "cold start: ilinkbot --version",
            f"{s['ilinkbot_version_ms']} ms",
            f"{s['python_c_pass_ms']} ms",
            f"{s['version_ratio']:.2f}",
            "-",
        )
    )
    return rows
