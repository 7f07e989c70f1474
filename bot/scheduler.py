"""Schedules inside the bot: cron expressions (croniter) in a time zone, on a clock
that tests can control."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from croniter import croniter

from ilinkbot.ilink.log import get_logger

__all__ = ["Clock", "Job", "RealClock", "Scheduler"]

_log = get_logger("ilinkbot.scheduler")


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass
class Job:
    cron: str
    func: Callable[..., Any]
    tz: str | None = None
    account: str | None = None
    name: str = ""
    #: Run once for every account polled by this process, instead of for one account.
    per_account: bool = False
    next_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ValueError(f"invalid cron expression {self.cron!r}")
        self.zone = ZoneInfo(self.tz) if self.tz else UTC
        self.name = self.name or getattr(self.func, "__name__", "job")
        if self.account and self.per_account:
            raise ValueError(f"job {self.name!r}: give account= or per_account=True, not both")

    def next_after(self, moment: datetime) -> datetime:
        local = moment.astimezone(self.zone)
        nxt: datetime = croniter(self.cron, local).get_next(datetime)
        return nxt.astimezone(UTC)


class Scheduler:
    """Fires each job at its cron times. ``run_job`` is awaited for each firing."""

    def __init__(
        self, jobs: list[Job], run_job: Callable[[Job], Awaitable[None]], clock: Clock | None = None
    ) -> None:
        self.jobs = jobs
        self.run_job = run_job
        self.clock: Clock = clock or RealClock()

    async def run(self, stop: asyncio.Event) -> None:
        if not self.jobs:
            return
        now = self.clock.now()
        for job in self.jobs:
            job.next_at = job.next_after(now)
        while not stop.is_set():
            now = self.clock.now()
            due = [j for j in self.jobs if j.next_at is not None and j.next_at <= now]
            for job in due:
                _log.info(
                    "schedule_fired",
                    job=job.name,
                    at=job.next_at.isoformat() if job.next_at else None,
                )
                job.next_at = job.next_after(now)
                try:
                    await self.run_job(job)
                except Exception:
                    _log.exception("schedule_failed", job=job.name)
            if due:
                continue
            soonest = min(j.next_at for j in self.jobs if j.next_at is not None)
            wait = (soonest - now).total_seconds()
            sleeper = asyncio.ensure_future(self.clock.sleep(min(wait, 60.0)))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in (sleeper, stopper):
                t.cancel()
