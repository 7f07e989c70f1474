"""Figure 7, ``accounts``: many accounts in one ``ilinkbot run``, and several workers sharing
them on PostgreSQL (issue 15).

One process: N accounts (logged in over HTTP against the sandbox process, timed apart) all
parked in a 25 s long-poll; idle CPU of the run process over a few seconds; then one message
from each owner at once: time from the last message to the last reply, p50/p99 per reply,
peak RSS (VmHWM); then SIGTERM and the time to exit.

Workers: ``ilinkbot run`` processes on one PostgreSQL schema. W-1 start and settle, the W-th
joins (time until it polls its share), a burst is answered, one worker is SIGKILLed while a
second burst arrives (time until its accounts are polled elsewhere), and every reply must
arrive exactly once. Who polls what is read from the ``leases`` table (owner "host:pid:uuid").
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from harness import (
    BIN,
    ECHO_BOT,
    ROOT,
    Row,
    SandboxProc,
    cpu_seconds,
    env_for,
    met,
    pct,
    pg_schema,
    proc_status_kb,
    sandbox,
)

NAME = "accounts"
TARGET = (
    "burst of 1000 owners: last reply <= 5 s after the last message, peak RSS < 300 MB, "
    "idle CPU < 10 % of a core, SIGTERM exit <= shutdown_grace_seconds + 5 s; 4 workers: "
    "each 250 +- 10 %, a joining worker polls its share <= 60 s, a SIGKILLed worker's "
    "accounts polled elsewhere <= poll_lease_seconds + 5 s, every reply exactly once"
)

LONGPOLL = 25.0
GRACE = 10  # shutdown_grace_seconds (the default)
LEASE = 10  # poll_lease_seconds for the workers (default 30)
LAST_REPLY_S = 5.0
RSS_MB = 300
IDLE_CPU_PCT = 10.0
JOIN_S = 60.0
IDLE_AFTER_S = 30.0  # from start-up to the idle CPU sample (> the hold, > the 15 s drain)


# ---------------------------------------------------------------------------- helpers


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _wait(pred: Callable[[], bool], timeout: float, what: str, procs: list[Any]) -> float:
    """Seconds until ``pred()``; SystemExit on timeout or when a process died."""
    started = time.monotonic()
    while not pred():
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead:
            raise SystemExit(f"accounts bench: process {dead} exited waiting for {what}")
        if time.monotonic() - started > timeout:
            raise SystemExit(f"accounts bench: timed out ({timeout:.0f} s) waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - started


def _login_all(sp: SandboxProc, url: str | None, home: Path, owners: list[str]) -> list[str]:
    """Each owner logs a bot in through the QR flow over HTTP; the accounts are stored."""
    from ilinkbot.store import Store
    from ilinkbot.testing import sandbox_login

    store = Store.open(url, home=home)

    async def run() -> list[str]:
        out = []
        for owner in owners:
            account = await sandbox_login(sp, store, owner=owner, base_url=sp.api)
            out.append(account.bot_id)
        return out

    try:
        return asyncio.run(run())
    finally:
        store.close()


def _burst(sp: SandboxProc, owners: list[str], bots: list[str], text: str) -> dict[str, float]:
    """Every owner writes ``text`` to its bot, as fast as the admin API takes them (16 in
    flight); returns owner -> the message's create time (sandbox clock, ms)."""
    import httpx

    async def run() -> dict[str, float]:
        sem = asyncio.Semaphore(16)
        async with httpx.AsyncClient(base_url=sp.api + "/_sandbox/", timeout=60) as http:

            async def one(owner: str, bot: str) -> tuple[str, float]:
                async with sem:
                    r = await http.post(
                        f"users/{quote(owner)}/messages", json={"text": text, "bot_id": bot}
                    )
                r.raise_for_status()
                return owner, float(r.json()["create_time_ms"])

            got = await asyncio.gather(*(one(o, b) for o, b in zip(owners, bots, strict=True)))
        return dict(got)

    return asyncio.run(run())


