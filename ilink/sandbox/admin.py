"""The sandbox admin surface over HTTP, under ``/_sandbox/`` (no auth; JSON in and out)."""

from __future__ import annotations

import base64
import binascii
import html
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from .core import SandboxError, SandboxResponse

if TYPE_CHECKING:
    from .core import Sandbox, _Headers

__all__ = ["ADMIN_ROUTES", "handle_admin"]

#: (method, route) pairs served under ``/_sandbox/``; documentation and ``GET /_sandbox/``.
ADMIN_ROUTES: list[tuple[str, str]] = [
    ("GET", "/_sandbox/"),
    ("GET", "/_sandbox/state"),
    ("GET", "/_sandbox/bots"),
    ("GET", "/_sandbox/qrcodes"),
    ("GET", "/_sandbox/delivered[?user_id=]"),
    ("GET", "/_sandbox/violations"),
    ("GET", "/_sandbox/refusals"),
    ("GET", "/_sandbox/typing"),
    ("GET", "/_sandbox/faults/fired"),
    ("GET", "/_sandbox/qr/{qrcode}"),
    ("POST", "/_sandbox/qr/{qrcode}/scan"),
    ("POST", "/_sandbox/qr/{qrcode}/confirm"),
    ("POST", "/_sandbox/login/scan"),
    ("POST", "/_sandbox/login/confirm"),
    ("POST", "/_sandbox/login/expire"),
    ("POST", "/_sandbox/login/verify-code"),
    ("POST", "/_sandbox/login/redirect"),
    ("POST", "/_sandbox/login/block"),
    ("POST", "/_sandbox/users/{user_id}/messages"),
    ("POST", "/_sandbox/session/expire"),
    ("POST", "/_sandbox/faults"),
    ("DELETE", "/_sandbox/faults"),
    ("POST", "/_sandbox/config"),
    ("POST", "/_sandbox/clock/advance"),
    ("POST", "/_sandbox/reset"),
]


class _BadRequest(Exception):
    pass


def _ok(obj: Any = None, status: int = 200) -> SandboxResponse:
    return SandboxResponse(
        status,
        [("Content-Type", "application/json")],
        json.dumps({"ok": True} if obj is None else obj, ensure_ascii=False).encode(),
    )


def _error(status: int, message: str) -> SandboxResponse:
    return SandboxResponse(
        status,
        [("Content-Type", "application/json")],
        json.dumps({"ok": False, "error": message}, ensure_ascii=False).encode(),
    )


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        obj = json.loads(body)
    except ValueError:
        raise _BadRequest("body is not JSON") from None
    if not isinstance(obj, dict):
        raise _BadRequest("body is not a JSON object")
    return obj


