"""What an agent can do with ilinkbot, as plain async calls returning JSON-ready dicts.

The MCP server (:mod:`bot.mcp_server`) exposes each method as a tool; nothing here
imports the MCP SDK. Bad input raises :class:`AgentError` with a one-line message.
The bot token never appears in a result.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx

from ilinkbot.ilink import IlinkError, SessionExpired
from ilinkbot.store import Account

from .accounts import choose_account, find_account, resolve_recipient
from .config import Config
from .errors import BotError
from .login import PENDING_LOGIN_TTL, QrTicket, check_once
from .message import Message
from .outbox import Outbox
from .push import CATCH_UP_SECONDS, PushRequest, catch_up, push
from .qr import write_png
from .service import Service
from .status import account_status, iso
from .window import window_state

__all__ = ["MAX_WAIT_SECONDS", "QR_CHECK_SECONDS", "QR_PNG_NAME", "AgentError", "AgentTools"]

#: The QR image of the login in progress (the same file ``ilinkbot login`` writes).
QR_PNG_NAME = "login-qr.png"
#: How long one ``wechat_login_check`` may wait for the server's answer.
QR_CHECK_SECONDS = 3.0
#: The longest ``wechat_wait_reply`` (an MCP call should not hang for hours).
MAX_WAIT_SECONDS = 3600.0
#: How often ``wait_reply`` looks at the inbox while a running bot polls.
_INBOX_POLL_SECONDS = 0.5
#: The getupdates pass that fetches what was written before a ``wait_reply`` call.
_DRAIN_SECONDS = 1.0


class AgentError(Exception):
    """Bad input or a refused action: the message says what to do instead."""


class AgentTools:
    """One store and HTTP client for every call; close with :meth:`aclose`."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        check_seconds: float = QR_CHECK_SECONDS,
    ) -> None:
        self.config = config
        self.svc = Service(config, transport=transport)
        self.store: Any = self.svc.store
        self.check_seconds = check_seconds

    async def aclose(self) -> None:
        await self.svc.aclose()

    # ------------------------------------------------------------------ status

    def _window(self, bot_id: str, user: str, now: datetime) -> dict[str, Any]:
        cfg = self.config
        peer = self.store.get_peer(bot_id, user)
        ws = window_state(
            peer, quota=cfg.reply_quota, window_seconds=cfg.reply_window_seconds, now=now
        )
        return ws.to_dict()

    async def status(self) -> dict[str, Any]:
        """Accounts, whether WeChat is bound (and ever was), reply windows, held messages:
        each account as ``ilinkbot status --json`` shows it, plus ``bound``."""
        store = self.store
        now = datetime.now(UTC)
        default = store.default_account()
        accounts: list[dict[str, Any]] = []
        for acc in store.list_accounts():
            item = account_status(store, self.config, acc, default=default, now=now)
            item["bound"] = str(acc.state) == "active" and bool(acc.token)
            accounts.append(item)
        try:
            push_account = choose_account(store)
        except BotError:
            push_account = None
        pending = store.get_pending_login()
        return {
            "bound": any(a["bound"] for a in accounts),
            "ever_bound": bool(accounts),
            "account": push_account.bot_id if push_account else None,
            "owner": push_account.owner_user_id if push_account else None,
            "accounts": accounts,
            "pending_qrcode": pending.qrcode if pending is not None else None,
        }

    # ------------------------------------------------------------------ login

    async def login_start(self) -> dict[str, Any]:
        """A fresh QR code, remembered as the pending login. Nothing polls it."""
        client = self.svc.anonymous_client()
        try:
            qr = await client.get_bot_qrcode(self.store.local_tokens(10))
        except IlinkError as exc:
            raise AgentError(f"could not get a QR code from the server: {exc}") from None
        ticket = QrTicket(
            qrcode=qr.qrcode,
            url=qr.qrcode_img_content,
            poll_base=self.config.base_url,
            issued_at=datetime.now(UTC),
        )
        try:
            png = write_png(ticket.url, self.config.home / QR_PNG_NAME)
        except OSError as exc:
            raise AgentError(
                f"cannot write the QR image {self.config.home / QR_PNG_NAME}: {exc.strerror or exc}"
            ) from None
        self.store.save_pending_login(
            qrcode=ticket.qrcode,
            qr_url=ticket.url,
            poll_base=ticket.poll_base,
            png_path=str(png),
            issued_at=ticket.issued_at,
        )
        return {
            "qrcode": ticket.qrcode,
            "png_path": str(png),
            "url": ticket.url,
            "expires_at": iso(ticket.issued_at + timedelta(seconds=PENDING_LOGIN_TTL)),
            "next": "show the image to the user; after they scan and confirm it on the "
            "phone, call wechat_login_check with this qrcode",
        }

    async def login_check(self, qrcode: str, verify_code: str | None = None) -> dict[str, Any]:
        """One status check of ``qrcode``; on ``confirmed`` the credentials are stored."""
        store = self.store
        pending = store.get_pending_login()
        if pending is None or pending.qrcode != qrcode:
            raise AgentError(
                f"unknown qrcode {qrcode[:64]!r}: it is not the login in progress; "
                "make one with wechat_login_start"
            )
        age = (datetime.now(UTC) - pending.issued_at).total_seconds()
        if age > PENDING_LOGIN_TTL:
            store.clear_pending_login()
            return {"status": "expired", "next": "make a new QR code with wechat_login_start"}
        ticket = QrTicket(
            qrcode=pending.qrcode,
            url=pending.qr_url,
            poll_base=pending.poll_base,
            issued_at=pending.issued_at,
        )
        code = (verify_code or "").strip().replace(" ", "") or None
        check = await check_once(
            self.svc.anonymous_client(),
            store,
            ticket,
            verify_code=code,
            timeout=self.check_seconds,
        )
        if check.ticket.poll_base != ticket.poll_base:
            store.save_pending_login(
                qrcode=pending.qrcode,
                qr_url=pending.qr_url,
                poll_base=check.ticket.poll_base,
                png_path=pending.png_path,
                issued_at=pending.issued_at,
            )
        result = check.result
        if result is not None:
            store.clear_pending_login()
            if result.status == "confirmed":
                return {
                    "status": "confirmed",
                    "account": result.bot_id,
                    "owner": result.owner,
                    "reconnected": result.reconnected,
                }
            acc = find_account(store, result.bot_id) if result.bot_id else None
            if acc is not None:
                store.touch_account(acc.bot_id)
            return {
                "status": "already_bound",
                "account": acc.bot_id if acc else result.bot_id,
                "owner": acc.owner_user_id if acc else result.owner,
                "reconnected": False,
            }
        if check.status in ("expired", "verify_code_blocked"):
            store.clear_pending_login()
            return {
                "status": check.status,
                "next": "make a new QR code with wechat_login_start",
            }
        nexts = {
            "need_verifycode": "ask the user for the number the phone shows and call "
            "wechat_login_check again with verify_code",
            "scaned": "scanned: the user must confirm on the phone, then check again",
        }
        return {
            "status": check.status,
            "next": nexts.get(
                check.status, "not scanned yet: check again after the user says they scanned"
            ),
        }

    async def disconnect(self, account: str, confirm: bool = False) -> dict[str, Any]:
        """Log ``account`` out (history kept); refused unless ``confirm``."""
        if confirm is not True:
            raise AgentError(
                "wechat_disconnect is destructive: ask the user, then call it with confirm=true"
            )
        acc = find_account(self.store, account)
        if acc is None:
            raise AgentError(f"no account {account[:64]!r}; see wechat_status")
        if str(acc.state) == "logged_out":
            return {"status": "logged_out", "account": acc.bot_id, "changed": False}
        self.store.logout(acc.bot_id)
        return {"status": "logged_out", "account": acc.bot_id, "changed": True}

    # ------------------------------------------------------------------ push

    async def send(
        self,
        text: str | None = None,
        *,
        to: str | None = None,
        title: str | None = None,
        image_path: str | None = None,
        file_path: str | None = None,
        account: str | None = None,
    ) -> dict[str, Any]:
        """Push to WeChat; the honest outcome and the reply window left after it."""
        for name, value in (("image_path", image_path), ("file_path", file_path)):
            if value is not None and not Path(value).expanduser().is_file():
                raise AgentError(f"{name} {value!r}: no such file")
        try:
            request = PushRequest(text, title=title, image=image_path, file=file_path)
            result = await push(self.svc, request, to=to, account=account)
        except (BotError, ValueError) as exc:
            raise AgentError(str(exc)) from None
        except SessionExpired:
            raise AgentError(
                "the WeChat session expired: reconnect with wechat_login_start"
            ) from None
        out = result.to_dict()
        reasons = [m.reason for m in result.messages if m.reason]
        out["reason"] = reasons[0] if reasons else None
        if result.state == "held":
            out["goes_out"] = "when the user next writes to the bot"
        now = datetime.now(UTC)
        bot_id = None
        if result.messages:
            row = self.store.get_outbox(result.messages[0].outbox_id)
            bot_id = row.bot_id if row is not None else None
        users = dict.fromkeys(m.user_id for m in result.messages)
        out["window"] = {u: self._window(bot_id, u, now) for u in users} if bot_id else {}
        return out

    # ------------------------------------------------------------------ replies

    def _target(self, to: str | None, account: str | None) -> tuple[Any, str]:
        try:
            acc = choose_account(self.store, account)
            return acc, resolve_recipient(self.store, acc, to)
        except BotError as exc:
            raise AgentError(str(exc)) from None

    def _messages(self, rows: list[Any], acc: Account) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            raw = row.raw
            if not isinstance(raw, dict) or "malformed" in raw or raw.get("message_type") == 2:
                continue  # malformed or written by the bot itself
            msg = Message(cast(Any, None), acc, row)
            out.append(
                {
                    "id": row.id,
                    "from": row.user_id,
                    "kind": msg.kind,
                    "text": msg.body,
                    "at": iso(row.created_at or row.received_at),
                }
            )
        return out

    async def _catch_up(self, acc: Account, seconds: float) -> None:
        """A short getupdates pass unless a poller holds the account (as ``send`` does)."""
        try:
            await catch_up(Outbox(self.svc), acc, seconds=seconds)
        except SessionExpired:
            await self.svc.mark_expired(acc.bot_id)
            raise AgentError(
                "the WeChat session expired: reconnect with wechat_login_start"
            ) from None

    async def recent_messages(
        self, to: str | None = None, limit: int = 10, account: str | None = None
    ) -> dict[str, Any]:
        """What users wrote, newest first (only ``to``'s messages when given)."""
        if not 1 <= limit <= 100:
            raise AgentError(f"limit must be 1-100, got {limit}")
        acc, user = self._target(to, account) if to else (self._account(account), None)
        await self._catch_up(acc, min(CATCH_UP_SECONDS, 1.0))
        rows = await self.svc.read(self.store.recent_inbox, acc.bot_id, user, limit=limit)
        return {"account": acc.bot_id, "messages": self._messages(rows, acc)}

    def _account(self, account: str | None) -> Any:
        try:
            return choose_account(self.store, account)
        except BotError as exc:
            raise AgentError(str(exc)) from None

    async def wait_reply(
        self, to: str | None = None, timeout_seconds: float = 300.0, account: str | None = None
    ) -> dict[str, Any]:
        """Wait for the next message ``to`` (default: the owner) writes after this call.

        Reads the inbox only: a running bot still handles every message."""
        if not 0 < timeout_seconds <= MAX_WAIT_SECONDS:
            raise AgentError(
                f"timeout_seconds must be > 0 and <= {int(MAX_WAIT_SECONDS)}, got {timeout_seconds}"
            )
        acc, user = self._target(to, account)
        # Fetch what was written before this call first, so only later messages count.
        await self._catch_up(acc, min(timeout_seconds, _DRAIN_SECONDS))
        start = await self.svc.read(self.store.last_inbox_id, acc.bot_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            rows = await self.svc.read(
                self.store.recent_inbox, acc.bot_id, user, limit=20, after_id=start
            )
            found = self._messages(list(reversed(rows)), acc)
            if found:
                return {"status": "replied", "account": acc.bot_id, "messages": found}
            left = deadline - loop.time()
            if left <= 0:
                return {"status": "timeout", "account": acc.bot_id, "messages": []}
            began = loop.time()
            # A running bot polls for us (catch_up then returns at once): read its inbox.
            await self._catch_up(acc, min(left, 25.0))
            if loop.time() - began < _INBOX_POLL_SECONDS:
                await asyncio.sleep(min(max(left, 0.0), _INBOX_POLL_SECONDS))
