"""Per-workload forecast margins in the simulator: book quantile x (1 + own margin).

The live path learns each service's margin from its own held-back days
(`packing/forecast.py`). The simulator does the same against the world it simulates:
for each inference job it draws `held_back_days` past days from the *history* version of
the load deviation (the same day-to-day noise under other seeds; a surge or a shifted
peak is news, so it is not in the history unless `history` says so), measures the
relative excess of each over the forecast, and takes its `q` quantile as the job's
margin. The policy then sees the booked profile; the load that really arrives (and that
accounting and the guard read) is still computed from the forecast, through
`BookedDeviation`.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from gsched.models import Job, Trace
from gsched.scheduler.packing.forecast import booking, error_margin
from gsched.simulator.load import LoadDeviation


class BookedDeviation(LoadDeviation):
    """Actual load from each job's *forecast* (not its booking), via `inner`."""

    inner: LoadDeviation = Field(default_factory=LoadDeviation)
    forecast_by_job: dict[str, list[float]] = Field(default_factory=dict)

    @property
    def active(self) -> bool:
        return True

    def actual_load(self, job: Job, predicted: np.ndarray) -> np.ndarray:
        base = self.forecast_by_job.get(job.id)
        forecast = predicted if base is None else np.asarray(base)
        return self.inner.actual_load(job, forecast) if self.inner.active else forecast


def job_margin(job: Job, forecast: np.ndarray, history: LoadDeviation,
               held_back_days: int, q: float) -> float:
    """The job's own margin from `held_back_days` draws of `history`."""
    if not history.active or held_back_days <= 0:
        return 0.0
    days = [history.model_copy(update={"seed": history.seed + 1000 + k}).actual_load(
        job, forecast) for k in range(held_back_days)]
    return error_margin([forecast] * len(days), days, q)


def with_margins(trace: Trace, deviation: LoadDeviation, history: LoadDeviation | None = None,
                 held_back_days: int = 3, q: float = 0.99) -> tuple[Trace, BookedDeviation]:
    """(trace whose inference jobs book forecast x (1 + own margin), the deviation that
    keeps real load on the forecast). `history` defaults to `deviation`'s noise alone."""
    hist = history if history is not None else LoadDeviation(noise=deviation.noise,
                                                             seed=deviation.seed)
    slots = trace.slots
    jobs: list[Job] = []
    forecasts: dict[str, list[float]] = {}
    for job in trace.jobs:
        if job.kind != "inference" or not job.num_gpu:
            jobs.append(job)
            continue
        prof = (job.profile if job.profile is not None
                else np.full(slots, job.utilization))
        m = job_margin(job, job.load_profile(slots), hist, held_back_days, q)
        if m <= 0:
            jobs.append(job)
            continue
        booked = booking(prof, m, cap=1.0)
        forecasts[job.id] = [float(x) for x in job.load_profile(slots)]
        name = f"{job.profile_name or job.id}+m{m:.3f}"
        jobs.append(job.model_copy(update={"profile": booked, "profile_name": name}))
    out = Trace(jobs=jobs, slots=slots, source=f"{trace.source} (own margins, q={q})",
                warnings=list(trace.warnings))
    return out, BookedDeviation(inner=deviation, forecast_by_job=forecasts)
