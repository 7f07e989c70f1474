"""Figure 1, ``send``: N texts through the full stack (``push`` -> outbox -> store -> client)
to the sandbox on 127.0.0.1, against a bare httpx loop posting the same kind of bodies."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import OWNER, Row, SandboxProc, median, met, sandbox

NAME = "send"
TARGET = "full stack >= 70% of the bare httpx floor"


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
    from ilinkbot.bot.payloads import Payload, TextPayload

    per_user: dict[str, list[Payload]] = {u: [] for u in users}
    for i in range(n):
        per_user[users[i % len(users)]].append(TextPayload(f"{tag} {i}"))
    started = time.perf_counter()
    for user, payloads in per_user.items():
        result = await outbox.submit(account, user, payloads)
        if not result.ok:
            raise SystemExit(f"batch send not delivered: {result.state}")
    return time.perf_counter() - started


async def _where_the_time_goes(svc: Any, users: list[str], n: int) -> dict[str, float]:
    """One more pass of ``push()`` with timers around the store calls and the HTTP call:
    ms per push in each (not part of the ratio; the timers cost well under 1 us each).

    The pass runs on a ``Service`` of its own, built after the store's methods are wrapped:
    a ``Service`` takes its group-committed writes as bound methods when it is made."""
    import ilinkbot.ilink.client as ilink_client
    from ilinkbot.bot.service import Service

    spent = {"store": 0.0, "http": 0.0}
    store = svc.store
    originals = {
        name: getattr(store, name)
        for name in (
            "default_account",
            "list_accounts",
            "peer_named",
            "get_peer",
            "enqueue_claimed_many",
            "mark_sent_groups",
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
    timed_svc = Service(svc.config, store=store)
    try:
        await _stack_sends(timed_svc, users, 20, "timed warm-up")
        spent.update(store=0.0, http=0.0)
        total = await _stack_sends(timed_svc, users, n, "timed")
    finally:
        await timed_svc.aclose()
        for name in originals:
            delattr(store, name)
        ilink_client.IlinkClient.send_message = send  # type: ignore[method-assign]
    per = {k: round(v / n * 1000, 3) for k, v in spent.items()}
    per["other"] = round(total / n * 1000 - per["store"] - per["http"], 3)
    return per


def measure(quick: bool) -> dict[str, Any]:
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
    expected = 60 + runs * n * 4 + 2 * n + 20  # + the timed pass's warm-up
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
        "target": TARGET,
        "met": ratio("stack") >= 0.70,
    }


def rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
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
    return rows
