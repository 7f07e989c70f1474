"""What every part of the sandbox shares: requests, responses, rule violations, wake-ups.

A request that breaks a rule raises :class:`Violation`; the router answers it HTTP 200
``{}`` and records why. An admin call that cannot be honoured raises :class:`SandboxError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ilinkbot.ilink.wire import dumps

__all__ = [
    "FAULT_ENDPOINTS",
    "FAULT_KINDS",
    "Headers",
    "ImageKeyForm",
    "Notifier",
    "SandboxError",
    "SandboxRequest",
    "SandboxResponse",
    "Violation",
    "is_int",
    "is_number",
    "need",
    "new_uint64_id",
]

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


class SandboxError(Exception):
    """An admin call that cannot be honoured (no bot, no QR code, expired QR ...)."""


class Violation(Exception):
    """A request broke a protocol rule: dropped with HTTP 200 ``{}``, reason recorded."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


def need(cond: object, rule: str, detail: str) -> None:
    if not cond:
        raise Violation(rule, detail)


def is_int(value: object) -> bool:
    return type(value) is int


def is_number(value: object) -> bool:
    return type(value) in (int, float)


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


class Headers:
    """Request headers by lower-case name; a header sent twice is a violation."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._map: dict[str, list[str]] = {}
        for name, value in pairs:
            self._map.setdefault(name.lower(), []).append(value)

    def one(self, name: str) -> str | None:
        values = self._map.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise Violation("header.duplicate", f"{name} sent {len(values)} times")
        return values[0]


class Notifier:
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


def new_uint64_id() -> int:
    """A message id above 2**53: a client that parses it as a double loses digits."""
    return secrets.randbelow(2**63 - 2**53) + 2**53 + 1
