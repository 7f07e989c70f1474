"""All of ilinkbot's deliberate pauses (retry back-off, poll pacing) go through here,
so tests can turn real waiting off, as stamina does.

``ILINKBOT_NO_REAL_WAIT=1`` in the environment, or :func:`set_real_waiting(False)`,
makes every pause return at once (still yielding to the event loop).
"""

from __future__ import annotations

import asyncio
import os
import random

__all__ = ["backoff", "pause", "real_waiting", "set_real_waiting"]

_enabled = os.environ.get("ILINKBOT_NO_REAL_WAIT", "") not in ("1", "true", "yes")


def set_real_waiting(enabled: bool) -> None:
    global _enabled
    _enabled = enabled


def real_waiting() -> bool:
    return _enabled


async def pause(seconds: float) -> None:
    await asyncio.sleep(seconds if _enabled and seconds > 0 else 0)


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Full-jitter exponential back-off for ``attempt`` (1, 2, ...)."""
    return random.uniform(0, min(cap, base * 2 ** max(0, attempt - 1)))
