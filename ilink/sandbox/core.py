"""The sandbox: a strict emulator of the ilink bot API and its CDN.

Every rule of PROTOCOL.md §1.3-1.5, §2, §3, §5, §7 and the server policies of §8.4 is
checked. A request that breaks a rule is answered HTTP 200 ``{}`` and has no effect;
the reason is recorded in :meth:`Sandbox.violations`. Policy refusals (reply window, quota,
forced ``ret``) are not violations; they are recorded in :meth:`Sandbox.refusals`.

:class:`Sandbox` is the public face. Its parts live beside it: ``state`` (what is
remembered, under one lock), ``rules`` (request rules), ``faults``, ``login`` (QR),
``inbound`` (users' messages, getupdates), ``outbound`` (sendmessage, typing), ``cdn``
and ``router``; ``admin`` serves the ``/_sandbox/`` routes.
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any, Final

from .admin import handle_admin
from .cdn import Cdn
from .faults import Faults, check_faults
from .inbound import Inbound
from .login import Login
from .model import (
    FAULT_ENDPOINTS,
    FAULT_KINDS,
    ImageKeyForm,
    SandboxError,
    SandboxRequest,
    SandboxResponse,
)
from .outbound import Outbound
from .router import Router
from .state import State

if TYPE_CHECKING:
    import httpx

__all__ = [
    "FAULT_ENDPOINTS",
    "FAULT_KINDS",
    "ImageKeyForm",
    "Sandbox",
    "SandboxError",
    "SandboxRequest",
    "SandboxResponse",
    "check_faults",
]


class _UNSET:
    """Marker for :meth:`Sandbox.configure` arguments left unchanged."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _UNSET()


