"""What a push request says, whatever its format: ntfy-style plain text and headers, ntfy and
Apprise JSON, a binary upload, or an Alertmanager / Grafana webhook.

Everything here is pure (bytes and mappings in, a :class:`Notification` out) and raises
:class:`BodyError` with a one-line message for input that cannot become a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

__all__ = [
    "Attachment",
    "BodyError",
    "Notification",
    "alertmanager_notification",
    "media_kind",
    "parse_push",
    "wechat_markdown",
]

#: Text and JSON bodies above this size are refused (413); uploads use media_max_bytes.
MAX_TEXT_BODY = 256 * 1024
#: Alerts listed one by one in a webhook message; the rest are counted.
MAX_ALERTS_LISTED = 20

_TRUE = {"1", "yes", "true", "on", "y"}

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


def _str(value: Any, field_name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise BodyError(f"{field_name} must be a string")
    return value


# ------------------------------------------------------------------------------ markdown

_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_SMALL_HEADING = re.compile(r"^#{5,6} ", re.MULTILINE)
_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_EMPHASIS = re.compile(r"(\*\*\*|___|\*|_)(?=\S)(.+?)\1")


def wechat_markdown(text: str) -> str:
    """Markdown as WeChat shows it (PROTOCOL.md §5.2): fenced code verbatim; images removed;
    ``#####``/``######`` headings unmarked; ``*x*``/``_x_`` unmarked around CJK text only."""
    out: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            out.append(line)
            continue
        if in_fence:
            out.append(line)
            continue
        line = _IMAGE.sub("", line)
        line = _SMALL_HEADING.sub("", line)
        line = _EMPHASIS.sub(lambda m: m.group(2) if _CJK.search(m.group(2)) else m.group(0), line)
        out.append(line)
    return "\n".join(out)


# ------------------------------------------------------------------------------ media


def media_kind(name: str, content_type: str | None, data: bytes = b"") -> str:
    """``image``, ``video`` or ``file`` from the content type, the name, then magic bytes."""
    vague = ("", "application/octet-stream", "application/x-www-form-urlencoded")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in vague:
        ctype = mimetypes.guess_type(name)[0] or ""
    head = data[:16]
    if ctype in vague:
        if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8")) or (
            head[:4] == b"RIFF" and head[8:12] == b"WEBP"
        ):
            return "image"
        if head[4:8] == b"ftyp":
            return "video"
        return "file"
    if ctype in ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"):
        return "image"
    if ctype.startswith("video/"):
        return "video"
    return "file"


def _safe_name(name: str | None, content_type: str | None) -> str:
    raw = PurePath((name or "").replace("\\", "/")).name.strip()
    raw = re.sub(r"[\x00-\x1f/]", "", raw)[:120]
    if raw and raw not in (".", ".."):
        return raw
    ext = mimetypes.guess_extension((content_type or "").split(";")[0].strip()) or ".bin"
    return f"upload{ext}"


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

    if ctype.startswith("multipart/"):
        raise BodyError(
            "multipart forms are not accepted: send the text as the body, a JSON "
            "object, or PUT the file's bytes"
        )
    if method == "PUT" or filename is not None or _is_binary(ctype, body):
        if not body:
            raise BodyError("empty upload: PUT the file's bytes as the request body")
        att = Attachment(_safe_name(filename, ctype), body, ctype or None)
        text, title = _compose(message, title, markdown=markdown, tags=tags, click=click)
        return Notification(text=text, title=title, attachments=(att,))

    if len(body) > MAX_TEXT_BODY:
        raise BodyError(
            f"body too large for a text message (limit {MAX_TEXT_BODY} bytes); PUT files instead",
            413,
        )
    if _looks_like_json(ctype, body):
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if ctype in ("application/json", "text/json") or ctype.endswith("+json"):
                raise BodyError(f"invalid JSON body: {exc}") from None
            data = None
        if isinstance(data, dict) and (_JSON_KEYS & data.keys()):
            return _json_notification(data, params, title=title, markdown=markdown)
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
    text, title = _compose(text, title, markdown=markdown, tags=tags, click=click)
    if not text and not title:
        raise BodyError(
            "nothing to send: the body is empty (write the message as the body, "
            "or give ?message= / a Title)"
        )
    return Notification(text=text, title=title)


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
    data: dict[str, Any], params: _Params, *, title: str | None, markdown: bool
) -> Notification:
    """ntfy's JSON publishing, Apprise's ``json://`` and the Apprise API's ``/notify``."""
    message = None
    for key in ("message", "body", "text", "content"):
        if data.get(key) is not None:
            message = _str(data.get(key), key)
            break
    title = _str(data.get("title"), "title") or title
    fmt = _str(data.get("format"), "format")
    markdown = markdown or data.get("markdown") is True or (fmt or "").lower() == "markdown"
    ntype = (_str(data.get("type"), "type") or "").lower()
    lead = _APPRISE_TYPE.get(ntype, "")
    click = _str(data.get("click"), "click")
    attach_url: str | None = None
    attach = data.get("attach")
    if isinstance(attach, str) and attach.strip():
        attach_url = attach.strip()  # never fetched: a link in the text
    topic = _str(data.get("topic"), "topic")
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
        ctype = _str(item.get("mimetype"), "mimetype")
        out.append(
            Attachment(_safe_name(_str(item.get("filename"), "filename"), ctype), data, ctype)
        )
    return out


