"""``ilinkbot`` entry point: parse, configure logging, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from ilinkbot.ilink import __version__

from ..config import LOG_LEVELS
from ..exitcodes import Exit
from .common import App
from .exits import report_for

__all__ = ["build_parser", "main"]

# Each module adds its subcommands with ``register(subparsers, parent)``. Only the module
# of the command being run is imported (all of them for --help): a cron `ilinkbot send`
# does not pay for the QR, web or sandbox code.
_COMMAND_MODULES = {
    "sandbox": "ilinkbot.bot.cli.sandbox_cmd",
    "login": "ilinkbot.bot.cli.login_cmd",
    "status": "ilinkbot.bot.cli.status_cmd",
    "logout": "ilinkbot.bot.cli.login_cmd",
    "send": "ilinkbot.bot.cli.send_cmd",
    "outbox": "ilinkbot.bot.cli.send_cmd",
    "run": "ilinkbot.bot.cli.run_cmd",
    "serve": "ilinkbot.bot.cli.serve_cmd",
    "users": "ilinkbot.bot.cli.users_cmd",
    "accounts": "ilinkbot.bot.cli.accounts_cmd",
    "mcp": "ilinkbot.bot.cli.mcp_cmd",
}


def _modules_for(argv: Sequence[str] | None) -> list[str]:
    words = list(sys.argv[1:] if argv is None else argv)
    for i, word in enumerate(words):
        if word in _COMMAND_MODULES and (i == 0 or words[i - 1] != "--config"):
            return [_COMMAND_MODULES[word]]
    if "--version" in words:
        return []
    return list(dict.fromkeys(_COMMAND_MODULES.values()))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"ilinkbot: error: {message}\n")
        raise SystemExit(Exit.USAGE)


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Global options, accepted before or after the subcommand.

    The subcommand copy uses SUPPRESS defaults so it never overwrites a value given
    before the subcommand name.
    """
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", metavar="PATH", help="config file", **d)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout", **d)
    p.add_argument("--log-json", action="store_true", help="log JSON lines", **d)
    p.add_argument("--log-level", choices=LOG_LEVELS, type=str.lower, **d)
    return p


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    common = _common_options(suppress=True)
    parser = _Parser(
        prog="ilinkbot",
        description="WeChat bots and pushes over Tencent's ilink protocol.",
        parents=[_common_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"ilinkbot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _modules_for(argv):
        importlib.import_module(name).register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return Exit.USAGE
    json_out = bool(getattr(args, "json", False))
    # Here, not at the top: `ilinkbot --version` and `--help` need no logging.
    from ilinkbot.ilink.log import configure_logging, get_logger

    app: App | None = None
    try:
        app = App.from_args(args)
        # One-shot commands stay quiet unless asked; services log what they do.
        quiet = args.command not in ("run", "serve", "sandbox")
        level = args.log_level or app.config.log_level or ("warning" if quiet else "info")
        configure_logging(json=True if args.log_json else None, level=level)
        code = int(args.func(app))
    except (Exception, KeyboardInterrupt) as exc:
        known = report_for(exc)
        if known is None:
            get_logger("ilinkbot.cli").exception("unexpected_error")
            known = (f"unexpected error: {type(exc).__name__}: {exc}", Exit.ERROR, {})
        code = _report(json_out, *known)
    finally:
        if app is not None:
            app.close()
    return code


def _report(json_out: bool, message: str, code: Exit, fields: dict[str, Any]) -> int:
    if json_out:
        obj = {"ok": False, "error": message, "exit_code": int(code), **fields}
        sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stderr.write(f"ilinkbot: {message}\n")
    return int(code)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
