"""upload_media against an in-memory API + CDN (httpx.MockTransport)."""

from __future__ import annotations

import hashlib
import json
import os
import tracemalloc
from pathlib import Path

import httpx
import pytest

from ilinkbot.cdn import CdnUploadError, MediaKind, UploadedMedia, cdn_upload_url, upload_media
from ilinkbot.cdn.crypto import ciphertext_size
from ilinkbot.ilink.client import IlinkClient
from tests.cdn.fakes import API, CDN, FakeCdn, StreamingSink

USER = "o9cq80xxxx@im.wechat"


async def test_getuploadurl_body_and_cdn_post(tmp_path: Path) -> None:
    fake = FakeCdn()
    p = tmp_path / "hello.txt"
    p.write_bytes(b"hello ilink")
    up = await upload_media(fake.client(), CDN, p, to_user_id=USER)

    (body,) = fake.upload_requests
    assert list(body) == [
        "filekey",
        "media_type",
        "to_user_id",
        "rawsize",
        "rawfilemd5",
        "filesize",
        "no_need_thumb",
        "aeskey",
        "base_info",
    ]
    assert body["media_type"] == 3
    assert body["to_user_id"] == USER
    assert body["rawsize"] == 11 and body["filesize"] == 16
    assert body["rawfilemd5"] == "a0e581bef9105ace19c7d2e59e66374d"
    assert body["no_need_thumb"] is True
    assert len(body["filekey"]) == 32 and int(body["filekey"], 16) >= 0
    assert len(body["aeskey"]) == 32 and body["aeskey"] == body["aeskey"].lower()

    (req,) = fake.cdn_requests
    assert req.method == "POST"
    assert str(req.url) == f"{CDN}/upload?fk={body['filekey']}"
    assert req.headers["content-type"] == "application/octet-stream"
    assert req.headers["content-length"] == "16"
    assert "authorization" not in req.headers and "authorizationtype" not in req.headers
    assert "transfer-encoding" not in req.headers
    assert fake.plain == b"hello ilink"

    assert up.kind is MediaKind.FILE
    assert up.aes_key_hex == body["aeskey"] and up.filekey == body["filekey"]
    assert (up.plaintext_size, up.ciphertext_size, up.md5) == (11, 16, body["rawfilemd5"])
    assert up.download_param in fake.stored
    assert up.file_name == "hello.txt" and up.mime == "text/plain"


async def test_fresh_key_and_filekey_per_upload() -> None:
    fake = FakeCdn()
    client = fake.client()
    a = await upload_media(client, CDN, b"x", to_user_id=USER, file_name="a.bin")
    b = await upload_media(client, CDN, b"x", to_user_id=USER, file_name="a.bin")
    assert a.aes_key_hex != b.aes_key_hex and a.filekey != b.filekey


async def test_upload_param_form_builds_cdn_url() -> None:
    fake = FakeCdn(full_url=False)
    up = await upload_media(fake.client(), CDN + "/", b"data", to_user_id=USER, file_name="a.png")
    (req,) = fake.cdn_requests
    expected = cdn_upload_url(CDN, "up/param+" + up.filekey, up.filekey)
    assert str(req.url) == expected
    assert (
        expected
        == f"{CDN}/upload?encrypted_query_param=up%2Fparam%2B{up.filekey}&filekey={up.filekey}"
    )
    assert fake.plain == b"data"


@pytest.mark.parametrize(
    ("name", "kind", "media_type", "item_type"),
    [
        ("photo.JPG", MediaKind.IMAGE, 1, 2),
        ("clip.mp4", MediaKind.VIDEO, 2, 5),
        ("song.mp3", MediaKind.FILE, 3, 4),
        ("report.pdf", MediaKind.FILE, 3, 4),
    ],
)
async def test_routing_by_name(name: str, kind: MediaKind, media_type: int, item_type: int) -> None:
    fake = FakeCdn()
    data = os.urandom(100)
    up = await upload_media(fake.client(), CDN, data, to_user_id=USER, file_name=name)
    assert up.kind is kind
    assert fake.upload_requests[0]["media_type"] == media_type
    assert up.to_item()["type"] == item_type
    assert fake.plain == data


