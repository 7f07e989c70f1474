"""Wire-level helpers: the exact bytes, headers and URLs the official client produces.

Everything here is a pure function so that the client and the sandbox agree on one
definition (PROTOCOL.md §1.2-1.5, §2.5, test vectors in §10).
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
from typing import Any
from urllib.parse import quote, urljoin

__all__ = [
    "DEFAULT_BOT_AGENT_FALLBACK",
    "account_id_candidates",
    "client_version",
    "derived_client_id",
    "dumps",
    "encode_query_value",
    "endpoint_url",
    "new_client_id",
    "new_uin",
    "normalize_account_id",
    "sanitize_bot_agent",
    "strip_none",
    "uin_header",
]

DEFAULT_BOT_AGENT_FALLBACK = "OpenClaw"


def strip_none(value: Any) -> Any:
    """Drop ``None`` members recursively: JS ``JSON.stringify`` omits ``undefined``."""
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value]
    return value


def dumps(obj: Any) -> bytes:
    """Serialise like ``JSON.stringify``: compact, insertion order, raw UTF-8, no nulls."""
    return json.dumps(strip_none(obj), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def uin_header(value: int) -> str:
    """``X-WECHAT-UIN``: base64 of the decimal text of a uint32."""
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError("X-WECHAT-UIN takes an unsigned 32-bit integer")
    return base64.b64encode(str(value).encode("ascii")).decode("ascii")


def new_uin() -> str:
    """A fresh random ``X-WECHAT-UIN`` value (one per request)."""
    return uin_header(secrets.randbits(32))


@functools.lru_cache(maxsize=16)  # one version per client, every request
def client_version(version: str) -> str:
    """``iLink-App-ClientVersion``: ``MAJOR<<16 | MINOR<<8 | PATCH`` as a decimal string."""
    parts = ([*version.strip().split("."), "0", "0", "0"])[:3]
    nums = []
    for part in parts:
        digits = re.match(r"\d*", part)
        nums.append(int(digits.group(0)) if digits and digits.group(0) else 0)
    major, minor, patch = nums
    return str(((major & 0xFF) << 16) | ((minor & 0xFF) << 8) | (patch & 0xFF))


def encode_query_value(value: str) -> str:
    """Percent-encode like JavaScript ``encodeURIComponent``."""
    return quote(value, safe="-_.!~*'()")


@functools.lru_cache(maxsize=256)  # the same few endpoints, every request
def endpoint_url(base: str, path: str) -> str:
    """Resolve ``path`` relative to ``base`` forced to end with ``/`` (RFC 3986)."""
    return urljoin(base.rstrip("/") + "/", path)


_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
_VERSION = re.compile(r"^[A-Za-z0-9_.+\-]{1,32}$")
_COMMENT = re.compile(r"^[\x20-\x27\x2a-\x7e]{1,64}$")  # printable ASCII except ( and )
_MAX_AGENT_BYTES = 256


def _is_product(piece: str) -> bool:
    name, sep, version = piece.partition("/")
    return bool(sep) and bool(_NAME.match(name)) and bool(_VERSION.match(version))


def sanitize_bot_agent(configured: object) -> str:
    """Reduce a configured ``bot_agent`` to the grammar the server expects (§1.5)."""
    if not isinstance(configured, str) or not configured.strip():
        return DEFAULT_BOT_AGENT_FALLBACK
    raw = configured.strip().split()
    pieces: list[str] = []
    i = 0
    while i < len(raw):
        piece = raw[i]
        if piece.startswith("(") and not piece.endswith(")"):
            glued = [piece]
            while i + 1 < len(raw) and not glued[-1].endswith(")"):
                i += 1
                glued.append(raw[i])
            piece = " ".join(glued)
        pieces.append(piece)
        i += 1

    out: list[str] = []
    pending: str | None = None
    for piece in pieces:
        if piece.startswith("(") and piece.endswith(")") and len(piece) >= 2:
            inner = piece[1:-1]
            if pending is not None and _COMMENT.match(inner):
                out.append(f"{pending} ({inner})")
            elif pending is not None:
                out.append(pending)
            pending = None
            continue
        if pending is not None:
            out.append(pending)
            pending = None
        if _is_product(piece):
            pending = piece
    if pending is not None:
        out.append(pending)
    if not out:
        return DEFAULT_BOT_AGENT_FALLBACK
    joined = " ".join(out)
    if len(joined.encode("utf-8")) <= _MAX_AGENT_BYTES:
        return joined
    kept: list[str] = []
    for token in out:
        candidate = " ".join([*kept, token])
        if len(candidate.encode("utf-8")) > _MAX_AGENT_BYTES:
            break
        kept.append(token)
    return " ".join(kept) if kept else DEFAULT_BOT_AGENT_FALLBACK


_SIMPLE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$", re.IGNORECASE)


def normalize_account_id(raw: str) -> str:
    """OpenClaw's account-id normalisation: ``abc@im.bot`` -> ``abc-im-bot`` (§2.5)."""
    trimmed = raw.strip()
    if not trimmed:
        return "default"
    if _SIMPLE_ID.match(trimmed):
        return trimmed.lower()
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", trimmed.lower()).strip("-")[:64]
    return cleaned or "default"


def account_id_candidates(raw: str) -> list[str]:
    """Ids to try when looking an account up: normalised, raw, and the raw form rebuilt."""
    out = [normalize_account_id(raw), raw.strip()]
    norm = out[0]
    for suffix, original in (("-im-bot", "@im.bot"), ("-im-wechat", "@im.wechat")):
        if norm.endswith(suffix):
            out.append(norm[: -len(suffix)] + original)
    return list(dict.fromkeys(x for x in out if x))


def new_client_id(now_ms: int | None = None) -> str:
    """A fresh ``client_id`` in the official client's shape: ``openclaw-weixin:<ms>-<8 hex>``."""
    import time

    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"openclaw-weixin:{ms}-{secrets.token_hex(4)}"


def derived_client_id(seed: str, position: int, now_ms: int) -> str:
    """A deterministic ``client_id`` (same shape) for reply ``position`` to inbound ``seed``.

    A handler re-run after a crash produces the same ids, so the store finds the rows it
    already queued (whether the server also drops a repeated id is unknown).
    """
    import hashlib

    digest = hashlib.sha256(f"{seed}:{position}".encode()).hexdigest()[:8]
    return f"openclaw-weixin:{now_ms}-{digest}"
