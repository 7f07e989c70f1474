"""Malformed server answers, generated with hypothesis, interleaved with good messages.

getupdates is answered from a script (every other endpoint by the strict sandbox), and
the real :class:`bot.runner.Runner` polls it. The script behaves like a server: a batch
is served again until the client acknowledges it with the batch's cursor, so a batch the
client cannot store would come back forever. Whole answers that are not JSON objects
(invalid UTF-8, truncated JSON, ...) are served once, as a broken proxy would.

For every example: the loop survives and keeps polling, each bad entry is logged and
kept in the inbox (dead, "malformed"), and the good message after it is handled.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ilinkbot.bot.app import Bot
from ilinkbot.bot.config import Config
from ilinkbot.bot.inbound import _scrub
from ilinkbot.bot.runner import Runner
from ilinkbot.ilink.sandbox import Sandbox
from ilinkbot.store import Store
from ilinkbot.testing import capture_logs, no_real_waiting, sandbox_login

USER = "writer@im.wechat"

# ---------------------------------------------------------------------------- strategies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb"]),  # valid JSON escapes, not valid Unicode
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
huge_ints = st.one_of(
    st.integers(min_value=2**64, max_value=2**200), st.integers(max_value=-1, min_value=-(2**200))
)
MESSAGE_FIELDS = [
    "seq",
    "message_id",
    "from_user_id",
    "to_user_id",
    "create_time_ms",
    "session_id",
    "message_type",
    "message_state",
    "item_list",
    "context_token",
]


def _good_entry(n: int) -> dict[str, Any]:
    return {
        "seq": n,
        "message_id": 10**17 + n,
        "from_user_id": f"bad{n}@im.wechat",
        "to_user_id": "x@im.bot",
        "create_time_ms": 1_700_000_000_000,
        "session_id": "s",
        "message_type": 1,
        "message_state": 2,
        "item_list": [{"type": 1, "text_item": {"text": f"bad {n}"}}],
        "context_token": f"AARbad{n}xxxxxxxxxxxx",
    }


@st.composite
def bad_entries(draw: st.DrawFn, n: int) -> Any:
    """One entry of ``msgs`` that a correct server would never send."""
    kind = draw(
        st.sampled_from(
            ["wrong_type", "missing", "unknown_item", "huge_int", "not_object", "bad_items"]
        )
    )
    entry = _good_entry(n)
    if kind == "wrong_type":
        for key in draw(st.lists(st.sampled_from(MESSAGE_FIELDS), min_size=1, unique=True)):
            entry[key] = draw(json_values.filter(lambda v, k=key: type(v) is not type(entry[k])))
        entry["from_user_id"] = draw(
            st.one_of(
                st.integers(),
                st.lists(st.text()),
                st.just("bad\udc80@im.wechat"),
                st.none(),
                st.dictionaries(st.text(), st.text()),
            )
        )
    elif kind == "missing":
        for key in draw(st.lists(st.sampled_from(MESSAGE_FIELDS), min_size=1, unique=True)):
            entry.pop(key, None)
        entry.pop("from_user_id", None)
    elif kind == "unknown_item":
        t = draw(
            st.integers(min_value=-5, max_value=10**6).filter(
                lambda x: x not in (1, 2, 3, 4, 5, 11, 12)
            )
        )
        entry["item_list"] = [
            {"type": t, draw(st.text(min_size=1, max_size=10)): draw(json_values)}
        ]
    elif kind == "huge_int":
        for key in draw(
            st.lists(
                st.sampled_from(
                    ["seq", "message_id", "create_time_ms", "message_type", "message_state"]
                ),
                min_size=1,
                unique=True,
            )
        ):
            entry[key] = draw(huge_ints)
        entry["item_list"][0]["create_time_ms"] = draw(huge_ints)
    elif kind == "not_object":
        return draw(json_scalars | st.lists(json_scalars, max_size=3))
    else:
        entry["item_list"] = draw(json_values)
        entry["context_token"] = draw(json_values)
    entry["x_example"] = n  # unknown field, kept: entries of different examples differ
    return entry


def _answer(msgs: Any, cursor: str) -> bytes:
    return json.dumps(
        {"ret": 0, "msgs": msgs, "get_updates_buf": cursor, "longpolling_timeout_ms": 35000}
    ).encode()


@st.composite
def bad_bodies(draw: st.DrawFn) -> bytes:
    """A whole getupdates answer that is not a usable JSON object."""
    kind = draw(st.sampled_from(["utf8", "truncated", "not_object", "bad_ret", "garbage"]))
    good = _answer([_good_entry(0)], "cX")
    if kind == "utf8":
        at = draw(st.integers(min_value=0, max_value=len(good)))
        return (
            good[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"]))
            + good[at:]
        )
    if kind == "truncated":
        return good[: draw(st.integers(min_value=0, max_value=len(good) - 1))]
    if kind == "not_object":
        return json.dumps(draw(json_scalars | st.lists(json_values, max_size=3))).encode()
    if kind == "bad_ret":
        ret = draw(
            st.one_of(
                st.text(min_size=1).filter(lambda s: not s.strip().lstrip("-").isdigit()),
                st.floats(allow_nan=False),
                st.lists(st.integers()),
            )
        )
        return json.dumps({"ret": ret, "msgs": []}).encode()
    return draw(st.binary(min_size=1, max_size=40))


# ---------------------------------------------------------------------------- the fake


class ScriptedUpdates(httpx.AsyncBaseTransport):
    """getupdates from ``steps``; everything else from the sandbox.

    A step is ``("raw", bytes)`` (served once) or ``("msgs", entries)`` (served with the
    cursor ``<prefix><k+1>`` until a request carries that cursor)."""

    def __init__(self, sb: Sandbox, steps: list[tuple[str, Any]], prefix: str) -> None:
        self.inner = sb.transport()
        self.prefix = prefix  # cursors of this script: "<prefix><k>"
        self.steps = steps
        self.pos = 0
        self.polls = 0
        self.served: list[int] = [0] * len(steps)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/ilink/bot/getupdates"):
            return await self.inner.handle_async_request(request)
        self.polls += 1
        cursor = json.loads(await request.aread()).get("get_updates_buf", "")
        k = cursor.removeprefix(self.prefix)
        if cursor.startswith(self.prefix) and k.isdigit():
            self.pos = max(self.pos, int(k))
        if self.pos >= len(self.steps):
            await asyncio.sleep(0.01)
            return httpx.Response(200, content=_answer([], f"{self.prefix}{self.pos}"))
        kind, value = self.steps[self.pos]
        self.served[self.pos] += 1
        if kind == "raw":
            self.pos += 1
            return httpx.Response(200, content=value)
        return httpx.Response(200, content=_answer(value, f"{self.prefix}{self.pos + 1}"))


# ---------------------------------------------------------------------------- the test

_shared: dict[str, Any] = {}


def _world() -> dict[str, Any]:
    """One sandbox, store and account for all examples (each example runs a new Runner)."""
    if not _shared:
        tmp = tempfile.mkdtemp(prefix="ilinkbot-malformed-")
        sb = Sandbox(quota=1_000_000, longpoll_seconds=0.05)
        home = Path(tmp) / "home"
        store = Store.open(None, home=home)
        account = asyncio.run(sandbox_login(sb, store))
        _shared.update(sb=sb, home=home, store=store, account=account, n=0)
    return _shared


async def _run_script(
    w: dict[str, Any], steps: list[tuple[str, Any]], last_text: str
) -> tuple[ScriptedUpdates, list[Any]]:
    sb: Sandbox = w["sb"]
    w["scripts"] = w.get("scripts", 0) + 1
    fake = ScriptedUpdates(sb, steps, prefix=f"s{w['scripts']}c")
    config = Config(
        home=w["home"],
        base_url=sb.api_base,
        cdn_base_url=sb.cdn_base,
        poll_lease_seconds=30,
        shutdown_grace_seconds=2,
    )
    bot = Bot(config, transport=fake, store=w["store"])
    seen: list[str] = []

    @bot.message()
    async def echo(msg: Any, ctx: Any) -> None:
        seen.append(msg.text)
        if msg.user == USER:  # the bad entries carry context tokens the server never issued
            await msg.reply(f"echo: {msg.text}")

    runner = Runner(bot, install_signals=False)
    with capture_logs() as logs, no_real_waiting():
        task = asyncio.create_task(runner.serve())
        try:
            async with asyncio.timeout(8):
                while last_text not in seen:
                    assert not task.done(), f"the loop ended: {task.result()!r}"
                    if max(fake.served) > 5:
                        stuck = [e["event"] for e in logs if e["log_level"] != "debug"]
                        raise AssertionError(
                            f"the loop is stuck on one batch (served {fake.served} times; "
                            f"{stuck[-3:]}): {steps}"
                        )
                    await asyncio.sleep(0.01)
                polls = fake.polls
                while fake.polls < polls + 2:  # and it keeps polling
                    assert not task.done(), f"the loop ended: {task.result()!r}"
                    await asyncio.sleep(0.01)
        finally:
            runner.request_stop()
            await asyncio.wait_for(task, 10)
    return fake, logs


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_malformed_answers_are_logged_kept_and_the_next_good_one_is_handled(
    data: st.DataObject,
) -> None:
    w = _world()
    sb: Sandbox = w["sb"]
    store: Store = w["store"]
    account = w["account"]
    w["n"] += 1
    n = w["n"]
    bad_steps = data.draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("raw"), bad_bodies()),
                st.tuples(st.just("msgs"), st.lists(bad_entries(n), min_size=1, max_size=3)),
            ),
            min_size=1,
            max_size=3,
        )
    )
    j = 0
    for kind, value in bad_steps:  # distinct entries get distinct ids (same id = same msg)
        for e in value if kind == "msgs" else []:
            if isinstance(e, dict) and e.get("message_id") == 10**17 + n:
                j += 1
                e["message_id"] = 10**17 + n * 1000 + j
    first = sb.user_says(USER, f"first {n}", bot_id=account.bot_id)
    last = sb.user_says(USER, f"last {n}", bot_id=account.bot_id)
    steps: list[tuple[str, Any]] = [("msgs", [first]), *bad_steps, ("msgs", [last])]
    before = {r.id for r in store.dead_inbox(account.bot_id)}

    fake, logs = asyncio.run(_run_script(w, steps, f"last {n}"))

    texts = [d["text"] for d in sb.delivered(USER)]
    assert texts.count(f"echo: first {n}") == 1 and texts.count(f"echo: last {n}") == 1
    # a batch is served again only while the client has not stored it: at most twice
    assert max(fake.served) <= 2, f"a batch came back {max(fake.served)} times: {steps}"
    bad_msgs = [e for kind, v in bad_steps if kind == "msgs" for e in v]
    # every entry without a usable sender is logged and kept in the inbox, dead, "malformed"
    no_sender = [
        e
        for e in bad_msgs
        if not (
            isinstance(e, dict) and isinstance(e.get("from_user_id"), str) and e["from_user_id"]
        )
    ]
    if no_sender:
        events = [e["event"] for e in logs]
        assert "malformed_message" in events or "malformed_message_kept" in events, events
        dead = store.dead_inbox(account.bot_id)
        new_dead = [r for r in dead if r.id not in before]
        dicts = {json.dumps(e, sort_keys=True) for e in no_sender if isinstance(e, dict)}
        assert len(new_dead) >= len(dicts), "the malformed entries were not kept"
        for e in no_sender:  # the same non-object entry twice is one row (same content id)
            if not isinstance(e, dict):
                assert any(r.raw == {"malformed": _scrub(e)} for r in dead), e
        for r in new_dead:
            assert "malformed" in (r.last_error or "")
            assert isinstance(r.raw, dict)  # what the server sent is kept for inspection
    assert sb.violations() == []


def test_an_answer_nested_too_deep_to_decode_is_a_protocol_error_and_the_loop_survives() -> None:
    """A getupdates answer nested 100,000 deep (served twice, as a server repeating it would)
    used to escape the loop as RecursionError: ``ilinkbot run`` exited 1, crash-looping."""
    w = _world()
    sb: Sandbox = w["sb"]
    w["n"] += 1
    n = w["n"]
    deep = b'{"ret":0,"msgs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    last = sb.user_says(USER, f"after deep {n}", bot_id=w["account"].bot_id)
    steps: list[tuple[str, Any]] = [("raw", deep), ("raw", deep), ("msgs", [last])]

    _, logs = asyncio.run(_run_script(w, steps, f"after deep {n}"))

    assert f"echo: after deep {n}" in [d["text"] for d in sb.delivered(USER)]
    failed = [e for e in logs if e["event"] == "poll_failed"]
    assert len(failed) == 2 and "getupdates" in failed[0]["error"], failed
