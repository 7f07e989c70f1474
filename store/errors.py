"""The store's exceptions (one tree: every one is a :class:`StoreError`)."""

from __future__ import annotations

__all__ = [
    "InvalidTransitionError",
    "NotFoundError",
    "StoreBusy",
    "StoreError",
    "UnknownAccountError",
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
