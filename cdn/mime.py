"""MIME types, media kinds and safe file names (PROTOCOL.md §7.8, §5.3, §4.4).

Routing of uploads is by the lower-cased extension of the file name only (no content
sniffing): ``image/*`` is sent as an IMAGE item, ``video/*`` as a VIDEO item, anything else,
audio included, as a FILE item. For inbound images, which arrive without a name, the first
bytes are inspected only to choose a file extension.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from urllib.parse import urlsplit

from ilinkbot.ilink.models import MessageItemType, UploadMediaType

__all__ = [
    "DEFAULT_MIME",
    "EXTENSION_TO_MIME",
    "MIME_TO_EXTENSION",
    "MediaKind",
    "extension_for_mime",
    "extension_from_content_type_or_url",
    "kind_for_file_name",
    "kind_for_mime",
    "mime_from_file_name",
    "sanitize_file_name",
    "sniff_image_mime",
]

DEFAULT_MIME = "application/octet-stream"

EXTENSION_TO_MIME: dict[str, str] = {
    ".pdf": "application/pdf",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".ppt": "application/vnd.ms-powerpoint",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".txt": "text/plain",
    ".csv": "text/csv",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".gz": "application/gzip",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}

#: Reverse lookup used to name downloaded media (§7.8).
MIME_TO_EXTENSION: dict[str, str] = {
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/bmp": ".bmp",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "video/x-matroska": ".mkv",
    "video/x-msvideo": ".avi",
    "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg",
    "audio/wav": ".wav",
    "audio/silk": ".silk",
    "audio/amr": ".amr",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    "application/x-tar": ".tar",
    "application/gzip": ".gz",
    "text/plain": ".txt",
    "text/csv": ".csv",
}


class MediaKind(StrEnum):
    """What a piece of media is sent or received as."""

    IMAGE = "image"
    VIDEO = "video"
    FILE = "file"
    VOICE = "voice"

    @property
    def item_type(self) -> MessageItemType:
        return {
            MediaKind.IMAGE: MessageItemType.IMAGE,
            MediaKind.VIDEO: MessageItemType.VIDEO,
            MediaKind.FILE: MessageItemType.FILE,
            MediaKind.VOICE: MessageItemType.VOICE,
        }[self]

    @property
    def upload_media_type(self) -> UploadMediaType:
        return {
            MediaKind.IMAGE: UploadMediaType.IMAGE,
            MediaKind.VIDEO: UploadMediaType.VIDEO,
            MediaKind.FILE: UploadMediaType.FILE,
            MediaKind.VOICE: UploadMediaType.VOICE,
        }[self]


def _extension(name: str) -> str:
    base = re.split(r"[\\/]", name)[-1]
    dot = base.rfind(".")
    return base[dot:].lower() if dot > 0 else ""


def mime_from_file_name(name: str) -> str:
    """MIME type from the lower-cased extension; ``application/octet-stream`` if unknown."""
    return EXTENSION_TO_MIME.get(_extension(name), DEFAULT_MIME)


def kind_for_mime(mime: str) -> MediaKind:
    """Upload routing (§5.3): image/* → IMAGE, video/* → VIDEO, everything else → FILE."""
    if mime.startswith("image/"):
        return MediaKind.IMAGE
    if mime.startswith("video/"):
        return MediaKind.VIDEO
    return MediaKind.FILE


def kind_for_file_name(name: str) -> MediaKind:
    return kind_for_mime(mime_from_file_name(name))


def extension_for_mime(mime: str) -> str:
    """File extension for a MIME type (parameters ignored); ``.bin`` if unknown."""
    return MIME_TO_EXTENSION.get(mime.split(";")[0].strip().lower(), ".bin")


def extension_from_content_type_or_url(content_type: str | None, url: str) -> str:
    """Extension from a ``Content-Type``, else a known one from the URL path, else ``.bin``."""
    if content_type:
        ext = extension_for_mime(content_type)
        if ext != ".bin":
            return ext
    ext = _extension(urlsplit(url).path)
    return ext if ext in EXTENSION_TO_MIME else ".bin"


def sniff_image_mime(head: bytes) -> str | None:
    """Recognise PNG, JPEG, GIF, WebP and BMP by their first bytes (naming only)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(head) >= 12 and head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"BM"):
        return "image/bmp"
    return None


_MAX_NAME_CHARS = 120
#: File systems cap a name at 255 bytes; room is left for a temporary suffix.
_MAX_NAME_BYTES = 200
_MAX_EXT_CHARS = 16
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def sanitize_file_name(name: str | None, default: str = "file") -> str:
    """Make a name from a message safe to use as a local file name.

    Keeps only the last path component (both ``/`` and ``\\`` count), drops control and
    format characters (including bidi overrides), replaces characters Windows forbids,
    strips leading/trailing dots and spaces (no hidden files, no ``..``), bounds the
    length to 120 characters and 200 UTF-8 bytes keeping the extension, and falls back to
    ``default`` when nothing usable is left.
    """
    text = unicodedata.normalize("NFC", name or "")
    text = re.split(r"[\\/]", text)[-1]
    text = "".join(
        ch for ch in text if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}
    )
    text = _UNSAFE_CHARS.sub("_", text)
    text = " ".join(text.split())
    text = text.strip(" .")
    if not text:
        text = default
    if _WINDOWS_RESERVED.match(text):
        text = "_" + text
    if len(text) > _MAX_NAME_CHARS or len(text.encode()) > _MAX_NAME_BYTES:
        dot = text.rfind(".")
        ext = text[dot:] if dot > 0 and len(text) - dot <= _MAX_EXT_CHARS else ""
        stem = text[: _MAX_NAME_CHARS - len(ext)]
        room = _MAX_NAME_BYTES - len(ext.encode())
        stem = stem.encode()[:room].decode(errors="ignore")  # no half character at the cut
        text = stem.rstrip(" .") + ext
    return text
