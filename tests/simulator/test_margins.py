"""Per-workload margins in the simulator: what a service books, and what really arrives."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import Job, Trace
from gsched.simulator.load import LoadDeviation
from gsched.simulator.margins import book_job, with_margins


def svc(share: float, level: float = 0.8) -> Job:
    return Job(id=f"s{share}", kind="inference", submit_time=0, gpu_share=share,
               profile=np.full(96, level), profile_name="flat")


def test_a_booking_over_the_request_raises_it_up_to_a_whole_gpu() -> None:
    job = svc(0.5)
    within = book_job(job, np.full(96, 0.45), "b")
    assert within.gpu_share == 0.5 and within.load_profile(96).max() == pytest.approx(0.45)
    raised = book_job(job, np.full(96, 0.7), "b")
    assert raised.gpu_share == pytest.approx(0.7)
    assert raised.load_profile(96).max() == pytest.approx(0.7)
    assert raised.profile_name == "b@0.5"  # its profile depends on the request now
    whole = book_job(job, np.linspace(0.2, 1.4, 96), "b")
    assert whole.gpu_share == 1.0 and np.all(whole.load_profile(96) == 1.0)


def test_noisy_services_book_beyond_their_request_but_carry_their_own_load() -> None:
    jobs = [svc(0.5)]
    dev = LoadDeviation(noise=0.3, seed=1)
    clipped, _ = with_margins(Trace(jobs=jobs, source="t"), dev, q=0.9)
    beyond, booked_dev = with_margins(Trace(jobs=jobs, source="t"), dev, q=0.9,
                                      beyond_request=True)
    # 0.8 x (1 + margin) is over 1: clipped, it books its request; beyond, more
    assert clipped.jobs[0].load_profile(96).max() == pytest.approx(0.5)
    assert beyond.jobs[0].gpu_share > 0.5
    # the load that arrives is the same either way: the forecast, perturbed, at 0.5
    real = booked_dev.actual_load(beyond.jobs[0], beyond.jobs[0].load_profile(96))
    plain = dev.actual_load(jobs[0], jobs[0].load_profile(96))
    assert np.allclose(real, plain)
