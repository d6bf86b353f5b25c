"""Running several policies over one trace and collecting the JSON contract.

`gsched simulate` is a thin CLI over `run_comparison`; benchmarks call it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from gsched.models import Cluster, Trace
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy
from gsched.simulator.colocation import ColocationModel, default_model
from gsched.simulator.engine import SimConfig, SimResult, simulate
from gsched.simulator.inflation import InflationResult, inflate

Mode = Literal["replay", "inflation"]


@dataclass
class Comparison:
    """Everything one `gsched simulate` run produced."""

    trace: Trace
    cluster: Cluster
    mode: Mode
    replay: dict[str, SimResult] = field(default_factory=dict)
    inflation: dict[str, InflationResult] = field(default_factory=dict)
    colocation: ColocationModel | None = None

    def figures(self) -> dict[str, dict]:
        if self.mode == "replay":
            return {k: v.figures for k, v in self.replay.items()}
        return {k: v.figures for k, v in self.inflation.items()}

    def payload(self) -> dict:
        """The stable JSON contract (see docs/architecture.md)."""
        out: dict = {
            "trace": self.trace.source,
            "mode": self.mode,
            "cluster": {"nodes": len(self.cluster.nodes), "gpus": self.cluster.total_gpus,
                        "source": self.cluster.source},
            "policies": self.figures(),
        }
        if self.colocation is not None and self.mode == "replay":
            out["colocation_model"] = {"knee": self.colocation.knee,
                                       "slope": self.colocation.slope,
                                       "source": self.colocation.source}
        warnings = list(self.trace.warnings)
        for r in self.replay.values():
            warnings += [w for w in r.warnings if w not in warnings]
        if warnings:
            out["warnings"] = warnings
        return out


def run_comparison(trace: Trace, cluster: Cluster, policies: list[str], mode: Mode = "replay",
                   sim: SimConfig | None = None, policy_config: PolicyConfig | None = None,
                   seeds: int = 10, target: float = 1.3,
                   on_progress: Callable[[str, int, int], None] | None = None) -> Comparison:
    """Run every named policy; `on_progress(policy, done, total)` is called as work advances."""
    cfg = (policy_config or PolicyConfig()).model_copy(update={"workload": trace.jobs})
    out = Comparison(trace=trace, cluster=cluster, mode=mode)
    if mode == "replay":
        out.colocation = default_model()
        total = len(trace.jobs)
        for name in policies:
            def tick(done: int, name: str = name) -> None:
                if on_progress:
                    on_progress(name, done, total)
            out.replay[name] = simulate(trace, cluster, make_policy(name, cfg), sim,
                                        out.colocation, tick)
    else:
        for name in policies:
            def tick_seed(done: int, name: str = name) -> None:
                if on_progress:
                    on_progress(name, done, seeds)
            out.inflation[name] = inflate(trace, cluster, lambda n=name: make_policy(n, cfg),
                                          seeds, target, tick_seed)
    return out
