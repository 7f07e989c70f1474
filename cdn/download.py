"""Choose, fetch and decrypt inbound media (PROTOCOL.md §4.4, §7.5-7.6).

:func:`pick_media` chooses the one item of a message worth downloading (IMAGE > VIDEO > FILE
> VOICE, else the media of a quoted message). :func:`download_media` fetches it, streaming
the ciphertext through the decryptor into memory or into a file, and refuses:

* a URL that is neither on the configured CDN base's origin (scheme, host, port) nor an
  ``https`` URL on a host of the CDN's domain families (``allowed_domains``, by default
  Tencent's; an IP literal never counts): a crafted ``full_url`` must not make the bot fetch
  arbitrary or internal addresses. Redirects are not followed;
* more than ``max_bytes`` (checked on ``Content-Length`` and again while streaming);
* a missing or malformed AES key (keyless *images* are fetched as they are, like the
  official client does).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from ilinkbot.ilink.log import get_logger, register_secret
from ilinkbot.ilink.models import CDNMedia, MessageItem, MessageItemType, WeixinMessage
from ilinkbot.ilink.wire import encode_query_value

from .crypto import BLOCK_SIZE, StreamDecryptor, decode_aes_key, key_from_hex
from .domains import DEFAULT_CDN_DOMAINS
from .errors import CdnDownloadError, MediaRefused
from .mime import (
    DEFAULT_MIME,
    MediaKind,
    extension_for_mime,
    mime_from_file_name,
    sanitize_file_name,
    sniff_image_mime,
)

__all__ = [
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "DEFAULT_MAX_BYTES",
    "DownloadedMedia",
    "MediaRef",
    "cdn_download_url",
    "check_cdn_url",
    "download_media",
    "pick_media",
]

#: Inbound media cap, as the official host's media store (§7.4, §8.1).
DEFAULT_MAX_BYTES = 100 * 2**20
#: Bounds stalls only (a minute without progress), not the total duration.
DEFAULT_DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, pool=None)

_log = get_logger("cdn.download")
_WRITE_BATCH = 1 << 20
_DEFAULT_PORTS = {"http": 80, "https": 443}
_VOICE_MIME = {5: "audio/amr", 7: "audio/mpeg", 8: "audio/ogg"}


@dataclass(frozen=True)
class MediaRef:
    """Where one inbound media item lives and how to decrypt it.

    ``aes_key_hex`` is ``image_item.aeskey``; ``aes_key`` is ``media.aes_key`` (base64). Both
    are secrets and left out of ``repr()``. ``quoted`` marks media taken from a quoted
    message.
    """

    kind: MediaKind
    encrypt_query_param: str | None = None
    full_url: str | None = None
    aes_key_hex: str | None = field(default=None, repr=False)
    aes_key: str | None = field(default=None, repr=False)
    file_name: str | None = None
    size_hint: int | None = None
    encode_type: int | None = None
    quoted: bool = False

    def __post_init__(self) -> None:
        register_secret(self.aes_key_hex)
        register_secret(self.aes_key)

    @classmethod
    def from_item(cls, item: MessageItem, *, quoted: bool = False) -> MediaRef | None:
        """The media of an IMAGE/VIDEO/FILE/VOICE item, ``None`` when it has nothing to fetch."""
        media: CDNMedia | None
        kind: MediaKind
        extra: dict[str, Any] = {}
        if item.type == MessageItemType.IMAGE and item.image_item is not None:
            kind, media = MediaKind.IMAGE, item.image_item.media
            extra = {"aes_key_hex": item.image_item.aeskey or None}
            extra["size_hint"] = item.image_item.mid_size
        elif item.type == MessageItemType.VIDEO and item.video_item is not None:
            kind, media = MediaKind.VIDEO, item.video_item.media
            extra = {"size_hint": item.video_item.video_size}
        elif item.type == MessageItemType.FILE and item.file_item is not None:
            kind, media = MediaKind.FILE, item.file_item.media
            length = item.file_item.len
            extra = {
                "file_name": item.file_item.file_name,
                "size_hint": int(length) if length and length.strip().isdigit() else None,
            }
        elif item.type == MessageItemType.VOICE and item.voice_item is not None:
            kind, media = MediaKind.VOICE, item.voice_item.media
            extra = {"encode_type": item.voice_item.encode_type}
        else:
            return None
        if media is None or not media.downloadable:
            return None
        return cls(
            kind=kind,
            encrypt_query_param=media.encrypt_query_param or None,
            full_url=media.full_url or None,
            aes_key=media.aes_key or None,
            quoted=quoted,
            **extra,
        )

    def key(self) -> bytes | None:
        """The 16-byte AES key; ``None`` for a keyless image (fetched undecrypted).

        Raises :class:`~cdn.errors.MediaRefused` for a malformed key or a missing one on
        anything but an image.
        """
        if self.kind is MediaKind.IMAGE and self.aes_key_hex:
            return key_from_hex(self.aes_key_hex)
        if self.aes_key:
            return decode_aes_key(self.aes_key)
        if self.kind is MediaKind.IMAGE:
            return None
        raise MediaRefused(f"{self.kind.value} has no AES key")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (contains the key material: store it like a secret)."""
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "encrypt_query_param": self.encrypt_query_param,
            "full_url": self.full_url,
            "aes_key_hex": self.aes_key_hex,
            "aes_key": self.aes_key,
            "file_name": self.file_name,
            "size_hint": self.size_hint,
            "encode_type": self.encode_type,
            "quoted": self.quoted,
        }
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaRef:
        def opt_str(key: str) -> str | None:
            v = data.get(key)
            return v if isinstance(v, str) and v else None

        def opt_int(key: str) -> int | None:
            v = data.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        ref = cls(
            kind=MediaKind(str(data.get("kind"))),
            encrypt_query_param=opt_str("encrypt_query_param"),
            full_url=opt_str("full_url"),
            aes_key_hex=opt_str("aes_key_hex"),
            aes_key=opt_str("aes_key"),
            file_name=opt_str("file_name"),
            size_hint=opt_int("size_hint"),
            encode_type=opt_int("encode_type"),
            quoted=data.get("quoted") is True,
        )
        if not (ref.encrypt_query_param or ref.full_url):
            raise ValueError("MediaRef: needs encrypt_query_param or full_url")
        return ref


