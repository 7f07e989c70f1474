"""Hostile request bodies get a one-line 4xx JSON answer or a clean delivery, never a 500."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest

from ilinkbot.bot.serve import Gateway, create_app
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.testing import capture_logs
from tests.conftest import OWNER

from .conftest import AUTH

DEEP = b"[" * 100_000 + b"]" * 100_000
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/push", b'{"message": ' + DEEP + b"}", "nested too deep"),
        ("/push", b'{"message": ' + b"7" * 5000 + b"}", "digits"),
        ("/hooks/alertmanager", b'{"alerts": ' + DEEP + b"}", "nested too deep"),
        ("/hooks/grafana", b'{"alerts": [], "x": ' + b"7" * 5000 + b"}", "digits"),
        ("/login/code", b'{"code": ' + b"[" * 2000 + b"]" * 2000 + b"}", "code"),
    ],
)
async def test_bodies_the_json_decoder_cannot_take_are_422(
    client: httpx.AsyncClient, sb: Sandbox, account: object, path: str, body: bytes, words: str
) -> None:
    sb.user_says(OWNER, "hi")
    r = await client.post(path, content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert r.json()["ok"] is False and words in r.json()["error"]
    assert "\n" not in r.json()["error"]
    assert sb.delivered() == []


async def test_a_lone_surrogate_in_json_text_is_delivered_as_a_replacement_character(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    body = b'{"message": "a\\ud800b \\ud83d\\ude00", "title": "t\\udfff"}'
    r = await client.post("/push", content=body, headers=JSON)
    assert r.status_code == 200, r.text
    assert sb.delivered(OWNER)[-1]["text"] == "t\ufffd\n\na\ufffdb \U0001f600"
    alert: dict[str, Any] = {"alerts": [{"labels": {"alertname": "Disk\udc80"}}]}
    r = await client.post(
        "/hooks/alertmanager",
        content=json.dumps(alert).encode(),  # ensure_ascii: the surrogate is a \\udc80 escape
        headers=JSON,
    )
    assert r.status_code == 200, r.text
    assert "Disk\ufffd" in sb.delivered(OWNER)[-1]["text"]


async def test_a_long_utf8_file_name_is_cut_to_fit_the_file_system(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    """120 characters, 360 bytes: the spool once failed with ENAMETOOLONG (a 500)."""
    sb.user_says(OWNER, "hi")
    name = "报" * 116 + ".pdf"
    r = await client.put(
        "/push", content=b"%PDF-1.4\n" * 10, headers={**AUTH, "Filename": name.encode()}
    )
    assert r.status_code == 200, r.text
    sent = sb.delivered(OWNER)[-1]
    assert sent["kind"] == "file" and sent["file_name"].endswith(".pdf")
    assert sent["file_name"].startswith("报报报") and len(sent["file_name"].encode()) <= 255


async def _raw_post(
    gateway: Gateway, headers: dict[str, str], incoming: list[dict[str, Any]]
) -> tuple[int, list[Any]]:
    """POST /push straight into the ASGI app, the client sending ``incoming``."""
    app = create_app(gateway)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/push",
        "raw_path": b"/push",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {**AUTH, **headers}.items()],
        "client": ("127.0.0.1", 1),
        "server": ("gateway.test", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with capture_logs() as logs:
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert not any("exc_info" in e or e["log_level"] == "error" for e in logs), logs
    (access,) = [e for e in logs if e["event"] == "http_request"]
    assert access["status"] == start["status"]
    return start["status"], sent


async def test_a_client_that_disconnects_mid_body_is_no_500_and_no_traceback(
    gateway: Gateway, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    incoming = [
        {"type": "http.request", "body": b"half a mess", "more_body": True},
        {"type": "http.disconnect"},
    ]
    status, _ = await _raw_post(gateway, {"Content-Length": "1000"}, incoming)
    assert status == 400
    assert sb.delivered() == []


async def test_a_content_length_of_5000_digits_is_413(
    gateway: Gateway, sb: Sandbox, account: object
) -> None:
    incoming = [{"type": "http.request", "body": b"x", "more_body": False}]
    status, sent = await _raw_post(gateway, {"Content-Length": "9" * 5000}, incoming)
    assert status == 413 and b"too large" in sent[-1]["body"]


async def test_a_full_disk_under_the_database_is_503_not_500(
    client: httpx.AsyncClient, gateway: Gateway, sb: Sandbox, account: object, monkeypatch: Any
) -> None:
    sb.user_says(OWNER, "hi")

    def full(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(gateway.svc.store, "list_accounts", full)
    r = await client.post("/push", content=b"x", headers=AUTH)
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "database error: database or disk is full"
