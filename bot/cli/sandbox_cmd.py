"""``ilinkbot sandbox``: run the built-in ilink emulator as a real HTTP server."""

from __future__ import annotations

import argparse
from typing import Any

from .common import App

__all__ = ["register"]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sandbox",
        parents=[common],
        help="run the offline ilink emulator (API + CDN) until stopped",
        description="Serve the ilink API and CDN emulator; admin routes under /_sandbox/.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8780, help="0 picks a free port")
    p.add_argument("--quota", type=int, default=10, help="bot messages per user message")
    p.add_argument("--window", type=int, default=86400, help="reply window in seconds")
    p.set_defaults(func=run)


def run(app: App) -> int:
    from ilinkbot.ilink.sandbox import run_server

    a = app.args
    run_server(host=a.host, port=a.port, quota=a.quota, window_seconds=a.window)
    return 0
