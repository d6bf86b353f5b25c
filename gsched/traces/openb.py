"""Alibaba openb pod lists (cluster-trace-gpu-v2023), the trace of the FGD paper.

Each pod becomes one `Job`. The mapping (see docs/trace-format.md):

- `num_gpu`, `cpu_milli`, `memory_mib` as given; `gpu_share = gpu_milli / 1000` for
  single-GPU pods (1.0 otherwise, and for CPU-only pods, whose share is irrelevant);
- `gpu_spec` `A|B` -> `gpu_models == ("A", "B")`;
- `qos` LS, Guaranteed, Burstable -> inference (priority 100, not preemptible);
  BE -> training (priority 0, preemptible);
- `submit_time = creation_time`; `duration = deletion_time - creation_time`. A missing or
  non-positive duration means "runs to the end of the trace" (`None`); so does every pod
  of the time-less lists (`multigpu*`), which are meant for inflation mode only;
- `pod_phase` is kept out of the model: every pod is demand the cluster saw, as in the
  FGD paper's inflation method. `phases` filters on it when a user wants, e.g., only the
  pods that ran.

openb has no utilisation data, so every pod's profile is flat (at `utilization`, 1.0).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from gsched.errors import InputError
from gsched.models import DEFAULT_SLOTS, Job, Trace
from gsched.traces.bounds import LIMITS, check_limit, check_span
from gsched.traces.files import read_text

POD_COLUMNS = ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"]
TIME_COLUMNS = ["creation_time", "deletion_time"]
INFERENCE_QOS = {"LS", "GUARANTEED", "BURSTABLE"}
TRAINING_QOS = {"BE"}
PHASES = ("Running", "Succeeded", "Failed", "Pending")


def is_openb_header(first_line: str) -> bool:
    """True when a file's first line is an openb pod-list header."""
    return first_line.replace(" ", "").startswith("name,cpu_milli")


def read_openb_pods(path: Path | str, slots: int = DEFAULT_SLOTS,
                    phases: Iterable[str] | None = None) -> Trace:
    """Read an openb pod list into a `Trace` (all pods, or those in `phases`)."""
    path = Path(path)
    fname = str(path)
    text = read_text(path, "openb pod list")
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    missing = [c for c in POD_COLUMNS if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} in openb pod list",
                         file=fname, line=1)
    col = {h: i for i, h in enumerate(header)}
    timed = all(c in col for c in TIME_COLUMNS)
    keep = {p.lower() for p in phases} if phases is not None else None
    jobs: list[Job] = []
    starts: list[tuple[float, int]] = []
    no_end = 0
    for lineno, row in enumerate(rows, start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} fields, found {len(row)}",
                             file=fname, line=lineno)

        def get(name: str, row: list[str] = row) -> str:
            return row[col[name]].strip() if name in col else ""

        if keep is not None and get("pod_phase").lower() not in keep:
            continue
        where = {"file": fname, "line": lineno}
        job = _pod_to_job(get, timed, slots, where)
        if job.duration is None and timed:
            no_end += 1
        jobs.append(job)
        starts.append((job.submit_time, lineno))
    check_span(starts, "creation_time", fname)
    jobs.sort(key=lambda j: (j.submit_time, j.id))
    warnings = []
    if no_end:
        warnings.append(f"{no_end} openb pod(s) have no positive lifetime; they run to the "
                        "end of the trace")
    if not timed:
        warnings.append(f"{path.name} has no time columns: every pod arrives at 0 and never "
                        "ends (use --mode inflation)")
    return Trace(jobs=jobs, slots=slots, source=fname, warnings=warnings)


def _int(raw: str, field: str, where: dict, limit_of: str | None = None) -> int:
    try:
        val = int(float(raw)) if raw else 0
    except ValueError:
        raise InputError(f"{raw!r} is not a number", field=field, **where) from None
    except OverflowError:
        raise InputError(f"{raw!r} is not a finite number", field=field, **where) from None
    if limit_of or field in LIMITS:
        check_limit(val, field, where, limit_of)
    return val


def _pod_to_job(get, timed: bool, slots: int, where: dict) -> Job:
    qos = get("qos").upper()
    if qos and qos not in INFERENCE_QOS | TRAINING_QOS:
        raise InputError(f"unknown qos {get('qos')!r}; expected LS, Guaranteed, Burstable "
                         "or BE", field="qos", **where)
    inference = qos != "BE"
    num_gpu = _int(get("num_gpu"), "num_gpu", where)
    milli = _int(get("gpu_milli"), "gpu_milli", where)
    share = milli / 1000 if num_gpu == 1 and 0 < milli < 1000 else 1.0
    submit, duration = 0.0, None
    if timed:
        created = _int(get("creation_time"), "creation_time", where, "submit_time")
        deleted_raw = get("deletion_time")
        submit = float(created)
        if deleted_raw:
            life = _int(deleted_raw, "deletion_time", where, "submit_time") - created
            check_limit(life, "deletion_time", where, "duration")
            duration = float(life) if life > 0 else None
    models = tuple(m.strip() for m in get("gpu_spec").split("|") if m.strip())
    try:
        return Job(id=get("name"), kind="inference" if inference else "training",
                   submit_time=submit, duration=duration, num_gpu=num_gpu, gpu_share=share,
                   gpu_models=models, priority=100 if inference else 0,
                   preemptible=not inference, cpu_milli=_int(get("cpu_milli"), "cpu_milli",
                                                             where),
                   memory_mib=_int(get("memory_mib"), "memory_mib", where))
    except ValidationError as e:
        err = e.errors()[0]
        fld = str(err["loc"][0]) if err["loc"] else None
        raise InputError(err["msg"], field=fld, **where) from None
