"""The Philly-derived Gavel trace (stanford-futuredata/gavel, traces/msr): training jobs.

Each line is tab-separated: job type, command, num-steps flag, needs-data-dir (0/1),
total steps, arrival time (s), GPUs (Gavel's "scale factor"). Gavel made `total_steps`
as (the job type's measured V100 throughput) x (a Philly job duration), and the
throughput table is not part of the trace. So durations here rest on one documented
assumption: within a job type, steps are proportional to duration, and the *median*
job of every type runs `median_hours` (default 1 h, the order of Philly's median
single-job run time). That is

    duration = median_hours * 3600 * total_steps / median(total_steps of its type)

which keeps Philly's heavy-tailed duration shape per type and removes the per-model
throughput. Every job is preemptible training at priority 0 with a flat profile.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from gsched.errors import InputError
from gsched.models import DEFAULT_SLOTS, Job, Trace
from gsched.traces.bounds import LIMITS, check_limit, check_span
from gsched.traces.files import read_text

FIELDS = 7
DEFAULT_MEDIAN_HOURS = 1.0
NODE_GPUS = 8


def looks_like_gavel(first_line: str) -> bool:
    """True when a line has Gavel's 7 tab-separated fields ending in numbers."""
    parts = first_line.rstrip("\n").split("\t")
    if len(parts) != FIELDS:
        return False
    try:
        float(parts[4]), float(parts[5]), int(parts[6])
    except ValueError:
        return False
    return True


def read_gavel_records(path: Path | str) -> list[tuple[str, int, float, int]]:
    """Parse the trace into (job_type, total_steps, arrival_s, gpus), in file order."""
    path = Path(path)
    fname = str(path)
    text = read_text(path, "Gavel trace")
    out: list[tuple[str, int, float, int]] = []
    starts: list[tuple[float, int]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != FIELDS:
            raise InputError(f"expected {FIELDS} tab-separated fields, found {len(parts)}",
                             file=fname, line=lineno)
        where = {"file": fname, "line": lineno}
        steps = _number(parts[4], "total_steps", where)
        arrival = _number(parts[5], "arrival_time", where)
        gpus = _number(parts[6], "gpus", where)
        if steps <= 0:
            raise InputError(f"total_steps must be positive, got {parts[4]}",
                             field="total_steps", **where)
        if arrival < 0:
            raise InputError(f"negative arrival time {parts[5]}", field="arrival_time", **where)
        check_limit(arrival, "arrival_time", where, "submit_time")
        starts.append((arrival, lineno))
        if gpus < 1 or gpus != int(gpus):
            raise InputError(f"GPUs must be a whole number >= 1, got {parts[6]}",
                             field="gpus", **where)
        out.append((parts[0].strip(), int(steps), float(arrival), int(gpus)))
    if not out:
        raise InputError("Gavel trace has no jobs", file=fname)
    check_span(starts, "arrival_time", fname)
    return out


def _number(raw: str, field: str, where: dict) -> float:
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"{raw!r} is not a number", field=field, **where) from None


def gavel_durations(records: list[tuple[str, int, float, int]],
                    median_hours: float = DEFAULT_MEDIAN_HOURS,
                    file: str | None = None) -> list[float]:
    """Durations (s) under the per-type median assumption in this module's docstring."""
    if median_hours <= 0:
        raise InputError(f"median hours must be positive, got {median_hours}",
                         field="--median-hours")
    by_type: dict[str, list[int]] = defaultdict(list)
    for jtype, steps, _, _ in records:
        by_type[jtype].append(steps)
    med = {t: statistics.median(s) for t, s in by_type.items()}
    out = [max(60.0, median_hours * 3600.0 * steps / med[jtype])
           for jtype, steps, _, _ in records]
    limit, text = LIMITS["duration"]
    for i, dur in enumerate(out):
        if dur > limit:
            raise InputError(f"job {i} ({records[i][0]}) would run {dur:g} s, past the "
                             f"sanity limit of {text}: its total_steps {records[i][1]:,} is "
                             f"{records[i][1] / med[records[i][0]]:,.0f}x its type's median",
                             file=file, field="total_steps")
    return out


def read_gavel(path: Path | str, slots: int = DEFAULT_SLOTS,
               median_hours: float = DEFAULT_MEDIAN_HOURS,
               max_gpus: int | None = None, utilization: float = 1.0) -> Trace:
    """Read a Gavel trace as training jobs (ids `gavel-NNNN` in file order).

    Jobs asking for more GPUs than an 8-GPU node holds are kept and named in a warning;
    `max_gpus` clamps them instead (and says how many it clamped).
    """
    if not 0 <= utilization <= 1:
        raise InputError(f"utilization must be in [0, 1], got {utilization}",
                         field="utilization")
    recs = read_gavel_records(path)
    durs = gavel_durations(recs, median_hours, str(path))
    # Every value below was checked while parsing, so the jobs skip re-validation.
    jobs = []
    clamped = 0
    width = max(4, len(str(len(recs) - 1)))
    for i, ((_jtype, _steps, arrival, gpus), dur) in enumerate(zip(recs, durs, strict=True)):
        if max_gpus is not None and gpus > max_gpus:
            gpus, clamped = max_gpus, clamped + 1
        jobs.append(Job.model_construct(
            id=f"gavel-{i:0{width}d}", kind="training", submit_time=arrival, duration=dur,
            num_gpu=gpus, gpu_share=1.0, gpu_mem_mib=0, gpu_models=(), priority=0,
            preemptible=True, cpu_milli=0, memory_mib=0, utilization=utilization,
            profile=None, profile_name=None))
    jobs.sort(key=lambda j: (j.submit_time, j.id))
    return Trace(jobs=jobs, slots=slots, source=str(path),
                 warnings=big_job_warnings(jobs, clamped, max_gpus))


def big_job_warnings(jobs: list[Job], clamped: int = 0,
                     max_gpus: int | None = None) -> list[str]:
    """Say which jobs are larger than an 8-GPU node, or how many were clamped."""
    out = []
    if clamped:
        out.append(f"{clamped} Gavel job(s) asked for more than {max_gpus} GPUs and were "
                   f"clamped to {max_gpus}")
    big = sorted({j.num_gpu for j in jobs if j.num_gpu > NODE_GPUS})
    if big:
        n = sum(1 for j in jobs if j.num_gpu > NODE_GPUS)
        out.append(f"{n} Gavel job(s) ask for more GPUs than an {NODE_GPUS}-GPU node holds "
                   f"({', '.join(map(str, big))}); they fit only on nodes that large "
                   "(clamp with `gsched trace build --max-gpus 8`)")
    return out
