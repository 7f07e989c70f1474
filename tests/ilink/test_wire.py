"""PROTOCOL.md §10 test vectors and §1.3-1.5 encoding rules."""

import json

import pytest

from ilinkbot.ilink.wire import (
    account_id_candidates,
    client_version,
    dumps,
    encode_query_value,
    endpoint_url,
    new_client_id,
    new_uin,
    normalize_account_id,
    sanitize_bot_agent,
    uin_header,
)


@pytest.mark.parametrize(
    ("value", "header"),
    [(123456789, "MTIzNDU2Nzg5"), (0, "MA=="), (4294967295, "NDI5NDk2NzI5NQ==")],
)
def test_uin_vectors(value: int, header: str) -> None:
    assert uin_header(value) == header


def test_uin_is_fresh_and_in_range() -> None:
    import base64

    seen = {new_uin() for _ in range(200)}
    assert len(seen) > 190
    for v in seen:
        n = int(base64.b64decode(v).decode())
        assert 0 <= n <= 0xFFFFFFFF
    with pytest.raises(ValueError):
        uin_header(2**32)


@pytest.mark.parametrize(
    ("version", "value"),
    [("1.0.11", "65547"), ("2.4.9", "132105"), ("1.0.3", "65539"), ("2", "131072")],
)
def test_client_version_vectors(version: str, value: str) -> None:
    assert client_version(version) == value


@pytest.mark.parametrize(
    ("configured", "sent"),
    [
        (
            "MyBot/1.2.0 (region=cn;env=prod) LangChain/0.3.5",
            "MyBot/1.2.0 (region=cn;env=prod) LangChain/0.3.5",
        ),
        ("MyBot/1.2.0-rc.1+build.5", "MyBot/1.2.0-rc.1+build.5"),
        ("hello MyBot/1.0", "MyBot/1.0"),
        ("My Bot/1", "Bot/1"),
        ("(c) A/1", "A/1"),
        ("A/1 (multi word comment) B/2 (x(y))", "A/1 (multi word comment) B/2"),
        ("A/1 (" + "x" * 65 + ")", "A/1"),
        ("Ünï/1", "OpenClaw"),
        ("", "OpenClaw"),
        ("   ", "OpenClaw"),
        (None, "OpenClaw"),
    ],
)
def test_bot_agent_vectors(configured: str | None, sent: str) -> None:
    assert sanitize_bot_agent(configured) == sent


def test_bot_agent_truncates_whole_tokens() -> None:
    forty = " ".join(f"Prod{i}/1.0.0" for i in range(40))
    out = sanitize_bot_agent(forty)
    assert out == " ".join(f"Prod{i}/1.0.0" for i in range(20))
    assert len(out.encode()) == 249


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("b0f5860fdecb@im.bot", "b0f5860fdecb-im-bot"),
        ("ABCDEF@im.bot", "abcdef-im-bot"),
        ("abc-im-bot", "abc-im-bot"),
        ("", "default"),
    ],
)
def test_account_id_vectors(raw: str, norm: str) -> None:
    assert normalize_account_id(raw) == norm


def test_account_candidates_accept_both_forms() -> None:
    assert "abc@im.bot" in account_id_candidates("abc-im-bot")
    assert "abc-im-bot" in account_id_candidates("abc@im.bot")


def test_json_bytes_match_the_documented_example() -> None:
    body = {
        "msg": {
            "from_user_id": "",
            "to_user_id": "o9cq80xxxx@im.wechat",
            "client_id": "openclaw-weixin:1767225600000-1a2b3c4d",
            "message_type": 2,
            "message_state": 2,
            "item_list": [{"type": 1, "text_item": {"text": "你好"}}],
            "context_token": "AARzJWAF...",
            "run_id": "6f1c...",
        },
        "base_info": {"channel_version": "2.4.9", "bot_agent": "OpenClaw"},
    }
    expected = (
        '{"msg":{"from_user_id":"","to_user_id":"o9cq80xxxx@im.wechat","client_id":'
        '"openclaw-weixin:1767225600000-1a2b3c4d","message_type":2,"message_state":2,'
        '"item_list":[{"type":1,"text_item":{"text":"你好"}}],"context_token":"AARzJWAF...",'
        '"run_id":"6f1c..."},"base_info":{"channel_version":"2.4.9","bot_agent":"OpenClaw"}}'
    )
    assert dumps(body) == expected.encode("utf-8")


def test_json_omits_none_keeps_empty_and_raw_utf8() -> None:
    out = dumps({"a": None, "b": "", "c": [1, {"d": None}], "e": "\u2028é"})
    assert out == '{"b":"","c":[1,{}],"e":"\u2028é"}'.encode()
    assert json.loads(out) == {"b": "", "c": [1, {}], "e": "\u2028é"}


def test_url_and_query_encoding() -> None:
    assert endpoint_url("https://h/x", "ilink/bot/getupdates") == "https://h/x/ilink/bot/getupdates"
    assert endpoint_url("https://h/", "ilink/bot/x") == "https://h/ilink/bot/x"
    assert encode_query_value("a b/c+d=é!~*'()") == "a%20b%2Fc%2Bd%3D%C3%A9!~*'()"


def test_client_id_shape() -> None:
    cid = new_client_id(1767225600000)
    prefix, _, rest = cid.partition(":")
    ms, _, hex8 = rest.partition("-")
    assert prefix == "openclaw-weixin" and ms == "1767225600000"
    assert len(hex8) == 8 and int(hex8, 16) >= 0
    assert new_client_id() != new_client_id()
