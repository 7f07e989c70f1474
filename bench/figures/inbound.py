"""Figure 2, ``inbound``: p50/p99 inbound-to-reply latency through ``ilinkbot run`` with the
echo bot, against a bare getupdates -> sendmessage echo loop (no store)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import BIN, ECHO_BOT, OWNER, PY, RESULTS, ROOT, Row, SandboxProc, env_for, pct, sandbox

NAME = "inbound"
TARGET = "reported (no target)"


_ECHO_FLOOR = r"""
import asyncio, sys, httpx
from ilinkbot.ilink import IlinkClient, IlinkError, build_send_body
from ilinkbot.ilink.models import MessageItem
from ilinkbot.ilink.wire import new_client_id
from ilinkbot.ilink.log import configure_logging
configure_logging(level="error", json=True)
async def main(api, token):
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=50)) as http:
        c = IlinkClient(api, token, http=http)
        cursor, tasks = "", set()
        print("ready", flush=True)
        while True:
            batch = await c.get_updates(cursor)
            cursor = batch.cursor or cursor
            for m in batch.messages:
                t = asyncio.create_task(echo(c, m))
                tasks.add(t); t.add_done_callback(tasks.discard)
async def echo(c, m):
    body = build_send_body(m.from_user_id, MessageItem.text("echo: " + m.items[0].text_item.text),
                           client_id=new_client_id(), context_token=m.context_token)
    for attempt in range(100):  # the same client_id each time: the sandbox de-duplicates
        try:
            async with SEM:
                return await c.send_message(body)
        except IlinkError as exc:
            print("floor retry:", exc, file=sys.stderr, flush=True)
            await asyncio.sleep(min(0.05 * attempt, 1.0))
SEM = asyncio.Semaphore(16)
asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _inject(
    sp: SandboxProc, bot_id: str, users: list[str], n: int, rate: float, tag: str
) -> dict[str, float]:
    """Users write ``n`` texts at ``rate`` per second; returns text -> create time (ms)."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    for k in range(n):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        text = f"{tag} m{k}"
        msg = sp.say(users[k % len(users)], text, bot_id)
        sent[text] = float(msg["create_time_ms"])
    return sent


def _latencies(sp: SandboxProc, bot_id: str, sent: dict[str, float], timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while True:
        got = {d["text"]: d for d in sp.delivered() if d["bot_id"] == bot_id}
        if sum(1 for t in sent if f"echo: {t}" in got) == len(sent):
            break
        if time.monotonic() > deadline:
            missing = [t for t in sent if f"echo: {t}" not in got][:5]
            raise SystemExit(
                f"inbound bench: only {len(got)} of {len(sent)} echoes for "
                f"{bot_id}; missing e.g. {missing}"
            )
        time.sleep(0.2)
    dup = len([d for d in sp.delivered() if d["bot_id"] == bot_id]) - len(sent)
    if dup:
        raise SystemExit(f"inbound bench: {dup} duplicate echoes")
    return [got[f"echo: {t}"]["time"] * 1000 - ms for t, ms in sent.items()]


def _wait_online(sp: SandboxProc, bot_id: str, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while not any(b["bot_id"] == bot_id and b["online"] for b in sp.get("bots")):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the runner did not start polling")
        time.sleep(0.05)


def measure(quick: bool) -> dict[str, Any]:
    from ilinkbot.store import Store

    n = 200 if quick else 1000
    rate = 20.0
    users = [f"in{u:02d}@im.wechat" for u in range(50)]
    with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp, sandbox() as sp:
        home = Path(tmp) / "home"
        # floor: bare echo loop, its own bot
        floor_bot, floor_token = sp.login()
        floor = subprocess.Popen(
            [PY, "-c", _ECHO_FLOOR, sp.api, floor_token],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert floor.stdout is not None
            floor.stdout.readline()
            time.sleep(0.3)
            floor_lat = _latencies(
                sp, floor_bot, _inject(sp, floor_bot, users, n, rate, "floor"), 120
            )
        finally:
            floor.kill()
            floor.wait()
        # ilinkbot run with the echo bot
        bot_id, token = sp.login()
        store = Store.open(None, home=home)
        store.save_account(bot_id, token=token, base_url=sp.api, owner_user_id=OWNER)
        store.close()
        log = Path(tmp) / "runner.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [str(BIN / "ilinkbot"), "--log-level", "warning", "run", str(ECHO_BOT)],
                env=env_for(home, sp),
                cwd=ROOT,
                stdout=fh,
                stderr=fh,
            )
        try:
            _wait_online(sp, bot_id, proc)
            try:
                run_lat = _latencies(sp, bot_id, _inject(sp, bot_id, users, n, rate, "run"), 300)
            except SystemExit:
                shutil.copy(log, RESULTS / "inbound-runner.log")
                shutil.copy(home / "ilinkbot.db", RESULTS / "inbound-runner.db")
                raise
        finally:
            proc.terminate()
            proc.wait(30)
    out = {"messages": n, "users": len(users), "rate_per_s": rate}
    for name, lat in (("run", run_lat), ("floor", floor_lat)):
        out[f"{name}_p50_ms"] = round(pct(lat, 50), 1)
        out[f"{name}_p99_ms"] = round(pct(lat, 99), 1)
    out["p50_ratio"] = round(out["run_p50_ms"] / max(out["floor_p50_ms"], 0.1), 2)
    out["p99_ratio"] = round(out["run_p99_ms"] / max(out["floor_p99_ms"], 0.1), 2)
    out["target"] = TARGET
    out["met"] = None
    return out


def rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    rows.append(
        (
            f"inbound->reply p50 ({s['messages']} msgs, {s['users']} users)",
            f"{s['run_p50_ms']} ms",
            f"{s['floor_p50_ms']} ms",
            f"{s['p50_ratio']:.2f}",
            "-",
        )
    )
    rows.append(
        (
            "inbound->reply p99",
            f"{s['run_p99_ms']} ms",
            f"{s['floor_p99_ms']} ms",
            f"{s['p99_ratio']:.2f}",
            "-",
        )
    )
    return rows
