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
    """Actual load from each job's *forecast* (not its booking), via `inner`, as the job
    was before its booking (`share_by_job`: its request, where the booking raised it)."""

    inner: LoadDeviation = Field(default_factory=LoadDeviation)
    forecast_by_job: dict[str, list[float]] = Field(default_factory=dict)
    share_by_job: dict[str, float] = Field(default_factory=dict)

    @property
    def active(self) -> bool:
        return True

    def actual_load(self, job: Job, predicted: np.ndarray) -> np.ndarray:
        base = self.forecast_by_job.get(job.id)
        forecast = predicted if base is None else np.asarray(base)
        if not self.inner.active:
            return forecast
        share = self.share_by_job.get(job.id)
        if share is not None:
            job = job.model_copy(update={"gpu_share": share})
        return self.inner.actual_load(job, forecast)


def book_job(job: Job, booked: np.ndarray, name: str) -> Job:
    """`job` booking `booked` (per-GPU load, one value a slot). Where the booking is over
    the job's request, the job books beyond it, up to a whole GPU: its own measured
    error says it will use that much, and a booking clipped at the request would let
    others share what it is about to use (with more than a whole GPU it books the
    whole GPU, shared with nobody)."""
    booked = np.clip(np.asarray(booked, dtype=np.float64), 0.0, None)
    share = min(1.0, max(job.gpu_share, float(booked.max()) if len(booked) else 0.0))
    if booked.max(initial=0.0) > 1.0 + 1e-9:  # more than a GPU: the whole GPU, all day
        booked = np.ones_like(booked)
    if share != job.gpu_share:  # the profile now depends on the request too
        name = f"{name}@{job.gpu_share:g}"
    return job.model_copy(update={"profile": np.clip(booked / share, 0.0, 1.0),
                                  "gpu_share": share, "profile_name": name})


def job_margin(job: Job, forecast: np.ndarray, history: LoadDeviation,
               held_back_days: int, q: float) -> float:
    """The job's own margin from `held_back_days` draws of `history`."""
    if not history.active or held_back_days <= 0:
        return 0.0
    days = [history.model_copy(update={"seed": history.seed + 1000 + k}).actual_load(
        job, forecast) for k in range(held_back_days)]
    return error_margin([forecast] * len(days), days, q)


def with_margins(trace: Trace, deviation: LoadDeviation, history: LoadDeviation | None = None,
                 held_back_days: int = 3, q: float = 0.99, beyond_request: bool = False
                ) -> tuple[Trace, BookedDeviation]:
    """(trace whose inference jobs book forecast x (1 + own margin), the deviation that
    keeps real load on the forecast). `history` defaults to `deviation`'s noise alone.
    With `beyond_request`, a booking over the job's request raises it (`book_job`);
    else it is clipped at the request."""
    hist = history if history is not None else LoadDeviation(noise=deviation.noise,
                                                             seed=deviation.seed)
    slots = trace.slots
    jobs: list[Job] = []
    forecasts: dict[str, list[float]] = {}
    shares: dict[str, float] = {}
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
        forecasts[job.id] = [float(x) for x in job.load_profile(slots)]
        name = f"{job.profile_name or job.id}+m{m:.3f}"
        if beyond_request and job.num_gpu == 1:
            booked_job = book_job(job, job.gpu_share * booking(prof, m, cap=np.inf), name)
            if booked_job.gpu_share != job.gpu_share:
                shares[job.id] = job.gpu_share
            jobs.append(booked_job)
            continue
        booked = booking(prof, m, cap=1.0)
        jobs.append(job.model_copy(update={"profile": booked, "profile_name": name}))
    out = Trace(jobs=jobs, slots=slots, source=f"{trace.source} (own margins, q={q})",
                warnings=list(trace.warnings))
    return out, BookedDeviation(inner=deviation, forecast_by_job=forecasts,
                                share_by_job=shares)