async def test_kind_override() -> None:
    fake = FakeCdn()
    up = await upload_media(
        fake.client(), CDN, b"png?", to_user_id=USER, file_name="p.png", kind=MediaKind.FILE
    )
    assert up.kind is MediaKind.FILE and fake.upload_requests[0]["media_type"] == 3


async def test_bytes_need_a_name_and_voice_is_refused(tmp_path: Path) -> None:
    fake = FakeCdn()
    with pytest.raises(ValueError):
        await upload_media(fake.client(), CDN, b"x", to_user_id=USER)
    with pytest.raises(ValueError):
        await upload_media(
            fake.client(), CDN, b"x", to_user_id=USER, file_name="a", kind=MediaKind.VOICE
        )
    with pytest.raises(FileNotFoundError):
        await upload_media(fake.client(), CDN, tmp_path / "missing", to_user_id=USER)
    assert fake.upload_requests == []


def _uploaded(kind: MediaKind) -> UploadedMedia:
    return UploadedMedia(
        kind=kind,
        file_name="report.pdf",
        download_param="PARAM",
        aes_key_hex="00112233445566778899aabbccddeeff",
        plaintext_size=11,
        ciphertext_size=16,
        md5="a0e581bef9105ace19c7d2e59e66374d",
        filekey="ab" * 16,
        mime="application/pdf",
    )


MEDIA = {
    "encrypt_query_param": "PARAM",
    "aes_key": "MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY=",
    "encrypt_type": 1,
}


def test_items_exactly_as_the_official_client() -> None:
    assert json.dumps(_uploaded(MediaKind.IMAGE).to_item()) == json.dumps(
        {"type": 2, "image_item": {"media": MEDIA, "mid_size": 16}}
    )
    assert json.dumps(_uploaded(MediaKind.VIDEO).to_item()) == json.dumps(
        {"type": 5, "video_item": {"media": MEDIA, "video_size": 16}}
    )
    assert json.dumps(_uploaded(MediaKind.FILE).to_item()) == json.dumps(
        {"type": 4, "file_item": {"media": MEDIA, "file_name": "report.pdf", "len": "11"}}
    )
    with pytest.raises(ValueError):
        _uploaded(MediaKind.VOICE).to_item()


def test_uploaded_media_round_trips_json_and_hides_key() -> None:
    up = _uploaded(MediaKind.FILE)
    d = json.loads(json.dumps(up.to_dict()))
    assert d["aes_key_hex"] == up.aes_key_hex
    assert UploadedMedia.from_dict(d) == up
    assert UploadedMedia.from_dict(d).to_item() == up.to_item()
    assert up.aes_key_hex not in repr(up) and up.aes_key_hex not in str(up)
    assert up.aes_key_b64 not in repr(up)
    for broken in (
        {**d, "aes_key_hex": "xyz"},
        {**d, "plaintext_size": "11"},
        {**d, "kind": "sticker"},
        {k: v for k, v in d.items() if k != "download_param"},
    ):
        with pytest.raises(ValueError):
            UploadedMedia.from_dict(broken)


async def test_5xx_retried_then_success() -> None:
    fake = FakeCdn(faults=["500", "nohdr"])
    up = await upload_media(fake.client(), CDN, b"abc", to_user_id=USER, file_name="a.txt")
    assert len(fake.cdn_requests) == 3
    assert up.download_param in fake.stored
    # every attempt carried the whole, identical ciphertext
    assert len({r.content for r in fake.cdn_requests}) == 1
    assert len(fake.upload_requests) == 1  # getuploadurl is not repeated


async def test_three_failures_raise_retryable() -> None:
    fake = FakeCdn(faults=["500", "502", "503", "ok"])
    with pytest.raises(CdnUploadError) as ei:
        await upload_media(fake.client(), CDN, b"abc", to_user_id=USER, file_name="a.txt")
    assert len(fake.cdn_requests) == 3
    assert ei.value.retryable and ei.value.status == 503 and ei.value.attempts == 3
    assert "fault 503" in str(ei.value)


