"""ilinkbot: connect programs and people to WeChat through Tencent's ilink bot protocol.

The public API. The layers live in ``ilinkbot.ilink`` (protocol and sandbox),
``ilinkbot.cdn`` (media), ``ilinkbot.store`` (persistence) and ``ilinkbot.bot`` (pushes,
handlers, CLI, gateway). Names are imported lazily so that the ``ilinkbot`` CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .ilink.lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from .bot import filters
    from .bot.app import Bot
    from .bot.config import Config, ConfigError, load_config
    from .bot.errors import AccountError, BotError, NoContextError, UnknownRecipient
    from .bot.message import Context, Message
    from .bot.outbox import SendResult
    from .bot.push import send_to_wechat
    from .bot.router import Router
    from .ilink._version import __version__
    from .ilink.errors import (
        ApiError,
        HttpStatusError,
        IlinkError,
        ProtocolError,
        ReplyWindowClosed,
        RequestTimeout,
        SessionExpired,
        TransportError,
    )

__all__ = [
    "AccountError",
    "ApiError",
    "Bot",
    "BotError",
    "Config",
    "ConfigError",
    "Context",
    "HttpStatusError",
    "IlinkError",
    "Message",
    "NoContextError",
    "ProtocolError",
    "ReplyWindowClosed",
    "RequestTimeout",
    "Router",
    "SendResult",
    "SessionExpired",
    "TransportError",
    "UnknownRecipient",
    "__version__",
    "filters",
    "load_config",
    "send_to_wechat",
]

_WHERE = {
    "filters": ".bot.filters",
    "Bot": ".bot.app",
    "Config": ".bot.config",
    "ConfigError": ".bot.config",
    "load_config": ".bot.config",
    "AccountError": ".bot.errors",
    "BotError": ".bot.errors",
    "NoContextError": ".bot.errors",
    "UnknownRecipient": ".bot.errors",
    "Context": ".bot.message",
    "Message": ".bot.message",
    "SendResult": ".bot.outbox",
    "send_to_wechat": ".bot.push",
    "Router": ".bot.router",
    "__version__": ".ilink._version",
    **{
        name: ".ilink.errors"
        for name in (
            "ApiError",
            "HttpStatusError",
            "IlinkError",
            "ProtocolError",
            "ReplyWindowClosed",
            "RequestTimeout",
            "SessionExpired",
            "TransportError",
        )
    },
}


__getattr__, __dir__ = _lazy_exports(__name__, _WHERE, __all__)
