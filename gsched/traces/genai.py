"""Alibaba GenAI serving traces (cluster-trace-v2026-GenAI): real inference load curves.

Read straight from the published `.tar.gz` files with `tarfile` (never extracted).

- `pod_gpu_duty_cycle_anon` (`value,timestamp_anon,container_ip`): GPU duty cycle in
  percent per pod, sampled every 57 s over ~22.8 h. A pod's daily profile is its mean
  duty cycle (as a fraction) per time-of-day slot; the ~1.2 h the window misses are
  filled around the circle. Timestamps are anonymised epoch seconds; we read them in
  UTC+8 (`utc_offset_hours`), the service's home time zone, which puts the busy hours
  in the local working day. Duty cycle is already utilisation, so it is not rescaled.
- `lora_request_trace` (`gmt_create,...,exec_time_seconds,...`): 23 days of requests.
  `gmt_create` is local wall-clock time (Alibaba's column convention). The profile is
  GPU-seconds of requests (`exec_time_seconds`, 1 s where missing) per time-of-day slot,
  averaged over days and scaled so the busiest slot sits at `peak`.
"""

from __future__ import annotations

import csv
import io
import tarfile
from datetime import datetime
from pathlib import Path

import numpy as np

from gsched.errors import InputError
from gsched.models import DEFAULT_SLOTS
from gsched.traces.files import read_text
from gsched.traces.servegen import DEFAULT_PEAK, daily_mean, scale_to_peak

DUTY_CYCLE_COLUMNS = ("value", "timestamp_anon", "container_ip")
DEFAULT_UTC_OFFSET_HOURS = 8.0


def _read_member(path: Path | str, stem: str) -> tuple[str, str]:
    """Text of the CSV inside a tarball (or of a plain CSV), and the name to report."""
    path = Path(path)
    fname = str(path)
    if not path.exists():
        raise InputError("file not found", file=fname)
    if path.suffix == ".csv":
        return read_text(path, "GenAI trace"), fname
    try:
        with tarfile.open(path, "r:*") as tf:
            members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".csv")]
            pick = [m for m in members if stem in m.name] or members
            if not pick:
                raise InputError("no CSV inside the archive", file=fname)
            f = tf.extractfile(pick[0])
            assert f is not None
            return f.read().decode("utf-8"), f"{fname}:{pick[0].name}"
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"cannot read archive: {e}", file=fname) from e


def load_duty_cycle_samples(path: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw per-pod samples: container_ip -> (timestamps s, duty cycle as 0..1), time-sorted.

    Timestamps are the file's anonymised epoch seconds, unshifted.
    """
    text, fname = _read_member(path, "duty_cycle")
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    missing = [c for c in DUTY_CYCLE_COLUMNS if c not in header]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", file=fname, line=1)
    iv, it, ip = (header.index(c) for c in DUTY_CYCLE_COLUMNS)
    ts: dict[str, list[float]] = {}
    vs: dict[str, list[float]] = {}
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            v, t, pod = float(row[iv]), float(row[it]), row[ip]
        except (ValueError, IndexError):
            raise InputError(f"bad sample row {row!r}", file=fname, line=lineno) from None
        ts.setdefault(pod, []).append(t)
        vs.setdefault(pod, []).append(v)
    out = {}
    for pod in ts:
        t = np.asarray(ts[pod])
        v = np.clip(np.asarray(vs[pod]) / 100.0, 0.0, 1.0)
        order = np.argsort(t, kind="stable")
        out[pod] = (t[order], v[order])
    return out


def duty_cycle_profiles(path: Path | str, slots: int = DEFAULT_SLOTS,
                        utc_offset_hours: float = DEFAULT_UTC_OFFSET_HOURS
                        ) -> dict[str, np.ndarray]:
    """One daily profile per pod (key: container_ip), as described in the module doc."""
    samples = load_duty_cycle_samples(path)
    return {pod: np.clip(daily_mean(t, v, slots, utc_offset_hours * 3600.0), 0.0, 1.0)
            for pod, (t, v) in samples.items()}


def lora_request_profile(path: Path | str, slots: int = DEFAULT_SLOTS,
                         peak: float = DEFAULT_PEAK) -> np.ndarray:
    """The daily GPU-seconds profile of the LoRA request trace, busiest slot at `peak`."""
    text, fname = _read_member(path, "lora_request")
    rows = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(rows, [])]
    if "gmt_create" not in header:
        raise InputError("missing column gmt_create", file=fname, line=1)
    ic = header.index("gmt_create")
    ie = header.index("exec_time_seconds") if "exec_time_seconds" in header else None
    secs, work, days = [], [], set()
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            when = datetime.fromisoformat(row[ic].strip())
        except (ValueError, IndexError):
            raise InputError(f"bad timestamp {row[ic] if row else ''!r}", file=fname,
                             line=lineno, field="gmt_create") from None
        days.add(when.date())
        secs.append(when.hour * 3600 + when.minute * 60 + when.second)
        try:
            w = float(row[ie]) if ie is not None and row[ie].strip() else 1.0
        except ValueError:
            w = 1.0
        work.append(w if np.isfinite(w) and w > 0 else 1.0)
    if not secs:
        raise InputError("LoRA request trace has no rows", file=fname)
    idx = (np.asarray(secs) * slots // 86_400).astype(np.int64)
    per_slot = np.bincount(idx, weights=np.asarray(work), minlength=slots) / len(days)
    return scale_to_peak(per_slot, peak)