def _b64(obj: dict[str, Any], key: str) -> bytes | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRequest(f"{key} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise _BadRequest(f"{key} is not valid base64") from None


def _qr_page(sb: Sandbox, code: str) -> SandboxResponse:
    known = {q["qrcode"]: q for q in sb.qr_codes()}
    qr = known.get(code)
    status = qr["status"] if qr else "unknown (expired)"
    esc = html.escape(code)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ilink sandbox QR {esc}</title></head>
<body style="font-family: sans-serif">
<h1>ilink sandbox login</h1>
<p>QR code <code>{esc}</code>: status <b>{html.escape(status)}</b></p>
<form method="post" action="{esc}/scan"><button>Scan</button></form>
<form method="post" action="{esc}/confirm">
  <input name="user_id" value="owner@im.wechat"> <button>Confirm</button>
</form>
</body></html>
"""
    return SandboxResponse.text(page, 200, "text/html")


def _form_or_json(body: bytes, headers: _Headers) -> dict[str, Any]:
    ctype = (headers.one("content-type") or "").lower()
    if ctype.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("utf-8", "replace"))
        return {k: v[0] for k, v in form.items()}
    return _json_body(body)


def handle_admin(
    sb: Sandbox,
    method: str,
    rest: str,
    query: dict[str, list[str]],
    body: bytes,
    headers: _Headers,
) -> SandboxResponse:
    """Serve ``/_sandbox/<rest>``."""
    parts = [unquote(p) for p in rest.split("/") if p]
    try:
        return _dispatch(sb, method, parts, query, body, headers)
    except _BadRequest as exc:
        return _error(400, str(exc))
    except SandboxError as exc:
        return _error(409, str(exc))
    except (TypeError, ValueError) as exc:
        return _error(400, str(exc))


def _dispatch(
    sb: Sandbox,
    method: str,
    parts: list[str],
    query: dict[str, list[str]],
    body: bytes,
    headers: _Headers,
) -> SandboxResponse:
    if method == "GET":
        if not parts:
            return _ok({"routes": [f"{m} {r}" for m, r in ADMIN_ROUTES]})
        if parts == ["state"]:
            return _ok(sb.state())
        if parts == ["bots"]:
            return _ok(sb.bots())
        if parts == ["qrcodes"]:
            return _ok(sb.qr_codes())
        if parts == ["delivered"]:
            user = query.get("user_id", [None])[0]
            return _ok(sb.delivered(user))
        if parts == ["violations"]:
            return _ok(sb.violations())
        if parts == ["refusals"]:
            return _ok(sb.refusals())
        if parts == ["typing"]:
            return _ok(sb.typing_events())
        if parts == ["faults", "fired"]:
            return _ok(sb.faults_fired())
        if len(parts) == 2 and parts[0] == "qr":
            return _qr_page(sb, parts[1])
    if method == "POST":
        if len(parts) == 3 and parts[0] == "qr" and parts[2] in ("scan", "confirm"):
            form = _form_or_json(body, headers)
            if parts[2] == "scan":
                sb.scan(qrcode=parts[1])
            else:
                sb.confirm(str(form.get("user_id") or "owner@im.wechat"), qrcode=parts[1])
            return SandboxResponse(303, [("Location", f"../{parts[1]}")])
        data = _json_body(body)
        if len(parts) == 2 and parts[0] == "login":
            return _login(sb, parts[1], data)
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "messages":
            return _user_message(sb, parts[1], data)
        if parts == ["session", "expire"]:
            sb.expire_session(data.get("bot_id"))
            return _ok()
        if parts == ["faults"]:
            return _faults(sb, data)
        if parts == ["config"]:
            allowed = {
                "quota",
                "window_seconds",
                "omit_message_id",
                "force_ret",
                "upload_full_url",
                "longpoll_seconds",
                "qr_poll_seconds",
            }
            unknown = set(data) - allowed
            if unknown:
                raise _BadRequest(f"unknown config keys: {sorted(unknown)}")
            return _ok(sb.configure(**data))
        if parts == ["clock", "advance"]:
            seconds = data.get("seconds")
            if not isinstance(seconds, int | float):
                raise _BadRequest("seconds must be a number")
            return _ok({"now": sb.advance(seconds)})
        if parts == ["reset"]:
            sb.reset()
            return _ok()
    if method == "DELETE" and parts == ["faults"]:
        sb.clear_faults()
        return _ok()
    return _error(404, "no such admin route")


def _login(sb: Sandbox, action: str, data: dict[str, Any]) -> SandboxResponse:
    qrcode = data.get("qrcode")
    if action == "scan":
        return _ok(sb.scan(qrcode=qrcode))
    if action == "confirm":
        return _ok(sb.confirm(str(data.get("user_id") or "owner@im.wechat"), qrcode=qrcode))
    if action == "expire":
        sb.expire_qr(qrcode=qrcode)
        return _ok()
    if action == "verify-code":
        code = data.get("code")
        if not isinstance(code, str | int) or isinstance(code, bool):
            raise _BadRequest("code must be a string")
        sb.require_verify_code(str(code), qrcode=qrcode)
        return _ok()
    if action == "redirect":
        sb.redirect(qrcode=qrcode)
        return _ok()
    if action == "block":
        sb.block_verify(qrcode=qrcode)
        return _ok()
    return _error(404, "no such login action")


def _user_message(sb: Sandbox, user_id: str, data: dict[str, Any]) -> SandboxResponse:
    file_data = _b64(data, "file_b64")
    file_arg = None
    if file_data is not None:
        name = data.get("file_name")
        if not isinstance(name, str) or not name:
            raise _BadRequest("file_b64 needs file_name")
        file_arg = (name, file_data)
    text = data.get("text")
    voice = data.get("voice_text")
    msg = sb.user_says(
        user_id,
        text if isinstance(text, str) else None,
        image=_b64(data, "image_b64"),
        file=file_arg,
        video=_b64(data, "video_b64"),
        voice_text=voice if isinstance(voice, str) else None,
        image_key_form=data.get("image_key_form", "hex"),
        bot_id=data.get("bot_id"),
    )
    return _ok(msg)


def _faults(sb: Sandbox, data: dict[str, Any]) -> SandboxResponse:
    endpoint = str(data.get("endpoint", "*"))
    queue = data.get("queue")
    rates = {
        k: data[k]
        for k in (
            "http_5xx_rate",
            "reset_rate",
            "reset_after_processing",
            "delay_rate",
            "delay_seconds",
            "seed",
        )
        if k in data
    }
    if rates or queue is None:
        sb.set_faults(endpoint, **rates)
    if queue is not None:
        if not isinstance(queue, list) or not all(isinstance(f, str) for f in queue):
            raise _BadRequest("queue must be a list of fault names")
        sb.queue_faults(endpoint, queue)
    return _ok()
