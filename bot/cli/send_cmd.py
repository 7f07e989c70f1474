"""``ilinkbot send`` and ``ilinkbot outbox``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

from ..exitcodes import Exit
from ..outbox import Outbox, SendResult
from ..payloads import MediaPayload, TextPayload, payload_from_json
from ..push import PushRequest, push
from ..service import Service
from ..status import iso
from .common import App, row_id

__all__ = ["exit_code_for", "register"]

_EXIT_BY_STATE = {
    "delivered": Exit.OK,
    "held": Exit.HELD,
    "unconfirmed": Exit.UNCONFIRMED,
    "pending": Exit.FAILED,
    "failed": Exit.FAILED,
    "session_expired": Exit.SESSION_EXPIRED,
}

_STATE_WORDS = {
    "delivered": "delivered",
    "held": "held: the reply window is closed; it goes out when the user writes again",
    "unconfirmed": "unconfirmed: the server accepted it without a message id",
    "pending": "not sent yet (will be retried by the next send/run or `ilinkbot outbox retry`)",
    "failed": "failed",
    "session_expired": "not sent: the bot session expired; kept in the outbox, it goes out "
    "after `ilinkbot login` when the user writes",
}


def exit_code_for(result: SendResult) -> Exit:
    return _EXIT_BY_STATE.get(result.state, Exit.FAILED)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "send",
        parents=[common],
        help="push a message to WeChat",
        description="Send text (or stdin) and/or one file. Exit code says what happened.",
    )
    p.add_argument("text", nargs="?", help="the message; '-' or nothing reads stdin")
    p.add_argument(
        "--to",
        action="append",
        metavar="USER",
        help="recipient user id or alias (repeatable; default: the owner)",
    )
    p.add_argument("-t", "--title", help="a first line for the message")
    p.add_argument("--account", metavar="ID", help="bot account (raw or normalised id)")
    media = p.add_mutually_exclusive_group()
    media.add_argument("--image", metavar="FILE")
    media.add_argument("--file", metavar="FILE")
    media.add_argument("--video", metavar="FILE")
    p.add_argument("--caption", help="text sent before the file")
    p.set_defaults(func=run_send)

    o = sub.add_parser(
        "outbox",
        parents=[common],
        help="list, retry or drop stored outgoing messages",
        description="Without an action: list outbox rows.",
    )
    o.add_argument(
        "--state",
        help="only rows in this state (pending, sending, sent, held, unconfirmed, failed, "
        "dead, session_expired)",
    )
    o.add_argument("--account", metavar="ID")
    o.add_argument("--limit", type=int, default=50)
    acts = o.add_subparsers(dest="action", metavar="ACTION")
    r = acts.add_parser("retry", parents=[common], help="send a held/failed/unconfirmed row again")
    r.add_argument("id", type=row_id)
    r.add_argument("--account", metavar="ID", help=argparse.SUPPRESS)
    d = acts.add_parser("drop", parents=[common], help="give up on a row (kept as dead)")
    d.add_argument("id", type=row_id)
    o.set_defaults(func=run_outbox)


def _read_text(app: App) -> str | None:
    """TEXT; or stdin when TEXT is ``-``, or when TEXT is missing (title or not) and stdin
    is not a terminal, as in ``df -h | ilinkbot send -t "disk report"``."""
    text: str | None = app.args.text
    has_media = any(getattr(app.args, k) for k in ("image", "file", "video"))
    piped = sys.stdin is not None and not sys.stdin.isatty()
    if text == "-" or (text is None and piped and not has_media):
        if sys.stdin is None:
            app.fail("no message: TEXT is '-' but there is no stdin", Exit.USAGE)
        return _read_stdin() or None
    if text is None and not has_media and not app.args.title:
        app.fail("no message: give TEXT, '-' with text on stdin, or a file", Exit.USAGE)
    return text


def _read_stdin() -> str:
    """Stdin as text; bytes that are not in its encoding survive as lone surrogates, which
    PushRequest turns into U+FFFD (a stray byte must not cost the whole message)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        return sys.stdin.read()
    return str(buffer.read().decode(sys.stdin.encoding or "utf-8", "surrogateescape"))


