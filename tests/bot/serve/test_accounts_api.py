"""The accounts API (``/v1``, issue 16): several logins at once, accounts kept with the
platform's user id (``ref``), pushes by ref, reconnects, and clear 4xx answers to bad input."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store

from .conftest import AUTH

ALICE = "alice@im.wechat"
BOB = "bob@im.wechat"


@pytest.fixture(autouse=True)
def fast_qr_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILINKBOT_QR_POLL_INTERVAL", "0.02")


async def wait_for(client: httpx.AsyncClient, login_id: str, *statuses: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    last: Any = None
    while loop.time() < deadline:
        r = await client.get(f"/v1/logins/{login_id}", headers=AUTH)
        assert r.status_code == 200, r.text
        last = r.json()
        if last["status"] in statuses:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"login never reached {statuses}; last status {last}")


async def start(client: httpx.AsyncClient, ref: str) -> Any:
    r = await client.post("/v1/logins", json={"ref": ref}, headers=AUTH)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "wait" and body["ref"] == ref
    assert body["qr_image"].startswith("data:image/png;base64,")
    assert base64.b64decode(body["qr_image"].split(",", 1)[1])[:4] == b"\x89PNG"
    return body


def qrcode_of(login: Any) -> str:
    return str(login["qr_url"]).rsplit("/", 1)[1]  # the sandbox's QR link ends with its id


async def log_in(client: httpx.AsyncClient, sb: Sandbox, ref: str, owner: str) -> Any:
    login = await start(client, ref)
    sb.scan(qrcode_of(login))
    sb.confirm(owner, qrcode_of(login))
    return await wait_for(client, login["id"], "confirmed")


async def test_two_logins_run_at_once_each_with_its_ref(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    first = await start(client, "user-1")
    second = await start(client, "user-2")
    assert first["id"] != second["id"] and first["qr_url"] != second["qr_url"]
    assert (await wait_for(client, first["id"], "wait"))["qr_url"] == first["qr_url"]

    sb.scan(qrcode_of(second))
    assert (await wait_for(client, second["id"], "scaned"))["done"] is False
    sb.require_verify_code("4711", qrcode_of(second))
    st = await wait_for(client, second["id"], "need_verifycode")
    assert st["needs_code"] is True
    r = await client.post(f"/v1/logins/{second['id']}/code", json={"code": "4711"}, headers=AUTH)
    assert r.status_code == 200, r.text
    await wait_for(client, second["id"], "scaned")
    assert (await wait_for(client, first["id"], "wait"))["status"] == "wait"  # untouched

    sb.scan(qrcode_of(first))
    sb.confirm(ALICE, qrcode_of(first))
    sb.confirm(BOB, qrcode_of(second))
    one = await wait_for(client, first["id"], "confirmed")
    two = await wait_for(client, second["id"], "confirmed")
    assert (one["owner"], two["owner"]) == (ALICE, BOB)
    assert one["qr_image"] is None and one["account"] != two["account"]

    r = await client.get("/v1/accounts", params={"ref": "user-1"}, headers=AUTH)
    assert r.status_code == 200
    (acc,) = r.json()["accounts"]
    assert acc["id"] == one["account"] and acc["owner"] == ALICE and acc["state"] == "active"
    assert "token" not in acc
    # times in UTC with a Z, as everywhere else ilinkbot prints them
    assert acc["created_at"].endswith("Z") and acc["last_used_at"].endswith("Z")
    r = await client.get("/v1/accounts", headers=AUTH)
    assert {a["ref"] for a in r.json()["accounts"]} == {"user-1", "user-2"}
    for a in store.list_accounts():
        assert a.token and a.token not in r.text


async def test_push_by_ref_and_by_account_path_reach_that_users_bot(
    client: httpx.AsyncClient, sb: Sandbox
) -> None:
    one = await log_in(client, sb, "user-1", ALICE)
    two = await log_in(client, sb, "user-2", BOB)
    sb.user_says(ALICE, "hi", bot_id=one["account"])
    sb.user_says(BOB, "hi", bot_id=two["account"])

    r = await client.post("/push?ref=user-2", content=b"for bob", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["to"] == BOB and r.json()["state"] == "delivered"
    r = await client.post(
        f"/v1/accounts/{one['account']}/push", json={"message": "for alice"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    assert r.json()["to"] == ALICE
    assert [(d["bot_id"], d["text"]) for d in sb.delivered()] == [
        (two["account"], "for bob"),
        (one["account"], "for alice"),
    ]


async def test_a_new_login_with_the_same_ref_reconnects(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    old = await log_in(client, sb, "user-42", ALICE)
    new = await log_in(client, sb, "user-42", BOB)  # the platform user bound another WeChat
    assert new["account"] != old["account"]
    states = {a.bot_id: (a.state, a.ref) for a in store.list_accounts()}
    assert states == {
        old["account"]: ("logged_out", "user-42"),
        new["account"]: ("active", "user-42"),
    }
    sb.user_says(BOB, "hi", bot_id=new["account"])
    r = await client.post("/push?ref=user-42", content=b"after the reconnect", headers=AUTH)
    assert r.status_code == 200, r.text
    assert sb.delivered()[-1]["bot_id"] == new["account"]


async def test_a_reconnect_by_ref_moves_aliases_and_unsent_pushes(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    old = await log_in(client, sb, "user-42", ALICE)
    sb.user_says(ALICE, "hi", bot_id=old["account"])
    r = await client.post("/push?ref=user-42", content=b"sent before", headers=AUTH)
    assert r.status_code == 200, r.text
    store.set_alias(old["account"], ALICE, "alice")
    (unsent,) = store.enqueue(
        old["account"], ALICE, [{"item": {"type": 1, "text_item": {"text": "kept"}}}]
    )

    new = await log_in(client, sb, "user-42", BOB)  # another WeChat, the same platform user
    assert store.resolve_alias(new["account"], "alice") == ALICE
    moved = store.get_outbox(unsent.id)
    assert moved is not None and moved.bot_id == new["account"] and moved.state == "held"
    # the history stays with the old account
    assert [row.state for row in store.list_outbox(old["account"])] == ["sent"]


async def test_disconnect_logs_the_account_out_and_its_pushes_say_so(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    one = await log_in(client, sb, "user-1", ALICE)
    r = await client.delete(f"/v1/accounts/{one['account']}", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["account"]["state"] == "logged_out"
    acc = store.get_account(one["account"])
    assert acc is not None and acc.token is None
    r = await client.post("/push?ref=user-1", content=b"too late", headers=AUTH)
    assert r.status_code == 503, r.text
    assert "logged out" in r.json()["error"]
    assert sb.delivered() == []


async def test_two_active_accounts_with_one_ref_are_ambiguous(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    one = await log_in(client, sb, "user-1", ALICE)
    two = await log_in(client, sb, "user-2", BOB)
    store.set_account_ref(two["account"], "user-1")  # e.g. set by hand in the database
    r = await client.post("/push?ref=user-1", content=b"which?", headers=AUTH)
    assert r.status_code == 409, r.text
    assert one["account"] in r.json()["error"] and two["account"] in r.json()["error"]
    assert sb.delivered() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("GET", "/v1/logins/lg_nope", None, 404, "no login"),
        ("POST", "/v1/logins/lg_nope/code", {"code": "1"}, 404, "no login"),
        ("POST", "/v1/logins", {}, 422, "ref"),
        ("POST", "/v1/logins", {"ref": ""}, 422, "ref"),
        ("POST", "/v1/logins", {"ref": 42}, 422, "ref"),
        ("POST", "/v1/logins", {"ref": "x" * 300}, 422, "ref"),
        ("POST", "/v1/logins", ["ref"], 422, "ref"),
        ("GET", "/v1/accounts?ref=", None, 422, "ref"),
        ("DELETE", "/v1/accounts/nobody@im.bot", None, 404, "no account"),
        ("POST", "/v1/accounts/nobody@im.bot/push", {"message": "x"}, 404, "no account"),
        ("POST", "/push?ref=user-404", {"message": "x"}, 404, "no account with ref"),
        ("POST", "/push?ref=a&account=b", {"message": "x"}, 422, "once"),
        ("GET", "/v1/nothing", None, 404, "no route"),
        ("PUT", "/v1/logins", None, 405, "not allowed"),
    ],
)
async def test_bad_input_is_a_clear_4xx(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    status: int,
    words: str,
) -> None:
    r = await client.request(method, path, json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.json()["ok"] is False and words in r.json()["error"]


async def test_a_code_for_a_login_not_waiting_for_one_is_409(client: httpx.AsyncClient) -> None:
    login = await start(client, "user-1")
    r = await client.post(f"/v1/logins/{login['id']}/code", json={"code": "12"}, headers=AUTH)
    assert r.status_code == 409, r.text
    r = await client.post(f"/v1/logins/{login['id']}/code", json={"code": "ab"}, headers=AUTH)
    assert r.status_code == 422, r.text


async def test_every_v1_route_needs_the_token(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/v1/logins"),
        ("GET", "/v1/logins/lg_x"),
        ("GET", "/v1/accounts"),
        ("DELETE", "/v1/accounts/a@im.bot"),
        ("POST", "/v1/accounts/a@im.bot/push"),
    ]:
        r = await client.request(method, path, json={"ref": "u"})
        assert r.status_code == 401, (method, path)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/logins", b'{"ref": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("/v1/logins", b'{"ref": "u", "x": ' + b"7" * 5000 + b"}"),
        ("/v1/logins", b"\xff\xfe not json"),
        ("/v1/logins", b'{"ref": "a\\u0000b"}'),
        ("/v1/logins", b"x" * 5000),
    ],
)
async def test_hostile_login_bodies_are_4xx(
    client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    r = await client.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code in (413, 422), r.text
    assert r.json()["ok"] is False and "\n" not in r.json()["error"]


async def test_too_many_logins_at_once_is_429(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ilinkbot.bot.serve import weblogin

    monkeypatch.setattr(weblogin, "MAX_LOGINS", 2)
    await start(client, "user-1")
    await start(client, "user-2")
    r = await client.post("/v1/logins", json={"ref": "user-3"}, headers=AUTH)
    assert r.status_code == 429, r.text
    assert "2 logins are running" in r.json()["error"]
