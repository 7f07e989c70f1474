"""``python -m ilinkbot.ilink.sandbox --host H --port N``: serve until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse

from ilinkbot.ilink.log import configure_logging

from .server import run_server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ilinkbot.ilink.sandbox", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8780, help="0 picks a free port")
    p.add_argument("--redirect-port", type=int, default=0, help="second IDC port (0 = any)")
    p.add_argument("--quota", type=int, default=10, help="bot messages per user message")
    p.add_argument("--window-seconds", type=float, default=86400, help="reply window")
    p.add_argument("--longpoll-seconds", type=float, default=25.0)
    p.add_argument("--qr-poll-seconds", type=float, default=25.0)
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    configure_logging(level=a.log_level)
    run_server(
        host=a.host,
        port=a.port,
        redirect_port=a.redirect_port,
        quota=a.quota,
        window_seconds=a.window_seconds,
        longpoll_seconds=a.longpoll_seconds,
        qr_poll_seconds=a.qr_poll_seconds,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
