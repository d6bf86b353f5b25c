"""The tidal policy follows the current plan, with its online score as the fallback."""

from __future__ import annotations

import numpy as np

from gsched.models import Cluster, Job, Node
from gsched.scheduler.policies.policy import PolicyConfig, place
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import ClusterState, Placement


def state() -> ClusterState:
    cl = Cluster(nodes=[Node(name=f"n{k}", gpu_count=2, gpu_model="A100") for k in range(3)])
    st = ClusterState(cl)
    busy = Job(id="busy", kind="inference", submit_time=0, profile=np.full(96, 0.3),
               gpu_share=1.0)
    st.allocate(busy, Placement(0, (0,), 1.0))  # the online score prefers node 0 (occupied)
    return st


def job(jid: str = "j", util: float = 0.3) -> Job:
    return Job(id=jid, kind="training", submit_time=0, duration=600, preemptible=True,
               utilization=util)


def test_without_a_plan_the_online_score_decides() -> None:
    pol = make_policy("tidal", PolicyConfig())
    p = place(pol, state(), job())
    assert isinstance(p, Placement) and p.node == 0 and p.gpus == (0,)


def test_the_planned_node_and_gpus_win_when_they_fit() -> None:
    pol = make_policy("tidal", PolicyConfig())
    st = state()
    st.plan = {"j": (2, (1,))}
    p = place(pol, st, job())
    assert isinstance(p, Placement) and (p.node, p.gpus) == (2, (1,))


def test_a_plan_that_no_longer_fits_falls_back_to_the_online_score() -> None:
    pol = make_policy("tidal", PolicyConfig())
    st = state()
    st.plan = {"j": (0, (0,))}  # GPU 0 of node 0 has 0.3; the job needs 0.8: no room
    p = place(pol, st, job(util=0.8))
    assert isinstance(p, Placement) and (p.node, p.gpus) == (0, (1,))
    st.plan = {"other": (2, (1,))}  # a plan that does not name the job changes nothing
    p = place(pol, st, job())
    assert isinstance(p, Placement) and (p.node, p.gpus) == (0, (0,))


def test_the_guard_s_closed_gpus_take_no_new_work() -> None:
    pol = make_policy("tidal", PolicyConfig())
    st = state()
    st.blocked[0, 0] = True
    st.node_version[0] += 1
    p = place(pol, st, job())
    assert isinstance(p, Placement) and (p.node, p.gpus) != (0, (0,))
    peak = make_policy("peak", PolicyConfig())
    st.blocked[:] = True
    assert not isinstance(place(peak, st, job()), Placement)
