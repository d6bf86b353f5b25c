"""Capacity planning: the smallest cluster on which a trace meets its targets, per policy.

The question the people who pay for a fleet ask is "how many GPUs does this workload
need?". We answer it by running the simulator: for each policy, search over the number
of nodes of one shape for the smallest cluster on which the trace meets every target:

- inference SLO risk (GPU slot-minutes over capacity) at most `slo_risk`;
- training queue delay p95 at most `queue_p95_s`;
- every job finished: none unfinished at the end, none that could never fit.

More nodes almost always help, but not strictly (a policy may place differently on a
larger cluster), so the search treats "meets the targets" as monotone only to find the
boundary: it doubles (or halves) from a start guess until it brackets a failing and a
passing size, then bisects. The answer `n` is always a size that was simulated and met
the targets, with `n - 1` simulated and failing: the boundary is checked, not inferred.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from gsched.errors import InputError
from gsched.models import Cluster, Node, Trace, gpu_price
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import ClusterState
from gsched.simulator.colocation import BUILTIN, ColocationModel
from gsched.simulator.engine import SimConfig, simulate

#: Hours in an average month (8,760 / 12): monthly cost = GPUs x price per GPU-hour x this.
MONTH_HOURS = 730.0
#: Policies every plan is compared with (the saving columns).
REFERENCES = ("k8s-spread", "peak")


class Targets(BaseModel):
    """What "enough GPUs" means; see the module docstring."""

    slo_risk: float = Field(default=0.0, ge=0, description="max SLO risk, GPU slot-minutes")
    queue_p95_s: float = Field(default=7200.0, ge=0,
                               description="max training queue delay p95, seconds")

    def misses(self, figures: dict) -> list[str]:
        """Why `figures` fall short of the targets (empty when they meet them)."""
        out: list[str] = []
        if figures.get("unschedulable_jobs"):
            out.append(f"{figures['unschedulable_jobs']} job(s) never fit")
        if figures.get("unfinished_jobs"):
            out.append(f"{figures['unfinished_jobs']} job(s) unfinished")
        risk = figures.get("slo_risk_slot_minutes") or 0.0
        if risk > self.slo_risk + 1e-9:
            out.append(f"SLO risk {risk:.1f} > {self.slo_risk:g} GPU slot-minutes")
        q = figures.get("training_queue_delay_p95_s") or 0.0
        if q > self.queue_p95_s + 1e-9:
            out.append(f"training queue p95 {q:.0f} s > {self.queue_p95_s:.0f} s")
        return out

    def payload(self) -> dict:
        return {"slo_risk_slot_minutes": self.slo_risk,
                "training_queue_delay_p95_s": self.queue_p95_s,
                "every_job_finished": True}


@dataclass(frozen=True)
class NodeShape:
    """One kind of node: the unit the cluster grows by."""

    gpus: int
    model: str

    @property
    def label(self) -> str:
        return f"{self.gpus}x{self.model}"

    def cluster(self, nodes: int, prices: dict[str, float] | None = None) -> Cluster:
        return Cluster(nodes=[Node(name=f"node-{i:04d}", gpu_count=self.gpus,
                                   gpu_model=self.model) for i in range(nodes)],
                       prices=prices or {}, source=f"{nodes} x {self.label}")


_NODE_TYPE = re.compile(r"^\s*(\d+)\s*[xX*]\s*([A-Za-z0-9][\w.-]*)\s*$")


def parse_node_type(spec: str) -> NodeShape:
    """`8xA100` -> 8 GPUs of model A100 per node."""
    m = _NODE_TYPE.match(spec)
    if not m or not 1 <= int(m.group(1)) <= 64:
        raise InputError(f"expected GPUSxMODEL with 1-64 GPUs (e.g. 8xA100), got {spec!r}",
                         field="--node-type")
    return NodeShape(int(m.group(1)), m.group(2))


def trace_node_shape(trace: Trace) -> NodeShape:
    """The shape `gsched simulate` sizes clusters with: 8-GPU nodes (more if a job needs
    more), of the GPU model jobs ask for most (A100 when none asks)."""
    asked = Counter(m for j in trace.jobs for m in j.gpu_models)
    model = asked.most_common(1)[0][0] if asked else "A100"
    biggest = max((j.num_gpu for j in trace.jobs), default=1)
    return NodeShape(max(8, biggest), model)


def never_fit(trace: Trace, shape: NodeShape) -> list[str]:
    """Ids of jobs no node of this shape could ever run, however many there are."""
    state = ClusterState(shape.cluster(1), trace.slots)
    return [j.id for j in trace.jobs if not state.static_mask(j).any()]


@dataclass(frozen=True)
class Probe:
    """One simulated cluster size."""

    nodes: int
    misses: list[str]
    figures: dict

    @property
    def met(self) -> bool:
        return not self.misses


@dataclass
class SizeSearch:
    """The smallest size meeting the targets (None if none up to the limit did)."""

    nodes: int | None
    probes: dict[int, Probe] = field(default_factory=dict)


def smallest_size(probe: Callable[[int], Probe], start: int, limit: int) -> SizeSearch:
    """Exponential search from `start` to bracket the boundary, then bisection.

    Invariant of the bisection: `lo` failed (0 stands for "no cluster"), `hi` met the
    targets; it ends with `hi == lo + 1`, so the answer and one node fewer were both
    simulated (or the answer is one node).
    """
    probes: dict[int, Probe] = {}

    def met(n: int) -> bool:
        if n not in probes:
            probes[n] = probe(n)
        return probes[n].met

    limit = max(1, limit)
    n = min(max(1, start), limit)
    if met(n):
        lo, hi = 0, n
        while hi > 1:
            m = hi // 2
            if met(m):
                hi = m
            else:
                lo = m
                break
    else:
        lo, hi = n, 0
        while not hi:
            if lo >= limit:
                return SizeSearch(None, probes)
            m = min(lo * 2, limit)
            if met(m):
                hi = m
            else:
                lo = m
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if met(mid):
            hi = mid
        else:
            lo = mid
    return SizeSearch(hi, probes)


@dataclass
class PolicyPlan:
    """The answer for one policy."""

    policy: str
    search: SizeSearch
    shape: NodeShape
    price: float  # USD per GPU-hour

    @property
    def nodes(self) -> int | None:
        return self.search.nodes

    @property
    def gpus(self) -> int | None:
        return None if self.nodes is None else self.nodes * self.shape.gpus

    @property
    def monthly_cost(self) -> float | None:
        return None if self.gpus is None else self.gpus * self.price * MONTH_HOURS

    @property
    def figures(self) -> dict:
        """Figures at the answer, or at the largest size tried when none met the targets."""
        size = self.nodes if self.nodes is not None else max(self.search.probes)
        return self.search.probes[size].figures


@dataclass
class CapacityPlan:
    """Every policy's answer for one trace; `payload()` is the JSON contract."""

    trace: str
    targets: Targets
    shape: NodeShape
    plans: dict[str, PolicyPlan]

    def saving(self, policy: str, against: str) -> float | None:
        """Share of the reference's monthly cost this policy saves (negative: costs more)."""
        a, b = self.plans.get(policy), self.plans.get(against)
        if a is None or b is None or a.monthly_cost is None or not b.monthly_cost:
            return None
        return 1.0 - a.monthly_cost / b.monthly_cost

    def payload(self) -> dict:
        return {
            "trace": self.trace,
            "targets": {**self.targets.payload(), "node_type": self.shape.label},
            "policies": {name: {"nodes": p.nodes, "gpus": p.gpus,
                                "monthly_cost": p.monthly_cost, "figures": p.figures}
                         for name, p in self.plans.items()},
        }


