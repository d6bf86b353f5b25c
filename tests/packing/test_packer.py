"""The CP-SAT tidal packer: feasibility (independent checker), optimality against
exhaustive search, determinism, fixed placements, move budget, bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gsched.errors import InputError
from gsched.models import Cluster, Node
from gsched.scheduler.packing.bounds import conflict_lower_bound, lower_bound
from gsched.scheduler.packing.bounds_lp import lp_lower_bound
from gsched.scheduler.packing.pack import pack, pack_problem
from gsched.scheduler.packing.plan import check_plan, count_moves
from gsched.scheduler.packing.problem import Workload, build_problem

T = 24


def tidal(peak: float, hour: float, base: float = 0.05, width: float = 4.0) -> np.ndarray:
    """A bump of height `peak` centred at `hour` over a low base, in steps of 0.01 (so the
    packer's integer loads are exact and hand arithmetic holds)."""
    h = np.arange(T)
    d = np.minimum(np.abs(h - hour), T - np.abs(h - hour))
    return np.round(np.maximum(base, peak * np.exp(-(d / width) ** 2)), 2)


def cluster(*gpus: int, model: str = "A100", mem: int = 0) -> Cluster:
    return Cluster(nodes=[Node(name=f"n{i}", gpu_count=g, gpu_model=model, gpu_memory_mib=mem)
                          for i, g in enumerate(gpus)])


def brute_force_min_gpus(workloads: list[Workload], cl: Cluster, headroom: float) -> int:
    """Fewest GPUs over every assignment (single-GPU workloads), by depth-first search."""
    cap = 1.0 - headroom + 1e-9
    gpus = [(n.name, g, n.gpu_memory_mib) for n in cl.nodes for g in range(n.gpu_count)]
    best = len(gpus) + 1
    load = np.zeros((len(gpus), T))
    mem = np.zeros(len(gpus))

    def dfs(k: int) -> None:
        nonlocal best
        used = int(((load.sum(axis=1) > 0) | (mem > 0)).sum())
        if used >= best:
            return
        if k == len(workloads):
            best = used
            return
        w = workloads[k]
        tried_empty = False
        for g in range(len(gpus)):
            empty = load[g].sum() == 0 and mem[g] == 0
            if empty and tried_empty:
                continue  # empty GPUs are interchangeable here
            if (load[g] + w.load <= cap).all() and mem[g] + w.gpu_mem_mib <= gpus[g][2]:
                load[g] += w.load
                mem[g] += w.gpu_mem_mib
                dfs(k + 1)
                load[g] -= w.load
                mem[g] -= w.gpu_mem_mib
            tried_empty |= empty

    dfs(0)
    return best


def random_instance(seed: int, n: int = 7) -> list[Workload]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prof = tidal(float(rng.choice([0.3, 0.45, 0.6, 0.75])), float(rng.integers(0, T)),
                     base=float(rng.choice([0.05, 0.1, 0.2])))
        out.append(Workload(id=f"w{i}", load=prof,
                            gpu_mem_mib=int(rng.choice([0, 8000, 20000]))))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_small_instances_are_solved_to_the_exhaustive_optimum(seed):
    wl = random_instance(seed)
    cl = cluster(3, 3, mem=32000)
    prob = build_problem(wl, cl, headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=10, seed=0)
    assert check_plan(prob, assignment) == []
    assert plan.gpus_used == brute_force_min_gpus(wl, cl, 0.1)
    assert plan.optimal and plan.lower_bound <= plan.gpus_used


def test_anti_phase_services_share_a_gpu_that_peak_reservation_cannot():
    wl = [Workload(id="day", load=tidal(0.8, 14)), Workload(id="night", load=tidal(0.8, 2))]
    plan = pack(wl, cluster(2), headroom=0.1, time_limit=5)
    assert plan.gpus_used == 1 and plan.peak_reservation_gpus == 2
    assert {a.gpus[0] for a in plan.assignments} == {0}


def test_checker_rejects_overload_memory_split_nodes_and_missing_work():
    wl = [Workload(id="a", load=tidal(0.8, 14), gpu_mem_mib=20000),
          Workload(id="b", load=tidal(0.8, 15), gpu_mem_mib=20000),
          Workload(id="c", load=np.full(T, 0.1), num_gpu=2)]
    prob = build_problem(wl, cluster(2, 2, mem=32000), headroom=0.1)
    errs = check_plan(prob, {"a": ("n0", [0]), "b": ("n0", [0]), "c": ("n0", [1, 1])})
    text = " ".join(errs)
    assert "load" in text and "memory" in text and "distinct" in text
    assert check_plan(prob, {"a": ("n0", [0])}) != []  # b and c not placed


def test_multi_gpu_workloads_stay_in_one_node_and_models_are_respected():
    cl = Cluster(nodes=[Node(name="t4", gpu_count=4, gpu_model="T4"),
                        Node(name="a", gpu_count=2, gpu_model="A100"),
                        Node(name="b", gpu_count=2, gpu_model="A100")])
    wl = [Workload(id="big", load=np.full(T, 0.5), num_gpu=2, gpu_models=("A100",)),
          Workload(id="x", load=tidal(0.4, 3), gpu_models=("A100",)),
          Workload(id="y", load=tidal(0.4, 15))]
    prob = build_problem(wl, cl, headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=5)
    assert check_plan(prob, assignment) == []
    assert assignment["big"][0] in ("a", "b") and len(set(assignment["big"][1])) == 2
    assert assignment["x"][0] in ("a", "b")
    assert plan.gpus_used == 2  # x and y ride along on big's GPUs


def lns_instance(n: int = 160) -> tuple[list[Workload], Cluster]:
    rng = np.random.default_rng(7)
    wl = [Workload(id=f"w{i}", load=tidal(float(rng.uniform(0.2, 0.7)),
                                          float(rng.integers(0, T)),
                                          base=float(rng.uniform(0.02, 0.15))))
          for i in range(n)]
    return wl, cluster(*([8] * (n // 8)))


def test_large_neighbourhood_search_is_feasible_and_deterministic_for_a_seed():
    wl, cl = lns_instance()
    kw = dict(time_limit=30, seed=3, max_iterations=8, full_model_max_vars=0, sub_limit=0.1)
    prob = build_problem(wl, cl, headroom=0.1)
    p1, a1 = pack_problem(prob, **kw)
    p2, a2 = pack_problem(build_problem(wl, cl, headroom=0.1), **kw)
    assert p1.status == "lns" and p1.lns_iterations >= 1
    assert check_plan(prob, a1) == []
    assert a1 == a2 and p1.gpus_used == p2.gpus_used
    assert p1.lower_bound <= p1.gpus_used <= p1.greedy_gpus < p1.peak_reservation_gpus


def test_ruin_and_recreate_is_feasible_deterministic_and_beats_greedy():
    wl, cl = lns_instance(200)
    kw = dict(time_limit=30, seed=5, max_iterations=300, full_model_max_vars=0, rr_share=1.0)
    prob = build_problem(wl, cl, headroom=0.1)
    p1, a1 = pack_problem(prob, **kw)
    p2, a2 = pack_problem(build_problem(wl, cl, headroom=0.1), **kw)
    assert check_plan(prob, a1) == []
    assert a1 == a2 and p1.lns_iterations == p2.lns_iterations == 300
    assert p1.lower_bound <= p1.gpus_used < p1.greedy_gpus


def test_ruin_and_recreate_respects_memory_models_multi_gpu_and_fixed_work():
    rng = np.random.default_rng(11)
    cl = Cluster(nodes=[Node(name=f"a{k}", gpu_count=4, gpu_model="A100", gpu_memory_mib=81920)
                        for k in range(12)]
                 + [Node(name=f"t{k}", gpu_count=4, gpu_model="T4", gpu_memory_mib=16384)
                    for k in range(12)])
    wl = []
    for i in range(120):
        kind = i % 6
        wl.append(Workload(
            id=f"w{i}", load=tidal(float(rng.uniform(0.2, 0.6)), float(rng.integers(0, T))),
            num_gpu=2 if kind == 0 else 1, gpu_mem_mib=int(rng.choice([4000, 12000, 30000])),
            gpu_models=("A100",) if kind == 1 else (),
            fixed=("t3", (1,)) if i == 5 else None))
    wl[5] = wl[5].model_copy(update={"gpu_mem_mib": 4000})
    prob = build_problem(wl, cl, headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=30, seed=2, max_iterations=300,
                                    full_model_max_vars=0, rr_share=1.0)
    assert check_plan(prob, assignment) == []
    assert assignment["w5"] == ("t3", [1])
    assert plan.gpus_used <= plan.greedy_gpus


def test_fixed_placements_are_kept():
    wl, cl = lns_instance(64)
    pinned = {"w0": ("n7", (5,)), "w1": ("n7", (6,)), "w2": ("n6", (0,))}
    wl = [w.model_copy(update={"fixed": pinned[w.id]}) if w.id in pinned else w for w in wl]
    prob = build_problem(wl, cl, headroom=0.1)
    for kw in (dict(full_model_max_vars=10**6), dict(full_model_max_vars=0)):
        plan, assignment = pack_problem(prob, time_limit=1, max_iterations=6, sub_limit=0.1,
                                        **kw)
        assert check_plan(prob, assignment) == []
        for wid, (node, gpus) in pinned.items():
            assert assignment[wid] == (node, list(gpus))


@pytest.mark.parametrize("budget", [0, 2])
def test_move_budget_limits_migrations(budget):
    # Six small services, each alone on its own GPU: two GPUs would do.
    wl = [Workload(id=f"s{i}", load=tidal(0.25, 4 * i), current=("n0", (i,))) for i in range(6)]
    prob = build_problem(wl, cluster(6), headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=5, move_budget=budget)
    assert check_plan(prob, assignment) == []
    assert count_moves(prob, assignment) == plan.moves <= budget
    assert plan.gpus_used == 6 - budget  # each move empties one GPU
    free, _ = pack_problem(prob, time_limit=5)
    assert free.gpus_used == brute_force_min_gpus(
        [w.model_copy(update={"current": None}) for w in wl], cluster(6), 0.1)


def test_exclusive_workloads_get_whole_gpus():
    wl = [Workload(id="train", load=np.full(T, 1.0)), Workload(id="svc", load=tidal(0.3, 3))]
    prob = build_problem(wl, cluster(2), headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=5)
    assert plan.exclusive_workloads == 1 and plan.gpus_used == 2
    assert assignment["train"][1] != assignment["svc"][1]


@pytest.mark.parametrize("bad, match", [
    (Workload(id="huge", load=np.full(T, 0.5), gpu_mem_mib=200_000), "huge.*memory"),
    (Workload(id="wide", load=np.full(T, 0.5), num_gpu=16), "wide.*16 GPUs"),
    (Workload(id="h100", load=np.full(T, 0.5), gpu_models=("H100",)), "h100.*H100"),
])
def test_workload_larger_than_any_gpu_is_a_clear_input_error(bad, match):
    with pytest.raises(InputError, match=match):
        pack([Workload(id="ok", load=np.full(T, 0.2)), bad], cluster(8, mem=81920))


def test_lower_bound_is_below_every_exhaustive_optimum():
    for seed in range(5, 9):
        wl = random_instance(seed, n=6)
        cl = cluster(3, 3, mem=32000)
        assert lower_bound(build_problem(wl, cl, 0.1)) <= brute_force_min_gpus(wl, cl, 0.1)


def test_lp_lower_bound_is_valid_and_sometimes_stronger_than_the_clique_bound():
    stronger = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        wl = [Workload(id=f"w{i}", load=tidal(float(rng.choice([0.3, 0.45, 0.55, 0.7])),
                                              float(rng.integers(0, T)),
                                              base=float(rng.choice([0.05, 0.1, 0.2])),
                                              width=float(rng.choice([3.0, 6.0]))))
              for i in range(8)]
        cl = cluster(4, 4)
        prob = build_problem(wl, cl, 0.1)
        lp, best = lp_lower_bound(prob), brute_force_min_gpus(wl, cl, 0.1)
        assert lp <= best and lower_bound(prob) <= best, seed
        stronger += lp > conflict_lower_bound(prob)
    assert stronger >= 2


def test_profile_plans_never_exceed_capacity_in_any_slot_or_gpu():
    wl, cl = lns_instance(120)
    for headroom in (0.0, 0.2):
        prob = build_problem(wl, cl, headroom=headroom)
        _, assignment = pack_problem(prob, time_limit=2, max_iterations=5, sub_limit=0.1)
        assert check_plan(prob, assignment) == []
        names = {n.name: i for i, n in enumerate(cl.nodes)}
        load = np.zeros((len(cl.nodes), 8, T))
        for w in wl:
            node, gpus = assignment[w.id]
            load[names[node], gpus] += w.load
        assert load.max() <= 1 - headroom + 1e-9


def test_every_small_assignment_enumerated_agrees_with_the_checker():
    # The checker is the oracle the other tests trust; cross-check it by hand on 2 GPUs.
    wl = [Workload(id="a", load=tidal(0.5, 2)), Workload(id="b", load=tidal(0.5, 3)),
          Workload(id="c", load=tidal(0.5, 14))]
    prob = build_problem(wl, cluster(2), headroom=0.1)
    for combo in itertools.product([0, 1], repeat=3):
        assignment = {w.id: ("n0", [g]) for w, g in zip(wl, combo, strict=True)}
        same = combo[0] == combo[1]  # a and b peak an hour apart: together they overload
        assert (check_plan(prob, assignment) == []) == (not same)


def test_cheaper_gpus_are_preferred_when_prices_differ():
    cl = Cluster(nodes=[Node(name="dear", gpu_count=2, gpu_model="H100"),
                        Node(name="cheap", gpu_count=2, gpu_model="T4")])
    wl = [Workload(id="a", load=tidal(0.5, 3)), Workload(id="b", load=tidal(0.5, 15)),
          Workload(id="c", load=tidal(0.6, 9)),
          Workload(id="big", load=tidal(0.3, 21), gpu_mem_mib=40_000)]  # needs the H100
    prob = build_problem(wl, cl, headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=5)
    assert check_plan(prob, assignment) == []
    assert assignment["big"][0] == "dear"
    assert {assignment[w][0] for w in ("a", "b", "c")} <= {"cheap", "dear"}
    # the cheapest plan: one H100 (forced) plus T4s, never a second H100
    assert plan.optimal and plan.cost_per_hour == pytest.approx(4.0 + 0.5 * (plan.gpus_used - 1))


def test_a_deterministic_budget_gives_byte_identical_plans_for_a_seed():
    # Stopped by the deterministic budget, not by an iteration cap; the wall-clock
    # guard is far away, as on a quiet machine.
    import time

    wl, cl = lns_instance(200)
    plans = []
    for _ in range(2):
        prob = build_problem(wl, cl, headroom=0.1)
        plan, _ = pack_problem(prob, time_limit=1.0, seed=4, full_model_max_vars=0,
                               deadline=time.perf_counter() + 600)
        plans.append(plan.model_dump_json())
        assert plan.stopped_by == "deterministic budget" and plan.deterministic
        assert plan.solve_seconds_kind == "deterministic"
    assert plans[0] == plans[1]


def test_the_wall_clock_deadline_cuts_the_search_and_says_so():
    import time

    wl, cl = lns_instance(200)
    prob = build_problem(wl, cl, headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=100, seed=1, full_model_max_vars=0,
                                    deadline=time.perf_counter() + 0.3)
    assert check_plan(prob, assignment) == []
    assert plan.stopped_by == "wall-clock deadline"
    assert plan.solve_seconds_kind == "wall"  # the plan may differ run to run: say so


def test_more_workers_trade_determinism_and_say_so():
    wl, cl = lns_instance(64)
    prob = build_problem(wl, cl, headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=1, workers=2, full_model_max_vars=0)
    assert check_plan(prob, assignment) == []
    assert plan.deterministic is False and plan.solve_seconds_kind == "wall"
