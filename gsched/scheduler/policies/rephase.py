"""How far today's load trails (or leads) its forecast: the lag that explains it best.

A daily profile can be right in shape and wrong in time: a holiday, a launch in another
time zone, a batch upstream that ran late. Margins in load cannot cover that (the peak
arrives where the forecast has its valley), and the load guard only reacts after the
GPU is over. The measured load of the last few slots, set against the forecast shifted
by each candidate lag, says how late the day is running; a workload whose forecast is
clearly better explained shifted is booked shifted for the rest of the day.

Each lag's fit allows its own scale (least squares, within 0.5-2x), so a booking
carrying a margin over the forecast is not taken for a phase error, and only a clear
gain moves the lag: the fit must halve the error of the lag in use and improve it by
`min_error` in load units.
Among equally good lags the one nearest the lag in use wins (then the one nearest zero),
so a late rise is followed a slot at a time and a flat stretch (every lag fits) changes
nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

#: a shift's fitted scale stays within these: a margin or a quiet day, not "no load at
#: all" (scale 0 would fit a silent window to any shape, a peak that never came)
SCALE_MIN, SCALE_MAX = 0.5, 2.0

if TYPE_CHECKING:
    from gsched.models import Job
    from gsched.scheduler.policies.state import ClusterState, Running


def fit_errors(measured: np.ndarray, forecast: np.ndarray, slots: np.ndarray,
               max_lag: int) -> np.ndarray:
    """RMS residual of `measured` (load in `slots`) against `forecast` shifted by each
    lag in -max_lag..max_lag (later is positive), each scaled by its least-squares fit."""
    m = np.asarray(measured, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    lags = np.arange(-max_lag, max_lag + 1)
    shifted = f[(slots[None, :] - lags[:, None]) % len(f)]  # (lags, window)
    bb = (shifted * shifted).sum(axis=1)
    scale = np.divide(shifted @ m, bb, out=np.ones(len(lags)), where=bb > 1e-12)
    scale = np.clip(scale, SCALE_MIN, SCALE_MAX)
    resid = m[None, :] - scale[:, None] * shifted
    return np.sqrt((resid * resid).mean(axis=1))


def phase_lag(measured: np.ndarray, forecast: np.ndarray, slots: np.ndarray, current: int = 0,
              max_lag: int = 8, gain: float = 0.5, min_error: float = 0.02) -> int:
    """The lag (slots; positive: the load comes later than forecast) to book `forecast`
    at, given the load `measured` in `slots` and the lag in use (`current`)."""
    err = fit_errors(measured, forecast, slots, max_lag)
    cur = err[current + max_lag] if abs(current) <= max_lag else np.inf
    best = float(err.min())
    if not (best < (1.0 - gain) * cur and cur - best > min_error):
        return current
    lags = np.arange(-max_lag, max_lag + 1)
    near = lags[err <= best + 1e-9].tolist()
    return min(near, key=lambda lag: (abs(lag - current), abs(lag)))


class Rephasing:
    """Which lag each running job is booked at, and the move of its booking when the
    measured day says another lag (`ClusterState.rebook`). One per cluster state; the
    simulator's hook and the extender's guard feed it the same way (measured load of the
    last slots of the day, per job), so the two paths book alike."""

    def __init__(self, window: int = 8, max_lag: int = 8, quorum: int = 5,
                 agree: float = 2 / 3) -> None:
        self.window, self.max_lag = window, max_lag
        self.quorum, self.agree = quorum, agree
        #: job id -> (its Running record, its booking as placed, the lag applied)
        self.tracked: dict[str, tuple[Running, np.ndarray, int]] = {}
        #: jobs whose lag rests on their own measured window (not the consensus)
        self.measured: set[str] = set()
        #: the consensus as of the last slot change (`settle`), what arrivals book at
        self.cluster_lag = 0
        #: job id -> the lag a new job was booked at on arrival (`arrival_view`)
        self.arrived: dict[str, int] = {}
        self.rephased = 0

    def settle(self) -> int:
        """Fix the consensus for arrivals until the next slot change; returns it."""
        self.cluster_lag = self.consensus()
        return self.cluster_lag

    def arrival_view(self, job: Job, slots: int) -> Job:
        """`job` as a new arrival should be booked: a service with a daily profile at
        the cluster's lag (its profile shifted), so it is placed beside services already
        booked late on the same footing. Other jobs, and every job while the cluster's
        day is on time, as they are."""
        lag = self.cluster_lag
        if lag == 0 or job.kind != "inference" or job.profile is None:
            return job
        if len(self.arrived) >= 10_000:  # seen in a filter, never placed: forget oldest
            del self.arrived[next(iter(self.arrived))]
        self.arrived[job.id] = lag
        k = round(lag * len(job.profile) / slots)
        return job.model_copy(update={
            "profile": np.roll(job.profile, k),
            "profile_name": f"{job.profile_name or job.id}@lag{lag}"})

    def _first_sight(self, r: Running, job_id: str) -> tuple[Running, np.ndarray, int]:
        """(record, booking with no lag, lag booked) of a job not tracked yet."""
        lag = self.arrived.pop(job_id, 0)
        return (r, np.roll(r.load, -lag), lag)

    def consensus(self) -> int:
        """The lag most measured services agree on (a holiday, a clock change: whole
        days move together), or 0: at least `quorum` of them, and an `agree` share."""
        lags = [self.tracked[j][2] for j in self.measured if j in self.tracked]
        if len(lags) < self.quorum:
            return 0
        values, counts = np.unique(lags, return_counts=True)
        k = int(np.argmax(counts))
        return int(values[k]) if counts[k] >= self.agree * len(lags) else 0

    def adopt(self, state: ClusterState, job_id: str, lag: int) -> bool:
        """Book a job with no measured window yet at `lag` (the consensus), once: until
        its own window says otherwise, the cluster's day is its best guess."""
        r = state.running[job_id]
        seen = self.tracked.get(job_id)
        if seen is not None and seen[0] is r:
            return False
        if job_id in self.arrived:  # booked at the cluster's lag when it arrived
            self.tracked[job_id] = self._first_sight(r, job_id)
            return False
        if lag == 0:
            return False
        state.rebook(job_id, np.roll(r.load, lag))
        self.tracked[job_id] = (state.running[job_id], np.roll(state.running[job_id].load,
                                                                -lag), lag)
        self.rephased += 1
        return True

    def window_slots(self, slot: int, slots: int) -> np.ndarray:
        """The day's slots of the `window` slots before `slot`."""
        return (slot - self.window + np.arange(self.window)) % slots

    def update(self, state: ClusterState, job_id: str, measured: np.ndarray,
               idx: np.ndarray) -> bool:
        """Re-book `job_id` if its load `measured` in day slots `idx` says so; True when
        its booking moved. A job placed again starts from its own profile."""
        r = state.running[job_id]
        seen = self.tracked.get(job_id)
        if seen is None or seen[0] is not r:
            seen = self._first_sight(r, job_id)
        base, lag = seen[1], seen[2]
        new = phase_lag(measured, base, idx, current=lag, max_lag=self.max_lag)
        moved = new != lag
        if moved:
            state.rebook(job_id, np.roll(base, new))
            self.rephased += 1
        self.tracked[job_id] = (state.running[job_id], base, new)
        self.measured.add(job_id)
        return moved

    def forget(self, live: set[str]) -> None:
        """Drop jobs no longer running."""
        for jid in [j for j in self.tracked if j not in live]:
            del self.tracked[jid]
        self.measured &= live
