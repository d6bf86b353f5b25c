"""Re-planning running and queued work with the CP-SAT packer."""

from __future__ import annotations

import numpy as np

from gsched.models import Cluster, Job, Node
from gsched.scheduler.packing.replan import WorkItem, replan, window_load


def cluster(gpus: int) -> Cluster:
    return Cluster(nodes=[Node(name="n0", gpu_count=gpus, gpu_model="A100")])


def infer(jid: str, level: float) -> Job:
    return Job(id=jid, kind="inference", submit_time=0, profile=np.full(96, level))


def train(jid: str, util: float) -> Job:
    return Job(id=jid, kind="training", submit_time=0, duration=3600, preemptible=True,
               utilization=util)


def item(job: Job, where: tuple[str, tuple[int, ...]] | None = None) -> WorkItem:
    load = (window_load(job, 96, 0, 8) if job.preemptible else job.load_profile(96))
    return WorkItem(job, load, where)


def test_window_load_is_the_job_over_the_window_only() -> None:
    w = window_load(train("t", 0.4), 96, 94, 4)
    assert np.flatnonzero(w).tolist() == [0, 1, 94, 95]
    assert w.max() == 0.4


def test_replan_moves_running_training_onto_a_shared_gpu_within_budget() -> None:
    running = [item(infer("svc", 0.5), ("n0", (0,))), item(train("t", 0.4), ("n0", (1,)))]
    plan = replan(running, [], cluster(3), headroom=0.1, move_budget=1, time_limit=1.0)
    assert plan.status == "ok"
    assert plan.targets["svc"] == ("n0", (0,))  # inference is fixed where it runs
    assert plan.targets["t"] == ("n0", (0,))    # training joins it: one GPU, not two
    assert plan.moves == ["t"] and plan.gpus == 1


def test_replan_without_move_budget_keeps_running_work_in_place() -> None:
    running = [item(infer("svc", 0.5), ("n0", (0,))), item(train("t", 0.4), ("n0", (1,)))]
    plan = replan(running, [], cluster(3), headroom=0.1, move_budget=0, time_limit=1.0)
    assert plan.targets["t"] == ("n0", (1,)) and plan.moves == []


def test_replan_places_queued_work_and_drops_the_tail_that_cannot_fit() -> None:
    running = [item(infer("svc", 0.5), ("n0", (0,)))]
    queued = [item(train(f"q{k}", 0.8)) for k in range(5)]  # room for one per free GPU
    plan = replan(running, queued, cluster(2), headroom=0.1, move_budget=0, time_limit=1.0)
    assert plan.status == "ok"
    assert 1 <= plan.planned_queued < 5
    assert plan.dropped_queued == 5 - plan.planned_queued
    assert "q0" in plan.targets  # the queue head is what is kept
    on_gpu1 = [j for j, (_, g) in plan.targets.items() if g == (1,)]
    assert len(on_gpu1) <= 1
