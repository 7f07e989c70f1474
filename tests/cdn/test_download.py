"""pick_media and download_media against an in-memory CDN (httpx.MockTransport)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from ilinkbot.cdn import (
    CdnDownloadError,
    DownloadedMedia,
    MediaKind,
    MediaRef,
    MediaRefused,
    cdn_download_url,
    check_cdn_url,
    download_media,
    pick_media,
)
from ilinkbot.ilink.models import MessageItem, WeixinMessage
from tests.cdn.fakes import CDN, b64, ref_encrypt

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)


class Cdn:
    """Serves ``files[param]`` at /c2c/download; records every request."""

    def __init__(self, files: dict[str, bytes], **resp_kw: Any) -> None:
        self.files = files
        self.requests: list[httpx.Request] = []
        self.resp_kw = resp_kw

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host != "cdn.test":
            return httpx.Response(200, content=b"SECRET INTERNAL DATA")
        param = request.url.params.get("encrypted_query_param", "")
        if param not in self.files:
            return httpx.Response(404, content=b"no such file")
        return httpx.Response(200, content=self.files[param], **self.resp_kw)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))


def image_item(param: str, **img: Any) -> dict[str, Any]:
    return {"type": 2, "image_item": {"media": {"encrypt_query_param": param}, **img}}


def msg(*items: dict[str, Any]) -> WeixinMessage:
    return WeixinMessage.from_dict({"from_user_id": "u@im.wechat", "item_list": list(items)})


# ---- pick_media (§4.4) ------------------------------------------------------------------


def media(param: str, **kw: Any) -> dict[str, Any]:
    return {"encrypt_query_param": param, **kw}


def test_pick_priority_image_video_file_voice() -> None:
    voice = {"type": 3, "voice_item": {"media": media("v", aes_key="k")}}
    file = {"type": 4, "file_item": {"media": media("f"), "file_name": "a.pdf", "len": "12"}}
    video = {"type": 5, "video_item": {"media": media("vid"), "video_size": 32}}
    image = image_item("img", aeskey=KEY.hex(), mid_size=48)
    text = {"type": 1, "text_item": {"text": "hi"}}

    ref = pick_media(msg(text, voice, file, video, image))
    assert ref is not None and ref.kind is MediaKind.IMAGE and ref.encrypt_query_param == "img"
    assert ref.aes_key_hex == KEY.hex() and ref.size_hint == 48 and not ref.quoted
    ref = pick_media(msg(voice, file, video))
    assert ref is not None and ref.kind is MediaKind.VIDEO and ref.size_hint == 32
    ref = pick_media(msg(voice, file))
    assert ref is not None and ref.kind is MediaKind.FILE
    assert ref.file_name == "a.pdf" and ref.size_hint == 12
    ref = pick_media(msg(voice))
    assert ref is not None and ref.kind is MediaKind.VOICE
    assert pick_media(msg(text)) is None
    assert pick_media(WeixinMessage.from_dict({})) is None


def test_pick_skips_undownloadable_and_transcribed_voice() -> None:
    no_media = {"type": 2, "image_item": {"media": {"aes_key": "x"}}}
    transcribed = {"type": 3, "voice_item": {"media": media("v"), "text": "hello"}}
    full_url_only = {"type": 4, "file_item": {"media": {"full_url": f"{CDN}/download?x=1"}}}
    ref = pick_media(msg(no_media, transcribed, full_url_only))
    assert ref is not None and ref.kind is MediaKind.FILE and ref.full_url
    assert pick_media(msg(no_media, transcribed)) is None


def test_pick_falls_back_to_quoted_media() -> None:
    quoted = image_item("q")
    text = {"type": 1, "text_item": {"text": "what is this?"}, "ref_msg": {"message_item": quoted}}
    ref = pick_media(msg(text))
    assert ref is not None and ref.quoted and ref.encrypt_query_param == "q"
    # own media wins over the quote
    ref = pick_media(msg(text, {"type": 5, "video_item": {"media": media("own")}}))
    assert ref is not None and not ref.quoted and ref.encrypt_query_param == "own"
    # a quoted text is no media
    text2 = {"type": 1, "ref_msg": {"message_item": {"type": 1, "text_item": {"text": "x"}}}}
    assert pick_media(msg(text2)) is None


def test_media_ref_dict_round_trip_and_repr() -> None:
    ref = MediaRef(
        kind=MediaKind.FILE, encrypt_query_param="p", aes_key=b64(KEY), file_name="a.txt"
    )
    assert MediaRef.from_dict(ref.to_dict()) == ref
    assert b64(KEY) not in repr(ref)
    with pytest.raises(ValueError):
        MediaRef.from_dict({"kind": "file"})


def test_from_item_ignores_other_types() -> None:
    assert MediaRef.from_item(MessageItem.text("x")) is None


# ---- download_media -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["hex", "base64_raw", "base64_hex"])
async def test_image_key_forms(form: str) -> None:
    cdn = Cdn({"p": ref_encrypt(PNG, KEY)})
    item: dict[str, Any] = image_item("p")
    if form == "hex":
        item["image_item"]["aeskey"] = KEY.hex()
    elif form == "base64_raw":
        item["image_item"]["media"]["aes_key"] = b64(KEY)
    else:
        item["image_item"]["media"]["aes_key"] = b64(KEY.hex().encode())
    ref = pick_media(msg(item))
    assert ref is not None
    got = await download_media(cdn.http(), CDN, ref)
    assert got.data == PNG and got.size == len(PNG) and got.decrypted
    assert got.mime == "image/png" and got.file_name == "image.png"
    (req,) = cdn.requests
    assert str(req.url) == cdn_download_url(CDN, "p") == f"{CDN}/download?encrypted_query_param=p"
    assert req.method == "GET"


async def test_hex_aeskey_preferred_over_media_key() -> None:
    cdn = Cdn({"p": ref_encrypt(PNG, KEY)})
    item = image_item("p", aeskey=KEY.hex())
    item["image_item"]["media"]["aes_key"] = b64(bytes(16))  # a wrong key
    ref = pick_media(msg(item))
    assert ref is not None
    assert (await download_media(cdn.http(), CDN, ref)).data == PNG


async def test_keyless_image_returned_as_is() -> None:
    cdn = Cdn({"p": PNG})
    ref = pick_media(msg(image_item("p")))
    assert ref is not None
    got = await download_media(cdn.http(), CDN, ref)
    assert got.data == PNG and not got.decrypted


async def test_file_without_key_refused_before_fetching() -> None:
    cdn = Cdn({"p": b"x"})
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p")
    with pytest.raises(MediaRefused, match="no AES key"):
        await download_media(cdn.http(), CDN, ref)
    assert cdn.requests == []


async def test_bad_key_refused() -> None:
    cdn = Cdn({"p": b"x"})
    ref = MediaRef(kind=MediaKind.VIDEO, encrypt_query_param="p", aes_key=b64(b"0" * 20))
    with pytest.raises(MediaRefused):
        await download_media(cdn.http(), CDN, ref)
    assert cdn.requests == []


async def test_param_is_percent_encoded() -> None:
    param = "a+b/c=d&e"
    cdn = Cdn({param: ref_encrypt(b"hi", KEY)})
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param=param, aes_key=b64(KEY))
    got = await download_media(cdn.http(), CDN, ref)
    assert got.data == b"hi"
    assert "encrypted_query_param=a%2Bb%2Fc%3Dd%26e" in str(cdn.requests[0].url)


async def test_full_url_preferred_when_same_origin() -> None:
    cdn = Cdn({"viafull": ref_encrypt(b"full", KEY)})
    ref = MediaRef(
        kind=MediaKind.FILE,
        encrypt_query_param="other",
        full_url="http://cdn.test/elsewhere?encrypted_query_param=viafull",
        aes_key=b64(KEY),
        file_name="f.txt",
    )
    got = await download_media(cdn.http(), CDN, ref)
    assert got.data == b"full" and got.file_name == "f.txt" and got.mime == "text/plain"


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.test/c2c/download?encrypted_query_param=p",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/admin",
        "https://cdn.test/c2c/download?x=1",  # other scheme
        "http://cdn.test:8443/c2c/download",  # other port
        "http://cdn.test@evil.test/c2c/download",  # userinfo trick
        "http://user:pw@cdn.test/c2c/download",
        "file:///etc/passwd",
        "/c2c/download?relative=1",
        "http://cdn.test.evil.test/x",
    ],
)
async def test_hostile_full_url_refused_without_request(url: str) -> None:
    cdn = Cdn({"p": ref_encrypt(b"x", KEY)})
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p", full_url=url, aes_key=b64(KEY))
    with pytest.raises(MediaRefused):
        await download_media(cdn.http(), CDN, ref)
    assert cdn.requests == []


def test_check_cdn_url_accepts_same_origin_and_allowed() -> None:
    check_cdn_url("HTTP://CDN.TEST:80/x", CDN)
    check_cdn_url(
        "https://novac2c.cdn.weixin.qq.com/c2c/download?a=1",
        "https://novac2c.cdn.weixin.qq.com/c2c",
    )
    check_cdn_url("https://other.cdn.test/x", CDN, allowed_origins=["https://other.cdn.test"])
    with pytest.raises(MediaRefused):
        check_cdn_url(
            "https://other.cdn.test:444/x", CDN, allowed_origins=["https://other.cdn.test"]
        )


TENCENT = "https://novac2c.cdn.weixin.qq.com/c2c"


def tencent_cdn(requests: list[httpx.Request]) -> httpx.AsyncClient:
    """A CDN answering on any host (as Tencent's many edge hosts do)."""

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, content=ref_encrypt(b"from the edge", KEY))

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    "url",
    [
        "https://szc2c.cdn.weixin.qq.com/c2c/download?encrypted_query_param=p",
        "https://wxapp.tc.qq.com/262/20304/stodownload?m=1&filekey=x",
        "https://mmbiz.qpic.cn/mmbiz_jpg/x/0",
        "https://SZC2C.CDN.WEIXIN.QQ.COM./c2c/download?x=1",
    ],
)
async def test_full_url_on_the_cdn_domain_family_is_fetched_as_given(url: str) -> None:
    requests: list[httpx.Request] = []
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p", full_url=url, aes_key=b64(KEY))
    got = await download_media(tencent_cdn(requests), TENCENT, ref)
    assert got.data == b"from the edge"
    assert [str(r.url) for r in requests] == [str(httpx.URL(url))]


