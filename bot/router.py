"""``Router``: a pure registry of handlers, error handlers and schedules (as aiogram's).

Routers nest: ``router.include_router(other)`` puts ``other``'s handlers after this
router's own, so a feature can live in its own module with its own router::

    admin = Router(name="admin")

    @admin.command("stats")
    async def stats(msg, ctx): ...

    bot = Bot()
    bot.include_router(admin)

A router runs nothing; :class:`~ilinkbot.bot.app.Bot` is a router plus how to run it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .filters import command as command_filter
from .scheduler import Job

__all__ = ["Handler", "Router"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Handler:
    func: Callable[..., Any]
    filters: tuple[Callable[[Any], bool], ...]
    name: str

    def matches(self, msg: Any) -> bool:
        return all(f(msg) for f in self.filters)


class Router:
    """Handlers, error handlers and schedules, in registration order."""

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or f"router-{id(self):x}"
        self._own_handlers: list[Handler] = []
        self._own_error_handlers: list[Callable[..., Any]] = []
        self._own_jobs: list[Job] = []
        self._children: list[Router] = []
        self._parent: Router | None = None

    # ---- registration ---------------------------------------------------------------------

    def message(self, *filters: Callable[[Any], bool]) -> Callable[[F], F]:
        """Register a handler for messages matching every filter (none: all messages).
        Handlers are tried in registration order; the first match handles the message."""

        def deco(func: F) -> F:
            self._own_handlers.append(Handler(func, filters, getattr(func, "__name__", "handler")))
            return func

        return deco

    def command(self, name: str) -> Callable[[F], F]:
        """Register a handler for ``/name`` (``msg.args`` holds the rest of the line)."""
        return self.message(command_filter(name))

    def error(self, func: F) -> F:
        """Register ``func(exc, msg, ctx)``, called when a handler raises."""
        self._own_error_handlers.append(func)
        return func

    def schedule(
        self,
        cron: str,
        *,
        tz: str | None = None,
        account: str | None = None,
        per_account: bool = False,
        name: str | None = None,
    ) -> Callable[[F], F]:
        """Run ``func(ctx)`` at the times of a cron expression, e.g. ``"0 9 * * *"``: for
        ``account``, or once for every polled account with ``per_account=True``. Without
        either it runs only while there is exactly one account: it never guesses."""

        def deco(func: F) -> F:
            job = Job(cron, func, tz=tz, account=account, name=name or "", per_account=per_account)
            self._own_jobs.append(job)
            return func

        return deco

    def include_router(self, router: Router) -> Router:
        """Nest ``router``: its handlers come after this router's own (and after routers
        included before it). A router can be included once, and never in itself."""
        if router is self or router in self._ancestors():
            raise ValueError(f"including {router.name!r} would make a loop of routers")
        if router._parent is not None:
            raise ValueError(f"router {router.name!r} is already included elsewhere")
        router._parent = self
        self._children.append(router)
        return router

    def _ancestors(self) -> list[Router]:
        found, node = [], self._parent
        while node is not None:
            found.append(node)
            node = node._parent
        return found

    # ---- what the dispatcher and scheduler read ----------------------------------------------

    def _tree(self) -> list[Router]:
        out = [self]
        for child in self._children:
            out.extend(child._tree())
        return out

    @property
    def handlers(self) -> list[Handler]:
        """Every handler of this router and the routers it includes, in matching order."""
        return [h for r in self._tree() for h in r._own_handlers]

    @property
    def error_handlers(self) -> list[Callable[..., Any]]:
        return [h for r in self._tree() for h in r._own_error_handlers]

    @property
    def jobs(self) -> list[Job]:
        return [j for r in self._tree() for j in r._own_jobs]