@dataclass(frozen=True)
class DownloadedMedia:
    """Decrypted media: in ``data`` (no ``dest``) or at ``path``."""

    kind: MediaKind
    file_name: str
    mime: str
    size: int
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None
    #: ``False`` only for a keyless image, which is returned exactly as fetched.
    decrypted: bool = True
    quoted: bool = False


_ORDER = (
    MessageItemType.IMAGE,
    MessageItemType.VIDEO,
    MessageItemType.FILE,
    MessageItemType.VOICE,
)


def pick_media(message: WeixinMessage) -> MediaRef | None:
    """The one media item to download (§4.4), or ``None``.

    First downloadable IMAGE, else VIDEO, else FILE, else VOICE without a transcript; when
    the message has none, the media of the first TEXT item quoting a media item.
    """
    items = message.items
    for item_type in _ORDER:
        for item in items:
            if item.type != item_type:
                continue
            if item_type == MessageItemType.VOICE and item.voice_item and item.voice_item.text:
                continue
            ref = MediaRef.from_item(item)
            if ref is not None:
                return ref
    for item in items:
        quoted = item.ref_msg.message_item if item.ref_msg else None
        if item.type == MessageItemType.TEXT and quoted is not None and quoted.type in _ORDER:
            return MediaRef.from_item(quoted, quoted=True)
    return None


