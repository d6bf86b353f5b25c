"""Profile learning: decayed high quantile per time-of-day slot, gaps, fallbacks, real traces."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.models import DAY_SECONDS
from gsched.scheduler.packing.profiles import fill_gaps, learn_profiles

SLOT = DAY_SECONDS / 96


def days_of(levels: list[float], per_slot: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One sample stream: day d has value levels[d] in every slot, `per_slot` samples each."""
    ts, vs = [], []
    for d, lv in enumerate(levels):
        t = d * DAY_SECONDS + (np.arange(96 * per_slot) + 0.5) * SLOT / per_slot
        ts.append(t)
        vs.append(np.full(len(t), lv))
    return np.concatenate(ts), np.concatenate(vs)


def test_high_quantile_per_slot_not_the_mean():
    # 20 days; in slot 40 one day in ten is at 0.9, the rest at 0.1.
    rng = np.random.default_rng(0)
    ts, vs = days_of([0.1] * 20)
    slot = (ts % DAY_SECONDS // SLOT).astype(int)
    busy = (slot == 40) & np.isin((ts // DAY_SECONDS).astype(int), [3, 13])
    vs = np.where(busy, 0.9, vs + rng.uniform(0, 0.01, len(vs)))
    p95 = learn_profiles({"w": (ts, vs)}, half_life_days=1e9)["w"].array()
    p50 = learn_profiles({"w": (ts, vs)}, quantile=0.5, half_life_days=1e9)["w"].array()
    assert p95[40] == pytest.approx(0.9)     # the rare busy slot is planned for
    assert p50[40] < 0.12                    # the median would have missed it
    assert p95[10] < 0.12


def test_recent_days_count_more_than_old_ones():
    ts, vs = days_of([0.8] * 5 + [0.3] * 2)  # traffic halved two days ago
    decayed = learn_profiles({"w": (ts, vs)}, quantile=0.5, half_life_days=0.5)["w"]
    flat = learn_profiles({"w": (ts, vs)}, quantile=0.5, half_life_days=1e9)["w"]
    assert decayed.values[0] == pytest.approx(0.3)
    assert flat.values[0] == pytest.approx(0.8)


def test_gaps_are_filled_around_the_day_and_lower_coverage():
    ts, vs = days_of([0.5] * 3)
    slot = (ts % DAY_SECONDS // SLOT).astype(int)
    keep = ~((slot >= 10) & (slot < 20))
    vs = np.where(slot < 10, 0.2, vs)
    vs = np.where(slot >= 20, 0.6, vs)
    p = learn_profiles({"w": (ts[keep], vs[keep])})["w"]
    a = p.array()
    assert p.coverage == pytest.approx(86 / 96)
    assert a[9] == pytest.approx(0.2) and a[20] == pytest.approx(0.6)
    assert 0.2 < a[15] < 0.6  # interpolated across the gap, not zero
    assert fill_gaps(np.array([np.nan, 1.0, np.nan, 3.0]))[[0, 2]].tolist() == [2.0, 2.0]


def test_new_and_sparse_workloads_fall_back_to_their_request():
    ts, vs = days_of([0.1])
    few = (ts[:5], vs[:5])
    out = learn_profiles({"sparse": few, "ok": (ts, vs)}, requests={"sparse": 0.5, "new": 0.25})
    assert out["sparse"].source == "fallback" and out["sparse"].values == [0.5] * 96
    assert out["new"].source == "fallback" and out["new"].samples == 0
    assert out["new"].values == [0.25] * 96 and out["new"].confidence == 0.0
    assert out["ok"].source == "learned" and out["ok"].values[0] == pytest.approx(0.1)


def test_samples_after_now_are_ignored_and_capacity_scales():
    ts, vs = days_of([50.0, 100.0])
    out = learn_profiles({"w": (ts, vs)}, now=DAY_SECONDS, capacity=100.0)["w"]
    assert out.values[0] == pytest.approx(0.5)
    assert out.last_sample < DAY_SECONDS


def test_genai_duty_cycles_learn_peaky_daytime_profiles(traces_dir):
    from gsched.traces.genai import load_duty_cycle_samples

    samples = load_duty_cycle_samples(traces_dir / "alibaba-genai" /
                                      "pod_gpu_duty_cycle_anon.tar.gz")
    out = learn_profiles(samples, day_offset_s=8 * 3600)  # the service's local time
    learned = [p for p in out.values() if p.source == "learned"]
    assert len(out) == 143 and len(learned) >= 100
    a = np.array([p.values for p in learned])
    assert ((a >= 0) & (a <= 1)).all()
    # Real facts of this trace: most pods peak at over twice their daily mean, and the
    # fleet is busy in the local afternoon and nearly idle before dawn.
    assert (a.max(axis=1) > 2 * a.mean(axis=1)).mean() > 0.7
    fleet = a.sum(axis=0)
    assert 9 <= fleet.argmax() / 4 < 22
    assert fleet.argmin() / 4 < 8 and fleet.min() < 0.05 * fleet.max()
    median = learn_profiles(samples, day_offset_s=8 * 3600, quantile=0.5)
    b = np.array([median[k].values for k, p in out.items() if p.source == "learned"])
    assert (a >= b - 1e-12).all()  # the p95 profile never plans below the median


def test_servegen_learns_two_weeks_of_a_diurnal_llm_service(traces_dir):
    from gsched.traces.servegen import read_servegen

    t, rate = read_servegen(traces_dir / "servegen" / "language-m-large-chunk-0-trace.csv")
    p = learn_profiles({"m-large-0": (t, rate)}, capacity=float(np.percentile(rate, 99)))[
        "m-large-0"]
    a = p.array()
    assert p.days == pytest.approx(14, abs=0.05) and p.coverage == 1.0 and p.confidence == 1.0
    assert 7 <= a.argmax() / 4 < 12      # morning peak
    assert 1 <= a.argmin() / 4 < 6       # pre-dawn valley
    assert a.max() / a.min() > 5         # a real tide: peak over five times the valley
