"""The client's requests byte by byte (§1.4-1.7), and answers mapped to the error tree."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from ilinkbot.ilink import (
    ApiError,
    HttpStatusError,
    IlinkClient,
    ProtocolError,
    ReplyWindowClosed,
    SessionExpired,
    TransportError,
)
from ilinkbot.ilink.models import MessageItemType, WeixinMessage

BASE = "https://ilink.example/api"


class Recorder:
    def __init__(self, answer: Any = None, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = {"ret": 0} if answer is None else answer
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if isinstance(self.answer, Exception):
            raise self.answer
        body = self.answer if isinstance(self.answer, bytes) else json.dumps(self.answer).encode()
        return httpx.Response(self.status, content=body)


def make(rec: Recorder, token: str | None = "tok-secret-123456") -> IlinkClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    return IlinkClient(BASE, token, http=http, bot_agent="MyBot/1.0 (x)")


async def test_post_headers_and_body_rules() -> None:
    rec = Recorder({"ret": 0, "message_id": 12345678901234567890})
    client = make(rec)
    ack = await client.send_text("u@im.wechat", "你好", context_token="ctx", client_id="cid-1")
    await client.send_text("u@im.wechat", "again", context_token="ctx")
    req = rec.requests[0]
    assert str(req.url) == BASE + "/ilink/bot/sendmessage"
    h = req.headers
    assert h["Content-Type"] == "application/json"
    assert h["AuthorizationType"] == "ilink_bot_token"
    assert h["Authorization"] == "Bearer tok-secret-123456"
    assert h["iLink-App-Id"] == "bot"
    assert h["iLink-App-ClientVersion"] == "132105"
    assert int(base64.b64decode(h["X-WECHAT-UIN"]).decode()) <= 0xFFFFFFFF
    assert h["X-WECHAT-UIN"] != rec.requests[1].headers["X-WECHAT-UIN"]
    assert int(h["Content-Length"]) == len(req.content)
    body = json.loads(req.content)
    assert list(body) == ["msg", "base_info"]
    assert body["base_info"] == {"channel_version": "2.4.9", "bot_agent": "MyBot/1.0 (x)"}
    assert list(body["msg"]) == [
        "from_user_id",
        "to_user_id",
        "client_id",
        "message_type",
        "message_state",
        "item_list",
        "context_token",
    ]
    assert body["msg"]["from_user_id"] == ""
    assert body["msg"]["message_type"] == 2 and body["msg"]["message_state"] == 2
    assert req.content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert "你好".encode() in req.content
    assert ack.message_id == "12345678901234567890" and ack.confirmed
    assert ack.client_id == "cid-1"


async def test_ret_zero_without_message_id_is_unconfirmed() -> None:
    client = make(Recorder({"ret": 0}))
    ack = await client.send_text("u@im.wechat", "x", context_token="c")
    assert not ack.confirmed


@pytest.mark.parametrize(
    ("answer", "status", "exc"),
    [
        ({"ret": -2, "errmsg": "prepare failed"}, 200, ReplyWindowClosed),
        ({"ret": -14}, 200, SessionExpired),
        ({"errcode": -14, "errmsg": "session timeout"}, 200, SessionExpired),
        ({"ret": -1, "errmsg": "x"}, 200, ApiError),
        (b"not json", 200, ProtocolError),
        (b"", 200, ProtocolError),
        (b"[1]", 200, ProtocolError),
        ({"ret": "x"}, 200, ProtocolError),
        (b'{"ret":0,"msgs":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 200, ProtocolError),
        (b'{"ret":' + b"7" * 5000 + b"}", 200, ProtocolError),
        ({"ret": 0}, 503, HttpStatusError),
        ({"ret": 0}, 400, HttpStatusError),
        (httpx.ConnectError("refused"), 200, TransportError),
    ],
)
async def test_error_mapping(answer: Any, status: int, exc: type[Exception]) -> None:
    client = make(Recorder(answer, status))
    with pytest.raises(exc) as info:
        await client.send_text("u@im.wechat", "x", context_token="c")
    if isinstance(info.value, HttpStatusError):
        assert info.value.retryable == (status >= 500)
    if isinstance(info.value, ApiError) and not isinstance(info.value, SessionExpired):
        assert info.value.ret is not None


async def test_qr_calls() -> None:
    rec = Recorder({"qrcode": "q1", "qrcode_img_content": "https://x/q1", "ret": 0})
    client = make(rec, token=None)
    qr = await client.get_bot_qrcode([f"t{i}" for i in range(12)])
    assert qr.qrcode == "q1"
    req = rec.requests[0]
    assert req.method == "POST"
    assert str(req.url) == BASE + "/ilink/bot/get_bot_qrcode?bot_type=3"
    assert "Authorization" not in req.headers
    assert req.headers["AuthorizationType"] == "ilink_bot_token"
    assert json.loads(req.content) == {"local_token_list": [f"t{i}" for i in range(10)]}

    rec.answer = {"status": "confirmed", "bot_token": "bt", "ilink_bot_id": "b@im.bot"}
    st = await client.get_qrcode_status("a b", verify_code="12")
    req = rec.requests[1]
    assert req.method == "GET"
    assert str(req.url) == BASE + "/ilink/bot/get_qrcode_status?qrcode=a%20b&verify_code=12"
    assert set(k.lower() for k in req.headers) >= {"ilink-app-id", "ilink-app-clientversion"}
    for absent in ("Content-Type", "AuthorizationType", "X-WECHAT-UIN", "Authorization"):
        assert absent not in req.headers
    assert st.status == "confirmed" and st.ilink_bot_id == "b@im.bot"


@pytest.mark.parametrize("answer", [b"garbage", {"ret": 1}, httpx.ReadTimeout("t")])
async def test_qr_status_failures_mean_wait(answer: Any) -> None:
    client = make(Recorder(answer, 200), token=None)
    assert (await client.get_qrcode_status("q")).status == "wait"
    client = make(Recorder({"status": "scaned"}, 524), token=None)
    assert (await client.get_qrcode_status("q")).status == "wait"


async def test_getupdates_cursor_timeout_and_models() -> None:
    big = 2**63 + 12345
    rec = Recorder(
        json.loads(
            '{"ret":0,"get_updates_buf":"CUR2","longpolling_timeout_ms":20000,"msgs":['
            f'{{"message_id":{big},"from_user_id":"u@im.wechat","context_token":"c1",'
            '"item_list":[{"type":1,"text_item":{"text":"hi"}},{"type":77,"new_item":{"z":1}}],'
            '"brand_new_field":[1,2]}, "junk"]}'
        )
    )
    client = make(rec)
    batch = await client.get_updates("CUR1")
    assert json.loads(rec.requests[0].content) == {
        "get_updates_buf": "CUR1",
        "base_info": {"channel_version": "2.4.9", "bot_agent": "MyBot/1.0 (x)"},
    }
    assert batch.cursor == "CUR2" and client.getupdates_timeout == 20.0
    (msg,) = batch.messages
    assert msg.message_id == str(big)
    assert msg.items[0].kind is MessageItemType.TEXT and msg.items[0].text_item is not None
    assert msg.items[1].kind is None and msg.items[1].extra == {"new_item": {"z": 1}}
    assert msg.to_dict()["brand_new_field"] == [1, 2]
    assert msg.to_dict()["message_id"] == big
    assert batch.malformed == ["junk"]

    client = make(Recorder(httpx.ReadTimeout("slow")))
    empty = await client.get_updates("CUR2")
    assert empty.messages == [] and empty.cursor is None


def test_model_never_crashes_on_wrong_types() -> None:
    msg = WeixinMessage.from_dict(
        {"message_id": [1], "seq": "x", "item_list": "nope", "context_token": 5}
    )
    assert msg.message_id is None and msg.items == []
    assert msg.to_dict() == {"message_id": [1], "seq": "x", "item_list": "nope", "context_token": 5}


async def test_upload_url_and_light_calls() -> None:
    rec = Recorder({"ret": 0, "upload_param": "P"})
    client = make(rec)
    url = await client.get_upload_url(
        filekey="f" * 32,
        media_type=3,
        to_user_id="u@im.wechat",
        rawsize=11,
        rawfilemd5="a0e581bef9105ace19c7d2e59e66374d",
        filesize=16,
        aeskey="00112233445566778899aabbccddeeff",
    )
    assert url.upload_param == "P" and url.upload_full_url is None
    body = json.loads(rec.requests[0].content)
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
    rec.answer = {"ret": 0}
    with pytest.raises(ProtocolError):
        await client.get_upload_url(
            filekey="f" * 32,
            media_type=3,
            to_user_id="u",
            rawsize=1,
            rawfilemd5="0" * 32,
            filesize=16,
            aeskey="0" * 32,
        )
    rec.answer = {"ret": 0, "typing_ticket": "TT"}
    assert await client.get_config("u@im.wechat", None) == "TT"
    assert json.loads(rec.requests[-1].content)["ilink_user_id"] == "u@im.wechat"
    assert "context_token" not in json.loads(rec.requests[-1].content)
    await client.send_typing("u@im.wechat", "TT", 1)
    await client.notify_start()
    await client.notify_stop()
    paths = [r.url.path for r in rec.requests[-3:]]
    assert paths == [
        "/api/ilink/bot/sendtyping",
        "/api/ilink/bot/msg/notifystart",
        "/api/ilink/bot/msg/notifystop",
    ]
    assert json.loads(rec.requests[-1].content) == {
        "base_info": {"channel_version": "2.4.9", "bot_agent": "MyBot/1.0 (x)"}
    }


async def test_getconfig_counts_only_ret_zero() -> None:
    rec = Recorder({"typing_ticket": "TT"})  # no ret: not a success, whatever else it holds
    client = make(rec)
    with pytest.raises(ProtocolError, match="no ret"):
        await client.get_config("u@im.wechat")
    rec.answer = {}
    with pytest.raises(ProtocolError):
        await client.get_config("u@im.wechat")
    rec.answer = {"ret": 0}
    assert await client.get_config("u@im.wechat") == ""


async def test_timeouts_per_endpoint() -> None:
    rec = Recorder({"ret": 0, "qrcode": "q", "qrcode_img_content": "u", "upload_param": "p"})
    client = make(rec)
    await client.get_bot_qrcode([])
    await client.get_qrcode_status("q")
    await client.get_updates("")
    await client.send_text("u", "x", context_token="c")
    await client.get_upload_url(
        filekey="f" * 32,
        media_type=1,
        to_user_id="u",
        rawsize=1,
        rawfilemd5="0" * 32,
        filesize=16,
        aeskey="0" * 32,
    )
    await client.get_config("u")
    await client.send_typing("u", "t", 2)
    await client.notify_start()
    reads = [r.extensions["timeout"]["read"] for r in rec.requests]
    assert reads == [None, 35.0, 35.0, 15.0, 15.0, 10.0, 10.0, 10.0]