def cdn_download_url(cdn_base_url: str, encrypt_query_param: str) -> str:
    """``<cdn_base>/download?encrypted_query_param=…`` (§7.5)."""
    return (
        f"{cdn_base_url.rstrip('/')}/download?encrypted_query_param="
        f"{encode_query_value(encrypt_query_param)}"
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.host.lower().rstrip("."), url.port or _DEFAULT_PORTS.get(scheme)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _in_domains(host: str, domains: Collection[str]) -> bool:
    for domain in domains:
        domain = domain.lower().strip(".")
        if domain and (host == domain or host.endswith("." + domain)):
            return True
    return False


def check_cdn_url(
    url: str,
    cdn_base_url: str,
    allowed_origins: Collection[str] = (),
    allowed_domains: Collection[str] = DEFAULT_CDN_DOMAINS,
) -> httpx.URL:
    """Parse ``url`` and refuse it unless it is on the CDN base's origin (or an allowed one),
    or is ``https`` on a host named by ``allowed_domains`` (the domain or a subdomain).

    ``allowed_origins`` are further base URLs (only their scheme, host and port count); they
    and the CDN base are trusted as configured, so the sandbox's ``http://127.0.0.1`` CDN
    works. A URL allowed by domain must be ``https`` and never an IP literal.
    Raises :class:`~cdn.errors.MediaRefused`.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise MediaRefused("media URL is not a valid URL") from None
    if parsed.scheme.lower() not in _DEFAULT_PORTS or not parsed.host:
        raise MediaRefused("media URL must be an absolute http(s) URL")
    if parsed.userinfo:
        raise MediaRefused("media URL must not carry credentials")
    origin = _origin(parsed)
    if origin in {_origin(httpx.URL(base)) for base in (cdn_base_url, *allowed_origins)}:
        return parsed
    scheme, host, port = origin
    if scheme == "https" and not _is_ip_literal(host) and _in_domains(host, allowed_domains):
        return parsed
    raise MediaRefused(
        f"media URL {scheme}://{host}:{port} is neither the configured CDN's origin nor https"
        " on an allowed CDN domain; refused"
    )


class _Sink:
    """Collects plaintext into memory or a temporary file, enforcing the size cap."""

    def __init__(self, tmp_path: Path | None, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.head = b""
        self._mem = bytearray()
        self._pending = bytearray()
        self.tmp_path = tmp_path
        self._fh: BinaryIO | None = None
        if tmp_path is not None:
            self._fh = tmp_path.open("xb")

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.max_bytes:
            raise MediaRefused(f"media is larger than the {self.max_bytes}-byte cap")
        if len(self.head) < 16:
            self.head = (self.head + data)[:16]
        if self._fh is None:
            self._mem += data
            return
        self._pending += data
        if len(self._pending) >= _WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        if self._fh is not None and self._pending:
            chunk = bytes(self._pending)
            self._pending.clear()
            await asyncio.to_thread(self._fh.write, chunk)

    async def finish(self) -> bytes | None:
        if self._fh is None:
            return bytes(self._mem)
        await self._flush()
        fh = self._fh
        self._fh = None
        await asyncio.to_thread(_fsync_close, fh)
        return None

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.tmp_path is not None:
            self.tmp_path.unlink(missing_ok=True)


def _fsync_close(fh: BinaryIO) -> None:
    try:
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        fh.close()


def _name_and_mime(ref: MediaRef, head: bytes) -> tuple[str, str]:
    if ref.kind is MediaKind.FILE:
        name = sanitize_file_name(ref.file_name, default="file.bin")
        return name, mime_from_file_name(name)
    if ref.kind is MediaKind.IMAGE:
        mime = sniff_image_mime(head) or DEFAULT_MIME
        return f"image{extension_for_mime(mime)}", mime
    if ref.kind is MediaKind.VIDEO:
        return "video.mp4", "video/mp4"
    mime = _VOICE_MIME.get(ref.encode_type or 0, "audio/silk")
    return f"voice{extension_for_mime(mime)}", mime


def _unique_in(directory: Path, name: str) -> Path:
    candidate = directory / name
    dot = name.rfind(".")
    stem, ext = (name[:dot], name[dot:]) if dot > 0 else (name, "")
    n = 1
    while candidate.exists():
        candidate = directory / f"{stem} ({n}){ext}"
        n += 1
    return candidate


async def download_media(
    http: httpx.AsyncClient,
    cdn_base_url: str,
    ref: MediaRef,
    *,
    dest: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allowed_origins: Collection[str] = (),
    allowed_domains: Collection[str] = DEFAULT_CDN_DOMAINS,
    timeout: httpx.Timeout | float | None = DEFAULT_DOWNLOAD_TIMEOUT,
) -> DownloadedMedia:
    """Fetch and decrypt ``ref``.

    Without ``dest`` the plaintext is returned in ``data``. With ``dest`` an existing
    directory, the file is saved inside it under the sanitised name (never overwriting:
    ``name (1).ext`` …); any other ``dest`` is the exact file path (replaced atomically).
    The plaintext is streamed, so memory stays bounded when writing to a file.

    ``allowed_origins`` and ``allowed_domains`` are as in :func:`check_cdn_url`.

    Raises :class:`~cdn.errors.MediaRefused` (foreign URL, over ``max_bytes``, bad key) and
    :class:`~cdn.errors.CdnDownloadError` (HTTP or network failure, damaged ciphertext).
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must not be negative")
    key = ref.key()
    if ref.full_url:
        url = ref.full_url
    elif ref.encrypt_query_param:
        url = cdn_download_url(cdn_base_url, ref.encrypt_query_param)
    else:
        raise MediaRefused("media reference has neither full_url nor encrypt_query_param")
    check_cdn_url(url, cdn_base_url, allowed_origins, allowed_domains)
    wire_cap = max_bytes + BLOCK_SIZE if key is not None else max_bytes

    tmp_path: Path | None = None
    if dest is not None:
        directory = dest if dest.is_dir() else dest.parent
        tmp_path = directory / f".ilink-download-{secrets.token_hex(6)}.part"
    sink = _Sink(tmp_path, max_bytes)
    decryptor = StreamDecryptor(key) if key is not None else None
    try:
        try:
            async with http.stream("GET", url, timeout=timeout, follow_redirects=False) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    body = b""
                    async for part in response.aiter_bytes():
                        body += part
                        if len(body) >= 300:
                            break
                    raise CdnDownloadError(
                        f"CDN download HTTP {status}: {body[:300].decode('utf-8', 'replace')}",
                        status=status,
                        retryable=status >= 500 or status in (408, 429),
                    )
                length = response.headers.get("content-length", "")
                if length.strip().isdigit() and int(length) > wire_cap:
                    raise MediaRefused(
                        f"media of {int(length)} bytes is larger than the {max_bytes}-byte cap"
                    )
                received = 0
                async for chunk in response.aiter_bytes():
                    received += len(chunk)
                    if received > wire_cap:
                        raise MediaRefused(f"media is larger than the {max_bytes}-byte cap")
                    await sink.write(decryptor.update(chunk) if decryptor else chunk)
        except httpx.HTTPError as exc:
            raise CdnDownloadError(
                f"CDN download network error: {type(exc).__name__}: {exc}", retryable=True
            ) from None
        if decryptor is not None:
            await sink.write(decryptor.finalize())
        data = await sink.finish()
    except BaseException:
        sink.discard()
        raise

    name, mime = _name_and_mime(ref, sink.head)
    path: Path | None = None
    if dest is not None and tmp_path is not None:
        path = _unique_in(dest, name) if dest.is_dir() else dest
        os.replace(tmp_path, path)
    _log.debug("cdn_download_ok", kind=ref.kind.value, size=sink.size, quoted=ref.quoted)
    return DownloadedMedia(
        kind=ref.kind,
        file_name=name,
        mime=mime,
        size=sink.size,
        data=data,
        path=path,
        decrypted=decryptor is not None,
        quoted=ref.quoted,
    )
