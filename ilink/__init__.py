"""ilink: the protocol layer of ilinkbot (client, models, errors, sandbox).

Depends on nothing else in ilinkbot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from ._version import DEFAULT_CHANNEL_VERSION, __version__
    from .client import IlinkClient, build_send_body
    from .defaults import DEFAULT_BASE_URL, DEFAULT_CDN_BASE_URL
    from .errors import (
        ApiError,
        HttpStatusError,
        IlinkError,
        ProtocolError,
        ReplyWindowClosed,
        RequestTimeout,
        SessionExpired,
        TransportError,
    )
    from .models import (
        MessageItem,
        MessageItemType,
        QrCode,
        QrStatus,
        SendAck,
        UpdatesBatch,
        UploadMediaType,
        UploadUrl,
        WeixinMessage,
    )

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_CDN_BASE_URL",
    "DEFAULT_CHANNEL_VERSION",
    "ApiError",
    "HttpStatusError",
    "IlinkClient",
    "IlinkError",
    "MessageItem",
    "MessageItemType",
    "ProtocolError",
    "QrCode",
    "QrStatus",
    "ReplyWindowClosed",
    "RequestTimeout",
    "SendAck",
    "SessionExpired",
    "TransportError",
    "UpdatesBatch",
    "UploadMediaType",
    "UploadUrl",
    "WeixinMessage",
    "__version__",
    "build_send_body",
]

# Imported on first use: importing one module of the package (a constant, an error class)
# must not import the HTTP client, the crypto library and the rest.
_WHERE = {
    "DEFAULT_CHANNEL_VERSION": "._version",
    "__version__": "._version",
    "DEFAULT_BASE_URL": ".defaults",
    "DEFAULT_CDN_BASE_URL": ".defaults",
    "IlinkClient": ".client",
    "build_send_body": ".client",
    "ApiError": ".errors",
    "HttpStatusError": ".errors",
    "IlinkError": ".errors",
    "ProtocolError": ".errors",
    "ReplyWindowClosed": ".errors",
    "RequestTimeout": ".errors",
    "SessionExpired": ".errors",
    "TransportError": ".errors",
    "MessageItem": ".models",
    "MessageItemType": ".models",
    "QrCode": ".models",
    "QrStatus": ".models",
    "SendAck": ".models",
    "UpdatesBatch": ".models",
    "UploadMediaType": ".models",
    "UploadUrl": ".models",
    "WeixinMessage": ".models",
}


__getattr__, __dir__ = _lazy_exports(__name__, _WHERE, __all__)
