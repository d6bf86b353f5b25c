"""Shortcuts in filter and prioritize answer exactly as the long way.

- `ClusterState.fit_reasons(job, reserve, nodes)` asks about some rows only: it must be
  the full answer at those rows;
- `tidal`'s filter asks only the infeasible nodes why: it must equal the full reasons
  with the profile reason where nothing else fails;
- the 0..10 ranks need the ten highest distinct scores: `_top_levels` must be what a
  full sort gives, ties or not.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_tidal_cache import cluster, random_job

from gsched.scheduler.policies.policy import _top_levels, place
from gsched.scheduler.policies.registry import make_policy
from gsched.scheduler.policies.state import ClusterState, Placement, Reason


@pytest.mark.parametrize("seed", [0, 1])
def test_reasons_of_some_rows_and_tidal_reasons_match_the_full_answer(seed):
    rng = np.random.default_rng(seed)
    pol = make_policy("tidal")
    st = ClusterState(cluster())
    checked = 0
    for i in range(60):
        job = random_job(rng, i)
        rows = rng.permutation(st.n_nodes)[: int(rng.integers(0, st.n_nodes + 1))]
        for reserve in (-np.inf, job.gpu_share):
            full = st.fit_reasons(job, reserve)
            assert np.array_equal(st.fit_reasons(job, reserve, rows), full[rows])
        want = st.fit_reasons(job, -np.inf)
        if job.num_gpu:
            want[(want == 0) & ~pol.feasible(st, job)] = Reason.PROFILE
        got = pol.filter(st, job)
        assert np.array_equal(got, want) and got.dtype == want.dtype
        checked += int((got != 0).any())
        d = place(pol, st, job)
        if isinstance(d, Placement):
            st.allocate(job, d)
    assert checked > 10  # some jobs did not fit everywhere


@pytest.mark.parametrize("seed", range(8))
def test_top_levels_are_those_of_a_full_sort(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    vals = np.round(rng.normal(size=n), int(rng.integers(0, 5)))  # few levels, or many
    for top in (1, 10):
        assert np.array_equal(_top_levels(vals, top), np.unique(vals)[-top:])
