"""getuploadurl and the CDN (§7): rules, refusals, round trip, media sends."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import pytest

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.ilink.wire import encode_query_value

from .helpers import Api, aes_encrypt, b64hex

USER = "u1@im.wechat"


@pytest.fixture
async def bot(api: Api, sb: Sandbox) -> dict[str, Any]:
    creds = await api.login()
    creds["ctx"] = sb.user_says(USER, "send me the file")["context_token"]
    return creds


def upload_body(plain: bytes, key: bytes, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filekey": secrets.token_hex(16),
        "media_type": 3,
        "to_user_id": USER,
        "rawsize": len(plain),
        "rawfilemd5": hashlib.md5(plain).hexdigest(),
        "filesize": (len(plain) // 16 + 1) * 16,
        "no_need_thumb": True,
        "aeskey": key.hex(),
    }
    body.update(over)
    return body


async def test_fixed_key_vector_round_trip(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    key = bytes.fromhex("00112233445566778899aabbccddeeff")
    cdn, _, cipher = await api.upload(bot["bot_token"], USER, b"hello ilink", key=key)
    assert cipher.hex() == "b7b86f6a7e5ca4c39d8da094d17d2f95"
    assert cdn.status_code == 200
    param = cdn.headers["x-encrypted-param"]
    down = await api.client.get(
        f"{sb.cdn_base}/download?encrypted_query_param={encode_query_value(param)}"
    )
    assert down.status_code == 200 and down.content == cipher
    assert b64hex(key) == "MDAxMTIyMzM0NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmY="
    item = {
        "type": 4,
        "file_item": {
            "media": {"encrypt_query_param": param, "aes_key": b64hex(key), "encrypt_type": 1},
            "file_name": "hello.txt",
            "len": "11",
        },
    }
    r = await api.send(bot["bot_token"], USER, bot["ctx"], item)
    assert r.json()["ret"] == 0
    (d,) = sb.delivered()
    assert d["kind"] == "file" and d["file_name"] == "hello.txt" and d["size"] == 11
    assert d["sha256"] == hashlib.sha256(b"hello ilink").hexdigest()


async def test_upload_wrong_length_and_md5_refused(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    plain = b"x" * 40
    key = secrets.token_bytes(16)
    cdn, _, _ = await api.upload(bot["bot_token"], USER, plain, key=key, body=b"\0" * 32)
    assert cdn.status_code == 400 and "x-encrypted-param" not in cdn.headers
    assert cdn.headers["x-error-message"]
    assert sb.violations()[-1]["rule"] == "cdn.length"
    other = aes_encrypt(key, b"y" * 40)
    cdn, _, _ = await api.upload(bot["bot_token"], USER, plain, key=key, body=other)
    assert cdn.status_code == 400
    assert sb.violations()[-1]["rule"] == "cdn.md5"
    cdn, _, _ = await api.upload(
        bot["bot_token"], USER, plain, key=key, body=aes_encrypt(secrets.token_bytes(16), plain)
    )
    assert cdn.status_code == 400
    assert sb.violations()[-1]["rule"] in ("cdn.decrypt", "cdn.md5")
    assert [v["endpoint"] for v in sb.violations()] == ["cdn_upload"] * 3


async def test_unknown_param_and_download(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    r = await api.client.post(
        f"{sb.cdn_base}/upload?encrypted_query_param=nope&filekey=00",
        content=b"\0" * 16,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 400 and r.headers["x-error-message"]
    r = await api.client.get(f"{sb.cdn_base}/download?encrypted_query_param=nope")
    assert r.status_code == 404


async def test_unencoded_param_is_not_found(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    plain = b"data"
    key = secrets.token_bytes(16)
    r = await api.call("ilink/bot/getuploadurl", upload_body(plain, key), bot["bot_token"])
    answer = r.json()
    param = answer["upload_param"]
    assert "+" in param  # the client must percent-encode it
    filekey = answer["upload_full_url"].rsplit("filekey=", 1)[1]
    r = await api.client.post(
        f"{sb.cdn_base}/upload?encrypted_query_param={param}&filekey={filekey}",
        content=aes_encrypt(key, plain),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 400


async def test_built_upload_url_without_full_url(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    sb.configure(upload_full_url=False)
    plain = b"built url"
    key = secrets.token_bytes(16)
    body = upload_body(plain, key)
    answer = (await api.call("ilink/bot/getuploadurl", body, bot["bot_token"])).json()
    assert "upload_full_url" not in answer
    url = (
        f"{sb.cdn_base}/upload?encrypted_query_param={encode_query_value(answer['upload_param'])}"
        f"&filekey={encode_query_value(body['filekey'])}"
    )
    r = await api.client.post(
        url, content=aes_encrypt(key, plain), headers={"Content-Type": "application/octet-stream"}
    )
    assert r.status_code == 200 and r.headers["x-encrypted-param"]


@pytest.mark.parametrize(
    ("over", "rule"),
    [
        ({"filesize": 9}, "upload.filesize"),
        ({"aeskey": "00112233445566778899AABBCCDDEEFF"}, "upload.aeskey"),
        ({"no_need_thumb": False}, "upload.no_need_thumb"),
        ({"media_type": 4}, "upload.media_type"),
        ({"filekey": "xyz"}, "upload.filekey"),
        ({"rawfilemd5": "abc"}, "upload.rawfilemd5"),
        ({"to_user_id": "stranger@im.wechat"}, "upload.to_user_id"),
        ({"rawsize": "4"}, "upload.rawsize"),
    ],
)
async def test_getuploadurl_rules(
    api: Api, sb: Sandbox, bot: dict[str, Any], over: dict[str, Any], rule: str
) -> None:
    body = upload_body(b"data", secrets.token_bytes(16), **over)
    r = await api.call("ilink/bot/getuploadurl", body, bot["bot_token"])
    assert r.json() == {}
    assert sb.violations()[-1]["rule"] == rule


async def test_media_item_rules(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    t = bot["bot_token"]
    plain = b"v" * 100
    cdn, key, cipher = await api.upload(t, USER, plain, media_type=2)
    param = cdn.headers["x-encrypted-param"]

    def video(**media_over: Any) -> dict[str, Any]:
        media = {"encrypt_query_param": param, "aes_key": b64hex(key), "encrypt_type": 1}
        media.update(media_over)
        return {"type": 5, "video_item": {"media": media, "video_size": len(cipher)}}

    cases = [
        (video(encrypt_type=0), "media.encrypt_type"),
        (video(encrypt_query_param="invented"), "media.encrypt_query_param"),
        (video(aes_key=b64hex(secrets.token_bytes(16))), "media.aes_key"),
        ({"type": 5, "video_item": {"media": video()["video_item"]["media"]}}, "video.video_size"),
        (
            {
                "type": 4,
                "file_item": {
                    "media": video()["video_item"]["media"],
                    "file_name": "a",
                    "len": "100",
                },
            },
            "media.media_type",
        ),
    ]
    for item, rule in cases:
        r = await api.send(t, USER, bot["ctx"], item)
        assert r.json() == {}, rule
        assert sb.violations()[-1]["rule"] == rule
    assert (await api.send(t, USER, bot["ctx"], video())).json()["ret"] == 0
    # file len must be the plaintext size as a STRING
    cdn, key2, _ = await api.upload(t, USER, plain, media_type=3)
    media = {
        "encrypt_query_param": cdn.headers["x-encrypted-param"],
        "aes_key": b64hex(key2),
        "encrypt_type": 1,
    }
    item = {"type": 4, "file_item": {"media": media, "file_name": "a.bin", "len": 100}}
    assert (await api.send(t, USER, bot["ctx"], item)).json() == {}
    assert sb.violations()[-1]["rule"] == "file.len"
    item["file_item"]["len"] = "100"
    assert (await api.send(t, USER, bot["ctx"], item)).json()["ret"] == 0
    assert [d["kind"] for d in sb.delivered()] == ["video", "file"]