@pytest.mark.parametrize(
    "url",
    [
        "http://szc2c.cdn.weixin.qq.com/c2c/download",  # https only off the configured origin
        "https://127.0.0.1/c2c/download",
        "https://10.1.2.3/c2c/download",
        "https://[::1]/c2c/download",
        "https://169.254.169.254/latest/meta-data/",
        "https://localhost/c2c/download",
        "https://evilqq.com/c2c/download",
        "https://qq.com.evil.test/c2c/download",
        "https://weixin.qq.com@evil.test/x",
        "ftp://szc2c.cdn.weixin.qq.com/x",
    ],
)
async def test_off_family_full_url_still_refused(url: str) -> None:
    requests: list[httpx.Request] = []
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p", full_url=url, aes_key=b64(KEY))
    with pytest.raises(MediaRefused):
        await download_media(tencent_cdn(requests), TENCENT, ref)
    assert requests == []


async def test_domain_list_is_configurable() -> None:
    requests: list[httpx.Request] = []
    url = "https://edge.example.org/c2c/download?x=1"
    ref = MediaRef(kind=MediaKind.FILE, full_url=url, aes_key=b64(KEY))
    got = await download_media(tencent_cdn(requests), TENCENT, ref, allowed_domains=["example.org"])
    assert got.data == b"from the edge"
    qq = MediaRef(kind=MediaKind.FILE, full_url="https://a.weixin.qq.com/x", aes_key=b64(KEY))
    with pytest.raises(MediaRefused, match="allowed CDN domain"):
        await download_media(tencent_cdn(requests), TENCENT, qq, allowed_domains=["example.org"])
    assert len(requests) == 1


