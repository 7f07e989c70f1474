"""``ilinkbot serve``: the HTTP push gateway and web login page (see the README)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..exitcodes import Exit
from .common import App

__all__ = ["register"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="HTTP push gateway and web login page",
        description="Serve POST /push (ntfy/Apprise style), Alertmanager/Grafana webhooks and "
        "a QR login page at /login. Every route except the page needs the token of "
        "`ilinkbot serve --show-token` (Authorization: Bearer TOKEN, or ?auth=TOKEN).",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default: {DEFAULT_HOST}, loopback only)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port (default: {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--poll",
        action="store_true",
        help="also run the receive loop here (stores messages, releases held pushes)",
    )
    p.add_argument(
        "--bot", metavar="MODULE:BOT", help="with --poll: the bot whose handlers get the messages"
    )
    p.add_argument(
        "--account",
        action="append",
        metavar="ID",
        help="with --poll: only poll these accounts (repeatable)",
    )
    p.add_argument(
        "--webhook",
        metavar="URL",
        help="POST each inbound message (with --poll) and each delivery state change to URL "
        "as signed JSON (see the README: Webhooks)",
    )
    p.add_argument(
        "--webhook-secret-file",
        metavar="PATH",
        help="with --webhook: the HMAC secret (default: $ILINKBOT_HOME/webhook-secret, made "
        "on first use)",
    )
    p.add_argument(
        "--show-token",
        action="store_true",
        help="print the token (made now if there is none) and exit",
    )
    p.set_defaults(func=run_serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_serve(app: App) -> int:
    from ..serve.auth import load_or_create_token, token_path

    a = app.args
    home = app.config.home
    if a.show_token:
        token, created = load_or_create_token(home)
        path = token_path(home)
        app.emit({"ok": True, "token": token, "path": str(path), "created": created}, token)
        if not app.json:
            app.say(f"(stored in {path}, mode 0600)")
        return int(Exit.OK)
    if a.bot and not a.poll:
        app.fail("--bot needs --poll (the bot's handlers run in the receive loop)", Exit.USAGE)
    if a.account and not a.poll:
        app.fail("--account needs --poll", Exit.USAGE)
    webhook = _webhook(app) if a.webhook or a.webhook_secret_file else None

    token, created = load_or_create_token(home)
    try:
        sock = _listen(a.host, a.port)
    except OSError as exc:
        app.fail(f"cannot listen on {a.host}:{a.port}: {exc.strerror or exc}", Exit.ERROR)
    port = sock.getsockname()[1]
    host_text = f"[{a.host}]" if ":" in a.host else a.host
    url = f"http://{host_text}:{port}"
    bot = _bot(app) if a.poll else None
    info = {
        "ok": True,
        "url": url,
        "login_page": f"{url}/login",
        "poll": bool(a.poll),
        "token_file": str(token_path(home)),
        "token_created": created,
    }
    if not _is_loopback(a.host):
        app.say(
            f"warning: listening on {a.host}, not loopback: anyone who can reach it and "
            "knows the token can push; put it behind TLS (a reverse proxy)"
        )
    app.emit(info)
    if not app.json:
        app.say(f"ilinkbot serve: listening on {url}")
        app.say(f"  push:  curl -H 'Authorization: Bearer TOKEN' -d 'hello' {url}/push")
        app.say(f"  login: {url}/login?auth=TOKEN")
        app.say(
            "  token: `ilinkbot serve --show-token`"
            + (" (a new one was made now)" if created else "")
        )
        if a.poll:
            app.say("  receive loop: on" + (f" (bot {a.bot})" if a.bot else ""))
    return asyncio.run(_serve(app, sock, token, bot, webhook))


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    addr = infos[0][4]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def _webhook(app: App) -> tuple[str, str]:
    """``(url, secret)`` of ``--webhook``; a bad URL or an unreadable secret is a usage error."""
    from urllib.parse import urlsplit

    from ..serve.webhooks import WebhookSecretError, load_secret

    a = app.args
    if not a.webhook:
        app.fail("--webhook-secret-file needs --webhook", Exit.USAGE)
    parts = urlsplit(a.webhook)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        app.fail(f"--webhook: expected an http(s) URL, got {a.webhook!r}", Exit.USAGE)
    path = Path(a.webhook_secret_file).expanduser() if a.webhook_secret_file else None
    try:
        secret = load_secret(app.config.home, path)
    except WebhookSecretError as exc:
        app.fail(str(exc), Exit.USAGE)
    return a.webhook, secret


def _bot(app: App) -> Any:
    from ..app import Bot

    if app.args.bot:
        from ..loader import load_bot

        bot = load_bot(app.args.bot)
    else:
        bot = Bot(app.config)  # no handlers: messages are stored, held pushes released
    bot.configure(app.config, store=app.store)
    return bot


@contextlib.contextmanager
def _no_uvicorn_signals(server: Any) -> Iterator[None]:
    yield


async def _serve(
    app: App, sock: socket.socket, token: str, bot: Any, webhook: tuple[str, str] | None
) -> int:
    import uvicorn

    from ..serve.app import Gateway, create_app
    from ..serve.poller import Poller
    from ..serve.webhooks import Webhooks

    poller = Poller(bot, accounts=app.args.account) if bot is not None else None

    def on_login(_result: Any) -> None:
        if poller is not None:
            poller.accounts_changed()

    gateway = Gateway(app.config, token=token, store=app.store, on_login=on_login)
    hooks = Webhooks(*webhook) if webhook is not None else None
    if hooks is not None:
        hooks.attach(gateway.events)
        if bot is not None:
            hooks.attach(bot.runtime.events)
        hooks.start()
    asgi = create_app(gateway)
    config = uvicorn.Config(
        asgi,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        # We handle SIGINT/SIGTERM ourselves (stop the poller too, exit 0).
        def capture_signals(self) -> Any:
            return _no_uvicorn_signals(self)

    server = Server(config)

    def stop(signum: int) -> None:
        server.should_exit = True
        if poller is not None:
            poller.request_stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop, sig)
    poll_task = asyncio.create_task(poller.run()) if poller is not None else None
    try:
        await server.serve(sockets=[sock])
    finally:
        if poller is not None and poll_task is not None:
            poller.request_stop()
            await poll_task
        if hooks is not None:
            await hooks.aclose()
        sock.close()
    if not server.started:
        sys.stderr.write("ilinkbot: the HTTP server did not start\n")
        return int(Exit.ERROR)
    return int(Exit.OK)
