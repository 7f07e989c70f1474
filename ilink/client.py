"""Async client for the ilink bot HTTP API (PROTOCOL.md §1-§7).

The HTTP stack is injected (``httpx.AsyncClient``), so tests and the sandbox plug in a
transport. Each request carries exactly the headers and bytes the official client sends.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from ._version import DEFAULT_CHANNEL_VERSION, __version__
from .defaults import DEFAULT_BASE_URL, DEFAULT_CDN_BASE_URL
from .errors import IlinkError, ProtocolError, RequestTimeout, TransportError, check_response
from .log import get_logger, register_secret
from .models import (
    MessageItem,
    MessageState,
    MessageType,
    QrCode,
    QrStatus,
    SendAck,
    TypingStatus,
    UpdatesBatch,
    UploadUrl,
    WeixinMessage,
)
from .pools import API, LONGPOLL, POOL, IlinkHttp, http_client
from .wire import (
    client_version,
    dumps,
    encode_query_value,
    endpoint_url,
    new_client_id,
    new_uin,
    sanitize_bot_agent,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CDN_BASE_URL",
    "IlinkClient",
    "build_send_body",
]

APP_ID = "bot"

# Client timeouts in seconds (§1.7, §8.1); None = no timeout.
GETUPDATES_TIMEOUT = 35.0
QR_STATUS_TIMEOUT = 35.0
SEND_TIMEOUT = 15.0
UPLOAD_URL_TIMEOUT = 15.0
LIGHT_TIMEOUT = 10.0

# Requests the server holds open until something happens: their own pool (ilink.pools).
_LONG_POLLS = frozenset({"getupdates", "get_qrcode_status"})

_log = get_logger("ilink.client")


def build_send_body(
    to_user_id: str,
    item: MessageItem | dict[str, Any],
    *,
    client_id: str,
    context_token: str | None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """The ``msg`` object of sendmessage, keys in the official order (§5.1)."""
    item_dict = item.to_dict() if isinstance(item, MessageItem) else item
    return {
        "from_user_id": "",
        "to_user_id": to_user_id,
        "client_id": client_id,
        "message_type": int(MessageType.BOT),
        "message_state": int(MessageState.FINISH),
        "item_list": [item_dict],
        "context_token": context_token,
        "run_id": run_id,
    }


class IlinkClient:
    """One bot account's view of the ilink API.

    ``base_url`` is the API base (the login's ``baseurl`` once logged in); ``token`` the
    bearer token (``None`` before login). ``http`` is an injected ``httpx.AsyncClient``;
    when omitted the client creates and owns one (:func:`ilink.pools.http_client`). Each
    request names its pool (long-poll or API) in the ``POOL`` request extension.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        channel_version: str = DEFAULT_CHANNEL_VERSION,
        bot_agent: str | None = None,
        route_tag: str | None = None,
    ) -> None:
        self.base_url = base_url
        self.token = token.strip() if token else None
        register_secret(self.token)
        self.channel_version = channel_version
        self.bot_agent = sanitize_bot_agent(bot_agent or f"ilinkbot/{__version__}")
        self.route_tag = route_tag
        self._own_http = http is None
        self.http = http if http is not None else http_client()
        self._urls: dict[str, httpx.URL] = {}  # parsed once per endpoint
        #: Sticky long-poll timeout, updated from ``longpolling_timeout_ms`` (§3.3).
        self.getupdates_timeout = GETUPDATES_TIMEOUT

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def __aenter__(self) -> IlinkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- plumbing -----------------------------------------------------------------

    @property
    def base_info(self) -> dict[str, str]:
        return {"channel_version": self.channel_version, "bot_agent": self.bot_agent}

    def _common_headers(self) -> dict[str, str]:
        headers = {
            "iLink-App-Id": APP_ID,
            "iLink-App-ClientVersion": client_version(self.channel_version),
        }
        if self.route_tag:
            headers["SKRouteTag"] = self.route_tag
        return headers

    def post_headers(self, body: bytes) -> dict[str, str]:
        """The POST header set of §1.4 for ``body`` (fresh ``X-WECHAT-UIN`` each call)."""
        headers = {
            "Content-Type": "application/json",
            "AuthorizationType": "ilink_bot_token",
            "X-WECHAT-UIN": new_uin(),
            **self._common_headers(),
            "Content-Length": str(len(body)),
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _send(
        self,
        name: str,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        content: bytes,
        timeout: float | None,
    ) -> tuple[int, bytes]:
        """``(status, body)`` of one call; httpx's failures as this package's errors."""
        pool = LONGPOLL if name in _LONG_POLLS else API
        started = time.monotonic()
        try:
            if isinstance(self.http, IlinkHttp):
                parsed = self._urls.get(url)
                if parsed is None:
                    parsed = httpx.URL(url)
                    if len(self._urls) < 64:  # the fixed endpoints; not each QR status URL
                        self._urls[url] = parsed
                status, body = await self.http.send_bytes(
                    pool, method, parsed, headers, content, timeout
                )
            else:  # a caller's own httpx client: its settings apply
                response = await self.http.request(
                    method,
                    url,
                    headers=headers,
                    content=content or None,
                    timeout=httpx.Timeout(timeout),
                    extensions={POOL: pool},
                )
                status, body = response.status_code, response.content
        except httpx.TimeoutException as exc:
            raise RequestTimeout(
                f"{name}: timed out ({type(exc).__name__})", endpoint=name
            ) from None
        except httpx.HTTPError as exc:
            raise TransportError(f"{name}: {type(exc).__name__}: {exc}", endpoint=name) from None
        _log.debug(
            "ilink_call",
            endpoint=name,
            status=status,
            ms=round((time.monotonic() - started) * 1000),
        )
        return status, body

    async def _post(
        self,
        name: str,
        path: str,
        body: dict[str, Any],
        *,
        timeout: float | None,
        with_base_info: bool = True,
        base_url: str | None = None,
    ) -> dict[str, Any]:
        if with_base_info:
            body = {**body, "base_info": self.base_info}
        content = dumps(body)
        url = endpoint_url(base_url or self.base_url, path)
        status, answer = await self._send(
            name, "POST", url, headers=self.post_headers(content), content=content, timeout=timeout
        )
        return check_response(name, status, answer)

    # ---- QR login (§2) ---------------------------------------------------------------

    async def get_bot_qrcode(self, local_tokens: list[str] | None = None) -> QrCode:
        tokens = [t for t in (local_tokens or []) if t][:10]
        for token in tokens:
            register_secret(token)
        data = await self._post(
            "get_bot_qrcode",
            "ilink/bot/get_bot_qrcode?bot_type=3",
            {"local_token_list": tokens},
            timeout=None,
            with_base_info=False,
        )
        qrcode, content = data.get("qrcode"), data.get("qrcode_img_content")
        if not isinstance(qrcode, str) or not qrcode or not isinstance(content, str):
            raise ProtocolError(
                "get_bot_qrcode: no qrcode in the answer", endpoint="get_bot_qrcode"
            )
        return QrCode(qrcode=qrcode, qrcode_img_content=content)

    async def get_qrcode_status(
        self,
        qrcode: str,
        *,
        verify_code: str | None = None,
        base_url: str | None = None,
        timeout: float = QR_STATUS_TIMEOUT,
    ) -> QrStatus:
        """Long-poll the QR status. Every failure is folded into ``wait`` (§2.2)."""
        path = f"ilink/bot/get_qrcode_status?qrcode={encode_query_value(qrcode)}"
        if verify_code:
            path += f"&verify_code={encode_query_value(verify_code)}"
        url = endpoint_url(base_url or self.base_url, path)
        try:
            status, answer = await self._send(
                "get_qrcode_status",
                "GET",
                url,
                headers=self._common_headers(),
                content=b"",
                timeout=timeout,
            )
            data = check_response("get_qrcode_status", status, answer)
        except IlinkError as exc:
            _log.debug("qr_status_folded_to_wait", error=type(exc).__name__)
            return QrStatus(status="wait")

        def s(key: str) -> str | None:
            v = data.get(key)
            return v if isinstance(v, str) and v else None

        token = s("bot_token")
        register_secret(token)
        return QrStatus(
            status=s("status") or "wait",
            bot_token=token,
            ilink_bot_id=s("ilink_bot_id"),
            baseurl=s("baseurl"),
            ilink_user_id=s("ilink_user_id"),
            redirect_host=s("redirect_host"),
        )

    # ---- receiving (§3) ---------------------------------------------------------------

    async def get_updates(self, cursor: str, *, timeout: float | None = None) -> UpdatesBatch:
        """One long-poll. A client-side timeout is an empty batch with no new cursor."""
        try:
            data = await self._post(
                "getupdates",
                "ilink/bot/getupdates",
                {"get_updates_buf": cursor or ""},
                timeout=timeout if timeout is not None else self.getupdates_timeout,
            )
        except RequestTimeout:
            return UpdatesBatch(messages=[], cursor=None, longpolling_timeout_ms=None)
        lp = data.get("longpolling_timeout_ms")
        longpoll = lp if isinstance(lp, int) and not isinstance(lp, bool) and lp > 0 else None
        if longpoll is not None:
            self.getupdates_timeout = longpoll / 1000.0
        raw_msgs = data.get("msgs")
        messages: list[WeixinMessage] = []
        malformed: list[Any] = []
        if isinstance(raw_msgs, list):
            for raw in raw_msgs:
                if isinstance(raw, dict):
                    messages.append(WeixinMessage.from_dict(raw))
                else:
                    malformed.append(raw)
        elif raw_msgs is not None:
            malformed.append(raw_msgs)
        buf = data.get("get_updates_buf")
        return UpdatesBatch(
            messages=messages,
            cursor=buf if isinstance(buf, str) and buf else None,
            longpolling_timeout_ms=longpoll,
            malformed=malformed,
        )

    # ---- sending (§5) -----------------------------------------------------------------

    async def send_message(self, msg: dict[str, Any]) -> SendAck:
        """POST one ``msg`` (see :func:`build_send_body`).

        Raises :class:`~ilink.errors.ReplyWindowClosed` on ``ret=-2`` and
        :class:`~ilink.errors.ApiError` on any other non-zero ``ret``; ``ret=0`` without a
        ``message_id`` comes back as an unconfirmed :class:`SendAck`.
        """
        register_secret(msg.get("context_token"))
        data = await self._post(
            "sendmessage", "ilink/bot/sendmessage", {"msg": msg}, timeout=SEND_TIMEOUT
        )
        mid = data.get("message_id")
        message_id = str(mid) if isinstance(mid, int) and not isinstance(mid, bool) else None
        if isinstance(mid, str) and mid.strip().isdigit():
            message_id = mid.strip()
        if message_id == "0":
            message_id = None
        return SendAck(client_id=str(msg.get("client_id", "")), message_id=message_id)

    async def send_text(
        self,
        to_user_id: str,
        text: str,
        *,
        context_token: str | None,
        client_id: str | None = None,
        run_id: str | None = None,
    ) -> SendAck:
        body = build_send_body(
            to_user_id,
            MessageItem.text(text),
            client_id=client_id or new_client_id(),
            context_token=context_token,
            run_id=run_id,
        )
        return await self.send_message(body)

    # ---- media (§7.2) -----------------------------------------------------------------

    async def get_upload_url(
        self,
        *,
        filekey: str,
        media_type: int,
        to_user_id: str,
        rawsize: int,
        rawfilemd5: str,
        filesize: int,
        aeskey: str,
    ) -> UploadUrl:
        register_secret(aeskey)
        data = await self._post(
            "getuploadurl",
            "ilink/bot/getuploadurl",
            {
                "filekey": filekey,
                "media_type": int(media_type),
                "to_user_id": to_user_id,
                "rawsize": rawsize,
                "rawfilemd5": rawfilemd5,
                "filesize": filesize,
                "no_need_thumb": True,
                "aeskey": aeskey,
            },
            timeout=UPLOAD_URL_TIMEOUT,
        )
        full = data.get("upload_full_url")
        param = data.get("upload_param")
        full_url = full.strip() if isinstance(full, str) and full.strip() else None
        upload_param = param if isinstance(param, str) and param else None
        if full_url is None and upload_param is None:
            raise ProtocolError(
                "getuploadurl: no upload URL in the answer", endpoint="getuploadurl"
            )
        return UploadUrl(upload_full_url=full_url, upload_param=upload_param)

    # ---- typing and presence (§3.5, §6) ---------------------------------------------------

    async def get_config(self, user_id: str, context_token: str | None = None) -> str:
        """The user's ``typing_ticket`` ("" when the server gave none).

        Only an answer with ``ret`` 0 counts, as for the official client: one without ``ret``
        raises :class:`ProtocolError` instead of passing for an empty ticket.
        """
        data = await self._post(
            "getconfig",
            "ilink/bot/getconfig",
            {"ilink_user_id": user_id, "context_token": context_token},
            timeout=LIGHT_TIMEOUT,
        )
        if "ret" not in data:
            raise ProtocolError("getconfig: answer has no ret", endpoint="getconfig")
        ticket = data.get("typing_ticket")
        return ticket if isinstance(ticket, str) else ""

    async def send_typing(self, user_id: str, ticket: str, status: TypingStatus | int) -> None:
        await self._post(
            "sendtyping",
            "ilink/bot/sendtyping",
            {"ilink_user_id": user_id, "typing_ticket": ticket, "status": int(status)},
            timeout=LIGHT_TIMEOUT,
        )

    async def notify_start(self) -> None:
        await self._post("msg/notifystart", "ilink/bot/msg/notifystart", {}, timeout=LIGHT_TIMEOUT)

    async def notify_stop(self) -> None:
        await self._post("msg/notifystop", "ilink/bot/msg/notifystop", {}, timeout=LIGHT_TIMEOUT)