def _replies(
    sp: SandboxProc, sent: dict[str, float], text: str, timeout: float, procs: list[Any]
) -> dict[str, Any]:
    """Wait up to ``timeout`` for every owner's echo of ``text``; latencies from the
    sandbox's own clock. A burst not fully answered in time is reported as such."""
    want = f"echo: {text}"
    found: list[dict[str, Any]] = []

    def all_in() -> bool:
        nonlocal found
        found = [d for d in sp.delivered() if d["text"] == want and d["user_id"] in sent]
        return len({d["user_id"] for d in found}) >= len(sent)

    complete = True
    try:
        _wait(all_in, timeout, f"{len(sent)} replies '{want}'", procs)
    except SystemExit:
        if any(p.poll() is not None for p in procs):
            raise
        complete = False
    first: dict[str, dict[str, Any]] = {}
    for d in found:
        first.setdefault(d["user_id"], d)
    lat = [first[u]["time"] * 1000 - ms for u, ms in sent.items() if u in first]
    last_reply = max((d["time"] for d in first.values()), default=float("nan"))
    return {
        "messages": len(sent),
        "replied": len(first),
        "complete": complete,
        "waited_up_to_s": timeout,
        "last_reply_after_last_message_s": (
            round(last_reply - max(sent.values()) / 1000, 2) if complete else None
        ),
        "sending_s": round((max(sent.values()) - min(sent.values())) / 1000, 2),
        "p50_ms": round(pct(lat, 50), 1) if complete else None,
        "p99_ms": round(pct(lat, 99), 1) if complete else None,
        "max_ms": round(max(lat), 1) if lat else None,
    }


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start(home: Path, sp: SandboxProc, log: Path, db_url: str | None = None) -> Any:
    env = env_for(home, sp)
    if db_url:
        env["ILINKBOT_DATABASE_URL"] = db_url
    with log.open("ab") as fh:
        return subprocess.Popen(
            [str(BIN / "ilinkbot"), "--log-level", "warning", "run", str(ECHO_BOT)],
            env=env,
            cwd=ROOT,
            stdout=fh,
            stderr=fh,
        )


def _config(home: Path, **cfg: Any) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / "config.json").write_text(json.dumps(cfg))


# ---------------------------------------------------------------------------- one process


