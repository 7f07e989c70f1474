"""Message text: split into message-sized chunks that join back to the exact original, and
made encodable."""

from __future__ import annotations

import re

__all__ = ["encodable", "split_text"]

#: What Python makes of text that was not UTF-8: undecodable bytes of argv or stdin
#: (surrogateescape) and JSON's lone "\ud800" escapes. Neither the store nor the wire
#: can encode them.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> tuple[str, int]:
    """``text`` with each lone surrogate replaced by U+FFFD, and how many were."""
    return _LONE_SURROGATE.subn("\ufffd", text)


# A sentence ends after one of these (CJK or Latin), plus any closing quotes/brackets.
_SENTENCE_END = re.compile(r"[。！？!?；;…]+[”’」』）)\]\"']*|\.(?=\s)")


def _cut(window: str) -> int:
    """Where to cut ``window``: after the last paragraph break, else line break, else
    sentence end, else whitespace, each only if it keeps at least half the window
    (so chunks stay large); 0 when none fits."""
    floor = len(window) // 2
    for sep in ("\n\n", "\n"):
        i = window.rfind(sep)
        if i + len(sep) > floor:
            return i + len(sep)
    ends = [m.end() for m in _SENTENCE_END.finditer(window)]
    if ends and ends[-1] > floor:
        return ends[-1]
    i = max(window.rfind(" "), window.rfind("\t"), window.rfind("\u3000"))
    return i + 1 if i + 1 > floor else 0


def split_text(text: str, limit: int = 2000) -> list[str]:
    """Chunks of at most ``limit`` characters, cut on paragraph, line, then sentence
    boundaries (then whitespace, then hard). ``"".join(split_text(t)) == t`` always;
    a cut never falls inside a character (Python strings are code points)."""
    if limit < 1:
        raise ValueError("limit must be positive")
    chunks: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        at = _cut(window) or limit
        # Keep combining marks and emoji joiners with the character before them.
        while 1 < at < len(rest) and _is_combining(rest[at]):
            at -= 1
        chunks.append(rest[:at])
        rest = rest[at:]
    if rest or not chunks:
        chunks.append(rest)
    return chunks


def _is_combining(ch: str) -> bool:
    import unicodedata

    return unicodedata.combining(ch) != 0 or ch in "\u200d\ufe0f"
