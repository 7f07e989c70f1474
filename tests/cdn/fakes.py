"""A minimal in-memory ilink API + CDN for the media-layer unit tests (httpx.MockTransport)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ilinkbot.ilink.client import IlinkClient

API = "http://api.test"
CDN = "http://cdn.test/c2c"


def ref_decrypt(data: bytes, key: bytes) -> bytes:
    """Independent one-shot AES-128-ECB/PKCS7 decryption (not cdn.crypto)."""
    dec = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(dec.update(data) + dec.finalize()) + unpadder.finalize()


def ref_encrypt(data: bytes, key: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(padder.update(data) + padder.finalize()) + enc.finalize()


@dataclass
class FakeCdn:
    """Answers getuploadurl and CDN uploads; remembers every request."""

    full_url: bool = True
    #: Statuses answered by the next CDN uploads ("ok" = success, "nohdr" = 200 w/o header).
    faults: list[str] = field(default_factory=list)
    upload_requests: list[dict[str, Any]] = field(default_factory=list)
    cdn_requests: list[httpx.Request] = field(default_factory=list)
    stored: dict[str, bytes] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.path == "/ilink/bot/getuploadurl":
            body = json.loads(request.content)
            self.upload_requests.append(body)
            self.keys[body["filekey"]] = bytes.fromhex(body["aeskey"])
            if self.full_url:
                return httpx.Response(
                    200, json={"ret": 0, "upload_full_url": f"{CDN}/upload?fk={body['filekey']}"}
                )
            return httpx.Response(
                200, json={"ret": 0, "upload_param": "up/param+" + body["filekey"]}
            )
        if url.path == "/c2c/upload":
            self.cdn_requests.append(request)
            body = await request.aread()
            fault = self.faults.pop(0) if self.faults else "ok"
            if fault == "nohdr":
                return httpx.Response(200)
            if fault != "ok":
                return httpx.Response(
                    int(fault), headers={"x-error-message": f"fault {fault}"}, content=b"nope"
                )
            filekey = url.params.get("fk") or url.params["filekey"]
            param = "dl-" + secrets.token_hex(8)
            self.stored[param] = body
            assert len(body) == int(request.headers["content-length"])
            self.plain = ref_decrypt(body, self.keys[filekey])
            return httpx.Response(200, headers={"x-encrypted-param": param})
        return httpx.Response(404)

    def client(self) -> IlinkClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
        return IlinkClient(API, "tok-123456", http=http)


class StreamingSink(httpx.AsyncBaseTransport):
    """A CDN that consumes the upload body chunk by chunk (never buffering it)."""

    def __init__(self) -> None:
        self.max_chunk = 0
        self.total = 0
        self.sha = hashlib.sha256()
        self.plain_sha = hashlib.sha256()
        self.key = b""
        self.content_length: int | None = None
        self.transfer_encoding: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("getuploadurl"):
            self.key = bytes.fromhex(json.loads(await request.aread())["aeskey"])
            return httpx.Response(200, json={"ret": 0, "upload_full_url": f"{CDN}/upload?x=1"})
        dec = Cipher(algorithms.AES(self.key), modes.ECB()).decryptor()
        unpadder = padding.PKCS7(128).unpadder()
        self.content_length = int(request.headers["content-length"])
        self.transfer_encoding = request.headers.get("transfer-encoding")
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            self.max_chunk = max(self.max_chunk, len(chunk))
            self.total += len(chunk)
            self.sha.update(chunk)
            self.plain_sha.update(unpadder.update(dec.update(chunk)))
        self.plain_sha.update(unpadder.update(dec.finalize()) + unpadder.finalize())
        return httpx.Response(200, headers={"x-encrypted-param": "p"})


async def aiter(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
