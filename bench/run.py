"""ilinkbot's benchmarks: every figure next to its floor, measured in the same run.

    .venv/bin/python bench/run.py            # the full run (a few minutes)
    .venv/bin/python bench/run.py --quick    # smaller sizes, one repetition
    .venv/bin/python bench/run.py --only send,store

Figures (``docs/benchmarks.md`` says what each one means; each is a module in
``bench/figures/``):

1. ``send``: N texts through the full stack (``push`` -> outbox -> store -> client) to the
   sandbox on 127.0.0.1, against a bare httpx loop posting the same kind of bodies.
2. ``inbound``: p50/p99 inbound-to-reply latency through ``ilinkbot run`` with the echo bot,
   against a bare getupdates -> sendmessage echo loop (no store).
3. ``upload``: ``bench/bench_upload.py`` (CDN upload MB/s vs ``openssl enc -aes-128-ecb``,
   peak RSS of the uploading process).
4. ``coldstart``: ``ilinkbot send`` as cron runs it, against ``python -c pass``.
5. ``store``: context-token upserts and batch records per second through ``Store``,
   against hand-written SQL on the same engine (SQLite, and PostgreSQL when reachable).
6. ``official``: sendmessage rate of the official Node client (``npm`` installs it) next to
   ilinkbot's, at 1 and 16 in flight, against a fast responder (``bench/responder.py``);
   skipped with one line where node/npm is missing.
7. ``accounts``: 100 and 1,000 accounts in one ``ilinkbot run`` (a burst of one message per
   owner: time to the last reply, p50/p99, peak RSS, idle CPU, SIGTERM), and 4 workers sharing
   1,000 accounts on PostgreSQL (share, join, SIGKILL takeover, each reply once).

The sandbox always runs in its own process (``python -m ilinkbot.ilink.sandbox``), so that the
measured client does not share a GIL with the server. Prints a table; writes
``bench/results/bench.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from figures import accounts, coldstart, fanout, inbound, official, send, store, upload
from harness import RESULTS, ROOT, Row

FIGURES = {m.NAME: m for m in (send, inbound, upload, coldstart, store, official, fanout, accounts)}


def table(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, figure in FIGURES.items():
        result = results.get(name)
        if isinstance(result, dict) and "error" not in result:
            rows.extend(figure.rows(result))
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
            results[name] = FIGURES[name].measure(a.quick)
        except SystemExit as exc:  # one broken figure must not hide the others
            print(f"[{name}] FAILED: {exc}", flush=True)
            results[name] = {"error": str(exc), "target": FIGURES[name].TARGET, "met": None}
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
