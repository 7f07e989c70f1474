"""The store's exceptions (one tree: every one is a :class:`StoreError`)."""

from __future__ import annotations

__all__ = [
    "DatabaseUrlError",
    "InvalidTransitionError",
    "NotFoundError",
    "StoreBusy",
    "StoreError",
    "StoreUnavailable",
    "UnknownAccountError",
    "one_line",
]


class StoreError(Exception):
    """Base class of the store's own errors."""


class NotFoundError(StoreError, KeyError):
    """No row with that id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


class UnknownAccountError(NotFoundError):
    """The bot id is not a saved account."""


class InvalidTransitionError(StoreError, ValueError):
    """The row's state does not allow that operation (e.g. retrying a sent message)."""


class StoreBusy(StoreError):
    """A write asked not to wait (``nowait=True``) found SQLite's write lock taken by another
    thread or process. Nothing was written; the same call without ``nowait`` waits its turn."""


class DatabaseUrlError(StoreError, ValueError):
    """The database URL names no database ilinkbot can use: an unknown scheme or driver, text
    that is not a URL, a SQLite path that is a directory. A configuration error."""


class StoreUnavailable(StoreError):
    """The database exists in the configuration but cannot be opened or written: not a
    SQLite file, no permission, a read-only or full disk, PostgreSQL unreachable or missing."""


def one_line(exc: BaseException) -> str:
    """The first line of a driver's message (SQLAlchemy adds SQL and a link below it)."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
