"""Round trips against the ilink sandbox (in-process transport): upload → send → delivered,
and inbound media → download, with the sandbox checking every protocol rule."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ilinkbot.cdn import (
    CdnUploadError,
    MediaKind,
    MediaRefused,
    UploadedMedia,
    download_media,
    pick_media,
    upload_media,
)
from ilinkbot.ilink.client import IlinkClient, build_send_body
from ilinkbot.ilink.models import WeixinMessage
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.ilink.wire import new_client_id

USER = "alice@im.wechat"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(5000)


class CountingTransport(httpx.AsyncBaseTransport):
    """Forwards to the sandbox and records the path of every request."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.urls: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(request.url)
        return await self.inner.handle_async_request(request)

    def count(self, path_suffix: str) -> int:
        return sum(1 for u in self.urls if u.path.endswith(path_suffix))


@dataclass
class Env:
    sb: Sandbox
    client: IlinkClient
    transport: CountingTransport
    context_token: str

    @property
    def cdn(self) -> str:
        return self.sb.cdn_base

    async def send(self, up: UploadedMedia) -> dict[str, Any]:
        body = build_send_body(
            USER, up.to_item(), client_id=new_client_id(), context_token=self.context_token
        )
        ack = await self.client.send_message(body)
        assert ack.confirmed
        return self.sb.delivered(USER)[-1]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    sb = Sandbox()
    transport = CountingTransport(sb.transport())
    http = httpx.AsyncClient(transport=transport)
    login = IlinkClient(sb.api_base, http=http)
    await login.get_bot_qrcode()
    bot = sb.confirm(user_id="owner@im.wechat")
    client = IlinkClient(sb.api_base, bot["bot_token"], http=http)
    said = sb.user_says(USER, "hello bot")
    yield Env(sb, client, transport, said["context_token"])
    assert sb.violations() == [], sb.violations()
    await http.aclose()


