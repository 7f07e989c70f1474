"""ilink: the protocol layer of ilinkbot (client, models, errors, sandbox).

Depends on nothing else in ilinkbot.
"""

from ._version import DEFAULT_CHANNEL_VERSION, __version__
from .client import DEFAULT_BASE_URL, DEFAULT_CDN_BASE_URL, IlinkClient, build_send_body
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
