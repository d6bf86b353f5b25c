"""ServeGen request-rate traces (alibaba/ServeGen, data/language/...): daily inference curves.

A file has no header; each row is `t,rate,cv,distribution,param1,param2` with `t` the
start of a 600 s window in seconds from local midnight of day 0 and `rate` requests/s.
A profile is the mean rate in each time-of-day slot over all days, scaled so that the
busiest slot sits at `peak` utilisation (default 0.9): we assume the service was sized
so its busiest quarter-hour on an average day nearly fills its GPU share. Request rate
is taken as proportional to GPU load (batching makes that only roughly true at low load).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gsched.errors import InputError
from gsched.models import DAY_SECONDS, DEFAULT_SLOTS
from gsched.traces.files import read_text

DEFAULT_PEAK = 0.9


def read_servegen(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """The raw series: (window start seconds, requests per second), both float arrays."""
    path = Path(path)
    fname = str(path)
    text = read_text(path, "ServeGen trace")
    ts, rates = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) < 2:
            raise InputError("expected rows 't,rate,cv,distribution,param1,param2'",
                             file=fname, line=lineno)
        try:
            t, r = float(parts[0]), float(parts[1])
        except ValueError:
            raise InputError(f"{parts[0]!r},{parts[1]!r} are not numbers (is this a "
                             "ServeGen trace?)", file=fname, line=lineno,
                             field="t" if not _isnum(parts[0]) else "rate") from None
        if not (np.isfinite(t) and np.isfinite(r)) or r < 0 or t < 0:
            raise InputError(f"bad window t={parts[0]} rate={parts[1]}", file=fname,
                             line=lineno, field="rate")
        ts.append(t)
        rates.append(r)
    if not ts:
        raise InputError("ServeGen trace has no rows", file=fname)
    return np.asarray(ts), np.asarray(rates)


def _isnum(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def daily_mean(t: np.ndarray, value: np.ndarray, slots: int,
               utc_offset_s: float = 0.0) -> np.ndarray:
    """Mean of `value` per time-of-day slot; empty slots are filled around the circle."""
    idx = (((t + utc_offset_s) % DAY_SECONDS) // (DAY_SECONDS / slots)).astype(np.int64)
    idx = np.clip(idx, 0, slots - 1)
    total = np.bincount(idx, weights=value, minlength=slots)
    count = np.bincount(idx, minlength=slots)
    out = np.full(slots, np.nan)
    seen = count > 0
    out[seen] = total[seen] / count[seen]
    if not seen.all():
        if not seen.any():
            return np.zeros(slots)
        x = np.arange(slots)
        out[~seen] = np.interp(x[~seen], x[seen], out[seen], period=slots)
    return out


def scale_to_peak(curve: np.ndarray, peak: float = DEFAULT_PEAK) -> np.ndarray:
    """Scale a non-negative daily curve so its busiest slot equals `peak` (0..1)."""
    if not 0 < peak <= 1:
        raise InputError(f"peak utilisation must be in (0, 1], got {peak}", field="--peak")
    top = float(curve.max()) if len(curve) else 0.0
    if top <= 0:
        return np.zeros_like(curve, dtype=np.float64)
    return np.clip(curve / top * peak, 0.0, 1.0)


def servegen_profile(path: Path | str, slots: int = DEFAULT_SLOTS,
                     peak: float = DEFAULT_PEAK) -> np.ndarray:
    """The daily inference profile of one ServeGen client (see module docstring)."""
    t, rate = read_servegen(path)
    return scale_to_peak(daily_mean(t, rate, slots), peak)


def servegen_aggregate_profile(paths: Sequence[Path | str], slots: int = DEFAULT_SLOTS,
                               peak: float = DEFAULT_PEAK) -> np.ndarray:
    """One profile for the summed load of several clients (one model's whole fleet)."""
    if not paths:
        raise InputError("no ServeGen files given", field="--servegen")
    total = np.zeros(slots)
    for p in paths:
        t, rate = read_servegen(p)
        total += daily_mean(t, rate, slots)
    return scale_to_peak(total, peak)
