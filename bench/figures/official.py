"""Figure ``official``: sendmessage throughput of the official Node client
(``@tencent-weixin/openclaw-weixin``'s ``sendMessage``) next to ilinkbot's, at 1 and at 16
requests in flight, all posting to the same fast responder (``bench/responder.py``, its own
process), so the clients are what is measured.

Sides, each posting N texts after a warm-up:

- ``official``: ``bench/official_send.mjs`` drives the package's ``sendMessage`` under Node;
- ``bare_httpx``: one default ``httpx.AsyncClient`` posting prepared bodies (the old floor);
- ``client``: ``IlinkClient.send_text`` on the HTTP stack ``Service`` builds;
- ``push``: ``push()`` through the full stack (store, outbox) on that same stack.

The package is installed with npm into ``bench/results/npm`` (gitignored). Where node or
npm is missing, or the install fails, the figure is skipped with one line saying why.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import OWNER, PY, RESULTS, ROOT, Row, median

NAME = "official"
TARGET = "reported: official / ilinkbot at 1 and 16 in flight"
PACKAGE = "@tencent-weixin/openclaw-weixin"
VERSION = "2.4.9"
NPM_DIR = RESULTS / "npm"
DRIVER = ROOT / "bench" / "official_send.mjs"
USERS = [f"user{u}@im.wechat" for u in range(10)]
IN_FLIGHT = (1, 16)

# The package's API module imports three helpers from its host framework (a peer
# dependency, not needed to send): a two-function stand-in lets it load outside the host.
_PEER_STUB = {
    "package.json": json.dumps(
        {
            "name": "openclaw",
            "version": "0.0.0-bench-stub",
            "type": "module",
            "exports": {"./plugin-sdk/*": "./plugin-sdk/*.js"},
        }
    ),
    "plugin-sdk/account-id.js": (
        "export function normalizeAccountId(id) { return String(id ?? '').trim(); }\n"
    ),
    "plugin-sdk/infra-runtime.js": (
        "import os from 'node:os';\n"
        "export function resolvePreferredOpenClawTmpDir() { return os.tmpdir(); }\n"
        "export async function withFileLock(_p, _o, fn) { return await fn(); }\n"
    ),
}


def install() -> Path | str:
    """The installed package's folder, or why it could not be had."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found"
    pkg = NPM_DIR / "node_modules" / PACKAGE
    if not (pkg / "dist" / "src" / "api" / "api.js").is_file():
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        (NPM_DIR / "package.json").write_text('{"private": true}\n')
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--legacy-peer-deps",
             f"{PACKAGE}@{VERSION}"],
            cwd=NPM_DIR, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            return f"npm install {PACKAGE}@{VERSION} failed: {done.stderr.strip()[-300:]}"
    stub = NPM_DIR / "node_modules" / "openclaw"
    if not (stub / "package.json").is_file():
        for rel, text in _PEER_STUB.items():
            (stub / rel).parent.mkdir(parents=True, exist_ok=True)
            (stub / rel).write_text(text)
    return pkg


