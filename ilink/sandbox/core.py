"""Sandbox state and rules: a strict emulator of the ilink bot API and its CDN.

Every rule of PROTOCOL.md §1.3-1.5, §2, §3, §5, §7 and the server policies of §8.4 is
checked here. A request that breaks a rule is answered HTTP 200 ``{}`` and has no effect;
the reason is recorded in :meth:`Sandbox.violations`. Policy refusals (reply window, quota,
forced ``ret``) are not violations; they are recorded in :meth:`Sandbox.refusals`.

The state is guarded by one :class:`threading.Lock` so that tests can drive the admin
API from their own thread while a :class:`~ilink.sandbox.server.SandboxServer` thread
serves requests. Long polls wait on a cross-thread, cross-event-loop notifier.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import math
import random
import re
import secrets
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from ilinkbot.ilink.log import get_logger
from ilinkbot.ilink.wire import dumps, encode_query_value, sanitize_bot_agent

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

log = get_logger("ilink.sandbox")

ImageKeyForm = Literal["hex", "base64_raw", "base64_hex", "none"]

#: Endpoint names accepted by :meth:`Sandbox.set_faults` / :meth:`Sandbox.queue_faults`.
FAULT_ENDPOINTS: Final = frozenset(
    {
        "get_bot_qrcode",
        "get_qrcode_status",
        "getupdates",
        "sendmessage",
        "getuploadurl",
        "getconfig",
        "sendtyping",
        "notifystart",
        "notifystop",
        "cdn_upload",
        "cdn_download",
        "*",
    }
)
#: Fault names accepted by :meth:`Sandbox.queue_faults` (``"delay:<seconds>"`` too).
FAULT_KINDS: Final = frozenset({"500", "400", "reset_before", "reset_after", "delay"})

QR_TTL_SECONDS: Final = 300.0
MAX_TEXT_BYTES: Final = 16 * 1024
UIN_MEMORY: Final = 10_000
LONGPOLLING_TIMEOUT_MS: Final = 35_000
MAX_WRONG_VERIFY_CODES: Final = 3

# endpoint path (after /ilink/bot/) -> (fault name, method, authenticated)
_API: Final[dict[str, tuple[str, str, bool]]] = {
    "get_bot_qrcode": ("get_bot_qrcode", "POST", False),
    "get_qrcode_status": ("get_qrcode_status", "GET", False),
    "getupdates": ("getupdates", "POST", True),
    "sendmessage": ("sendmessage", "POST", True),
    "getuploadurl": ("getuploadurl", "POST", True),
    "getconfig": ("getconfig", "POST", True),
    "sendtyping": ("sendtyping", "POST", True),
    "msg/notifystart": ("notifystart", "POST", True),
    "msg/notifystop": ("notifystop", "POST", True),
}

_ITEM_KEYS: Final[dict[int, str]] = {
    1: "text_item",
    2: "image_item",
    3: "voice_item",
    4: "file_item",
    5: "video_item",
    11: "tool_call_start_item",
    12: "tool_call_result_item",
}
_SENDABLE_TYPES: Final = frozenset({1, 2, 4, 5, 11, 12})
_KIND: Final[dict[int, str]] = {
    1: "text",
    2: "image",
    3: "voice",
    4: "file",
    5: "video",
    11: "tool_call_start",
    12: "tool_call_result",
}
_MEDIA_TYPE_OF_ITEM: Final[dict[int, int]] = {2: 1, 5: 2, 4: 3}
_TERMINAL_QR: Final = frozenset({"confirmed", "binded_redirect", "expired", "verify_code_blocked"})

_HEX32: Final = re.compile(r"^[0-9a-f]{32}$")
_HEX32_ANYCASE: Final = re.compile(r"^[0-9a-fA-F]{32}$")
_DECIMAL: Final = re.compile(r"^(0|[1-9][0-9]*)$")


def check_faults(faults: list[str]) -> None:
    """Raise ``ValueError`` unless every entry is a fault :meth:`Sandbox.queue_faults` knows."""
    for fault in faults:
        kind, colon, arg = fault.partition(":")
        if kind not in FAULT_KINDS or (colon and kind != "delay"):
            raise ValueError(f"unknown fault {fault!r}")
        if colon:
            try:
                seconds = float(arg)
            except ValueError:
                seconds = math.nan
            if not 0 <= seconds < math.inf:
                raise ValueError(f"fault {fault!r}: the delay is not a number of seconds")


class SandboxError(Exception):
    """An admin call that cannot be honoured (no bot, no QR code, expired QR ...)."""


class _Violation(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


def _need(cond: object, rule: str, detail: str) -> None:
    if not cond:
        raise _Violation(rule, detail)


def _is_int(value: object) -> bool:
    return type(value) is int


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _has_null(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


@dataclass
class SandboxRequest:
    """One HTTP request as seen by the sandbox (transport independent)."""

    method: str
    target: str  # path plus optional ``?query``, still percent-encoded
    headers: list[tuple[str, str]]  # names in any case
    body: bytes = b""
    via_redirect: bool = False  # arrived on the redirect (second IDC) host
    framing_error: str | None = None  # body length disagreed with Content-Length


@dataclass
class SandboxResponse:
    """What to answer; ``reset`` means: answer nothing, reset the connection."""

    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    reset: bool = False

    @classmethod
    def json(cls, obj: Any, status: int = 200) -> SandboxResponse:
        return cls(status, [("Content-Type", "application/json")], dumps(obj))

    @classmethod
    def text(cls, text: str, status: int, content_type: str = "text/plain") -> SandboxResponse:
        return cls(status, [("Content-Type", f"{content_type}; charset=utf-8")], text.encode())


# ---------------------------------------------------------------------------- crypto


def _aes_encrypt(key: bytes, plain: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def _aes_decrypt(key: bytes, cipher: bytes) -> bytes:
    """Raise ``ValueError`` when the ciphertext is not a valid PKCS7 block sequence."""
    if not cipher or len(cipher) % 16:
        raise ValueError("ciphertext is not a multiple of 16 bytes")
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    data = dec.update(cipher) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(data) + unpadder.finalize()


def _opaque(nbytes: int = 48) -> str:
    """An opaque standard-base64 parameter that always holds ``+`` and ``/``.

    Real CDN parameters are base64; a client that forgets to percent-encode them in a
    query string corrupts ``+`` into a space and must fail here as it would there.
    """
    while True:
        value = base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")
        if "+" in value and "/" in value:
            return value


def _b64hex(key: bytes) -> str:
    """``media.aes_key`` as the official client writes it: base64 of the hex text."""
    return base64.b64encode(key.hex().encode("ascii")).decode("ascii")


def _new_uint64_id() -> int:
    return secrets.randbelow(2**63 - 2**53) + 2**53 + 1


# ---------------------------------------------------------------------------- state


@dataclass
class _Qr:
    qrcode: str
    issued_at: float
    local_tokens: list[str]
    status: str = "wait"
    redirected: bool = False
    verify_code: str | None = None
    wrong_codes: int = 0
    user_id: str | None = None
    bot_id: str | None = None
    answered: dict[bool, str] = field(default_factory=dict)


@dataclass
class _User:
    user_id: str
    session_id: str
    tokens: list[str] = field(default_factory=list)
    last_message_at: float = 0.0
    sends_since: int = 0
    typing_ticket: str | None = None


@dataclass
class _Bot:
    bot_id: str
    token: str
    owner: str
    created_at: float
    tag: bytes
    expired: bool = False
    online: bool | None = None
    inbox: list[dict[str, Any]] = field(default_factory=list)
    acked: int = 0
    seq: int = 0
    users: dict[str, _User] = field(default_factory=dict)
    client_ids: dict[str, int] = field(default_factory=dict)
    # Wakes only this bot's long polls: a message for one bot must not stir every waiter.
    updates: _Notifier = field(default_factory=lambda: _Notifier())


@dataclass
class _Upload:
    param: str
    bot_id: str
    filekey: str
    media_type: int
    to_user_id: str
    rawsize: int
    rawfilemd5: str
    filesize: int
    key: bytes
    download_param: str | None = None


@dataclass
class _CdnObject:
    ciphertext: bytes
    key: bytes | None
    plain_size: int
    sha256: str
    upload: _Upload | None = None  # None for media a user sent


@dataclass
class _FaultSpec:
    http_5xx_rate: float = 0.0
    reset_rate: float = 0.0
    reset_after_processing: float = 0.5
    delay_rate: float = 0.0
    delay_seconds: float = 2.0
    rng: random.Random = field(default_factory=random.Random)


class _Notifier:
    """Wake long polls in any thread / event loop when what they wait on changed.

    The sandbox has one for login (QR status) polls and one per bot for its getupdates.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gen = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def generation(self) -> int:
        with self._lock:
            return self._gen

    def notify(self) -> None:
        with self._lock:
            self._gen += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    async def wait(self, generation: int, timeout: float) -> None:
        """Return when the generation moved past ``generation`` or after ``timeout``."""
        item = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._gen != generation:
                return
            self._waiters.add(item)
        try:
            await asyncio.wait_for(item[1].wait(), max(timeout, 0.0))
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(item)


