"""The one exception tree of ilinkbot's protocol layer.

::

    IlinkError
    ├── TransportError          network failure or client-side timeout (retryable)
    │   └── RequestTimeout
    ├── HttpStatusError         non-2xx answer (5xx retryable, 4xx final)
    ├── ProtocolError           an answer that is not the JSON object the protocol promises
    └── ApiError                ``ret``/``errcode`` other than 0
        ├── SessionExpired      -14: the bot token is stale; only a new QR login cures it
        └── ReplyWindowClosed   ``ret=-2`` on sendmessage: the user must write first

``ret=0`` without a ``message_id`` on sendmessage is not an exception: it is the
*unconfirmed* outcome, :attr:`ilink.models.SendAck.confirmed` is ``False``.

Every answer is mapped in one place, :func:`check_response`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "SESSION_EXPIRED_CODE",
    "ApiError",
    "HttpStatusError",
    "IlinkError",
    "ProtocolError",
    "ReplyWindowClosed",
    "RequestTimeout",
    "SessionExpired",
    "TransportError",
    "check_response",
]

SESSION_EXPIRED_CODE = -14
REPLY_WINDOW_CLOSED_RET = -2


class IlinkError(Exception):
    """Base class of every error raised by the ilink client."""

    #: Whether repeating the same request may succeed.
    retryable: bool = False

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint


class TransportError(IlinkError):
    """The request did not get an answer (connection refused/reset, DNS, timeout)."""

    retryable = True


class RequestTimeout(TransportError):
    """The client-side timeout ran out (normal for long-polls)."""


class HttpStatusError(IlinkError):
    """The server answered with a non-2xx HTTP status."""

    def __init__(self, status: int, body: str, *, endpoint: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}", endpoint=endpoint)
        self.status = status
        self.body = body
        self.retryable = status >= 500 or status in (408, 429)


class ProtocolError(IlinkError):
    """The answer was not the JSON object the protocol promises."""

    retryable = True


class ApiError(IlinkError):
    """The server answered ``ret``/``errcode`` other than 0."""

    def __init__(
        self,
        ret: int | None,
        errcode: int | None,
        errmsg: str | None,
        *,
        endpoint: str | None = None,
    ) -> None:
        super().__init__(
            f"ret={ret}, errcode={errcode}, errmsg={errmsg or ''}".rstrip(", "), endpoint=endpoint
        )
        self.ret = ret
        self.errcode = errcode
        self.errmsg = errmsg


class SessionExpired(ApiError):
    """errcode/ret -14: the bot token is stale. Run ``ilinkbot login`` again."""


class ReplyWindowClosed(ApiError):
    """``ret=-2`` on sendmessage: quota or 24 h window used up, or rate-limited."""


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def check_response(endpoint: str, status: int, body: bytes) -> dict[str, Any]:
    """Map one HTTP answer to its JSON object or to the matching :class:`IlinkError`."""
    text = body.decode("utf-8", errors="replace")
    if not 200 <= status < 300:
        raise HttpStatusError(status, text, endpoint=endpoint)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # also: an int past Python's digit limit
        raise ProtocolError(f"{endpoint}: answer is not JSON ({exc})", endpoint=endpoint) from None
    except RecursionError:
        raise ProtocolError(
            f"{endpoint}: answer is nested too deep to decode", endpoint=endpoint
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{endpoint}: answer is not a JSON object", endpoint=endpoint)
    ret = _as_int(data.get("ret"))
    errcode = _as_int(data.get("errcode"))
    if ("ret" in data and ret is None) or ("errcode" in data and errcode is None):
        raise ProtocolError(f"{endpoint}: ret/errcode is not an integer", endpoint=endpoint)
    errmsg = data.get("errmsg")
    errmsg = errmsg if isinstance(errmsg, str) else None
    if SESSION_EXPIRED_CODE in (ret, errcode):
        raise SessionExpired(ret, errcode, errmsg, endpoint=endpoint)
    if (ret or 0) != 0 or (errcode or 0) != 0:
        if endpoint == "sendmessage" and ret == REPLY_WINDOW_CLOSED_RET:
            raise ReplyWindowClosed(ret, errcode, errmsg, endpoint=endpoint)
        raise ApiError(ret, errcode, errmsg, endpoint=endpoint)
    return data
