"""Colocation interference: how fast a training job runs when it shares its GPU.

Fitted on Lucid's 1,388 measured pairs of colocated training jobs (ASPLOS'23,
`shared/traces/lucid/colocate_info.csv`): the normalised speed of each job against the
pair's combined GPU utilisation. The data shows a hinge: no loss while the GPU is less
than about half busy, then a linear fall to ~0.80 at 100% (knee 0.7, slope 0.68). We fit

    speed(U) = 1 - slope * max(0, min(U, 1) - knee)           (U = summed load, 0..1)

by least squares over a grid of knees, and divide by U beyond 1 (an overcommitted GPU
time-slices). When the file is not available the coefficients below, fitted on it, are
used so the simulator still runs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gsched.errors import InputError
from gsched.traces.paths import shared_traces_dir


@dataclass(frozen=True)
class ColocationModel:
    knee: float
    slope: float
    pairs: int = 0
    source: str = "built-in"

    def speed(self, load: float | np.ndarray) -> float | np.ndarray:
        """Relative speed of a colocated training job on a GPU with summed load `load`."""
        u = np.asarray(load, dtype=np.float64)
        base = 1.0 - self.slope * np.clip(np.minimum(u, 1.0) - self.knee, 0.0, None)
        out = base / np.maximum(u, 1.0)
        return float(out) if out.ndim == 0 else out


#: Fitted with `fit_lucid()` on the Lucid file (1,388 pairs); see docs/architecture.md.
BUILTIN = ColocationModel(knee=0.7, slope=0.6789, pairs=1388, source="built-in (fitted on Lucid)")


def fit_lucid(path: Path | None = None) -> ColocationModel:
    """Fit the hinge model on Lucid's colocation measurements."""
    path = path or shared_traces_dir() / "lucid" / "colocate_info.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise InputError(f"cannot read colocation data: {e.strerror}", file=str(path)) from e
    try:
        util = np.array([float(r["gpu_util"]) for r in rows]) / 100.0
        speed = np.array([(float(r["speed1"]) + float(r["speed2"])) / 2 for r in rows])
    except (KeyError, ValueError) as e:
        raise InputError(f"unexpected colocation data: {e}", file=str(path)) from e
    best: tuple[float, float, float] | None = None
    for knee in np.arange(0.0, 0.96, 0.05):
        x = np.clip(util - knee, 0.0, None)
        denom = float(x @ x)
        if denom == 0:
            continue
        slope = float(x @ (1.0 - speed)) / denom
        err = float(np.sum((1.0 - slope * x - speed) ** 2))
        if best is None or err < best[2]:
            best = (float(knee), slope, err)
    assert best is not None
    return ColocationModel(knee=round(best[0], 3), slope=round(best[1], 4), pairs=len(rows),
                           source=str(path))


def default_model() -> ColocationModel:
    """The Lucid fit when the shared traces are present, else the built-in coefficients."""
    try:
        return fit_lucid()
    except InputError:
        return BUILTIN
