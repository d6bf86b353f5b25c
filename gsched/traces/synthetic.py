"""Seeded synthetic traces: tidal inference services plus Philly-like training.

For benchmarks at scales no public trace reaches (up to millions of jobs), and for tests
that need a trace with known shape. Everything is drawn from one
`numpy.random.default_rng(seed)`, so a (spec, seed) pair always gives the same trace.

- Inference services: a diurnal curve (valley 0.1, peak 0.9, a raised-cosine hump)
  whose peak hour is drawn from a mix of afternoon (~14 h) and evening (~21 h) peaks;
  24 named profiles `diurnal-hHH`, one per peak hour, shared by every service that uses
  it. Shares 0.25 / 0.5 / 1 GPU (and 5 % on 2 whole GPUs); 20 % run for days
  (lognormal, median 3 days), the rest for hours (median 8 h). Priority 100.
- Training: Poisson arrivals, lognormal durations (median `train_median_hours`),
  GPU counts 1/2/4/8 with Philly-like odds (70/10/12/8 %), flat utilisation 0.5-1.0,
  preemptible, priority 0.

Jobs are built with `Job.model_construct` (the values are generated, so validating each
one again would only cost time): a million jobs take seconds.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field, model_validator

from gsched.models import DAY_SECONDS, DEFAULT_SLOTS, Job, Trace
from gsched.traces.bounds import MAX_SPAN_S

TRAIN_GPUS = np.array([1, 2, 4, 8])
TRAIN_GPU_ODDS = np.array([0.70, 0.10, 0.12, 0.08])
INFERENCE_SHARES = np.array([0.25, 0.5, 1.0])
INFERENCE_SHARE_ODDS = np.array([0.35, 0.35, 0.30])


class SyntheticSpec(BaseModel):
    """What to generate. `days` defaults to `jobs / jobs_per_day`."""

    jobs: int = Field(default=10_000, ge=1, le=20_000_000)
    days: float | None = Field(default=None, gt=0)
    jobs_per_day: float = Field(default=2_000.0, gt=0)
    inference_fraction: float = Field(default=0.2, ge=0, le=1)
    train_median_hours: float = Field(default=1.0, gt=0)
    train_sigma: float = Field(default=1.2, ge=0)
    seed: int = 0
    slots: int = Field(default=DEFAULT_SLOTS, ge=1, le=1440)

    @property
    def span_days(self) -> float:
        return self.days if self.days is not None else max(self.jobs / self.jobs_per_day,
                                                           1 / 24)

    @model_validator(mode="after")
    def _readable_span(self) -> SyntheticSpec:
        # The trace must be one gsched reads back (gsched.traces.bounds).
        if self.span_days * DAY_SECONDS > MAX_SPAN_S:
            raise ValueError(f"a span of {self.span_days:,.0f} days is past the limit of "
                             f"{MAX_SPAN_S // DAY_SECONDS:,} days (pass a smaller --days)")
        return self


def diurnal_profile(peak_hour: float, slots: int = DEFAULT_SLOTS, valley: float = 0.1,
                    peak: float = 0.9, sharpness: float = 2.0) -> np.ndarray:
    """A one-hump daily curve: `peak` at `peak_hour`, `valley` twelve hours away."""
    hours = (np.arange(slots) + 0.5) * 24.0 / slots
    hump = ((1.0 + np.cos(2 * np.pi * (hours - peak_hour) / 24.0)) / 2.0) ** sharpness
    return valley + (peak - valley) * hump


def generate(spec: SyntheticSpec) -> Trace:
    """Generate the trace described by `spec` (see the module docstring)."""
    rng = np.random.default_rng(spec.seed)
    span = spec.span_days * DAY_SECONDS
    n_inf = int(round(spec.jobs * spec.inference_fraction))
    n_train = spec.jobs - n_inf

    # Inference services.
    inf_submit = rng.uniform(0.0, span, n_inf)
    evening = rng.random(n_inf) < 0.4
    peak_h = np.where(evening, rng.normal(21.0, 1.5, n_inf), rng.normal(14.0, 2.5, n_inf))
    peak_h = np.round(peak_h).astype(np.int64) % 24
    long_run = rng.random(n_inf) < 0.2
    inf_dur = np.where(long_run, rng.lognormal(np.log(3 * DAY_SECONDS), 0.4, n_inf),
                       rng.lognormal(np.log(8 * 3600.0), 0.6, n_inf))
    shares = rng.choice(INFERENCE_SHARES, n_inf, p=INFERENCE_SHARE_ODDS)
    two_gpu = rng.random(n_inf) < 0.05
    inf_gpus = np.where(two_gpu, 2, 1)
    shares = np.where(two_gpu, 1.0, shares)

    # Training jobs: Poisson arrivals (uniform order statistics given the count).
    tr_submit = rng.uniform(0.0, span, n_train)
    tr_dur = np.clip(rng.lognormal(np.log(spec.train_median_hours * 3600.0),
                                   spec.train_sigma, n_train), 60.0, 30 * DAY_SECONDS)
    tr_gpus = rng.choice(TRAIN_GPUS, n_train, p=TRAIN_GPU_ODDS)
    tr_util = np.round(rng.uniform(0.5, 1.0, n_train), 2)

    profiles = [diurnal_profile(h, spec.slots) for h in range(24)]
    names = [f"diurnal-h{h:02d}" for h in range(24)]

    submit = np.concatenate([inf_submit, tr_submit]).round(1)
    is_inf = np.concatenate([np.ones(n_inf, bool), np.zeros(n_train, bool)])
    dur = np.concatenate([inf_dur, tr_dur]).round(0)
    gpus = np.concatenate([inf_gpus, tr_gpus])
    share = np.concatenate([shares, np.ones(n_train)])
    util = np.concatenate([np.ones(n_inf), tr_util])
    hour = np.concatenate([peak_h, np.zeros(n_train, np.int64)])
    order = np.argsort(submit, kind="stable")

    width = len(str(spec.jobs - 1))
    construct = Job.model_construct
    cols = zip(is_inf[order].tolist(), submit[order].tolist(), dur[order].tolist(),
               gpus[order].tolist(), share[order].tolist(), util[order].tolist(),
               hour[order].tolist(), strict=True)
    jobs = [construct(
        id=f"syn-{k:0{width}d}", kind="inference" if inf else "training", submit_time=sub,
        duration=d, num_gpu=g, gpu_share=sh, gpu_mem_mib=0, gpu_models=(),
        priority=100 if inf else 0, preemptible=not inf, cpu_milli=0, memory_mib=0,
        utilization=u, profile=profiles[h] if inf else None,
        profile_name=names[h] if inf else None)
        for k, (inf, sub, d, g, sh, u, h) in enumerate(cols)]
    return Trace.model_construct(jobs=jobs, slots=spec.slots,
                                 source=f"synthetic(seed={spec.seed}, jobs={spec.jobs})",
                                 warnings=[])