class Sandbox:
    """In-memory ilink API + CDN with the real server's rules (see module docstring)."""

    def __init__(
        self,
        quota: int = 10,
        window_seconds: float = 86400,
        longpoll_seconds: float = 25.0,
        qr_poll_seconds: float = 25.0,
        api_base: str = "http://ilink.sandbox",
        cdn_base: str = "http://ilink.sandbox/c2c",
        redirect_host: str = "idc2.ilink.sandbox",
    ) -> None:
        self._state = st = State(
            (quota, window_seconds, longpoll_seconds, qr_poll_seconds),
            api_base.rstrip("/"),
            cdn_base.rstrip("/"),
            redirect_host,
        )
        self._faults = Faults(st)
        self._login = Login(st)
        self._cdn = Cdn(st)
        self._inbound = Inbound(st, self._cdn)
        self._router = Router(st, self._faults, self._login, self._inbound, Outbound(st), self._cdn)
        self._admin = functools.partial(handle_admin, self)

    # ------------------------------------------------------------------ set-up

    def reset(self) -> None:
        """Forget everything (bots, QR codes, messages, records, faults, clock offset)."""
        with self._state.lock:
            dropped = list(self._state.bots.values())
            self._state.clear()
        self._state.qr_notifier.notify()
        for bot in dropped:  # their long polls answer -14 now
            bot.updates.notify()

    @property
    def api_base(self) -> str:
        return self._state.api_base

    @property
    def cdn_base(self) -> str:
        return self._state.cdn_base

    @property
    def redirect_host(self) -> str:
        return self._state.redirect_host

    def set_bases(
        self, api_base: str, cdn_base: str | None = None, redirect_host: str | None = None
    ) -> None:
        """Point the URLs the sandbox hands out (``baseurl``, CDN URLs) at a real server."""
        st = self._state
        with st.lock:
            st.api_base = api_base.rstrip("/")
            st.cdn_base = (cdn_base or st.api_base + "/c2c").rstrip("/")
            if redirect_host is not None:
                st.redirect_host = redirect_host

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process ``httpx.AsyncBaseTransport`` serving this sandbox."""
        from .transport import SandboxTransport

        return SandboxTransport(self)

    # ------------------------------------------------------------------ settings
    # Plain attributes once; kept assignable (``sb.qr_poll_seconds = 5``). See configure().

    @property
    def quota(self) -> int:
        return self._state.quota

    @quota.setter
    def quota(self, value: int) -> None:
        self._state.quota = value

    @property
    def window_seconds(self) -> float:
        return self._state.window_seconds

    @window_seconds.setter
    def window_seconds(self, value: float) -> None:
        self._state.window_seconds = value

    @property
    def longpoll_seconds(self) -> float:
        return self._state.longpoll_seconds

    @longpoll_seconds.setter
    def longpoll_seconds(self, value: float) -> None:
        self._state.longpoll_seconds = value

    @property
    def qr_poll_seconds(self) -> float:
        return self._state.qr_poll_seconds

    @qr_poll_seconds.setter
    def qr_poll_seconds(self, value: float) -> None:
        self._state.qr_poll_seconds = value

    @property
    def omit_message_id(self) -> bool:
        return self._state.omit_message_id

    @omit_message_id.setter
    def omit_message_id(self, value: bool) -> None:
        self._state.omit_message_id = value

    @property
    def force_ret(self) -> int | None:
        return self._state.force_ret

    @force_ret.setter
    def force_ret(self, value: int | None) -> None:
        self._state.force_ret = value

    @property
    def upload_full_url(self) -> bool:
        return self._state.upload_full_url

    @upload_full_url.setter
    def upload_full_url(self, value: bool) -> None:
        self._state.upload_full_url = value

    def configure(
        self,
        *,
        quota: int | _UNSET = UNSET,
        window_seconds: float | _UNSET = UNSET,
        omit_message_id: bool | _UNSET = UNSET,
        force_ret: int | _UNSET | None = UNSET,
        upload_full_url: bool | _UNSET = UNSET,
        longpoll_seconds: float | _UNSET = UNSET,
        qr_poll_seconds: float | _UNSET = UNSET,
    ) -> dict[str, Any]:
        """Change server behaviour; arguments not given stay as they are.

        ``omit_message_id=True``: risk control, sends answer ``{"ret":0}`` without a
        ``message_id`` and are not delivered. ``force_ret=-2``: every send answers that
        ``ret`` without delivery until ``force_ret=None``. ``upload_full_url=False``:
        getuploadurl answers only ``upload_param``.
        """
        st = self._state
        with st.lock:
            if not isinstance(quota, _UNSET):
                st.quota = int(quota)
            if not isinstance(window_seconds, _UNSET):
                st.window_seconds = float(window_seconds)
            if not isinstance(omit_message_id, _UNSET):
                st.omit_message_id = bool(omit_message_id)
            if not isinstance(force_ret, _UNSET):
                st.force_ret = None if force_ret is None else int(force_ret)
            if not isinstance(upload_full_url, _UNSET):
                st.upload_full_url = bool(upload_full_url)
            if not isinstance(longpoll_seconds, _UNSET):
                st.longpoll_seconds = float(longpoll_seconds)
            if not isinstance(qr_poll_seconds, _UNSET):
                st.qr_poll_seconds = float(qr_poll_seconds)
            config = st.config()
        st.qr_notifier.notify()
        return config

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Sandbox clock: wall clock plus everything :meth:`advance` added."""
        return self._state.now()

    def advance(self, seconds: float) -> float:
        """Move the sandbox clock forward; returns the new time."""
        st = self._state
        with st.lock:
            st.offset += float(seconds)
            now = st.now()
        st.qr_notifier.notify()  # QR codes expire on the sandbox clock
        return now

    # ------------------------------------------------------------------ records

    def violations(self) -> list[dict[str, Any]]:
        """``{"endpoint", "rule", "detail", "time"}`` for every dropped/refused request."""
        with self._state.lock:
            return copy.deepcopy(self._state.violations)

    def refusals(self) -> list[dict[str, Any]]:
        """Policy answers that are not violations: ret -2, -14, risk control, forced ret."""
        with self._state.lock:
            return copy.deepcopy(self._state.refusals)

    def delivered(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """What users received, in order (optionally only ``user_id``)."""
        with self._state.lock:
            return [
                dict(d) for d in self._state.delivered if user_id is None or d["user_id"] == user_id
            ]

    def typing_events(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return [dict(e) for e in self._state.typing]

    def faults_fired(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return [dict(e) for e in self._state.faults_fired]

    def bots(self) -> list[dict[str, Any]]:
        """Bots in creation order: id, token, owner user id, online, expired."""
        with self._state.lock:
            return [
                {
                    "bot_id": b.bot_id,
                    "bot_token": b.token,
                    "user_id": b.owner,
                    "online": b.online,
                    "expired": b.expired,
                    "created_at": b.created_at,
                }
                for b in self._state.bots.values()
            ]

    def qr_codes(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return self._login.summaries()

    def state(self) -> dict[str, Any]:
        """A JSON-able summary: config, bots with their users' reply windows, QR codes."""
        st = self._state
        with st.lock:
            now = st.now()
            bots = []
            for b in st.bots.values():
                users = []
                for u in b.users.values():
                    closes = u.last_message_at + st.window_seconds
                    users.append(
                        {
                            "user_id": u.user_id,
                            "last_message_at": u.last_message_at,
                            "sends_since": u.sends_since,
                            "quota_left": max(st.quota - u.sends_since, 0),
                            "window_open": now < closes and u.sends_since < st.quota,
                            "window_closes_at": closes,
                        }
                    )
                bots.append(
                    {
                        "bot_id": b.bot_id,
                        "user_id": b.owner,
                        "online": b.online,
                        "expired": b.expired,
                        "queued": len(b.inbox),
                        "acknowledged": b.acked,
                        "users": users,
                    }
                )
            return {
                "now": now,
                "api_base": st.api_base,
                "cdn_base": st.cdn_base,
                "redirect_host": st.redirect_host,
                "config": {
                    "quota": st.quota,
                    "window_seconds": st.window_seconds,
                    "longpoll_seconds": st.longpoll_seconds,
                    "qr_poll_seconds": st.qr_poll_seconds,
                    "omit_message_id": st.omit_message_id,
                    "force_ret": st.force_ret,
                    "upload_full_url": st.upload_full_url,
                },
                "bots": bots,
                "qrcodes": self._login.summaries(),
                "counts": {
                    "delivered": len(st.delivered),
                    "violations": len(st.violations),
                    "refusals": len(st.refusals),
                    "typing": len(st.typing),
                },
            }

    # ------------------------------------------------------------------ faults

    def set_faults(
        self,
        endpoint: str = "*",
        http_5xx_rate: float = 0.0,
        reset_rate: float = 0.0,
        reset_after_processing: float = 0.5,
        delay_rate: float = 0.0,
        delay_seconds: float = 2.0,
        seed: int | None = None,
    ) -> None:
        """Random faults for ``endpoint`` (``"*"`` = every API and CDN endpoint).

        Per request: with ``http_5xx_rate`` answer 500 unprocessed; else with
        ``reset_rate`` reset the connection, after processing with probability
        ``reset_after_processing``; else with ``delay_rate`` wait ``delay_seconds``.
        """
        self._faults.set(
            endpoint,
            http_5xx_rate,
            reset_rate,
            reset_after_processing,
            delay_rate,
            delay_seconds,
            seed,
        )

    def queue_faults(self, endpoint: str, faults: list[str]) -> None:
        """Deterministic next faults: ``"500"``, ``"reset_before"``, ``"reset_after"``,
        ``"delay"`` (or ``"delay:<seconds>"``), consumed one per request, in order."""
        self._faults.queue(endpoint, faults)

    def clear_faults(self) -> None:
        self._faults.clear()

    # ------------------------------------------------------------------ the phone

    def scan(self, qrcode: str | None = None) -> dict[str, Any]:
        """The phone scanned the newest QR code (``wait`` -> ``scaned``)."""
        return self._login.scan(qrcode)

    def confirm(
        self, user_id: str = "owner@im.wechat", qrcode: str | None = None
    ) -> dict[str, Any]:
        """The user confirmed on the phone: mint a bot (``confirmed``) or, when the QR's
        ``local_token_list`` holds a live token of a bot already bound to ``user_id``,
        answer ``binded_redirect`` and return that bot. Returns
        ``{"status", "bot_id", "bot_token", "user_id"}``."""
        return self._login.confirm(user_id, qrcode)

    def expire_qr(self, qrcode: str | None = None) -> None:
        self._login.expire(qrcode)

    def require_verify_code(self, code: str, qrcode: str | None = None) -> None:
        """The server wants the number shown on the phone: status ``need_verifycode``
        until a poll carries ``verify_code=code`` (3 wrong ones block the QR)."""
        self._login.require_verify_code(code, qrcode)

    def redirect(self, qrcode: str | None = None) -> None:
        """The scanning account lives in the other IDC: the API host answers
        ``scaned_but_redirect`` from now on; the real status only on the redirect host."""
        self._login.redirect(qrcode)

    def block_verify(self, qrcode: str | None = None) -> None:
        self._login.block_verify(qrcode)

    # ------------------------------------------------------------------ users

    def user_says(
        self,
        user_id: str,
        text: str | None = None,
        *,
        image: bytes | None = None,
        file: tuple[str, bytes] | None = None,
        video: bytes | None = None,
        voice_text: str | None = None,
        image_key_form: ImageKeyForm = "hex",
        bot_id: str | None = None,
    ) -> dict[str, Any]:
        """Inject what ``user_id`` writes to a logged-in bot.

        Without ``bot_id`` the bot is the one live bot ``user_id`` owns or already wrote
        to, else the only live bot; several candidates, or none, raise
        :class:`SandboxError`, as does a ``bot_id`` whose session expired.

        Issues a fresh ``context_token``, (re)opens the user's reply window and queues the
        ``WeixinMessage`` for getupdates; returns a copy of it.
        """
        return self._inbound.user_says(
            user_id,
            text,
            image=image,
            file=file,
            video=video,
            voice_text=voice_text,
            image_key_form=image_key_form,
            bot_id=bot_id,
        )

    def expire_session(self, bot_id: str | None = None) -> None:
        """Make the bot's token stale (None = every bot): authenticated calls answer -14."""
        self._inbound.expire_session(bot_id)

    def cdn_object(self, encrypted_query_param: str) -> bytes | None:
        """The stored CDN blob for a download parameter (ciphertext), if any."""
        return self._cdn.object(encrypted_query_param)

    # ------------------------------------------------------------------ serving

    async def handle(self, req: SandboxRequest) -> SandboxResponse:
        """Answer one request (both the in-process transport and the server use this)."""
        return await self._router.handle(req, self._admin)
