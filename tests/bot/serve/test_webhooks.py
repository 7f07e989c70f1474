"""``serve --webhook`` (issue 16): inbound messages and delivery changes POSTed as signed
JSON to a real receiver on 127.0.0.1; a failing receiver never holds up the receive loop."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ilinkbot import Bot, filters
from ilinkbot.bot.config import Config
from ilinkbot.bot.events import Events
from ilinkbot.bot.outbox import Outbox
from ilinkbot.bot.push import PushRequest, push
from ilinkbot.bot.runner import Runner
from ilinkbot.bot.serve.webhooks import SIGNATURE_HEADER, Webhooks, load_secret
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from tests.clirun import run_cli
from tests.conftest import OWNER

from .conftest import AUTH

SECRET = "whsec-test-0123456789"


class Receiver:
    """A webhook receiver on 127.0.0.1: records what arrives; ``mode`` ok, fail or hang."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.calls = 0
        self.url = ""

    async def hook(self, request: Request) -> Response:
        self.calls += 1
        body = await request.body()
        if self.mode == "fail":
            return JSONResponse({"error": "down"}, status_code=500)
        if self.mode == "hang":
            await asyncio.sleep(30)
        self.got.append((dict(request.headers), body))
        return JSONResponse({"ok": True})

    def events(self, kind: str) -> list[dict[str, Any]]:
        out = [json.loads(body) for _h, body in self.got]
        return [e for e in out if e["event"] == kind]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    rec.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    app = Starlette(routes=[Route("/hook", rec.hook, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield rec
    server.should_exit = True
    server.force_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)
    sock.close()


def echo_bot(config: Config, sb: Sandbox, store: Store) -> Bot:
    bot = Bot(config, transport=sb.transport(), store=store)

    @bot.message(filters.text)
    async def echo(msg, ctx):  # type: ignore[no-untyped-def]
        await msg.reply(f"echo {msg.text}")

    return bot


async def wait_for(pred: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_messages_and_deliveries_arrive_signed_without_tokens(
    config: Config, sb: Sandbox, store: Store, account: Any, receiver: Receiver
) -> None:
    store.set_account_ref(account.bot_id, "user-42")
    bot = echo_bot(config, sb, store)
    hooks = Webhooks(receiver.url, SECRET)
    hooks.attach(bot.runtime.events)
    hooks.start()
    runner = Runner(bot, install_signals=False)
    task = asyncio.create_task(runner.serve())
    try:
        sb.user_says(OWNER, "hello")
        await wait_for(lambda: receiver.events("delivery.changed"))
    finally:
        runner.request_stop()
        assert await task == 0
        await hooks.join()
        await hooks.aclose()

    (received,) = receiver.events("message.received")
    assert received["account"] == account.bot_id and received["ref"] == "user-42"
    assert received["user"] == OWNER and received["text"] == "hello"
    assert received["kind"] == "text" and received["message_id"] and received["time"].endswith("Z")
    (delivered,) = receiver.events("delivery.changed")
    row = store.list_outbox(account.bot_id)[0]
    assert delivered["state"] == "delivered" and delivered["id"] == row.id
    assert delivered["client_id"] == row.client_id and delivered["message_id"] == row.message_id
    assert delivered["user"] == OWNER and delivered["ref"] == "user-42"

    peer = store.get_peer(account.bot_id, OWNER)
    assert peer is not None and peer.context_token
    for headers, body in receiver.got:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER.lower()] == expected
        assert headers["content-type"] == "application/json"
        assert account.token not in body.decode() and peer.context_token not in body.decode()


@pytest.mark.parametrize("failure", ["fail", "hang", "refused"])
async def test_a_failing_receiver_never_holds_up_the_receive_loop(
    config: Config, sb: Sandbox, store: Store, account: Any, receiver: Receiver, failure: str
) -> None:
    url = receiver.url
    if failure == "refused":
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    receiver.mode = failure
    bot = echo_bot(config, sb, store)
    hooks = Webhooks(url, SECRET, max_attempts=3, first_delay=0.2, timeout=3.0)
    hooks.attach(bot.runtime.events)
    hooks.start()
    runner = Runner(bot, install_signals=False)
    task = asyncio.create_task(runner.serve())
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        for i in range(3):
            sb.user_says(OWNER, f"m{i}")
        await wait_for(lambda: len(sb.delivered(OWNER)) == 3)
        # sooner than one hanging webhook call (3 s), let alone its retries
        assert loop.time() - started < 2.5
        assert [d["text"] for d in sb.delivered(OWNER)] == ["echo m0", "echo m1", "echo m2"]
        await wait_for(lambda: store.unhandled(account.bot_id) == [])
        if failure == "fail":
            await wait_for(lambda: receiver.calls >= 3)  # retried
            receiver.mode = "ok"  # back up: later events arrive
            sb.user_says(OWNER, "later")
            await wait_for(
                lambda: any(e["text"] == "later" for e in receiver.events("message.received")),
                timeout=30,
            )
            assert hooks.dropped >= 1
    finally:
        runner.request_stop()
        assert await task == 0
        await hooks.aclose()


async def test_a_push_through_the_gateway_reports_its_delivery(
    gateway: Any, client: httpx.AsyncClient, sb: Sandbox, account: Any, receiver: Receiver
) -> None:
    hooks = Webhooks(receiver.url, SECRET)
    hooks.attach(gateway.events)
    hooks.start()
    try:
        r = await client.post("/push", content=b"not yet", headers=AUTH)  # never wrote: 409
        assert r.status_code == 409
        sb.user_says(OWNER, "hi")
        r = await client.post("/push", content=b"now", headers=AUTH)
        assert r.status_code == 200, r.text
        await hooks.join()
    finally:
        await hooks.aclose()
    (event,) = receiver.events("delivery.changed")
    assert event["state"] == "delivered" and event["id"] == r.json()["id"]


def test_the_secret_file_is_made_0600_and_kept(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)
    path = tmp_path / "webhook-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(tmp_path) == secret and len(secret) >= 32
    own = tmp_path / "mine"
    own.write_text("s3cret\n")
    assert load_secret(tmp_path, own) == "s3cret"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--webhook", "ftp://example.com/x"], "http(s) URL"),
        (["--webhook", "not a url"], "http(s) URL"),
        (["--webhook", "http://127.0.0.1:9/x", "--webhook-secret-file", "/no/such"], "cannot read"),
        (["--webhook-secret-file", "/no/such"], "needs --webhook"),
    ],
)
def test_bad_webhook_flags_are_usage_errors(args: list[str], words: str, tmp_path: Path) -> None:
    env = {**os.environ, "ILINKBOT_HOME": str(tmp_path)}
    proc = run_cli(env, "serve", "--port", "0", *args)
    assert proc.code == 2, proc.stderr
    err = proc.stderr
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "serve-token").exists()  # refused before anything started


