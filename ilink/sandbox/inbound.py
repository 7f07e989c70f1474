"""What users write to bots (PROTOCOL.md §3, §4): injected messages, and getupdates,
the long poll that hands them to the bot with an opaque cursor."""

from __future__ import annotations

import base64
import copy
import hashlib
import secrets
import struct
import time
from typing import Any, Final

from ilinkbot.ilink.log import get_logger

from .cdn import Cdn, b64hex
from .model import ImageKeyForm, SandboxError, SandboxResponse, need, new_uint64_id
from .state import Bot, State, User

__all__ = ["Inbound"]

log = get_logger("ilink.sandbox")

LONGPOLLING_TIMEOUT_MS: Final = 35_000


def _encode_cursor(bot: Bot, position: int) -> str:
    raw = bot.tag + struct.pack(">Q", position) + secrets.token_bytes(4)
    return base64.b64encode(raw).decode("ascii")


def _decode_cursor(bot: Bot, cursor: str) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.b64decode(cursor, validate=True)
    except ValueError:
        return 0
    if len(raw) != 16 or raw[:4] != bot.tag:
        return 0
    position: int = struct.unpack(">Q", raw[4:12])[0]
    return min(position, len(bot.inbox))


class Inbound:
    """Users' messages queued per bot in a :class:`~.state.State`, and their delivery."""

    def __init__(self, state: State, cdn: Cdn) -> None:
        self._state = state
        self._cdn = cdn

    def _recipient(self, user_id: str, bot_id: str | None) -> Bot:
        """The logged-in bot ``user_id`` writes to; never a guess between several."""
        st = self._state
        if bot_id is not None:
            bot = st.bot(bot_id)
            if bot.expired:
                raise SandboxError(f"bot {bot_id} is logged out (its session expired)")
            return bot
        live = [b for b in st.bots.values() if not b.expired]
        if not live:
            raise SandboxError("no bot is logged in")
        # Bound: the user owns the bot or already wrote to it. A stranger may write to
        # the only live bot, as to a freshly logged-in one after a re-login.
        bound = [b for b in live if b.owner == user_id or user_id in b.users]
        candidates = bound or live
        if len(candidates) > 1:
            ids = ", ".join(b.bot_id for b in candidates)
            raise SandboxError(
                f"{user_id} could write to {len(candidates)} bots ({ids}): pass bot_id"
            )
        return candidates[0]

    def user_says(
        self,
        user_id: str,
        text: str | None = None,
        *,
        image: bytes | None = None,
        file: tuple[str, bytes] | None = None,
        video: bytes | None = None,
        voice_text: str | None = None,
        image_key_form: ImageKeyForm = "hex",
        bot_id: str | None = None,
    ) -> dict[str, Any]:
        """Queue what ``user_id`` writes (see :meth:`Sandbox.user_says`)."""
        st = self._state
        if not isinstance(user_id, str) or not user_id:
            raise SandboxError("user_says needs a user id")
        if all(x is None for x in (text, image, file, video, voice_text)):
            raise SandboxError("user_says needs text or media")
        if image_key_form not in ("hex", "base64_raw", "base64_hex", "none"):
            raise SandboxError(f"unknown image_key_form {image_key_form!r}")
        with st.lock:
            bot = self._recipient(user_id, bot_id)
            now = st.now()
            ms = int(now * 1000)
            items: list[dict[str, Any]] = []

            def item(type_: int, key: str, payload: dict[str, Any]) -> None:
                items.append(
                    {
                        "type": type_,
                        "create_time_ms": ms,
                        "update_time_ms": ms,
                        "is_completed": True,
                        key: payload,
                    }
                )

            if text is not None:
                item(1, "text_item", {"text": text})
            if image is not None:
                param, key, size = self._cdn.store_user_media(image, image_key_form != "none")
                media_key = None
                if image_key_form == "base64_raw":
                    media_key = base64.b64encode(key).decode()
                elif image_key_form == "base64_hex":
                    media_key = b64hex(key)
                payload: dict[str, Any] = {"media": self._cdn.media_ref(param, media_key)}
                if image_key_form == "hex":
                    payload["aeskey"] = key.hex()
                payload["mid_size"] = size
                item(2, "image_item", payload)
            if voice_text is not None:
                param, key, size = self._cdn.store_user_media(
                    b"#!SILK_V3" + secrets.token_bytes(64)
                )
                item(
                    3,
                    "voice_item",
                    {
                        "media": self._cdn.media_ref(param, b64hex(key)),
                        "encode_type": 6,
                        "bits_per_sample": 16,
                        "sample_rate": 24000,
                        "playtime": 1500,
                        "text": voice_text,
                    },
                )
            if file is not None:
                name, data = file
                param, key, size = self._cdn.store_user_media(data)
                item(
                    4,
                    "file_item",
                    {
                        "media": self._cdn.media_ref(param, b64hex(key)),
                        "file_name": name,
                        "md5": hashlib.md5(data).hexdigest(),
                        "len": str(len(data)),
                    },
                )
            if video is not None:
                param, key, size = self._cdn.store_user_media(video)
                item(
                    5,
                    "video_item",
                    {
                        "media": self._cdn.media_ref(param, b64hex(key)),
                        "video_size": size,
                        "play_length": 3,
                        "video_md5": hashlib.md5(video).hexdigest(),
                    },
                )

            user = bot.users.get(user_id)
            if user is None:
                user = User(user_id=user_id, session_id=secrets.token_hex(16))
                bot.users[user_id] = user
            token = "AAR" + base64.b64encode(secrets.token_bytes(45)).decode()
            user.tokens.append(token)
            user.last_message_at = now
            user.sends_since = 0
            st.ctx_owner[token] = (bot.bot_id, user_id)
            bot.seq += 1
            msg = {
                "seq": bot.seq,
                "message_id": new_uint64_id(),
                "from_user_id": user_id,
                "to_user_id": bot.bot_id,
                "create_time_ms": ms,
                "update_time_ms": ms,
                "session_id": user.session_id,
                "message_type": 1,
                "message_state": 2,
                "item_list": items,
                "context_token": token,
            }
            bot.inbox.append(msg)
            result = copy.deepcopy(msg)
        log.info("sandbox.user_says", bot_id=bot.bot_id, user_id=user_id, items=len(items))
        bot.updates.notify()
        return result

    def expire_session(self, bot_id: str | None) -> None:
        """Make the bot's token stale (None = every bot): authenticated calls answer -14."""
        st = self._state
        with st.lock:
            targets = list(st.bots.values()) if bot_id is None else [st.bot(bot_id)]
            for bot in targets:
                bot.expired = True
        for bot in targets:
            bot.updates.notify()

    async def getupdates(self, bot: Bot, obj: dict[str, Any]) -> SandboxResponse:
        """The long poll: new messages, or none after ``longpoll_seconds``."""
        st = self._state
        cursor = obj.get("get_updates_buf")
        need(isinstance(cursor, str), "getupdates.get_updates_buf", "get_updates_buf missing")
        assert isinstance(cursor, str)
        with st.lock:
            requested = _decode_cursor(bot, cursor)
            bot.acked = max(bot.acked, requested)
        deadline = time.monotonic() + st.longpoll_seconds
        while True:
            with st.lock:
                if bot.expired or st.bots.get(bot.bot_id) is not bot:
                    st.refuse("getupdates", "session_timeout")
                    return SandboxResponse.json(
                        {"ret": -14, "errcode": -14, "errmsg": "session timeout"}
                    )
                start = max(requested, bot.acked)
                msgs = bot.inbox[start:]
                if msgs or time.monotonic() >= deadline:
                    return SandboxResponse.json(
                        {
                            "ret": 0,
                            "msgs": msgs,
                            "get_updates_buf": _encode_cursor(bot, start + len(msgs)),
                            "longpolling_timeout_ms": LONGPOLLING_TIMEOUT_MS,
                        }
                    )
                generation = bot.updates.generation
            await bot.updates.wait(generation, deadline - time.monotonic())
