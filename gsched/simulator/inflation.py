"""Inflation mode: the evaluation method of the FGD paper (Weng et al., ATC'23).

Pods are sampled from the trace with replacement, ignoring time, and handed to the
policy one by one until the GPUs *requested* (placed or not) reach `target` (130%) of
the cluster's capacity. The figure of merit is the share of GPU capacity actually
allocated when requests reach 100%: a policy that fragments less fails fewer pods and
allocates more. We also report the fragmented share of GPUs at that point, measured
with FGD's own fragmentation against the trace's task mix.

Node order, as in the paper's artifact: its scheduler takes the node with the smallest
name among the best-scored and gives node names a random prefix per seed, so each seed
has one random node order, fixed for the whole run. Policies here take the first
best-scored node (`policy.place`), so each seed runs on the cluster's nodes shuffled by a
generator of its own (separate from the one that draws pods). Integer scores tie on most
decisions, so this order matters: see docs/policies.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gsched.models import Cluster, Job, Trace
from gsched.scheduler.policies.fgd import TaskTypes
from gsched.scheduler.policies.policy import Policy, place
from gsched.scheduler.policies.state import ClusterState, Placement

#: second key of the node-order generator, so it never shares a stream with the pod draws
NODE_ORDER_STREAM = 0x6E6F6465


@dataclass
class InflationResult:
    policy: str
    allocation_ratio_at_100: float
    fragmented_gpu_share: float
    seeds: int
    per_seed: list[dict[str, float]] = field(default_factory=list)
    curve: list[tuple[float, float]] = field(default_factory=list)  # (requested, allocated)

    @property
    def figures(self) -> dict[str, object]:
        vals = [s["allocation_ratio_at_100"] for s in self.per_seed]
        return {
            "allocation_ratio_at_100": self.allocation_ratio_at_100,
            "allocation_ratio_at_100_std": float(np.std(vals)) if vals else 0.0,
            "allocation_ratio_at_100_per_seed": [float(v) for v in vals],
            "fragmented_gpu_share": self.fragmented_gpu_share,
            "failed_pods_at_100": float(np.mean([s["failed_pods_at_100"]
                                                 for s in self.per_seed])),
            "seeds": self.seeds,
            "wall_seconds": float(sum(s["wall_seconds"] for s in self.per_seed)),
            "placements_per_second": float(np.mean([s["placements_per_second"]
                                                    for s in self.per_seed])),
        }


def seed_node_order(cluster: Cluster, seed: int) -> Cluster:
    """The cluster with its nodes in the seed's random order (the artifact's name prefix)."""
    order = np.random.default_rng((seed, NODE_ORDER_STREAM)).permutation(len(cluster.nodes))
    return cluster.model_copy(update={"nodes": [cluster.nodes[i] for i in order]})


def inflate_once(jobs: list[Job], cluster: Cluster, policy: Policy, seed: int,
                 target: float = 1.3, slots: int = 96,
                 types: TaskTypes | None = None) -> dict[str, object]:
    """One seeded inflation run; returns figures at 100% and the allocation curve.

    The seed draws the pods, the node order (`seed_node_order`) and the policy's own
    random choices (`Policy.reseed`)."""
    import time

    rng = np.random.default_rng(seed)
    policy.reseed(seed)
    state = ClusterState(seed_node_order(cluster, seed), slots)
    types = types or TaskTypes.from_jobs(jobs)
    capacity = float(state.total_gpus)
    requested = 0.0
    at100: dict[str, float] | None = None
    failed = placed = 0
    curve: list[tuple[float, float]] = []
    order = rng.integers(0, len(jobs), size=max(int(len(jobs) * target * 4), 1024))
    # About 200 curve points whatever the cluster's size (every 256th pod left a 64-GPU
    # cluster's curve empty).
    mean_request = float(np.mean([j.gpu_request for j in jobs])) or 1.0
    every = max(1, int(target * capacity / mean_request / 200))
    t0 = time.perf_counter()
    k = 0
    while requested < target * capacity:
        if k >= len(order):
            order = np.concatenate([order, rng.integers(0, len(jobs), size=len(order))])
        job = jobs[int(order[k])].model_copy(update={"id": f"s{k}"})
        k += 1
        requested += job.gpu_request
        decision = place(policy, state, job, explain=False)
        if isinstance(decision, Placement):
            state.allocate(job, decision)
            placed += 1
        else:
            failed += 1
        if at100 is None and requested >= capacity:
            frag = float(types.fragmentation(state.free, state.cpu_free,
                                             state.cpu_unlimited).sum())
            at100 = {"allocation_ratio_at_100": state.allocated_gpus() / capacity,
                     "fragmented_gpu_share": frag / capacity,
                     "failed_pods_at_100": float(failed)}
        if k % every == 0:
            curve.append((requested / capacity, state.allocated_gpus() / capacity))
    wall = time.perf_counter() - t0
    assert at100 is not None
    return {**at100, "wall_seconds": wall, "placements_per_second": k / wall if wall else 0.0,
            "pods": float(k), "curve": curve}


def inflate(trace: Trace, cluster: Cluster, make: Callable[[], Policy], seeds: int = 10,
            target: float = 1.3, progress: Callable[[int], None] | None = None
            ) -> InflationResult:
    """Inflation over `seeds` seeds (0..seeds-1); a fresh policy per seed."""
    jobs = trace.jobs
    types = TaskTypes.from_jobs(jobs)
    per_seed: list[dict[str, object]] = []
    name = ""
    for seed in range(seeds):
        policy = make()
        name = policy.name
        per_seed.append(inflate_once(jobs, cluster, policy, seed, target, trace.slots, types))
        if progress:
            progress(seed + 1)
    curve = per_seed[0]["curve"] if per_seed else []
    clean = [{k: float(v) for k, v in s.items() if k != "curve"} for s in per_seed]
    return InflationResult(
        policy=name,
        allocation_ratio_at_100=float(np.mean([s["allocation_ratio_at_100"] for s in clean])),
        fragmented_gpu_share=float(np.mean([s["fragmented_gpu_share"] for s in clean])),
        seeds=seeds, per_seed=clean, curve=curve)  # type: ignore[arg-type]
