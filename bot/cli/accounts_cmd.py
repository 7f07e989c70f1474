"""``ilinkbot accounts``: the logged-in accounts, and the default one pushes use.

With several active accounts a push never guesses: it needs ``--account`` (``?account=``)
or the default set here. The default is kept in the store, so the CLI, ``serve`` and
``send_to_wechat()`` all see it.
"""

from __future__ import annotations

import argparse
from typing import Any

from ilinkbot.store import Account

from ..exitcodes import Exit
from .common import App

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "accounts",
        parents=[common],
        help="list accounts; choose the default one with `accounts default ID`",
        description="Without an action: every stored account, the default marked with *.",
    )
    p.set_defaults(func=run_list)
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    d = acts.add_parser(
        "default",
        parents=[common],
        help="show, set (ID) or clear (--clear) the account pushes use by default",
        description="The account a push uses when it names none (no --account, no "
        "?account=). Needed when several accounts are logged in.",
    )
    what = d.add_mutually_exclusive_group()
    what.add_argument("id", nargs="?", metavar="ID", help="account id (raw or normalised)")
    what.add_argument("--clear", action="store_true", help="forget the default")
    d.set_defaults(func=run_default)


def _describe(acc: Account, default: str | None) -> dict[str, Any]:
    return {
        "account": acc.bot_id,
        "state": str(acc.state),
        "owner": acc.owner_user_id,
        "default": acc.bot_id == default,
    }


def run_list(app: App) -> int:
    store = app.store
    default = store.default_account()
    items = [_describe(a, default) for a in store.list_accounts()]
    lines = [
        f"{'*' if i['default'] else ' '} {i['account']}  {i['state']}  "
        f"owner: {i['owner'] or '(unknown)'}"
        for i in items
    ]
    if default is not None and not any(i["default"] for i in items):
        lines.append(f"the default account {default} no longer exists")
    if not items:
        app.emit(
            {"ok": True, "default": default, "accounts": []}, "No account: run `ilinkbot login`."
        )
        return Exit.NO_ACCOUNT
    app.emit({"ok": True, "default": default, "accounts": items}, "\n".join(lines))
    return Exit.OK


def run_default(app: App) -> int:
    store = app.store
    a = app.args
    if a.clear:
        store.set_default_account(None)
        app.emit({"ok": True, "default": None}, "no default account: with several, name one")
        return Exit.OK
    if a.id is None:
        default = store.default_account()
        app.emit({"ok": True, "default": default}, default or "no default account")
        return Exit.OK
    acc = app.account(a.id)  # must exist and be logged in: a push would fail otherwise
    store.set_default_account(acc.bot_id)
    app.emit({"ok": True, "default": acc.bot_id}, f"default account: {acc.bot_id}")
    return Exit.OK
