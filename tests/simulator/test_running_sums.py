"""The engine's incremental bookkeeping against a from-scratch computation.

The accounting keeps running sums (allocation, occupied GPUs, cost rate, utilisation and
overload per slot) that each start and finish adjusts by the GPUs it touched, and the
engine keeps the jobs per GPU that re-rating reads. Stopped in the middle of a busy
synthetic replay (shared GPUs, multi-GPU jobs, inference, preemptions), every one of them
must equal what the cluster's state says now.
"""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Cluster, Node
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import EPS
from gsched.simulator.engine import SimConfig, Simulation
from gsched.traces.synthetic import SyntheticSpec, generate


@pytest.mark.parametrize(("policy", "until"), [("binpack", 40_000.0), ("fgd", 70_000.0),
                                               ("binpack", 90_000.0)])
def test_running_sums_equal_the_state_mid_replay(policy, until):
    cl = Cluster(nodes=[Node(name=f"n{i}", gpu_count=8, gpu_model="A100") for i in range(6)],
                 prices={"A100": 2.5})
    tr = generate(SyntheticSpec(jobs=2000, jobs_per_day=20_000, seed=1))
    sim = Simulation(tr, cl, make_policy(policy, PolicyConfig(workload=tr.jobs)),
                     SimConfig(until_s=until))
    sim.run()
    st, acct = sim.state, sim.acct
    assert sim.preemptions > 0 and len(st.running) > 10  # a busy, shared cluster
    occ = st.jobs_on_gpu > 0
    assert occ.sum() > 0 and (st.jobs_on_gpu > 1).any()
    assert acct.occupied_now == int(occ.sum())
    assert acct.alloc_now == pytest.approx(float(np.clip(1.0 - st.free, 0, 1)[occ].sum()))
    assert acct.cost_rate == pytest.approx(2.5 * occ.sum() / 3600.0)
    rows = sim.actual[occ]
    assert np.allclose(acct.util_by_slot, np.minimum(rows, 1.0).sum(axis=0))
    inf = (st.inference_on_gpu > 0)[occ][:, None]
    assert np.allclose(acct.over_by_slot, ((rows > 1.0 + EPS) & inf).sum(axis=0))
    # jobs per GPU, as the engine keeps them for re-rating, against the placements
    want: dict[tuple[int, int], set[str]] = {}
    for jid, r in st.running.items():
        for g in r.placement.gpus:
            want.setdefault((r.placement.node, g), set()).add(jid)
    got = {k: set(v) for k, v in sim.on_gpu.items() if v}
    assert got == want
