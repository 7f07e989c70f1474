"""``ilinkbot run BOT``: poll and handle messages until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from .common import App

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a bot (module:bot or path/to/bot.py)",
        description="Poll every active account (or those given) and dispatch messages to "
        "the bot's handlers. Stops cleanly on SIGINT/SIGTERM. Never starts a QR login.",
    )
    p.add_argument("bot", help="module:attr, module, path/to/bot.py or path/to/bot.py:attr")
    p.add_argument(
        "--account",
        action="append",
        metavar="ID",
        help="only these accounts (repeatable; default: every active account)",
    )
    p.add_argument(
        "--skip-backlog",
        action="store_true",
        help="mark messages stored before this start (e.g. by `send` catch-ups) handled "
        "without running handlers, and say how many (config: skip_backlog)",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="run against the built-in sandbox and chat with the bot here",
    )
    p.set_defaults(func=run)


def run(app: App) -> int:
    from ..loader import load_bot

    bot = load_bot(app.args.bot)
    if not bot.configured or app.args.config:
        bot.configure(app.config)
    if app.args.sandbox:
        from ilinkbot.ilink.log import configure_logging

        from ..simulator import run_in_sandbox

        if not app.args.log_level:  # keep the chat readable; logs only for problems
            configure_logging(json=True if app.args.log_json else None, level="warning")
        return asyncio.run(run_in_sandbox(bot))
    config = bot.config.with_overrides(skip_backlog=True) if app.args.skip_backlog else bot.config
    bot.configure(config, store=app.store)
    return int(bot.run(accounts=app.args.account))
