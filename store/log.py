"""The store's loggers: structlog's configuration once the application made one; until then
the standard :mod:`logging` module (warnings and errors reach stderr), never structlog's
default of printing every level to stdout. ``ilink.log`` does the same for the layers above,
with its redaction; the store may not import it, and logs no secret."""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(name: str) -> Any:
    return _StoreLogger(name)


class _StoreLogger:
    def __init__(self, name: str) -> None:
        self._name = name
        self._library: Any = None
        self._configured: Any = None  # structlog's lazy proxy: it follows reconfiguration

    def __getattr__(self, method: str) -> Any:
        if structlog.is_configured():
            if self._configured is None:
                self._configured = structlog.get_logger(self._name)
            return getattr(self._configured, method)
        if self._library is None:
            self._library = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=[
                    structlog.stdlib.filter_by_level,
                    structlog.stdlib.add_log_level,
                    structlog.processors.format_exc_info,
                    structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0),
                ],
                wrapper_class=structlog.stdlib.BoundLogger,
            )
        return getattr(self._library, method)