class Responder:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PY, str(ROOT / "bench" / "responder.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        m = re.search(r"(http://\S+)", self.proc.stdout.readline())
        if not m:
            self.proc.kill()
            raise SystemExit("the responder did not start")
        self.url = m.group(1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def official(pkg: Path, url: str, n: int, in_flight: int) -> float:
    out = subprocess.run(
        ["node", str(DRIVER), str(pkg), url, str(n), str(in_flight)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"official driver failed: {out.stderr.strip()[-300:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["per_s"])


async def _rate(n: int, in_flight: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Texts per second posting ``n`` texts ``in_flight`` at a time (after a warm-up)."""
    for i in range(min(100, n)):
        await one(i)
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return n / (time.perf_counter() - started)


async def bare_httpx(url: str, n: int, in_flight: int) -> float:
    import httpx

    from ilinkbot.ilink import IlinkClient, build_send_body
    from ilinkbot.ilink.wire import dumps, new_client_id

    proto = IlinkClient(url, "bench-token")  # only for its header recipe and base_info
    bodies = [
        dumps(
            {
                "msg": build_send_body(
                    USERS[i % len(USERS)],
                    {"type": 1, "text_item": {"text": f"bare {i}"}},
                    client_id=new_client_id(),
                    context_token="bench-context-token",
                ),
                "base_info": proto.base_info,
            }
        )
        for i in range(n)
    ]
    target = url + "/ilink/bot/sendmessage"
    async with httpx.AsyncClient() as http:

        async def one(i: int) -> None:
            body = bodies[i]
            r = await http.post(target, content=body, headers=proto.post_headers(body))
            if r.status_code != 200:
                raise SystemExit(f"bare send failed: {r.status_code}")

        rate = await _rate(n, in_flight, one)
    await proto.aclose()
    return rate


async def ilinkbot_sides(url: str, n: int, in_flight: int) -> dict[str, float]:
    """``IlinkClient.send_text`` and ``push()`` on the HTTP stack ``Service`` builds."""
    from ilinkbot.bot.config import Config
    from ilinkbot.bot.push import PushRequest, push
    from ilinkbot.bot.service import Service
    from ilinkbot.store import InboundRecord, Store

    with tempfile.TemporaryDirectory(prefix="ilinkbot-bench-") as tmp:
        home = Path(tmp)
        store = Store.open(None, home=home)
        account = store.save_account(
            "bench@im.bot", token="bench-token", base_url=url, owner_user_id=OWNER
        )
        store.record_batch(
            account.bot_id,
            [
                InboundRecord(
                    message_id=f"m{i}",
                    user_id=u,
                    context_token="bench-context-token",
                    raw={},
                    created_at=None,
                )
                for i, u in enumerate(USERS)
            ],
            "c",
        )
        config = Config(home=home, base_url=url, cdn_base_url=url + "/c2c", reply_quota=10**9)
        svc = Service(config, store=store)
        client = svc.client(account)

        async def by_client(i: int) -> None:
            await client.send_text(
                USERS[i % len(USERS)], f"client {i}", context_token="bench-context-token"
            )

        async def by_push(i: int) -> None:
            result = await push(
                svc, PushRequest(f"push {i}"), to=USERS[i % len(USERS)], catch_up_seconds=0
            )
            if not result.ok:
                raise SystemExit(f"push not delivered: {result.to_dict()}")

        try:
            return {
                "client": await _rate(n, in_flight, by_client),
                "push": await _rate(n, in_flight, by_push),
            }
        finally:
            await svc.aclose()
            store.close()


def measure(quick: bool) -> dict[str, Any]:
    pkg = install()
    n = 500 if quick else 3000
    rounds = 1 if quick else 3
    result: dict[str, Any] = {"texts": n, "rounds": rounds, "target": TARGET, "met": None}
    if isinstance(pkg, str):
        print(f"[{NAME}] skipped the official client: {pkg}", flush=True)
        result["skipped"] = pkg
    responder = Responder()
    try:
        for c in IN_FLIGHT:
            # rounds run every side back to back, so the machine's drift hits all alike
            per_round: list[dict[str, float]] = []
            for _ in range(rounds):
                side: dict[str, float] = {}
                if not isinstance(pkg, str):
                    side["official"] = official(pkg, responder.url, n, c)
                side["bare_httpx"] = asyncio.run(bare_httpx(responder.url, n, c))
                side.update(asyncio.run(ilinkbot_sides(responder.url, n, c)))
                per_round.append(side)
            rates = {k: round(median([r[k] for r in per_round]), 1) for k in per_round[0]}
            if "official" in rates:  # official / side, per round, then the median
                rates.update(
                    {
                        f"official_over_{k}": round(
                            median([r["official"] / r[k] for r in per_round]), 2
                        )
                        for k in per_round[0]
                        if k != "official"
                    }
                )
            result[f"in_flight_{c}"] = rates
            result[f"in_flight_{c}_rounds"] = [
                {k: round(v, 1) for k, v in r.items()} for r in per_round
            ]
    finally:
        responder.close()
    return result


def rows(s: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for c in IN_FLIGHT:
        side = s.get(f"in_flight_{c}", {})
        floor = side.get("official")
        for name in ("client", "push", "bare_httpx"):
            if name not in side:
                continue
            ratio = "-" if floor is None else f"{side[f'official_over_{name}']:.2f}"
            out.append(
                (
                    f"official / {name}, {c} in flight ({s['texts']} texts)",
                    f"{side[name]}/s",
                    "-" if floor is None else f"{floor}/s",
                    ratio,
                    "-",
                )
            )
    return out
