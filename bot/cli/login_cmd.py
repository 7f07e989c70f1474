"""``ilinkbot login | status | logout``: QR login and the accounts it creates.

Progress (the QR code, "scanned", prompts) goes to stderr; the result goes to stdout, as
one JSON object with ``--json``. The bot token is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ilinkbot.ilink.client import IlinkClient
from ilinkbot.ilink.errors import ApiError, IlinkError, SessionExpired

from ..accounts import find_account
from ..exitcodes import Exit
from ..login import (
    MAX_QR_CODES,
    PENDING_LOGIN_TTL,
    LoginEvent,
    LoginFailed,
    LoginResult,
    QrTicket,
    run_login,
)
from ..qr import render_terminal, write_png
from ..window import window_state
from .common import App

__all__ = ["register"]

PNG_NAME = "login-qr.png"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text!r}")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "login",
        parents=[common],
        help="log a bot in by scanning a QR code with WeChat",
        description=(
            "Show a QR code (terminal, PNG file, URL) and wait until it is scanned and "
            "confirmed on the phone. Stores the bot token and the owner (who scanned)."
        ),
    )
    p.add_argument(
        "--png",
        metavar="PATH",
        help=f"where to write the QR PNG (default: $ILINKBOT_HOME/{PNG_NAME})",
    )
    p.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", help="give up after this long (default: 480)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--no-wait",
        action="store_true",
        help="show and save the QR code, record a pending login and exit",
    )
    mode.add_argument(
        "--resume",
        action="store_true",
        help="continue the pending login of `login --no-wait` (within 5 min)",
    )
    p.set_defaults(func=cmd_login)

    s = sub.add_parser(
        "status",
        parents=[common],
        help="accounts, owners, known users and their reply windows",
        description="Every account with its state and owner, and its known users.",
    )
    s.add_argument("--account", metavar="ID", help="only this account (raw or normalised id)")
    s.add_argument(
        "--check", action="store_true", help="verify each token with one light server call"
    )
    s.set_defaults(func=cmd_status)

    o = sub.add_parser(
        "logout",
        parents=[common],
        help="remove an account's credentials (history is kept)",
        description="Forget the bot token of an account; messages and users stay stored.",
    )
    o.add_argument("--account", metavar="ID", help="the account (raw or normalised id)")
    o.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    o.set_defaults(func=cmd_logout)


# ---------------------------------------------------------------------------- helpers


def _client(app: App, base_url: str | None = None, token: str | None = None) -> IlinkClient:
    c = app.config
    return IlinkClient(
        base_url or c.base_url,
        token,
        channel_version=c.channel_version,
        bot_agent=c.bot_agent,
        route_tag=c.route_tag,
    )


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        h, m = divmod(seconds // 60, 60)
        return f"{h}h{m:02d}m"
    d, h = divmod(seconds // 3600, 24)
    return f"{d}d{h}h"


class _StdinLines:
    """Lines from stdin, read by a daemon thread so a deadline can abandon the wait.

    Reads the file descriptor directly (not ``sys.stdin``), so an abandoned read never
    holds a lock the interpreter needs when it exits.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._eof = False

    def _read_line_blocking(self) -> str | None:
        while b"\n" not in self._buf and not self._eof:
            try:
                chunk = os.read(0, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
            self._buf += chunk
        if not self._buf:
            return None
        line, _sep, rest = self._buf.partition(b"\n")
        self._buf = rest
        return line.decode("utf-8", errors="replace")

    async def readline(self) -> str | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()

        def work() -> None:
            try:
                line = self._read_line_blocking()
            except BaseException as exc:  # pragma: no cover - defensive
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_set_result, future, line)

        threading.Thread(target=work, name="ilinkbot-stdin", daemon=True).start()
        return await future


