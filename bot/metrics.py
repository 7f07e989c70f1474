"""Numbers for ``GET /metrics`` (Prometheus text format, version 0.0.4).

What lives in the store (accounts and outbox rows by state, failed inbound messages, accounts
polled and live workers) is read when scraped; what only this process sees (polls in flight,
send latency, handler failures) is counted here, in one process-wide :data:`METRICS`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["METRICS", "Metrics", "render"]

#: Upper bounds (seconds) of the send latency histogram's buckets.
SEND_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.send_buckets = [0] * (len(SEND_BUCKETS) + 1)  # the last one is +Inf
        self.send_sum = 0.0
        self.handler_failures = 0
        self.dead_lettered = 0
        self._polls: dict[int, Callable[[], int]] = {}

    def observe_send(self, seconds: float) -> None:
        with self._lock:
            self.send_buckets[bisect.bisect_left(SEND_BUCKETS, seconds)] += 1
            self.send_sum += seconds

    def handler_failed(self, *, dead: bool) -> None:
        with self._lock:
            self.handler_failures += 1
            self.dead_lettered += int(dead)

    def snapshot(self) -> tuple[list[int], float, int, int]:
        """Send buckets, send seconds in all, handler failures, dead letters: consistent."""
        with self._lock:
            return (
                list(self.send_buckets),
                self.send_sum,
                self.handler_failures,
                self.dead_lettered,
            )

    def count_polls(self, owner: object, polling: Callable[[], int]) -> None:
        """``polling()`` says how many accounts ``owner`` (a runner) polls right now."""
        self._polls[id(owner)] = polling

    def forget_polls(self, owner: object) -> None:
        self._polls.pop(id(owner), None)

    def polls_in_flight(self) -> int:
        return sum(count() for count in list(self._polls.values()))


METRICS = Metrics()


def render(counts: dict[str, Any], metrics: Metrics = METRICS) -> str:
    """The exposition text for the store's ``counts()`` and this process's ``metrics``."""
    out: list[str] = []

    def family(name: str, kind: str, help_: str) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")

    family("ilinkbot_accounts", "gauge", "Accounts in the store by state.")
    states = dict.fromkeys(("active", "expired", "logged_out"), 0) | counts["accounts"]
    out += [f'ilinkbot_accounts{{state="{s}"}} {n}' for s, n in sorted(states.items())]
    family("ilinkbot_outbox_messages", "gauge", "Outbox rows by state.")
    out += [
        f'ilinkbot_outbox_messages{{state="{s}"}} {n}' for s, n in sorted(counts["outbox"].items())
    ]
    family("ilinkbot_inbox_dead", "gauge", "Inbound messages whose handler failed for good.")
    out.append(f"ilinkbot_inbox_dead {counts['dead_inbox']}")
    family("ilinkbot_polled_accounts", "gauge", "Accounts with a live polling lease (any worker).")
    out.append(f"ilinkbot_polled_accounts {counts['polled_accounts']}")
    family("ilinkbot_workers", "gauge", "Live receive-loop processes sharing this store.")
    out.append(f"ilinkbot_workers {counts['workers']}")
    family("ilinkbot_polls_in_flight", "gauge", "Accounts this process polls right now.")
    out.append(f"ilinkbot_polls_in_flight {metrics.polls_in_flight()}")
    buckets, total, failures, dead = metrics.snapshot()
    family("ilinkbot_send_seconds", "histogram", "sendmessage round trips from this process.")
    cumulative = 0
    for bound, n in zip((*SEND_BUCKETS, float("inf")), buckets, strict=True):
        cumulative += n
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(f'ilinkbot_send_seconds_bucket{{le="{le}"}} {cumulative}')
    out.append(f"ilinkbot_send_seconds_sum {total}")
    out.append(f"ilinkbot_send_seconds_count {cumulative}")
    family("ilinkbot_handler_failures_total", "counter", "Handler attempts that raised.")
    out.append(f"ilinkbot_handler_failures_total {failures}")
    family("ilinkbot_dead_lettered_total", "counter", "Inbound messages dead-lettered here.")
    out.append(f"ilinkbot_dead_lettered_total {dead}")
    return "\n".join(out) + "\n"
