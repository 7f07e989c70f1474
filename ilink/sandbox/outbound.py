"""What bots send (PROTOCOL.md §5, §6, §8.4): sendmessage with its item and media rules,
then the delivery policy (reply window, quota, risk control); getconfig and sendtyping."""

from __future__ import annotations

import base64
import secrets
from typing import Any, Final

from ilinkbot.ilink.log import get_logger

from .model import Violation, is_int, need, new_uint64_id
from .state import Bot, CdnObject, State, User

__all__ = ["Outbound"]

log = get_logger("ilink.sandbox")

MAX_TEXT_BYTES: Final = 16 * 1024
_ITEM_KEYS: Final[dict[int, str]] = {
    1: "text_item",
    2: "image_item",
    3: "voice_item",
    4: "file_item",
    5: "video_item",
    11: "tool_call_start_item",
    12: "tool_call_result_item",
}
_SENDABLE_TYPES: Final = frozenset({1, 2, 4, 5, 11, 12})
_KIND: Final[dict[int, str]] = {
    1: "text",
    2: "image",
    3: "voice",
    4: "file",
    5: "video",
    11: "tool_call_start",
    12: "tool_call_result",
}
_MEDIA_TYPE_OF_ITEM: Final[dict[int, int]] = {2: 1, 5: 2, 4: 3}


