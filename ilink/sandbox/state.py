"""Everything the sandbox remembers, in one object guarded by one lock.

:class:`State` is plain data with public attributes: the parts of the sandbox (login,
inbound, outbound, CDN, faults, router) are logic over it, and each takes ``lock``
around what it reads and writes. Tests may drive the admin API from their own thread
while a server thread serves requests.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ilinkbot.ilink.log import get_logger

from .model import Notifier, SandboxError

__all__ = ["Bot", "CdnObject", "FaultSpec", "QrCode", "State", "Upload", "User"]

log = get_logger("ilink.sandbox")


@dataclass
class QrCode:
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
class User:
    user_id: str
    session_id: str
    tokens: list[str] = field(default_factory=list)
    last_message_at: float = 0.0
    sends_since: int = 0
    typing_ticket: str | None = None


@dataclass
class Bot:
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
    users: dict[str, User] = field(default_factory=dict)
    client_ids: dict[str, int] = field(default_factory=dict)
    # Wakes only this bot's long polls: a message for one bot must not stir every waiter.
    updates: Notifier = field(default_factory=Notifier)


@dataclass
class Upload:
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
class CdnObject:
    ciphertext: bytes
    key: bytes | None
    plain_size: int
    sha256: str
    upload: Upload | None = None  # None for media a user sent


@dataclass
class FaultSpec:
    http_5xx_rate: float = 0.0
    reset_rate: float = 0.0
    reset_after_processing: float = 0.5
    delay_rate: float = 0.0
    delay_seconds: float = 2.0
    rng: random.Random = field(default_factory=random.Random)


class State:
    """The sandbox's memory; ``clear()`` (lock held) forgets all but the bases."""

    def __init__(
        self,
        defaults: tuple[int, float, float, float],
        api_base: str,
        cdn_base: str,
        redirect_host: str,
    ) -> None:
        self.lock = threading.Lock()
        self.qr_notifier = Notifier()  # login polls; each bot has its own for getupdates
        self.defaults = defaults
        self.api_base = api_base
        self.cdn_base = cdn_base
        self.redirect_host = redirect_host
        self.clear()

    def clear(self) -> None:
        quota, window, longpoll, qr_poll = self.defaults
        self.quota = quota
        self.window_seconds = float(window)
        self.longpoll_seconds = float(longpoll)
        self.qr_poll_seconds = float(qr_poll)
        self.omit_message_id = False
        self.force_ret: int | None = None
        self.upload_full_url = True
        self.offset = 0.0
        self.qrs: dict[str, QrCode] = {}
        self.newest_qr: str | None = None
        self.bots: dict[str, Bot] = {}
        self.by_token: dict[str, Bot] = {}
        self.ctx_owner: dict[str, tuple[str, str]] = {}
        self.uploads: dict[str, Upload] = {}
        self.cdn: dict[str, CdnObject] = {}
        self.uins: deque[str] = deque()
        self.uin_set: set[str] = set()
        self.delivered: list[dict[str, Any]] = []
        self.violations: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self.typing: list[dict[str, Any]] = []
        self.faults_fired: list[dict[str, Any]] = []
        self.fault_specs: dict[str, FaultSpec] = {}
        self.fault_queue: dict[str, deque[str]] = {}

    def now(self) -> float:
        """Sandbox clock: wall clock plus everything ``advance`` added."""
        return time.time() + self.offset

    def config(self) -> dict[str, Any]:
        return {
            "quota": self.quota,
            "window_seconds": self.window_seconds,
            "omit_message_id": self.omit_message_id,
            "force_ret": self.force_ret,
            "upload_full_url": self.upload_full_url,
            "longpoll_seconds": self.longpoll_seconds,
            "qr_poll_seconds": self.qr_poll_seconds,
        }

    def violate(self, endpoint: str, rule: str, detail: str) -> None:
        self.violations.append(
            {"endpoint": endpoint, "rule": rule, "detail": detail, "time": self.now()}
        )
        log.warning("sandbox.violation", endpoint=endpoint, rule=rule, detail=detail)

    def refuse(self, endpoint: str, reason: str, **extra: Any) -> None:
        entry = {"endpoint": endpoint, "reason": reason, "time": self.now(), **extra}
        self.refusals.append(entry)
        log.info("sandbox.refusal", endpoint=endpoint, reason=reason)

    def bot(self, bot_id: str) -> Bot:
        bot = self.bots.get(bot_id)
        if bot is None:
            raise SandboxError(f"unknown bot {bot_id}")
        return bot
