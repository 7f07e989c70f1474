"""The one redaction processor: secrets are masked by key, by value and by shape."""

from __future__ import annotations

import io
import json
import secrets

from ilinkbot.ilink.log import MASK, configure_logging, get_logger, redact, register_secret


def test_masks_by_key_value_and_shape_in_json_lines() -> None:
    token = "bot-" + secrets.token_hex(16)
    ctx = secrets.token_urlsafe(32)
    register_secret(token)
    register_secret(ctx)
    out = io.StringIO()
    configure_logging(json=True, stream=out, level="debug")
    log = get_logger("t")
    log.info("e1", bot_token="anything", context_token="also", aes_key="k", user="u@im.wechat")
    log.info(
        "e2",
        url=f"http://h/x?t={token}&y=1",
        note=f"prefix{ctx}suffix",
        headers={"Authorization": "Bearer zzz"},
        items=[{"aeskey": "x"}, f"{ctx}"],
    )
    log.info("e3", msg="Bearer abc.def-ghi")
    try:
        raise RuntimeError(f"server said {token}")
    except RuntimeError:
        log.exception("e4")
    text = out.getvalue()
    assert token not in text and ctx not in text and "zzz" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["bot_token"] == MASK and lines[0]["user"] == "u@im.wechat"
    assert lines[1]["url"] == f"http://h/x?t={MASK}&y=1"
    assert lines[1]["note"] == f"prefix{MASK}suffix"
    assert lines[1]["items"] == [{"aeskey": MASK}, MASK]
    assert lines[2]["msg"] == f"Bearer {MASK}"
    assert "server said ***" in lines[3]["exception"]


def test_many_secrets_stay_correct() -> None:
    many = [secrets.token_urlsafe(24) for _ in range(3000)]
    for s in many:
        register_secret(s)
    sample = f"a {many[0]} b {many[1500]}c {many[-1]}"
    assert redact(sample) == f"a {MASK} b {MASK}c {MASK}"
    assert redact("nothing secret here, just words") == "nothing secret here, just words"


def test_console_lines_for_people() -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    get_logger("t").warning("held", to="u@im.wechat", bot_token="x")
    line = out.getvalue()
    assert "held" in line and "u@im.wechat" in line and "bot_token=***" in line
    assert not line.startswith("{")
