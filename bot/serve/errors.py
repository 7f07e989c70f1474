"""The one table from an error a route raises to the HTTP answer it gets (one-line JSON).

Looked up along the exception's class hierarchy, the most specific class first. Errors that
carry their own status (:class:`BodyError`: 413 or 422, :class:`ApiError`) keep it. An
exception not in the table is a bug: Starlette answers 500 and logs it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse

from ilinkbot.ilink import IlinkError, SessionExpired
from ilinkbot.store import StoreUnavailable
from ilinkbot.store.errors import one_line

from ..errors import (
    AccountError,
    AmbiguousAccount,
    BotError,
    NoContextError,
    UnknownAccount,
    UnknownRecipient,
)
from ..exitcodes import Exit
from .bodies import BodyError
from .weblogin import TooManyLogins, UnknownLogin

__all__ = ["HANDLED", "STATUS_BY_ERROR", "ApiError", "error_json", "error_response"]


class ApiError(Exception):
    """A route's own refusal, with its status and extra JSON fields."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields


STATUS_BY_ERROR: dict[type[BaseException], int] = {
    UnknownLogin: 404,
    TooManyLogins: 429,
    UnknownRecipient: 404,
    UnknownAccount: 404,
    AmbiguousAccount: 409,
    NoContextError: 409,
    AccountError: 503,  # none logged in, logged out or expired: someone must log in
    BotError: 422,
    SessionExpired: 503,
    IlinkError: 502,
    ClientDisconnect: 400,  # nobody reads the answer; the access log shows it
    StoreUnavailable: 503,  # the database: full disk, unreachable PostgreSQL, ...
    SQLAlchemyError: 503,
    sqlite3.Error: 503,
    psycopg.Error: 503,
    FileNotFoundError: 422,
    OSError: 507,  # the spool could not keep an upload (disk full, ...)
}
#: What a route catches and answers with :func:`error_response`.
HANDLED: tuple[type[BaseException], ...] = (BodyError, ApiError, *STATUS_BY_ERROR)


def error_json(status: int, message: str, **fields: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="ilinkbot"'} if status == 401 else None
    return JSONResponse(
        {"ok": False, "error": message, "status": status, **fields},
        status_code=status,
        headers=headers,
    )


def _status(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    raise LookupError(type(exc).__name__)


def error_response(exc: BaseException) -> JSONResponse:
    """The answer to one of the :data:`HANDLED` errors."""
    if isinstance(exc, BodyError):
        return error_json(exc.status, str(exc))
    if isinstance(exc, ApiError):
        return error_json(exc.status, str(exc), **exc.fields)
    status = _status(exc)
    fields: dict[str, Any] = {}
    message = str(exc)
    if isinstance(exc, BotError):
        fields["exit_code"] = int(exc.exit_code)
        if isinstance(exc, NoContextError):
            fields["reason"] = "no_context"
        elif isinstance(exc, AccountError):
            expired = exc.exit_code == Exit.SESSION_EXPIRED
            fields["reason"] = "session_expired" if expired else "account"
    elif isinstance(exc, SessionExpired):
        message = "the bot session expired: log in again (`ilinkbot login` or /login)"
        fields = {"reason": "session_expired", "exit_code": int(Exit.SESSION_EXPIRED)}
    elif isinstance(exc, IlinkError):
        message = f"server error: {exc}"
    elif isinstance(exc, (SQLAlchemyError, sqlite3.Error, psycopg.Error)):
        message = f"database error: {one_line(exc)}"
    elif isinstance(exc, ClientDisconnect):
        message = "the client disconnected before the body was complete"
    elif isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        message = f"cannot keep the upload: {exc.strerror or exc}"
    return error_json(status, message, **fields)
