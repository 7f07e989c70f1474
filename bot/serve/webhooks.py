"""``serve --webhook URL``: each inbound message and each delivery state change, POSTed as
signed JSON, so a platform needs no polling.

Events are queued by observers of :class:`~ilinkbot.bot.events.Events` (which never wait)
and sent by one worker task: a slow, failing or unreachable receiver delays only later
webhooks, never the receive loop or a push. Each event is tried :data:`MAX_ATTEMPTS` times
with exponential back-off (a 2xx answer is success; 4xx other than 408/429 is final); when
the queue is full the new event is dropped and logged.

The body is signed with HMAC-SHA256 under a secret kept in ``$ILINKBOT_HOME/webhook-secret``
(made 0600 on first use) or ``--webhook-secret-file``: the header
``X-Ilinkbot-Signature: sha256=<hex>``. Bodies never carry bot tokens or context tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ilinkbot.ilink.log import get_logger, register_secret
from ilinkbot.ilink.models import MessageItemType, WeixinMessage
from ilinkbot.store import Account

from ..events import Events
from ..status import iso

__all__ = [
    "MAX_ATTEMPTS",
    "SECRET_FILE",
    "SIGNATURE_HEADER",
    "WebhookSecretError",
    "Webhooks",
    "load_secret",
    "sign",
]

_log = get_logger("ilinkbot.serve.webhooks")

SECRET_FILE = "webhook-secret"
SIGNATURE_HEADER = "X-Ilinkbot-Signature"
MAX_ATTEMPTS = 5
FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 60.0
TIMEOUT_SECONDS = 10.0
MAX_QUEUE = 10_000

_KINDS = {
    MessageItemType.TEXT: "text",
    MessageItemType.IMAGE: "image",
    MessageItemType.VOICE: "voice",
    MessageItemType.FILE: "file",
    MessageItemType.VIDEO: "video",
}


class WebhookSecretError(Exception):
    """The secret file cannot be read, or is empty."""


def load_secret(home: Path, path: Path | None = None) -> str:
    """The signing secret: ``path`` if given (must exist and be non-empty), else
    ``$ILINKBOT_HOME/webhook-secret``, made now (0600) if missing."""
    if path is not None:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise WebhookSecretError(f"cannot read the webhook secret {path}: {exc}") from None
        if not secret:
            raise WebhookSecretError(f"the webhook secret file {path} is empty")
        register_secret(secret)
        return secret
    own = home / SECRET_FILE
    try:
        secret = own.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        secret = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise WebhookSecretError(f"cannot read the webhook secret {own}: {exc}") from None
    if not secret:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        secret = secrets.token_urlsafe(32)
        fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secret + "\n")
        os.chmod(own, 0o600)
    register_secret(secret)
    return secret


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _now() -> str:
    return iso(datetime.now(UTC)) or ""


def _summary(raw: Any) -> tuple[str, str]:
    """``(kind, text)`` of a stored inbound message (text: typed text or voice transcript)."""
    try:
        wx = WeixinMessage.from_dict(raw if isinstance(raw, dict) else {})
    except Exception:
        return "unknown", ""
    kind, text = "unknown", ""
    for item in wx.items:
        if kind == "unknown" and item.kind in _KINDS:
            kind = _KINDS[item.kind]
        if not text and item.text_item and item.text_item.text:
            text = item.text_item.text
        if not text and item.voice_item and item.voice_item.text:
            text = item.voice_item.text
    return kind, text


class Webhooks:
    """One receiver URL; :meth:`attach` to every :class:`Events` whose news it sends."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        first_delay: float = FIRST_DELAY_SECONDS,
        timeout: float = TIMEOUT_SECONDS,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.url = url
        self._secret = secret
        register_secret(secret)
        self._transport = transport
        self.max_attempts = max(1, max_attempts)
        self.first_delay = first_delay
        self.timeout = timeout
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queue)
        self._worker: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        #: Events given up on (attempts used up, or dropped from a full queue).
        self.dropped = 0

    def attach(self, events: Events) -> None:
        events.received.append(self.on_received)
        events.delivery.append(self.on_delivery)

    # ---- observers: only queue ------------------------------------------------------------

    def on_received(self, account: Account, rows: Sequence[Any]) -> None:
        for row in rows:
            kind, text = _summary(row.raw)
            created = row.created_at or row.received_at
            self._put(
                {
                    "event": "message.received",
                    "account": account.bot_id,
                    "ref": getattr(account, "ref", None),
                    "user": row.user_id,
                    "message_id": row.message_id,
                    "kind": kind,
                    "text": text,
                    "time": iso(created),
                }
            )

    def on_delivery(self, account: Account, outcome: Any) -> None:
        self._put(
            {
                "event": "delivery.changed",
                "account": account.bot_id,
                "ref": getattr(account, "ref", None),
                "id": outcome.outbox_id,
                "client_id": outcome.client_id,
                "user": outcome.user_id,
                "state": outcome.state,
                "message_id": outcome.message_id,
                "reason": outcome.reason,
                "time": _now(),
            }
        )

    def _put(self, event: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            _log.warning("webhook_dropped", kind=event["event"], reason="queue full")

    # ---- the worker -----------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None:
            self._http = httpx.AsyncClient(transport=self._transport, timeout=self.timeout)
            self._worker = asyncio.create_task(self._run(), name="ilinkbot-webhooks")

    async def join(self) -> None:
        """Until every queued event was sent or given up (tests, shutdown)."""
        await self._queue.join()

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            except Exception:
                self.dropped += 1
                _log.exception("webhook_error", kind=event["event"])
            finally:
                self._queue.task_done()

    async def _deliver(self, event: dict[str, Any]) -> None:
        assert self._http is not None
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            "X-Ilinkbot-Event": event["event"],
            "User-Agent": "ilinkbot-webhook",
        }
        delay = self.first_delay
        for attempt in range(1, self.max_attempts + 1):
            try:
                r = await self._http.post(self.url, content=body, headers=headers)
                if 200 <= r.status_code < 300:
                    return
                error = f"HTTP {r.status_code}"
                final = 400 <= r.status_code < 500 and r.status_code not in (408, 429)
            except httpx.HTTPError as exc:
                error, final = f"{type(exc).__name__}: {exc}", False
            if final or attempt == self.max_attempts:
                self.dropped += 1
                _log.warning("webhook_failed", kind=event["event"], attempts=attempt, error=error)
                return
            _log.info("webhook_retry", kind=event["event"], attempt=attempt, error=error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_SECONDS)