class _UNSET:
    """Marker for :meth:`Sandbox.configure` arguments left unchanged."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _UNSET()


class _Headers:
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._map: dict[str, list[str]] = {}
        for name, value in pairs:
            self._map.setdefault(name.lower(), []).append(value)

    def one(self, name: str) -> str | None:
        values = self._map.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise _Violation("header.duplicate", f"{name} sent {len(values)} times")
        return values[0]


# ---------------------------------------------------------------------------- sandbox


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
        self._lock = threading.Lock()
        self._qr_notifier = _Notifier()
        self._defaults = (quota, window_seconds, longpoll_seconds, qr_poll_seconds)
        self._api_base = api_base.rstrip("/")
        self._cdn_base = cdn_base.rstrip("/")
        self._redirect_host = redirect_host
        self._reset_locked()

    # ------------------------------------------------------------------ set-up

    def _reset_locked(self) -> None:
        quota, window, longpoll, qr_poll = self._defaults
        self.quota = quota
        self.window_seconds = float(window)
        self.longpoll_seconds = float(longpoll)
        self.qr_poll_seconds = float(qr_poll)
        self.omit_message_id = False
        self.force_ret: int | None = None
        self.upload_full_url = True
        self._offset = 0.0
        self._qrs: dict[str, _Qr] = {}
        self._newest_qr: str | None = None
        self._bots: dict[str, _Bot] = {}
        self._by_token: dict[str, _Bot] = {}
        self._ctx_owner: dict[str, tuple[str, str]] = {}
        self._uploads: dict[str, _Upload] = {}
        self._cdn: dict[str, _CdnObject] = {}
        self._uins: deque[str] = deque()
        self._uin_set: set[str] = set()
        self._delivered: list[dict[str, Any]] = []
        self._violations: list[dict[str, Any]] = []
        self._refusals: list[dict[str, Any]] = []
        self._typing: list[dict[str, Any]] = []
        self._faults_fired: list[dict[str, Any]] = []
        self._fault_specs: dict[str, _FaultSpec] = {}
        self._fault_queue: dict[str, deque[str]] = {}

    def reset(self) -> None:
        """Forget everything (bots, QR codes, messages, records, faults, clock offset)."""
        with self._lock:
            dropped = list(self._bots.values())
            self._reset_locked()
        self._qr_notifier.notify()
        for bot in dropped:  # their long polls answer -14 now
            bot.updates.notify()

    @property
    def api_base(self) -> str:
        return self._api_base

    @property
    def cdn_base(self) -> str:
        return self._cdn_base

    @property
    def redirect_host(self) -> str:
        return self._redirect_host

    def set_bases(
        self, api_base: str, cdn_base: str | None = None, redirect_host: str | None = None
    ) -> None:
        """Point the URLs the sandbox hands out (``baseurl``, CDN URLs) at a real server."""
        with self._lock:
            self._api_base = api_base.rstrip("/")
            self._cdn_base = (cdn_base or self._api_base + "/c2c").rstrip("/")
            if redirect_host is not None:
                self._redirect_host = redirect_host

    def transport(self) -> httpx.AsyncBaseTransport:
        """An in-process ``httpx.AsyncBaseTransport`` serving this sandbox."""
        from .transport import SandboxTransport

        return SandboxTransport(self)

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        """Sandbox clock: wall clock plus everything :meth:`advance` added."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> float:
        """Move the sandbox clock forward; returns the new time."""
        with self._lock:
            self._offset += float(seconds)
            now = self.now()
        self._qr_notifier.notify()
        return now

    # ------------------------------------------------------------------ records

    def _violate(self, endpoint: str, rule: str, detail: str) -> None:
        self._violations.append(
            {"endpoint": endpoint, "rule": rule, "detail": detail, "time": self.now()}
        )
        log.warning("sandbox.violation", endpoint=endpoint, rule=rule, detail=detail)

    def _refuse(self, endpoint: str, reason: str, **extra: Any) -> None:
        entry = {"endpoint": endpoint, "reason": reason, "time": self.now(), **extra}
        self._refusals.append(entry)
        log.info("sandbox.refusal", endpoint=endpoint, reason=reason)

    def violations(self) -> list[dict[str, Any]]:
        """``{"endpoint", "rule", "detail", "time"}`` for every dropped/refused request."""
        with self._lock:
            return copy.deepcopy(self._violations)

    def refusals(self) -> list[dict[str, Any]]:
        """Policy answers that are not violations: ret -2, -14, risk control, forced ret."""
        with self._lock:
            return copy.deepcopy(self._refusals)

    def delivered(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """What users received, in order (optionally only ``user_id``)."""
        with self._lock:
            return [dict(d) for d in self._delivered if user_id is None or d["user_id"] == user_id]

    def typing_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._typing]

    def faults_fired(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._faults_fired]

    def bots(self) -> list[dict[str, Any]]:
        """Bots in creation order: id, token, owner user id, online, expired."""
        with self._lock:
            return [
                {
                    "bot_id": b.bot_id,
                    "bot_token": b.token,
                    "user_id": b.owner,
                    "online": b.online,
                    "expired": b.expired,
                    "created_at": b.created_at,
                }
                for b in self._bots.values()
            ]

    def qr_codes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._qr_summary(q) for q in self._qrs.values()]

    def _qr_summary(self, qr: _Qr) -> dict[str, Any]:
        self._tick_qr(qr)
        return {
            "qrcode": qr.qrcode,
            "status": qr.status,
            "redirected": qr.redirected,
            "verify_code_required": qr.verify_code is not None and qr.status == "need_verifycode",
            "wrong_codes": qr.wrong_codes,
            "issued_at": qr.issued_at,
            "user_id": qr.user_id,
            "bot_id": qr.bot_id,
        }

    def state(self) -> dict[str, Any]:
        """A JSON-able summary: config, bots with their users' reply windows, QR codes."""
        with self._lock:
            now = self.now()
            bots = []
            for b in self._bots.values():
                users = []
                for u in b.users.values():
                    closes = u.last_message_at + self.window_seconds
                    users.append(
                        {
                            "user_id": u.user_id,
                            "last_message_at": u.last_message_at,
                            "sends_since": u.sends_since,
                            "quota_left": max(self.quota - u.sends_since, 0),
                            "window_open": now < closes and u.sends_since < self.quota,
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
                "api_base": self._api_base,
                "cdn_base": self._cdn_base,
                "redirect_host": self._redirect_host,
                "config": {
                    "quota": self.quota,
                    "window_seconds": self.window_seconds,
                    "longpoll_seconds": self.longpoll_seconds,
                    "qr_poll_seconds": self.qr_poll_seconds,
                    "omit_message_id": self.omit_message_id,
                    "force_ret": self.force_ret,
                    "upload_full_url": self.upload_full_url,
                },
                "bots": bots,
                "qrcodes": [self._qr_summary(q) for q in self._qrs.values()],
                "counts": {
                    "delivered": len(self._delivered),
                    "violations": len(self._violations),
                    "refusals": len(self._refusals),
                    "typing": len(self._typing),
                },
            }

    # ------------------------------------------------------------------ config

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
        with self._lock:
            if not isinstance(quota, _UNSET):
                self.quota = int(quota)
            if not isinstance(window_seconds, _UNSET):
                self.window_seconds = float(window_seconds)
            if not isinstance(omit_message_id, _UNSET):
                self.omit_message_id = bool(omit_message_id)
            if not isinstance(force_ret, _UNSET):
                self.force_ret = None if force_ret is None else int(force_ret)
            if not isinstance(upload_full_url, _UNSET):
                self.upload_full_url = bool(upload_full_url)
            if not isinstance(longpoll_seconds, _UNSET):
                self.longpoll_seconds = float(longpoll_seconds)
            if not isinstance(qr_poll_seconds, _UNSET):
                self.qr_poll_seconds = float(qr_poll_seconds)
            config = {
                "quota": self.quota,
                "window_seconds": self.window_seconds,
                "omit_message_id": self.omit_message_id,
                "force_ret": self.force_ret,
                "upload_full_url": self.upload_full_url,
                "longpoll_seconds": self.longpoll_seconds,
                "qr_poll_seconds": self.qr_poll_seconds,
            }
        self._qr_notifier.notify()
        return config

    # ------------------------------------------------------------------ faults

    @staticmethod
    def _fault_endpoint(endpoint: str) -> str:
        name = endpoint.removeprefix("msg/")
        if name not in FAULT_ENDPOINTS:
            raise ValueError(f"unknown fault endpoint {endpoint!r}")
        return name

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
        name = self._fault_endpoint(endpoint)
        rates = (http_5xx_rate, reset_rate, reset_after_processing, delay_rate)
        if not all(_is_number(r) and 0 <= r <= 1 for r in rates):
            raise ValueError("fault rates must be numbers between 0 and 1")
        if not (_is_number(delay_seconds) and 0 <= delay_seconds < math.inf):
            raise ValueError("delay_seconds must be a number of seconds")
        spec = _FaultSpec(
            http_5xx_rate=http_5xx_rate,
            reset_rate=reset_rate,
            reset_after_processing=reset_after_processing,
            delay_rate=delay_rate,
            delay_seconds=delay_seconds,
            rng=random.Random(seed),
        )
        with self._lock:
            self._fault_specs[name] = spec

    def queue_faults(self, endpoint: str, faults: list[str]) -> None:
        """Deterministic next faults: ``"500"``, ``"reset_before"``, ``"reset_after"``,
        ``"delay"`` (or ``"delay:<seconds>"``), consumed one per request, in order."""
        name = self._fault_endpoint(endpoint)
        check_faults(faults)
        with self._lock:
            self._fault_queue.setdefault(name, deque()).extend(faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._fault_specs.clear()
            self._fault_queue.clear()

    def _pick_fault(self, endpoint: str) -> tuple[str, float] | None:
        with self._lock:
            for name in (endpoint, "*"):
                queue = self._fault_queue.get(name)
                if queue:
                    fault = queue.popleft()
                    kind, _, arg = fault.partition(":")
                    spec = self._fault_specs.get(endpoint) or self._fault_specs.get("*")
                    delay = float(arg) if arg else (spec.delay_seconds if spec else 2.0)
                    return self._fire(endpoint, kind, delay)
            spec = self._fault_specs.get(endpoint) or self._fault_specs.get("*")
            if spec is None:
                return None
            r = spec.rng.random()
            if r < spec.http_5xx_rate:
                return self._fire(endpoint, "500", 0.0)
            if r < spec.http_5xx_rate + spec.reset_rate:
                after = spec.rng.random() < spec.reset_after_processing
                return self._fire(endpoint, "reset_after" if after else "reset_before", 0.0)
            if spec.delay_rate and spec.rng.random() < spec.delay_rate:
                return self._fire(endpoint, "delay", spec.delay_seconds)
            return None

    def _fire(self, endpoint: str, kind: str, delay: float) -> tuple[str, float]:
        self._faults_fired.append({"endpoint": endpoint, "fault": kind, "time": self.now()})
        log.info("sandbox.fault", endpoint=endpoint, fault=kind)
        return kind, delay

    # ------------------------------------------------------------------ QR admin

    def _qr(self, qrcode: str | None) -> _Qr:
        code = qrcode if qrcode is not None else self._newest_qr
        if code is None or code not in self._qrs:
            raise SandboxError("no such QR code" if qrcode else "no QR code was issued yet")
        qr = self._qrs[code]
        self._tick_qr(qr)
        return qr

    def _tick_qr(self, qr: _Qr) -> None:
        if qr.status not in _TERMINAL_QR and self.now() - qr.issued_at >= QR_TTL_SECONDS:
            qr.status = "expired"

    @staticmethod
    def _require_open(qr: _Qr) -> None:
        if qr.status in _TERMINAL_QR:
            raise SandboxError(f"QR code is already {qr.status}")

    def scan(self, qrcode: str | None = None) -> dict[str, Any]:
        """The phone scanned the newest QR code (``wait`` -> ``scaned``)."""
        with self._lock:
            qr = self._qr(qrcode)
            self._require_open(qr)
            if qr.status == "wait":
                qr.status = "scaned"
            summary = self._qr_summary(qr)
        self._qr_notifier.notify()
        return summary

    def confirm(
        self, user_id: str = "owner@im.wechat", qrcode: str | None = None
    ) -> dict[str, Any]:
        """The user confirmed on the phone: mint a bot (``confirmed``) or, when the QR's
        ``local_token_list`` holds a live token of a bot already bound to ``user_id``,
        answer ``binded_redirect`` and return that bot. Returns
        ``{"status", "bot_id", "bot_token", "user_id"}``."""
        with self._lock:
            qr = self._qr(qrcode)
            self._require_open(qr)
            if qr.status == "need_verifycode":
                raise SandboxError("the verify code was not entered yet")
            qr.user_id = user_id
            for token in qr.local_tokens:
                bound = self._by_token.get(token)
                if bound is not None and not bound.expired and bound.owner == user_id:
                    qr.status = "binded_redirect"
                    qr.bot_id = bound.bot_id
                    result = {
                        "status": "binded_redirect",
                        "bot_id": bound.bot_id,
                        "bot_token": bound.token,
                        "user_id": user_id,
                    }
                    break
            else:
                bot = self._new_bot(user_id)
                qr.status = "confirmed"
                qr.bot_id = bot.bot_id
                result = {
                    "status": "confirmed",
                    "bot_id": bot.bot_id,
                    "bot_token": bot.token,
                    "user_id": user_id,
                }
        log.info("sandbox.login", status=result["status"], bot_id=result["bot_id"])
        self._qr_notifier.notify()
        return result

    def _new_bot(self, owner: str) -> _Bot:
        while True:
            hex12 = secrets.token_hex(6)
            bot_id = f"{hex12}@im.bot"
            if bot_id not in self._bots:
                break
        token = f"{hex12}@im.bot:{secrets.token_hex(24)}"
        bot = _Bot(
            bot_id=bot_id,
            token=token,
            owner=owner,
            created_at=self.now(),
            tag=hashlib.sha256(bot_id.encode()).digest()[:4],
        )
        self._bots[bot_id] = bot
        self._by_token[token] = bot
        return bot

    def expire_qr(self, qrcode: str | None = None) -> None:
        with self._lock:
            qr = self._qr(qrcode)
            self._require_open(qr)
            qr.status = "expired"
        self._qr_notifier.notify()

    def require_verify_code(self, code: str, qrcode: str | None = None) -> None:
        """The server wants the number shown on the phone: status ``need_verifycode``
        until a poll carries ``verify_code=code`` (3 wrong ones block the QR)."""
        with self._lock:
            qr = self._qr(qrcode)
            self._require_open(qr)
            qr.verify_code = str(code)
            qr.wrong_codes = 0
            qr.status = "need_verifycode"
        self._qr_notifier.notify()

    def redirect(self, qrcode: str | None = None) -> None:
        """The scanning account lives in the other IDC: the API host answers
        ``scaned_but_redirect`` from now on; the real status only on the redirect host."""
        with self._lock:
            qr = self._qr(qrcode)
            self._require_open(qr)
            qr.redirected = True
            if qr.status == "wait":
                qr.status = "scaned"
        self._qr_notifier.notify()

    def block_verify(self, qrcode: str | None = None) -> None:
        with self._lock:
            qr = self._qr(qrcode)
            self._require_open(qr)
            qr.status = "verify_code_blocked"
        self._qr_notifier.notify()

    # ------------------------------------------------------------------ users

    def _bot(self, bot_id: str | None) -> _Bot:
        if bot_id is None:
            if not self._bots:
                raise SandboxError("no bot is logged in yet")
            return list(self._bots.values())[-1]
        bot = self._bots.get(bot_id)
        if bot is None:
            raise SandboxError(f"unknown bot {bot_id}")
        return bot

    def _recipient(self, user_id: str, bot_id: str | None) -> _Bot:
        """The logged-in bot ``user_id`` writes to; never a guess between several."""
        if bot_id is not None:
            bot = self._bot(bot_id)
            if bot.expired:
                raise SandboxError(f"bot {bot_id} is logged out (its session expired)")
            return bot
        live = [b for b in self._bots.values() if not b.expired]
        if not live:
            raise SandboxError("no bot is logged in")
        # Bound: the user owns the bot or already wrote to it. A stranger may write to
        # the only live bot, as to a freshly logged-in one after a re-login.
        bound = [b for b in live if b.owner == user_id or user_id in b.users]
        candidates = bound or live
        if len(candidates) > 1:
            ids = ", ".join(b.bot_id for b in candidates)
            raise SandboxError(
                f"{user_id} could write to {len(candidates)} bots ({ids}): pass bot_id"
            )
        return candidates[0]

    def _store_user_media(self, plain: bytes, encrypted: bool = True) -> tuple[str, bytes, int]:
        key = secrets.token_bytes(16)
        blob = _aes_encrypt(key, plain) if encrypted else plain
        param = _opaque()
        self._cdn[param] = _CdnObject(
            ciphertext=blob,
            key=key if encrypted else None,
            plain_size=len(plain),
            sha256=hashlib.sha256(plain).hexdigest(),
        )
        return param, key, len(blob)

    def _media_ref(self, param: str, aes_key: str | None = None) -> dict[str, Any]:
        media: dict[str, Any] = {"encrypt_query_param": param}
        if aes_key is not None:
            media["aes_key"] = aes_key
        media["encrypt_type"] = 1
        media["full_url"] = (
            f"{self._cdn_base}/download?encrypted_query_param={encode_query_value(param)}"
        )
        return media

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
        if not isinstance(user_id, str) or not user_id:
            raise SandboxError("user_says needs a user id")
        if all(x is None for x in (text, image, file, video, voice_text)):
            raise SandboxError("user_says needs text or media")
        if image_key_form not in ("hex", "base64_raw", "base64_hex", "none"):
            raise SandboxError(f"unknown image_key_form {image_key_form!r}")
        with self._lock:
            bot = self._recipient(user_id, bot_id)
            now = self.now()
            ms = int(now * 1000)
            items: list[dict[str, Any]] = []

            def item(type_: int, key: str, payload: dict[str, Any]) -> None:
                items.append(
                    {
                        "type": type_,
                        "create_time_ms": ms,
                        "update_time_ms": ms,
                        "is_completed": True,
                        key: payload,
                    }
                )

            if text is not None:
                item(1, "text_item", {"text": text})
            if image is not None:
                param, key, size = self._store_user_media(image, image_key_form != "none")
                media_key = None
                if image_key_form == "base64_raw":
                    media_key = base64.b64encode(key).decode()
                elif image_key_form == "base64_hex":
                    media_key = _b64hex(key)
                payload: dict[str, Any] = {"media": self._media_ref(param, media_key)}
                if image_key_form == "hex":
                    payload["aeskey"] = key.hex()
                payload["mid_size"] = size
                item(2, "image_item", payload)
            if voice_text is not None:
                param, key, size = self._store_user_media(b"#!SILK_V3" + secrets.token_bytes(64))
                item(
                    3,
                    "voice_item",
                    {
                        "media": self._media_ref(param, _b64hex(key)),
                        "encode_type": 6,
                        "bits_per_sample": 16,
                        "sample_rate": 24000,
                        "playtime": 1500,
                        "text": voice_text,
                    },
                )
            if file is not None:
                name, data = file
                param, key, size = self._store_user_media(data)
                item(
                    4,
                    "file_item",
                    {
                        "media": self._media_ref(param, _b64hex(key)),
                        "file_name": name,
                        "md5": hashlib.md5(data).hexdigest(),
                        "len": str(len(data)),
                    },
                )
            if video is not None:
                param, key, size = self._store_user_media(video)
                item(
                    5,
                    "video_item",
                    {
                        "media": self._media_ref(param, _b64hex(key)),
                        "video_size": size,
                        "play_length": 3,
                        "video_md5": hashlib.md5(video).hexdigest(),
                    },
                )

            user = bot.users.get(user_id)
            if user is None:
                user = _User(user_id=user_id, session_id=secrets.token_hex(16))
                bot.users[user_id] = user
            token = "AAR" + base64.b64encode(secrets.token_bytes(45)).decode()
            user.tokens.append(token)
            user.last_message_at = now
            user.sends_since = 0
            self._ctx_owner[token] = (bot.bot_id, user_id)
            bot.seq += 1
            msg = {
                "seq": bot.seq,
                "message_id": _new_uint64_id(),
                "from_user_id": user_id,
                "to_user_id": bot.bot_id,
                "create_time_ms": ms,
                "update_time_ms": ms,
                "session_id": user.session_id,
                "message_type": 1,
                "message_state": 2,
                "item_list": items,
                "context_token": token,
            }
            bot.inbox.append(msg)
            result = copy.deepcopy(msg)
        log.info("sandbox.user_says", bot_id=bot.bot_id, user_id=user_id, items=len(items))
        bot.updates.notify()
        return result

    def expire_session(self, bot_id: str | None = None) -> None:
        """Make the bot's token stale (None = every bot): authenticated calls answer -14."""
        with self._lock:
            targets = list(self._bots.values()) if bot_id is None else [self._bot(bot_id)]
            for bot in targets:
                bot.expired = True
        for bot in targets:
            bot.updates.notify()

    def cdn_object(self, encrypted_query_param: str) -> bytes | None:
        """The stored CDN blob for a download parameter (ciphertext), if any."""
        with self._lock:
            obj = self._cdn.get(encrypted_query_param)
            return obj.ciphertext if obj else None

    # ------------------------------------------------------------------ dispatch

    def _route(self, path: str) -> tuple[str, str]:
        api_path = urlsplit(self._api_base).path.rstrip("/")
        cdn_path = urlsplit(self._cdn_base).path.rstrip("/")
        if path in (cdn_path + "/upload", cdn_path + "/download"):
            return "cdn", path.rsplit("/", 1)[1]
        for prefix in {api_path, ""}:
            if path.startswith(prefix + "/_sandbox/"):
                return "admin", path[len(prefix) + len("/_sandbox/") :]
            if path.startswith(prefix + "/ilink/bot/"):
                return "api", path[len(prefix) + len("/ilink/bot/") :]
        return "none", path

    async def handle(self, req: SandboxRequest) -> SandboxResponse:
        """Answer one request (both the in-process transport and the server use this)."""
        parts = urlsplit(req.target)
        query = parse_qs(parts.query, keep_blank_values=True)
        kind, rest = self._route(parts.path)
        if kind == "admin":
            from .admin import handle_admin

            return handle_admin(self, req.method, rest, query, req.body, _Headers(req.headers))
        if kind == "cdn":
            endpoint = "cdn_" + rest
        elif kind == "api" and rest in _API:
            endpoint = _API[rest][0]
        else:
            if "/ilink/" in parts.path:
                with self._lock:
                    self._violate("unknown", "route.unknown", f"{req.method} {parts.path}")
            return SandboxResponse.text("not found", 404)

        fault = self._pick_fault(endpoint)
        if fault is not None:
            name, delay = fault
            if name == "500":
                return SandboxResponse.text("internal server error", 500)
            if name == "400":
                return SandboxResponse(
                    400,
                    [("Content-Type", "text/plain"), ("x-error-message", "sandbox fault: 400")],
                    b"bad request",
                )
            if name == "reset_before":
                return SandboxResponse(reset=True)
            if name == "delay":
                await asyncio.sleep(delay)
        if kind == "cdn":
            resp = self._cdn_request(rest, req, query)
        else:
            resp = await self._api_request(rest, req, query)
        if fault is not None and fault[0] == "reset_after":
            return SandboxResponse(reset=True)
        return resp

    # ------------------------------------------------------------------ common rules

    def _check_uin(self, value: str | None) -> None:
        _need(value is not None, "header.x_wechat_uin", "X-WECHAT-UIN missing")
        assert value is not None
        try:
            text = base64.b64decode(value, validate=True).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            raise _Violation("header.x_wechat_uin", "X-WECHAT-UIN is not base64") from None
        _need(
            base64.b64encode(text.encode()).decode() == value
            and _DECIMAL.match(text)
            and int(text) <= 0xFFFFFFFF,
            "header.x_wechat_uin",
            "X-WECHAT-UIN is not base64 of the decimal text of a uint32",
        )
        if value in self._uin_set:
            raise _Violation("header.x_wechat_uin_reused", "X-WECHAT-UIN value was already used")
        self._uins.append(value)
        self._uin_set.add(value)
        if len(self._uins) > UIN_MEMORY:
            self._uin_set.discard(self._uins.popleft())

    def _check_common(
        self, endpoint: str, method: str, authenticated: bool, req: SandboxRequest
    ) -> dict[str, Any] | None:
        """Method, header and body rules; returns the parsed body (None for GET)."""
        h = _Headers(req.headers)
        _need(req.method == method, "http.method", f"{req.method} instead of {method}")
        app_id = h.one("ilink-app-id")
        _need(app_id == "bot", "header.ilink_app_id", f"iLink-App-Id is {app_id!r}, expected 'bot'")
        version = h.one("ilink-app-clientversion")
        _need(
            version is not None and _DECIMAL.match(version) and int(version) <= 0xFFFFFFFF,
            "header.ilink_app_clientversion",
            f"iLink-App-ClientVersion {version!r} is not a decimal uint32",
        )
        if method == "GET":
            return None
        ctype = h.one("content-type")
        _need(
            ctype is not None and ctype.strip().lower() == "application/json",
            "header.content_type",
            f"Content-Type {ctype!r}, expected application/json",
        )
        auth_type = h.one("authorizationtype")
        _need(
            auth_type == "ilink_bot_token",
            "header.authorizationtype",
            f"AuthorizationType {auth_type!r}, expected ilink_bot_token",
        )
        self._check_uin(h.one("x-wechat-uin"))
        self._check_length(h, req)
        obj = self._check_body(req.body)
        if authenticated:
            self._check_base_info(obj)
        else:
            _need("base_info" not in obj, "base_info.forbidden", "QR endpoints take no base_info")
        return obj

    @staticmethod
    def _check_length(h: _Headers, req: SandboxRequest) -> None:
        if req.framing_error is not None:
            raise _Violation("header.content_length", req.framing_error)
        length = h.one("content-length")
        _need(length is not None, "header.content_length", "Content-Length missing")
        assert length is not None
        _need(
            _DECIMAL.match(length.strip()) and int(length) == len(req.body),
            "header.content_length",
            f"Content-Length {length!r} but the body has {len(req.body)} bytes",
        )

    @staticmethod
    def _check_body(body: bytes) -> dict[str, Any]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Violation("body.utf8", "body is not valid UTF-8") from None

        def no_constants(name: str) -> Any:
            raise ValueError(name)

        try:
            obj = json.loads(text, parse_constant=no_constants)
        except ValueError:
            raise _Violation("body.json", "body is not valid JSON") from None
        _need(isinstance(obj, dict), "body.json", "body is not a JSON object")
        assert isinstance(obj, dict)
        try:
            canonical = dumps(obj)
        except (UnicodeEncodeError, ValueError):
            canonical = b""
        if canonical != body:
            if _has_null(obj):
                detail = "body carries null members (omit absent fields instead)"
            elif re.search(r"\\u[0-9a-fA-F]{4}", text) and not canonical.isascii():
                detail = "body escapes non-ASCII characters as \\uXXXX (send raw UTF-8)"
            else:
                detail = "body is not compact JSON.stringify output (whitespace or escapes)"
            raise _Violation("body.not_canonical", detail)
        return obj

    @staticmethod
    def _check_base_info(obj: dict[str, Any]) -> None:
        _need("base_info" in obj, "base_info.missing", "base_info missing")
        _need(list(obj)[-1] == "base_info", "base_info.not_last", "base_info is not the last key")
        info = obj["base_info"]
        _need(isinstance(info, dict), "base_info.type", "base_info is not an object")
        cv = info.get("channel_version")
        _need(
            isinstance(cv, str) and cv != "",
            "base_info.channel_version",
            "channel_version missing or empty",
        )
        agent = info.get("bot_agent")
        _need(isinstance(agent, str), "base_info.bot_agent", "bot_agent missing")
        _need(
            sanitize_bot_agent(agent) == agent,
            "base_info.bot_agent",
            "bot_agent is not in the sanitised UA grammar",
        )

    def _auth(self, req: SandboxRequest) -> _Bot | None:
        value = _Headers(req.headers).one("authorization")
        if value is None or not value.startswith("Bearer "):
            return None
        bot = self._by_token.get(value[len("Bearer ") :].strip())
        if bot is None or bot.expired:
            return None
        return bot

    # ------------------------------------------------------------------ API

    async def _api_request(
        self, name: str, req: SandboxRequest, query: dict[str, list[str]]
    ) -> SandboxResponse:
        endpoint, method, authenticated = _API[name]
        bot: _Bot | None = None
        try:
            with self._lock:
                obj = self._check_common(endpoint, method, authenticated, req)
                if authenticated:
                    bot = self._auth(req)
                    if bot is None:
                        self._refuse(endpoint, "session_timeout")
                        return SandboxResponse.json(
                            {"ret": -14, "errcode": -14, "errmsg": "session timeout"}
                        )
            if name == "get_qrcode_status":
                return await self._qr_status(query, req.via_redirect)
            if name == "getupdates":
                assert obj is not None and bot is not None
                return await self._getupdates(bot, obj)
            assert obj is not None
            with self._lock:
                if name == "get_bot_qrcode":
                    return SandboxResponse.json(self._get_bot_qrcode(obj, query))
                assert bot is not None
                if name == "sendmessage":
                    return SandboxResponse.json(self._sendmessage(bot, obj))
                if name == "getuploadurl":
                    return SandboxResponse.json(self._getuploadurl(bot, obj))
                if name == "getconfig":
                    return SandboxResponse.json(self._getconfig(bot, obj))
                if name == "sendtyping":
                    return SandboxResponse.json(self._sendtyping(bot, obj))
                bot.online = name == "msg/notifystart"
                return SandboxResponse.json({"ret": 0})
        except _Violation as v:
            with self._lock:
                self._violate(endpoint, v.rule, v.detail)
            return SandboxResponse.json({})

    def _get_bot_qrcode(self, obj: dict[str, Any], query: dict[str, list[str]]) -> dict[str, Any]:
        _need(query.get("bot_type") == ["3"], "query.bot_type", "bot_type=3 missing")
        tokens = obj.get("local_token_list")
        _need(isinstance(tokens, list), "qrcode.local_token_list", "local_token_list missing")
        assert isinstance(tokens, list)
        _need(len(tokens) <= 10, "qrcode.local_token_list", "more than 10 tokens")
        _need(
            all(isinstance(t, str) and t for t in tokens),
            "qrcode.local_token_list",
            "local_token_list holds a non-string or empty entry",
        )
        code = secrets.token_hex(16)
        self._qrs[code] = _Qr(qrcode=code, issued_at=self.now(), local_tokens=list(tokens))
        self._newest_qr = code
        return {
            "ret": 0,
            "qrcode": code,
            "qrcode_img_content": f"{self._api_base}/_sandbox/qr/{code}",
        }

    def _qr_view(self, qr: _Qr, via_redirect: bool) -> dict[str, Any]:
        self._tick_qr(qr)
        if qr.redirected and not via_redirect:
            return {"ret": 0, "status": "scaned_but_redirect", "redirect_host": self._redirect_host}
        view: dict[str, Any] = {"ret": 0, "status": qr.status}
        if qr.status == "confirmed" and qr.bot_id in self._bots:
            bot = self._bots[qr.bot_id]
            view.update(
                {
                    "bot_token": bot.token,
                    "ilink_bot_id": bot.bot_id,
                    "baseurl": self._api_base,
                    "ilink_user_id": bot.owner,
                }
            )
        return view

    async def _qr_status(self, query: dict[str, list[str]], via_redirect: bool) -> SandboxResponse:
        codes = query.get("qrcode")
        if not codes or not codes[0]:
            raise _Violation("query.qrcode", "qrcode missing")
        code = codes[0]
        verify = query.get("verify_code", [None])[0]
        force = False
        with self._lock:
            qr = self._qrs.get(code)
            if qr is None:
                return SandboxResponse.json({"ret": 0, "status": "expired"})
            self._tick_qr(qr)
            real_view = via_redirect or not qr.redirected
            if verify is not None and qr.status == "need_verifycode" and real_view:
                if verify == qr.verify_code:
                    qr.status = "scaned"
                    qr.verify_code = None
                else:
                    qr.wrong_codes += 1
                    force = True
                    if qr.wrong_codes >= MAX_WRONG_VERIFY_CODES:
                        qr.status = "verify_code_blocked"
        deadline = time.monotonic() + self.qr_poll_seconds
        while True:
            with self._lock:
                view = self._qr_view(qr, via_redirect)
                status = view["status"]
                last = qr.answered.get(via_redirect)
                if (
                    force
                    or status != last
                    or status in _TERMINAL_QR
                    or time.monotonic() >= deadline
                ):
                    qr.answered[via_redirect] = status
                    return SandboxResponse.json(view)
                generation = self._qr_notifier.generation
            await self._qr_notifier.wait(generation, deadline - time.monotonic())

    # getupdates ---------------------------------------------------------------

    @staticmethod
    def _encode_cursor(bot: _Bot, position: int) -> str:
        raw = bot.tag + struct.pack(">Q", position) + secrets.token_bytes(4)
        return base64.b64encode(raw).decode("ascii")

    @staticmethod
    def _decode_cursor(bot: _Bot, cursor: str) -> int:
        if not cursor:
            return 0
        try:
            raw = base64.b64decode(cursor, validate=True)
        except ValueError:
            return 0
        if len(raw) != 16 or raw[:4] != bot.tag:
            return 0
        position: int = struct.unpack(">Q", raw[4:12])[0]
        return min(position, len(bot.inbox))

    async def _getupdates(self, bot: _Bot, obj: dict[str, Any]) -> SandboxResponse:
        cursor = obj.get("get_updates_buf")
        _need(isinstance(cursor, str), "getupdates.get_updates_buf", "get_updates_buf missing")
        assert isinstance(cursor, str)
        with self._lock:
            requested = self._decode_cursor(bot, cursor)
            bot.acked = max(bot.acked, requested)
        deadline = time.monotonic() + self.longpoll_seconds
        while True:
            with self._lock:
                if bot.expired or self._bots.get(bot.bot_id) is not bot:
                    self._refuse("getupdates", "session_timeout")
                    return SandboxResponse.json(
                        {"ret": -14, "errcode": -14, "errmsg": "session timeout"}
                    )
                start = max(requested, bot.acked)
                msgs = bot.inbox[start:]
                if msgs or time.monotonic() >= deadline:
                    return SandboxResponse.json(
                        {
                            "ret": 0,
                            "msgs": msgs,
                            "get_updates_buf": self._encode_cursor(bot, start + len(msgs)),
                            "longpolling_timeout_ms": LONGPOLLING_TIMEOUT_MS,
                        }
                    )
                generation = bot.updates.generation
            await bot.updates.wait(generation, deadline - time.monotonic())

    # sendmessage ------------------------------------------------------------

    def _check_context_token(self, bot: _Bot, user: _User, token: object) -> bool:
        _need(
            isinstance(token, str) and token != "",
            "msg.context_token",
            "context_token missing",
        )
        assert isinstance(token, str)
        if token in user.tokens:
            return token == user.tokens[-1]
        owner = self._ctx_owner.get(token)
        if owner is None:
            raise _Violation("msg.context_token", "context_token was never issued")
        if owner[0] != bot.bot_id:
            raise _Violation("msg.context_token", "context_token was issued by another bot")
        raise _Violation("msg.context_token", "context_token belongs to another user")

    def _check_media(self, bot: _Bot, item_type: int, sub: dict[str, Any]) -> _CdnObject:
        media = sub.get("media")
        _need(isinstance(media, dict), "media.missing", "media object missing")
        assert isinstance(media, dict)
        param = media.get("encrypt_query_param")
        obj = self._cdn.get(param) if isinstance(param, str) else None
        _need(
            obj is not None and obj.upload is not None,
            "media.encrypt_query_param",
            "encrypt_query_param is not a download parameter the CDN issued for an upload",
        )
        assert obj is not None and obj.upload is not None
        up = obj.upload
        _need(up.bot_id == bot.bot_id, "media.encrypt_query_param", "uploaded by another bot")
        aes = media.get("aes_key")
        _need(isinstance(aes, str) and aes, "media.aes_key", "aes_key missing")
        assert isinstance(aes, str)
        try:
            decoded = base64.b64decode(aes, validate=True)
        except ValueError:
            raise _Violation("media.aes_key", "aes_key is not base64") from None
        if decoded == up.key:
            raise _Violation(
                "media.aes_key_raw",
                "aes_key is base64 of the raw 16 key bytes; send base64 of the 32 hex chars",
            )
        _need(
            decoded == up.key.hex().encode(),
            "media.aes_key",
            "aes_key is not base64 of the hex key registered in getuploadurl",
        )
        etype = media.get("encrypt_type")
        _need(_is_int(etype) and etype == 1, "media.encrypt_type", f"encrypt_type {etype!r}")
        _need(
            up.media_type == _MEDIA_TYPE_OF_ITEM[item_type],
            "media.media_type",
            f"uploaded as media_type {up.media_type} but sent as item type {item_type}",
        )
        if item_type == 2:
            size = sub.get("mid_size")
            _need(
                _is_int(size) and size == len(obj.ciphertext),
                "image.mid_size",
                f"mid_size {size!r}, ciphertext is {len(obj.ciphertext)} bytes",
            )
        elif item_type == 5:
            size = sub.get("video_size")
            _need(
                _is_int(size) and size == len(obj.ciphertext),
                "video.video_size",
                f"video_size {size!r}, ciphertext is {len(obj.ciphertext)} bytes",
            )
        else:
            name = sub.get("file_name")
            _need(isinstance(name, str) and name, "file.file_name", "file_name missing")
            length = sub.get("len")
            _need(
                isinstance(length, str) and length == str(up.rawsize),
                "file.len",
                f"len {length!r}, expected the plaintext size {up.rawsize} as a string",
            )
        return obj

    def _sendmessage(self, bot: _Bot, obj: dict[str, Any]) -> dict[str, Any]:
        msg = obj.get("msg")
        _need(isinstance(msg, dict), "msg.missing", "msg object missing")
        assert isinstance(msg, dict)
        _need("from_user_id" in msg, "msg.from_user_id", 'from_user_id missing (send "")')
        _need(msg["from_user_id"] == "", "msg.from_user_id", 'from_user_id must be ""')
        to = msg.get("to_user_id")
        _need(isinstance(to, str) and to, "msg.to_user_id", "to_user_id missing")
        assert isinstance(to, str)
        user = bot.users.get(to)
        _need(user is not None, "msg.to_user_id", "this user never wrote to the bot")
        assert user is not None
        cid = msg.get("client_id")
        _need(isinstance(cid, str) and cid, "msg.client_id", "client_id missing or empty")
        assert isinstance(cid, str)
        mtype = msg.get("message_type")
        _need(
            _is_int(mtype) and mtype == 2, "msg.message_type", f"message_type {mtype!r}, expected 2"
        )
        mstate = msg.get("message_state")
        _need(
            _is_int(mstate) and mstate == 2,
            "msg.message_state",
            f"message_state {mstate!r}, expected 2",
        )
        items = msg.get("item_list")
        _need(
            isinstance(items, list) and len(items) == 1 and isinstance(items[0], dict),
            "msg.item_list",
            "item_list must hold exactly one item",
        )
        assert isinstance(items, list)
        latest = self._check_context_token(bot, user, msg.get("context_token"))
        if "run_id" in msg:
            _need(isinstance(msg["run_id"], str), "msg.run_id", "run_id is not a string")
        item = items[0]
        itype = item.get("type")
        _need(
            _is_int(itype) and itype in _SENDABLE_TYPES,
            "item.type",
            f"item type {itype!r} cannot be sent by a bot",
        )
        assert isinstance(itype, int)
        subs = [k for k in item if k.endswith("_item")]
        _need(
            subs == [_ITEM_KEYS[itype]],
            "item.mismatch",
            f"item type {itype} needs exactly {_ITEM_KEYS[itype]}, got {subs}",
        )
        sub = item[_ITEM_KEYS[itype]]
        _need(isinstance(sub, dict), "item.mismatch", f"{_ITEM_KEYS[itype]} is not an object")
        record: dict[str, Any] = {
            "kind": _KIND[itype],
            "text": None,
            "file_name": None,
            "size": None,
            "sha256": None,
        }
        if itype == 1:
            text = sub.get("text")
            _need(isinstance(text, str) and text, "text.empty", "text_item.text missing or empty")
            assert isinstance(text, str)
            nbytes = len(text.encode("utf-8"))
            _need(
                nbytes <= MAX_TEXT_BYTES,
                "text.too_long",
                f"text is {nbytes} bytes; the server refuses more than {MAX_TEXT_BYTES}",
            )
            record.update(text=text, size=nbytes)
        elif itype in (11, 12):
            record["text"] = sub.get("tool_name") if isinstance(sub.get("tool_name"), str) else None
        else:
            cdn_obj = self._check_media(bot, itype, sub)
            record.update(size=cdn_obj.plain_size, sha256=cdn_obj.sha256)
            if itype == 4:
                record["file_name"] = sub["file_name"]

        # Accepted by the rules; now the server's delivery policy.
        if cid in bot.client_ids:
            return {"ret": 0, "message_id": bot.client_ids[cid]}
        info = {"bot_id": bot.bot_id, "user_id": to, "client_id": cid}
        if self.force_ret is not None:
            self._refuse("sendmessage", "forced_ret", ret=self.force_ret, **info)
            return {"ret": self.force_ret, "errmsg": "forced by sandbox"}
        if self.omit_message_id:
            self._refuse("sendmessage", "risk_control", ret=0, **info)
            return {"ret": 0}
        now = self.now()
        if now - user.last_message_at >= self.window_seconds:
            self._refuse("sendmessage", "window_closed", ret=-2, **info)
            return {"ret": -2, "errmsg": "prepare failed: reply window closed"}
        if user.sends_since >= self.quota:
            self._refuse("sendmessage", "quota_exhausted", ret=-2, **info)
            return {"ret": -2, "errmsg": "rate limited: reply quota exhausted"}
        user.sends_since += 1
        message_id = _new_uint64_id()
        bot.client_ids[cid] = message_id
        self._delivered.append(
            {
                "seq": len(self._delivered) + 1,
                "bot_id": bot.bot_id,
                "user_id": to,
                "client_id": cid,
                "message_id": str(message_id),
                **record,
                "context_token_ok": True,
                "context_token_latest": latest,
                "run_id": msg.get("run_id"),
                "time": now,
            }
        )
        log.info("sandbox.delivered", bot_id=bot.bot_id, user_id=to, kind=record["kind"])
        return {"ret": 0, "message_id": message_id}

    # getuploadurl / CDN -------------------------------------------------------

    def _getuploadurl(self, bot: _Bot, obj: dict[str, Any]) -> dict[str, Any]:
        filekey = obj.get("filekey")
        _need(
            isinstance(filekey, str) and _HEX32_ANYCASE.match(filekey),
            "upload.filekey",
            "filekey is not 32 hex chars",
        )
        assert isinstance(filekey, str)
        mtype = obj.get("media_type")
        _need(_is_int(mtype) and mtype in (1, 2, 3), "upload.media_type", f"media_type {mtype!r}")
        assert isinstance(mtype, int)
        to = obj.get("to_user_id")
        _need(isinstance(to, str) and to, "upload.to_user_id", "to_user_id missing")
        assert isinstance(to, str)
        _need(to in bot.users, "upload.to_user_id", "this user never wrote to the bot")
        rawsize = obj.get("rawsize")
        _need(
            isinstance(rawsize, int) and _is_int(rawsize) and rawsize >= 0,
            "upload.rawsize",
            f"rawsize {rawsize!r}",
        )
        assert isinstance(rawsize, int)
        md5 = obj.get("rawfilemd5")
        _need(
            isinstance(md5, str) and _HEX32_ANYCASE.match(md5),
            "upload.rawfilemd5",
            "rawfilemd5 is not 32 hex chars",
        )
        assert isinstance(md5, str)
        filesize = obj.get("filesize")
        expected = (rawsize // 16 + 1) * 16
        _need(
            _is_int(filesize) and filesize == expected,
            "upload.filesize",
            f"filesize {filesize!r}, expected the padded size {expected}",
        )
        _need(obj.get("no_need_thumb") is True, "upload.no_need_thumb", "no_need_thumb not true")
        aeskey = obj.get("aeskey")
        _need(
            isinstance(aeskey, str) and _HEX32.match(aeskey),
            "upload.aeskey",
            "aeskey is not 32 lowercase hex chars",
        )
        assert isinstance(aeskey, str)
        param = _opaque()
        self._uploads[param] = _Upload(
            param=param,
            bot_id=bot.bot_id,
            filekey=filekey,
            media_type=mtype,
            to_user_id=to,
            rawsize=rawsize,
            rawfilemd5=md5.lower(),
            filesize=expected,
            key=bytes.fromhex(aeskey),
        )
        answer: dict[str, Any] = {"ret": 0, "upload_param": param}
        if self.upload_full_url:
            answer["upload_full_url"] = (
                f"{self._cdn_base}/upload?encrypted_query_param={encode_query_value(param)}"
                f"&filekey={encode_query_value(filekey)}"
            )
        return answer

    def _cdn_request(
        self, op: str, req: SandboxRequest, query: dict[str, list[str]]
    ) -> SandboxResponse:
        endpoint = "cdn_" + op

        def fail(status: int, rule: str | None, message: str) -> SandboxResponse:
            if rule is not None:
                self._violate(endpoint, rule, message)
            return SandboxResponse(
                status,
                [("Content-Type", "text/plain; charset=utf-8"), ("x-error-message", message)],
                message.encode(),
            )

        param = query.get("encrypted_query_param", [""])[0]
        with self._lock:
            if op == "download":
                if req.method != "GET":
                    return fail(405, "http.method", f"{req.method} instead of GET")
                obj = self._cdn.get(param)
                if obj is None:
                    return SandboxResponse.text("not found", 404)
                return SandboxResponse(
                    200, [("Content-Type", "application/octet-stream")], obj.ciphertext
                )
            if req.method != "POST":
                return fail(405, "http.method", f"{req.method} instead of POST")
            up = self._uploads.get(param)
            if up is None:
                return fail(400, "cdn.param", "unknown encrypted_query_param")
            h = _Headers(req.headers)
            try:
                ctype = h.one("content-type")
                self._check_length(h, req)
                # §7.3: the CDN gets no auth headers; sending them leaks the bot token.
                _need(
                    h.one("authorization") is None and h.one("authorizationtype") is None,
                    "cdn.auth_header",
                    "CDN upload carries Authorization/AuthorizationType",
                )
            except _Violation as v:
                return fail(400, v.rule, v.detail)
            if ctype is None or ctype.strip().lower() != "application/octet-stream":
                return fail(400, "header.content_type", f"Content-Type {ctype!r}")
            if query.get("filekey", [""])[0] != up.filekey:
                return fail(400, "cdn.filekey", "filekey does not match getuploadurl")
        # Decrypt and hash outside the lock: a large upload must not stall other requests.
        body = req.body
        if len(body) != up.filesize:
            with self._lock:
                return fail(
                    400, "cdn.length", f"body has {len(body)} bytes, registered {up.filesize}"
                )
        try:
            plain = _aes_decrypt(up.key, body)
        except ValueError:
            with self._lock:
                return fail(400, "cdn.decrypt", "body does not decrypt with the registered key")
        if len(plain) != up.rawsize or hashlib.md5(plain).hexdigest() != up.rawfilemd5:
            with self._lock:
                return fail(400, "cdn.md5", "plaintext MD5/size differs from getuploadurl")
        digest = hashlib.sha256(plain).hexdigest()
        with self._lock:
            if up.download_param is None:
                up.download_param = _opaque()
            self._cdn[up.download_param] = _CdnObject(
                ciphertext=body,
                key=up.key,
                plain_size=len(plain),
                sha256=digest,
                upload=up,
            )
            return SandboxResponse(200, [("x-encrypted-param", up.download_param)], b"")

    # getconfig / sendtyping ---------------------------------------------------

    def _getconfig(self, bot: _Bot, obj: dict[str, Any]) -> dict[str, Any]:
        uid = obj.get("ilink_user_id")
        _need(isinstance(uid, str) and uid, "getconfig.ilink_user_id", "ilink_user_id missing")
        assert isinstance(uid, str)
        token = obj.get("context_token")
        if "context_token" in obj:
            _need(isinstance(token, str), "getconfig.context_token", "context_token not a string")
        user = bot.users.get(uid)
        if user is None or token not in user.tokens:
            self._refuse("getconfig", "no_typing_ticket", ret=-4, bot_id=bot.bot_id, user_id=uid)
            return {"ret": -4, "errmsg": "GetTypingTicket rpc failed"}
        if user.typing_ticket is None:
            user.typing_ticket = base64.b64encode(secrets.token_bytes(24)).decode()
        return {"ret": 0, "typing_ticket": user.typing_ticket}

    def _sendtyping(self, bot: _Bot, obj: dict[str, Any]) -> dict[str, Any]:
        uid = obj.get("ilink_user_id")
        _need(isinstance(uid, str) and uid, "sendtyping.ilink_user_id", "ilink_user_id missing")
        assert isinstance(uid, str)
        ticket = obj.get("typing_ticket")
        user = bot.users.get(uid)
        _need(
            user is not None and isinstance(ticket, str) and ticket == user.typing_ticket,
            "sendtyping.typing_ticket",
            "typing_ticket was not issued by getconfig for this user",
        )
        status = obj.get("status")
        _need(_is_int(status) and status in (1, 2), "sendtyping.status", f"status {status!r}")
        self._typing.append(
            {"bot_id": bot.bot_id, "user_id": uid, "status": status, "time": self.now()}
        )
        return {"ret": 0}
