"""What a push request says, whatever its format: ntfy-style plain text and headers, ntfy and
Apprise JSON, or a binary upload (webhooks: :mod:`.alerts`).

Everything here is pure (bytes and mappings in, a :class:`Notification` out) and raises
:class:`BodyError` with a one-line message for input that cannot become a message.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ilinkbot.cdn.mime import (
    DEFAULT_MIME,
    MIME_TO_EXTENSION,
    MediaKind,
    extension_for_mime,
    kind_for_mime,
    mime_from_file_name,
    sanitize_file_name,
    sniff_image_mime,
)

from ..push import utf8_text
from .markdown import wechat_markdown

__all__ = [
    "MAX_TEXT_BODY",
    "Attachment",
    "BodyError",
    "Notification",
    "load_json",
    "media_kind",
    "parse_push",
    "string_field",
]

#: Text and JSON bodies above this size are refused (413); uploads use media_max_bytes.
MAX_TEXT_BODY = 256 * 1024

_TRUE = {"1", "yes", "true", "on", "y"}
_VAGUE = ("", DEFAULT_MIME, "application/x-www-form-urlencoded")

_TAG_EMOJI = {
    "warning": "⚠️",
    "rotating_light": "🚨",
    "white_check_mark": "✅",
    "heavy_check_mark": "✔️",
    "x": "❌",
    "no_entry": "⛔",
    "tada": "🎉",
    "+1": "👍",
    "-1": "👎",
    "skull": "💀",
    "loudspeaker": "📢",
    "fire": "🔥",
    "bell": "🔔",
    "partying_face": "🥳",
    "info": "ℹ️",
    "computer": "💻",
    "bug": "🐛",
    "rocket": "🚀",
    "hourglass": "⏳",
    "lock": "🔒",
}

_APPRISE_TYPE = {"success": "✅", "warning": "⚠️", "failure": "❌"}
#: ntfy priorities 4 and 5 (by number or name) are marked; 1-3 look like any message.
_PRIORITY_MARK = {"4": "❗", "high": "❗", "5": "‼️", "max": "‼️", "urgent": "‼️"}


def _priority_mark(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return ""
    return _PRIORITY_MARK.get(str(value).strip().lower(), "")


class BodyError(ValueError):
    """The request cannot become a message. ``status``: 422 (unusable) or 413 (too large)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes = field(repr=False)
    content_type: str | None = None

    @property
    def kind(self) -> str:
        return media_kind(self.name, self.content_type, self.data)


@dataclass(frozen=True)
class Notification:
    """A message to push: text and/or a title, maybe attachments, maybe a named recipient."""

    text: str | None = None
    title: str | None = None
    attachments: tuple[Attachment, ...] = ()
    recipient: str | None = None  # from a JSON ``topic``; the URL's alias wins


# ------------------------------------------------------------------------------ helpers