# ------------------------------------------------------------------------------ webhooks

_FRACTION = re.compile(r"(\.\d{6})\d+")


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _fmt_when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _alert_lines(alert: dict[str, Any], common: dict[str, str]) -> list[str]:
    labels = _labels(alert.get("labels"))
    ann = _labels(alert.get("annotations"))
    name = labels.get("alertname") or "alert"
    summary = ann.get("summary") or ann.get("title")
    head = f"• {name}" + (f": {summary}" if summary else "")
    lines = [head]
    desc = ann.get("description") or ann.get("message")
    if desc and desc != summary:
        lines.append(f"  {desc}")
    value = alert.get("valueString")
    if isinstance(value, str) and value.strip():
        lines.append(f"  value: {value.strip()}")
    shown = {
        k: v
        for k, v in labels.items()
        if k not in ("alertname", "__alert_rule_uid__") and common.get(k) != v
    }
    if shown:
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())))
    status = str(alert.get("status") or "").lower()
    start, end = _when(alert.get("startsAt")), _when(alert.get("endsAt"))
    if status == "resolved" and end is not None:
        lines.append(f"  resolved {_fmt_when(end)}")
    elif start is not None:
        lines.append(f"  since {_fmt_when(start)}")
    for key in ("panelURL", "dashboardURL", "generatorURL"):
        link = alert.get(key)
        if isinstance(link, str) and link.startswith(("http://", "https://")):
            lines.append(f"  {link}")
            break
    return lines


def alertmanager_notification(data: Any) -> Notification:
    """A readable message from an Alertmanager webhook, a Grafana (unified alerting)
    webhook, or a legacy Grafana alert notification."""
    if not isinstance(data, dict):
        raise BodyError("expected an Alertmanager or Grafana webhook JSON object")
    alerts = data.get("alerts")
    if alerts is None and ("ruleName" in data or "evalMatches" in data):
        return _legacy_grafana(data)
    if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
        raise BodyError('not an Alertmanager/Grafana webhook: "alerts" must be a list of objects')
    firing = [a for a in alerts if str(a.get("status", "firing")).lower() != "resolved"]
    resolved = [a for a in alerts if str(a.get("status", "")).lower() == "resolved"]
    common = _labels(data.get("commonLabels"))
    group = _labels(data.get("groupLabels"))
    status = str(data.get("status") or ("firing" if firing else "resolved")).lower()

    title = data.get("title") if isinstance(data.get("title"), str) else None
    if not title:
        count = len(firing) if status == "firing" else len(resolved)
        name = (
            group.get("alertname")
            or common.get("alertname")
            or (_labels(alerts[0].get("labels")).get("alertname") if alerts else None)
            or "alerts"
        )
        rest = " ".join(v for k, v in sorted(group.items()) if k != "alertname")
        title = f"[{status.upper()}:{count}] {name}" + (f" ({rest})" if rest else "")
    icon = "🔥" if status == "firing" else "✅"
    title = f"{icon} {title}"

    lines: list[str] = []
    ann = _labels(data.get("commonAnnotations"))
    if ann.get("summary") and len(alerts) > 1:
        lines += [ann["summary"], ""]
    listed = 0
    for label, group_alerts in (("Firing", firing), ("Resolved", resolved)):
        if not group_alerts:
            continue
        if firing and resolved:
            lines.append(f"{label}:")
        for alert in group_alerts:
            if listed >= MAX_ALERTS_LISTED:
                break
            lines += _alert_lines(alert, common if len(alerts) > 1 else {})
            listed += 1
        if firing and resolved:
            lines.append("")
    more = len(alerts) - listed
    truncated = data.get("truncatedAlerts")
    if isinstance(truncated, int) and truncated > 0:
        more += truncated
    if more > 0:
        lines.append(f"…and {more} more")
    ext = data.get("externalURL")
    if isinstance(ext, str) and ext.startswith(("http://", "https://")) and len(alerts) > 1:
        lines.append(ext)
    text = "\n".join(lines).strip() or None
    return Notification(text=text, title=title)


def _legacy_grafana(data: dict[str, Any]) -> Notification:
    state = str(data.get("state") or "alerting").lower()
    icon = {"ok": "✅", "alerting": "🔥", "no_data": "❔", "paused": "⏸️"}.get(state, "🔔")
    title = _str(data.get("title"), "title") or _str(data.get("ruleName"), "ruleName") or "alert"
    lines: list[str] = []
    message = _str(data.get("message"), "message")
    if message:
        lines.append(message)
    for match in data.get("evalMatches") or []:
        if isinstance(match, dict):
            lines.append(f"• {match.get('metric', 'value')} = {match.get('value')}")
    url = data.get("ruleUrl")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        lines.append(url)
    return Notification(text="\n".join(lines) or None, title=f"{icon} {title}")
