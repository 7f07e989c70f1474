"""The sandbox admin surface over HTTP, under ``/_sandbox/`` (no auth; JSON in and out)."""

from __future__ import annotations

import base64
import binascii
import html
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from .faults import check_faults
from .model import FAULT_ENDPOINTS, Headers, SandboxError, SandboxResponse

if TYPE_CHECKING:
    from .core import Sandbox

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


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _json_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:  # NaN and Infinity are not JSON; a NaN clock or rate would poison the state
        obj = json.loads(body, parse_constant=_no_constant)
    except ValueError:
        raise _BadRequest("body is not JSON") from None
    if not isinstance(obj, dict):
        raise _BadRequest("body is not a JSON object")
    return obj


def _only(data: dict[str, Any], *allowed: str) -> dict[str, Any]:
    """Refuse keys the route does not know: a typo must not pass as a default."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise _BadRequest(f"unknown keys {unknown} (known: {known})")
    return data


def _str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise _BadRequest(f"{key} must be a non-empty string")
    return value


def _number(data: dict[str, Any], key: str, low: float, high: float | None = None) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequest(f"{key} must be a number")
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise _BadRequest(f"{key} must be {bounds}")
    return value


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


def _form_or_json(body: bytes, headers: Headers) -> dict[str, Any]:
    ctype = (headers.one("content-type") or "").lower()
    if ctype.startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("utf-8", "replace"))
        return {k: v[0] for k, v in form.items()}
    return _json_body(body)


def _query(query: dict[str, list[str]], *allowed: str) -> dict[str, str]:
    """The route's query parameters, each at most once; others are refused."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise _BadRequest(f"unknown query parameters {unknown}")
    out = {}
    for key, values in query.items():
        if len(values) != 1:
            raise _BadRequest(f"query parameter {key} given {len(values)} times")
        out[key] = values[0]
    return out


def handle_admin(
    sb: Sandbox,
    method: str,
    rest: str,
    query: dict[str, list[str]],
    body: bytes,
    headers: Headers,
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
    headers: Headers,
) -> SandboxResponse:
    params = _query(query, "user_id") if parts == ["delivered"] else _query(query)
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
            return _ok(sb.delivered(params.get("user_id")))
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
                _only(form)
                sb.scan(qrcode=parts[1])
            else:
                _only(form, "user_id")
                sb.confirm(_str(form, "user_id") or "owner@im.wechat", qrcode=parts[1])
            return SandboxResponse(303, [("Location", f"../{parts[1]}")])
        data = _json_body(body)
        if len(parts) == 2 and parts[0] == "login":
            return _login(sb, parts[1], data)
        if len(parts) == 3 and parts[0] == "users" and parts[2] == "messages":
            return _user_message(sb, parts[1], data)
        if parts == ["session", "expire"]:
            sb.expire_session(_str(_only(data, "bot_id"), "bot_id"))
            return _ok()
        if parts == ["faults"]:
            return _faults(sb, data)
        if parts == ["config"]:
            return _ok(sb.configure(**_config(data)))
        if parts == ["clock", "advance"]:
            if "seconds" not in _only(data, "seconds"):
                raise _BadRequest("seconds missing")
            return _ok({"now": sb.advance(_number(data, "seconds", 0))})
        if parts == ["reset"]:
            _only(data)
            sb.reset()
            return _ok()
    if method == "DELETE" and parts == ["faults"]:
        _only(_json_body(body))
        sb.clear_faults()
        return _ok()
    return _error(404, "no such admin route")


_LOGIN_ACTIONS = ("scan", "confirm", "expire", "verify-code", "redirect", "block")


