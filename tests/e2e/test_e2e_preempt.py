"""Preemption through kube-scheduler 1.20 and gsched's preempt verb.

Needs the two backports build.sh applies (tests/e2e/patches/): without the first,
kube-scheduler 1.20.2 never calls an extender's preemptVerb (kubernetes#102971)."""

from __future__ import annotations

import pytest
from e2e_cluster import assert_no_gpu_double_booked, metric, pod, wait_for
from kubernetes import client

pytestmark = pytest.mark.e2e


def test_a_high_priority_pod_preempts_training_chosen_by_gsched(env):
    cp = env.cp
    env.nodes([("pre-0", 2)])
    r = env.replica("preempt", policy="binpack").start()
    sched = client.SchedulingV1Api(cp.admin)
    name, mid = f"{env.ns}-high", f"{env.ns}-mid"
    sched.create_priority_class({"metadata": {"name": name}, "value": 1000})
    sched.create_priority_class({"metadata": {"name": mid}, "value": 500})
    try:
        # the node is full: an inference service and a best-effort training pod
        svc = pod("svc", gpus=1, kind="inference")
        svc["spec"]["priorityClassName"] = mid
        env.create(svc)
        env.create(pod("train", gpus=1))
        env.wait_bound(["svc", "train"])
        urgent = pod("urgent", gpus=1, kind="inference")
        urgent["spec"]["priorityClassName"] = name
        env.create(urgent)
        (p,) = env.wait_bound(["urgent"], timeout=120)
        left = {q["metadata"]["name"] for q in env.pods()}
        # gsched kept the inference service and offered the training pod
        assert left == {"svc", "urgent"}
        assert metric(r, "gsched_preemptions_total", kind="training") >= 1
        assert metric(r, "gsched_preemptions_total", kind="inference") == 0
        assert_no_gpu_double_booked(env.pods(), env.gpu_counts)
        wait_for(lambda: metric(r, "gsched_extender_requests_total", verb="preempt",
                                code="200") >= 1, 10, "a preempt request in gsched's metrics")
    finally:
        sched.delete_priority_class(name)
        sched.delete_priority_class(mid)
