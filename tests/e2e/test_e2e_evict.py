"""The leader's planner moves training out before a predicted peak through the real
Eviction API, and a PodDisruptionBudget holds it back.

There is no kube-controller-manager, so the test plays the two parts the cluster would:
the kubelet (pods are Running and Ready) and the disruption controller (the PDB's status says one
disruption is allowed). The API server does the rest: the first eviction is admitted and
recorded in the PDB's `disruptedPods`, the second is refused with 429."""

from __future__ import annotations

import pytest
from e2e_cluster import pod, wait_for
from kubernetes import dynamic

pytestmark = pytest.mark.e2e

PDB_PATH = "/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets"


def call(cp, method: str, path: str, body: dict | None = None) -> dict:
    """A raw API call: the Python client no longer has policy/v1beta1, which 1.20 serves."""
    dyn = dynamic.DynamicClient(cp.admin)
    return dyn.request(method, path, body=body).to_dict()


def test_planned_moves_go_through_the_eviction_api_and_respect_a_pdb(env):
    cp = env.cp
    env.nodes([("evict-0", 1)])
    pdb = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget",
           "metadata": {"name": "train"},
           "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "train"}}}}
    created = call(cp, "POST", PDB_PATH.format(ns=env.ns), pdb)
    # Already running on GPU 0 before gsched starts: an inference service that is busy
    # all day and two preemptible training pods; together 0.6 * 0.9 + 0.5 + 0.5 = 1.54
    # of the GPU, far over tidal's 0.9, so the planner wants both training pods out.
    running = [pod("svc", milli=600, kind="inference", profile="0.9", node="evict-0",
                   annotations={"gsched.io/gpus": "0"})]
    running += [pod(f"train-{i}", milli=500, labels={"app": "train"}, node="evict-0",
                    annotations={"gsched.io/gpus": "0"}) for i in range(2)]
    for body in running:
        env.create(body)
        # Running and Ready, as a kubelet would report (the API server lets a pod that is
        # not Ready go without touching the budget)
        cp.core.patch_namespaced_pod_status(body["metadata"]["name"], env.ns, {"status": {
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    status = {"observedGeneration": created["metadata"]["generation"],
              "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1,
              "expectedPods": 2, "disruptedPods": {}}
    call(cp, "PUT", PDB_PATH.format(ns=env.ns) + "/train/status",
         {**created, "status": status})
    env.replica("planner", policy="tidal").start()  # plans about 10 s after it starts

    def one_evicted() -> dict | None:
        left = {p["metadata"]["name"] for p in env.pods()}
        got = call(cp, "GET", PDB_PATH.format(ns=env.ns) + "/train")
        return got if len(left) == 2 and got["status"].get("disruptedPods") else None

    got = wait_for(one_evicted, 60, "the planner's first eviction")
    left = {p["metadata"]["name"] for p in env.pods()}
    assert "svc" in left  # inference is never moved
    (gone,) = {"train-0", "train-1"} - left
    # the API server admitted exactly one eviction and counted it against the budget
    assert list(got["status"]["disruptedPods"]) == [gone]
    assert got["status"]["disruptionsAllowed"] == 0
    # the second was refused (its log line may land just after the first is seen)
    log = wait_for(lambda: (lambda t: t if "429" in t else None)(
        (cp.state / "gsched-planner.log").read_text()), 30, "the planner's refused eviction")
    assert "429" in log and "disruption budget" in log