def _login(sb: Sandbox, action: str, data: dict[str, Any]) -> SandboxResponse:
    if action not in _LOGIN_ACTIONS:
        return _error(404, "no such login action")
    extra = {"confirm": ("user_id",), "verify-code": ("code",)}.get(action, ())
    qrcode = _str(_only(data, "qrcode", *extra), "qrcode")
    if action == "scan":
        return _ok(sb.scan(qrcode=qrcode))
    if action == "confirm":
        return _ok(sb.confirm(_str(data, "user_id") or "owner@im.wechat", qrcode=qrcode))
    if action == "expire":
        sb.expire_qr(qrcode=qrcode)
    elif action == "verify-code":
        code = data.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and code >= 0:
            code = str(code)
        if not isinstance(code, str) or not code.isdecimal():
            raise _BadRequest("code must be a string of digits")
        sb.require_verify_code(code, qrcode=qrcode)
    elif action == "redirect":
        sb.redirect(qrcode=qrcode)
    else:
        sb.block_verify(qrcode=qrcode)
    return _ok()


def _user_message(sb: Sandbox, user_id: str, data: dict[str, Any]) -> SandboxResponse:
    _only(
        data,
        "text",
        "voice_text",
        "image_b64",
        "image_key_form",
        "file_b64",
        "file_name",
        "video_b64",
        "bot_id",
    )
    file_data = _b64(data, "file_b64")
    name = _str(data, "file_name")
    if (file_data is None) != (name is None):
        raise _BadRequest("file_b64 and file_name go together")
    text = data.get("text")
    if text is not None and not isinstance(text, str):
        raise _BadRequest("text must be a string")
    form = data.get("image_key_form", "hex")
    if form not in ("hex", "base64_raw", "base64_hex", "none"):
        raise _BadRequest("image_key_form must be one of hex, base64_raw, base64_hex, none")
    msg = sb.user_says(
        user_id,
        text,
        image=_b64(data, "image_b64"),
        file=None if file_data is None or name is None else (name, file_data),
        video=_b64(data, "video_b64"),
        voice_text=_str(data, "voice_text"),
        image_key_form=form,
        bot_id=_str(data, "bot_id"),
    )
    return _ok(msg)


_RATES = ("http_5xx_rate", "reset_rate", "reset_after_processing", "delay_rate")


def _faults(sb: Sandbox, data: dict[str, Any]) -> SandboxResponse:
    _only(data, "endpoint", "queue", *_RATES, "delay_seconds", "seed")
    endpoint = _str(data, "endpoint") or "*"
    if endpoint.removeprefix("msg/") not in FAULT_ENDPOINTS:
        raise _BadRequest(f"unknown fault endpoint {endpoint!r}")
    queue = data.get("queue")
    spec: dict[str, Any] = {k: _number(data, k, 0, 1) for k in _RATES if k in data}
    if "delay_seconds" in data:
        spec["delay_seconds"] = _number(data, "delay_seconds", 0)
    if "seed" in data:
        seed = data["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _BadRequest("seed must be an integer")
        spec["seed"] = seed
    if not spec and queue is None:
        raise _BadRequest("nothing to set: give a queue or a rate")
    if queue is not None:
        if not isinstance(queue, list) or not all(isinstance(f, str) for f in queue):
            raise _BadRequest("queue must be a list of fault names")
        check_faults(queue)
    # Both checked before either applies: a refused body changes nothing.
    if spec:
        sb.set_faults(endpoint, **spec)
    if queue is not None:
        sb.queue_faults(endpoint, queue)
    return _ok()


_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "quota": (int,),
    "window_seconds": (int, float),
    "omit_message_id": (bool,),
    "force_ret": (int, type(None)),
    "upload_full_url": (bool,),
    "longpoll_seconds": (int, float),
    "qr_poll_seconds": (int, float),
}


def _config(data: dict[str, Any]) -> dict[str, Any]:
    _only(data, *_CONFIG_TYPES)
    for key, value in data.items():
        types = _CONFIG_TYPES[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise _BadRequest(f"{key} must be {names}")
        if key in ("quota", "window_seconds", "longpoll_seconds", "qr_poll_seconds"):
            _number(data, key, 0)
    return data
