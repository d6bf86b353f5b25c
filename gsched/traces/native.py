"""gsched's native trace CSV: read and write (see docs/trace-format.md).

Every other reader converts into the same `Trace` model; this module is the one that
checks a user's hand-written CSV field by field and says exactly what is wrong.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from gsched.errors import InputError
from gsched.models import DEFAULT_SLOTS, Job, Trace, resample_profile
from gsched.traces.bounds import LIMITS, check_limit, check_span
from gsched.traces.files import atomic_write_text, read_text

COLUMNS = ["id", "kind", "submit_time", "duration", "num_gpu", "gpu_share", "gpu_mem_mib",
           "gpu_model", "priority", "preemptible", "cpu_milli", "memory_mib", "utilization",
           "profile"]
REQUIRED = ["id", "kind", "submit_time"]
KINDS = ("training", "inference")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


def profiles_path_for(trace_path: Path) -> Path:
    """The profiles file that travels with a trace: `<stem>.profiles.csv` beside it
    (`x.csv.gz` travels with `x.profiles.csv`, or `x.profiles.csv.gz` when that exists)."""
    if trace_path.name.endswith(".gz"):
        stem = Path(trace_path.name.removesuffix(".gz")).stem
        gz = trace_path.with_name(stem + ".profiles.csv.gz")
        return gz if gz.exists() else trace_path.with_name(stem + ".profiles.csv")
    return trace_path.with_name(trace_path.stem + ".profiles.csv")


def read_profiles(path: Path, slots: int = DEFAULT_SLOTS) -> dict[str, np.ndarray]:
    """Read a profiles file: header `name,s0,...`, one named daily profile per row."""
    out: dict[str, np.ndarray] = {}
    text = read_text(path, "profiles file")
    reader = csv.reader(io.StringIO(text))
    for lineno, row in enumerate(reader, start=1):
        if not row or row[0].startswith("#") or (lineno == 1 and row[0].strip() == "name"):
            continue
        name = row[0].strip()
        try:
            vals = np.array([float(x) for x in row[1:] if x.strip() != ""])
        except ValueError as e:
            raise InputError(f"profile {name!r} has a value that is not a number ({e})",
                             file=str(path), line=lineno) from e
        if len(vals) == 0:
            raise InputError(f"profile {name!r} has no values", file=str(path), line=lineno)
        if not np.all(np.isfinite(vals)) or vals.min() < 0 or vals.max() > 1:
            raise InputError(f"profile {name!r} values must be between 0 and 1",
                             file=str(path), line=lineno)
        if name in out:
            raise InputError(f"profile {name!r} is defined twice", file=str(path), line=lineno)
        out[name] = resample_profile(vals, slots)
    return out


def _num(raw: str, field: str, kind: type, where: dict, default: float | int | None) -> object:
    raw = raw.strip()
    if raw == "":
        return default
    try:
        val = float(raw)
    except ValueError as e:
        raise InputError(f"{raw!r} is not a number", field=field, **where) from e
    if not math.isfinite(val):
        raise InputError(f"{raw!r} is not a finite number", field=field, **where)
    if field in LIMITS:
        check_limit(val, field, where)
    if kind is int:
        if val != int(val):
            raise InputError(f"{raw!r} must be a whole number", field=field, **where)
        return int(val)
    return val


def read_native(path: Path | str, profiles: Path | None = None,
                slots: int = DEFAULT_SLOTS) -> Trace:
    """Read a native trace CSV; named profiles come from `profiles` or the sibling file."""
    path = Path(path)
    fname = str(path)
    text = read_text(path, "trace")
    prof_file = profiles or profiles_path_for(path)
    named = read_profiles(prof_file, slots) if prof_file.exists() else {}
    lines = [ln for ln in text.splitlines()]
    reader = csv.reader(lines)
    header: list[str] | None = None
    jobs: list[Job] = []
    seen: set[str] = set()
    starts: list[tuple[float, int]] = []
    for lineno, row in enumerate(reader, start=1):
        if not row or not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [h.strip() for h in row]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise InputError(f"missing required column(s): {', '.join(missing)} "
                                 f"(header is: {','.join(header)})", file=fname, line=lineno)
            unknown = [h for h in header if h not in COLUMNS]
            if unknown:
                raise InputError(f"unknown column(s): {', '.join(unknown)}; known columns are "
                                 f"{', '.join(COLUMNS)}", file=fname, line=lineno)
            continue
        if len(row) != len(header):
            raise InputError(f"expected {len(header)} fields, found {len(row)}",
                             file=fname, line=lineno)
        rec = dict(zip(header, row, strict=True))
        job = _job_from_record(rec, named, slots, {"file": fname, "line": lineno})
        if job.id in seen:
            raise InputError(f"duplicate job id {job.id!r}", file=fname, line=lineno, field="id")
        seen.add(job.id)
        jobs.append(job)
        starts.append((job.submit_time, lineno))
    if header is None:
        raise InputError("empty trace: no header row", file=fname)
    check_span(starts, "submit_time", fname)
    jobs.sort(key=lambda j: (j.submit_time, j.id))
    return Trace(jobs=jobs, slots=slots, source=fname)


def _job_from_record(rec: dict[str, str], named: dict[str, np.ndarray], slots: int,
                     where: dict) -> Job:
    g = rec.get
    jid = (g("id") or "").strip()
    if not jid:
        raise InputError("job id is empty", field="id", **where)
    kind = (g("kind") or "").strip().lower()
    if kind not in KINDS:
        raise InputError(f"unknown kind {g('kind')!r}; expected 'training' or 'inference'",
                         field="kind", **where)
    submit = _num(g("submit_time", ""), "submit_time", float, where, None)
    if submit is None:
        raise InputError("submit_time is empty", field="submit_time", **where)
    if submit < 0:
        raise InputError(f"negative submit_time {submit}", field="submit_time", **where)
    duration = _num(g("duration", ""), "duration", float, where, None)
    if duration is not None and duration <= 0:
        raise InputError(f"duration must be positive, got {duration}", field="duration", **where)
    if duration is None and kind == "training":
        raise InputError("training jobs need a duration", field="duration", **where)
    num_gpu = _num(g("num_gpu", ""), "num_gpu", int, where, 1)
    share = _num(g("gpu_share", ""), "gpu_share", float, where, 1.0)
    fields: dict[str, object] = {
        "id": jid, "kind": kind, "submit_time": submit, "duration": duration,
        "num_gpu": num_gpu, "gpu_share": share,
        "gpu_mem_mib": _num(g("gpu_mem_mib", ""), "gpu_mem_mib", int, where, 0),
        "priority": _num(g("priority", ""), "priority", int, where,
                         100 if kind == "inference" else 0),
        "cpu_milli": _num(g("cpu_milli", ""), "cpu_milli", int, where, 0),
        "memory_mib": _num(g("memory_mib", ""), "memory_mib", int, where, 0),
        "utilization": _num(g("utilization", ""), "utilization", float, where, 1.0),
    }
    models = (g("gpu_model") or "").strip()
    fields["gpu_models"] = tuple(m.strip() for m in models.split("|") if m.strip())
    pre = (g("preemptible") or "").strip().lower()
    if pre == "":
        fields["preemptible"] = kind == "training"
    elif pre in _TRUE or pre in _FALSE:
        fields["preemptible"] = pre in _TRUE
    else:
        raise InputError(f"{g('preemptible')!r} is not true/false", field="preemptible", **where)
    prof = (g("profile") or "").strip()
    if prof:
        if prof in named:
            fields["profile"], fields["profile_name"] = named[prof], prof
        elif ";" in prof or _is_number(prof):
            try:
                vals = np.array([float(x) for x in prof.split(";") if x.strip()])
            except ValueError as e:
                raise InputError(f"inline profile has a non-number ({e})", field="profile",
                                 **where) from e
            fields["profile"] = resample_profile(vals, slots)
        else:
            raise InputError(f"profile {prof!r} is not defined in the profiles file",
                             field="profile", **where)
    try:
        return Job(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        fld = str(err["loc"][0]) if err["loc"] else None
        raise InputError(err["msg"], field=fld, **where) from None


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def write_native(trace: Trace, path: Path | str, inline_profiles: bool = False) -> list[Path]:
    """Write `trace` as native CSV (and its named profiles beside it). Returns files written."""
    path = Path(path)
    named: dict[str, np.ndarray] = {}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for j in trace.jobs:
        prof = ""
        if j.profile is not None:
            if j.profile_name and not inline_profiles:
                named.setdefault(j.profile_name, j.profile)
                prof = j.profile_name
            else:
                prof = ";".join(_fmt(v) for v in j.profile)
        w.writerow([j.id, j.kind, _fmt(j.submit_time), "" if j.duration is None else
                    _fmt(j.duration), j.num_gpu, _fmt(j.gpu_share), j.gpu_mem_mib,
                    "|".join(j.gpu_models), j.priority, str(j.preemptible).lower(),
                    j.cpu_milli, j.memory_mib, _fmt(j.utilization), prof])
    written = [path]
    if named:
        pbuf = io.StringIO()
        pw = csv.writer(pbuf, lineterminator="\n")
        pw.writerow(["name"] + [f"s{i}" for i in range(trace.slots)])
        for name, vals in named.items():
            pw.writerow([name] + [_fmt(v) for v in vals])
        atomic_write_text(profiles_path_for(path), pbuf.getvalue())
        written.append(profiles_path_for(path))
    atomic_write_text(path, buf.getvalue())
    return written


def iter_jobs(trace: Trace, kind: str | None = None) -> Iterable[Job]:
    return (j for j in trace.jobs if kind is None or j.kind == kind)
