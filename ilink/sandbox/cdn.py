"""The CDN (PROTOCOL.md §7): getuploadurl, encrypted upload and download, user media."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any, Final

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ilinkbot.ilink.wire import encode_query_value

from .model import Headers, SandboxRequest, SandboxResponse, Violation, is_int, need
from .rules import check_length
from .state import Bot, CdnObject, State, Upload

__all__ = ["Cdn", "aes_decrypt", "aes_encrypt", "b64hex", "opaque"]

_HEX32: Final = re.compile(r"^[0-9a-f]{32}$")
_HEX32_ANYCASE: Final = re.compile(r"^[0-9a-fA-F]{32}$")


def aes_encrypt(key: bytes, plain: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def aes_decrypt(key: bytes, cipher: bytes) -> bytes:
    """Raise ``ValueError`` when the ciphertext is not a valid PKCS7 block sequence."""
    if not cipher or len(cipher) % 16:
        raise ValueError("ciphertext is not a multiple of 16 bytes")
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    data = dec.update(cipher) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(data) + unpadder.finalize()


def opaque(nbytes: int = 48) -> str:
    """An opaque standard-base64 parameter that always holds ``+`` and ``/``.

    Real CDN parameters are base64; a client that forgets to percent-encode them in a
    query string corrupts ``+`` into a space and must fail here as it would there.
    """
    while True:
        value = base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii")
        if "+" in value and "/" in value:
            return value


def b64hex(key: bytes) -> str:
    """``media.aes_key`` as the official client writes it: base64 of the hex text."""
    return base64.b64encode(key.hex().encode("ascii")).decode("ascii")


class Cdn:
    """Uploads registered by getuploadurl and the blobs the CDN holds, in a State."""

    def __init__(self, state: State) -> None:
        self._state = state

    def getuploadurl(self, bot: Bot, obj: dict[str, Any]) -> dict[str, Any]:
        """Register an upload (lock held): the CDN checks the bytes against it."""
        filekey = obj.get("filekey")
        need(
            isinstance(filekey, str) and _HEX32_ANYCASE.match(filekey),
            "upload.filekey",
            "filekey is not 32 hex chars",
        )
        assert isinstance(filekey, str)
        mtype = obj.get("media_type")
        need(is_int(mtype) and mtype in (1, 2, 3), "upload.media_type", f"media_type {mtype!r}")
        assert isinstance(mtype, int)
        to = obj.get("to_user_id")
        need(isinstance(to, str) and to, "upload.to_user_id", "to_user_id missing")
        assert isinstance(to, str)
        need(to in bot.users, "upload.to_user_id", "this user never wrote to the bot")
        rawsize = obj.get("rawsize")
        need(
            isinstance(rawsize, int) and is_int(rawsize) and rawsize >= 0,
            "upload.rawsize",
            f"rawsize {rawsize!r}",
        )
        assert isinstance(rawsize, int)
        md5 = obj.get("rawfilemd5")
        need(
            isinstance(md5, str) and _HEX32_ANYCASE.match(md5),
            "upload.rawfilemd5",
            "rawfilemd5 is not 32 hex chars",
        )
        assert isinstance(md5, str)
        filesize = obj.get("filesize")
        expected = (rawsize // 16 + 1) * 16
        need(
            is_int(filesize) and filesize == expected,
            "upload.filesize",
            f"filesize {filesize!r}, expected the padded size {expected}",
        )
        need(obj.get("no_need_thumb") is True, "upload.no_need_thumb", "no_need_thumb not true")
        aeskey = obj.get("aeskey")
        need(
            isinstance(aeskey, str) and _HEX32.match(aeskey),
            "upload.aeskey",
            "aeskey is not 32 lowercase hex chars",
        )
        assert isinstance(aeskey, str)
        param = opaque()
        self._state.uploads[param] = Upload(
            param=param,
            bot_id=bot.bot_id,
            filekey=filekey,
            media_type=mtype,
            to_user_id=to,
            rawsize=rawsize,
            rawfilemd5=md5.lower(),
            filesize=expected,
            key=bytes.fromhex(aeskey),
        )
        answer: dict[str, Any] = {"ret": 0, "upload_param": param}
        if self._state.upload_full_url:
            answer["upload_full_url"] = (
                f"{self._state.cdn_base}/upload?encrypted_query_param={encode_query_value(param)}"
                f"&filekey={encode_query_value(filekey)}"
            )
        return answer

    def request(self, op: str, req: SandboxRequest, query: dict[str, list[str]]) -> SandboxResponse:
        """Serve ``upload`` (POST, checked against getuploadurl) or ``download`` (GET)."""
        endpoint = "cdn_" + op

        def fail(status: int, rule: str | None, message: str) -> SandboxResponse:
            if rule is not None:
                self._state.violate(endpoint, rule, message)
            return SandboxResponse(
                status,
                [("Content-Type", "text/plain; charset=utf-8"), ("x-error-message", message)],
                message.encode(),
            )

        param = query.get("encrypted_query_param", [""])[0]
        with self._state.lock:
            if op == "download":
                if req.method != "GET":
                    return fail(405, "http.method", f"{req.method} instead of GET")
                obj = self._state.cdn.get(param)
                if obj is None:
                    return SandboxResponse.text("not found", 404)
                return SandboxResponse(
                    200, [("Content-Type", "application/octet-stream")], obj.ciphertext
                )
            if req.method != "POST":
                return fail(405, "http.method", f"{req.method} instead of POST")
            up = self._state.uploads.get(param)
            if up is None:
                return fail(400, "cdn.param", "unknown encrypted_query_param")
            h = Headers(req.headers)
            try:
                ctype = h.one("content-type")
                check_length(h, req)
                # §7.3: the CDN gets no auth headers; sending them leaks the bot token.
                need(
                    h.one("authorization") is None and h.one("authorizationtype") is None,
                    "cdn.auth_header",
                    "CDN upload carries Authorization/AuthorizationType",
                )
            except Violation as v:
                return fail(400, v.rule, v.detail)
            if ctype is None or ctype.strip().lower() != "application/octet-stream":
                return fail(400, "header.content_type", f"Content-Type {ctype!r}")
            if query.get("filekey", [""])[0] != up.filekey:
                return fail(400, "cdn.filekey", "filekey does not match getuploadurl")
        # Decrypt and hash outside the lock: a large upload must not stall other requests.
        body = req.body
        if len(body) != up.filesize:
            with self._state.lock:
                return fail(
                    400, "cdn.length", f"body has {len(body)} bytes, registered {up.filesize}"
                )
        try:
            plain = aes_decrypt(up.key, body)
        except ValueError:
            with self._state.lock:
                return fail(400, "cdn.decrypt", "body does not decrypt with the registered key")
        if len(plain) != up.rawsize or hashlib.md5(plain).hexdigest() != up.rawfilemd5:
            with self._state.lock:
                return fail(400, "cdn.md5", "plaintext MD5/size differs from getuploadurl")
        digest = hashlib.sha256(plain).hexdigest()
        with self._state.lock:
            if up.download_param is None:
                up.download_param = opaque()
            self._state.cdn[up.download_param] = CdnObject(
                ciphertext=body,
                key=up.key,
                plain_size=len(plain),
                sha256=digest,
                upload=up,
            )
            return SandboxResponse(200, [("x-encrypted-param", up.download_param)], b"")

    def store_user_media(self, plain: bytes, encrypted: bool = True) -> tuple[str, bytes, int]:
        """Put what a user sent on the CDN (lock held): ``(param, key, stored size)``."""
        key = secrets.token_bytes(16)
        blob = aes_encrypt(key, plain) if encrypted else plain
        param = opaque()
        self._state.cdn[param] = CdnObject(
            ciphertext=blob,
            key=key if encrypted else None,
            plain_size=len(plain),
            sha256=hashlib.sha256(plain).hexdigest(),
        )
        return param, key, len(blob)

    def media_ref(self, param: str, aes_key: str | None = None) -> dict[str, Any]:
        """The ``media`` object of an inbound item pointing at a stored blob."""
        media: dict[str, Any] = {"encrypt_query_param": param}
        if aes_key is not None:
            media["aes_key"] = aes_key
        media["encrypt_type"] = 1
        media["full_url"] = (
            f"{self._state.cdn_base}/download?encrypted_query_param={encode_query_value(param)}"
        )
        return media

    def object(self, encrypted_query_param: str) -> bytes | None:
        """The stored CDN blob for a download parameter (ciphertext), if any."""
        with self._state.lock:
            obj = self._state.cdn.get(encrypted_query_param)
            return obj.ciphertext if obj else None
