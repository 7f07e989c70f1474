"""The HTTP push gateway and web login of ``ilinkbot serve`` (a Starlette app).

Routes (all but ``/healthz`` and the static ``/login`` page need the bearer token):

* ``POST|PUT /push`` and ``/push/{alias}``: a push to the owner or to a named user;
  ``POST /`` too, where ntfy clients publish JSON (the recipient in its ``topic``);
* ``POST /hooks/alertmanager[/{alias}]`` (also ``/hooks/grafana``): webhook payloads;
* ``GET /login``: the login page; ``POST /login/start``, ``GET /login/status``,
  ``POST /login/code``: what it calls;
* ``/v1/logins``, ``/v1/accounts``: the accounts API (see :mod:`.accounts_api`).

A push answers ``{"ok", "id", "ids", "state", "to", ...}``: 200 when delivered, 202 when held
or unconfirmed (stored; not known to be delivered), 502 when it failed, 503 when the session
expired. Errors are one-line JSON: 401, 404, 405, 409, 413, 422, 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ilinkbot.ilink import SessionExpired
from ilinkbot.ilink.log import get_logger, register_secret

from .. import spool
from ..accounts import choose_account
from ..config import Config
from ..events import Events
from ..login import LoginResult
from ..metrics import render
from ..outbox import Outbox, SendResult
from ..push import CATCH_UP_SECONDS, PushRequest, catch_up, push
from ..service import Service
from ..status import summary
from .accounts_api import api_routes, push_account
from .alerts import alertmanager_notification
from .auth import request_token, token_matches
from .bodies import Attachment, BodyError, Notification, load_json, parse_push
from .errors import HANDLED, ApiError, error_response
from .errors import error_json as _error
from .page import LOGIN_PAGE
from .weblogin import Logins, WebLogin

__all__ = ["Gateway", "create_app", "status_for"]

_log = get_logger("ilinkbot.serve")

#: HTTP status of a push by its state.
_STATUS_BY_STATE = {
    "delivered": 200,
    "held": 202,
    "unconfirmed": 202,
    "pending": 202,
    "failed": 502,
    "session_expired": 503,
}
#: Webhook payloads (many alerts) may be larger than a text push.
MAX_HOOK_BODY = 4 * 1024 * 1024


def status_for(state: str) -> int:
    return _STATUS_BY_STATE.get(state, 502)


class Gateway:
    """The state behind the routes: the service (store, HTTP pool), the outbox, the login."""

    def __init__(
        self,
        config: Config,
        *,
        token: str,
        store: Any = None,
        transport: httpx.AsyncBaseTransport | None = None,
        catch_up_seconds: float = CATCH_UP_SECONDS,
        on_login: Callable[[LoginResult], Awaitable[None] | None] | None = None,
    ) -> None:
        self.config = config
        self.token = token
        register_secret(token)  # never in a log line
        self._store = store
        self._transport = transport
        self.catch_up_seconds = catch_up_seconds
        self._svc: Service | None = None
        self._outbox: Outbox | None = None
        #: Observers of the gateway's deliveries (``--webhook``).
        self.events = Events()
        self._catch_lock: asyncio.Lock | None = None
        self._last_catch: dict[str, float] = {}
        self.login = WebLogin(
            lambda: self.svc, timeout=float(config.login_timeout_seconds), on_done=on_login
        )
        #: The accounts API's logins: several at once, by id.
        self.logins = Logins(
            lambda: self.svc, timeout=float(config.login_timeout_seconds), on_done=on_login
        )

    @property
    def svc(self) -> Service:
        if self._svc is None:
            self._svc = Service(self.config, store=self._store, transport=self._transport)
        return self._svc

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(self.svc, events=self.events)
        return self._outbox

    async def aclose(self) -> None:
        await self.login.aclose()
        await self.logins.aclose()
        if self._svc is not None:
            await self._svc.aclose()
            self._svc = None
            self._outbox = None

    # ---- auth ------------------------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        candidates = request_token(
            request.headers.get("authorization"), request.query_params.get("auth")
        )
        return any(token_matches(c, self.token) for c in candidates)

    # ---- pushing ---------------------------------------------------------------------------

    async def _catch_up(self, account: str | None, recipient: str | None) -> None:
        """One getupdates pass before pushing (fresh context tokens), one at a time and shared
        by pushes that arrive together; skipped when a poller (``--poll`` or ``ilinkbot run``)
        holds the account."""
        if self.catch_up_seconds <= 0:
            return
        svc = self.svc
        acc = await svc.call(
            choose_account, svc.store, account, for_users=[recipient] if recipient else None
        )
        if self._catch_lock is None:
            self._catch_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        arrived = loop.time()
        async with self._catch_lock:
            # A pass that started after this push arrived saw all it could see: reuse it.
            if self._last_catch.get(acc.bot_id, -1e18) >= arrived:
                return
            started = loop.time()
            try:
                await catch_up(self.outbox, acc, seconds=self.catch_up_seconds)
            except SessionExpired:
                await svc.mark_expired(acc.bot_id)
                raise
            self._last_catch[acc.bot_id] = started

    async def send(self, note: Notification, *, to: str | None, account: str | None) -> SendResult:
        recipient = to or note.recipient
        paths = [await self.svc.call(self._spool, a) for a in note.attachments]
        requests: list[PushRequest] = []
        try:
            if not paths:
                requests.append(PushRequest(note.text, title=note.title))
            for i, (att, path) in enumerate(zip(note.attachments, paths, strict=True)):
                media = {att.kind: path}
                if i == 0:
                    requests.append(PushRequest(note.text, title=note.title, **media))
                else:
                    requests.append(PushRequest(None, **media))
        except ValueError as exc:
            raise BodyError(str(exc)) from None
        await self._catch_up(account, recipient)
        outcomes = []
        for req in requests:
            result = await push(
                self.svc, req, to=recipient, account=account, catch_up_seconds=0, outbox=self.outbox
            )
            outcomes += result.messages
        return SendResult.combine(outcomes)

    def _spool(self, att: Attachment) -> Path:
        """Keep an upload on disk until it is sent (held rows go out later; see bot.spool)."""
        if len(att.data) > self.config.media_max_bytes:
            raise BodyError(f"file too large (limit {self.config.media_max_bytes} bytes)", 413)
        return spool.keep(self.config.home, att.data, att.name)


# ---------------------------------------------------------------------------------- routes


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length and length.isdigit() and (len(length) > 18 or int(length) > limit):
        raise ApiError(413, f"body too large (limit {limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"body too large (limit {limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def _result_response(result: SendResult) -> JSONResponse:
    first = result.messages[0] if result.messages else None
    reason = next((m.reason for m in result.messages if m.reason), None)
    body = {
        "ok": result.ok,
        "id": first.outbox_id if first else None,
        "ids": [m.outbox_id for m in result.messages],
        "state": result.state,
        "to": first.user_id if first else None,
        "message_ids": result.message_ids,
        "reason": reason,
    }
    return JSONResponse(body, status_code=status_for(result.state))


def create_app(gateway: Gateway) -> Starlette:
    """The Starlette app over ``gateway`` (closed with the app's lifespan)."""

    def guarded(
        handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            status = 500
            try:
                if auth and not gateway.authorized(request):
                    response: Response = _error(
                        401,
                        "missing or wrong token: send `Authorization: Bearer TOKEN` or "
                        "?auth=TOKEN (see `ilinkbot serve --show-token`)",
                    )
                else:
                    response = await _answer(handler, request)
                status = response.status_code
                return response
            finally:
                _log.info(
                    "http_request",
                    method=request.method,
                    path=request.url.path,
                    status=status,
                    ms=round((time.monotonic() - started) * 1000),
                )

        return endpoint

    async def push_route(request: Request) -> Response:
        alias = request.path_params.get("alias")
        limit = gateway.config.media_max_bytes if request.method == "PUT" else None
        if limit is None:
            from .bodies import MAX_TEXT_BODY

            # A POST may carry a file too (Filename header or a binary body).
            limit = max(MAX_TEXT_BODY, gateway.config.media_max_bytes)
        body = await _body(request, limit)
        note = parse_push(
            request.method,
            request.headers.get("content-type"),
            body,
            request.headers,
            request.query_params,
        )
        account = await push_account(gateway.svc, request.path_params, request.query_params)
        result = await gateway.send(note, to=alias, account=account)
        return _result_response(result)

    async def hook_route(request: Request) -> Response:
        alias = request.path_params.get("alias")
        body = await _body(request, MAX_HOOK_BODY)
        note = alertmanager_notification(load_json(body))
        result = await gateway.send(note, to=alias, account=request.query_params.get("account"))
        return _result_response(result)

    async def login_page(request: Request) -> Response:
        return HTMLResponse(
            LOGIN_PAGE,
            headers={
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY",
                "Content-Security-Policy": "default-src 'none'; img-src data:; "
                "style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'",
            },
        )

    async def login_start(request: Request) -> Response:
        body = await _body(request, 4096)
        restart = False
        if body.strip():
            try:
                data = load_json(body)
            except BodyError:
                raise BodyError('expected a JSON object such as {"restart": true}') from None
            restart = isinstance(data, dict) and data.get("restart") is True
        return JSONResponse(gateway.login.start(restart=restart))

    async def login_status(request: Request) -> Response:
        return JSONResponse(gateway.login.status(), headers={"Cache-Control": "no-store"})

    async def login_code(request: Request) -> Response:
        body = await _body(request, 4096)
        try:
            data = load_json(body or b"{}")
        except BodyError:
            raise BodyError('expected {"code": "NUMBER"}') from None
        code = data.get("code") if isinstance(data, dict) else None
        if not isinstance(code, (str, int)) or isinstance(code, bool):
            raise BodyError('expected {"code": "NUMBER"}')
        try:
            return JSONResponse(gateway.login.submit_code(str(code)))
        except ValueError as exc:
            raise BodyError(str(exc)) from None
        except LookupError as exc:
            raise ApiError(409, str(exc)) from None

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def metrics(request: Request) -> Response:
        counts = await gateway.svc.read(summary, gateway.svc.store)
        return PlainTextResponse(render(counts), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            if exc.status_code == 404:
                return _error(404, f"no route {request.method} {request.url.path}")
            if exc.status_code == 405:
                return _error(405, f"method {request.method} not allowed on {request.url.path}")
            return _error(exc.status_code, str(exc.detail))
        return _error(500, "internal error")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(spool.sweep_forever(gateway.svc))
        try:
            yield
        finally:
            sweeper.cancel()
            await gateway.aclose()

    push_methods = ["POST", "PUT"]
    routes = [
        Route("/healthz", guarded(health, auth=False), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/", guarded(push_route), methods=["POST"]),  # ntfy's JSON publishing
        Route("/push", guarded(push_route), methods=push_methods),
        Route("/push/{alias}", guarded(push_route), methods=push_methods),
        Route("/hooks/alertmanager", guarded(hook_route), methods=["POST"]),
        Route("/hooks/alertmanager/{alias}", guarded(hook_route), methods=["POST"]),
        Route("/hooks/grafana", guarded(hook_route), methods=["POST"]),
        Route("/hooks/grafana/{alias}", guarded(hook_route), methods=["POST"]),
        Route("/login", guarded(login_page, auth=False), methods=["GET"]),
        Route("/login/start", guarded(login_start), methods=["POST"]),
        Route("/login/status", guarded(login_status), methods=["GET"]),
        Route("/login/code", guarded(login_code), methods=["POST"]),
        *api_routes(lambda: gateway.svc, gateway.logins, guarded, _body, push_route),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_found})
    app.state.gateway = gateway
    return app


async def _answer(handler: Callable[[Request], Awaitable[Response]], request: Request) -> Response:
    """Run a route and turn every known failure into one-line error JSON (see .errors)."""
    try:
        return await handler(request)
    except HANDLED as exc:
        return error_response(exc)