async def test_redirect_not_followed() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(302, headers={"location": "http://evil.test/x"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), follow_redirects=True)
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p", aes_key=b64(KEY))
    with pytest.raises(CdnDownloadError) as ei:
        await download_media(http, CDN, ref)
    assert ei.value.status == 302 and len(requests) == 1


async def test_http_errors() -> None:
    cdn = Cdn({})
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="missing", aes_key=b64(KEY))
    with pytest.raises(CdnDownloadError) as ei:
        await download_media(cdn.http(), CDN, ref)
    assert ei.value.status == 404 and not ei.value.retryable and "no such file" in str(ei.value)


async def test_network_error_is_retryable_download_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("reset", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p", aes_key=b64(KEY))
    with pytest.raises(CdnDownloadError) as ei:
        await download_media(http, CDN, ref)
    assert ei.value.retryable


async def test_damaged_ciphertext() -> None:
    ct = ref_encrypt(b"hello", KEY)
    cdn = Cdn({"trunc": ct[:-3], "wrongkey": ref_encrypt(b"hello", bytes(16))})
    for param in ("trunc", "wrongkey"):
        ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param=param, aes_key=b64(KEY))
        with pytest.raises(CdnDownloadError):
            await download_media(cdn.http(), CDN, ref)


async def test_size_cap_while_streaming_and_by_header() -> None:
    data = os.urandom(10_000)
    ct = ref_encrypt(data, KEY)
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p", aes_key=b64(KEY))

    async def body() -> Any:  # streamed, no Content-Length
        for i in range(0, len(ct), 1000):
            yield ct[i : i + 1000]

    cdn = Cdn({"p": b""})
    cdn.files = {}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with pytest.raises(MediaRefused, match="cap"):
        await download_media(http, CDN, ref, max_bytes=5_000)
    # exactly at the cap is fine
    got = await download_media(http, CDN, ref, max_bytes=10_000)
    assert got.data == data
    with pytest.raises(MediaRefused):
        await download_media(http, CDN, ref, max_bytes=9_999)

    # announced by Content-Length
    cdn = Cdn({"p": ct})
    with pytest.raises(MediaRefused, match="10016 bytes"):
        await download_media(cdn.http(), CDN, ref, max_bytes=5_000)


