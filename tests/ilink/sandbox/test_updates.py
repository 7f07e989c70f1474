"""getupdates: message shape, long-poll wake-up, cursor semantics (§3, §4, §8.4)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from typing import Any

import pytest

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.ilink.wire import encode_query_value

from .helpers import Api, aes_decrypt

USER = "u1@im.wechat"


@pytest.fixture
async def bot(api: Api) -> dict[str, Any]:
    return await api.login()


async def poll(api: Api, bot: dict[str, Any], cursor: str) -> dict[str, Any]:
    r = await api.call("ilink/bot/getupdates", {"get_updates_buf": cursor}, bot["bot_token"])
    assert r.status_code == 200
    answer: dict[str, Any] = r.json()
    assert answer["ret"] == 0, answer
    return answer


async def test_inbound_message_shape(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    injected = sb.user_says(USER, "hello")
    r = await api.call("ilink/bot/getupdates", {"get_updates_buf": ""}, bot["bot_token"])
    assert re.search(rb'"message_id":\d{16,20},', r.content)  # a JSON number, not a string
    answer = r.json()
    assert answer["longpolling_timeout_ms"] == 35000
    base64.b64decode(answer["get_updates_buf"], validate=True)
    (m,) = answer["msgs"]
    assert m == injected
    assert m["message_id"] > 2**53
    assert m["from_user_id"] == USER and m["to_user_id"] == bot["ilink_bot_id"]
    assert m["message_type"] == 1 and m["message_state"] == 2
    assert m["item_list"][0]["text_item"]["text"] == "hello"
    assert m["context_token"] and m["session_id"] and m["seq"] == 1
    assert isinstance(m["create_time_ms"], int)
    second = sb.user_says(USER, "again")
    assert second["context_token"] != m["context_token"]


async def test_long_poll_times_out_empty_and_wakes_early(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    t0 = time.monotonic()
    answer = await poll(api, bot, "")
    assert answer["msgs"] == []
    assert time.monotonic() - t0 >= 0.25  # held for longpoll_seconds
    sb.configure(longpoll_seconds=5)
    task = asyncio.create_task(poll(api, bot, answer["get_updates_buf"]))
    await asyncio.sleep(0.1)
    assert not task.done()
    sb.user_says(USER, "wake up")
    answer = await asyncio.wait_for(task, 2)
    assert [m["item_list"][0]["text_item"]["text"] for m in answer["msgs"]] == ["wake up"]


async def test_long_poll_wakes_only_for_its_own_bot(
    api: Api, sb: Sandbox, bot: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await api.login("other@im.wechat")
    sb.configure(longpoll_seconds=5)
    task = asyncio.create_task(poll(api, other, ""))
    await asyncio.sleep(0.1)
    # Each wake-up of a waiter is one call_soon_threadsafe on its loop: count them.
    loop = asyncio.get_running_loop()
    wakeups = 0
    real = loop.call_soon_threadsafe

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)
    for i in range(20):
        sb.user_says(USER, f"for the first bot {i}", bot_id=bot["ilink_bot_id"])
    await asyncio.sleep(0.1)
    assert wakeups == 0 and not task.done()
    sb.user_says("other@im.wechat", "for the other bot")
    answer = await asyncio.wait_for(task, 2)
    assert [m["item_list"][0]["text_item"]["text"] for m in answer["msgs"]] == ["for the other bot"]
    assert wakeups == 1


async def test_cursor_replay_and_acknowledgement(
    api: Api, sb: Sandbox, bot: dict[str, Any]
) -> None:
    sb.user_says(USER, "one")
    sb.user_says(USER, "two")
    first = await poll(api, bot, "")
    assert len(first["msgs"]) == 2
    # crash before saving the cursor: polling with the old cursor replays the batch
    again = await poll(api, bot, "")
    assert [m["message_id"] for m in again["msgs"]] == [m["message_id"] for m in first["msgs"]]
    sb.user_says(USER, "three")
    # the new cursor acknowledges the batch
    after = await poll(api, bot, first["get_updates_buf"])
    assert [m["item_list"][0]["text_item"]["text"] for m in after["msgs"]] == ["three"]
    # a client that lost its cursor does not get acknowledged messages again
    lost = await poll(api, bot, "")
    assert [m["item_list"][0]["text_item"]["text"] for m in lost["msgs"]] == ["three"]
    # acknowledging "three" (cursor saved, batch lost) loses it for good
    await poll(api, bot, after["get_updates_buf"])
    assert (await poll(api, bot, ""))["msgs"] == []
    assert (await poll(api, bot, first["get_updates_buf"]))["msgs"] == []


async def test_getupdates_rules(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    sb.user_says(USER, "one")
    r = await api.call("ilink/bot/getupdates", {}, bot["bot_token"])
    assert r.json() == {}
    r = await api.post("ilink/bot/getupdates", {"get_updates_buf": ""}, bot["bot_token"])
    assert r.json() == {}
    assert [v["rule"] for v in sb.violations()] == [
        "getupdates.get_updates_buf",
        "base_info.missing",
    ]
    assert len((await poll(api, bot, ""))["msgs"]) == 1  # nothing was consumed


@pytest.mark.parametrize("form", ["hex", "base64_raw", "base64_hex"])
async def test_inbound_image_key_forms(
    api: Api, sb: Sandbox, bot: dict[str, Any], form: Any
) -> None:
    data = b"\x89PNG\r\n" + bytes(range(200))
    msg = sb.user_says(USER, image=data, image_key_form=form)
    item = msg["item_list"][0]
    assert item["type"] == 2
    image = item["image_item"]
    media = image["media"]
    if form == "hex":
        key = bytes.fromhex(image["aeskey"])
        assert "aes_key" not in media
    else:
        assert "aeskey" not in image
        raw = base64.b64decode(media["aes_key"])
        key = raw if form == "base64_raw" else bytes.fromhex(raw.decode())
        assert len(raw) == (16 if form == "base64_raw" else 32)
    assert media["encrypt_type"] == 1
    r = await api.client.get(media["full_url"])
    assert r.status_code == 200
    assert len(r.content) == image["mid_size"]
    assert aes_decrypt(key, r.content) == data
    # the URL built from encrypt_query_param works as well (§7.5)
    param = encode_query_value(media["encrypt_query_param"])
    built = f"{sb.cdn_base}/download?encrypted_query_param={param}"
    assert (await api.client.get(built)).content == r.content


async def test_inbound_file_video_voice(api: Api, sb: Sandbox, bot: dict[str, Any]) -> None:
    data = b"%PDF-1.4 " * 50
    msg = sb.user_says(USER, file=("report.pdf", data))
    f = msg["item_list"][0]["file_item"]
    assert f["file_name"] == "report.pdf" and f["len"] == str(len(data))
    assert f["md5"] == hashlib.md5(data).hexdigest()
    key = bytes.fromhex(base64.b64decode(f["media"]["aes_key"]).decode())
    blob = (await api.client.get(f["media"]["full_url"])).content
    assert aes_decrypt(key, blob) == data
    v = sb.user_says(USER, video=b"\x00\x00\x00\x18ftypmp42")["item_list"][0]
    assert v["type"] == 5 and v["video_item"]["video_size"] == 16
    voice = sb.user_says(USER, voice_text="你好")["item_list"][0]
    assert voice["type"] == 3 and voice["voice_item"]["text"] == "你好"
    assert voice["voice_item"]["encode_type"] == 6
    both = sb.user_says(USER, "caption", image=b"img")["item_list"]
    assert [i["type"] for i in both] == [1, 2]
