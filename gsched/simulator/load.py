"""Actual load versus the learned profile: how reality departs from the forecast.

Policies only ever see a job's profile (the forecast). The simulator scores utilisation
and SLO risk on the *actual* load, which by default equals the forecast and can be
perturbed to test robustness: Gaussian noise per slot, a peak shifted by some slots, a
sudden surge that scales inference load for a window of the day.
"""

from __future__ import annotations

import zlib

import numpy as np
from pydantic import BaseModel, Field

from gsched.models import Job


class LoadDeviation(BaseModel):
    """How actual inference load departs from its profile (all zero = exact forecast)."""

    noise: float = Field(default=0.0, ge=0, description="std-dev of per-slot noise (relative)")
    shift_slots: int = Field(default=0, description="slots the actual peak comes later")
    surge: float = Field(default=0.0, ge=0, description="extra load during the surge (relative)")
    surge_start_slot: int = Field(default=0, ge=0)
    surge_slots: int = Field(default=0, ge=0)
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.noise or self.shift_slots or (self.surge and self.surge_slots))

    def actual_load(self, job: Job, predicted: np.ndarray) -> np.ndarray:
        """The per-GPU load the job really puts on its GPUs (training is not perturbed)."""
        if not self.active or job.kind != "inference":
            return predicted
        # A per-job generator: the same job deviates the same way under every policy.
        rng = np.random.default_rng([self.seed, zlib.crc32(job.id.encode())])
        out = np.roll(predicted, self.shift_slots)
        if self.noise:
            out = out * (1.0 + rng.normal(0.0, self.noise, size=len(out)))
        if self.surge and self.surge_slots:
            idx = (self.surge_start_slot + np.arange(self.surge_slots)) % len(out)
            out[idx] *= 1.0 + self.surge
        return np.clip(out, 0.0, job.gpu_share * 2.0)
