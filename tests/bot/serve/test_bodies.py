"""Body parsing without a server: each format, and what is refused."""

from __future__ import annotations

import base64

import pytest

from ilinkbot.bot.serve.alerts import alertmanager_notification
from ilinkbot.bot.serve.bodies import BodyError, Notification, media_kind, parse_push
from ilinkbot.bot.serve.markdown import wechat_markdown


def parse(
    body: bytes = b"",
    *,
    method: str = "POST",
    ctype: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> Notification:
    return parse_push(method, ctype, body, headers or {}, query or {})


def test_plain_text_title_forms() -> None:
    for headers, query in (
        ({"Title": "T"}, {}),
        ({"X-Title": "T"}, {}),
        ({"t": "T"}, {}),
        ({}, {"title": "T"}),
        ({}, {"t": "T"}),
    ):
        n = parse(b"body", headers=headers, query=query)
        assert (n.text, n.title, n.attachments) == ("body", "T", ())


def test_message_from_query_when_the_body_is_empty() -> None:
    n = parse(query={"m": "from query"})
    assert n.text == "from query"
    with pytest.raises(BodyError, match="nothing to send"):
        parse(b"\n  \n")


def test_rfc2047_title_from_ntfy_clients() -> None:
    n = parse(
        b"x", headers={"Title": "=?UTF-8?B?" + base64.b64encode("构建".encode()).decode() + "?="}
    )
    assert n.title == "构建"


def test_json_only_with_known_keys_otherwise_text() -> None:
    n = parse(b'{"temperature": 21}', ctype="application/x-www-form-urlencoded")
    assert n.text == '{"temperature": 21}'  # plain text that happens to be JSON
    with pytest.raises(BodyError, match="no message"):
        parse(b'{"temperature": 21}', ctype="application/json")
    with pytest.raises(BodyError, match="must be an object"):
        parse(b"[1, 2]", ctype="application/json")


def test_ntfy_attach_url_is_a_link_never_fetched() -> None:
    n = parse(
        b'{"message": "see", "attach": "https://example.org/a.png"}', ctype="application/json"
    )
    assert n.text == "see\n\nAttachment: https://example.org/a.png" and n.attachments == ()


def test_binary_post_without_a_name_is_an_upload() -> None:
    n = parse(b"\xff\xd8\xff\xe0 jpeg bytes", ctype="application/octet-stream")
    (att,) = n.attachments
    assert att.kind == "image" and att.name == "upload.bin"
    n = parse(b"\x00\x01\x02\xff", ctype="text/plain")
    assert n.attachments[0].kind == "file"


def test_put_names_are_sanitised() -> None:
    n = parse(b"data", method="PUT", headers={"Filename": "..\\..\\etc/passwd"})
    assert n.attachments[0].name == "passwd"
    n = parse(b"data", method="PUT", query={"filename": ".."})
    assert n.attachments[0].name == "upload.bin"


def test_media_kind() -> None:
    assert media_kind("a.png", None) == "image"
    assert media_kind("a.mp4", None) == "video"
    assert media_kind("a.txt", None) == "file"
    assert media_kind("x", "video/mp4") == "video"
    assert media_kind("x", "image/svg+xml") == "file"  # WeChat shows raster images only
    assert media_kind("x", None, b"\x00\x00\x00\x18ftypmp42") == "video"


def test_wechat_markdown_keeps_code_fences() -> None:
    src = "```\n![x](y) *中*\n```\n![x](y) *中* *en*"
    assert wechat_markdown(src) == "```\n![x](y) *中*\n```\n 中 *en*"


def test_legacy_grafana_alert() -> None:
    n = alertmanager_notification(
        {
            "title": "[Alerting] Load",
            "ruleName": "Load",
            "state": "alerting",
            "message": "load high",
            "evalMatches": [{"metric": "load1", "value": 9.5}],
            "ruleUrl": "http://grafana/d/1",
        }
    )
    assert n.title == "🔥 [Alerting] Load"
    assert n.text == "load high\n• load1 = 9.5\nhttp://grafana/d/1"


def test_many_alerts_are_counted_not_listed() -> None:
    alerts = [{"status": "firing", "labels": {"alertname": "Up", "i": str(i)}} for i in range(25)]
    n = alertmanager_notification({"status": "firing", "alerts": alerts, "truncatedAlerts": 5})
    assert n.title == "🔥 [FIRING:25] Up"
    assert n.text is not None and n.text.endswith("…and 10 more")
    assert n.text.count("• Up") == 20


def test_webhook_mixed_firing_and_resolved() -> None:
    n = alertmanager_notification(
        {
            "status": "firing",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "A"}},
                {"status": "resolved", "labels": {"alertname": "B"}},
            ],
        }
    )
    assert n.text == "Firing:\n• A\n\nResolved:\n• B"


def test_not_a_webhook() -> None:
    with pytest.raises(BodyError):
        alertmanager_notification([1])
    with pytest.raises(BodyError):
        alertmanager_notification({"alerts": [1]})


def test_multipart_is_refused_clearly() -> None:
    with pytest.raises(BodyError, match="multipart"):
        parse(b"--x\r\n", ctype="multipart/form-data; boundary=x")
