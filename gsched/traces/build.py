"""Compose a native trace from real sources: real inference curves, real training arrivals.

Inference services take their daily profiles from real serving traces (ServeGen clients,
GenAI pods' GPU duty cycle, the GenAI LoRA request curve); training jobs are a window of
consecutive Gavel/Philly jobs. What is real and what is assumed (docs/trace-format.md):

- real: each profile's shape; the training jobs' GPU counts, order, relative spacing of
  arrivals and (per-type median-normalised) durations;
- assumed: services' GPU shares (0.25/0.5/1 with odds 35/35/30 %), which services exist
  from the start (70 %, running to the end) or arrive later (30 %, lognormal lifetime,
  median 12 h), and the compression of the Gavel window onto `days` (arrival rate is
  scaled so the window fills the span; durations are not scaled).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from gsched.errors import InputError
from gsched.models import DAY_SECONDS, DEFAULT_SLOTS, Job, Trace
from gsched.traces.gavel import big_job_warnings, gavel_durations, read_gavel_records
from gsched.traces.genai import duty_cycle_profiles, lora_request_profile
from gsched.traces.servegen import DEFAULT_PEAK, servegen_profile

SHARES = np.array([0.25, 0.5, 1.0])
SHARE_ODDS = np.array([0.35, 0.35, 0.30])
#: How often a service draws its curve from each source (renormalised over those given).
SOURCE_ODDS = {"servegen": 0.45, "genai": 0.40, "lora": 0.15}


def _quiet(_: str) -> None:
    """The default `on_phase`: nobody is listening."""


class BuildSpec(BaseModel):
    """Inputs of `gsched trace build`; every path is checked before anything is read."""

    servegen: list[Path] = Field(default_factory=list)
    genai: Path | None = None
    lora: Path | None = None
    gavel: Path | None = None
    days: float = Field(default=2.0, gt=0, le=365)
    inference_services: int = Field(default=40, ge=0)
    training_jobs: int = Field(default=150, ge=0)
    seed: int = 0
    slots: int = Field(default=DEFAULT_SLOTS, ge=1, le=1440)
    max_gpus: int | None = Field(default=None, ge=1, le=64)
    median_hours: float = Field(default=1.0, gt=0)
    peak: float = Field(default=DEFAULT_PEAK, gt=0, le=1)
    genai_min_peak: float = Field(default=0.3, ge=0, le=1,
                                  description="skip GenAI pods whose busiest slot is below")
    from_start: float = Field(default=0.7, ge=0, le=1,
                              description="share of services present from t=0 to the end")


def profile_pool(spec: BuildSpec, on_phase: Callable[[str], None] = _quiet,
                 ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Named real profiles, grouped by source; sources with no usable curve are left out."""
    pool: dict[str, list[tuple[str, np.ndarray]]] = {}
    sg = []
    for i, p in enumerate(spec.servegen):
        on_phase(f"reading ServeGen curve {i + 1} of {len(spec.servegen)}")
        prof = servegen_profile(p, spec.slots, spec.peak)
        if prof.max() > 0:
            sg.append((f"servegen-{_short(Path(p).stem)}", prof))
    if sg:
        pool["servegen"] = sg
    if spec.genai is not None:
        on_phase(f"reading GenAI duty cycles from {Path(spec.genai).name}")
        pods = duty_cycle_profiles(spec.genai, spec.slots)
        busy = [(f"genai-pod-{ip[:8]}", prof) for ip, prof in sorted(pods.items())
                if prof.max() >= spec.genai_min_peak]
        if busy:
            pool["genai"] = busy
    if spec.lora is not None:
        on_phase(f"reading the LoRA request curve from {Path(spec.lora).name}")
        pool["lora"] = [("genai-lora", lora_request_profile(spec.lora, spec.slots,
                                                            spec.peak))]
    return pool


def _short(stem: str) -> str:
    """'language-m-large-chunk-3-trace' -> 'm-large-c3'."""
    s = stem.removeprefix("language-").removesuffix("-trace")
    return s.replace("-chunk-", "-c")


def build(spec: BuildSpec, on_phase: Callable[[str], None] = _quiet) -> Trace:
    """Compose the trace described by `spec` (deterministic for a given seed);
    `on_phase(text)` hears what it is doing, for progress lines."""
    rng = np.random.default_rng(spec.seed)
    span = spec.days * DAY_SECONDS
    jobs: list[Job] = []
    warnings: list[str] = []
    if spec.inference_services:
        pool = profile_pool(spec, on_phase)
        if not pool:
            raise InputError("no inference curves: give --servegen, --genai or --lora "
                             "(or --inference-services 0)", field="--inference-services")
        jobs += _services(spec, pool, rng, span)
    if spec.training_jobs:
        if spec.gavel is None:
            raise InputError("training jobs need a Gavel trace (--gavel) or "
                             "--training-jobs 0", field="--gavel")
        on_phase(f"reading Gavel training jobs from {Path(spec.gavel).name}")
        train, clamped = _training(spec, rng, span)
        jobs += train
        warnings += big_job_warnings(train, clamped, spec.max_gpus)
    jobs.sort(key=lambda j: (j.submit_time, j.id))
    return Trace(jobs=jobs, slots=spec.slots, source="gsched trace build", warnings=warnings)


def _services(spec: BuildSpec, pool: dict[str, list[tuple[str, np.ndarray]]],
              rng: np.random.Generator, span: float) -> list[Job]:
    sources = sorted(pool)
    odds = np.array([SOURCE_ODDS[s] for s in sources])
    odds /= odds.sum()
    out = []
    for i in range(spec.inference_services):
        src = sources[int(rng.choice(len(sources), p=odds))]
        name, prof = pool[src][int(rng.integers(len(pool[src])))]
        share = float(rng.choice(SHARES, p=SHARE_ODDS))
        if rng.random() < spec.from_start:
            submit, duration = 0.0, None
        else:
            submit = float(round(rng.uniform(0.0, span), 0))
            duration = float(round(max(3600.0, rng.lognormal(math.log(12 * 3600.0), 0.6)), 0))
        out.append(Job(id=f"svc-{i:03d}", kind="inference", submit_time=submit,
                       duration=duration, num_gpu=1, gpu_share=share, priority=100,
                       preemptible=False, profile=prof, profile_name=name))
    return out


def _training(spec: BuildSpec, rng: np.random.Generator, span: float) -> tuple[list[Job], int]:
    assert spec.gavel is not None
    recs = read_gavel_records(spec.gavel)
    n = spec.training_jobs
    if n > len(recs):
        raise InputError(f"asked for {n} training jobs but the Gavel trace has {len(recs)}",
                         field="--training-jobs")
    durs = gavel_durations(recs, spec.median_hours, str(spec.gavel))
    start = int(rng.integers(0, len(recs) - n + 1))
    window = range(start, start + n)
    t0 = recs[start][2]
    t_last = recs[start + n - 1][2]
    gap = (t_last - t0) / max(n - 1, 1)
    scale = span / (t_last - t0 + gap) if t_last > t0 else 0.0
    width = max(4, len(str(len(recs) - 1)))
    out, clamped = [], 0
    for i in window:
        _, _, arrival, gpus = recs[i]
        if spec.max_gpus is not None and gpus > spec.max_gpus:
            gpus, clamped = spec.max_gpus, clamped + 1
        submit = (arrival - t0) * scale if scale else span * (i - start) / n
        out.append(Job(id=f"gavel-{i:0{width}d}", kind="training",
                       submit_time=round(submit, 0), duration=round(durs[i], 0),
                       num_gpu=gpus, priority=0, preemptible=True))
    return out, clamped
