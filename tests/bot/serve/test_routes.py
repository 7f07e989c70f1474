"""The gateway's routes in-process (ASGI) with the outbox talking to the strict sandbox."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
import qrcode

from ilinkbot.bot.config import Config
from ilinkbot.bot.serve import Gateway, create_app
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import capture_logs, no_real_waiting
from tests.conftest import OWNER

from .conftest import AUTH, TOKEN

ALICE = "alice@im.wechat"


def _png() -> bytes:
    buf = io.BytesIO()
    qrcode.make("picture").save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/push"),
        ("PUT", "/push"),
        ("POST", "/push/alice"),
        ("POST", "/hooks/alertmanager/alice"),
        ("POST", "/login/start"),
        ("GET", "/login/status"),
        ("POST", "/login/code"),
    ],
)
async def test_every_data_route_needs_the_token(
    client: httpx.AsyncClient, sb: Sandbox, account: object, method: str, path: str
) -> None:
    sb.user_says(OWNER, "hi")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = await client.request(method, path, content=b"hello", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        body = r.json()
        assert body["ok"] is False and "token" in body["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await client.request(method, path + "?auth=nope", content=b"hello")
    assert r.status_code == 401
    assert sb.delivered() == []


@pytest.mark.parametrize(
    "how",
    ["bearer", "basic", "query", "ntfy-query"],
)
async def test_token_forms_accepted(
    client: httpx.AsyncClient, sb: Sandbox, account: object, how: str
) -> None:
    sb.user_says(OWNER, "hi")
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    if how == "bearer":
        headers = AUTH
    elif how == "basic":
        headers = {"Authorization": "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode()}
    elif how == "query":
        params = {"auth": TOKEN}
    else:  # ntfy: ?auth=base64url("Bearer TOKEN") without padding
        params = {"auth": base64.urlsafe_b64encode(f"Bearer {TOKEN}".encode()).decode().rstrip("=")}
    r = await client.post("/push", content=b"via " + how.encode(), headers=headers, params=params)
    assert r.status_code == 200, r.text
    assert [d["text"] for d in sb.delivered(OWNER)] == [f"via {how}"]


async def test_health_and_login_page_need_no_token_but_hold_no_secret(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/healthz")).json() == {"ok": True}
    page = await client.get("/login")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert TOKEN not in page.text and "/login/status" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_the_token_never_appears_in_logs(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    with capture_logs() as logs:
        await client.post(f"/push?auth={TOKEN}", content=b"x")
    assert logs and TOKEN not in json.dumps(logs, default=str)
    assert any(e.get("event") == "http_request" and e.get("path") == "/push" for e in logs)


# ------------------------------------------------------------------------------ bodies


async def test_plain_text_with_ntfy_title_header_and_query(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    r = await client.post("/push", content=b"disk 91% full", headers={**AUTH, "Title": "web-1"})
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is True and body["state"] == "delivered" and body["to"] == OWNER
    assert isinstance(body["id"], int) and body["ids"] == [body["id"]]
    assert body["message_ids"][0]
    r = await client.post("/push", params={"t": "ci", "message": "build passed"}, headers=AUTH)
    assert r.json()["state"] == "delivered"
    r = await client.post(
        "/push?title=deploy", content=b"done", headers={**AUTH, "X-Tags": "tada,prod"}
    )
    assert r.status_code == 200
    texts = [d["text"] for d in sb.delivered(OWNER)]
    assert texts == [
        "web-1\n\ndisk 91% full",
        "ci\n\nbuild passed",
        "🎉 deploy\n\ndone\n\nTags: prod",
    ]


async def test_utf8_title_header_is_decoded(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    raw = "构建".encode()  # a client sending raw UTF-8 in the header
    headers = [(k.encode(), v.encode()) for k, v in AUTH.items()] + [(b"Title", raw)]
    r = await client.post("/push", content="成功".encode(), headers=headers)
    assert r.status_code == 200
    assert sb.delivered(OWNER)[0]["text"] == "构建\n\n成功"


async def test_markdown_flag_applies_the_wechat_filter(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    md = "**build** ok ![logo](http://x/logo.png)\n##### small\n*成功*"
    await client.post("/push", content=md.encode(), headers={**AUTH, "Markdown": "yes"})
    await client.post("/push", content=md.encode(), headers=AUTH)
    first, second = (d["text"] for d in sb.delivered(OWNER))
    assert first == "**build** ok \nsmall\n成功"
    assert second == md  # without the flag the text goes out verbatim


async def test_ntfy_json_body_with_topic_as_alias(
    client: httpx.AsyncClient, sb: Sandbox, account: Any, store: Store
) -> None:
    sb.user_says(ALICE, "hi")
    store.set_alias(account.bot_id, ALICE, "alice")
    payload = {
        "topic": "alice",
        "title": "Backup",
        "message": "nightly backup ok",
        "tags": ["white_check_mark"],
        "priority": 3,
        "click": "https://example.org/b",
    }
    r = await client.post("/push", json=payload, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["to"] == ALICE
    (got,) = sb.delivered(ALICE)
    assert got["text"] == "✅ Backup\n\nnightly backup ok\n\nhttps://example.org/b"
    # posted with curl -d (form content type) it is still recognised as JSON
    r = await client.post(
        "/push/alice",
        content=json.dumps({"message": "second"}).encode(),
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert sb.delivered(ALICE)[-1]["text"] == "second"


async def test_apprise_json_with_an_inline_attachment(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    png = _png()
    payload = {
        "version": "1.0",
        "title": "Camera",
        "message": "motion at the door",
        "type": "warning",
        "attachments": [
            {
                "filename": "door.png",
                "base64": base64.b64encode(png).decode(),
                "mimetype": "image/png",
            }
        ],
    }
    r = await client.post("/push", json=payload, headers=AUTH)
    assert r.status_code == 200, r.text
    assert len(r.json()["ids"]) == 2
    text, image = sb.delivered(OWNER)
    assert text["text"] == "⚠️ Camera\n\nmotion at the door"
    assert image["kind"] == "image" and image["sha256"] == hashlib.sha256(png).hexdigest()


async def test_apprise_api_body_and_format(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    r = await client.post(
        "/push",
        json={"body": "*成功* done", "title": "job", "format": "markdown", "type": "success"},
        headers=AUTH,
    )
    assert r.status_code == 200
    assert sb.delivered(OWNER)[0]["text"] == "✅ job\n\n成功 done"


async def test_put_binary_sends_image_and_file(
    client: httpx.AsyncClient, sb: Sandbox, account: object, serve_config: Config
) -> None:
    sb.user_says(OWNER, "hi")
    png = _png()
    r = await client.put("/push", content=png, headers={**AUTH, "Filename": "graph.png"})
    assert r.status_code == 200, r.text
    report = b"%PDF-1.4 not really\n" * 50
    r = await client.put(
        "/push",
        content=report,
        headers={
            **AUTH,
            "Filename": "../../report.pdf",
            "Title": "Report",
            "Message": "weekly numbers",
        },
    )
    assert r.status_code == 200, r.text
    image, text, file = sb.delivered(OWNER)
    assert image["kind"] == "image" and image["sha256"] == hashlib.sha256(png).hexdigest()
    assert text["text"] == "Report\n\nweekly numbers"
    assert file["kind"] == "file" and file["file_name"] == "report.pdf"
    assert file["sha256"] == hashlib.sha256(report).hexdigest()
    spooled = list((serve_config.home / "spool").rglob("report.pdf"))
    assert len(spooled) == 1 and spooled[0].stat().st_mode & 0o777 == 0o600
    # an image posted with its content type and no name
    r = await client.post("/push", content=png, headers={**AUTH, "Content-Type": "image/png"})
    assert r.status_code == 200
    assert sb.delivered(OWNER)[-1]["kind"] == "image"


# ------------------------------------------------------------------------------ webhooks

ALERTMANAGER_SAMPLE: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}:{alertname="HighCPU"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "ilinkbot",
    "groupLabels": {"alertname": "HighCPU"},
    "commonLabels": {"alertname": "HighCPU", "job": "node", "severity": "critical"},
    "commonAnnotations": {"summary": "CPU above 90%"},
    "externalURL": "http://alertmanager:9093",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "HighCPU",
                "instance": "web-1:9100",
                "job": "node",
                "severity": "critical",
            },
            "annotations": {
                "summary": "CPU above 90%",
                "description": "web-1 has been above 90% for 5 minutes",
            },
            "startsAt": "2024-05-01T12:03:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=cpu",
            "fingerprint": "a1b2c3",
        },
        {
            "status": "firing",
            "labels": {
                "alertname": "HighCPU",
                "instance": "web-2:9100",
                "job": "node",
                "severity": "critical",
            },
            "annotations": {"summary": "CPU above 90%"},
            "startsAt": "2024-05-01T12:04:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=cpu",
            "fingerprint": "d4e5f6",
        },
    ],
}


async def test_alertmanager_payload_becomes_a_readable_message(
    client: httpx.AsyncClient, sb: Sandbox, account: Any, store: Store
) -> None:
    sb.user_says(ALICE, "hi")
    store.set_alias(account.bot_id, ALICE, "oncall")
    r = await client.post("/hooks/alertmanager/oncall", json=ALERTMANAGER_SAMPLE, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "delivered" and r.json()["to"] == ALICE
    (got,) = sb.delivered(ALICE)
    assert got["text"] == (
        "🔥 [FIRING:2] HighCPU\n\n"
        "CPU above 90%\n\n"
        "• HighCPU: CPU above 90%\n"
        "  web-1 has been above 90% for 5 minutes\n"
        "  instance=web-1:9100\n"
        "  since 2024-05-01 12:03 UTC\n"
        "  http://prometheus:9090/graph?g0.expr=cpu\n"
        "• HighCPU: CPU above 90%\n"
        "  instance=web-2:9100\n"
        "  since 2024-05-01 12:04 UTC\n"
        "  http://prometheus:9090/graph?g0.expr=cpu\n"
        "http://alertmanager:9093"
    )
    resolved = json.loads(json.dumps(ALERTMANAGER_SAMPLE))
    resolved["status"] = "resolved"
    resolved["alerts"] = resolved["alerts"][:1]
    resolved["alerts"][0].update(status="resolved", endsAt="2024-05-01T12:30:00Z")
    r = await client.post("/hooks/alertmanager/oncall", json=resolved, headers=AUTH)
    assert r.status_code == 200
    assert sb.delivered(ALICE)[-1]["text"].startswith(
        "✅ [RESOLVED:1] HighCPU\n\n• HighCPU: CPU above 90%\n"
    )
    assert "resolved 2024-05-01 12:30 UTC" in sb.delivered(ALICE)[-1]["text"]


async def test_grafana_webhook_uses_its_title_and_values(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    grafana = {
        "receiver": "ilinkbot",
        "status": "firing",
        "orgId": 1,
        "state": "alerting",
        "title": "[FIRING:1] DiskFull (db-1)",
        "message": "long default text",
        "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull"},
        "commonAnnotations": {},
        "externalURL": "http://grafana:3000/",
        "version": "1",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DiskFull", "host": "db-1"},
                "annotations": {"summary": "disk / is 97% full"},
                "startsAt": "2024-05-01T08:00:00+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "valueString": "[ var='A' labels={host=db-1} value=97 ]",
                "panelURL": "http://grafana:3000/d/abc?viewPanel=2",
                "generatorURL": "http://grafana:3000/alerting/1/edit",
            }
        ],
    }
    r = await client.post("/hooks/grafana", json=grafana, headers=AUTH)
    assert r.status_code == 200, r.text
    assert sb.delivered(OWNER)[0]["text"] == (
        "🔥 [FIRING:1] DiskFull (db-1)\n\n"
        "• DiskFull: disk / is 97% full\n"
        "  value: [ var='A' labels={host=db-1} value=97 ]\n"
        "  host=db-1\n"
        "  since 2024-05-01 06:00 UTC\n"
        "  http://grafana:3000/d/abc?viewPanel=2"
    )


# ------------------------------------------------------------------------------ outcomes


async def test_held_push_answers_202_held_and_goes_out_when_the_user_writes(
    sb: Sandbox, store: Store, serve_config: Config, account: Any
) -> None:
    gw = Gateway(
        replace(serve_config, reply_quota=1),
        token=TOKEN,
        store=store,
        transport=sb.transport(),
        catch_up_seconds=0.2,
    )
    app = create_app(gw)
    with no_real_waiting():
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as c:
            sb.user_says(OWNER, "hi")
            first = await c.post("/push", content=b"one", headers=AUTH)
            assert first.status_code == 200 and first.json()["state"] == "delivered"
            held = await c.post("/push", content=b"two", headers=AUTH)
            assert held.status_code == 202, held.text
            body = held.json()
            assert body["ok"] is False and body["state"] == "held"
            assert "window" in body["reason"] or "quota" in body["reason"]
            row = store.get_outbox(body["id"])
            assert row is not None and row.state.value == "held"
            assert [d["text"] for d in sb.delivered(OWNER)] == ["one"]

            sb.user_says(OWNER, "back")  # opens the window for one message: the held one
            after = await c.post("/push", content=b"three", headers=AUTH)
            assert after.status_code == 202 and after.json()["state"] == "held"
            assert [d["text"] for d in sb.delivered(OWNER)] == ["one", "two"]
    await gw.aclose()


async def test_server_refusal_ret_minus_2_is_held_too(
    client: httpx.AsyncClient, sb: Sandbox, account: object
) -> None:
    sb.user_says(OWNER, "hi")
    sb.advance(25 * 3600)  # the server's window closed; our prediction does not know
    r = await client.post("/push", content=b"late", headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "held"
    assert "ret=-2" in r.json()["reason"]


async def test_unconfirmed_is_202(client: httpx.AsyncClient, sb: Sandbox, account: object) -> None:
    sb.user_says(OWNER, "hi")
    sb.configure(omit_message_id=True)
    r = await client.post("/push", content=b"maybe", headers=AUTH)
    assert r.status_code == 202 and r.json()["state"] == "unconfirmed"


# ------------------------------------------------------------------------------ errors


async def test_errors_are_one_line_json_with_the_right_status(
    client: httpx.AsyncClient, sb: Sandbox, account: Any, store: Store
) -> None:
    sb.user_says(OWNER, "hi")
    cases = [
        (client.post("/push/nobody", content=b"x", headers=AUTH), 404, "unknown recipient"),
        (client.post("/push/bob@im.wechat", content=b"x", headers=AUTH), 409, "never written"),
        (client.post("/push", content=b"   ", headers=AUTH), 422, "nothing to send"),
        (
            client.post(
                "/push", content=b"{bad", headers={**AUTH, "Content-Type": "application/json"}
            ),
            422,
            "JSON",
        ),
        (client.post("/push", json={"foo": 1}, headers=AUTH), 422, "no message"),
        (
            client.post(
                "/push", json={"message": "x", "attachments": [{"url": "http://a/b"}]}, headers=AUTH
            ),
            422,
            "not fetched",
        ),
        (client.put("/push", content=b"", headers=AUTH), 422, "empty upload"),
        (client.post("/hooks/alertmanager", json={"alerts": "no"}, headers=AUTH), 422, "alerts"),
        (client.post("/hooks/alertmanager", content=b"[1", headers=AUTH), 422, "JSON"),
        (
            client.post(
                "/push", content=b"x" * (300 * 1024), headers={**AUTH, "Content-Type": "text/plain"}
            ),
            413,
            "too large",
        ),
        (client.get("/push", headers=AUTH), 405, "not allowed"),
        (client.get("/nowhere", headers=AUTH), 404, "no route"),
        (client.post("/push?account=zzz@im.bot", content=b"x", headers=AUTH), 404, "no account"),
        (client.post("/login/code", json={"code": "12"}, headers=AUTH), 409, "no login"),
        (client.post("/login/code", json={"code": "ab"}, headers=AUTH), 422, "digits"),
    ]
    for request, status, words in cases:
        r = await request
        assert r.status_code == status, (status, r.text)
        body = r.json()
        assert body["ok"] is False and body["status"] == status
        assert words.lower() in body["error"].lower(), body
        assert "\n" not in body["error"]
    assert sb.delivered() == []


async def test_no_account_and_expired_session_are_503(
    client: httpx.AsyncClient, sb: Sandbox, store: Store
) -> None:
    r = await client.post("/push", content=b"x", headers=AUTH)
    assert r.status_code == 503 and "ilinkbot login" in r.json()["error"]
    from ilinkbot.testing import sandbox_login

    acc = await sandbox_login(sb, store, owner=OWNER)
    sb.user_says(OWNER, "hi")
    sb.expire_session(acc.bot_id)
    r = await client.post("/push", content=b"x", headers=AUTH)
    assert r.status_code == 503 and r.json()["reason"] == "session_expired"
    r = await client.post("/push", content=b"x", headers=AUTH)
    assert r.status_code == 503 and r.json()["reason"] == "session_expired"
