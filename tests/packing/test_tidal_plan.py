"""Tidal time planning: training pieces in the valleys, restarts paid, checked slot by slot."""

from __future__ import annotations

import itertools

import numpy as np

from gsched.scheduler.packing.tidal_plan import (
    Piece,
    TrainingJob,
    TrainingPlan,
    check_training_plan,
    plan_training,
)

VALLEYS = np.array([[0.8, 0.8, 0.0, 0.0, 0.0, 0.8, 0.0, 0.0]])  # free: 2-4 and 6-7


def best_work_by_enumeration(free: np.ndarray, work: int, restart: int, segments: int) -> int:
    """Most effective work of one job on one GPU: try every set of up to `segments`
    disjoint runs of free slots."""
    runs = [(a, b) for a in range(len(free)) for b in range(a + 1, len(free) + 1)
            if free[a:b].all()]
    best = 0
    for k in range(1, segments + 1):
        for combo in itertools.combinations(runs, k):
            ordered = sorted(combo)
            if any(x[1] > y[0] for x, y in zip(ordered, ordered[1:], strict=False)):
                continue
            best = max(best, min(work, sum(b - a for a, b in combo) - restart * (k - 1)))
    return best


def test_a_checkpoint_restart_costs_work_and_the_optimum_is_exact():
    job = TrainingJob(id="a", load=0.5, work_slots=5)
    for restart in (0, 1, 2):
        plan = plan_training(VALLEYS, [job], capacity=0.9, restart_slots=restart)
        assert plan.status == "optimal"
        assert check_training_plan(VALLEYS, [job], plan, 0.9, restart) == []
        free = VALLEYS[0] + 0.5 <= 0.9
        assert plan.work_done["a"] == best_work_by_enumeration(free, 5, restart, 3)
    # with a restart as dear as the second valley, one piece in the first valley is best
    plan = plan_training(VALLEYS, [job], capacity=0.9, restart_slots=2)
    assert plan.work_done["a"] == 3 and plan.restarts == 0


def test_training_fills_the_valleys_of_anti_phase_gpus_without_overload():
    h = np.arange(96) / 4

    def bump(hour: float) -> np.ndarray:
        d = np.minimum(np.abs(h - hour), 24 - np.abs(h - hour))
        return np.maximum(0.1, 0.8 * np.exp(-(d / 4) ** 2))

    firm = np.array([bump(14), bump(2)])
    jobs = [TrainingJob(id=f"t{i}", load=0.5, work_slots=30) for i in range(3)]
    plan = plan_training(firm, jobs, capacity=0.9, restart_slots=2, time_limit=5)
    assert check_training_plan(firm, jobs, plan, 0.9, 2) == []
    assert sum(plan.work_done.values()) >= 60
    for p in plan.pieces:  # every piece sits where the inference forecast leaves room
        assert (firm[p.gpu, p.start:p.end] + 0.5 <= 0.9 + 1e-9).all()


def test_checker_catches_overload_double_booking_and_inflated_work():
    job = TrainingJob(id="a", load=0.5, work_slots=5)
    bad = TrainingPlan(pieces=[Piece(job="a", gpu=0, start=0, end=3),
                               Piece(job="a", gpu=0, start=2, end=5)],
                       work_done={"a": 6}, restarts=1, status="feasible", objective=None,
                       bound=None, solve_seconds=0.0)
    text = " ".join(check_training_plan(VALLEYS, [job], bad, 0.9, 1))
    assert "load" in text and "overlap" in text and "claims" in text


def test_gpus_a_job_may_not_use_stay_unused():
    firm = np.zeros((2, 8))
    jobs = [TrainingJob(id="a", load=0.6, work_slots=8, allowed=(1,)),
            TrainingJob(id="b", load=0.6, work_slots=8)]
    plan = plan_training(firm, jobs, capacity=0.9)
    assert check_training_plan(firm, jobs, plan, 0.9) == []
    assert {p.gpu for p in plan.pieces if p.job == "a"} == {1}
    assert plan.work_done == {"a": 8, "b": 8}
