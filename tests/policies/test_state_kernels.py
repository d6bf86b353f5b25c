"""The compiled `allocate` / `release` (`state_kernels`) against the numpy code they
replaced: the same arrays, bit for bit, after every step of random sequences.

`NumpyState` below is `ClusterState.allocate` / `release` as they were written with
numpy (fancy indexing, `np.add.reduce`, `np.sort`); both states see the same jobs,
placements and releases, and every array is compared as raw bytes (so -0.0 against 0.0
or a last-bit difference would fail).
"""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Job, Node
from gsched.scheduler.policies.policy import place
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import ClusterState, Placement, Running, gpu_index
from gsched.scheduler.policies.state_kernels import row_sum

ARRAYS = ("free", "gpu_mem_free", "load", "preemptible_load", "preemptible_reserved",
          "jobs_on_gpu", "inference_on_gpu", "forecast_on_gpu", "node_alloc", "kth_free",
          "node_version", "cpu_free", "mem_free")


class NumpyState(ClusterState):
    """allocate/release as numpy expressions (the code the kernels replaced)."""

    def allocate(self, job, placement, load=None):
        if load is None:
            load = job.load_profile(self.slots) if job.num_gpu else np.zeros(self.slots)
        n, gpus = placement.node, placement.gpus
        if gpus:
            g = gpus[0] if len(gpus) == 1 else list(gpus)
            self.free[n, g] -= placement.reserved
            if job.gpu_mem_mib:
                self.gpu_mem_free[n, g] -= job.gpu_mem_mib
            self.load[n, g] += load
            if job.preemptible:
                self.preemptible_load[n, g] += load
                self.preemptible_reserved[n, g] += placement.reserved
            self.jobs_on_gpu[n, g] += 1
            if job.kind == "inference":
                self.inference_on_gpu[n, g] += 1
                if job.profile is not None:
                    self.forecast_on_gpu[n, g] += 1
        if job.cpu_milli:
            self.cpu_free[n] -= job.cpu_milli
        if job.memory_mib:
            self.mem_free[n] -= job.memory_mib
        if gpus:
            self._refresh(n)
        self.node_version[n] += 1
        self.running[job.id] = Running(job, placement, load)
        self.node_jobs[n][job.id] = None

    def release(self, job_id):
        r = self.running.pop(job_id)
        n, gpus = r.placement.node, r.placement.gpus
        del self.node_jobs[n][job_id]
        if gpus:
            g = gpus[0] if len(gpus) == 1 else list(gpus)
            last = (self.jobs_on_gpu[n, g] == 1).all()
            if not last:
                self.free[n, g] += r.placement.reserved
                if r.job.gpu_mem_mib:
                    self.gpu_mem_free[n, g] += r.job.gpu_mem_mib
                self.load[n, g] -= r.load
                if r.job.preemptible:
                    self.preemptible_load[n, g] -= r.load
                    self.preemptible_reserved[n, g] -= r.placement.reserved
            self.jobs_on_gpu[n, g] -= 1
            if r.job.kind == "inference":
                self.inference_on_gpu[n, g] -= 1
                if r.job.profile is not None:
                    self.forecast_on_gpu[n, g] -= 1
            if last:
                self._reset(n, g)
            elif len(gpus) > 1:
                empty = np.array(gpus)[self.jobs_on_gpu[n, g] == 0]
                if len(empty):
                    self._reset(n, empty)
        if r.job.cpu_milli:
            self.cpu_free[n] += r.job.cpu_milli
        if r.job.memory_mib:
            self.mem_free[n] += r.job.memory_mib
        if gpus:
            self._refresh(n)
        self.node_version[n] += 1
        return r

    def _refresh(self, n):
        row = self.free[n]
        self.node_alloc[n] = np.add.reduce(np.where(self.gpu_valid[n], 1.0 - row, 0.0))
        self.kth_free[:, n] = np.sort(row)[::-1]

    def _reset(self, n, idx):
        self.free[n, idx] = 1.0
        self.gpu_mem_free[n, idx] = self.gpu_mem_total[n]
        self.load[n, idx] = 0.0
        self.preemptible_load[n, idx] = 0.0
        self.preemptible_reserved[n, idx] = 0.0


SHAPES = [  # (kind, num_gpu, share, gpu memory, cpu)
    ("training", 1, 0.37, 0, 0), ("inference", 1, 0.1, 0, 2000),
    ("inference", 1, 0.3, 8000, 0), ("training", 1, 1.0, 0, 4000),
    ("training", 2, 1.0, 0, 0), ("training", 4, 1.0, 16000, 8000),
    ("training", 0, 1.0, 0, 3000), ("inference", 1, 0.25, 0, 0), ("training", 8, 1.0, 0, 0),
]


def cluster() -> Cluster:
    counts = [8, 4, 8, 2, 6, 8, 1, 8, 10]  # padding GPUs, and a row longer than eight
    return Cluster(nodes=[Node(name=f"n{i}", gpu_count=c, gpu_model="A100",
                               gpu_memory_mib=40000, cpu_milli=64000 if i % 2 else 0)
                          for i, c in enumerate(counts)])


def random_job(rng: np.random.Generator, k: int) -> Job:
    kind, n, share, mem, cpu = SHAPES[int(rng.integers(len(SHAPES)))]
    profile = rng.uniform(0.05, 1.0, 96) if kind == "inference" and k % 3 else None
    return Job(id=f"j{k}", kind=kind, submit_time=0, duration=10, num_gpu=n,
               gpu_share=share, gpu_mem_mib=mem, cpu_milli=cpu, preemptible=bool(k % 2),
               utilization=float(np.round(rng.uniform(0.3, 1.0), 2)), profile=profile)


def assert_same_bits(a: ClusterState, b: ClusterState) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_compiled_allocate_and_release_equal_the_numpy_code_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    fast, ref = ClusterState(cluster()), NumpyState(cluster())
    pol = make_policy("binpack")
    shared = 0
    for k in range(400):
        if fast.running and rng.random() < 0.45:
            jid = list(fast.running)[int(rng.integers(len(fast.running)))]
            fast.release(jid)
            ref.release(jid)
        else:
            job = random_job(rng, k)
            d = place(pol, fast, job)
            if isinstance(d, Placement):
                fast.allocate(job, d)
                ref.allocate(job, d)
        shared += int((fast.jobs_on_gpu > 1).sum())
        assert_same_bits(fast, ref)
    assert shared > 50  # GPUs were shared, so the += / -= paths ran, not only resets


def test_row_sum_is_numpys_pairwise_sum():
    rng = np.random.default_rng(5)
    for n in [*range(0, 40), 64, 127, 128, 129, 136, 255, 256, 257, 1000, 4099]:
        for _ in range(20):
            a = rng.random(n) * rng.choice([1e-3, 1.0, 1e3], n)
            assert row_sum(a) == np.add.reduce(a)


def test_a_load_of_the_wrong_length_is_refused_before_the_kernel_runs():
    st = ClusterState(cluster())
    job = Job(id="x", kind="training", submit_time=0, num_gpu=1)
    with pytest.raises(ValueError, match="96 slots"):
        st.allocate(job, Placement(0, (0,), 1.0), np.ones(48))
    assert not st.running and st.free[0, 0] == 1.0


def test_gpu_index_is_the_tuple_as_int64():
    idx = gpu_index((3, 1, 2))
    assert idx.dtype == np.int64 and idx.tolist() == [3, 1, 2]
    assert gpu_index([3, 1, 2]) is idx
