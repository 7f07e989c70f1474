"""The QR login flow (PROTOCOL.md §2), independent of any user interface.

:func:`run_login` drives one login from the first QR code to ``confirmed`` (or
``binded_redirect``) and reports what happens through an event callback, so the CLI and a
web page can share it. The caller supplies how to ask for a verification code.

Nothing here ever starts on its own: only an explicit ``ilinkbot login`` (or a later web
login page) calls it; a background process never does.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from ilinkbot.ilink.client import IlinkClient
from ilinkbot.ilink.log import get_logger
from ilinkbot.ilink.models import QrStatus

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "MAX_QR_CODES",
    "PENDING_LOGIN_TTL",
    "QR_STATUS_TIMEOUT",
    "LoginEvent",
    "LoginFailed",
    "LoginResult",
    "LoginStore",
    "QrCheck",
    "QrTicket",
    "check_once",
    "finish_login",
    "poll_interval",
    "redirect_base",
    "run_login",
]

#: Pause between two status polls (§2.2); ``ILINKBOT_QR_POLL_INTERVAL`` overrides it.
DEFAULT_POLL_INTERVAL = 1.0
#: At most this many QR codes per login, the first one included (§2.4).
MAX_QR_CODES = 3
#: A pending login (``--no-wait``) can be resumed for this many seconds after its QR.
PENDING_LOGIN_TTL = 300.0
#: Client timeout of one status long-poll (§1.7).
QR_STATUS_TIMEOUT = 35.0

_log = get_logger("ilinkbot.login")


def poll_interval() -> float:
    """The pause between polls: ``$ILINKBOT_QR_POLL_INTERVAL`` seconds, else 1 s."""
    raw = os.environ.get("ILINKBOT_QR_POLL_INTERVAL")
    if raw:
        try:
            value = float(raw)
        except ValueError:
            return DEFAULT_POLL_INTERVAL
        if value >= 0:
            return value
    return DEFAULT_POLL_INTERVAL


def redirect_base(current_base: str, redirect_host: str) -> str:
    """The poll base for a ``scaned_but_redirect`` host.

    ``https://host`` when the API base is https (the protocol's rule); otherwise the base's
    own scheme, so that a plain-HTTP sandbox keeps working. A host that already carries a
    scheme is used as is.
    """
    host = redirect_host.strip().rstrip("/")
    if "://" in host:
        return host
    scheme = urlsplit(current_base).scheme.lower() or "https"
    return f"{'https' if scheme == 'https' else scheme}://{host}"


@dataclass(frozen=True)
class QrTicket:
    """One QR code of a login: what to show and where to poll it."""

    qrcode: str  # the opaque login id (passed back to get_qrcode_status)
    url: str  # ``qrcode_img_content``: the text drawn as the QR code, also a link
    poll_base: str  # where its status is polled (changes on ``scaned_but_redirect``)
    issued_at: datetime
    number: int = 1  # 1 for the first code of the login, up to MAX_QR_CODES


@dataclass(frozen=True)
class LoginEvent:
    """Something the user should hear about.

    ``kind`` is one of:

    * ``qr`` - a QR code to show (``ticket``); ``ticket.number`` > 1 means a refresh;
    * ``scanned`` - the phone scanned the code (sent once per login);
    * ``redirect`` - the server moved the poll to ``detail`` (a base URL);
    * ``verify_code`` - the phone shows a number to type (``retry``: the last one was wrong);
    * ``verify_code_accepted`` - the typed number was accepted;
    * ``verify_blocked`` - too many wrong numbers; a new QR code follows if allowed;
    * ``expired`` - the QR code expired; a new one follows if allowed;
    * ``confirmed`` / ``already_bound`` - done (the result follows).
    """

    kind: str
    ticket: QrTicket
    detail: str | None = None
    retry: bool = False


@dataclass(frozen=True)
class LoginResult:
    """A successful login. ``status``: ``confirmed`` or ``already_bound``.

    ``already_bound`` (``binded_redirect``) issues no credentials: the existing ones stay;
    ``bot_id``/``owner`` are filled only when the server named them. ``reconnected``: the
    store already held an account of this owner (a binding that dropped, now renewed).
    """

    status: str
    bot_id: str | None
    owner: str | None
    base_url: str | None
    token: str | None = field(default=None, repr=False)
    qr_codes: int = 1
    reconnected: bool = False


class LoginFailed(Exception):
    """The login did not succeed.

    ``reason``: ``expired`` (QR codes used up), ``verify_code_blocked``, ``timeout``,
    ``no_verify_code`` (nobody typed the number), ``bad_answer`` (confirmed without ids).
    ``ticket`` is the QR code in use when it failed.
    """

    def __init__(self, reason: str, message: str, ticket: QrTicket | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.ticket = ticket


class LoginStore(Protocol):
    """What the flow needs from the store (``store.Store`` provides it)."""

    def local_tokens(self, limit: int = 10) -> list[str]: ...

    def save_account(
        self, bot_id: str, *, token: str, base_url: str | None, owner_user_id: str | None
    ) -> Any: ...


EventHandler = Callable[[LoginEvent], Awaitable[None] | None]
VerifyCodeReader = Callable[[bool], Awaitable[str | None]]


def _retire_same_owner(store: Any, bot_id: str, owner: str | None, ref: str | None = None) -> None:
    """One WeChat user maps to one bot (as the official client does, §2.5): older accounts
    of the same owner are logged out, so context tokens are never ambiguous. So are older
    accounts bound for the same platform user (``ref``, serve's accounts API): a new login
    with the same ref is a reconnect. Unlike the official client, their history (users,
    inbox, outbox) is kept, and what they had not sent yet (including pushes that met -14)
    moves to the new account, held until each user writes to it, with their aliases
    (``Store.hand_over``, one transaction)."""
    if not hasattr(store, "hand_over"):
        return
    older = [
        acc.bot_id
        for acc in store.list_accounts()
        if acc.bot_id != bot_id
        and acc.state != "logged_out"
        and ((owner and acc.owner_user_id == owner) or (ref and getattr(acc, "ref", None) == ref))
    ]
    held = store.hand_over(bot_id, older)
    for old in older:
        _log.info("older_account_logged_out", bot_id=old, replaced_by=bot_id)
    if held:
        _log.info("kept_messages_held", bot_id=bot_id, count=held)


def finish_login(
    store: LoginStore | None, status: QrStatus, ticket: QrTicket, *, ref: str | None = None
) -> LoginResult:
    """Store the credentials of a ``confirmed`` status (connect, or reconnect when this
    owner, or this platform user ``ref``, was bound before) and retire the older accounts.
    Every way of logging in ends here, so they all behave alike."""
    if not status.ilink_bot_id or not status.bot_token:
        raise LoginFailed(
            "bad_answer", "login confirmed but the server sent no bot id or token", ticket
        )
    reconnected = False
    if store is not None:
        owner = status.ilink_user_id
        listing = getattr(store, "list_accounts", None)
        known = listing() if owner and listing is not None else []
        reconnected = any(
            acc.owner_user_id == owner or (ref and getattr(acc, "ref", None) == ref)
            for acc in known
        )
        store.save_account(
            status.ilink_bot_id,
            token=status.bot_token,
            base_url=status.baseurl,
            owner_user_id=owner,
        )
        if ref and hasattr(store, "set_account_ref"):
            store.set_account_ref(status.ilink_bot_id, ref)
        _retire_same_owner(store, status.ilink_bot_id, owner, ref)
    _log.info("login_confirmed", bot_id=status.ilink_bot_id, reconnected=reconnected)
    return LoginResult(
        status="confirmed",
        bot_id=status.ilink_bot_id,
        owner=status.ilink_user_id,
        base_url=status.baseurl,
        token=status.bot_token,
        qr_codes=ticket.number,
        reconnected=reconnected,
    )


@dataclass(frozen=True)
class QrCheck:
    """One status check of a QR code (:func:`check_once`).

    ``status``: the server's word (``wait``, ``scaned``, ``need_verifycode``, ``expired``,
    ``verify_code_blocked``, ``confirmed``, ``binded_redirect``). ``ticket``: the code with
    its poll base (moved on ``scaned_but_redirect``). ``result``: set when done."""

    status: str
    ticket: QrTicket
    result: LoginResult | None = None


async def check_once(
    client: IlinkClient,
    store: LoginStore | None,
    ticket: QrTicket,
    *,
    verify_code: str | None = None,
    timeout: float = QR_STATUS_TIMEOUT,
) -> QrCheck:
    """Ask once for ``ticket``'s status (no loop, no new QR code: the caller decides).

    On ``confirmed`` the credentials are stored as :func:`run_login` does."""
    status = await client.get_qrcode_status(
        ticket.qrcode,
        verify_code=verify_code or None,
        base_url=ticket.poll_base,
        timeout=max(0.1, timeout),
    )
    kind = status.status
    if kind == "confirmed":
        return QrCheck(kind, ticket, finish_login(store, status, ticket))
    if kind == "binded_redirect":
        result = LoginResult(
            status="already_bound",
            bot_id=status.ilink_bot_id,
            owner=status.ilink_user_id,
            base_url=status.baseurl,
            qr_codes=ticket.number,
        )
        return QrCheck(kind, ticket, result)
    if kind == "scaned_but_redirect" and status.redirect_host:
        ticket = replace(ticket, poll_base=redirect_base(ticket.poll_base, status.redirect_host))
        kind = "scaned"
    return QrCheck(kind, ticket)


async def _notify(on_event: EventHandler | None, event: LoginEvent) -> None:
    if on_event is None:
        return
    outcome = on_event(event)
    if inspect.isawaitable(outcome):
        await outcome


async def run_login(
    client: IlinkClient,
    store: LoginStore | None = None,
    *,
    on_event: EventHandler | None = None,
    read_verify_code: VerifyCodeReader | None = None,
    timeout: float = 480.0,
    max_qr: int = MAX_QR_CODES,
    interval: float | None = None,
    resume: QrTicket | None = None,
    local_tokens: list[str] | None = None,
    ref: str | None = None,
) -> LoginResult:
    """Run one QR login to its end.

    ``client`` talks to the QR base (its ``base_url``; new codes are always fetched there).
    ``store`` supplies ``local_token_list`` and receives the credentials on ``confirmed``
    (pass ``local_tokens`` instead and no store to keep everything in memory).
    ``read_verify_code(retry)`` returns the number shown on the phone, or None to give up.
    ``timeout`` bounds the whole login in seconds (at least 1 s). ``resume`` continues
    polling an already issued code instead of fetching a new one (its ``number`` counts
    towards ``max_qr``). ``ref`` (a platform's own user id) is kept with the new account, and
    older accounts with the same ref are replaced like those of the same owner.
    Raises :class:`LoginFailed`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(float(timeout), 1.0)
    pause = poll_interval() if interval is None else max(0.0, interval)

    def remaining() -> float:
        return deadline - loop.time()

    def tokens() -> list[str]:
        if local_tokens is not None:
            return [t for t in local_tokens if t][:10]
        return store.local_tokens(10) if store is not None else []

    async def new_ticket(number: int, poll_base: str) -> QrTicket:
        qr = await asyncio.wait_for(client.get_bot_qrcode(tokens()), max(remaining(), 0.1))
        ticket = QrTicket(
            qrcode=qr.qrcode,
            url=qr.qrcode_img_content,
            poll_base=poll_base,
            issued_at=datetime.now(UTC),
            number=number,
        )
        _log.debug("qr_issued", number=number)
        await _notify(on_event, LoginEvent("qr", ticket))
        return ticket

    try:
        if resume is not None:
            ticket = resume
        else:
            ticket = await new_ticket(1, client.base_url)
    except TimeoutError:
        raise LoginFailed("timeout", "login timed out before a QR code arrived") from None

    pending_code: str | None = None
    said_scanned = False
    while True:
        left = remaining()
        if left <= 0:
            raise LoginFailed("timeout", "login timed out: nobody confirmed the QR code", ticket)
        status: QrStatus = await client.get_qrcode_status(
            ticket.qrcode,
            verify_code=pending_code,
            base_url=ticket.poll_base,
            timeout=max(0.1, min(QR_STATUS_TIMEOUT, left)),
        )
        kind = status.status
        _log.debug("qr_status", status=kind, number=ticket.number)

        if kind == "confirmed":
            result = finish_login(store, status, ticket, ref=ref)
            await _notify(on_event, LoginEvent("confirmed", ticket, status.ilink_bot_id))
            return result
        if kind == "binded_redirect":
            _log.info("login_already_bound", bot_id=status.ilink_bot_id)
            await _notify(on_event, LoginEvent("already_bound", ticket, status.ilink_bot_id))
            return LoginResult(
                status="already_bound",
                bot_id=status.ilink_bot_id,
                owner=status.ilink_user_id,
                base_url=status.baseurl,
                qr_codes=ticket.number,
            )
        if kind in ("scaned", "scaned_but_redirect"):
            if pending_code is not None and kind == "scaned":
                pending_code = None
                await _notify(on_event, LoginEvent("verify_code_accepted", ticket))
            if not said_scanned:
                said_scanned = True
                await _notify(on_event, LoginEvent("scanned", ticket))
            if kind == "scaned_but_redirect" and status.redirect_host:
                base = redirect_base(ticket.poll_base, status.redirect_host)
                if base != ticket.poll_base:
                    ticket = replace(ticket, poll_base=base)
                    _log.info("qr_redirect", poll_base=base)
                    await _notify(on_event, LoginEvent("redirect", ticket, base))
        elif kind == "need_verifycode":
            retry = pending_code is not None
            await _notify(on_event, LoginEvent("verify_code", ticket, retry=retry))
            code: str | None = None
            if read_verify_code is not None:
                try:
                    code = await asyncio.wait_for(read_verify_code(retry), max(remaining(), 0.1))
                except TimeoutError:
                    raise LoginFailed(
                        "timeout", "login timed out waiting for the verification number", ticket
                    ) from None
            code = code.strip() if code else None
            if not code:
                raise LoginFailed(
                    "no_verify_code",
                    "the phone shows a number to type, and none was given",
                    ticket,
                )
            pending_code = code
            continue  # poll again right away with the code (§2.2)
        elif kind in ("expired", "verify_code_blocked"):
            pending_code = None
            blocked = kind == "verify_code_blocked"
            await _notify(on_event, LoginEvent("verify_blocked" if blocked else "expired", ticket))
            if ticket.number + 1 > max_qr:
                if blocked:
                    raise LoginFailed(
                        "verify_code_blocked",
                        "too many wrong verification numbers and no QR codes left",
                        ticket,
                    )
                raise LoginFailed(
                    "expired", f"the QR code expired {ticket.number} times; giving up", ticket
                )
            try:
                # Refreshes go to the fixed QR base; polling stays where it was (§2.3).
                ticket = await new_ticket(ticket.number + 1, ticket.poll_base)
            except TimeoutError:
                raise LoginFailed(
                    "timeout", "login timed out fetching a new QR code", ticket
                ) from None
        # "wait" and unknown statuses: keep polling.

        if pause > 0:
            left = remaining()
            if left <= 0:
                raise LoginFailed(
                    "timeout", "login timed out: nobody confirmed the QR code", ticket
                )
            await asyncio.sleep(min(pause, left))