class _Params:
    """ntfy's parameters: header (``X-Name``/``Name``/short) or query (``name``/short)."""

    def __init__(self, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.query = {k.lower(): v for k, v in query.items()}

    def get(self, *names: str) -> str | None:
        for name in names:
            for key in (f"x-{name}", name):
                value = self.headers.get(key)
                if value is not None and value.strip():
                    return _header_text(value).strip()
            value = self.query.get(name)
            if value is not None and value.strip():
                return value.strip()
        return None

    def flag(self, *names: str) -> bool:
        value = self.get(*names)
        return value is not None and value.lower() in _TRUE


def _header_text(value: str) -> str:
    """Header values arrive as latin-1; a UTF-8 title sent raw is decoded back here, and
    RFC 2047 ``=?UTF-8?B?...?=`` words (what ntfy clients send) are decoded."""
    if value.startswith("=?") and value.endswith("?="):
        from email.header import decode_header, make_header

        try:
            return str(make_header(decode_header(value)))
        except (ValueError, LookupError, UnicodeDecodeError):
            return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _tags_prefix(tags: Any) -> tuple[str, list[str]]:
    if isinstance(tags, str):
        items = [t.strip() for t in tags.split(",")]
    elif isinstance(tags, list):
        items = [str(t).strip() for t in tags]
    else:
        return "", []
    items = [t for t in items if t]
    emoji = "".join(_TAG_EMOJI[t.lower()] for t in items if t.lower() in _TAG_EMOJI)
    rest = [t for t in items if t.lower() not in _TAG_EMOJI]
    return emoji, rest


def _compose(
    message: str | None,
    title: str | None,
    *,
    markdown: bool = False,
    tags: Any = None,
    click: str | None = None,
    attach_url: str | None = None,
    lead: str = "",
) -> tuple[str | None, str | None]:
    """Text and title of a message, with tag emojis, links and the Markdown filter."""
    emoji, other_tags = _tags_prefix(tags)
    prefix = (lead + emoji).strip()
    text = message
    if text is not None and markdown:
        text = wechat_markdown(text)
    extra = []
    if other_tags:
        extra.append("Tags: " + ", ".join(other_tags))
    if click:
        extra.append(click)
    if attach_url:
        extra.append(f"Attachment: {attach_url}")
    if extra:
        text = (
            "\n".join([text.rstrip()] if text and text.strip() else [])
            + ("\n\n" if text and text.strip() else "")
            + "\n".join(extra)
        )
    if prefix:
        if title:
            title = f"{prefix} {title}"
        elif text:
            text = f"{prefix} {text}"
        else:
            text = prefix
    if text is not None and not text.strip():
        text = None
    return text, (title or None)


def string_field(value: Any, field_name: str) -> str | None:
    """A JSON field that should be text: numbers become text, other types are a BodyError."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise BodyError(f"{field_name} must be a string")
    return value


# ------------------------------------------------------------------------------ media


def media_kind(name: str, content_type: str | None, data: bytes = b"") -> str:
    """``image``, ``video`` or ``file`` from the content type, the name, then magic bytes,
    by cdn.mime's routing; an image is one cdn.mime names (raster: WeChat shows no SVG)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in _VAGUE:
        ctype = mime_from_file_name(name)
    if ctype in _VAGUE:
        head = data[:16]
        ctype = sniff_image_mime(head) or ("video/mp4" if head[4:8] == b"ftyp" else "")
    kind = kind_for_mime(ctype)
    if kind is MediaKind.IMAGE and ctype not in MIME_TO_EXTENSION:
        kind = MediaKind.FILE
    return kind.value


def _safe_name(name: str | None, content_type: str | None) -> str:
    default = "upload" + extension_for_mime(content_type or "")
    return sanitize_file_name(name, default=default)


# ------------------------------------------------------------------------------ push bodies


def _looks_like_json(content_type: str, body: bytes) -> bool:
    if content_type in ("application/json", "text/json") or content_type.endswith("+json"):
        return True
    if content_type not in ("", "application/x-www-form-urlencoded", "text/plain"):
        return False
    stripped = body.lstrip()
    return stripped.startswith(b"{") and stripped.rstrip().endswith(b"}")


_JSON_KEYS = {
    "message",
    "body",
    "text",
    "content",
    "title",
    "topic",
    "attachments",
    "attach",
    "version",
    "type",
    "tags",
}


def parse_push(
    method: str,
    content_type: str | None,
    body: bytes,
    headers: Mapping[str, str],
    query: Mapping[str, str],
) -> Notification:
    """The notification of a ``POST``/``PUT /push[/alias]`` request."""
    params = _Params(headers, query)
    ctype = (content_type or "").split(";")[0].strip().lower()
    filename = params.get("filename", "file", "f")
    title = params.get("title", "ti", "t")
    message = params.get("message", "msg", "m")
    markdown = params.flag("markdown", "md") or ctype == "text/markdown"
    tags = params.get("tags", "tag", "ta")
    click = params.get("click")
    priority = params.get("priority", "prio", "p")
    lead = _priority_mark(priority)

    if ctype.startswith("multipart/"):
        raise BodyError(
            "multipart forms are not accepted: send the text as the body, a JSON "
            "object, or PUT the file's bytes"
        )
    if method == "PUT" or filename is not None or _is_binary(ctype, body):
        if not body:
            raise BodyError("empty upload: PUT the file's bytes as the request body")
        att = Attachment(_safe_name(filename, ctype), body, ctype or None)
        text, title = _compose(message, title, markdown=markdown, tags=tags, click=click, lead=lead)
        return Notification(text=text, title=title, attachments=(att,))

    if len(body) > MAX_TEXT_BODY:
        raise BodyError(
            f"body too large for a text message (limit {MAX_TEXT_BODY} bytes); PUT files instead",
            413,
        )
    if _looks_like_json(ctype, body):
        try:
            data = load_json(body)
        except BodyError:
            if ctype in ("application/json", "text/json") or ctype.endswith("+json"):
                raise
            data = None
        if isinstance(data, dict) and (_JSON_KEYS & data.keys()):
            return _json_notification(data, title=title, markdown=markdown, priority=priority)
        if ctype in ("application/json", "text/json") and not isinstance(data, dict):
            raise BodyError('a JSON body must be an object, e.g. {"message": "..."}')
        if ctype in ("application/json", "text/json") and isinstance(data, dict):
            raise BodyError(
                'the JSON object has no message: give "message" (ntfy, Apprise) '
                'or "body" (Apprise API)'
            )
    try:
        text_body = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("the body is not UTF-8 text; PUT binary files instead") from None
    text = text_body if text_body.strip() else message
    text, title = _compose(text, title, markdown=markdown, tags=tags, click=click, lead=lead)
    if not text and not title:
        raise BodyError(
            "nothing to send: the body is empty (write the message as the body, "
            "or give ?message= / a Title)"
        )
    return Notification(text=text, title=title)


def load_json(body: bytes) -> Any:
    """The JSON value of a request body, or a 422 :class:`BodyError` for anything that does
    not decode: bad UTF-8 or JSON, an integer past Python's 4300 digits, nesting too deep for
    the decoder. ``\\ud800``-style escapes of lone surrogates become U+FFFD (they cannot be
    encoded, stored or sent)."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise BodyError(f"invalid JSON body: {exc}") from None
    except RecursionError:
        raise BodyError("invalid JSON body: nested too deep") from None
    return _valid_unicode(data)


def _valid_text(text: str) -> str:
    return utf8_text(text, "json") or ""


def _valid_unicode(data: Any) -> Any:
    """``data`` with every string (keys too) valid Unicode; iterative, as JSON may nest
    nearly as deep as the recursion limit."""
    if isinstance(data, str):
        return _valid_text(data)
    todo = [data] if isinstance(data, (dict, list)) else []
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            items = [(_valid_text(k), v) for k, v in node.items()]
            node.clear()
            node.update(items)
            keys: Any = list(node)
        else:
            keys = range(len(node))
        for key in keys:
            value = node[key]
            if isinstance(value, str):
                node[key] = _valid_text(value)
            elif isinstance(value, (dict, list)):
                todo.append(value)
    return data


def _is_binary(ctype: str, body: bytes) -> bool:
    if ctype.startswith(("image/", "video/", "audio/")) or ctype in (
        "application/octet-stream",
        "application/pdf",
        "application/zip",
    ):
        return True
    if ctype.startswith("text/") or ctype in (
        "application/json",
        "",
        "application/x-www-form-urlencoded",
    ):
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


def _json_notification(
    data: dict[str, Any], *, title: str | None, markdown: bool, priority: str | None
) -> Notification:
    """ntfy's JSON publishing, Apprise's ``json://`` and the Apprise API's ``/notify``."""
    message = None
    for key in ("message", "body", "text", "content"):
        if data.get(key) is not None:
            message = string_field(data.get(key), key)
            break
    title = string_field(data.get("title"), "title") or title
    fmt = string_field(data.get("format"), "format")
    markdown = markdown or data.get("markdown") is True or (fmt or "").lower() == "markdown"
    ntype = (string_field(data.get("type"), "type") or "").lower()
    lead = _priority_mark(data.get("priority", priority)) + _APPRISE_TYPE.get(ntype, "")
    click = string_field(data.get("click"), "click")
    attach_url: str | None = None
    attach = data.get("attach")
    if isinstance(attach, str) and attach.strip():
        attach_url = attach.strip()  # never fetched: a link in the text
    topic = string_field(data.get("topic"), "topic")
    atts = tuple(_json_attachments(data.get("attachments")))
    text, title = _compose(
        message,
        title,
        markdown=markdown,
        tags=data.get("tags"),
        click=click,
        attach_url=attach_url,
        lead=lead,
    )
    if not text and not title and not atts:
        raise BodyError("nothing to send: the JSON object has no message, title or attachment")
    return Notification(
        text=text,
        title=title,
        attachments=atts,
        recipient=topic.strip() if topic and topic.strip() else None,
    )


def _json_attachments(value: Any) -> list[Attachment]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BodyError("attachments must be a list of {filename, base64, mimetype}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BodyError(f"attachments[{i}] must be an object")
        raw = item.get("base64")
        if not isinstance(raw, str) or not raw:
            if item.get("url"):
                raise BodyError(
                    f"attachments[{i}]: only inline base64 attachments are "
                    "accepted; links are not fetched"
                )
            raise BodyError(f"attachments[{i}] has no base64 content")
        try:
            data = base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            raise BodyError(f"attachments[{i}]: invalid base64") from None
        if not data:
            raise BodyError(f"attachments[{i}] is empty")
        ctype = string_field(item.get("mimetype"), "mimetype")
        out.append(
            Attachment(
                _safe_name(string_field(item.get("filename"), "filename"), ctype), data, ctype
            )
        )
    return out