class Outbound:
    """Checks and records what bots send, against a :class:`~.state.State` (lock held)."""

    def __init__(self, state: State) -> None:
        self._state = state

    def _check_context_token(self, bot: Bot, user: User, token: object) -> bool:
        st = self._state
        need(
            isinstance(token, str) and token != "",
            "msg.context_token",
            "context_token missing",
        )
        assert isinstance(token, str)
        if token in user.tokens:
            return token == user.tokens[-1]
        owner = st.ctx_owner.get(token)
        if owner is None:
            raise Violation("msg.context_token", "context_token was never issued")
        if owner[0] != bot.bot_id:
            raise Violation("msg.context_token", "context_token was issued by another bot")
        raise Violation("msg.context_token", "context_token belongs to another user")

    def _check_media(self, bot: Bot, item_type: int, sub: dict[str, Any]) -> CdnObject:
        st = self._state
        media = sub.get("media")
        need(isinstance(media, dict), "media.missing", "media object missing")
        assert isinstance(media, dict)
        param = media.get("encrypt_query_param")
        obj = st.cdn.get(param) if isinstance(param, str) else None
        need(
            obj is not None and obj.upload is not None,
            "media.encrypt_query_param",
            "encrypt_query_param is not a download parameter the CDN issued for an upload",
        )
        assert obj is not None and obj.upload is not None
        up = obj.upload
        need(up.bot_id == bot.bot_id, "media.encrypt_query_param", "uploaded by another bot")
        aes = media.get("aes_key")
        need(isinstance(aes, str) and aes, "media.aes_key", "aes_key missing")
        assert isinstance(aes, str)
        try:
            decoded = base64.b64decode(aes, validate=True)
        except ValueError:
            raise Violation("media.aes_key", "aes_key is not base64") from None
        if decoded == up.key:
            raise Violation(
                "media.aes_key_raw",
                "aes_key is base64 of the raw 16 key bytes; send base64 of the 32 hex chars",
            )
        need(
            decoded == up.key.hex().encode(),
            "media.aes_key",
            "aes_key is not base64 of the hex key registered in getuploadurl",
        )
        etype = media.get("encrypt_type")
        need(is_int(etype) and etype == 1, "media.encrypt_type", f"encrypt_type {etype!r}")
        need(
            up.media_type == _MEDIA_TYPE_OF_ITEM[item_type],
            "media.media_type",
            f"uploaded as media_type {up.media_type} but sent as item type {item_type}",
        )
        if item_type == 2:
            size = sub.get("mid_size")
            need(
                is_int(size) and size == len(obj.ciphertext),
                "image.mid_size",
                f"mid_size {size!r}, ciphertext is {len(obj.ciphertext)} bytes",
            )
        elif item_type == 5:
            size = sub.get("video_size")
            need(
                is_int(size) and size == len(obj.ciphertext),
                "video.video_size",
                f"video_size {size!r}, ciphertext is {len(obj.ciphertext)} bytes",
            )
        else:
            name = sub.get("file_name")
            need(isinstance(name, str) and name, "file.file_name", "file_name missing")
            length = sub.get("len")
            need(
                isinstance(length, str) and length == str(up.rawsize),
                "file.len",
                f"len {length!r}, expected the plaintext size {up.rawsize} as a string",
            )
        return obj

    def sendmessage(self, bot: Bot, obj: dict[str, Any]) -> dict[str, Any]:
        st = self._state
        msg = obj.get("msg")
        need(isinstance(msg, dict), "msg.missing", "msg object missing")
        assert isinstance(msg, dict)
        need("from_user_id" in msg, "msg.from_user_id", 'from_user_id missing (send "")')
        need(msg["from_user_id"] == "", "msg.from_user_id", 'from_user_id must be ""')
        to = msg.get("to_user_id")
        need(isinstance(to, str) and to, "msg.to_user_id", "to_user_id missing")
        assert isinstance(to, str)
        user = bot.users.get(to)
        need(user is not None, "msg.to_user_id", "this user never wrote to the bot")
        assert user is not None
        cid = msg.get("client_id")
        need(isinstance(cid, str) and cid, "msg.client_id", "client_id missing or empty")
        assert isinstance(cid, str)
        mtype = msg.get("message_type")
        need(
            is_int(mtype) and mtype == 2, "msg.message_type", f"message_type {mtype!r}, expected 2"
        )
        mstate = msg.get("message_state")
        need(
            is_int(mstate) and mstate == 2,
            "msg.message_state",
            f"message_state {mstate!r}, expected 2",
        )
        items = msg.get("item_list")
        need(
            isinstance(items, list) and len(items) == 1 and isinstance(items[0], dict),
            "msg.item_list",
            "item_list must hold exactly one item",
        )
        assert isinstance(items, list)
        latest = self._check_context_token(bot, user, msg.get("context_token"))
        if "run_id" in msg:
            need(isinstance(msg["run_id"], str), "msg.run_id", "run_id is not a string")
        item = items[0]
        itype = item.get("type")
        need(
            is_int(itype) and itype in _SENDABLE_TYPES,
            "item.type",
            f"item type {itype!r} cannot be sent by a bot",
        )
        assert isinstance(itype, int)
        subs = [k for k in item if k.endswith("_item")]
        need(
            subs == [_ITEM_KEYS[itype]],
            "item.mismatch",
            f"item type {itype} needs exactly {_ITEM_KEYS[itype]}, got {subs}",
        )
        sub = item[_ITEM_KEYS[itype]]
        need(isinstance(sub, dict), "item.mismatch", f"{_ITEM_KEYS[itype]} is not an object")
        record: dict[str, Any] = {
            "kind": _KIND[itype],
            "text": None,
            "file_name": None,
            "size": None,
            "sha256": None,
        }
        if itype == 1:
            text = sub.get("text")
            need(isinstance(text, str) and text, "text.empty", "text_item.text missing or empty")
            assert isinstance(text, str)
            nbytes = len(text.encode("utf-8"))
            need(
                nbytes <= MAX_TEXT_BYTES,
                "text.too_long",
                f"text is {nbytes} bytes; the server refuses more than {MAX_TEXT_BYTES}",
            )
            record.update(text=text, size=nbytes)
        elif itype in (11, 12):
            record["text"] = sub.get("tool_name") if isinstance(sub.get("tool_name"), str) else None
        else:
            cdn_obj = self._check_media(bot, itype, sub)
            record.update(size=cdn_obj.plain_size, sha256=cdn_obj.sha256)
            if itype == 4:
                record["file_name"] = sub["file_name"]

        # Accepted by the rules; now the server's delivery policy. Dropping a repeated
        # client_id is the sandbox's assumption: what the real server does is unknown.
        if cid in bot.client_ids:
            return {"ret": 0, "message_id": bot.client_ids[cid]}
        info = {"bot_id": bot.bot_id, "user_id": to, "client_id": cid}
        if st.force_ret is not None:
            st.refuse("sendmessage", "forced_ret", ret=st.force_ret, **info)
            return {"ret": st.force_ret, "errmsg": "forced by sandbox"}
        if st.omit_message_id:
            st.refuse("sendmessage", "risk_control", ret=0, **info)
            return {"ret": 0}
        now = st.now()
        if now - user.last_message_at >= st.window_seconds:
            st.refuse("sendmessage", "window_closed", ret=-2, **info)
            return {"ret": -2, "errmsg": "prepare failed: reply window closed"}
        if user.sends_since >= st.quota:
            st.refuse("sendmessage", "quota_exhausted", ret=-2, **info)
            return {"ret": -2, "errmsg": "rate limited: reply quota exhausted"}
        user.sends_since += 1
        message_id = new_uint64_id()
        bot.client_ids[cid] = message_id
        st.delivered.append(
            {
                "seq": len(st.delivered) + 1,
                "bot_id": bot.bot_id,
                "user_id": to,
                "client_id": cid,
                "message_id": str(message_id),
                **record,
                "context_token_ok": True,
                "context_token_latest": latest,
                "run_id": msg.get("run_id"),
                "time": now,
            }
        )
        log.info("sandbox.delivered", bot_id=bot.bot_id, user_id=to, kind=record["kind"])
        return {"ret": 0, "message_id": message_id}

    def getconfig(self, bot: Bot, obj: dict[str, Any]) -> dict[str, Any]:
        st = self._state
        uid = obj.get("ilink_user_id")
        need(isinstance(uid, str) and uid, "getconfig.ilink_user_id", "ilink_user_id missing")
        assert isinstance(uid, str)
        token = obj.get("context_token")
        if "context_token" in obj:
            need(isinstance(token, str), "getconfig.context_token", "context_token not a string")
        user = bot.users.get(uid)
        if user is None or token not in user.tokens:
            st.refuse("getconfig", "no_typing_ticket", ret=-4, bot_id=bot.bot_id, user_id=uid)
            return {"ret": -4, "errmsg": "GetTypingTicket rpc failed"}
        if user.typing_ticket is None:
            user.typing_ticket = base64.b64encode(secrets.token_bytes(24)).decode()
        return {"ret": 0, "typing_ticket": user.typing_ticket}

    def sendtyping(self, bot: Bot, obj: dict[str, Any]) -> dict[str, Any]:
        st = self._state
        uid = obj.get("ilink_user_id")
        need(isinstance(uid, str) and uid, "sendtyping.ilink_user_id", "ilink_user_id missing")
        assert isinstance(uid, str)
        ticket = obj.get("typing_ticket")
        user = bot.users.get(uid)
        need(
            user is not None and isinstance(ticket, str) and ticket == user.typing_ticket,
            "sendtyping.typing_ticket",
            "typing_ticket was not issued by getconfig for this user",
        )
        status = obj.get("status")
        need(is_int(status) and status in (1, 2), "sendtyping.status", f"status {status!r}")
        st.typing.append({"bot_id": bot.bot_id, "user_id": uid, "status": status, "time": st.now()})
        return {"ret": 0}
