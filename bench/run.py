"""ilinkbot's benchmarks: every figure next to its floor, measured in the same run.

    .venv/bin/python bench/run.py            # the full run (a few minutes)
    .venv/bin/python bench/run.py --quick    # smaller sizes, one repetition
    .venv/bin/python bench/run.py --only send,store

Figures (the README, "Benchmarks", says what each one means):

1. ``send``: N texts through the full stack (``push`` -> outbox -> store -> client) to the
   sandbox on 127.0.0.1, against a bare httpx loop posting the same kind of bodies.
2. ``inbound``: p50/p99 inbound-to-reply latency through ``ilinkbot run`` with the echo bot,
   against a bare getupdates -> sendmessage echo loop (no store).
3. ``upload``: ``bench/bench_upload.py`` (CDN upload MB/s vs ``openssl enc -aes-128-ecb``,
   peak RSS of the uploading process).
4. ``coldstart``: ``ilinkbot send`` as cron runs it, against ``python -c pass``.
5. ``store``: context-token upserts and batch records per second through ``Store``,
   against hand-written SQL on the same engine (SQLite, and PostgreSQL when reachable).

The sandbox always runs in its own process (``python -m ilinkbot.ilink.sandbox``), so that the
measured client does not share a GIL with the server. Prints a table; writes
``bench/results/bench.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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

TARGETS = {
    "send": "full stack >= 70% of the bare httpx floor",
    "inbound": "reported (no target)",
    "upload": ">= 50% of openssl, peak RSS < 100 MB",
    "coldstart": "<= 2.5x python -c pass",
    "store": "reported (no target)",
}


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


# ---------------------------------------------------------------------------- 1. send


async def _bare_sends(
    sp: SandboxProc, token: str, tokens: dict[str, str], users: list[str], n: int, tag: str
) -> float:
    """The floor: one httpx.AsyncClient posting prepared sendmessage bodies in a loop."""
    import httpx
    from ilinkbot.ilink import IlinkClient, build_send_body
    from ilinkbot.ilink.wire import dumps, new_client_id

    proto = IlinkClient(sp.api, token)  # only for its header recipe and base_info
    bodies = []
    for i in range(n):
        user = users[i % len(users)]
        msg = build_send_body(
            user,
            {"type": 1, "text_item": {"text": f"{tag} {i}"}},
            client_id=new_client_id(),
            context_token=tokens[user],
        )
        bodies.append(dumps({"msg": msg, "base_info": proto.base_info}))
    url = sp.api + "/ilink/bot/sendmessage"
    async with httpx.AsyncClient() as http:
        started = time.perf_counter()
        for body in bodies:
            r = await http.post(url, content=body, headers=proto.post_headers(body))
            if r.status_code != 200 or "message_id" not in r.json():
                raise SystemExit(f"bare send failed: {r.status_code} {r.text[:200]}")
        elapsed = time.perf_counter() - started
    await proto.aclose()
    return elapsed


async def _stack_sends(svc: Any, users: list[str], n: int, tag: str) -> float:
    """``push()`` once per text: the path of ``Bot.send``, ``send_to_wechat`` and the CLI."""
    from ilinkbot.bot.push import PushRequest, push

    started = time.perf_counter()
    for i in range(n):
        result = await push(
            svc, PushRequest(f"{tag} {i}"), to=users[i % len(users)], catch_up_seconds=0
        )
        if not result.ok:
            raise SystemExit(f"full-stack send not delivered: {result.to_dict()}")
    return time.perf_counter() - started


async def _stack_batch(svc: Any, account: Any, users: list[str], n: int, tag: str) -> float:
    """One ``Outbox.submit`` per user with all of that user's texts (queued, then drained)."""
    from ilinkbot.bot.outbox import Outbox

    outbox = Outbox(svc)
    per_user: dict[str, list[dict[str, Any]]] = {u: [] for u in users}
    for i in range(n):
        per_user[users[i % len(users)]].append(
            {"item": {"type": 1, "text_item": {"text": f"{tag} {i}"}}}
        )
    started = time.perf_counter()
    for user, payloads in per_user.items():
        result = await outbox.submit(account, user, payloads)
        if not result.ok:
            raise SystemExit(f"batch send not delivered: {result.state}")
    return time.perf_counter() - started


