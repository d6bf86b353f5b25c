"""Every lower bound is sound: bound <= exhaustive optimum <= the packer's plan, on random
small instances with multi-GPU work, binding memory, GPU-model constraints and fixed
placements; and the clique bound counts a multi-GPU member's room once per GPU."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gsched.models import Cluster, Node
from gsched.scheduler.packing.bounds import (
    BOUND_NAMES,
    compute_bounds,
    conflict_lower_bound,
    lower_bound,
)
from gsched.scheduler.packing.pack import pack_problem
from gsched.scheduler.packing.plan import check_plan
from gsched.scheduler.packing.problem import Workload, build_problem

T = 12


def exhaustive_min_gpus(prob) -> int:
    """Fewest GPUs over every feasible assignment, checked in floats like `check_plan`:
    capacity per slot (an exclusive workload alone may exceed it), memory, models,
    multi-GPU work on one node, fixed placements. Depth-first with a used-count prune."""
    usable = 1.0 - prob.headroom + 1e-9
    g_all = prob.n_gpus
    options = []
    for i in range(prob.n_items):
        if i in prob.fixed:
            options.append([prob.fixed[i]])
            continue
        ok = np.flatnonzero(prob.allowed(i))
        k = int(prob.num_gpu[i])
        opts = [combo for n in range(len(prob.node_names))
                for combo in itertools.combinations(ok[prob.gpu_node[ok] == n], k)]
        options.append([tuple(int(g) for g in c) for c in opts])
    order = sorted(range(prob.n_items), key=lambda i: len(options[i]))
    load = np.zeros((g_all, prob.slots))
    mem = np.zeros(g_all)
    count = np.zeros(g_all, dtype=int)
    excl = np.zeros(g_all, dtype=bool)
    best = g_all + 1

    def fits(i, gs) -> bool:
        gs = list(gs)
        if (mem[gs] + prob.mem[i] > prob.gpu_mem[gs]).any() or excl[gs].any():
            return False
        if prob.exclusive[i]:
            return not count[gs].any()
        return bool((load[gs] + prob.load[i] <= usable).all())

    def dfs(d: int) -> None:
        nonlocal best
        used = int((count > 0).sum())
        if used >= best:
            return
        if d == len(order):
            best = used
            return
        i = order[d]
        for gs in options[i]:
            if fits(i, gs):
                g = list(gs)
                load[g] += prob.load[i]
                mem[g] += prob.mem[i]
                count[g] += 1
                excl[g] |= bool(prob.exclusive[i])
                dfs(d + 1)
                load[g] -= prob.load[i]
                mem[g] -= prob.mem[i]
                count[g] -= 1
                excl[g] = False if prob.exclusive[i] else excl[g]

    dfs(0)
    return best


def random_instance(seed: int):
    """2-3 nodes of 2-3 GPUs (A100 80 GB or T4 16 GB), 5-7 workloads: tidal bumps at 3
    decimals (so rounding matters), some multi-GPU, memory that binds, some restricted to
    a model, sometimes one fixed, sometimes one exclusive."""
    rng = np.random.default_rng(seed)
    nodes = []
    for k in range(int(rng.integers(2, 4))):
        model, mem = (("A100", 81920), ("T4", 16384))[int(rng.random() < 0.35)]
        nodes.append(Node(name=f"n{k}", gpu_count=int(rng.integers(2, 4)), gpu_model=model,
                          gpu_memory_mib=mem))
    cl = Cluster(nodes=nodes)
    h = np.arange(T)
    wl = []
    for i in range(int(rng.integers(5, 8))):
        peak, hour = float(rng.uniform(0.15, 0.8)), float(rng.integers(0, T))
        d = np.minimum(np.abs(h - hour), T - np.abs(h - hour))
        prof = np.round(np.maximum(float(rng.uniform(0.02, 0.2)),
                                   peak * np.exp(-(d / rng.uniform(1.5, 4)) ** 2)), 3)
        if rng.random() < 0.1:
            prof = np.ones(T)  # exclusive training
        k = 2 if rng.random() < 0.2 else 1
        mem = int(rng.choice([0, 6000, 9000, 30000, 45000]))
        models = ("A100",) if rng.random() < 0.2 or mem > 16384 else ()
        wl.append(Workload(id=f"w{i}", load=prof, num_gpu=k, gpu_mem_mib=mem,
                           gpu_models=models))
    if rng.random() < 0.4:
        w = wl[0]
        node = next((n for n in nodes if n.gpu_count >= w.num_gpu
                     and n.gpu_memory_mib >= w.gpu_mem_mib
                     and (not w.gpu_models or n.gpu_model in w.gpu_models)), None)
        if node is not None:
            wl[0] = w.model_copy(update={"fixed": (node.name, tuple(range(w.num_gpu)))})
    return wl, cl


def feasible_instances(n: int):
    out, seed = [], 0
    while len(out) < n:
        wl, cl = random_instance(seed)
        seed += 1
        try:
            prob = build_problem(wl, cl, headroom=0.1)
        except Exception:  # noqa: BLE001 - an instance that can never fit: draw again
            continue
        opt = exhaustive_min_gpus(prob)
        if opt + 2 <= prob.n_gpus:
            out.append((seed - 1, prob, opt))
    return out


INSTANCES = feasible_instances(36)


@pytest.mark.parametrize("seed, prob, opt", INSTANCES, ids=[str(s) for s, _, _ in INSTANCES])
def test_every_bound_is_below_the_exhaustive_optimum_which_is_below_the_plan(seed, prob, opt):
    b = compute_bounds(prob)
    assert set(b.values) == set(BOUND_NAMES)
    for name, v in b.values.items():
        assert v is not None and v <= opt, (name, v, opt)
    plan, assignment = pack_problem(prob, time_limit=2, seed=0)
    assert check_plan(prob, assignment) == []
    assert opt <= plan.gpus_used
    assert plan.lower_bound == b.best <= opt
    assert plan.bounds[plan.binding_bound] == plan.lower_bound


def test_the_instances_exercise_what_the_issue_asks_for():
    probs = [p for _, p, _ in INSTANCES]
    assert sum((p.num_gpu > 1).any() for p in probs) >= 5
    assert sum(bool(p.fixed) for p in probs) >= 5
    assert sum(any(p.models) for p in probs) >= 5
    assert sum(len(set(p.gpu_model)) > 1 for p in probs) >= 5
    # memory binds: the memory bound alone beats the load bound somewhere
    assert any(compute_bounds(p).values["memory"] > compute_bounds(p).values["load"]
               for p in probs)


def test_clique_counts_a_multi_gpu_members_room_on_each_of_its_gpus():
    # Two 4-GPU jobs at 0.5 cannot share a GPU (a clique of 8 GPUs); eight 0.35 services
    # fit in the room they leave, one per GPU: 8 GPUs in all. Counting each member's
    # room once (the old bug) claimed 11.
    cl = Cluster(nodes=[Node(name=f"n{k}", gpu_count=4) for k in range(3)])
    wl = [Workload(id=f"big{k}", load=np.full(T, 0.5), num_gpu=4) for k in range(2)]
    wl += [Workload(id=f"s{k}", load=np.full(T, 0.35)) for k in range(8)]
    prob = build_problem(wl, cl, headroom=0.1)
    plan, assignment = pack_problem(prob, time_limit=3)
    assert check_plan(prob, assignment) == []
    assert plan.gpus_used == 8
    assert conflict_lower_bound(prob) == 8 == lower_bound(prob)


def test_memory_bound_sees_what_load_cannot():
    # Six light services of 30 GB on 80 GB GPUs: load says 1 GPU, memory says 3.
    cl = Cluster(nodes=[Node(name="n0", gpu_count=8, gpu_memory_mib=81920)])
    wl = [Workload(id=f"s{k}", load=np.full(T, 0.1), gpu_mem_mib=30_000) for k in range(6)]
    b = compute_bounds(build_problem(wl, cl, headroom=0.1))
    assert b.values["load"] == 1 and b.values["memory"] == 3 and b.best == 3
    assert b.binding == "memory"


def test_a_bound_out_of_time_is_reported_cut_not_guessed():
    rng = np.random.default_rng(0)
    wl = [Workload(id=f"w{i}", load=np.round(rng.uniform(0.05, 0.6, T), 3)) for i in range(60)]
    prob = build_problem(wl, Cluster(nodes=[Node(name="n", gpu_count=64)]), headroom=0.1)
    b = compute_bounds(prob, seconds=0.0)
    assert b.values["clique"] is None and b.values["lp"] is None
    assert set(b.cut) == {"clique", "lp"}
    assert b.values["load"] is not None and b.best == max(v for v in b.values.values() if v)
