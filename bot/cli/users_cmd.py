"""``ilinkbot users``: the people an account knows, and names (aliases) for them.

An alias names a recipient for ``ilinkbot send --to NAME`` and ``POST /push/NAME``.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from ..exitcodes import Exit
from ..status import iso
from ..window import window_state
from .common import App

__all__ = ["ALIAS_RE", "register"]

#: Aliases appear in URL paths (``/push/NAME``): keep them URL-safe and unlike user ids.
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "users",
        parents=[common],
        help="list known users; name them with `users alias`",
        description="Without an action: the users of an account (who wrote to the bot, or "
        "who has an alias), with alias and reply window.",
    )
    p.add_argument("--account", metavar="ID", help="the account (raw or normalised id)")
    p.set_defaults(func=run_list)
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    a = acts.add_parser(
        "alias",
        parents=[common],
        help="name a user: users alias NAME USER_ID",
        description="Give USER_ID the name NAME on this account (replaces the "
        "user's previous name). Use it as `send --to NAME` or /push/NAME.",
    )
    a.add_argument("name", metavar="NAME")
    a.add_argument("user_id", metavar="USER_ID", help="a user id such as abc@im.wechat")
    a.add_argument(
        "--account",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="the account (raw or normalised id)",
    )
    a.set_defaults(func=run_alias)
    u = acts.add_parser("unalias", parents=[common], help="remove a name: users unalias NAME")
    u.add_argument("name", metavar="NAME")
    u.add_argument(
        "--account",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="the account (raw or normalised id)",
    )
    u.set_defaults(func=run_unalias)


def run_list(app: App) -> int:
    account = app.account(active_only=False)
    cfg = app.config
    now = datetime.now(UTC)
    items = []
    for peer in app.store.list_peers(account.bot_id):
        ws = window_state(
            peer, quota=cfg.reply_quota, window_seconds=cfg.reply_window_seconds, now=now
        )
        items.append(
            {
                "user_id": peer.user_id,
                "alias": peer.alias,
                "owner": peer.user_id == account.owner_user_id,
                "has_context_token": bool(peer.context_token),
                "last_inbound_at": iso(peer.last_inbound_at),
                "window_open": ws.open,
                "window_messages_left": ws.messages_left,
            }
        )
    lines = [f"{'ALIAS':<16} {'USER':<32} WINDOW"]
    for i in items:
        window = (
            f"open, {i['window_messages_left']} left"
            if i["window_open"]
            else "closed"
            if i["has_context_token"]
            else "never wrote"
        )
        who = i["user_id"] + (" (owner)" if i["owner"] else "")
        lines.append(f"{i['alias'] or '-':<16} {who:<32} {window}")
    human = "\n".join(lines) if items else f"account {account.bot_id} knows no users yet"
    app.emit({"ok": True, "account": account.bot_id, "users": items}, human)
    return int(Exit.OK)


def run_alias(app: App) -> int:
    from ilinkbot.store import InvalidTransitionError

    name, user = app.args.name.strip(), app.args.user_id.strip()
    if not ALIAS_RE.match(name) or "@" in name:
        app.fail(
            f"bad alias {name!r}: use letters, digits, '.', '_' or '-' (at most 64, "
            "starting with a letter or digit)",
            Exit.USAGE,
        )
    if "@" not in user:
        app.fail(
            f"bad user id {user!r}: user ids look like xxx@im.wechat (see `ilinkbot users`)",
            Exit.USAGE,
        )
    account = app.account(active_only=False)
    store = app.store
    known = store.get_peer(account.bot_id, user)
    try:
        store.set_alias(account.bot_id, user, name)
    except InvalidTransitionError:
        holder = store.resolve_alias(account.bot_id, name)
        app.fail(
            f"alias {name!r} already names {holder}; remove it first with "
            f"`ilinkbot users unalias {name}`",
            Exit.USAGE,
        )
    note = None
    if known is None or not known.context_token:
        note = (
            f"{user} has not written to this bot yet: pushes to {name} fail (409 / exit "
            f"{int(Exit.NO_CONTEXT)}) until they do"
        )
    app.emit(
        {"ok": True, "account": account.bot_id, "alias": name, "user_id": user, "note": note},
        f"{name} -> {user}" + (f"\nnote: {note}" if note else ""),
    )
    return int(Exit.OK)


def run_unalias(app: App) -> int:
    name = app.args.name.strip()
    account = app.account(active_only=False)
    store = app.store
    user = store.resolve_alias(account.bot_id, name)
    if user is None:
        app.fail(f"no alias {name!r} on {account.bot_id}", Exit.NOT_FOUND)
    store.set_alias(account.bot_id, user, None)
    app.emit(
        {"ok": True, "account": account.bot_id, "alias": name, "user_id": user, "removed": True},
        f"{name} removed (was {user})",
    )
    return int(Exit.OK)
