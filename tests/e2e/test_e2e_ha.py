"""Two `gsched serve` replicas elect a leader through a Lease; the leader is killed while
pods keep arriving: nothing is double-booked and scheduling resumes under the other."""

from __future__ import annotations

import signal
import time

import pytest
from e2e_cluster import assert_no_gpu_double_booked, lease_holder, metric, pod, wait_for

pytestmark = pytest.mark.e2e


def test_leader_killed_mid_stream_nothing_double_booked_and_scheduling_resumes(env):
    env.nodes([(f"ha-{i}", 8) for i in range(4)])  # 32 GPUs for 28 GPUs of pods
    a = env.replica("replica-a").start()
    b = env.replica("replica-b").start()
    replicas = {"replica-a": a, "replica-b": b}
    leader = wait_for(lambda: lease_holder(env.cp), 30, "a gsched leader")
    bodies = []
    for i in range(30):
        if i % 3 == 0:
            bodies.append(pod(f"p{i:02d}", milli=250, kind="inference"))
        elif i % 5 == 0:
            bodies.append(pod(f"p{i:02d}", gpus=2))
        else:
            bodies.append(pod(f"p{i:02d}", gpus=1))
    names = [b["metadata"]["name"] for b in bodies]
    for body in bodies[:10]:
        env.create(body)
        time.sleep(0.2)
    env.wait_bound(names[:10])
    replicas[leader].stop(signal.SIGKILL)  # no goodbye: the lease has to run out
    for body in bodies[10:]:  # the stream goes on while there is no leader
        env.create(body)
        time.sleep(0.2)
    pods = env.wait_bound(names, timeout=180)
    assert_no_gpu_double_booked(pods, env.gpu_counts)
    survivor = next(n for n in replicas if n != leader)
    assert lease_holder(env.cp) == survivor
    assert metric(replicas[survivor], "gsched_binds_total", outcome="bound") >= 20
