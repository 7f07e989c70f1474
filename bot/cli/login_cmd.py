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
from ..status import iso
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
    async with app.ilink_client() as client:
        return await run_login(
            client,
            app.store,
            on_event=ui.on_event,
            read_verify_code=ui.read_verify_code,
            timeout=timeout,
            resume=resume,
        )


async def _login_no_wait(app: App, png_path: Path) -> int:
    async with app.ilink_client() as client:
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
            "expires_at": iso(
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
