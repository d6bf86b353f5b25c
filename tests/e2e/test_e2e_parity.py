"""Parity: the same trace through `gsched simulate` and through kube-scheduler 1.20 with
the gsched extender lands every pod on the same node and the same GPUs.

The plan (tests/e2e/parity_trace.py: 40 pods - whole-GPU, 2-, 4- and 8-GPU training,
shared inference with daily profiles - arriving in order, 24 finishing) is played on the
real control plane first: each pod is created and waited for until bound, each finish
is a deletion, and each step waits until gsched's own view has caught up
(`gsched_pods_placed`). The wall-clock times of those steps become the trace's times, so
the simulator sees the same time of day as the extender (tidal's forecast window starts
at the current quarter-hour). Then `gsched simulate --placements` replays the trace.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from e2e_cluster import GSCHED, assert_no_gpu_double_booked, gpus_of, metric, pod, wait_for
from parity_trace import (
    NODE_CPU,
    NODE_MEMORY,
    NODES,
    first_starts,
    make_plan,
    write_cluster,
    write_trace,
)

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("policy", ["tidal", "binpack"])
def test_simulator_and_real_cluster_place_every_pod_alike(env, policy, tmp_path):
    env.nodes(NODES, cpu=NODE_CPU, memory=NODE_MEMORY)
    jobs, steps = make_plan()
    # The expected workload (the target distribution fgd-style scores weigh) is the
    # plan's jobs, as the simulator takes the simulated trace's own.
    order = {j.name: float(k) for k, j in enumerate(jobs)}
    workload = write_trace(tmp_path / "workload.csv", jobs, order, {})
    r = env.replica(f"parity-{policy}", policy=policy,
                    extra=["--no-move-training", "--workload", str(workload)]).start()
    by_name = {j.name: j for j in jobs}
    created: dict[str, float] = {}
    deleted: dict[str, float] = {}
    real: dict[str, tuple[str, tuple[int, ...]]] = {}
    live = 0
    for event, name in steps:
        if event == "arrive":
            j = by_name[name]
            created[name] = time.time()
            env.create(pod(name, gpus=j.gpus, milli=j.milli, kind=j.kind, profile=j.profile))
            (p,) = env.wait_bound([name], timeout=60)
            real[name] = (p["spec"]["nodeName"], tuple(sorted(gpus_of(p))))
            live += 1
        else:
            deleted[name] = time.time()
            env.cp.delete_pod(env.ns, name)
            live -= 1
        wait_for(lambda n=live: metric(r, "gsched_pods_placed") == n, 30,
                 f"gsched to see {live} pods after {event} {name}", every=0.05)
    assert_no_gpu_double_booked(env.pods(), env.gpu_counts, by_profile=True)

    trace = write_trace(tmp_path / "parity.csv", jobs, created, deleted)
    cluster = write_cluster(tmp_path / "cluster.yaml")
    out = tmp_path / "placements.csv"
    subprocess.run([str(GSCHED), "simulate", str(trace), "--cluster", str(cluster),
                    "--policy", policy, "--placements", str(out), "-q"], check=True,
                   timeout=300)
    sim, stops = first_starts(out, policy)
    assert set(sim) == set(real)  # every job started in the simulator too, none queued
    # the simulator stopped exactly the pods the plan finished, before any move
    assert stops[: len(deleted)] == [n for e, n in steps if e == "finish"]
    differ = {n: (real[n], sim[n]) for n in real if real[n] != sim[n]}
    assert not differ, f"{len(differ)} of {len(real)} pods placed differently " \
                       f"(real, simulated): {differ}"
    assert real["j37-train8"][1] == tuple(range(8))  # the 8-GPU job found a whole node
