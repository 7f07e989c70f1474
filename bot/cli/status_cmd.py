"""``ilinkbot status``: accounts, owners, known users and their reply windows; with
``--summary``, the counts alone (a few aggregate reads, at any number of accounts)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from typing import Any

from ilinkbot.ilink.errors import ApiError, IlinkError, SessionExpired
from ilinkbot.store import Account

from ..accounts import find_account, mark_expired
from ..exitcodes import Exit
from ..status import account_status, summary
from .common import App

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "status",
        parents=[common],
        help="accounts, owners, known users and their reply windows",
        description="Every account with its state and owner, and its known users.",
    )
    s.add_argument("--account", metavar="ID", help="only this account (raw or normalised id)")
    s.add_argument(
        "--check", action="store_true", help="verify each token with one light server call"
    )
    s.add_argument(
        "--summary",
        action="store_true",
        help="only the counts: accounts and outbox rows by state, polled accounts, workers",
    )
    s.set_defaults(func=cmd_status)


async def _check(app: App, account: Account) -> tuple[str, str | None]:
    """One light authenticated call: ``ok``, ``expired``, ``unchecked`` or ``error``."""
    if not account.token:
        return "unchecked", "no token stored"
    user = account.owner_user_id
    if not user:
        peers = app.store.list_peers(account.bot_id)
        user = peers[0].user_id if peers else None
    if not user:
        return "unchecked", "no owner or user to check with"
    peer = app.store.get_peer(account.bot_id, user)
    async with app.ilink_client(account.base_url, account.token) as client:
        try:
            await client.get_config(user, peer.context_token if peer else None)
        except SessionExpired:
            return "expired", None
        except ApiError as exc:
            # -4 right after binding means "no typing ticket yet", not a stale token (§8.4);
            # any answer other than -14 shows the token was accepted.
            return "ok", f"getconfig ret={exc.ret}"
        except IlinkError as exc:
            return "error", str(exc)
    return "ok", None


def cmd_status(app: App) -> int:
    store = app.store
    wanted = app.args.account
    if app.args.summary:
        counts = summary(store)
        app.emit({"ok": True, "summary": counts}, _summary_text(counts))
        return Exit.OK if counts["accounts"] else Exit.NO_ACCOUNT
    accounts = store.list_accounts()
    if wanted:
        acc = find_account(store, wanted)
        if acc is None:
            app.fail(f"no account {wanted!r}; see `ilinkbot status`", Exit.NO_ACCOUNT)
        accounts = [acc]
    code = Exit.OK
    checks: dict[str, tuple[str, str | None]] = {}
    if app.args.check:
        checks = asyncio.run(_check_all(app, accounts))
        for acc in accounts:
            result = checks.get(acc.bot_id)
            if result is None:
                continue
            if result[0] == "expired":
                if acc.state != "expired":
                    mark_expired(store, acc.bot_id)
                code = Exit.SESSION_EXPIRED
            elif result[0] == "ok" and acc.state == "expired":
                store.set_account_state(acc.bot_id, "active")
            elif result[0] == "error" and code == Exit.OK:
                code = Exit.ERROR
        accounts = [store.get_account(a.bot_id) or a for a in accounts]

    now = datetime.now(UTC)
    default = store.default_account()
    items: list[dict[str, Any]] = []
    lines: list[str] = []
    for acc in accounts:
        item = account_status(store, app.config, acc, default=default, now=now)
        if acc.bot_id in checks:
            item["check"], item["check_detail"] = checks[acc.bot_id]
        items.append(item)
        lines.extend(_status_lines(item, now))

    if not items:
        app.emit(
            {"ok": True, "accounts": []},
            "No account: run `ilinkbot login`.",
        )
        return Exit.NO_ACCOUNT
    counts = summary(store)
    if len(items) > 1:
        lines.append(_summary_text(counts))
    app.emit({"ok": code == Exit.OK, "summary": counts, "accounts": items}, "\n".join(lines))
    return code


def _summary_text(counts: dict[str, Any]) -> str:
    def by_state(d: dict[str, int]) -> str:
        return ", ".join(f"{n} {state}" for state, n in sorted(d.items())) or "none"

    return (
        f"accounts: {by_state(counts['accounts'])}; polled now: {counts['polled_accounts']} "
        f"by {counts['workers']} workers; outbox: {by_state(counts['outbox'])}; "
        f"failed inbound: {counts['dead_inbox']}"
    )


async def _check_all(app: App, accounts: list[Any]) -> dict[str, tuple[str, str | None]]:
    out: dict[str, tuple[str, str | None]] = {}
    for acc in accounts:
        if str(acc.state) == "logged_out":
            continue
        out[acc.bot_id] = await _check(app, acc)
    return out


def _status_lines(item: dict[str, Any], now: datetime) -> list[str]:
    state = item["state"]
    head = f"{item['account']}  {state}  owner: {item['owner'] or '(unknown)'}"
    if item["default"]:
        head += "  (default for pushes)"
    lines = [head]
    if "check" in item:
        check, detail = item["check"], item.get("check_detail")
        if check == "expired":
            lines.append("  check: session EXPIRED (-14): run `ilinkbot login`")
        elif check == "ok":
            lines.append("  check: token accepted")
        else:
            lines.append(f"  check: {check}" + (f" ({detail})" if detail else ""))
    elif state == "expired":
        lines.append("  the session expired: run `ilinkbot login`")
    elif state == "logged_out":
        lines.append("  logged out (history kept): `ilinkbot login` to use it again")
    users = item["users"]
    if not users:
        lines.append("  users: none yet (a user must write to the bot first)")
    for u in users:
        name = u["user_id"] + (f" ({u['alias']})" if u["alias"] else "")
        if u["context_token_age_seconds"] is None:
            lines.append(f"  {name}: has not written yet; cannot be messaged")
            continue
        age = _age(u["context_token_age_seconds"])
        if u["window_open"]:
            window = f"{u['window_messages_left']} messages, {_age(u['window_seconds_left'])} left"
        else:
            window = f"closed ({u['window_reason']})"
        lines.append(f"  {name}: context token {age} old; reply window {window}")
    if item["held_messages"]:
        lines.append(f"  {item['held_messages']} messages held until the user writes")
    if item["dead_inbox"]:
        lines.append(f"  {item['dead_inbox']} inbound messages failed their handler")
    return lines


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        h, m = divmod(seconds // 60, 60)
        return f"{h}h{m:02d}m"
    d, h = divmod(seconds // 3600, 24)
    return f"{d}d{h}h"