async def test_an_observer_that_raises_is_logged_and_the_loop_goes_on(
    config: Config, sb: Sandbox, store: Store, account: Any
) -> None:
    bot = echo_bot(config, sb, store)
    seen: list[str] = []

    def broken(_account: Any, _rows: Any) -> None:
        raise RuntimeError("observer bug")

    bot.runtime.events.received.append(broken)
    bot.runtime.events.received.append(lambda _a, rows: seen.extend(r.message_id for r in rows))
    bot.runtime.events.delivery.append(broken)
    runner = Runner(bot, install_signals=False)
    task = asyncio.create_task(runner.serve())
    try:
        sb.user_says(OWNER, "one")
        sb.user_says(OWNER, "two")
        await wait_for(lambda: len(sb.delivered(OWNER)) == 2)
        await wait_for(lambda: store.unhandled(account.bot_id) == [])
    finally:
        runner.request_stop()
        assert await task == 0
    assert len(seen) == 2  # the next observer still heard of both
    assert [d["text"] for d in sb.delivered(OWNER)] == ["echo one", "echo two"]


async def test_a_send_that_meets_minus_14_reports_session_expired(
    svc: Any, sb: Sandbox, account: Any, receiver: Receiver
) -> None:
    events = Events()
    outbox = Outbox(svc, events=events)
    hooks = Webhooks(receiver.url, SECRET)
    hooks.attach(events)
    hooks.start()
    try:
        sb.user_says(OWNER, "hi")
        assert (await push(svc, PushRequest("before"), outbox=outbox)).state == "delivered"
        sb.expire_session()
        result = await push(svc, PushRequest("during"), catch_up_seconds=0, outbox=outbox)
        assert result.state == "session_expired"
        await hooks.join()
    finally:
        await hooks.aclose()
    before, event = receiver.events("delivery.changed")
    assert before["state"] == "delivered"
    assert event["state"] == "session_expired" and event["id"] == result.messages[0].outbox_id
    assert "-14" in event["reason"]
