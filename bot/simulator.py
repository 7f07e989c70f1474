"""``ilinkbot run BOT --sandbox``: the bot against the built-in sandbox, with the person
at the terminal playing a WeChat user. Nothing leaves the machine."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, TextIO

import httpx

from ilinkbot.ilink import IlinkClient
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Account, Store

from .runner import Runner

__all__ = ["SANDBOX_USER", "run_in_sandbox"]

SANDBOX_USER = "you@im.wechat"
HELP = (
    "You are a WeChat user talking to the bot (offline sandbox). Type a message and press "
    "Enter.\n  /image PATH   send an image     /file PATH   send a file\n"
    "  Ctrl-D        quit"
)


def _describe(d: dict[str, Any]) -> str:
    if d.get("kind") == "text":
        return str(d.get("text", ""))
    size = d.get("size") or 0
    name = f" {d['file_name']}" if d.get("file_name") else ""
    return f"[{d.get('kind')}{name}, {size / 1024:.1f} KB, sha256 {str(d.get('sha256', ''))[:12]}]"


async def run_in_sandbox(
    bot: Any, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    inp = stdin or sys.stdin
    out = stdout or sys.stdout
    sb = Sandbox(longpoll_seconds=1.0, qr_poll_seconds=1.0)
    with tempfile.TemporaryDirectory(prefix="ilinkbot-sandbox-") as tmp:
        home = Path(tmp)
        config = bot.config.with_overrides(
            home=home, base_url=sb.api_base, cdn_base_url=sb.cdn_base, database_url=None
        )
        store = Store.open(None, home=home)
        try:
            account = await sandbox_login(sb, store, owner=SANDBOX_USER)
            bot.configure(config, transport=sb.transport(), store=store)
            runner = Runner(bot)
            serving = asyncio.create_task(runner.serve())
            out.write(f"sandbox bot {account.bot_id} is running.\n{HELP}\n")
            out.flush()
            code = await _converse(sb, runner, bot, store, account, inp, out)
            runner.request_stop()
            result = await serving
            return code if code else result
        finally:
            store.close()


async def _converse(
    sb: Sandbox, runner: Runner, bot: Any, store: Store, account: Account, inp: TextIO, out: TextIO
) -> int:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        for line in inp:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=reader, daemon=True).start()
    shown = 0

    def show_new() -> None:
        nonlocal shown
        got = sb.delivered(SANDBOX_USER)
        for d in got[shown:]:
            out.write(f"bot › {_describe(d)}\n")
        if len(got) > shown:
            out.flush()
        shown = len(got)

    while not runner.stop.is_set():
        try:
            line = await asyncio.wait_for(lines.get(), timeout=0.1)
        except TimeoutError:
            show_new()
            continue
        if line is None:
            break
        if not line.strip():
            continue
        try:
            _say(sb, line)
        except (OSError, ValueError) as exc:
            out.write(f"(not sent: {exc})\n")
            out.flush()
    # Input ended: let the bot finish answering, then show the last replies.
    for _ in range(100):
        busy = await bot.service.read(store.unhandled, account.bot_id)
        pending = await bot.service.read(
            store.list_outbox, account.bot_id, state=["pending", "sending"]
        )
        bots = [b for b in sb.state()["bots"] if b["bot_id"] == account.bot_id]
        fetched = all(b["acknowledged"] >= b["queued"] for b in bots)  # stored by the bot
        if fetched and not busy and not pending:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    show_new()
    return 0


def _say(sb: Sandbox, line: str) -> None:
    if line.startswith("/image ") or line.startswith("/file "):
        cmd, _, arg = line.partition(" ")
        path = Path(arg.strip()).expanduser()
        data = path.read_bytes()
        if cmd == "/image":
            sb.user_says(SANDBOX_USER, image=data)
        else:
            sb.user_says(SANDBOX_USER, file=(path.name, data))
        return
    sb.user_says(SANDBOX_USER, line)


async def sandbox_login(
    sandbox: Any,
    store: Any,
    *,
    owner: str = "owner@im.wechat",
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Any:
    """Scan and confirm a fresh QR code in ``sandbox`` and save the account in ``store``.

    Over real HTTP pass the server's ``base_url``; in-process the sandbox's transport is
    used. Returns the stored account."""
    base = base_url or sandbox.api_base
    http = httpx.AsyncClient(transport=transport or (None if base_url else sandbox.transport()))
    try:
        client = IlinkClient(base, None, http=http)
        qr = await client.get_bot_qrcode(store.local_tokens())
        sandbox.scan(qr.qrcode)
        sandbox.confirm(owner, qr.qrcode)
        status = await client.get_qrcode_status(qr.qrcode)
        if status.status != "confirmed" or not status.ilink_bot_id or not status.bot_token:
            raise RuntimeError(f"sandbox login ended with {status.status!r}")
        return store.save_account(
            status.ilink_bot_id,
            token=status.bot_token,
            base_url=status.baseurl or base,
            owner_user_id=status.ilink_user_id or owner,
        )
    finally:
        await http.aclose()