async def _where_the_time_goes(svc: Any, users: list[str], n: int) -> dict[str, float]:
    """One more pass of ``push()`` with timers around the store calls and the HTTP call:
    ms per push in each (not part of the ratio; the timers cost well under 1 us each)."""
    import ilinkbot.ilink.client as ilink_client

    spent = {"store": 0.0, "http": 0.0}
    store = svc.store
    originals = {
        name: getattr(store, name)
        for name in (
            "list_accounts",
            "resolve_alias",
            "get_peer",
            "enqueue_claimed",
            "mark_sent_many",
        )
    }

    def timed(fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent["store"] += time.perf_counter() - started

        return wrapper

    send = ilink_client.IlinkClient.send_message

    async def timed_send(self: Any, msg: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return await send(self, msg)
        finally:
            spent["http"] += time.perf_counter() - started

    for name, fn in originals.items():
        setattr(store, name, timed(fn))
    ilink_client.IlinkClient.send_message = timed_send  # type: ignore[method-assign]
    try:
        total = await _stack_sends(svc, users, n, "timed")
    finally:
        for name in originals:
            delattr(store, name)
        ilink_client.IlinkClient.send_message = send  # type: ignore[method-assign]
    per = {k: round(v / n * 1000, 3) for k, v in spent.items()}
    per["other"] = round(total / n * 1000 - per["store"] - per["http"], 3)
    return per


def bench_send(quick: bool) -> dict[str, Any]:
    from ilinkbot.bot.config import Config
    from ilinkbot.bot.outbox import Outbox
    from ilinkbot.bot.push import catch_up
    from ilinkbot.bot.service import Service
    from ilinkbot.store import InboundRecord, Store

    n = 300 if quick else 2000
    runs = 1 if quick else 5
    users = [f"send{u:02d}@im.wechat" for u in range(10)]
    # A diagnostic, not the figure: the same pushes with the database on tmpfs, to show
    # how much of the gap is the disk (writes to a real disk also slow the HTTP round trip
    # that follows them on these virtual machines).
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp,
        tempfile.TemporaryDirectory(
            prefix="ilinkbot-bench-", dir=shm if shm.is_dir() else None
        ) as ram,
        sandbox(longpoll=0.5) as sp,
    ):
        home = Path(tmp) / "home"
        bot_id, token = sp.login()
        tokens = {u: sp.say(u, "hi", bot_id)["context_token"] for u in users}
        config = Config(home=home, base_url=sp.api, cdn_base_url=sp.cdn, reply_quota=10**6)

        split: dict[str, float] = {}

        async def main() -> dict[str, list[float]]:
            store = Store.open(None, home=home)
            account = store.save_account(bot_id, token=token, base_url=sp.api, owner_user_id=OWNER)
            svc = Service(config, store=store)
            got = await catch_up(Outbox(svc), account, seconds=2)  # stores the peers
            assert got == len(users), got
            ram_store = Store.open(None, home=Path(ram))
            ram_store.save_account(bot_id, token=token, base_url=sp.api, owner_user_id=OWNER)
            ram_store.record_batch(
                bot_id,
                [
                    InboundRecord(
                        message_id=f"m{i}",
                        user_id=u,
                        context_token=tokens[u],
                        raw={},
                        created_at=None,
                    )
                    for i, u in enumerate(users)
                ],
                "c",
            )
            ram_svc = Service(config, store=ram_store)
            out: dict[str, list[float]] = {"bare": [], "stack": [], "batch": [], "tmpfs": []}
            await _stack_sends(svc, users, 20, "warm-up")
            await _stack_sends(ram_svc, users, 20, "warm-up tmpfs")
            await _bare_sends(sp, token, tokens, users, 20, "warm-up bare")
            for r in range(runs):  # interleaved, so drift hits both sides alike
                out["bare"].append(await _bare_sends(sp, token, tokens, users, n, f"bare{r}"))
                out["stack"].append(await _stack_sends(svc, users, n, f"stack{r}"))
                out["batch"].append(await _stack_batch(svc, account, users, n, f"batch{r}"))
                out["tmpfs"].append(await _stack_sends(ram_svc, users, n, f"tmpfs{r}"))
            # The split, next to a floor measured just before it (the machine drifts).
            split["floor"] = round(
                await _bare_sends(sp, token, tokens, users, n, "bare-split") / n * 1000, 3
            )
            split.update(await _where_the_time_goes(svc, users, n))
            for s in (svc, ram_svc):
                await s.aclose()
                s.store.close()
            return out

        times = asyncio.run(main())
        delivered = len(sp.delivered())
        violations = sp.get("violations")
    expected = 60 + runs * n * 4 + 2 * n
    if delivered != expected or violations:
        raise SystemExit(f"send bench: {delivered} delivered of {expected}, {violations[:3]}")
    bare = n / median(times["bare"])
    stack = n / median(times["stack"])
    batch = n / median(times["batch"])
    tmpfs = n / median(times["tmpfs"])

    def ratio(kind: str) -> float:
        # per round (each round runs both sides back to back), then the median: the
        # machine's drift between rounds cancels out
        return round(median([b / s for b, s in zip(times["bare"], times[kind], strict=True)]), 3)

    return {
        "texts": n,
        "runs": runs,
        "users": len(users),
        "bare_msgs_per_s": round(bare, 1),
        "stack_msgs_per_s": round(stack, 1),
        "stack_batch_msgs_per_s": round(batch, 1),
        "ratio": ratio("stack"),
        "ratios_per_round": [
            round(b / s, 3) for b, s in zip(times["bare"], times["stack"], strict=True)
        ],
        "batch_ratio": ratio("batch"),
        "tmpfs_msgs_per_s": round(tmpfs, 1),
        "tmpfs_ratio": ratio("tmpfs"),
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        # ms per push: inside store calls, inside sendmessage (HTTP), everything else, and
        # the floor's ms per request measured right before that pass
        "ms_per_push": split,
        "bare_ms_per_send": round(1000 / bare, 3),
        "target": TARGETS["send"],
        "met": ratio("stack") >= 0.70,
    }


# ---------------------------------------------------------------------------- 2. inbound

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
    for attempt in range(100):  # the same client_id each time: the server de-duplicates
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


def bench_inbound(quick: bool) -> dict[str, Any]:
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
    out["target"] = TARGETS["inbound"]
    out["met"] = None
    return out


# ---------------------------------------------------------------------------- 3. upload


def bench_upload(quick: bool) -> dict[str, Any]:
    size, runs = (20, 1) if quick else (100, 3)
    subprocess.run(
        [PY, str(ROOT / "bench" / "bench_upload.py"), "--size-mb", str(size), "--runs", str(runs)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    data = json.loads((RESULTS / "upload.json").read_text())
    up = data["upload"]["mib_per_s_median"]
    ssl = data["openssl"]["mib_per_s_median"]
    rss = data["upload"]["peak_rss_mib"]
    ratio = round(up / ssl, 3) if ssl else None
    return {
        "size_mib": size,
        "runs": runs,
        "upload_mib_per_s": up,
        "openssl_mib_per_s": ssl,
        "encrypt_only_mib_per_s": data["encrypt_only"]["mib_per_s_median"],
        "md5_mib_per_s": data["md5"]["mib_per_s_median"],
        # the ceiling for any client: the plaintext MD5 pass must finish before uploading
        "md5_ceiling_ratio": round(data["md5"]["mib_per_s_median"] / ssl, 3) if ssl else None,
        "ratio": ratio,
        "peak_rss_mib": rss,
        "idle_peak_rss_mib": data["idle_peak_rss_mib"],
        "target": TARGETS["upload"],
        "met": bool(ratio is not None and ratio >= 0.5 and rss * 1.048576 < 100),
    }


# ---------------------------------------------------------------------------- 4. cold start


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


def bench_coldstart(quick: bool) -> dict[str, Any]:
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
        "target": TARGETS["coldstart"],
        "met": send / py <= 2.5,
    }


# ---------------------------------------------------------------------------- 5. store


def _records(start: int, n: int, users: list[str]) -> list[Any]:
    from ilinkbot.store import InboundRecord

    return [
        InboundRecord(
            message_id=f"m{i}",
            user_id=users[i % len(users)],
            context_token=f"AAR{secrets.token_hex(30)}",
            raw={
                "message_id": i,
                "from_user_id": users[i % len(users)],
                "item_list": [{"type": 1, "text_item": {"text": f"t{i}"}}],
            },
        )
        for i in range(start, start + n)
    ]


def _store_rates(
    url: str | None, home: Path, n_single: int, n_batches: int, batch: int
) -> dict[str, float]:
    from ilinkbot.store import Store

    users = [f"s{u:02d}@im.wechat" for u in range(50)]
    store = Store.open(url, home=home)
    try:
        store.save_account("bench@im.bot", token="t" * 40, base_url=None, owner_user_id=OWNER)
        singles = _records(0, n_single, users)
        started = time.perf_counter()
        for i, rec in enumerate(singles):
            store.record_batch("bench@im.bot", [rec], f"c{i}")
        single_s = time.perf_counter() - started
        batches = [_records(n_single + b * batch, batch, users) for b in range(n_batches)]
        started = time.perf_counter()
        for b, recs in enumerate(batches):
            store.record_batch("bench@im.bot", recs, f"b{b}")
        batch_s = time.perf_counter() - started
    finally:
        store.close()
    return {
        "upserts_per_s": n_single / single_s,
        "batch_records_per_s": n_batches * batch / batch_s,
    }


_FLOOR_DDL = [
    "CREATE TABLE f_inbox (id INTEGER{auto} PRIMARY KEY, bot_id TEXT NOT NULL, "
    "message_id TEXT NOT NULL, user_id TEXT NOT NULL, context_token TEXT, raw TEXT NOT NULL, "
    "received_at TEXT NOT NULL, UNIQUE (bot_id, message_id))",
    "CREATE TABLE f_peers (bot_id TEXT NOT NULL, user_id TEXT NOT NULL, context_token TEXT, "
    "last_inbound_at TEXT, sent INTEGER NOT NULL, PRIMARY KEY (bot_id, user_id))",
    "CREATE TABLE f_cursors (bot_id TEXT PRIMARY KEY, cursor TEXT NOT NULL)",
]
_FLOOR_SQL = [
    "INSERT INTO f_inbox (bot_id, message_id, user_id, context_token, raw, received_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (bot_id, message_id) DO NOTHING",
    "INSERT INTO f_peers VALUES ({p}, {p}, {p}, {p}, 0) ON CONFLICT (bot_id, user_id) DO UPDATE "
    "SET context_token = excluded.context_token, last_inbound_at = excluded.last_inbound_at, "
    "sent = 0",
    "INSERT INTO f_cursors VALUES ({p}, {p}) ON CONFLICT (bot_id) DO UPDATE "
    "SET cursor = excluded.cursor",
]


def _floor_rates(
    connect: Callable[[], Any],
    p: str,
    auto: str,
    begin: str | None,
    n_single: int,
    n_batches: int,
    batch: int,
) -> dict[str, float]:
    """The same three statements per batch in hand-written SQL through the raw driver."""
    conn = connect()
    cur = conn.cursor()
    for ddl in _FLOOR_DDL:
        cur.execute(ddl.format(auto=auto))
    conn.commit()
    ins, peer, cursor_sql = (s.format(p=p) for s in _FLOOR_SQL)
    users = [f"s{u:02d}@im.wechat" for u in range(50)]
    now = "2025-01-01T00:00:00+00:00"

    def one_batch(recs: list[Any], cursor: str) -> None:
        if begin:
            cur.execute(begin)
        for r in recs:
            cur.execute(
                ins, ("b", r.message_id, r.user_id, r.context_token, json.dumps(r.raw), now)
            )
        for r in {r.user_id: r for r in recs}.values():
            cur.execute(peer, ("b", r.user_id, r.context_token, now))
        cur.execute(cursor_sql, ("b", cursor))
        conn.commit()

    singles = _records(0, n_single, users)
    started = time.perf_counter()
    for i, rec in enumerate(singles):
        one_batch([rec], f"c{i}")
    single_s = time.perf_counter() - started
    batches = [_records(n_single + b * batch, batch, users) for b in range(n_batches)]
    started = time.perf_counter()
    for b, recs in enumerate(batches):
        one_batch(recs, f"b{b}")
    batch_s = time.perf_counter() - started
    conn.close()
    return {
        "upserts_per_s": n_single / single_s,
        "batch_records_per_s": n_batches * batch / batch_s,
    }


def _pg_schema() -> tuple[str, str, str] | None:
    """(sqlalchemy url with a fresh search_path, libpq url, schema) or None."""
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


def bench_store(quick: bool) -> dict[str, Any]:
    n_single, n_batches, batch = (300, 5, 100) if quick else (2000, 20, 100)
    out: dict[str, Any] = {"single_batches": n_single, "batches": n_batches, "batch_size": batch}
    with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp:
        ours = _store_rates(None, Path(tmp) / "home", n_single, n_batches, batch)
        db = Path(tmp) / "floor.db"

        def connect_sqlite() -> Any:
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

        floor = _floor_rates(connect_sqlite, "?", "", "BEGIN IMMEDIATE", n_single, n_batches, batch)
        out["sqlite"] = _store_row(ours, floor)
    pg = _pg_schema()
    if pg is not None:
        import psycopg

        url, libpq, schema = pg
        try:
            with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp:
                ours = _store_rates(url, Path(tmp), n_single, n_batches, batch)
            floor = _floor_rates(
                lambda: psycopg.connect(libpq),
                "%s",
                " GENERATED ALWAYS AS IDENTITY",
                None,
                n_single,
                n_batches,
                batch,
            )
            out["postgresql"] = _store_row(ours, floor)
        finally:
            with psycopg.connect(libpq, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    out["target"] = TARGETS["store"]
    out["met"] = None
    return out


def _store_row(ours: dict[str, float], floor: dict[str, float]) -> dict[str, Any]:
    return {
        "upserts_per_s": round(ours["upserts_per_s"], 1),
        "floor_upserts_per_s": round(floor["upserts_per_s"], 1),
        "upsert_ratio": round(ours["upserts_per_s"] / floor["upserts_per_s"], 3),
        "batch_records_per_s": round(ours["batch_records_per_s"], 1),
        "floor_batch_records_per_s": round(floor["batch_records_per_s"], 1),
        "batch_ratio": round(ours["batch_records_per_s"] / floor["batch_records_per_s"], 3),
    }


# ---------------------------------------------------------------------------- main

FIGURES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "send": bench_send,
    "inbound": bench_inbound,
    "upload": bench_upload,
    "coldstart": bench_coldstart,
    "store": bench_store,
}


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str]] = []
    results = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}

    def met(v: Any) -> str:
        return "-" if v is None else ("yes" if v else "NO")

    if "send" in results:
        s = results["send"]
        rows.append(
            (
                f"send {s['texts']} texts: push() per text",
                f"{s['stack_msgs_per_s']}/s",
                f"{s['bare_msgs_per_s']}/s",
                f"{s['ratio']:.2f}",
                met(s["met"]),
            )
        )
        rows.append(
            (
                "send: one Outbox.submit per user",
                f"{s['stack_batch_msgs_per_s']}/s",
                f"{s['bare_msgs_per_s']}/s",
                f"{s['batch_ratio']:.2f}",
                "-",
            )
        )
        rows.append(
            (
                "  diagnostic: push() with the db on tmpfs",
                f"{s['tmpfs_msgs_per_s']}/s",
                f"{s['bare_msgs_per_s']}/s",
                f"{s['tmpfs_ratio']:.2f}",
                "-",
            )
        )
    if "inbound" in results:
        s = results["inbound"]
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
    if "upload" in results:
        s = results["upload"]
        rows.append(
            (
                f"CDN upload {s['size_mib']} MiB vs openssl",
                f"{s['upload_mib_per_s']} MiB/s",
                f"{s['openssl_mib_per_s']} MiB/s",
                f"{s['ratio']:.2f}",
                met(s["met"]),
            )
        )
        rows.append(
            (
                "  ceiling: MD5 pass before upload",
                f"{s['md5_mib_per_s']} MiB/s",
                f"{s['openssl_mib_per_s']} MiB/s",
                f"{s['md5_ceiling_ratio']:.2f}",
                "-",
            )
        )
        rows.append(
            (
                "CDN upload peak RSS (< 100 MB)",
                f"{s['peak_rss_mib']} MiB",
                f"{s['idle_peak_rss_mib']} MiB idle",
                "-",
                "-",
            )
        )
    if "coldstart" in results:
        s = results["coldstart"]
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
    if "store" in results:
        for engine in ("sqlite", "postgresql"):
            s = results["store"].get(engine)
            if s is None:
                continue
            rows.append(
                (
                    f"store {engine}: context-token upserts",
                    f"{s['upserts_per_s']}/s",
                    f"{s['floor_upserts_per_s']}/s",
                    f"{s['upsert_ratio']:.2f}",
                    "-",
                )
            )
            rows.append(
                (
                    f"store {engine}: batch records",
                    f"{s['batch_records_per_s']}/s",
                    f"{s['floor_batch_records_per_s']}/s",
                    f"{s['batch_ratio']:.2f}",
                    "-",
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    p.add_argument("--only", default=",".join(FIGURES), help="comma-separated figures")
    p.add_argument("--out", default=str(RESULTS / "bench.json"))
    a = p.parse_args(argv)
    wanted = [f.strip() for f in a.only.split(",") if f.strip()]
    unknown = set(wanted) - set(FIGURES)
    if unknown:
        p.error(f"unknown figures: {sorted(unknown)}")
    from ilinkbot.ilink.log import configure_logging

    configure_logging(level="error", json=True)
    if shutil.which("openssl") is None and "upload" in wanted:
        print("note: openssl not found; the upload figure has no floor")
    results: dict[str, Any] = {
        "quick": a.quick,
        "machine": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "system": platform.system(),
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for name in wanted:
        print(f"[{name}] ...", flush=True)
        started = time.perf_counter()
        try:
            results[name] = FIGURES[name](a.quick)
        except SystemExit as exc:  # one broken figure must not hide the others
            print(f"[{name}] FAILED: {exc}", flush=True)
            results[name] = {"error": str(exc), "target": TARGETS[name], "met": None}
        results[name]["bench_seconds"] = round(time.perf_counter() - started, 1)
    rows = table(results)
    head = ("figure", "ilinkbot", "floor", "ratio", "target met")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    print()
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    print()
    for name in wanted:
        print(f"{name}: target {results[name]['target']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