def search_limits(trace: Trace, shape: NodeShape) -> tuple[int, int]:
    """(start, limit) in nodes: start at half the peak concurrent request, give up at
    four times all of it (room for every job at once, four times over)."""
    from gsched.traces.cluster import peak_concurrent_request

    peak_nodes = max(1, math.ceil(peak_concurrent_request(trace) / shape.gpus))
    return max(1, math.ceil(peak_nodes / 2)), 4 * peak_nodes


def plan_policy(trace: Trace, policy: str, targets: Targets, shape: NodeShape,
                sim: SimConfig | None = None, policy_config: PolicyConfig | None = None,
                prices: dict[str, float] | None = None,
                colocation: ColocationModel = BUILTIN,
                on_probe: Callable[[str, Probe], None] | None = None) -> PolicyPlan:
    """Search one policy's smallest cluster (see `smallest_size`)."""
    cfg = (policy_config or PolicyConfig()).model_copy(update={"workload": trace.jobs})

    def probe(nodes: int) -> Probe:
        result = simulate(trace, shape.cluster(nodes, prices), make_policy(policy, cfg), sim,
                          colocation)
        p = Probe(nodes, targets.misses(result.figures), result.figures)
        if on_probe:
            on_probe(policy, p)
        return p

    start, limit = search_limits(trace, shape)
    return PolicyPlan(policy, smallest_size(probe, start, limit), shape,
                      gpu_price(shape.model, prices))


def plan_capacity(trace: Trace, policies: list[str], targets: Targets, shape: NodeShape,
                  sim: SimConfig | None = None, policy_config: PolicyConfig | None = None,
                  prices: dict[str, float] | None = None,
                  colocation: ColocationModel = BUILTIN,
                  on_probe: Callable[[str, Probe], None] | None = None) -> CapacityPlan:
    """Every named policy's smallest cluster; raises InputError if a job can never fit."""
    bad = never_fit(trace, shape)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise InputError(f"{len(bad)} job(s) can never fit a {shape.label} node: {shown}",
                         field="--node-type")
    plans = {name: plan_policy(trace, name, targets, shape, sim, policy_config, prices,
                               colocation, on_probe) for name in policies}
    return CapacityPlan(trace.source, targets, shape, plans)
