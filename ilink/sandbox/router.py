"""Request routing: API, CDN or admin path; injected faults; the rules every API call
must pass and bearer-token authentication; then the endpoint's own logic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final
from urllib.parse import parse_qs, urlsplit

from .cdn import Cdn
from .faults import Faults
from .inbound import Inbound
from .login import Login
from .model import Headers, SandboxRequest, SandboxResponse, Violation
from .outbound import Outbound
from .rules import check_common
from .state import Bot, State

__all__ = ["AdminHandler", "Router"]

#: Serves ``/_sandbox/<rest>``: (method, rest, query, body, headers) -> response.
AdminHandler = Callable[[str, str, dict[str, list[str]], bytes, Headers], SandboxResponse]

# endpoint path (after /ilink/bot/) -> (fault name, method, authenticated)
_API: Final[dict[str, tuple[str, str, bool]]] = {
    "get_bot_qrcode": ("get_bot_qrcode", "POST", False),
    "get_qrcode_status": ("get_qrcode_status", "GET", False),
    "getupdates": ("getupdates", "POST", True),
    "sendmessage": ("sendmessage", "POST", True),
    "getuploadurl": ("getuploadurl", "POST", True),
    "getconfig": ("getconfig", "POST", True),
    "sendtyping": ("sendtyping", "POST", True),
    "msg/notifystart": ("notifystart", "POST", True),
    "msg/notifystop": ("notifystop", "POST", True),
}
_SESSION_TIMEOUT: Final = {"ret": -14, "errcode": -14, "errmsg": "session timeout"}


class Router:
    """Answers one :class:`~.model.SandboxRequest` with the sandbox's parts."""

    def __init__(
        self,
        state: State,
        faults: Faults,
        login: Login,
        inbound: Inbound,
        outbound: Outbound,
        cdn: Cdn,
    ) -> None:
        self._state = state
        self._faults = faults
        self._login = login
        self._inbound = inbound
        self._outbound = outbound
        self._cdn = cdn

    def _route(self, path: str) -> tuple[str, str]:
        api_path = urlsplit(self._state.api_base).path.rstrip("/")
        cdn_path = urlsplit(self._state.cdn_base).path.rstrip("/")
        if path in (cdn_path + "/upload", cdn_path + "/download"):
            return "cdn", path.rsplit("/", 1)[1]
        for prefix in {api_path, ""}:
            if path.startswith(prefix + "/_sandbox/"):
                return "admin", path[len(prefix) + len("/_sandbox/") :]
            if path.startswith(prefix + "/ilink/bot/"):
                return "api", path[len(prefix) + len("/ilink/bot/") :]
        return "none", path

    async def handle(self, req: SandboxRequest, admin: AdminHandler) -> SandboxResponse:
        parts = urlsplit(req.target)
        query = parse_qs(parts.query, keep_blank_values=True)
        kind, rest = self._route(parts.path)
        if kind == "admin":
            return admin(req.method, rest, query, req.body, Headers(req.headers))
        if kind == "cdn":
            endpoint = "cdn_" + rest
        elif kind == "api" and rest in _API:
            endpoint = _API[rest][0]
        else:
            if "/ilink/" in parts.path:
                with self._state.lock:
                    self._state.violate("unknown", "route.unknown", f"{req.method} {parts.path}")
            return SandboxResponse.text("not found", 404)

        fault = self._faults.pick(endpoint)
        if fault is not None:
            name, delay = fault
            if name == "500":
                return SandboxResponse.text("internal server error", 500)
            if name == "400":
                return SandboxResponse(
                    400,
                    [("Content-Type", "text/plain"), ("x-error-message", "sandbox fault: 400")],
                    b"bad request",
                )
            if name == "reset_before":
                return SandboxResponse(reset=True)
            if name == "delay":
                await asyncio.sleep(delay)
        if kind == "cdn":
            resp = self._cdn.request(rest, req, query)
        else:
            resp = await self._api_request(rest, req, query)
        if fault is not None and fault[0] == "reset_after":
            return SandboxResponse(reset=True)
        return resp

    def _auth(self, req: SandboxRequest) -> Bot | None:
        value = Headers(req.headers).one("authorization")
        if value is None or not value.startswith("Bearer "):
            return None
        bot = self._state.by_token.get(value[len("Bearer ") :].strip())
        if bot is None or bot.expired:
            return None
        return bot

    async def _api_request(
        self, name: str, req: SandboxRequest, query: dict[str, list[str]]
    ) -> SandboxResponse:
        st = self._state
        endpoint, method, authenticated = _API[name]
        bot: Bot | None = None
        try:
            with st.lock:
                obj = check_common(st, method, authenticated, req)
                if authenticated:
                    bot = self._auth(req)
                    if bot is None:
                        st.refuse(endpoint, "session_timeout")
                        return SandboxResponse.json(_SESSION_TIMEOUT)
            if name == "get_qrcode_status":
                return await self._login.qr_status(query, req.via_redirect)
            if name == "getupdates":
                assert obj is not None and bot is not None
                return await self._inbound.getupdates(bot, obj)
            assert obj is not None
            with st.lock:
                if name == "get_bot_qrcode":
                    return SandboxResponse.json(self._login.get_bot_qrcode(obj, query))
                assert bot is not None
                if name == "sendmessage":
                    return SandboxResponse.json(self._outbound.sendmessage(bot, obj))
                if name == "getuploadurl":
                    return SandboxResponse.json(self._cdn.getuploadurl(bot, obj))
                if name == "getconfig":
                    return SandboxResponse.json(self._outbound.getconfig(bot, obj))
                if name == "sendtyping":
                    return SandboxResponse.json(self._outbound.sendtyping(bot, obj))
                bot.online = name == "msg/notifystart"
                return SandboxResponse.json({"ret": 0})
        except Violation as v:
            with st.lock:
                st.violate(endpoint, v.rule, v.detail)
            return SandboxResponse.json({})