@pytest.mark.parametrize("status", ["400", "403", "413"])
async def test_4xx_is_final(status: str) -> None:
    fake = FakeCdn(faults=[status, "ok"])
    with pytest.raises(CdnUploadError) as ei:
        await upload_media(fake.client(), CDN, b"abc", to_user_id=USER, file_name="a.txt")
    assert len(fake.cdn_requests) == 1
    assert not ei.value.retryable and ei.value.status == int(status)
    assert f"fault {status}" in str(ei.value)  # reason from x-error-message


async def test_4xx_reason_falls_back_to_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("getuploadurl"):
            return httpx.Response(200, json={"upload_full_url": f"{CDN}/upload"})
        return httpx.Response(400, content=b"file too big")

    client = IlinkClient(API, "t", http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    with pytest.raises(CdnUploadError, match="file too big"):
        await upload_media(client, CDN, b"abc", to_user_id=USER, file_name="a.txt")


async def test_network_errors_are_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if request.url.path.endswith("getuploadurl"):
            return httpx.Response(200, json={"upload_full_url": f"{CDN}/upload"})
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, headers={"x-encrypted-param": "ok"})

    client = IlinkClient(API, "t", http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    up = await upload_media(client, CDN, b"abc", to_user_id=USER, file_name="a.txt")
    assert calls == 3 and up.download_param == "ok"


async def test_progress_reports_ciphertext_bytes(tmp_path: Path) -> None:
    fake = FakeCdn()
    seen: list[tuple[int, int]] = []
    data = os.urandom(10_000)
    await upload_media(
        fake.client(),
        CDN,
        data,
        to_user_id=USER,
        file_name="a.bin",
        chunk_size=4096,
        progress=lambda sent, total: seen.append((sent, total)),
    )
    total = ciphertext_size(len(data))
    assert seen[-1] == (total, total)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert len(seen) == 4  # three chunks + the final padding block


async def test_file_changed_between_passes_aborts(tmp_path: Path) -> None:
    p = tmp_path / "grow.bin"
    p.write_bytes(b"a" * 5000)
    fake = FakeCdn()
    client = fake.client()
    real = client.get_upload_url

    async def mutate_then_ask(**kw: object) -> object:
        p.write_bytes(b"b" * 5000)  # same size, other content
        return await real(**kw)  # type: ignore[arg-type]

    client.get_upload_url = mutate_then_ask  # type: ignore[method-assign,assignment]
    with pytest.raises(CdnUploadError) as ei:
        await upload_media(client, CDN, p, to_user_id=USER, chunk_size=1024)
    assert not ei.value.retryable and "changed" in str(ei.value)
    assert fake.stored == {}


async def test_stream_is_bounded_for_a_large_file(tmp_path: Path) -> None:
    """~50 MB: body streamed in ≤1 MiB pieces with Content-Length, heap stays small."""
    size = 50 * 2**20 + 7
    p = tmp_path / "big.bin"
    sha_plain = hashlib.sha256()
    md5 = hashlib.md5()
    with p.open("wb") as fh:
        for i in range(50):
            block = os.urandom(2**20) if i == 0 else bytes([i]) * 2**20
            fh.write(block)
            sha_plain.update(block)
            md5.update(block)
        fh.write(b"tail!!!")
        sha_plain.update(b"tail!!!")
        md5.update(b"tail!!!")

    sink = StreamingSink()
    client = IlinkClient(API, "t", http=httpx.AsyncClient(transport=sink))
    tracemalloc.start()
    try:
        up = await upload_media(client, CDN, p, to_user_id=USER)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert up.md5 == md5.hexdigest() and up.plaintext_size == size
    assert sink.content_length == sink.total == ciphertext_size(size)
    assert sink.transfer_encoding is None
    assert sink.max_chunk <= 2**20 + 16
    assert peak < 8 * 2**20, f"peak traced memory {peak} bytes"
    # the streamed ciphertext decrypts (independently, chunk by chunk) to the file
    assert sink.plain_sha.hexdigest() == sha_plain.hexdigest()
