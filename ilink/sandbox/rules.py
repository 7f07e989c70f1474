"""The rules every ilink API request must follow (PROTOCOL.md §1.3-1.5): method, headers,
a fresh X-WECHAT-UIN, Content-Length, canonical JSON body, ``base_info`` last.

Each check raises :class:`~.model.Violation`; the router drops the request.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Final

from ilinkbot.ilink.wire import dumps, sanitize_bot_agent

from .model import Headers, SandboxRequest, Violation, need
from .state import State

__all__ = ["check_base_info", "check_body", "check_common", "check_length", "check_uin"]

UIN_MEMORY: Final = 10_000
_DECIMAL: Final = re.compile(r"^(0|[1-9][0-9]*)$")


def _has_null(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


def check_uin(state: State, value: str | None) -> None:
    """X-WECHAT-UIN: base64 of a uint32's decimal text, never reused (§1.3)."""
    need(value is not None, "header.x_wechat_uin", "X-WECHAT-UIN missing")
    assert value is not None
    try:
        text = base64.b64decode(value, validate=True).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        raise Violation("header.x_wechat_uin", "X-WECHAT-UIN is not base64") from None
    need(
        base64.b64encode(text.encode()).decode() == value
        and _DECIMAL.match(text)
        and int(text) <= 0xFFFFFFFF,
        "header.x_wechat_uin",
        "X-WECHAT-UIN is not base64 of the decimal text of a uint32",
    )
    if value in state.uin_set:
        raise Violation("header.x_wechat_uin_reused", "X-WECHAT-UIN value was already used")
    state.uins.append(value)
    state.uin_set.add(value)
    if len(state.uins) > UIN_MEMORY:
        state.uin_set.discard(state.uins.popleft())


def check_common(
    state: State, method: str, authenticated: bool, req: SandboxRequest
) -> dict[str, Any] | None:
    """Method, header and body rules (lock held); returns the parsed body (None for GET)."""
    h = Headers(req.headers)
    need(req.method == method, "http.method", f"{req.method} instead of {method}")
    app_id = h.one("ilink-app-id")
    need(app_id == "bot", "header.ilink_app_id", f"iLink-App-Id is {app_id!r}, expected 'bot'")
    version = h.one("ilink-app-clientversion")
    need(
        version is not None and _DECIMAL.match(version) and int(version) <= 0xFFFFFFFF,
        "header.ilink_app_clientversion",
        f"iLink-App-ClientVersion {version!r} is not a decimal uint32",
    )
    if method == "GET":
        return None
    ctype = h.one("content-type")
    need(
        ctype is not None and ctype.strip().lower() == "application/json",
        "header.content_type",
        f"Content-Type {ctype!r}, expected application/json",
    )
    auth_type = h.one("authorizationtype")
    need(
        auth_type == "ilink_bot_token",
        "header.authorizationtype",
        f"AuthorizationType {auth_type!r}, expected ilink_bot_token",
    )
    check_uin(state, h.one("x-wechat-uin"))
    check_length(h, req)
    obj = check_body(req.body)
    if authenticated:
        check_base_info(obj)
    else:
        need("base_info" not in obj, "base_info.forbidden", "QR endpoints take no base_info")
    return obj


def check_length(h: Headers, req: SandboxRequest) -> None:
    if req.framing_error is not None:
        raise Violation("header.content_length", req.framing_error)
    length = h.one("content-length")
    need(length is not None, "header.content_length", "Content-Length missing")
    assert length is not None
    need(
        _DECIMAL.match(length.strip()) and int(length) == len(req.body),
        "header.content_length",
        f"Content-Length {length!r} but the body has {len(req.body)} bytes",
    )


def check_body(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Violation("body.utf8", "body is not valid UTF-8") from None

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        obj = json.loads(text, parse_constant=no_constants)
    except ValueError:
        raise Violation("body.json", "body is not valid JSON") from None
    need(isinstance(obj, dict), "body.json", "body is not a JSON object")
    assert isinstance(obj, dict)
    try:
        canonical = dumps(obj)
    except (UnicodeEncodeError, ValueError):
        canonical = b""
    if canonical != body:
        if _has_null(obj):
            detail = "body carries null members (omit absent fields instead)"
        elif re.search(r"\\u[0-9a-fA-F]{4}", text) and not canonical.isascii():
            detail = "body escapes non-ASCII characters as \\uXXXX (send raw UTF-8)"
        else:
            detail = "body is not compact JSON.stringify output (whitespace or escapes)"
        raise Violation("body.not_canonical", detail)
    return obj


def check_base_info(obj: dict[str, Any]) -> None:
    need("base_info" in obj, "base_info.missing", "base_info missing")
    need(list(obj)[-1] == "base_info", "base_info.not_last", "base_info is not the last key")
    info = obj["base_info"]
    need(isinstance(info, dict), "base_info.type", "base_info is not an object")
    cv = info.get("channel_version")
    need(
        isinstance(cv, str) and cv != "",
        "base_info.channel_version",
        "channel_version missing or empty",
    )
    agent = info.get("bot_agent")
    need(isinstance(agent, str), "base_info.bot_agent", "bot_agent missing")
    need(
        sanitize_bot_agent(agent) == agent,
        "base_info.bot_agent",
        "bot_agent is not in the sanitised UA grammar",
    )
