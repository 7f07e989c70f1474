"""Encrypt a file, upload it to the WeChat CDN and build its message item (§7.1-7.3, §5.3).

A file is read twice, both times in bounded chunks: once for the plaintext size and MD5
(``getuploadurl`` needs them first), then again while it is encrypted and streamed as the
body of the CDN POST with an explicit ``Content-Length``. A file that changes between the
two passes aborts the upload (:class:`~cdn.errors.CdnUploadError`, not retryable) before the
last ciphertext block is sent.

The result, :class:`UploadedMedia`, is JSON-able (:meth:`UploadedMedia.to_dict`) so an
outbox can keep it and re-send the message item without uploading again.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ilinkbot.ilink.client import IlinkClient
from ilinkbot.ilink.log import get_logger, register_secret
from ilinkbot.ilink.wire import encode_query_value

from .crypto import CHUNK_SIZE, StreamEncryptor, ciphertext_size, message_aes_key, new_aes_key
from .errors import CdnUploadError
from .mime import MediaKind, kind_for_mime, mime_from_file_name, sanitize_file_name

__all__ = [
    "DEFAULT_UPLOAD_TIMEOUT",
    "UPLOAD_ATTEMPTS",
    "ProgressCallback",
    "UploadedMedia",
    "cdn_upload_url",
    "upload_media",
]

#: Attempts per CDN upload; no delay between them; a 4xx answer ends them (§7.3).
UPLOAD_ATTEMPTS = 3
#: The official client sets no timeout at all. This one bounds only *stalls* (no progress for
#: a minute while connecting, writing or waiting), never the total duration of an upload.
DEFAULT_UPLOAD_TIMEOUT = httpx.Timeout(60.0, pool=None)

ProgressCallback = Callable[[int, int], None]
"""``progress(sent_ciphertext_bytes, total_ciphertext_bytes)``, called as chunks go out."""

_log = get_logger("cdn.upload")
_MAX_REASON = 300


@dataclass(frozen=True)
class UploadedMedia:
    """One file stored on the CDN: everything needed to (re-)send its message item.

    ``aes_key_hex`` is a secret: it is in :meth:`to_dict` (the outbox must keep it) but not in
    ``repr()``.
    """

    kind: MediaKind
    file_name: str
    download_param: str
    aes_key_hex: str = field(repr=False)
    plaintext_size: int
    ciphertext_size: int
    md5: str
    filekey: str
    mime: str = "application/octet-stream"

    def __post_init__(self) -> None:
        register_secret(self.aes_key_hex)

    @property
    def aes_key_b64(self) -> str:
        """``media.aes_key`` of the message item: base64 of the 32 hex characters."""
        return message_aes_key(bytes.fromhex(self.aes_key_hex))

    def media(self) -> dict[str, Any]:
        return {
            "encrypt_query_param": self.download_param,
            "aes_key": self.aes_key_b64,
            "encrypt_type": 1,
        }

    def to_item(self) -> dict[str, Any]:
        """The message item exactly as the official client builds it (§5.3)."""
        if self.kind is MediaKind.IMAGE:
            return {
                "type": 2,
                "image_item": {"media": self.media(), "mid_size": self.ciphertext_size},
            }
        if self.kind is MediaKind.VIDEO:
            return {
                "type": 5,
                "video_item": {"media": self.media(), "video_size": self.ciphertext_size},
            }
        if self.kind is MediaKind.FILE:
            return {
                "type": 4,
                "file_item": {
                    "media": self.media(),
                    "file_name": self.file_name,
                    "len": str(self.plaintext_size),
                },
            }
        raise ValueError(f"cannot send media of kind {self.kind.value!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (contains the AES key: store it like a secret)."""
        return {
            "kind": self.kind.value,
            "file_name": self.file_name,
            "download_param": self.download_param,
            "aes_key_hex": self.aes_key_hex,
            "plaintext_size": self.plaintext_size,
            "ciphertext_size": self.ciphertext_size,
            "md5": self.md5,
            "filekey": self.filekey,
            "mime": self.mime,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadedMedia:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on anything malformed."""

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str) or not value:
                raise ValueError(f"UploadedMedia: {key!r} must be a non-empty string")
            return value

        def number(key: str) -> int:
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"UploadedMedia: {key!r} must be a non-negative integer")
            return value

        key_hex = text("aes_key_hex").lower()
        if len(key_hex) != 32 or any(c not in "0123456789abcdef" for c in key_hex):
            raise ValueError("UploadedMedia: 'aes_key_hex' must be 32 hex characters")
        mime = data.get("mime")
        return cls(
            kind=MediaKind(text("kind")),
            file_name=text("file_name"),
            download_param=text("download_param"),
            aes_key_hex=key_hex,
            plaintext_size=number("plaintext_size"),
            ciphertext_size=number("ciphertext_size"),
            md5=text("md5"),
            filekey=text("filekey"),
            mime=mime if isinstance(mime, str) and mime else "application/octet-stream",
        )


def cdn_upload_url(cdn_base_url: str, upload_param: str, filekey: str) -> str:
    """``<cdn_base>/upload?encrypted_query_param=…&filekey=…`` (when no full URL was given)."""
    return (
        f"{cdn_base_url.rstrip('/')}/upload?encrypted_query_param="
        f"{encode_query_value(upload_param)}&filekey={encode_query_value(filekey)}"
    )


class _SourceChanged(Exception):
    """The file on disk no longer matches the size/MD5 announced to getuploadurl."""


@dataclass
class _Source:
    """Plaintext to upload: a file path or bytes in memory."""

    path: Path | None
    data: bytes | None
    size: int = 0
    md5: str = ""

    def measure(self) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        for chunk in self.chunks():
            digest.update(chunk)
            size += len(chunk)
        self.size, self.md5 = size, digest.hexdigest()

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Generator[bytes, None, None]:
        if self.data is not None:
            view = memoryview(self.data)
            for start in range(0, len(view), chunk_size):
                yield bytes(view[start : start + chunk_size])
            return
        assert self.path is not None
        with self.path.open("rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk


def _encrypted_body(
    source: _Source,
    key: bytes,
    total: int,
    progress: ProgressCallback | None,
    chunk_size: int,
) -> AsyncIterator[bytes]:
    """A fresh async iterator over the ciphertext (one per attempt)."""

    async def gen() -> AsyncIterator[bytes]:
        enc = StreamEncryptor(key)
        verify = source.path is not None
        digest = hashlib.md5(usedforsecurity=False)
        chunks = source.chunks(chunk_size)
        read = 0
        sent = 0

        def step() -> tuple[int, bytes] | None:
            chunk = next(chunks, None)
            if chunk is None:
                return None
            if verify:
                digest.update(chunk)
            return len(chunk), enc.update(chunk)

        try:
            while True:
                # File read + AES in a worker thread: the event loop stays responsive.
                stepped = await asyncio.to_thread(step)
                if stepped is None:
                    break
                n, out = stepped
                read += n
                if read > source.size:
                    raise _SourceChanged("the file grew after it was measured")
                if out:
                    sent += len(out)
                    yield out
                    if progress is not None:
                        progress(sent, total)
            # Checked before the last block goes out, so the CDN never gets a whole body.
            if read != source.size or (verify and digest.hexdigest() != source.md5):
                raise _SourceChanged("the file changed after it was measured")
            tail = enc.finalize()
            sent += len(tail)
            yield tail
            if progress is not None:
                progress(sent, total)
        finally:
            chunks.close()

    return gen()


def _reason(response: httpx.Response) -> str:
    header: str = response.headers.get("x-error-message", "")
    if header:
        return header[:_MAX_REASON]
    return response.text[:_MAX_REASON] or f"status {response.status_code}"


async def _post_ciphertext(
    http: httpx.AsyncClient,
    url: str,
    source: _Source,
    key: bytes,
    total: int,
    *,
    progress: ProgressCallback | None,
    timeout: httpx.Timeout | float | None,
    chunk_size: int,
) -> str:
    """POST the ciphertext with up to :data:`UPLOAD_ATTEMPTS` tries; the download param."""
    last: CdnUploadError | None = None
    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        body = _encrypted_body(source, key, total, progress, chunk_size)
        try:
            response = await http.post(
                url,
                content=body,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(total),
                },
                timeout=timeout,
                follow_redirects=False,
            )
        except _SourceChanged as exc:
            raise CdnUploadError(
                f"CDN upload aborted: {exc}", retryable=False, attempts=attempt
            ) from None
        except httpx.HTTPError as exc:
            cause = exc.__context__
            if isinstance(cause, _SourceChanged):
                raise CdnUploadError(
                    f"CDN upload aborted: {cause}", retryable=False, attempts=attempt
                ) from None
            last = CdnUploadError(
                f"CDN upload network error: {type(exc).__name__}: {exc}",
                retryable=True,
                attempts=attempt,
            )
            _log.warning("cdn_upload_retry", attempt=attempt, error=type(exc).__name__)
            continue
        status = response.status_code
        if 400 <= status < 500:
            raise CdnUploadError(
                f"CDN upload client error {status}: {_reason(response)}",
                retryable=False,
                status=status,
                attempts=attempt,
            )
        if status != 200:
            last = CdnUploadError(
                f"CDN upload server error {status}: {_reason(response)}",
                retryable=True,
                status=status,
                attempts=attempt,
            )
            _log.warning("cdn_upload_retry", attempt=attempt, status=status)
            continue
        param: str = response.headers.get("x-encrypted-param", "")
        if not param:
            last = CdnUploadError(
                "CDN upload answer has no x-encrypted-param header",
                retryable=True,
                status=status,
                attempts=attempt,
            )
            _log.warning("cdn_upload_retry", attempt=attempt, status=status, error="no_param")
            continue
        _log.debug("cdn_upload_ok", attempt=attempt, size=total)
        return param
    assert last is not None
    raise last


async def upload_media(
    client: IlinkClient,
    cdn_base_url: str,
    source: Path | bytes,
    *,
    to_user_id: str,
    file_name: str | None = None,
    kind: MediaKind | None = None,
    progress: ProgressCallback | None = None,
    timeout: httpx.Timeout | float | None = DEFAULT_UPLOAD_TIMEOUT,
    chunk_size: int = CHUNK_SIZE,
) -> UploadedMedia:
    """Encrypt ``source`` with a fresh key, upload it for ``to_user_id`` and describe it.

    ``file_name`` (required for bytes; defaults to the path's name) decides the kind by its
    extension (§7.8) unless ``kind`` forces one, and is the ``file_name`` of a FILE item.
    Memory use is bounded by ``chunk_size`` whatever the file size.

    Raises :class:`~cdn.errors.CdnUploadError` when the CDN refuses or keeps failing, and the
    :mod:`ilink.errors` errors of ``getuploadurl``.
    """
    if isinstance(source, bytes | bytearray):
        if not file_name:
            raise ValueError("upload_media: file_name is required for bytes input")
        src = _Source(path=None, data=bytes(source))
        raw_name = file_name
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"upload_media: not a file: {path}")
        src = _Source(path=path, data=None)
        raw_name = file_name or path.name
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    name = sanitize_file_name(raw_name)
    mime = mime_from_file_name(name)
    media_kind = kind or kind_for_mime(mime)
    if media_kind is MediaKind.VOICE:
        raise ValueError("upload_media: sending voice messages is not supported")

    await asyncio.to_thread(src.measure)
    total = ciphertext_size(src.size)
    filekey = secrets.token_hex(16)
    key = new_aes_key()
    key_hex = key.hex()

    answer = await client.get_upload_url(
        filekey=filekey,
        media_type=int(media_kind.upload_media_type),
        to_user_id=to_user_id,
        rawsize=src.size,
        rawfilemd5=src.md5,
        filesize=total,
        aeskey=key_hex,
    )
    if answer.upload_full_url:
        url = answer.upload_full_url
    elif answer.upload_param:
        url = cdn_upload_url(cdn_base_url, answer.upload_param, filekey)
    else:  # IlinkClient already refuses this; kept for other implementations
        raise CdnUploadError("getuploadurl gave no upload URL", retryable=True)

    param = await _post_ciphertext(
        client.http,
        url,
        src,
        key,
        total,
        progress=progress,
        timeout=timeout,
        chunk_size=chunk_size,
    )
    return UploadedMedia(
        kind=media_kind,
        file_name=name,
        download_param=param,
        aes_key_hex=key_hex,
        plaintext_size=src.size,
        ciphertext_size=total,
        md5=src.md5,
        filekey=filekey,
        mime=mime,
    )
