"""``ilinkbot serve --poll --webhook URL`` as a real process: a message received by its
receive loop and the delivery of a push arrive at a receiver, signed with the home's secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ilinkbot.ilink.sandbox import Sandbox, SandboxServer
from tests.conftest import OWNER

from . import test_process as proc

server = proc.server  # fixtures: the sandbox over HTTP, and the CLI's environment
env = proc.env


class _Hook(BaseHTTPRequestHandler):
    got: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).got.append((self.headers.get("X-Ilinkbot-Signature") or "", body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    handler = type("Hook", (_Hook,), {"got": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/in", handler.got
    httpd.shutdown()
    httpd.server_close()


def test_serve_poll_webhook_sends_messages_and_deliveries(
    env: dict[str, str],
    server: tuple[Sandbox, SandboxServer],
    receiver: tuple[str, list[tuple[str, bytes]]],
) -> None:
    sb, srv = server
    url, got = receiver
    home = Path(env["ILINKBOT_HOME"])
    acc = proc.login(sb, srv, home)
    token = proc.token_of(env)
    serving = proc.Serving(env, "--poll", "--webhook", url)
    try:
        sb.user_says(OWNER, "hello hook")

        def events(kind: str) -> list[dict[str, Any]]:
            return [e for e in (json.loads(b) for _s, b in got) if e["event"] == kind]

        proc.wait_until(lambda: events("message.received"), 20, "message.received")
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=serving.url, timeout=20) as http:
            r = http.post("/push", content=b"pushed", headers=auth)
            assert r.status_code == 200, r.text
        proc.wait_until(lambda: events("delivery.changed"), 20, "delivery.changed")
    finally:
        code = serving.stop()
    assert code == 0, serving.output()
    (msg,) = events("message.received")
    assert msg["account"] == acc.bot_id and msg["text"] == "hello hook" and msg["user"] == OWNER
    (delivery,) = events("delivery.changed")
    assert delivery["id"] == r.json()["id"] and delivery["state"] == "delivered"
    secret = (home / "webhook-secret").read_text().strip()
    for signature, body in got:
        assert signature == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert acc.token not in body.decode()
    assert secret not in serving.output()
