"""The per-node aggregates ClusterState keeps up to date on allocate/release, and the
fast paths built on them, against a from-scratch computation: equal bit for bit.

Random allocate/release sequences on a cluster with nodes of different GPU counts (so
padding GPUs exist), fractional shares that are not binary fractions (0.37, 0.1), GPU
memory, CPU, multi-GPU and CPU-only jobs, and the load guard's closed GPUs.
"""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Job, Node
from gsched.scheduler.policies.fgd_paper import PaperFGDPolicy
from gsched.scheduler.policies.policy import Policy, PolicyConfig, place
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import EPS, ClusterState, Placement

SHAPES = [  # (num_gpu, share, gpu memory, cpu)
    (1, 0.37, 0, 0), (1, 0.1, 0, 2000), (1, 0.5, 8000, 0), (1, 1.0, 0, 4000),
    (2, 1.0, 0, 0), (4, 1.0, 16000, 8000), (0, 1.0, 0, 3000), (1, 0.25, 0, 0),
]


def mixed_cluster() -> Cluster:
    counts = [8, 4, 8, 2, 6, 8, 1, 8]
    return Cluster(nodes=[Node(name=f"n{i}", gpu_count=c, gpu_model="A100" if i % 3 else "V100",
                               gpu_memory_mib=40000, cpu_milli=64000 if i % 2 else 0)
                          for i, c in enumerate(counts)])


def random_job(rng: np.random.Generator, k: int) -> Job:
    n, share, mem, cpu = SHAPES[int(rng.integers(len(SHAPES)))]
    return Job(id=f"j{k}", kind="training", submit_time=0, duration=10, num_gpu=n,
               gpu_share=share, gpu_mem_mib=mem, cpu_milli=cpu, preemptible=bool(k % 2))


def slow_fit_mask(st: ClusterState, job: Job, reserve: float) -> np.ndarray:
    """The feasibility test the grid way: per GPU, then per node (fit_reasons' rule)."""
    return st.fit_reasons(job, reserve) == 0


def assert_aggregates_fresh(st: ClusterState) -> None:
    fresh_alloc = np.where(st.gpu_valid, 1.0 - st.free, 0.0).sum(axis=1)
    assert np.array_equal(st.node_alloc, fresh_alloc)
    assert np.array_equal(st.node_gpu_alloc(), fresh_alloc)
    assert np.array_equal(st.kth_free, np.sort(st.free, axis=1)[:, ::-1].T)
    for n in range(st.n_nodes):
        assert st.node_key(n) == (st.free[n].tobytes() + st.gpu_mem_free[n].tobytes()
                                  + st.cpu_free[n].tobytes() + st.mem_free[n].tobytes())


def random_walk(seed: int, steps: int = 300):
    """Yield the state after each of `steps` random placements (by binpack) or releases."""
    rng = np.random.default_rng(seed)
    st = ClusterState(mixed_cluster())
    pol = make_policy("binpack")
    for k in range(steps):
        if st.running and rng.random() < 0.45:
            st.release(list(st.running)[int(rng.integers(len(st.running)))])
        else:
            j = random_job(rng, k)
            d = place(pol, st, j)
            if isinstance(d, Placement):
                st.allocate(j, d)
        yield st, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aggregates_equal_a_fresh_computation_after_random_allocate_and_release(seed):
    touched = 0
    for st, _ in random_walk(seed):
        assert_aggregates_fresh(st)
        touched += bool(st.running)
    assert touched > 100  # the walk did fill the cluster, not just start and stop


@pytest.mark.parametrize("seed", [3, 4])
def test_fast_feasibility_equals_the_per_gpu_test(seed):
    checked = 0
    for st, rng in random_walk(seed, steps=200):
        # now and then the guard closes a few GPUs (written directly, as the guards do)
        st.blocked[:] = rng.random(st.blocked.shape) < (0.1 if rng.random() < 0.3 else 0.0)
        for n_gpu, share, mem, cpu in SHAPES:
            job = Job(id="probe", kind="training", submit_time=0, duration=1, num_gpu=n_gpu,
                      gpu_share=share, gpu_mem_mib=mem, cpu_milli=cpu)
            for reserve in (share, 0.3):
                want = slow_fit_mask(st, job, reserve)
                assert np.array_equal(st.fit_mask(job, reserve), want)
                subset = rng.permutation(st.n_nodes)[:3]
                assert np.array_equal(st.fit_mask(job, reserve, subset), want[subset])
                checked += int(want.any())
        st.blocked[:] = False
    assert checked > 200


def test_fitting_gpus_equals_the_grid_mask():
    for st, rng in random_walk(5, steps=150):
        st.blocked[:] = rng.random(st.blocked.shape) < 0.15
        for n_gpu, share, mem, cpu in SHAPES:
            job = Job(id="probe", kind="training", submit_time=0, duration=1, num_gpu=n_gpu,
                      gpu_share=share, gpu_mem_mib=mem, cpu_milli=cpu)
            for n in range(st.n_nodes):
                want = np.flatnonzero((st.free[n] >= share - EPS)
                                      & (st.gpu_mem_free[n] >= mem) & ~st.blocked[n]
                                      & st.gpu_valid[n]).tolist()
                assert st.fitting_gpus(job, share, n) == want
        st.blocked[:] = False


def test_kth_free_answers_how_many_gpus_have_room():
    st = ClusterState(mixed_cluster())
    j = Job(id="a", kind="training", submit_time=0, duration=1, num_gpu=1, gpu_share=0.37)
    st.allocate(j, Placement(node=1, gpus=(2,), reserved=0.37))
    # node 1 has 4 GPUs: three free, one with 0.63 left; padding (-1) after them
    assert st.kth_free[:, 1].tolist() == [1.0, 1.0, 1.0, 1.0 - 0.37, -1, -1, -1, -1]
    st.release("a")
    assert st.kth_free[:, 1].tolist() == [1.0] * 4 + [-1.0] * 4
    assert st.node_alloc[1] == 0.0


def test_fgd_memo_gives_the_answers_of_a_fresh_computation():
    """`fgd` remembers each node's answer by node state; a policy that never saw the
    earlier states (so computes everything) must agree on every node."""
    workload = [random_job(np.random.default_rng(9), k) for k in range(60)]
    cfg = PolicyConfig(workload=workload)
    long_lived = PaperFGDPolicy(cfg)
    hits = 0
    for i, (st, _) in enumerate(random_walk(6, steps=250)):
        if i % 5:
            continue
        for n_gpu, share, mem, cpu in SHAPES:
            job = Job(id="probe", kind="training", submit_time=0, duration=1, num_gpu=n_gpu,
                      gpu_share=share, gpu_mem_mib=mem, cpu_milli=cpu)
            feasible = Policy.feasible(long_lived, st, job)
            fresh = PaperFGDPolicy(cfg)
            assert np.array_equal(long_lived.score(st, job, feasible),
                                  fresh.score(st, job, feasible))
            for n in np.flatnonzero(feasible):
                assert long_lived.choose_gpus(st, job, n) == fresh.choose_gpus(st, job, n)
        hits += sum(len(c.memo) for c in long_lived._cache.values())
    assert hits > 0
