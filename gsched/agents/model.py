"""What a node agent measures and what it sends: the data crossing agent module boundaries.

A *source* (NVML or a replay) produces one `NodeSample` per sampling pass: a reading per
GPU and the usage of each pod on each GPU. The exporter renders the newest sample as
Prometheus metrics; the reporter folds many samples into one compact `Report`, the only
thing that crosses the network to the scheduler.

Units follow dcgm-exporter: utilisation in percent, memory in MiB, clocks in MHz, power
in W, temperature in °C. Reports carry utilisation as a ratio (0–1), the unit profiles
are learned in. A field is `None` when the GPU or driver could not say (NVML
`NOT_SUPPORTED`, a lost GPU), never a made-up zero.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

REPORT_VERSION = 1


class GpuReading(BaseModel):
    """One GPU at one moment. `lost` GPUs (fell off the bus) carry no values."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    uuid: str
    name: str = ""
    util_pct: float | None = None
    mem_copy_util_pct: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    sm_clock_mhz: float | None = None
    power_w: float | None = None
    temp_c: float | None = None
    lost: bool = False

    @property
    def mem_free_mib(self) -> float | None:
        if self.mem_used_mib is None or self.mem_total_mib is None:
            return None
        return max(self.mem_total_mib - self.mem_used_mib, 0.0)


class PodUsage(BaseModel):
    """What one pod (all its processes) used of one GPU at one moment."""

    model_config = ConfigDict(frozen=True)

    namespace: str
    pod: str
    container: str = ""
    workload: str = Field(description="the key profiles are learned under")
    gpu_index: int = Field(ge=0)
    gpu_uuid: str
    util_pct: float = Field(ge=0, le=100)
    mem_used_mib: float | None = None
    pids: tuple[int, ...] = ()


class NodeSample(BaseModel):
    """One sampling pass over a node: every GPU, and every pod's usage of each GPU."""

    model_config = ConfigDict(frozen=True)

    timestamp: float
    node: str
    gpus: tuple[GpuReading, ...]
    pods: tuple[PodUsage, ...] = ()
    errors: tuple[str, ...] = Field(default=(), description="what went wrong, one per issue")


class Series(BaseModel):
    """Samples of one GPU, or of one workload on one GPU, over a report's window.

    Columnar (three parallel lists) so a report of hundreds of samples stays small.
    """

    gpu: str = Field(min_length=1, description="GPU UUID")
    index: int = Field(ge=0)
    workload: str | None = Field(default=None, min_length=1,
                                 description="None for the GPU's own series")
    namespace: str = ""
    pod: str = ""
    t: list[float] = Field(min_length=1)
    util: list[float]
    mem_mib: list[float | None] | None = None

    @model_validator(mode="after")
    def _check_columns(self) -> Series:
        if len(self.util) != len(self.t):
            raise ValueError(f"util has {len(self.util)} values but t has {len(self.t)}")
        if self.mem_mib is not None and len(self.mem_mib) != len(self.t):
            raise ValueError(f"mem_mib has {len(self.mem_mib)} values but t has {len(self.t)}")
        for u in self.util:
            if not 0.0 <= u <= 1.0:
                raise ValueError(f"util values must be ratios in [0, 1], got {u}")
        return self


class Report(BaseModel):
    """One agent report: a node's samples since its previous report.

    `report_id` makes delivery idempotent: the agent re-sends a report until the scheduler
    acknowledges it, and the scheduler stores each id once.
    """

    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=REPORT_VERSION, ge=1, le=REPORT_VERSION)
    report_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{8,128}$")
    node: str = Field(min_length=1, max_length=253)
    created_at: float = Field(gt=0)
    gpus: list[Series] = Field(default_factory=list)
    workloads: list[Series] = Field(default_factory=list)
    gpu_models: dict[str, str] = Field(default_factory=dict, description="UUID -> model")

    @model_validator(mode="after")
    def _check_kinds(self) -> Report:
        for s in self.gpus:
            if s.workload is not None:
                raise ValueError("gpus series must not name a workload")
        for s in self.workloads:
            if s.workload is None:
                raise ValueError("workloads series must name a workload")
        return self

    @property
    def sample_count(self) -> int:
        return sum(len(s.t) for s in self.workloads) + sum(len(s.t) for s in self.gpus)
