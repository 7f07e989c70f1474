"""The one table from an exception to the exit code (bot/exitcodes.py) that reports it.

Looked up along the exception's class hierarchy, the most specific class first; errors that
carry their own code (:class:`CliError`, :class:`BotError`) keep it. An exception in no row is
a bug: ``ilinkbot: unexpected error`` with the traceback logged, exit 1.
"""

from __future__ import annotations

import functools
from typing import Any

from ilinkbot.ilink.errors import IlinkError, SessionExpired

from ..config import ConfigError
from ..errors import BotError
from ..exitcodes import Exit
from .common import CliError

__all__ = ["exit_table", "report_for"]


@functools.cache
def exit_table() -> dict[type[BaseException], Exit]:
    """Built on the first error, so that a command that succeeds never imports the drivers."""
    import sqlite3

    import psycopg
    from sqlalchemy.exc import SQLAlchemyError

    from ilinkbot.store import DatabaseUrlError, NotFoundError, StoreUnavailable

    return {
        ConfigError: Exit.USAGE,
        DatabaseUrlError: Exit.USAGE,
        NotFoundError: Exit.NOT_FOUND,
        StoreUnavailable: Exit.STORAGE,
        SQLAlchemyError: Exit.STORAGE,  # the database failed mid-command (disk full, ...)
        sqlite3.Error: Exit.STORAGE,
        psycopg.Error: Exit.STORAGE,
        FileNotFoundError: Exit.NOT_FOUND,
        OSError: Exit.STORAGE,  # a file under $ILINKBOT_HOME: read-only, disk full
        SessionExpired: Exit.SESSION_EXPIRED,
        IlinkError: Exit.ERROR,
        KeyboardInterrupt: Exit.INTERRUPTED,
    }


def _message(exc: BaseException, code: Exit) -> str:
    from ilinkbot.store.errors import StoreError, one_line

    if isinstance(exc, SessionExpired):
        return "the bot session expired: run `ilinkbot login`"
    if isinstance(exc, IlinkError):
        return f"server error: {exc}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if code == Exit.STORAGE and not isinstance(exc, StoreError):
        return f"database error: {one_line(exc)}"
    return " ".join(str(exc).split()) or type(exc).__name__


def report_for(exc: BaseException) -> tuple[str, Exit, dict[str, Any]] | None:
    """The one-line message, exit code and extra JSON fields for ``exc``; None if unknown."""
    if isinstance(exc, CliError):
        return str(exc), exc.code, exc.fields
    if isinstance(exc, BotError):
        return str(exc), exc.exit_code, {}
    table = exit_table()
    for cls in type(exc).__mro__:
        if cls in table:
            return _message(exc, table[cls]), table[cls], {}
    return None
