"""Progress lines for long work when nobody is watching a terminal.

In CI, under `nohup` or in `kubectl logs`, a live progress bar prints nothing, so a
ten-minute run looked hung. `ProgressLog` prints one line to stderr every `interval_s`
(from a background thread, so a long step with no callbacks still shows it is alive)
while a command works off a terminal; on a terminal it stays silent and the command's
own live display does the job. Runs shorter than one interval print nothing.

    with ProgressLog("simulate") as log:
        log.update("tidal", 3, 10, "seeds")   # per task: done of total
        log.phase("writing the trace")        # or a phase, for work without counts

`GSCHED_PROGRESS_INTERVAL` (seconds) overrides the interval.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

DEFAULT_INTERVAL_S = 10.0


def _interval() -> float:
    try:
        return max(0.01, float(os.environ.get("GSCHED_PROGRESS_INTERVAL", "")))
    except ValueError:
        return DEFAULT_INTERVAL_S


def _elapsed(s: float) -> str:
    s = int(s)
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"


class ProgressLog:
    """A line on stderr every `interval_s` while work runs, only off a terminal."""

    def __init__(self, label: str, *, interval_s: float | None = None,
                 stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.interval_s = interval_s if interval_s is not None else _interval()
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = (not isatty()) if enabled is None else enabled
        self._tasks: dict[str, tuple[float, float | None, str]] = {}
        self._phase = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = time.monotonic()
        self.lines = 0

    def update(self, task: str, done: float, total: float | None = None,
               unit: str = "") -> None:
        """Record that `task` has done `done` of `total` (`unit`: "seeds", "jobs")."""
        with self._lock:
            self._tasks[task] = (done, total, unit)

    def phase(self, text: str) -> None:
        """Record what the work is doing now, for work without counts."""
        with self._lock:
            self._phase = text

    def line(self) -> str:
        """The progress line as it would be printed now."""
        with self._lock:
            parts = []
            for task, (done, total, unit) in self._tasks.items():
                if total:
                    parts.append(f"{task} {done:,.0f}/{total:,.0f}{' ' + unit if unit else ''}"
                                 f" ({done / total:.0%})")
                else:
                    parts.append(f"{task} {done:,.0f}{' ' + unit if unit else ''}")
            what = ", ".join(([self._phase] if self._phase else []) + parts) or "working"
        return f"{self.label}: {what} [{_elapsed(time.monotonic() - self._start)}]"

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._emit(self.line())

    def _emit(self, text: str) -> None:
        try:
            print(text, file=self.stream, flush=True)
            self.lines += 1
        except (OSError, ValueError):  # stderr closed: progress is not worth failing for
            self._stop.set()

    def __enter__(self) -> ProgressLog:
        self._start = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="gsched-progress",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lines and exc_type is None:  # close what the log started
            self._emit(f"{self.label}: done [{_elapsed(time.monotonic() - self._start)}]")