def _set_result(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[str | None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _stdin_is_tty() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False


# ---------------------------------------------------------------------------- login


class _LoginUi:
    """Shows the login's progress on stderr and keeps the PNG and pending record current."""

    def __init__(self, app: App, png_path: Path, *, record_pending: bool) -> None:
        self.app = app
        self.png_path = png_path
        self.record_pending = record_pending
        self.stdin = _StdinLines()
        self.ticket: QrTicket | None = None
        # The terminal drawing is for people: skip it when a program reads our output.
        self.draw = not app.json or sys.stderr.isatty()

    def show_qr(self, ticket: QrTicket) -> None:
        self.ticket = ticket
        path = write_png(ticket.url, self.png_path)
        say = self.app.say
        if ticket.number > 1:
            say(f"New QR code ({ticket.number} of {MAX_QR_CODES}).")
        if self.draw:
            say("Scan this QR code with WeChat:\n")
            sys.stderr.write(render_terminal(ticket.url))
        say(f"QR code image: {path}")
        say(f"QR code link:  {ticket.url}")
        if self.record_pending:
            self.save_pending(ticket)

    def save_pending(self, ticket: QrTicket) -> None:
        self.app.store.save_pending_login(
            qrcode=ticket.qrcode,
            qr_url=ticket.url,
            poll_base=ticket.poll_base,
            png_path=str(self.png_path),
            issued_at=ticket.issued_at,
        )

    def on_event(self, event: LoginEvent) -> None:
        say = self.app.say
        self.ticket = event.ticket
        if event.kind == "qr":
            self.show_qr(event.ticket)
        elif event.kind == "scanned":
            say("Scanned. Confirm the login on the phone.")
        elif event.kind == "redirect":
            say(f"The account is served elsewhere; following to {event.detail}.")
            if self.record_pending:
                self.save_pending(event.ticket)
        elif event.kind == "verify_code_accepted":
            say("Number accepted. Confirm the login on the phone.")
        elif event.kind == "expired":
            more = event.ticket.number < MAX_QR_CODES
            say("The QR code expired." + (" Fetching a new one." if more else ""))
        elif event.kind == "verify_blocked":
            more = event.ticket.number < MAX_QR_CODES
            say("Too many wrong numbers." + (" Fetching a new QR code." if more else ""))

    async def read_verify_code(self, retry: bool) -> str | None:
        lead = "That number was wrong. " if retry else "The phone shows a number. "
        tty = _stdin_is_tty()
        while True:
            if tty:
                sys.stderr.write(lead + "Type it here: ")
                sys.stderr.flush()
            else:
                self.app.say(lead + "Reading it from stdin.")
            line = await self.stdin.readline()
            if line is None:
                return None
            code = line.strip().replace(" ", "")
            if code:
                return code
            lead = "Nothing typed. "


def cmd_login(app: App) -> int:
    args = app.args
    timeout = float(args.timeout or app.config.login_timeout_seconds)
    store = app.store
    if args.png:
        png_path = Path(args.png).expanduser()
        if png_path.is_dir():
            app.fail(f"--png {args.png}: is a directory; give a file name", Exit.USAGE)
    else:
        png_path = app.config.home / PNG_NAME

    if args.no_wait:
        return asyncio.run(_login_no_wait(app, png_path))

    resume: QrTicket | None = None
    if args.resume:
        pending = store.get_pending_login()
        if pending is None:
            app.fail(
                "no pending login: start one with `ilinkbot login --no-wait`",
                Exit.NOT_FOUND,
                status="no_pending_login",
            )
        age = (datetime.now(UTC) - pending.issued_at).total_seconds()
        if age > PENDING_LOGIN_TTL:
            store.clear_pending_login()
            app.fail(
                f"the pending login expired ({int(age)} s old, limit "
                f"{int(PENDING_LOGIN_TTL)} s): run `ilinkbot login` again",
                Exit.LOGIN_FAILED,
                status="expired",
            )
        resume = QrTicket(
            qrcode=pending.qrcode,
            url=pending.qr_url,
            poll_base=pending.poll_base,
            issued_at=pending.issued_at,
            number=1,
        )
        if not args.png and pending.png_path:
            png_path = Path(pending.png_path)
        app.say(f"Resuming the pending login (QR code link: {pending.qr_url}).")

    ui = _LoginUi(app, png_path, record_pending=bool(args.resume))
    try:
        result = asyncio.run(_login(app, ui, timeout=timeout, resume=resume))
    except LoginFailed as exc:
        return _login_failed(app, ui, exc)
    store.clear_pending_login()
    return _login_done(app, result)


async def _login(app: App, ui: _LoginUi, *, timeout: float, resume: QrTicket | None) -> LoginResult:
    async with _client(app) as client:
        return await run_login(
            client,
            app.store,
            on_event=ui.on_event,
            read_verify_code=ui.read_verify_code,
            timeout=timeout,
            resume=resume,
        )


async def _login_no_wait(app: App, png_path: Path) -> int:
    async with _client(app) as client:
        qr = await client.get_bot_qrcode(app.store.local_tokens(10))
    ticket = QrTicket(
        qrcode=qr.qrcode,
        url=qr.qrcode_img_content,
        poll_base=app.config.base_url,
        issued_at=datetime.now(UTC),
    )
    ui = _LoginUi(app, png_path, record_pending=True)
    ui.show_qr(ticket)
    minutes = int(PENDING_LOGIN_TTL // 60)
    app.emit(
        {
            "ok": True,
            "status": "pending",
            "qr_png": str(png_path.expanduser().resolve()),
            "qr_url": ticket.url,
            "expires_at": _iso(
                datetime.fromtimestamp(ticket.issued_at.timestamp() + PENDING_LOGIN_TTL, UTC)
            ),
            "next": "ilinkbot login --resume",
        },
        f"Login pending. After scanning, run `ilinkbot login --resume` within {minutes} minutes.",
    )
    return Exit.OK


def _login_done(app: App, result: LoginResult) -> int:
    if result.status == "confirmed":
        app.emit(
            {
                "ok": True,
                "status": "confirmed",
                "account": result.bot_id,
                "owner": result.owner,
                "base_url": result.base_url,
            },
            f"Logged in: bot {result.bot_id}, owner {result.owner or '(unknown)'}.",
        )
        return Exit.OK
    # binded_redirect: the server recognised a bot this installation already holds.
    account = find_account(app.store, result.bot_id) if result.bot_id else None
    if account is not None:
        app.store.touch_account(account.bot_id)
    app.emit(
        {
            "ok": True,
            "status": "already_bound",
            "account": account.bot_id if account else result.bot_id,
            "owner": account.owner_user_id if account else result.owner,
        },
        "Already connected: this bot is bound to this installation; "
        "the stored credentials stay in use" + (f" (bot {account.bot_id})." if account else "."),
    )
    return Exit.OK


def _login_failed(app: App, ui: _LoginUi, exc: LoginFailed) -> int:
    if exc.reason == "no_verify_code" and exc.ticket is not None:
        # Keep the login open so a script can pipe the number in: `echo N | login --resume`.
        ui.save_pending(exc.ticket)
        app.fail(
            f"{exc}: run `echo NUMBER | ilinkbot login --resume` within "
            f"{int(PENDING_LOGIN_TTL // 60)} minutes",
            Exit.LOGIN_FAILED,
            status="need_verifycode",
        )
    app.store.clear_pending_login()
    app.fail(f"login failed: {exc}", Exit.LOGIN_FAILED, status=exc.reason)


# ---------------------------------------------------------------------------- status


def _peer_info(app: App, peer: Any, now: datetime) -> dict[str, Any]:
    cfg = app.config
    ws = window_state(peer, quota=cfg.reply_quota, window_seconds=cfg.reply_window_seconds, now=now)
    token_age = None
    if peer.context_token and peer.last_inbound_at is not None:
        token_age = round((now - peer.last_inbound_at).total_seconds())
    return {
        "user_id": peer.user_id,
        "alias": peer.alias,
        "has_context_token": bool(peer.context_token),
        "context_token_age_seconds": token_age,
        "last_inbound_at": _iso(peer.last_inbound_at),
        "sent_since_inbound": peer.sent_since_inbound,
        "window_open": ws.open,
        "window_messages_left": ws.messages_left,
        "window_seconds_left": round(ws.seconds_left),
        "window_reason": ws.reason,
    }


async def _check(app: App, account: Any) -> tuple[str, str | None]:
    """One light authenticated call: ``ok``, ``expired``, ``unchecked`` or ``error``."""
    if not account.token:
        return "unchecked", "no token stored"
    user = account.owner_user_id
    if not user:
        peers = app.store.list_peers(account.bot_id)
        user = peers[0].user_id if peers else None
    if not user:
        return "unchecked", "no owner or user to check with"
    peer = app.store.get_peer(account.bot_id, user)
    async with _client(app, account.base_url, account.token) as client:
        try:
            await client.get_config(user, peer.context_token if peer else None)
        except SessionExpired:
            return "expired", None
        except ApiError as exc:
            # -4 right after binding means "no typing ticket yet", not a stale token (§8.4);
            # any answer other than -14 shows the token was accepted.
            return "ok", f"getconfig ret={exc.ret}"
        except IlinkError as exc:
            return "error", str(exc)
    return "ok", None


def cmd_status(app: App) -> int:
    store = app.store
    accounts = store.list_accounts()
    wanted = app.args.account
    if wanted:
        acc = find_account(store, wanted)
        if acc is None:
            app.fail(f"no account {wanted!r}; see `ilinkbot status`", Exit.NO_ACCOUNT)
        accounts = [acc]
    code = Exit.OK
    checks: dict[str, tuple[str, str | None]] = {}
    if app.args.check:
        checks = asyncio.run(_check_all(app, accounts))
        for acc in accounts:
            result = checks.get(acc.bot_id)
            if result is None:
                continue
            if result[0] == "expired":
                if acc.state != "expired":
                    store.set_account_state(acc.bot_id, "expired")
                code = Exit.SESSION_EXPIRED
            elif result[0] == "ok" and acc.state == "expired":
                store.set_account_state(acc.bot_id, "active")
            elif result[0] == "error" and code == Exit.OK:
                code = Exit.ERROR
        accounts = [store.get_account(a.bot_id) or a for a in accounts]

    now = datetime.now(UTC)
    default = store.default_account()
    items: list[dict[str, Any]] = []
    lines: list[str] = []
    for acc in accounts:
        peers = [_peer_info(app, p, now) for p in store.list_peers(acc.bot_id)]
        held = len(store.list_outbox(acc.bot_id, state="held"))
        dead = len(store.dead_inbox(acc.bot_id))
        item: dict[str, Any] = {
            "account": acc.bot_id,
            "state": str(acc.state),
            "owner": acc.owner_user_id,
            "base_url": acc.base_url,
            "created_at": _iso(acc.created_at),
            "last_used_at": _iso(acc.last_used_at),
            "default": acc.bot_id == default,
            "users": peers,
            "held_messages": held,
            "dead_inbox": dead,
        }
        if acc.bot_id in checks:
            item["check"], item["check_detail"] = checks[acc.bot_id]
        items.append(item)
        lines.extend(_status_lines(item, now))

    if not items:
        app.emit(
            {"ok": True, "accounts": []},
            "No account: run `ilinkbot login`.",
        )
        return Exit.NO_ACCOUNT
    app.emit({"ok": code == Exit.OK, "accounts": items}, "\n".join(lines))
    return code


async def _check_all(app: App, accounts: list[Any]) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for acc in accounts:
        if str(acc.state) == "logged_out":
            continue
        out[acc.bot_id] = await _check(app, acc)
    return out


def _status_lines(item: dict[str, Any], now: datetime) -> list[str]:
    state = item["state"]
    head = f"{item['account']}  {state}  owner: {item['owner'] or '(unknown)'}"
    if item["default"]:
        head += "  (default for pushes)"
    lines = [head]
    if "check" in item:
        check, detail = item["check"], item.get("check_detail")
        if check == "expired":
            lines.append("  check: session EXPIRED (-14): run `ilinkbot login`")
        elif check == "ok":
            lines.append("  check: token accepted")
        else:
            lines.append(f"  check: {check}" + (f" ({detail})" if detail else ""))
    elif state == "expired":
        lines.append("  the session expired: run `ilinkbot login`")
    elif state == "logged_out":
        lines.append("  logged out (history kept): `ilinkbot login` to use it again")
    users = item["users"]
    if not users:
        lines.append("  users: none yet (a user must write to the bot first)")
    for u in users:
        name = u["user_id"] + (f" ({u['alias']})" if u["alias"] else "")
        if u["context_token_age_seconds"] is None:
            lines.append(f"  {name}: has not written yet; cannot be messaged")
            continue
        age = _age(u["context_token_age_seconds"])
        if u["window_open"]:
            window = f"{u['window_messages_left']} messages, {_age(u['window_seconds_left'])} left"
        else:
            window = f"closed ({u['window_reason']})"
        lines.append(f"  {name}: context token {age} old; reply window {window}")
    if item["held_messages"]:
        lines.append(f"  {item['held_messages']} messages held until the user writes")
    if item["dead_inbox"]:
        lines.append(f"  {item['dead_inbox']} inbound messages failed their handler")
    return lines


# ---------------------------------------------------------------------------- logout


def _confirm(app: App, question: str) -> bool:
    if _stdin_is_tty():
        sys.stderr.write(question + " [y/N] ")
        sys.stderr.flush()
    else:
        app.say(question + " [y/N] (reading the answer from stdin)")
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""
    except (OSError, ValueError):
        line = ""
    return line.strip().lower() in ("y", "yes")


def cmd_logout(app: App) -> int:
    store = app.store
    wanted = app.args.account
    if wanted:
        acc = find_account(store, wanted)
        if acc is None:
            app.fail(f"no account {wanted!r}; see `ilinkbot status`", Exit.NO_ACCOUNT)
    else:
        candidates = [a for a in store.list_accounts() if str(a.state) != "logged_out"]
        if not candidates:
            app.fail("no account is logged in; nothing to log out", Exit.NO_ACCOUNT)
        if len(candidates) > 1:
            names = ", ".join(a.bot_id for a in candidates)
            app.fail(f"several accounts ({names}); choose one with --account", Exit.NO_ACCOUNT)
        acc = candidates[0]
    if str(acc.state) == "logged_out":
        app.emit(
            {"ok": True, "status": "logged_out", "account": acc.bot_id, "changed": False},
            f"{acc.bot_id} is already logged out.",
        )
        return Exit.OK
    if not app.args.yes:
        question = (
            f"Log out {acc.bot_id} (owner {acc.owner_user_id or 'unknown'})? Its token is "
            "deleted; messages and users are kept. Logging in again needs a new QR scan."
        )
        if not _confirm(app, question):
            app.fail(
                "logout cancelled; nothing changed (use --yes to skip the question)",
                Exit.USAGE,
                status="cancelled",
            )
    store.logout(acc.bot_id)
    app.emit(
        {"ok": True, "status": "logged_out", "account": acc.bot_id, "changed": True},
        f"Logged out {acc.bot_id}. History kept; `ilinkbot login` to connect again.",
    )
    return Exit.OK