def _one_process(n: int, idle_s: float) -> dict[str, Any]:
    owners = [f"owner{i:04d}@im.wechat" for i in range(n)]
    out: dict[str, Any] = {"accounts": n, "longpoll_seconds": LONGPOLL, "load_before": _load()}
    with (
        tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp,
        sandbox(longpoll=LONGPOLL) as sp,
    ):
        home = Path(tmp) / "home"
        _config(home, shutdown_grace_seconds=GRACE)
        started = time.perf_counter()
        bots = _login_all(sp, None, home, owners)
        out["login_s"] = round(time.perf_counter() - started, 1)
        log = Path(tmp) / "run.log"
        proc = _start(home, sp, log)
        launched = time.monotonic()
        try:
            ours = set(bots)
            db = sqlite3.connect(f"file:{home / 'ilinkbot.db'}?mode=ro", uri=True)

            def leased() -> bool:
                sql = "SELECT count(*) FROM leases WHERE owner LIKE ?"
                return int(db.execute(sql, (f"%:{proc.pid}:%",)).fetchone()[0]) >= n

            def online() -> int:
                return sum(1 for b in sp.get("bots") if b["bot_id"] in ours and b["online"])

            # Every account leased by the run process, then (best effort, notifystart may
            # time out under load) seen online by the sandbox.
            out["startup_leased_s"] = round(
                _wait(leased, 60 + n * 0.3, "every account leased", [proc]), 1
            )
            db.close()
            try:
                _wait(lambda: online() >= n, 60, "every account online", [proc])
            except SystemExit:
                if proc.poll() is not None:
                    raise
            out["online_in_sandbox"] = online()
            out["startup_s"] = round(time.monotonic() - launched, 1)
            # Idle means after the start-up work: a full long-poll and drain cycle later.
            time.sleep(IDLE_AFTER_S)
            c0, s0, t0 = cpu_seconds(proc.pid), cpu_seconds(sp.proc.pid), time.monotonic()
            time.sleep(idle_s)
            dt = time.monotonic() - t0
            out["idle_seconds"] = round(dt, 1)
            out["idle_cpu_pct"] = round((cpu_seconds(proc.pid) - c0) / dt * 100, 1)
            out["sandbox_idle_cpu_pct"] = round((cpu_seconds(sp.proc.pid) - s0) / dt * 100, 1)
            out["rss_idle_mb"] = round(proc_status_kb(proc.pid, "VmRSS") / 1024, 1)
            c0, s0 = cpu_seconds(proc.pid), cpu_seconds(sp.proc.pid)
            sent = _burst(sp, owners, bots, "ping")
            out["burst"] = _replies(sp, sent, "ping", 120, [proc])
            out["burst"]["run_cpu_s"] = round(cpu_seconds(proc.pid) - c0, 2)
            out["burst"]["sandbox_cpu_s"] = round(cpu_seconds(sp.proc.pid) - s0, 2)
            time.sleep(1.0)  # a second reply would show up now
            counts = Counter(d["user_id"] for d in sp.delivered())
            out["replies_twice"] = sum(1 for c in counts.values() if c > 1)
            out["peak_rss_mb"] = round(proc_status_kb(proc.pid, "VmHWM") / 1024, 1)
            out["load_after"] = _load()
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                out["exit_code"] = proc.wait(GRACE + 60)
            except subprocess.TimeoutExpired:
                out["exit_code"] = None
            out["sigterm_exit_s"] = round(time.monotonic() - t0, 2)
        except SystemExit as exc:
            raise SystemExit(f"{exc}; runner log: {_tail(log)}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    b = out["burst"]
    out["met"] = (
        b["complete"]
        and b["last_reply_after_last_message_s"] <= LAST_REPLY_S
        and out["peak_rss_mb"] < RSS_MB
        and out["idle_cpu_pct"] < IDLE_CPU_PCT
        and out["exit_code"] == 0
        and out["sigterm_exit_s"] <= GRACE + 5
        and out["replies_twice"] == 0
    )
    return out


# ---------------------------------------------------------------------------- workers


def _workers(n: int, workers: int) -> dict[str, Any]:
    pg = pg_schema()
    if pg is None:
        return {"skipped": "PostgreSQL not reachable"}
    import psycopg

    url, libpq, schema = pg
    owners = [f"owner{i:04d}@im.wechat" for i in range(n)]
    out: dict[str, Any] = {
        "accounts": n,
        "workers": workers,
        "poll_lease_seconds": LEASE,
        "longpoll_seconds": LONGPOLL,
        "load_before": _load(),
    }
    procs: list[Any] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp,
            sandbox(longpoll=LONGPOLL) as sp,
            psycopg.connect(libpq, autocommit=True) as conn,
        ):
            home = Path(tmp) / "home"
            _config(home, shutdown_grace_seconds=GRACE, poll_lease_seconds=LEASE)
            started = time.perf_counter()
            bots = _login_all(sp, url, home, owners)
            out["login_s"] = round(time.perf_counter() - started, 1)

            def holders() -> dict[int, int]:
                rows = conn.execute(
                    "SELECT owner, count(*) FROM leases WHERE expires_at >= now() GROUP BY owner"
                ).fetchall()
                return {int(owner.split(":")[1]): int(c) for owner, c in rows}

            def logs() -> str:
                return " || ".join(_tail(Path(tmp) / f"w{i}.log", 3) for i in range(len(procs)))

            try:
                procs = [_start(home, sp, Path(tmp) / f"w{i}.log", url) for i in range(workers - 1)]
                first = math.ceil(n / (workers - 1))

                def settled() -> bool:
                    h = holders()
                    return sum(h.values()) == n and max(h.values()) <= first

                out["settle_s"] = round(_wait(settled, 120 + n * 0.1, "W-1 settle", procs), 1)
                out["settled_counts"] = sorted(holders().values(), reverse=True)
                procs.append(_start(home, sp, Path(tmp) / f"w{workers - 1}.log", url))
                share = n / workers
                low, high = 0.9 * share, 1.1 * share

                def joined() -> bool:
                    h = holders()
                    return sum(h.values()) == n and low <= h.get(procs[-1].pid, 0)

                out["join_s"] = round(_wait(joined, 120, "the joining worker's share", procs), 1)

                def even() -> bool:
                    h = holders()
                    return sum(h.values()) == n and all(
                        low <= h.get(p.pid, 0) <= high for p in procs
                    )

                out["even_s"] = round(_wait(even, 120, "an even share", procs), 1)
                h = holders()
                out["counts"] = [h.get(p.pid, 0) for p in procs]
                out["burst"] = _replies(sp, _burst(sp, owners, bots, "first"), "first", 120, procs)
                victim = procs[0]
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                killed = time.monotonic()
                out["victim_accounts"] = h.get(victim.pid, 0)
                survivors = procs[1:]
                # the second burst arrives while the victim's accounts have no poller
                sent = _burst(sp, owners, bots, "second")

                def taken_over() -> bool:
                    h = holders()
                    return victim.pid not in h and sum(h.values()) == n

                _wait(taken_over, LEASE + 60, "the takeover", survivors)
                out["takeover_s"] = round(time.monotonic() - killed, 1)
                h = holders()
                out["counts_after_kill"] = [h.get(p.pid, 0) for p in survivors]
                out["burst_during_takeover"] = _replies(sp, sent, "second", 120, survivors)
                time.sleep(2.0)  # a second reply would show up now
                got = Counter((d["user_id"], d["text"]) for d in sp.delivered())
                expected = {(o, f"echo: {t}") for o in owners for t in ("first", "second")}
                out["replies_missing"] = len(expected - set(got))
                out["replies_twice"] = sum(1 for c in got.values() if c > 1)
                out["replies_unexpected"] = len(set(got) - expected)
                out["load_after"] = _load()
            except SystemExit as exc:
                raise SystemExit(f"{exc}; worker logs: {logs()}") from None
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                for p in procs:
                    try:
                        p.wait(GRACE + 30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
    finally:
        with psycopg.connect(libpq.split("?")[0], autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    out["met"] = (
        out["burst"]["complete"]
        and out["burst_during_takeover"]["complete"]
        and all(low <= c <= high for c in out["counts"])
        and out["join_s"] <= JOIN_S
        and out["takeover_s"] <= LEASE + 5
        and out["replies_missing"] == 0
        and out["replies_twice"] == 0
        and out["replies_unexpected"] == 0
    )
    return out


# ---------------------------------------------------------------------------- the figure


def measure(quick: bool) -> dict[str, Any]:
    sizes = [100] if quick else [100, 1000]
    out: dict[str, Any] = {"one_process": {}}
    for n in sizes:
        print(f"  one process, {n} accounts ...", flush=True)
        try:
            out["one_process"][str(n)] = _one_process(n, 10.0 if quick else 25.0)
        except SystemExit as exc:  # one failed part must not hide the others
            print(f"  FAILED: {exc}", flush=True)
            out["one_process"][str(n)] = {"error": str(exc), "met": False}
    n, w = (100, 2) if quick else (1000, 4)
    print(f"  {w} workers on PostgreSQL, {n} accounts ...", flush=True)
    try:
        out["workers"] = _workers(n, w)
    except SystemExit as exc:
        print(f"  FAILED: {exc}", flush=True)
        out["workers"] = {"error": str(exc), "accounts": n, "workers": w, "met": False}
    parts = [r["met"] for r in out["one_process"].values()]
    if "met" in out["workers"]:
        parts.append(out["workers"]["met"])
    out["target"] = TARGET
    out["met"] = all(parts)
    return out


def rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for n, r in s["one_process"].items():
        if "error" in r:
            rows.append((f"accounts {n}: FAILED", r["error"][:60], "", "", "NO"))
            continue
        b = r["burst"]
        big = int(n) >= 1000  # the targets are for 1,000 accounts
        last = b["last_reply_after_last_message_s"]
        rows.append(
            (
                f"accounts {n}: last reply after last message",
                f"{last} s"
                if b["complete"]
                else f"> {b['waited_up_to_s']} s ({b['replied']}/{b['messages']} by then)",
                "",
                "",
                met(b["complete"] and last <= LAST_REPLY_S) if big else "-",
            )
        )
        rows.append(
            (f"accounts {n}: reply p50 / p99", f"{b['p50_ms']} / {b['p99_ms']} ms", "", "", "-")
        )
        rows.append(
            (
                f"accounts {n}: peak RSS",
                f"{r['peak_rss_mb']} MB",
                "",
                "",
                met(r["peak_rss_mb"] < RSS_MB) if big else "-",
            )
        )
        rows.append(
            (
                f"accounts {n}: idle CPU (sandbox)",
                f"{r['idle_cpu_pct']} % ({r['sandbox_idle_cpu_pct']} %)",
                "",
                "",
                met(r["idle_cpu_pct"] < IDLE_CPU_PCT) if big else "-",
            )
        )
        rows.append(
            (
                f"accounts {n}: SIGTERM exit",
                f"{r['sigterm_exit_s']} s (rc {r['exit_code']})",
                "",
                "",
                met(r["exit_code"] == 0 and r["sigterm_exit_s"] <= GRACE + 5),
            )
        )
    w = s["workers"]
    if "skipped" in w:
        return rows
    label = f"{w['workers']} workers, {w['accounts']} accounts"
    if "error" in w:
        rows.append((f"{label}: FAILED", w["error"][:60], "", "", "NO"))
        return rows
    share = w["accounts"] / w["workers"]
    rows.append(
        (
            f"{label}: accounts per worker",
            "/".join(str(c) for c in w["counts"]),
            "",
            "",
            met(all(0.9 * share <= c <= 1.1 * share for c in w["counts"])),
        )
    )
    rows.append(
        (
            f"{label}: joining worker polls its share",
            f"{w['join_s']} s",
            "",
            "",
            met(w["join_s"] <= JOIN_S),
        )
    )
    rows.append(
        (
            f"{label}: SIGKILL -> polled elsewhere (lease {w['poll_lease_seconds']} s)",
            f"{w['takeover_s']} s",
            "",
            "",
            met(w["takeover_s"] <= w["poll_lease_seconds"] + 5),
        )
    )
    b = w["burst_during_takeover"]
    rows.append(
        (
            f"{label}: burst during the takeover, last reply",
            f"{b['last_reply_after_last_message_s']} s"
            if b["complete"]
            else f"> {b['waited_up_to_s']} s ({b['replied']}/{b['messages']})",
            "",
            "",
            "-",
        )
    )
    rows.append(
        (
            f"{label}: replies missing / twice",
            f"{w['replies_missing']} / {w['replies_twice']}",
            "",
            "",
            met(w["replies_missing"] == 0 and w["replies_twice"] == 0),
        )
    )
    return rows
