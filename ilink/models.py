"""Typed models of the ilink message payloads (PROTOCOL.md §4).

Parsing never crashes on what the server sends: a field of the wrong type or an unknown
field is kept in ``extra`` and written back by :meth:`to_dict`, unknown item types keep
their payload, and 64-bit ids are kept as exact decimal strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, Self, TypeVar

__all__ = [
    "CDNMedia",
    "FileItem",
    "ImageItem",
    "MessageItem",
    "MessageItemType",
    "MessageState",
    "MessageType",
    "PartialText",
    "QrCode",
    "QrStatus",
    "RefMessage",
    "SendAck",
    "TextItem",
    "ToolCallResultItem",
    "ToolCallStartItem",
    "TypingStatus",
    "UpdatesBatch",
    "UploadMediaType",
    "UploadUrl",
    "VideoItem",
    "VoiceItem",
    "WeixinMessage",
]


class MessageType(IntEnum):
    NONE = 0
    USER = 1
    BOT = 2


class MessageState(IntEnum):
    NEW = 0
    GENERATING = 1
    FINISH = 2


class MessageItemType(IntEnum):
    NONE = 0
    TEXT = 1
    IMAGE = 2
    VOICE = 3
    FILE = 4
    VIDEO = 5
    TOOL_CALL_START = 11
    TOOL_CALL_RESULT = 12


class UploadMediaType(IntEnum):
    IMAGE = 1
    VIDEO = 2
    FILE = 3
    VOICE = 4


class TypingStatus(IntEnum):
    TYPING = 1
    CANCEL = 2


_Missing = object()
Conv = Callable[[Any], Any]  # returns _Missing when the value does not fit


def _str(v: Any) -> Any:
    return v if isinstance(v, str) else _Missing


def _int(v: Any) -> Any:
    return v if isinstance(v, int) and not isinstance(v, bool) else _Missing


def _bool(v: Any) -> Any:
    return v if isinstance(v, bool) else _Missing


def _uint64(v: Any) -> Any:
    """uint64 ids arrive as JSON numbers (maybe > 2**53) or strings: keep exact text."""
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, str) and v.strip().isdigit():
        return v.strip()
    return _Missing


M = TypeVar("M", bound="Model")


def _model(cls: type[M]) -> Conv:
    return lambda v: cls.from_dict(v) if isinstance(v, dict) else _Missing


def _model_list(cls: type[M]) -> Conv:
    def conv(v: Any) -> Any:
        if not isinstance(v, list):
            return _Missing
        return [cls.from_dict(x) if isinstance(x, dict) else x for x in v]

    return conv


@dataclass
class Model:
    """Base: known fields typed, everything else preserved in ``extra``."""

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)
    _conv: ClassVar[dict[str, Conv]] = {}
    #: Fields written back as uint64 JSON numbers rather than strings.
    _numeric_ids: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            conv = cls._conv.get(key)
            converted = conv(value) if conv is not None and value is not None else _Missing
            if converted is _Missing:
                extra[key] = value
            else:
                known[key] = converted
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: ``None`` omitted, ids as numbers, unknown fields kept."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in self._numeric_ids and isinstance(value, str) and value.isdigit():
                value = int(value)
            out[f.name] = _dump(value)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def _dump(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, IntEnum):
        return int(value)
    return value


@dataclass
class TextItem(Model):
    text: str | None = None
    _conv: ClassVar[dict[str, Conv]] = {"text": _str}


@dataclass
class CDNMedia(Model):
    encrypt_query_param: str | None = None
    aes_key: str | None = None
    encrypt_type: int | None = None
    full_url: str | None = None
    _conv: ClassVar[dict[str, Conv]] = {
        "encrypt_query_param": _str,
        "aes_key": _str,
        "encrypt_type": _int,
        "full_url": _str,
    }

    @property
    def downloadable(self) -> bool:
        return bool(self.encrypt_query_param or self.full_url)


@dataclass
class ImageItem(Model):
    media: CDNMedia | None = None
    thumb_media: CDNMedia | None = None
    aeskey: str | None = None
    url: str | None = None
    mid_size: int | None = None
    thumb_size: int | None = None
    thumb_height: int | None = None
    thumb_width: int | None = None
    hd_size: int | None = None
    _conv: ClassVar[dict[str, Conv]] = {
        "media": _model(CDNMedia),
        "thumb_media": _model(CDNMedia),
        "aeskey": _str,
        "url": _str,
        "mid_size": _int,
        "thumb_size": _int,
        "thumb_height": _int,
        "thumb_width": _int,
        "hd_size": _int,
    }


@dataclass
class VoiceItem(Model):
    media: CDNMedia | None = None
    encode_type: int | None = None
    bits_per_sample: int | None = None
    sample_rate: int | None = None
    playtime: int | None = None
    text: str | None = None
    _conv: ClassVar[dict[str, Conv]] = {
        "media": _model(CDNMedia),
        "encode_type": _int,
        "bits_per_sample": _int,
        "sample_rate": _int,
        "playtime": _int,
        "text": _str,
    }


@dataclass
class FileItem(Model):
    media: CDNMedia | None = None
    file_name: str | None = None
    md5: str | None = None
    len: str | None = None
    _conv: ClassVar[dict[str, Conv]] = {
        "media": _model(CDNMedia),
        "file_name": _str,
        "md5": _str,
        "len": lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else _str(v),
    }


@dataclass
class VideoItem(Model):
    media: CDNMedia | None = None
    video_size: int | None = None
    play_length: int | None = None
    video_md5: str | None = None
    thumb_media: CDNMedia | None = None
    thumb_size: int | None = None
    thumb_height: int | None = None
    thumb_width: int | None = None
    _conv: ClassVar[dict[str, Conv]] = {
        "media": _model(CDNMedia),
        "video_size": _int,
        "play_length": _int,
        "video_md5": _str,
        "thumb_media": _model(CDNMedia),
        "thumb_size": _int,
        "thumb_height": _int,
        "thumb_width": _int,
    }


@dataclass
class ToolCallStartItem(Model):
    tool_name: str | None = None
    tool_call_id: str | None = None
    _conv: ClassVar[dict[str, Conv]] = {"tool_name": _str, "tool_call_id": _str}


@dataclass
class ToolCallResultItem(Model):
    tool_name: str | None = None
    tool_call_id: str | None = None
    status: str | None = None
    _conv: ClassVar[dict[str, Conv]] = {"tool_name": _str, "tool_call_id": _str, "status": _str}


@dataclass
class PartialText(Model):
    start: str | None = None
    end: str | None = None
    startindex: int | None = None
    endindex: int | None = None
    quotemd5: str | None = None
    _conv: ClassVar[dict[str, Conv]] = {
        "start": _str,
        "end": _str,
        "startindex": _int,
        "endindex": _int,
        "quotemd5": _str,
    }


@dataclass
class RefMessage(Model):
    message_item: MessageItem | None = None
    title: str | None = None
    svr_id: str | None = None
    partial_text: PartialText | None = None
    _numeric_ids: ClassVar[frozenset[str]] = frozenset({"svr_id"})
    _conv: ClassVar[dict[str, Conv]] = {}  # filled below (MessageItem is defined later)


@dataclass
class MessageItem(Model):
    type: int | None = None
    create_time_ms: int | None = None
    update_time_ms: int | None = None
    is_completed: bool | None = None
    msg_id: str | None = None
    ref_msg: RefMessage | None = None
    text_item: TextItem | None = None
    image_item: ImageItem | None = None
    voice_item: VoiceItem | None = None
    file_item: FileItem | None = None
    video_item: VideoItem | None = None
    tool_call_start_item: ToolCallStartItem | None = None
    tool_call_result_item: ToolCallResultItem | None = None
    _numeric_ids: ClassVar[frozenset[str]] = frozenset({"msg_id"})
    _conv: ClassVar[dict[str, Conv]] = {
        "type": _int,
        "create_time_ms": _int,
        "update_time_ms": _int,
        "is_completed": _bool,
        "msg_id": _uint64,
        "ref_msg": _model(RefMessage),
        "text_item": _model(TextItem),
        "image_item": _model(ImageItem),
        "voice_item": _model(VoiceItem),
        "file_item": _model(FileItem),
        "video_item": _model(VideoItem),
        "tool_call_start_item": _model(ToolCallStartItem),
        "tool_call_result_item": _model(ToolCallResultItem),
    }

    @property
    def kind(self) -> MessageItemType | None:
        """The item type as an enum, ``None`` for a type this version does not know."""
        try:
            return MessageItemType(self.type) if self.type is not None else None
        except ValueError:
            return None

    @classmethod
    def text(cls, text: str) -> MessageItem:
        return cls(type=MessageItemType.TEXT, text_item=TextItem(text=text))


RefMessage._conv = {
    "message_item": _model(MessageItem),
    "title": _str,
    "svr_id": _uint64,
    "partial_text": _model(PartialText),
}


@dataclass
class WeixinMessage(Model):
    seq: int | None = None
    message_id: str | None = None
    from_user_id: str | None = None
    to_user_id: str | None = None
    client_id: str | None = None
    create_time_ms: int | None = None
    update_time_ms: int | None = None
    delete_time_ms: int | None = None
    session_id: str | None = None
    group_id: str | None = None
    message_type: int | None = None
    message_state: int | None = None
    item_list: list[MessageItem] | None = None
    context_token: str | None = None
    run_id: str | None = None
    _numeric_ids: ClassVar[frozenset[str]] = frozenset({"message_id"})
    _conv: ClassVar[dict[str, Conv]] = {
        "seq": _int,
        "message_id": _uint64,
        "from_user_id": _str,
        "to_user_id": _str,
        "client_id": _str,
        "create_time_ms": _int,
        "update_time_ms": _int,
        "delete_time_ms": _int,
        "session_id": _str,
        "group_id": _str,
        "message_type": _int,
        "message_state": _int,
        "item_list": _model_list(MessageItem),
        "context_token": _str,
        "run_id": _str,
    }

    @property
    def items(self) -> list[MessageItem]:
        return [i for i in (self.item_list or []) if isinstance(i, MessageItem)]

    @property
    def provider_id(self) -> str | None:
        """Top-level ``message_id``, else the first item's ``msg_id`` (§4.4)."""
        if self.message_id:
            return self.message_id
        items = self.items
        return items[0].msg_id if items else None


# ---- endpoint results ------------------------------------------------------------------


@dataclass(frozen=True)
class QrCode:
    qrcode: str
    qrcode_img_content: str


@dataclass(frozen=True)
class QrStatus:
    status: str
    bot_token: str | None = None
    ilink_bot_id: str | None = None
    baseurl: str | None = None
    ilink_user_id: str | None = None
    redirect_host: str | None = None


@dataclass(frozen=True)
class UpdatesBatch:
    messages: list[WeixinMessage]
    #: New cursor, or ``None`` when the server sent none (keep the old one).
    cursor: str | None
    longpolling_timeout_ms: int | None
    #: Entries of ``msgs`` that were not JSON objects (kept for the log, never handled).
    malformed: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class SendAck:
    """What sendmessage answered with ``ret=0``."""

    client_id: str
    message_id: str | None

    @property
    def confirmed(self) -> bool:
        """``ret=0`` without a ``message_id`` is *not* proof of delivery."""
        return self.message_id is not None


@dataclass(frozen=True)
class UploadUrl:
    upload_full_url: str | None
    upload_param: str | None
