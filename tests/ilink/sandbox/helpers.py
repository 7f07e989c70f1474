"""Hand-built ilink requests, exactly as the official 2.4.9 client builds them."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.ilink.wire import client_version, dumps, encode_query_value, endpoint_url, new_uin

VERSION = client_version("2.4.9")
BASE_INFO = {"channel_version": "2.4.9", "bot_agent": "OpenClaw"}


def aes_encrypt(key: bytes, plain: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def aes_decrypt(key: bytes, data: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    padded = dec.update(data) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def new_client_id() -> str:
    return f"openclaw-weixin:{int(time.time() * 1000)}-{secrets.token_hex(4)}"


class Api:
    """Requests exactly as the official 2.4.9 client builds them (overridable per call)."""

    def __init__(self, client: httpx.AsyncClient, base: str, sb: Sandbox) -> None:
        self.client = client
        self.base = base
        self.sb = sb

    def post_headers(self, body: bytes, token: str | None = None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "AuthorizationType": "ilink_bot_token",
            "X-WECHAT-UIN": new_uin(),
            "iLink-App-Id": "bot",
            "iLink-App-ClientVersion": VERSION,
            "Content-Length": str(len(body)),
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def post(
        self,
        path: str,
        obj: Any = None,
        token: str | None = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        base: str | None = None,
    ) -> httpx.Response:
        body = raw if raw is not None else dumps(obj)
        h = self.post_headers(body, token)
        h.update(headers or {})
        for name in drop:
            h.pop(name, None)
        url = endpoint_url(base or self.base, path)
        return await self.client.post(url, content=body, headers=h)

    async def call(self, path: str, obj: dict[str, Any], token: str) -> httpx.Response:
        return await self.post(path, {**obj, "base_info": BASE_INFO}, token)

    async def qr_status(
        self, qrcode: str, verify_code: str | None = None, base: str | None = None
    ) -> dict[str, Any]:
        url = endpoint_url(
            base or self.base, f"ilink/bot/get_qrcode_status?qrcode={encode_query_value(qrcode)}"
        )
        if verify_code is not None:
            url += f"&verify_code={encode_query_value(verify_code)}"
        r = await self.client.get(
            url, headers={"iLink-App-Id": "bot", "iLink-App-ClientVersion": VERSION}
        )
        assert r.status_code == 200
        result: dict[str, Any] = r.json()
        return result

    async def get_qrcode(self, tokens: list[str] | None = None) -> dict[str, Any]:
        r = await self.post(
            "ilink/bot/get_bot_qrcode?bot_type=3", {"local_token_list": tokens or []}
        )
        assert r.status_code == 200
        result: dict[str, Any] = r.json()
        assert result.get("ret") == 0, result
        return result

    async def login(self, user_id: str = "owner@im.wechat") -> dict[str, Any]:
        qr = await self.get_qrcode()
        self.sb.confirm(user_id)
        status = await self.qr_status(qr["qrcode"])
        assert status["status"] == "confirmed", status
        return status

    def msg(self, to: str, ctx: str | None, item: dict[str, Any], **over: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "from_user_id": "",
            "to_user_id": to,
            "client_id": new_client_id(),
            "message_type": 2,
            "message_state": 2,
            "item_list": [item],
            "context_token": ctx,
        }
        for key, value in over.items():
            if value is DROP:
                msg.pop(key, None)
            else:
                msg[key] = value
        return msg

    async def send(
        self, token: str, to: str, ctx: str | None, item: dict[str, Any], **over: Any
    ) -> httpx.Response:
        return await self.call(
            "ilink/bot/sendmessage", {"msg": self.msg(to, ctx, item, **over)}, token
        )

    async def send_text(
        self, token: str, to: str, ctx: str | None, text: str = "hi", **over: Any
    ) -> httpx.Response:
        return await self.send(token, to, ctx, {"type": 1, "text_item": {"text": text}}, **over)

    async def upload(
        self,
        token: str,
        to: str,
        plain: bytes,
        media_type: int = 3,
        *,
        key: bytes | None = None,
        body: bytes | None = None,
    ) -> tuple[httpx.Response, bytes, bytes]:
        """getuploadurl + CDN upload; returns (CDN response, key, ciphertext)."""
        key = key or secrets.token_bytes(16)
        cipher = aes_encrypt(key, plain)
        filekey = secrets.token_hex(16)
        r = await self.call(
            "ilink/bot/getuploadurl",
            {
                "filekey": filekey,
                "media_type": media_type,
                "to_user_id": to,
                "rawsize": len(plain),
                "rawfilemd5": hashlib.md5(plain).hexdigest(),
                "filesize": (len(plain) // 16 + 1) * 16,
                "no_need_thumb": True,
                "aeskey": key.hex(),
            },
            token,
        )
        answer = r.json()
        assert answer.get("ret") == 0, answer
        cdn = await self.client.post(
            answer["upload_full_url"],
            content=cipher if body is None else body,
            headers={"Content-Type": "application/octet-stream"},
        )
        return cdn, key, cipher


class _Drop:
    """Pass as a msg field override to remove that field."""


DROP = _Drop()


def b64hex(key: bytes) -> str:
    return base64.b64encode(key.hex().encode()).decode()