async def test_size_cap_on_keyless_image() -> None:
    cdn = Cdn({"p": PNG})
    ref = MediaRef(kind=MediaKind.IMAGE, encrypt_query_param="p")
    with pytest.raises(MediaRefused):
        await download_media(cdn.http(), CDN, ref, max_bytes=len(PNG) - 1)
    assert (await download_media(cdn.http(), CDN, ref, max_bytes=len(PNG))).data == PNG


async def test_dest_directory_sanitised_name_no_overwrite(tmp_path: Path) -> None:
    data = b"%PDF-1.4 ..."
    cdn = Cdn({"p": ref_encrypt(data, KEY)})
    ref = MediaRef(
        kind=MediaKind.FILE,
        encrypt_query_param="p",
        aes_key=b64(KEY),
        file_name="../../etc/passwd\x00.pdf",
    )
    first = await download_media(cdn.http(), CDN, ref, dest=tmp_path)
    second = await download_media(cdn.http(), CDN, ref, dest=tmp_path)
    assert first.path == tmp_path / "passwd.pdf" and first.data is None
    assert second.path == tmp_path / "passwd (1).pdf"
    assert first.path.read_bytes() == second.path.read_bytes() == data
    assert first.mime == "application/pdf" and first.size == len(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd (1).pdf", "passwd.pdf"]


async def test_dest_file_path_and_cleanup_on_failure(tmp_path: Path) -> None:
    cdn = Cdn({"p": ref_encrypt(b"video bytes", KEY), "bad": b"\x00" * 15})
    ok = MediaRef(kind=MediaKind.VIDEO, encrypt_query_param="p", aes_key=b64(KEY))
    target = tmp_path / "out.mp4"
    got = await download_media(cdn.http(), CDN, ok, dest=target)
    assert isinstance(got, DownloadedMedia)
    assert got.path == target and target.read_bytes() == b"video bytes"
    assert got.mime == "video/mp4"
    bad = MediaRef(kind=MediaKind.VIDEO, encrypt_query_param="bad", aes_key=b64(KEY))
    with pytest.raises(CdnDownloadError):
        await download_media(cdn.http(), CDN, bad, dest=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no .part left


async def test_large_download_to_file_streams(tmp_path: Path) -> None:
    """3 MiB through the decryptor into a file: the bytes are right, nothing kept in memory."""
    data = os.urandom(3 * 2**20 + 5)
    ct = ref_encrypt(data, KEY)

    async def body() -> Any:
        for i in range(0, len(ct), 65536):
            yield ct[i : i + 65536]

    http = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, content=body()))
    )
    ref = MediaRef(kind=MediaKind.FILE, encrypt_query_param="p", aes_key=b64(KEY))
    got = await download_media(http, CDN, ref, dest=tmp_path / "big.bin")
    assert got.data is None and got.size == len(data)
    assert (tmp_path / "big.bin").read_bytes() == data


async def test_voice_naming() -> None:
    cdn = Cdn({"p": ref_encrypt(b"#!SILK_V3", KEY)})
    ref = MediaRef(kind=MediaKind.VOICE, encrypt_query_param="p", aes_key=b64(KEY), encode_type=6)
    got = await download_media(cdn.http(), CDN, ref)
    assert (got.file_name, got.mime) == ("voice.silk", "audio/silk")
