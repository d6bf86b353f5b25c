"""A summary of any trace: what it asks for, over what span, with what daily shape.

`gsched trace inspect` prints it as a table or JSON; users check a trace with it before
simulating, and the example trace's README quotes it.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from gsched.models import DAY_SECONDS, Trace, resample_profile
from gsched.traces.cluster import peak_concurrent_request


class ProfileStats(BaseModel):
    """The shape of a daily load curve (hours are slot starts, local time of day)."""

    peak_hour: float
    valley_hour: float
    peak: float
    valley: float
    mean: float
    peak_to_valley: float | None = Field(description="peak / valley; null when valley is 0")


class KindSummary(BaseModel):
    jobs: int = 0
    gpu_request_total: float = 0.0
    gpu_hours: float = 0.0
    open_ended: int = Field(default=0, description="jobs without a duration (run to the end)")
    with_profile: int = 0


class TraceSummary(BaseModel):
    """Everything `gsched trace inspect` reports; `--json` writes exactly this."""

    source: str
    jobs: int
    slots: int
    kinds: dict[str, KindSummary]
    gpu_demand: dict[str, int] = Field(description="jobs per GPU demand bucket")
    span_s: float
    first_submit_s: float
    last_submit_s: float
    peak_concurrent_request_gpus: float
    distinct_profiles: int
    inference_profile: ProfileStats | None = Field(
        default=None, description="the share-weighted sum of inference profiles")
    warnings: list[str] = Field(default_factory=list)


def demand_bucket(num_gpu: int, share: float) -> str:
    """Histogram bucket of one job's GPU demand."""
    if num_gpu == 0:
        return "0 (CPU only)"
    if num_gpu == 1 and share < 1.0:
        return "<1 (shared)"
    return str(num_gpu) if num_gpu <= 8 else ">8"


def profile_stats(curve: np.ndarray) -> ProfileStats:
    """Peak/valley hours and the peak-to-valley ratio of a daily curve."""
    slots = len(curve)
    hi, lo = int(np.argmax(curve)), int(np.argmin(curve))
    peak, valley = float(curve[hi]), float(curve[lo])
    ratio = peak / valley if valley > 1e-12 else None
    return ProfileStats(peak_hour=hi * 24 / slots, valley_hour=lo * 24 / slots, peak=peak,
                        valley=valley, mean=float(curve.mean()), peak_to_valley=ratio)


def summarize(trace: Trace) -> TraceSummary:
    """Summarise `trace` in one pass over its jobs (profiles are summed per distinct array)."""
    kinds = {"training": KindSummary(), "inference": KindSummary()}
    demand: Counter[str] = Counter()
    weights: dict[int, float] = {}
    arrays: dict[int, np.ndarray] = {}
    for j in trace.jobs:
        k = kinds[j.kind]
        k.jobs += 1
        req = j.gpu_request
        k.gpu_request_total += req
        if j.duration is None:
            k.open_ended += 1
        else:
            k.gpu_hours += req * j.duration / 3600.0
        demand[demand_bucket(j.num_gpu, j.gpu_share)] += 1
        if j.profile is not None:
            k.with_profile += 1
            key = id(j.profile)
            arrays[key] = j.profile
            if j.kind == "inference":
                weights[key] = weights.get(key, 0.0) + req
    inf_curve = None
    if weights:
        total = sum(weights.values())
        curve = np.zeros(trace.slots)
        for key, w in weights.items():
            prof = arrays[key]
            if len(prof) != trace.slots:
                prof = resample_profile(prof, trace.slots)
            curve += w * prof
        inf_curve = profile_stats(curve / total if total > 0 else curve)
    submits = [j.submit_time for j in trace.jobs]
    order = ["0 (CPU only)", "<1 (shared)", "1", "2", "3", "4", "5", "6", "7", "8", ">8"]
    return TraceSummary(
        source=trace.source, jobs=len(trace.jobs), slots=trace.slots, kinds=kinds,
        gpu_demand={b: demand[b] for b in order if demand[b]},
        span_s=trace.span_seconds, first_submit_s=min(submits, default=0.0),
        last_submit_s=max(submits, default=0.0),
        peak_concurrent_request_gpus=peak_concurrent_request(trace),
        distinct_profiles=len(arrays), inference_profile=inf_curve,
        warnings=list(trace.warnings))


def _count(v: float) -> str:
    """Whole numbers as integers (714), shares with one decimal (40.5)."""
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def print_summary(console: Console, s: TraceSummary) -> None:
    """Render a summary as rich tables."""
    t = Table(title=f"{s.source}: {s.jobs:,} job{'' if s.jobs == 1 else 's'}", show_header=True)
    t.add_column("")
    t.add_column("training", justify="right")
    t.add_column("inference", justify="right")
    tr, inf = s.kinds["training"], s.kinds["inference"]
    t.add_row("jobs", f"{tr.jobs:,}", f"{inf.jobs:,}")
    t.add_row("GPUs requested (sum)", _count(tr.gpu_request_total),
              _count(inf.gpu_request_total))
    t.add_row("GPU-hours (finite jobs)", f"{tr.gpu_hours:,.1f}", f"{inf.gpu_hours:,.1f}")
    t.add_row("run to end of trace", f"{tr.open_ended:,}", f"{inf.open_ended:,}")
    t.add_row("with a daily profile", f"{tr.with_profile:,}", f"{inf.with_profile:,}")
    console.print(t)
    g = Table(title="GPU demand per job", show_header=True)
    g.add_column("GPUs")
    g.add_column("jobs", justify="right")
    for b, n in s.gpu_demand.items():
        g.add_row(b, f"{n:,}")
    console.print(g)
    span_days = s.span_s / DAY_SECONDS
    console.print(f"span: {s.span_s:,.0f} s ({span_days:.2f} days); arrivals "
                  f"{s.first_submit_s:,.0f} .. {s.last_submit_s:,.0f} s")
    console.print(f"peak concurrent request (everything runs on arrival): "
                  f"{s.peak_concurrent_request_gpus:,.1f} GPUs")
    console.print(f"distinct profiles: {s.distinct_profiles}")
    p = s.inference_profile
    if p is not None:
        ratio = f"{p.peak_to_valley:.1f}x" if p.peak_to_valley is not None else "inf"
        console.print(f"inference load curve: peak {p.peak:.2f} at {_hhmm(p.peak_hour)}, "
                      f"valley {p.valley:.2f} at {_hhmm(p.valley_hour)}, mean {p.mean:.2f}, "
                      f"peak/valley {ratio}")
    for w in s.warnings:
        console.print(f"[yellow]warning:[/] {w}")


def _hhmm(hour: float) -> str:
    minutes = int(round(hour * 60))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
