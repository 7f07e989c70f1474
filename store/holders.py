"""Who holds an outbox claim: ``"<host>/<pid>"``.

A claim normally lasts its lease (``send_lease_seconds``). When the holder's process is
gone on this same host (Ctrl-C, a kill, a crash), waiting out the lease only delays the
next sender, so a claimer takes such a claim over at once. Claims from other hosts, or
whose process cannot be checked, still wait for their lease.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["holder_gone", "this_holder"]

_HOST = socket.gethostname()


def this_holder() -> str:
    """This process as a claim holder (the pid is read each time: forks differ)."""
    return f"{_HOST}/{os.getpid()}"


def holder_gone(holder: str | None) -> bool:
    """True only when ``holder`` names a process of this host that no longer runs."""
    if not holder or os.name != "posix":  # os.kill(pid, 0) is not a probe on Windows
        return False
    host, _, raw_pid = holder.rpartition("/")
    if host != _HOST or not raw_pid.isdigit():
        return False
    pid = int(raw_pid)
    if pid == os.getpid() or pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it runs, as another user
        return False
    # A zombie (killed, not yet reaped by its parent) holds nothing either.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] == "Z"
