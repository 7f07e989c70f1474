"""One place decides how the bot layer's async code calls the blocking store: ``Service``
(``read`` inline on SQLite, ``write`` in place when it need not wait, ``call`` in a thread).
Nothing else in ``bot/`` hands work to a thread, but ``call_flexibly`` running a user's plain
``def`` handler."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {("bot/service.py", None), ("bot/dispatcher.py", "call_flexibly")}
THREADS = ("to_thread", "run_in_executor")


def test_only_the_service_sends_store_calls_to_threads() -> None:
    found = []
    for path in sorted((ROOT / "bot").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(), rel)
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]:
            if (rel, None) in ALLOWED or (rel, func.name) in ALLOWED:
                continue
            found += [
                f"{rel}:{node.lineno} in {func.name}"
                for node in ast.walk(func)
                if isinstance(node, ast.Attribute) and node.attr in THREADS
            ]
    assert found == [], "use Service.read/write/call instead:\n" + "\n".join(found)
