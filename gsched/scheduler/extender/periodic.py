"""A background thread that runs an object's `step()` at a steady interval.

The leader's two planners (the slot-boundary moves of `planner` and the CP-SAT re-plans
of `replanner`) and the lease renewal of `leader` share it. A failed step is logged and
the loop goes on: planning must never take the server down.
"""

from __future__ import annotations

import logging
import threading
from typing import TypeVar

log = logging.getLogger(__name__)

P = TypeVar("P", bound="PeriodicStep")


class PeriodicStep:
    """Mixin: `start(interval_s)` runs `self.step()` every interval until `stop()`.

    Subclasses set `self._stop = threading.Event()` and `self._thread = None` in their
    constructor and name their thread with `thread_name`.
    """

    thread_name = "gsched-periodic"
    _stop: threading.Event
    _thread: threading.Thread | None

    def step(self) -> object:
        raise NotImplementedError

    def start(self: P, interval_s: float = 10.0, now: bool = False) -> P:
        """Run `step()` every `interval_s` (and once at once when `now`)."""

        def run_step() -> None:
            try:
                self.step()
            except Exception:
                log.exception("%s: step failed", self.thread_name)

        def loop() -> None:
            if now:
                run_step()
            while not self._stop.wait(interval_s):
                run_step()

        self._thread = threading.Thread(target=loop, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