@pytest.mark.parametrize(
    ("name", "kind", "data"),
    [
        ("photo.png", MediaKind.IMAGE, PNG),
        ("clip.mp4", MediaKind.VIDEO, os.urandom(70_000)),
        ("report.pdf", MediaKind.FILE, b"%PDF-1.4\n" + os.urandom(4096 - 9)),  # block-aligned
        ("voice-note.mp3", MediaKind.FILE, os.urandom(33)),  # audio goes as a file
        ("empty.txt", MediaKind.FILE, b""),
    ],
)
async def test_round_trip_each_kind(
    env: Env, tmp_path: Path, name: str, kind: MediaKind, data: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    up = await upload_media(env.client, env.cdn, path, to_user_id=USER)
    assert up.kind is kind
    got = await env.send(up)
    assert got["kind"] == kind.value
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["size"] == len(data)
    if kind is MediaKind.FILE:
        assert got["file_name"] == name


async def test_round_trip_bytes_and_stored_result(env: Env) -> None:
    data = os.urandom(1234)
    up = await upload_media(env.client, env.cdn, data, to_user_id=USER, file_name="blob.bin")
    # the outbox keeps the JSON form; a retried send rebuilds the item without re-uploading
    stored = UploadedMedia.from_dict(up.to_dict())
    uploads = env.transport.count("/upload")
    got = await env.send(stored)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert env.transport.count("/upload") == uploads


async def test_upload_param_form(env: Env) -> None:
    env.sb.configure(upload_full_url=False)
    data = os.urandom(999)
    up = await upload_media(env.client, env.cdn, data, to_user_id=USER, file_name="x.zip")
    (cdn_url,) = [u for u in env.transport.urls if u.path.endswith("/upload")]
    assert cdn_url.params["filekey"] == up.filekey
    got = await env.send(up)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()


async def test_cdn_5xx_retried(env: Env) -> None:
    env.sb.queue_faults("cdn_upload", ["500", "500"])
    data = os.urandom(100)
    up = await upload_media(env.client, env.cdn, data, to_user_id=USER, file_name="a.txt")
    assert env.transport.count("/upload") == 3
    assert (await env.send(up))["sha256"] == hashlib.sha256(data).hexdigest()


async def test_cdn_reset_retried(env: Env) -> None:
    env.sb.queue_faults("cdn_upload", ["reset_before"])
    up = await upload_media(env.client, env.cdn, b"abc", to_user_id=USER, file_name="a.txt")
    assert env.transport.count("/upload") == 2
    await env.send(up)


async def test_cdn_5xx_three_times_gives_up(env: Env) -> None:
    env.sb.queue_faults("cdn_upload", ["500", "500", "500"])
    with pytest.raises(CdnUploadError) as ei:
        await upload_media(env.client, env.cdn, b"abc", to_user_id=USER, file_name="a.txt")
    assert ei.value.retryable and ei.value.status == 500
    assert env.transport.count("/upload") == 3


async def test_cdn_4xx_not_retried(env: Env) -> None:
    # make the CDN refuse: announce a filekey it will not see (sandbox answers 400)
    real = env.client.get_upload_url

    async def tampered(**kw: Any) -> Any:
        answer = await real(**kw)
        assert answer.upload_full_url is not None
        url = answer.upload_full_url.replace(kw["filekey"], "0" * 32)
        return type(answer)(upload_full_url=url, upload_param=answer.upload_param)

    env.client.get_upload_url = tampered  # type: ignore[method-assign]
    with pytest.raises(CdnUploadError) as ei:
        await upload_media(env.client, env.cdn, b"abc", to_user_id=USER, file_name="a.txt")
    assert not ei.value.retryable and ei.value.status == 400
    assert "filekey" in str(ei.value)  # reason from x-error-message
    assert env.transport.count("/upload") == 1
    # the sandbox logged the deliberate violation; clear it for the fixture's check
    assert [v["rule"] for v in env.sb.violations()] == ["cdn.filekey"]
    env.sb.reset()


async def test_cdn_queued_400_not_retried(env: Env) -> None:
    env.sb.queue_faults("cdn_upload", ["400"])
    with pytest.raises(CdnUploadError) as ei:
        await upload_media(env.client, env.cdn, b"abc", to_user_id=USER, file_name="a.txt")
    assert not ei.value.retryable and ei.value.status == 400
    assert env.transport.count("/upload") == 1


async def test_cdn_refuses_auth_headers(env: Env) -> None:
    """The CDN is not to see the bot token (§7.3): the sandbox records a leak."""
    data = b"secret-free"
    up_url = await env.client.get_upload_url(
        filekey="ab" * 16,
        media_type=3,
        to_user_id=USER,
        rawsize=len(data),
        rawfilemd5=hashlib.md5(data).hexdigest(),
        filesize=16,
        aeskey="00" * 16,
    )
    assert up_url.upload_full_url is not None
    from ilinkbot.cdn import encrypt

    r = await env.client.http.post(
        up_url.upload_full_url,
        content=encrypt(data, bytes(16)),
        headers={"Content-Type": "application/octet-stream", "Authorization": "Bearer x"},
    )
    assert r.status_code == 400
    assert [v["rule"] for v in env.sb.violations()] == ["cdn.auth_header"]
    env.sb.reset()


@pytest.mark.parametrize("form", ["hex", "base64_raw", "base64_hex"])
async def test_inbound_image_key_forms(env: Env, form: Any) -> None:
    raw = env.sb.user_says(USER, image=PNG, image_key_form=form)
    ref = pick_media(WeixinMessage.from_dict(raw))
    assert ref is not None and ref.kind is MediaKind.IMAGE
    got = await download_media(env.client.http, env.cdn, ref)
    assert got.data == PNG and got.decrypted and got.mime == "image/png"


async def test_inbound_keyless_image(env: Env) -> None:
    raw = env.sb.user_says(USER, image=PNG, image_key_form="none")
    ref = pick_media(WeixinMessage.from_dict(raw))
    assert ref is not None
    got = await download_media(env.client.http, env.cdn, ref)
    assert got.data == PNG and not got.decrypted


async def test_inbound_file_and_video(env: Env, tmp_path: Path) -> None:
    data = os.urandom(20_000)
    raw = env.sb.user_says(USER, file=("../../etc/passwd", data))
    ref = pick_media(WeixinMessage.from_dict(raw))
    assert ref is not None and ref.kind is MediaKind.FILE
    got = await download_media(env.client.http, env.cdn, ref, dest=tmp_path)
    assert got.path == tmp_path / "passwd" and got.path.read_bytes() == data

    video = os.urandom(5000)
    raw = env.sb.user_says(USER, "look", video=video)
    ref = pick_media(WeixinMessage.from_dict(raw))
    assert ref is not None and ref.kind is MediaKind.VIDEO
    assert (await download_media(env.client.http, env.cdn, ref)).data == video


async def test_inbound_size_cap(env: Env) -> None:
    data = os.urandom(50_000)
    raw = env.sb.user_says(USER, file=("big.bin", data))
    ref = pick_media(WeixinMessage.from_dict(raw))
    assert ref is not None
    with pytest.raises(MediaRefused):
        await download_media(env.client.http, env.cdn, ref, max_bytes=40_000)
    assert (await download_media(env.client.http, env.cdn, ref, max_bytes=50_000)).size == 50_000


async def test_hostile_full_url_not_fetched(env: Env) -> None:
    raw = env.sb.user_says(USER, image=PNG)
    raw["item_list"][0]["image_item"]["media"]["full_url"] = "http://evil.example:8080/steal"
    ref = pick_media(WeixinMessage.from_dict(raw))
    assert ref is not None
    before = len(env.transport.urls)
    with pytest.raises(MediaRefused, match="neither the configured CDN"):
        await download_media(env.client.http, env.cdn, ref)
    assert len(env.transport.urls) == before
