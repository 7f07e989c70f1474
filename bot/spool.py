"""``$ILINKBOT_HOME/spool``: media handed over as bytes (a handler's reply, a file posted to
``serve``), kept on disk until its message is sent, and swept once no message needs it.

A held message can go out days later, when the user writes again, so a file stays as long
as any outbox row that is not ``sent`` or ``dead`` names it. ``run`` and ``serve`` sweep at
start and every hour.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from ilinkbot.ilink.log import get_logger

from .payloads import MediaPayload, payload_from_json
from .service import Service

__all__ = ["GRACE_SECONDS", "SWEEP_EVERY_SECONDS", "keep", "sweep", "sweep_forever"]

_log = get_logger("ilinkbot.spool")

#: A file younger than this is never swept: its row may not be enqueued yet.
GRACE_SECONDS = 3600.0
SWEEP_EVERY_SECONDS = 3600.0
#: Outbox states whose rows may still need their file (failed and unconfirmed can be retried).
_UNFINISHED = ["pending", "sending", "held", "failed", "unconfirmed"]


def keep(home: Path, data: bytes, name: str) -> Path:
    """Store ``data`` as ``spool/<sha256 prefix>/<name>`` (0600; the name is what a file's
    recipient sees) and return the path. The same bytes under the same name are stored once."""
    folder = home / "spool" / hashlib.sha256(data).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / Path(name).name
    if not path.exists():
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    return path


def sweep(
    store: Any, home: Path, *, grace_seconds: float = GRACE_SECONDS, now: float | None = None
) -> list[Path]:
    """Delete spool files that no unfinished outbox row names and that are older than
    ``grace_seconds``; return them. Empty folders go too."""
    root = home / "spool"
    if not root.is_dir():
        return []
    needed: set[str] = set()
    for row in store.list_outbox(state=_UNFINISHED):
        try:
            payload = payload_from_json(row.payload)
        except ValueError:
            continue
        if isinstance(payload, MediaPayload):
            needed.add(os.path.realpath(payload.path))
    cutoff = (time.time() if now is None else now) - grace_seconds
    removed: list[Path] = []
    for path in sorted(root.rglob("*"), reverse=True):  # files before their folders
        try:
            if path.is_dir():
                # (a folder just made by keep() is young: its file is about to arrive)
                if not any(path.iterdir()) and path.stat().st_mtime < cutoff:
                    path.rmdir()
            elif os.path.realpath(path) not in needed and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path)
        except OSError as exc:  # raced with a writer, or permissions: try next time
            _log.warning("spool_sweep_skipped", path=str(path), error=str(exc))
    if removed:
        _log.info("spool_swept", files=len(removed))
    return removed


async def sweep_forever(svc: Service, *, every: float = SWEEP_EVERY_SECONDS) -> None:
    """Sweep now, then every ``every`` seconds, until cancelled."""
    while True:
        try:
            await svc.call(sweep, svc.store, svc.config.home)
        except Exception as exc:  # a sweep must never take the process down
            _log.warning("spool_sweep_failed", error=str(exc))
        await asyncio.sleep(every)
