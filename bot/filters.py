"""Message filters: any callable ``(Message) -> bool`` works; these builders cover the
common cases and combine with ``&``, ``|`` and ``~`` (as in aiogram)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "Filter",
    "command",
    "file",
    "from_user",
    "image",
    "regex",
    "startswith",
    "text",
    "video",
    "voice",
]


class Filter:
    """A predicate over messages, composable with ``&``, ``|`` and ``~``."""

    def __init__(self, fn: Callable[[Any], bool], name: str = "filter") -> None:
        self.fn = fn
        self.name = name

    def __call__(self, msg: Any) -> bool:
        return bool(self.fn(msg))

    def __and__(self, other: Callable[[Any], bool]) -> Filter:
        return Filter(lambda m: self(m) and bool(other(m)), f"({self.name} & {_name(other)})")

    def __or__(self, other: Callable[[Any], bool]) -> Filter:
        return Filter(lambda m: self(m) or bool(other(m)), f"({self.name} | {_name(other)})")

    def __invert__(self) -> Filter:
        return Filter(lambda m: not self(m), f"~{self.name}")

    def __repr__(self) -> str:
        return f"<Filter {self.name}>"


def _name(f: Callable[[Any], bool]) -> str:
    return getattr(f, "name", getattr(f, "__name__", "callable"))


#: Messages whose body is text (typed, or a voice transcript).
text = Filter(lambda m: bool(m.text) and m.kind in ("text", "voice"), "text")
image = Filter(lambda m: m.kind == "image", "image")
file = Filter(lambda m: m.kind == "file", "file")
video = Filter(lambda m: m.kind == "video", "video")
voice = Filter(lambda m: m.kind == "voice", "voice")


def startswith(prefix: str, *, ignore_case: bool = False) -> Filter:
    if ignore_case:
        low = prefix.lower()
        return Filter(lambda m: (m.text or "").lower().startswith(low), f"startswith({prefix!r})")
    return Filter(lambda m: (m.text or "").startswith(prefix), f"startswith({prefix!r})")


def regex(pattern: str | re.Pattern[str], flags: int = 0) -> Filter:
    rx = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    return Filter(lambda m: rx.search(m.text or "") is not None, f"regex({rx.pattern!r})")


def from_user(*user_ids: str) -> Filter:
    wanted = set(user_ids)
    return Filter(lambda m: m.user in wanted, f"from_user({', '.join(sorted(wanted))})")


def command(name: str) -> Filter:
    """``/name`` or ``/name args`` (case-insensitive name)."""
    low = name.lower().lstrip("/")
    return Filter(lambda m: m.command == low, f"command({low})")
