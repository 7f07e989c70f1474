"""structlog set-up shared by every layer, with one redaction processor.

Secrets are masked whatever the caller passes: by key name (``bot_token``,
``context_token``, ``aes_key`` ...), by value (every secret the process has seen is
registered with :func:`register_secret`), and by shape (``Bearer ...``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections import deque
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = [
    "MASK",
    "SECRET_KEYS",
    "configure_logging",
    "get_logger",
    "library_logger",
    "redact",
    "redact_processor",
    "register_secret",
]

MASK = "***"

#: Event-dict keys whose values are always masked (compared case-insensitively,
#: ``-`` treated as ``_``).
SECRET_KEYS = frozenset(
    {
        "bot_token",
        "token",
        "context_token",
        "aes_key",
        "aeskey",
        "authorization",
        "typing_ticket",
        "local_token_list",
        "password",
        "secret",
        "auth",
    }
)

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")

# Value masking must stay cheap with many secrets (a fresh context token arrives with every
# message): secrets are indexed by their first _PREFIX characters, and a text is scanned only
# inside runs of token-like characters, one dict lookup per position.
_PREFIX = 6
_MAX_SECRETS = 100_000
_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_\-.:@~%]{" + str(_PREFIX) + ",}")
_lock = threading.Lock()
_by_prefix: dict[str, set[str]] = {}
_order: deque[str] = deque()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears in any later log line.

    The newest 100 000 secrets are remembered (older context tokens are forgotten first).
    """
    if not value or len(value) < _PREFIX:
        return
    with _lock:
        bucket = _by_prefix.setdefault(value[:_PREFIX], set())
        if value in bucket:
            return
        bucket.add(value)
        _order.append(value)
        if len(_order) > _MAX_SECRETS:
            old = _order.popleft()
            old_bucket = _by_prefix.get(old[:_PREFIX])
            if old_bucket is not None:
                old_bucket.discard(old)
                if not old_bucket:
                    del _by_prefix[old[:_PREFIX]]


def _mask_known(text: str) -> str:
    if not _by_prefix:
        return text
    spans: list[tuple[int, int]] = []
    for run in _TOKEN_RUN.finditer(text):
        i, end = run.start(), run.end()
        while i <= end - _PREFIX:
            bucket = _by_prefix.get(text[i : i + _PREFIX])
            hit = 0
            if bucket:
                for secret in bucket:
                    if len(secret) > hit and text.startswith(secret, i):
                        hit = len(secret)
            if hit:
                spans.append((i, i + hit))
                i += hit
            else:
                i += 1
    if not spans:
        return text
    out, last = [], 0
    for a, b in spans:
        out.append(text[last:a])
        out.append(MASK)
        last = b
    out.append(text[last:])
    return "".join(out)


def _mask_text(text: str) -> str:
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    return _mask_known(text)


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("-", "_") in SECRET_KEYS


def redact(value: Any) -> Any:
    """Return ``value`` with secrets masked (dicts by key, strings by value and shape)."""
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, dict):
        return {
            k: (MASK if _is_secret_key(k) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, BaseException):
        return _mask_text(f"{type(value).__name__}: {value}")
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask every secret in the event dict."""
    for key in list(event_dict):
        val = event_dict[key]
        if _is_secret_key(key) and val not in (None, ""):
            event_dict[key] = MASK
        else:
            event_dict[key] = redact(val)
    return event_dict


def _format_exc_redacted(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict = structlog.processors.format_exc_info(logger, method, event_dict)
    if isinstance(event_dict.get("exception"), str):
        event_dict["exception"] = _mask_text(event_dict["exception"])
    return event_dict


def configure_logging(
    *, json: bool | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """Readable lines on a terminal, JSON lines otherwise (or when ``json`` is true).

    Logs go to stderr so that ``--json`` output on stdout stays one clean object.
    """
    out = stream if stream is not None else sys.stderr
    as_json = (not out.isatty()) if json is None else json
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_processor,
    ]
    if as_json:
        processors += [_format_exc_redacted, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger bound with ``logger=name``.

    It stays a lazy proxy: it follows structlog's configuration once the application (or the
    CLI, :func:`configure_logging`) made one. Until then ilinkbot is a library and logs like
    one, through the standard :mod:`logging` module (logger ``ilinkbot.<name>``): warnings
    and errors reach stderr, and the caller's ``logging`` set-up decides the rest; never
    structlog's default of printing every level to stdout.
    """
    if name:
        initial = {"logger": name, **initial}
    return _LazyLogger(initial)


def library_logger(name: str) -> Any:
    """A structlog logger over the standard library's ``logging.getLogger(name)``, with the
    redaction processor, that configures nothing global (used while structlog is not)."""
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=[
            structlog.stdlib.filter_by_level,  # before the work: debug costs nothing
            structlog.stdlib.add_log_level,
            redact_processor,
            _format_exc_redacted,
            structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


#: The standard library's level of each logging method.
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _dropped(*_args: Any, **_kwargs: Any) -> None:
    """A log call at a level the standard library's logger would drop."""


class _LazyLogger:
    """Follows the current structlog configuration, with bound values.

    The bound logger is kept until the configuration changes (binding costs ~6 us, and a
    send logs twice); the configuration's parts are held, so ``is`` cannot be fooled by a
    recycled id. Unconfigured (a library), a call at a level its ``logging`` logger drops
    returns at once, before structlog builds an event (a send's debug and info lines).
    """

    def __init__(self, initial: dict[str, Any]) -> None:
        self._initial = initial
        self._made_for: tuple[Any, ...] = (None, None, None, None)
        self._logger: Any = None
        where = str(initial.get("logger") or "ilinkbot")
        self._stdlib = logging.getLogger(
            where if where.startswith("ilinkbot") else f"ilinkbot.{where}"
        )

    def bind(self, **values: Any) -> _LazyLogger:
        return _LazyLogger({**self._initial, **values})

    def __getattr__(self, name: str) -> Any:
        if not structlog.is_configured():
            level = _LEVELS.get(name)
            if level is not None and not self._stdlib.isEnabledFor(level):
                return _dropped
            made_for: tuple[Any, ...] = (None, None, None, None)
            if self._made_for != made_for or self._logger is None:
                self._logger = library_logger(self._stdlib.name).bind(**self._initial)
                self._made_for = made_for
            return getattr(self._logger, name)
        cfg = structlog.get_config()
        now = (cfg["processors"], cfg["wrapper_class"], cfg["logger_factory"], cfg["context_class"])
        made_for, logger = self._made_for, self._logger
        if any(a is not b for a, b in zip(made_for, now, strict=True)):
            logger = structlog.get_logger().bind(**self._initial)
            self._made_for, self._logger = now, logger
        return getattr(logger, name)