def run_send(app: App) -> int:
    a = app.args
    text = _read_text(app)
    try:
        request = PushRequest(
            text, title=a.title, image=a.image, file=a.file, video=a.video, caption=a.caption
        )
    except ValueError as exc:
        app.fail(str(exc), Exit.USAGE)
    for path in (a.image, a.file, a.video):
        if path:
            from pathlib import Path

            if not Path(path).expanduser().is_file():
                app.fail(f"no such file: {path}", Exit.NOT_FOUND)

    async def go() -> SendResult:
        _cancel_on_sigterm()
        svc = Service(app.config, store=app.store)
        try:
            outbox = Outbox(svc)
            if sys.stderr.isatty() and not app.json:
                outbox.progress = _progress_bar()
            return await push(svc, request, to=a.to, account=a.account, outbox=outbox)
        finally:
            await svc.aclose()

    try:
        result = asyncio.run(go())
    except asyncio.CancelledError:  # SIGTERM: reported like Ctrl-C
        raise KeyboardInterrupt from None
    lines = [
        f"#{m.outbox_id} to {m.user_id}: {_STATE_WORDS.get(m.state, m.state)}"
        + (f" (message_id {m.message_id})" if m.message_id else "")
        + (f" [{m.reason}]" if m.reason and m.state not in ("delivered", "held") else "")
        for m in result.messages
    ]
    code = exit_code_for(result)
    app.emit({**result.to_dict(), "exit_code": int(code)}, "\n".join(lines))
    return int(code)


def _cancel_on_sigterm() -> None:
    """SIGTERM stops a send as Ctrl-C does (asyncio.run cancels the task on SIGINT): the
    cancelled push releases its outbox claims before the process exits."""
    task = asyncio.current_task()
    if task is None or not hasattr(signal, "SIGTERM"):
        return
    # No signal handlers on Windows' loop, nor outside the main thread: Ctrl-C only.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


def _progress_bar() -> Any:
    def show(done: int, total: int) -> None:
        if total < 1024 * 1024:
            return
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(
            f"\rupload [{'#' * filled}{'.' * (width - filled)}] "
            f"{done / 2**20:.1f}/{total / 2**20:.1f} MiB"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def run_outbox(app: App) -> int:
    a = app.args
    store = app.store
    if a.action in ("retry", "drop"):
        row = store.get_outbox(a.id)
        if row is None:
            app.fail(f"no outbox row {a.id}", Exit.NOT_FOUND)
        if a.action == "drop":
            try:
                row = store.drop_outbox(a.id)
            except ValueError as exc:
                app.fail(str(exc), Exit.USAGE)
            app.emit(
                {"ok": True, "id": row.id, "state": row.state.value},
                f"#{row.id} dropped (kept as dead)",
            )
            return 0
        try:
            store.retry_outbox(a.id)
        except ValueError as exc:
            app.fail(str(exc), Exit.USAGE)
        account = app.account(row.bot_id)

        async def go() -> SendResult:
            svc = Service(app.config, store=store)
            try:
                outbox = Outbox(svc)
                outcomes = await outbox.drain(account, row.user_id)
                mine = [o for o in outcomes if o.outbox_id == row.id]
                if not mine:
                    mine = [await outbox.outcome(row.id)]
                return SendResult.combine(mine)
            finally:
                await svc.aclose()

        result = asyncio.run(go())
        code = exit_code_for(result)
        m = result.messages[0]
        app.emit(
            {**result.to_dict(), "exit_code": int(code)},
            f"#{m.outbox_id} to {m.user_id}: {_STATE_WORDS.get(m.state, m.state)}",
        )
        return int(code)

    bot_id = app.account(a.account, active_only=False).bot_id if a.account else None
    try:
        rows = store.list_outbox(bot_id, state=a.state, limit=None)
    except ValueError:
        app.fail(f"unknown state {a.state!r}", Exit.USAGE)
    rows = rows[-a.limit :] if a.limit > 0 else rows
    items = [
        {
            "id": r.id,
            "account": r.bot_id,
            "to": r.user_id,
            "state": r.state.value,
            "client_id": r.client_id,
            "attempts": r.attempts,
            "message_id": r.message_id,
            "last_error": r.last_error,
            "created_at": iso(r.created_at),
            "preview": _preview(r.payload),
        }
        for r in rows
    ]
    human = (
        "\n".join(
            f"#{i['id']:<5} {i['state']:<11} {i['to']:<28} {i['preview']}"
            + (f"  [{i['last_error']}]" if i["last_error"] else "")
            for i in items
        )
        or "the outbox is empty"
    )
    app.emit({"ok": True, "rows": items}, human)
    return 0


def _preview(stored: Any) -> str:
    try:
        payload = payload_from_json(stored)
    except ValueError:
        return "[unreadable payload]"
    if isinstance(payload, TextPayload):
        flat = " ".join(payload.text.split())
        return flat[:40] + ("…" if len(flat) > 40 else "")
    if isinstance(payload, MediaPayload):
        return f"[{payload.kind or 'file'}] {payload.path}"
    return f"[message item type {payload.item.get('type')}]"
