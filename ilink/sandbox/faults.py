"""Injected faults: HTTP 500/400, connection resets before or after processing, delays.

Random faults follow a seeded :class:`~.state.FaultSpec` per endpoint; queued faults are
consumed one per request, in order, before any random one.
"""

from __future__ import annotations

import math
import random
from collections import deque

from ilinkbot.ilink.log import get_logger

from .model import FAULT_ENDPOINTS, FAULT_KINDS, is_number
from .state import FaultSpec, State

__all__ = ["Faults", "check_faults"]

log = get_logger("ilink.sandbox")


def check_faults(faults: list[str]) -> None:
    """Raise ``ValueError`` unless every entry is a fault :meth:`Sandbox.queue_faults` knows."""
    for fault in faults:
        kind, colon, arg = fault.partition(":")
        if kind not in FAULT_KINDS or (colon and kind != "delay"):
            raise ValueError(f"unknown fault {fault!r}")
        if colon:
            try:
                seconds = float(arg)
            except ValueError:
                seconds = math.nan
            if not 0 <= seconds < math.inf:
                raise ValueError(f"fault {fault!r}: the delay is not a number of seconds")


def _fault_endpoint(endpoint: str) -> str:
    name = endpoint.removeprefix("msg/")
    if name not in FAULT_ENDPOINTS:
        raise ValueError(f"unknown fault endpoint {endpoint!r}")
    return name


class Faults:
    """Set, queue and draw the faults kept in a :class:`~.state.State`."""

    def __init__(self, state: State) -> None:
        self._state = state

    def set(
        self,
        endpoint: str,
        http_5xx_rate: float,
        reset_rate: float,
        reset_after_processing: float,
        delay_rate: float,
        delay_seconds: float,
        seed: int | None,
    ) -> None:
        name = _fault_endpoint(endpoint)
        rates = (http_5xx_rate, reset_rate, reset_after_processing, delay_rate)
        if not all(is_number(r) and 0 <= r <= 1 for r in rates):
            raise ValueError("fault rates must be numbers between 0 and 1")
        if not (is_number(delay_seconds) and 0 <= delay_seconds < math.inf):
            raise ValueError("delay_seconds must be a number of seconds")
        spec = FaultSpec(
            http_5xx_rate=http_5xx_rate,
            reset_rate=reset_rate,
            reset_after_processing=reset_after_processing,
            delay_rate=delay_rate,
            delay_seconds=delay_seconds,
            rng=random.Random(seed),
        )
        with self._state.lock:
            self._state.fault_specs[name] = spec

    def queue(self, endpoint: str, faults: list[str]) -> None:
        name = _fault_endpoint(endpoint)
        check_faults(faults)
        with self._state.lock:
            self._state.fault_queue.setdefault(name, deque()).extend(faults)

    def clear(self) -> None:
        with self._state.lock:
            self._state.fault_specs.clear()
            self._state.fault_queue.clear()

    def pick(self, endpoint: str) -> tuple[str, float] | None:
        """The fault for this request, if any: ``(kind, delay seconds)``; recorded."""
        st = self._state
        with st.lock:
            for name in (endpoint, "*"):
                queue = st.fault_queue.get(name)
                if queue:
                    fault = queue.popleft()
                    kind, _, arg = fault.partition(":")
                    spec = st.fault_specs.get(endpoint) or st.fault_specs.get("*")
                    delay = float(arg) if arg else (spec.delay_seconds if spec else 2.0)
                    return self._fire(endpoint, kind, delay)
            spec = st.fault_specs.get(endpoint) or st.fault_specs.get("*")
            if spec is None:
                return None
            r = spec.rng.random()
            if r < spec.http_5xx_rate:
                return self._fire(endpoint, "500", 0.0)
            if r < spec.http_5xx_rate + spec.reset_rate:
                after = spec.rng.random() < spec.reset_after_processing
                return self._fire(endpoint, "reset_after" if after else "reset_before", 0.0)
            if spec.delay_rate and spec.rng.random() < spec.delay_rate:
                return self._fire(endpoint, "delay", spec.delay_seconds)
            return None

    def _fire(self, endpoint: str, kind: str, delay: float) -> tuple[str, float]:
        self._state.faults_fired.append(
            {"endpoint": endpoint, "fault": kind, "time": self._state.now()}
        )
        log.info("sandbox.fault", endpoint=endpoint, fault=kind)
        return kind, delay
