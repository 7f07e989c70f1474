"""The web login: QR logins driven by :func:`bot.login.run_login` (the same flow and the same
stored credentials as ``ilinkbot login``), watched by a page or by the accounts API.

The page starts a login (``POST /login/start``), polls ``GET /login/status`` and, when the
phone shows a number, posts it (``POST /login/code``). A login nobody watches any more is
cancelled after :data:`UNWATCHED_SECONDS`. The page runs one :class:`WebLogin` at a time;
the accounts API (``/v1/logins``) runs several at once in :class:`Logins`, keyed by id.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import qrcode
from qrcode.constants import ERROR_CORRECT_M

from ilinkbot.ilink.log import get_logger, register_secret

from ..login import MAX_QR_CODES, LoginEvent, LoginFailed, LoginResult, run_login
from ..service import Service

__all__ = [
    "MAX_LOGINS",
    "UNWATCHED_SECONDS",
    "LoginState",
    "Logins",
    "TooManyLogins",
    "UnknownLogin",
    "WebLogin",
    "qr_data_url",
]

_log = get_logger("ilinkbot.serve.login")

#: A running login whose status nobody asked for this long is cancelled.
UNWATCHED_SECONDS = 90.0
#: At most this many API logins run at once; a finished one is kept this long for its status.
MAX_LOGINS = 32
FINISHED_KEEP_SECONDS = 600.0
#: How long ``POST /v1/logins`` waits for the first QR code before answering without it.
QR_WAIT_SECONDS = 15.0

_MESSAGES = {
    "idle": "No login running.",
    "starting": "Fetching a QR code…",
    "wait": "Scan the QR code with WeChat.",
    "scanned": "Scanned. Confirm the login on the phone.",
    "verify_code": "The phone shows a number: type it here.",
    "verify_code_wrong": "That number was wrong: type the number shown on the phone.",
    "checking_code": "Checking the number…",
    "expired": "The QR code expired; fetching a new one…",
    "verify_blocked": "Too many wrong numbers; fetching a new QR code…",
    "done": "Done: the bot is logged in.",
    "already_bound": "Done: this bot was already connected here; the stored login stays.",
    "failed": "The login failed.",
}


def qr_data_url(data: str) -> str:
    """``data`` as a PNG QR code in a ``data:`` URL (nothing written to disk)."""
    code = qrcode.QRCode(border=4, box_size=8, error_correction=ERROR_CORRECT_M)
    code.add_data(data)
    code.make(fit=True)
    buf = io.BytesIO()
    code.make_image().save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class LoginState:
    state: str = "idle"
    qr_url: str | None = None
    qr_image: str | None = None
    qr_number: int = 0
    account: str | None = None
    owner: str | None = None
    reason: str | None = None
    error: str | None = None
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        showing_qr = self.state in (
            "wait",
            "scanned",
            "verify_code",
            "verify_code_wrong",
            "checking_code",
        )
        return {
            "ok": self.state not in ("failed",),
            "state": self.state,
            "message": self.error
            if self.state == "failed" and self.error
            else _MESSAGES.get(self.state, self.state),
            "qr_image": self.qr_image if showing_qr else None,
            "qr_url": self.qr_url if showing_qr else None,
            "qr_number": self.qr_number,
            "qr_max": MAX_QR_CODES,
            "needs_code": self.state in ("verify_code", "verify_code_wrong"),
            "done": self.state in ("done", "already_bound"),
            "account": self.account,
            "owner": self.owner,
            "reason": self.reason,
            "version": self.version,
        }


class WebLogin:
    """One login at a time: the page's, or one of :class:`Logins`.

    ``ref`` (a platform's own user id) is kept with the account it logs in.
    """

    def __init__(
        self,
        svc: Callable[[], Service],
        *,
        timeout: float,
        on_done: Callable[[LoginResult], Any] | None = None,
        ref: str | None = None,
    ) -> None:
        self._svc = svc
        self.ref = ref
        self.finished_at: float | None = None
        self.timeout = timeout
        self.on_done = on_done
        self.state = LoginState()
        self._task: asyncio.Task[None] | None = None
        self._codes: asyncio.Queue[str] = asyncio.Queue()
        self._last_watched = time.monotonic()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _set(self, state: str, **changes: Any) -> None:
        self.state.state = state
        for key, value in changes.items():
            setattr(self.state, key, value)
        self.state.version += 1

    def status(self) -> dict[str, Any]:
        self._last_watched = time.monotonic()
        return self.state.to_dict()

    def start(self, *, restart: bool = False) -> dict[str, Any]:
        """Start a login unless one is running (``restart``: cancel it and start anew)."""
        if self.running and not restart:
            return self.status()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._codes = asyncio.Queue()
        self.finished_at = None
        self.state = LoginState(version=self.state.version + 1)
        self._set("starting")
        self._last_watched = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="ilinkbot-web-login")
        return self.status()

    async def wait_for_qr(self, seconds: float = QR_WAIT_SECONDS) -> None:
        """Until the first QR code is there (or the login ended), at most ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.state.state == "starting" and self.running and loop.time() < deadline:
            await asyncio.sleep(0.02)

    def submit_code(self, code: str) -> dict[str, Any]:
        """Hand the number shown on the phone to the waiting login. Raises ValueError."""
        code = code.strip().replace(" ", "")
        if not code:
            raise ValueError("empty code: type the number shown on the phone")
        if not code.isdigit() or len(code) > 12:
            raise ValueError("the code is the number shown on the phone (digits only)")
        if not self.running or self.state.state not in ("verify_code", "verify_code_wrong"):
            raise LookupError("no login is waiting for a number")
        self._codes.put_nowait(code)
        self._set("checking_code")
        return self.status()

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # ---- the flow --------------------------------------------------------------------------

    async def _on_event(self, event: LoginEvent) -> None:
        kind = event.kind
        if kind == "qr":
            self._set(
                "wait",
                qr_url=event.ticket.url,
                qr_image=qr_data_url(event.ticket.url),
                qr_number=event.ticket.number,
            )
        elif kind in ("scanned", "verify_code_accepted", "redirect"):
            self._set("scanned")
        elif kind == "verify_code":
            self._set("verify_code_wrong" if event.retry else "verify_code")
        elif kind in ("expired", "verify_blocked"):
            self._set(kind)

    async def _read_code(self, retry: bool) -> str | None:
        return await self._codes.get()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, UNWATCHED_SECONDS / 3))
            if time.monotonic() - self._last_watched > UNWATCHED_SECONDS:
                _log.info("web_login_abandoned", seconds=UNWATCHED_SECONDS)
                raise LoginFailed("abandoned", "nobody watched the login page; start again")

    async def _run(self) -> None:
        svc = self._svc()
        client = svc.anonymous_client()
        try:
            # The store is handed to the flow itself, so the credentials are saved (and older
            # accounts of the same owner retired) exactly as by `ilinkbot login`.
            login = asyncio.create_task(
                run_login(
                    client,
                    svc.store,
                    on_event=self._on_event,
                    read_verify_code=self._read_code,
                    timeout=self.timeout,
                    ref=self.ref,
                )
            )
            watchdog = asyncio.create_task(self._watchdog())
            try:
                await asyncio.wait({login, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (login, watchdog):
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
            if watchdog.done() and not watchdog.cancelled():
                watchdog.result()  # raises LoginFailed("abandoned")
            result = login.result()
            await self._finish(svc, result)
        except LoginFailed as exc:
            _log.info("web_login_failed", reason=exc.reason)
            self._set("failed", reason=exc.reason, error=f"Login failed: {exc}")
        except asyncio.CancelledError:
            self._set("failed", reason="cancelled", error="The login was cancelled.")
            raise
        except Exception as exc:
            _log.exception("web_login_error")
            self._set("failed", reason="error", error=f"Login failed: {type(exc).__name__}: {exc}")
        finally:
            self.finished_at = time.monotonic()

    async def _finish(self, svc: Service, result: LoginResult) -> None:
        store = svc.store
        if result.status == "confirmed":  # run_login stored the credentials
            register_secret(result.token)
            self._set("done", account=result.bot_id, owner=result.owner)
        else:
            from ..accounts import find_account

            acc = await svc.call(find_account, store, result.bot_id) if result.bot_id else None
            if acc is not None:
                await svc.call(store.touch_account, acc.bot_id)
                if self.ref:
                    await svc.call(store.set_account_ref, acc.bot_id, self.ref)
            self._set(
                "already_bound",
                account=acc.bot_id if acc else result.bot_id,
                owner=acc.owner_user_id if acc else result.owner,
            )
        _log.info("web_login_done", status=result.status, account=self.state.account)
        if self.on_done is not None:
            outcome = self.on_done(result)
            if asyncio.iscoroutine(outcome):
                await outcome


class TooManyLogins(Exception):
    """:data:`MAX_LOGINS` logins are running already."""


class UnknownLogin(LookupError):
    """No login with this id (never started here, or finished long ago)."""


class Logins:
    """Several logins at once (the accounts API), each a :class:`WebLogin` under a random id.

    A finished login answers its status for :data:`FINISHED_KEEP_SECONDS`, then is forgotten.
    """

    def __init__(
        self,
        svc: Callable[[], Service],
        *,
        timeout: float,
        on_done: Callable[[LoginResult], Any] | None = None,
    ) -> None:
        self._svc = svc
        self.timeout = timeout
        self.on_done = on_done
        self._logins: dict[str, WebLogin] = {}

    def start(self, ref: str | None) -> tuple[str, WebLogin]:
        self._forget_finished()
        if sum(1 for w in self._logins.values() if w.finished_at is None) >= MAX_LOGINS:
            raise TooManyLogins(f"{MAX_LOGINS} logins are running: finish or wait for one")
        login_id = "lg_" + secrets.token_urlsafe(12)
        web = WebLogin(self._svc, timeout=self.timeout, on_done=self.on_done, ref=ref)
        self._logins[login_id] = web
        web.start()
        return login_id, web

    def get(self, login_id: str) -> WebLogin | None:
        """The login ``login_id``, or None (never existed, or forgotten)."""
        self._forget_finished()
        return self._logins.get(login_id)

    def _forget_finished(self) -> None:
        now = time.monotonic()
        for key, web in list(self._logins.items()):
            if web.finished_at is not None and now - web.finished_at > FINISHED_KEEP_SECONDS:
                del self._logins[key]

    async def aclose(self) -> None:
        for web in list(self._logins.values()):
            await web.aclose()
        self._logins.clear()
