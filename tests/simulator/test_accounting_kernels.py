"""The compiled accounting (`accounting_kernels`) against the numpy code it replaced:
every running sum and integral equal bit for bit after every change of random
allocate/release sequences (shared GPUs, multi-GPU jobs, inference overloading its GPUs,
intervals inside one slot and across several)."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import DAY_SECONDS, Cluster, Job, Node
from gsched.scheduler.policies.policy import place
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import EPS, ClusterState, Placement
from gsched.simulator.accounting import Accounting, slot_durations


class NumpyAccounting:
    """`Accounting`'s per-change and integral arithmetic as numpy code (what it was)."""

    def __init__(self, state: ClusterState, actual: np.ndarray) -> None:
        self.state, self.actual, self.slots = state, actual, state.slots
        self.slot_len = DAY_SECONDS / state.slots
        self.gpu_price = np.repeat(state.node_price[:, None], state.max_gpus, axis=1)
        self.alloc_now, self.occupied_now, self.cost_rate, self.peak_occupied = 0.0, 0, 0.0, 0
        self.util_by_slot, self.over_by_slot = np.zeros(self.slots), np.zeros(self.slots)
        self.last_t = None
        self.alloc_s = self.util_s = self.occupied_s = self.risk_s = self.cost = 0.0
        self.slot_time, self.slot_util = np.zeros(self.slots), np.zeros(self.slots)

    def contrib(self, n, gpus):
        st = self.state
        occ = st.jobs_on_gpu[n, gpus] > 0
        if not np.count_nonzero(occ):
            return None
        if len(gpus) == 1:
            g = gpus[0]
            row = self.actual[n, g]
            over = ((row > 1.0 + EPS).astype(np.float64) if st.inference_on_gpu[n, g]
                    else np.zeros(self.slots))
            a = 1.0 - st.free[n, g]
            return (0.0 if a < 0.0 else 1.0 if a > 1.0 else float(a), 1,
                    float(st.node_price[n]), np.minimum(row, 1.0), over)
        alloc = float(np.clip(1.0 - st.free[n, gpus], 0.0, 1.0).sum())
        rows = self.actual[n, gpus, :]
        inf = (st.inference_on_gpu[n, gpus] > 0)[:, None]
        return (alloc, int(occ.sum()), float(self.gpu_price[n, gpus][occ].sum()),
                np.minimum(rows, 1.0).sum(axis=0), ((rows > 1.0 + EPS) & inf).sum(axis=0))

    def after_change(self, n, gpus, before):
        after = self.contrib(n, gpus)
        if before is None:
            if after is None:
                return
            a1, o1, p1, u1, r1 = after
            self.alloc_now += a1
            self.occupied_now += o1
            self.cost_rate += p1 / 3600.0
            self.util_by_slot += u1
            self.over_by_slot += r1
        elif after is None:
            a0, o0, p0, u0, r0 = before
            self.alloc_now += 0.0 - a0
            self.occupied_now -= o0
            self.cost_rate += (0.0 - p0) / 3600.0
            self.util_by_slot -= u0
            self.over_by_slot -= r0
        else:
            a1, o1, p1, u1, r1 = after
            a0, o0, p0, u0, r0 = before
            self.alloc_now += a1 - a0
            self.occupied_now += o1 - o0
            self.cost_rate += (p1 - p0) / 3600.0
            self.util_by_slot += u1 - u0
            self.over_by_slot += r1 - r0
        self.peak_occupied = max(self.peak_occupied, self.occupied_now)

    def advance(self, t):
        if self.last_t is None:
            self.last_t = t
            return
        t0 = self.last_t
        dt = t - t0
        s0 = int((t0 % DAY_SECONDS) // self.slot_len)
        if dt <= (s0 + 1) * self.slot_len - (t0 % DAY_SECONDS):
            self.util_s += dt * self.util_by_slot[s0]
            self.risk_s += dt * self.over_by_slot[s0]
            self.slot_time[s0] += dt
            self.slot_util[s0] += dt * self.util_by_slot[s0]
        else:
            dur = slot_durations(t0, t, self.slots)
            self.util_s += float(dur @ self.util_by_slot)
            self.risk_s += float(dur @ self.over_by_slot)
            self.slot_time += dur
            self.slot_util += dur * self.util_by_slot
        self.alloc_s += dt * self.alloc_now
        self.occupied_s += dt * self.occupied_now
        self.cost += dt * self.cost_rate
        self.last_t = t


SCALARS = ("alloc_now", "occupied_now", "cost_rate", "peak_occupied", "alloc_s", "util_s",
           "occupied_s", "risk_s", "cost")
VECTORS = ("util_by_slot", "over_by_slot", "slot_time", "slot_util")
SHAPES = [("training", 1, 0.37), ("inference", 1, 0.6), ("inference", 1, 0.25),
          ("training", 2, 1.0), ("training", 4, 1.0), ("inference", 2, 1.0),
          ("training", 8, 1.0), ("training", 1, 1.0)]


def assert_same(fast: Accounting, ref: NumpyAccounting) -> None:
    for name in SCALARS:
        x, y = getattr(fast, name), getattr(ref, name)
        assert type(x)(y) == x and np.float64(x).tobytes() == np.float64(y).tobytes(), name
    for name in VECTORS:
        assert getattr(fast, name).tobytes() == getattr(ref, name).tobytes(), name


@pytest.mark.parametrize(("seed", "deviate"), [(0, False), (1, True), (2, True), (3, False)])
def test_compiled_accounting_equals_the_numpy_code_bit_for_bit(seed, deviate):
    rng = np.random.default_rng(seed)
    counts = [8, 8, 4, 10, 8, 2]  # padding GPUs, a row longer than eight
    st = ClusterState(Cluster(nodes=[Node(name=f"n{i}", gpu_count=c, gpu_model="A100")
                                     for i, c in enumerate(counts)],
                              prices={"A100": 2.37}))
    actual = np.zeros_like(st.load) if deviate else st.load
    fast, ref = Accounting(st, actual), NumpyAccounting(st, actual)
    pol, t, extra, overloaded, shared = make_policy("binpack"), 0.0, {}, 0, 0
    for k in range(500):
        if st.running and rng.random() < 0.45:
            jid = list(st.running)[int(rng.integers(len(st.running)))]
            r = st.running[jid]
            n, gpus = r.placement.node, list(r.placement.gpus)
            fast.before_change(n, gpus)
            before = ref.contrib(n, gpus)
            st.release(jid)
            if deviate:  # as the engine does: the job's actual load leaves with it
                actual[n, gpus, :] -= extra.pop(jid)
                empty = st.jobs_on_gpu[n, gpus] == 0
                actual[n, np.array(gpus)[empty], :] = 0.0
        else:
            kind, num, share = SHAPES[int(rng.integers(len(SHAPES)))]
            job = Job(id=f"j{k}", kind=kind, submit_time=0, duration=10, num_gpu=num,
                      gpu_share=share, preemptible=kind == "training",
                      profile=rng.uniform(0.1, 1.0, 96) if kind == "inference" else None)
            d = place(pol, st, job)
            if not isinstance(d, Placement):
                continue
            n, gpus = d.node, list(d.gpus)
            fast.before_change(n, gpus)
            before = ref.contrib(n, gpus)
            st.allocate(job, d)
            if deviate:  # surges past the GPU (overload) on inference
                extra[job.id] = st.running[job.id].load * rng.uniform(0.5, 2.5, 96)
                actual[n, gpus, :] += extra[job.id]
        fast.after_change(n, gpus, None)
        ref.after_change(n, gpus, before)
        # half the steps inside one 15-minute slot, the rest across slots or days
        t += rng.uniform(1.0, 300.0) if rng.random() < 0.5 else rng.uniform(900.0, 2e5)
        fast.advance(t)
        ref.advance(t)
        assert_same(fast, ref)
        overloaded += bool(ref.over_by_slot.any())
        shared += int((st.jobs_on_gpu > 1).sum())
    assert ref.peak_occupied > 20 and shared > 50  # full, with shared GPUs
    if deviate:
        assert overloaded > 50  # the overload (SLO risk) sums were exercised
