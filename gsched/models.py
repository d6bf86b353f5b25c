"""The one data model every reader, policy and driver shares.

A trace is a `Trace` of `Job`s; a cluster is a `Cluster` of `Node`s. Daily load profiles
are numpy arrays of `slots` values in [0, 1]: the utilisation of the job's GPU share in
each time-of-day slot (96 slots of 15 minutes by default). Jobs that name the same
profile share one array, so million-job traces stay small.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DAY_SECONDS = 86_400
DEFAULT_SLOTS = 96

#: On-demand price per GPU-hour (USD) by GPU model, used for cost figures. Rounded
#: public cloud list prices of late 2025; override with `--prices` or the cluster file.
DEFAULT_GPU_PRICES: dict[str, float] = {
    "H100": 4.00, "A100": 2.50, "A10": 1.00, "L4": 0.80, "V100": 2.00, "V100M16": 2.00,
    "V100M32": 2.50, "T4": 0.50, "P100": 1.10, "G2": 1.50, "G3": 2.00, "default": 2.00,
}

#: GPU memory (MiB) by model, for cluster files that name a model but not its memory.
DEFAULT_GPU_MEMORY_MIB: dict[str, int] = {
    "H100": 81_920, "A100": 81_920, "A10": 24_576, "L4": 24_576, "V100": 32_768,
    "V100M16": 16_384, "V100M32": 32_768, "T4": 16_384, "P100": 16_384, "G2": 32_768,
    "G3": 49_152, "default": 32_768,
}

JobKind = Literal["training", "inference"]


def gpu_price(model: str, prices: dict[str, float] | None = None) -> float:
    """Price per GPU-hour of `model`, falling back to the 'default' entry."""
    table = {**DEFAULT_GPU_PRICES, **(prices or {})}
    return table.get(model, table["default"])


def flat_profile(level: float, slots: int = DEFAULT_SLOTS) -> np.ndarray:
    """A profile that is `level` all day: training without a learned profile."""
    return np.full(slots, float(level), dtype=np.float64)


def resample_profile(values: np.ndarray, slots: int) -> np.ndarray:
    """Resample a daily profile to `slots` values, treating the day as a circle."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == slots:
        return values
    src = (np.arange(len(values)) + 0.5) / len(values)
    dst = (np.arange(slots) + 0.5) / slots
    return np.interp(dst, src, values, period=1.0)


class Job(BaseModel):
    """One pod/job: what it asks for, when it arrives, how long it runs, how it loads.

    GPU demand is either a share of one GPU (`num_gpu == 1`, `gpu_share` in (0, 1]) or
    a whole number of GPUs on one node (`num_gpu > 1`, share 1). `num_gpu == 0` is a
    CPU-only pod (it still takes node CPU and memory, which matters for fragmentation).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    id: str
    kind: JobKind
    submit_time: float = Field(ge=0)
    duration: float | None = Field(default=None, gt=0)
    num_gpu: int = Field(default=1, ge=0, le=64)
    gpu_share: float = Field(default=1.0, gt=0, le=1)
    gpu_mem_mib: int = Field(default=0, ge=0)
    gpu_models: tuple[str, ...] = ()
    priority: int = 0
    preemptible: bool = False
    cpu_milli: int = Field(default=0, ge=0)
    memory_mib: int = Field(default=0, ge=0)
    utilization: float = Field(default=1.0, ge=0, le=1)
    profile: np.ndarray | None = None
    profile_name: str | None = None

    @field_validator("profile", mode="before")
    @classmethod
    def _as_array(cls, v: object) -> np.ndarray | None:
        if v is None:
            return None
        arr = np.asarray(v, dtype=np.float64)
        if arr.ndim != 1 or len(arr) == 0:
            raise ValueError("profile must be a non-empty list of numbers")
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise ValueError("profile values must be between 0 and 1")
        return arr

    @model_validator(mode="after")
    def _check_shape(self) -> Job:
        if self.num_gpu != 1 and self.gpu_share != 1.0:
            raise ValueError("gpu_share below 1 needs num_gpu == 1")
        return self

    @property
    def gpu_request(self) -> float:
        """GPUs requested in total (0.5 for half a GPU, 4 for four)."""
        return self.num_gpu * self.gpu_share

    def load_profile(self, slots: int = DEFAULT_SLOTS) -> np.ndarray:
        """Expected load on each of its GPUs per slot: share x utilisation profile."""
        prof = self.profile if self.profile is not None else flat_profile(self.utilization, slots)
        if len(prof) != slots:
            prof = resample_profile(prof, slots)
        return self.gpu_share * prof

    @property
    def peak_load(self) -> float:
        """Peak per-GPU load over the day: what peak reservation books."""
        prof = self.profile if self.profile is not None else None
        peak = float(prof.max()) if prof is not None else self.utilization
        return self.gpu_share * peak

    def shape_key(self) -> tuple:
        """Jobs with the same key fit in exactly the same places under request policies."""
        return (self.num_gpu, self.gpu_share, self.gpu_mem_mib, self.gpu_models,
                self.cpu_milli, self.memory_mib)


class Node(BaseModel):
    """A machine with `gpu_count` identical GPUs of one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    gpu_count: int = Field(ge=0, le=64)
    gpu_model: str = "default"
    gpu_memory_mib: int = Field(default=0, ge=0)
    cpu_milli: int = Field(default=0, ge=0)
    memory_mib: int = Field(default=0, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fill_memory(self) -> Node:
        if self.gpu_memory_mib == 0 and self.gpu_count:
            mem = DEFAULT_GPU_MEMORY_MIB.get(self.gpu_model, DEFAULT_GPU_MEMORY_MIB["default"])
            object.__setattr__(self, "gpu_memory_mib", mem)
        return self


class Cluster(BaseModel):
    """The GPU inventory, plus optional prices that override the defaults."""

    nodes: list[Node]
    prices: dict[str, float] = Field(default_factory=dict)
    source: str = ""

    @field_validator("nodes")
    @classmethod
    def _unique_names(cls, nodes: list[Node]) -> list[Node]:
        seen: set[str] = set()
        for n in nodes:
            if n.name in seen:
                raise ValueError(f"duplicate node name {n.name!r}")
            seen.add(n.name)
        return nodes

    @property
    def total_gpus(self) -> int:
        return sum(n.gpu_count for n in self.nodes)

    def price_of(self, model: str) -> float:
        return gpu_price(model, self.prices)


class Trace(BaseModel):
    """A list of jobs sorted by submit time, with the profile resolution they use."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    jobs: list[Job]
    slots: int = DEFAULT_SLOTS
    source: str = ""
    warnings: list[str] = Field(default_factory=list)

    @property
    def slot_seconds(self) -> float:
        return DAY_SECONDS / self.slots

    @property
    def span_seconds(self) -> float:
        """From the first arrival to the last known end (or last arrival)."""
        if not self.jobs:
            return 0.0
        start = min(j.submit_time for j in self.jobs)
        end = max(j.submit_time + (j.duration or 0.0) for j in self.jobs)
        return max(end - start, 0.0)

    def counts(self) -> dict[str, int]:
        out = {"training": 0, "inference": 0}
        for j in self.jobs:
            out[j.kind] += 1
        return out


def ceil_div(a: float, b: float) -> int:
    return int(math.ceil(a / b - 1e-9))
