"""ilinkbot's bot layer: pushes, handlers, the receive loop, schedules and the CLI.

Names are imported lazily so that ``ilinkbot`` (the CLI) starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import filters
    from .app import Bot
    from .config import Config, ConfigError, load_config
    from .errors import AccountError, BotError, NoContextError, UnknownRecipient
    from .message import Context, Message
    from .outbox import SendResult
    from .push import send_to_wechat

__all__ = [
    "AccountError",
    "Bot",
    "BotError",
    "Config",
    "ConfigError",
    "Context",
    "Message",
    "NoContextError",
    "SendResult",
    "UnknownRecipient",
    "filters",
    "load_config",
    "send_to_wechat",
]

_WHERE = {
    "filters": ".filters",
    "Bot": ".app",
    "Config": ".config",
    "ConfigError": ".config",
    "load_config": ".config",
    "AccountError": ".errors",
    "BotError": ".errors",
    "NoContextError": ".errors",
    "UnknownRecipient": ".errors",
    "Context": ".message",
    "Message": ".message",
    "SendResult": ".outbox",
    "send_to_wechat": ".push",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'bot' has no attribute {name!r}")
    module = importlib.import_module(where, __name__)
    value = module if name == "filters" else getattr(module, name)
    globals()[name] = value
    return value
