"""Markdown as WeChat shows it (PROTOCOL.md §5.2), for pushes that say they are Markdown."""

from __future__ import annotations

import re

__all__ = ["wechat_markdown"]

_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_SMALL_HEADING = re.compile(r"^#{5,6} ", re.MULTILINE)
_CJK = re.compile("[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_EMPHASIS = re.compile(r"(\*\*\*|___|\*|_)(?=\S)(.+?)\1")


def wechat_markdown(text: str) -> str:
    """Markdown as WeChat shows it (PROTOCOL.md §5.2): fenced code verbatim; images removed;
    ``#####``/``######`` headings unmarked; ``*x*``/``_x_`` unmarked around CJK text only."""
    out: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            out.append(line)
            continue
        if in_fence:
            out.append(line)
            continue
        line = _IMAGE.sub("", line)
        line = _SMALL_HEADING.sub("", line)
        line = _EMPHASIS.sub(lambda m: m.group(2) if _CJK.search(m.group(2)) else m.group(0), line)
        out.append(line)
    return "\n".join(out)
