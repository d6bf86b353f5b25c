"""Daily load profiles learned from utilisation samples.

The tidal packer needs, per workload, how busy it will be at each time of day. We learn
that from history (agent reports, or a trace's samples) as a *high quantile* per
time-of-day slot, not a mean: a packer that plans on the mean overloads half the days.
Recent days count more than old ones (exponential decay by day age), so a service whose
traffic grew last week is planned at its new level.

Gaps: slots never observed are filled by circular interpolation between the nearest
observed slots (load is smooth over the day); a workload with too little history
(too few samples or too little of the day covered) falls back to a flat profile at its
request, which is exactly what a request-based scheduler would have booked, so a new
workload is never packed more aggressively than Kubernetes would pack it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from gsched.models import DAY_SECONDS, DEFAULT_SLOTS


class LearnedProfile(BaseModel):
    """One workload's learned daily profile and how much to trust it.

    `values` are utilisation of the workload's GPU share per slot, in [0, 1].
    `coverage` is the share of slots that had samples; `confidence` in [0, 1] grows with
    coverage and with the (decay-weighted) days of history, and is 0 for a fallback.
    """

    values: list[float]
    samples: int = Field(ge=0)
    days: float = Field(ge=0, description="span of the history used, in days")
    last_sample: float | None = Field(description="timestamp of the newest sample")
    coverage: float = Field(ge=0, le=1)
    confidence: float = Field(ge=0, le=1)
    source: Literal["learned", "fallback"] = "learned"
    margin: float = Field(default=0.0, ge=0,
                          description="own forecast margin (relative) already in `values`")

    def array(self) -> np.ndarray:
        return np.asarray(self.values, dtype=np.float64)

    @property
    def peak(self) -> float:
        return max(self.values)

    @property
    def valley(self) -> float:
        return min(self.values)


def _weighted_quantile_by_slot(slot: np.ndarray, value: np.ndarray, weight: np.ndarray,
                               slots: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted `q`-quantile of `value` within each slot; NaN where a slot is empty.

    One lexsort over (slot, value), then cumulative weights per slot: O(n log n) for all
    slots at once instead of a Python loop per slot.
    """
    order = np.lexsort((value, slot))
    s, v, w = slot[order], value[order], weight[order]
    counts = np.bincount(s, minlength=slots)
    totals = np.bincount(s, weights=w, minlength=slots)
    cum = np.cumsum(w)
    start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    before = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    within = cum - np.repeat(before, counts)
    target = np.repeat(q * totals, counts)
    # First sample of each slot whose cumulative weight reaches q of the slot's total.
    hit = within >= target - 1e-12
    idx = np.full(slots, -1, dtype=np.int64)
    pos = np.flatnonzero(hit)
    first = np.unique(s[pos], return_index=True)
    idx[first[0]] = pos[first[1]]
    out = np.full(slots, np.nan)
    ok = idx >= 0
    out[ok] = v[idx[ok]]
    return out, counts


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Fill NaN slots by circular linear interpolation between observed slots."""
    ok = np.isfinite(values)
    if ok.all() or not ok.any():
        return values if ok.any() else np.zeros_like(values)
    x = np.arange(len(values))
    return np.interp(x, x[ok], values[ok], period=len(values))


def learn_profile(timestamps: np.ndarray, values: np.ndarray, now: float | None = None,
                  slots: int = DEFAULT_SLOTS, quantile: float = 0.95,
                  half_life_days: float = 3.0, capacity: float = 1.0,
                  request: float = 1.0, min_samples: int = 24, min_coverage: float = 0.5,
                  full_confidence_days: float = 3.0, day_offset_s: float = 0.0,
                  max_age_days: float | None = None) -> LearnedProfile:
    """Learn one workload's profile; see `learn_profiles` for the parameters."""
    ts = np.asarray(timestamps, dtype=np.float64).ravel()
    vs = np.asarray(values, dtype=np.float64).ravel()
    if ts.shape != vs.shape:
        raise ValueError(f"timestamps ({ts.shape}) and values ({vs.shape}) differ in shape")
    ok = np.isfinite(ts) & np.isfinite(vs)
    ts, vs = ts[ok], vs[ok]
    if now is None:
        now = float(ts.max()) if len(ts) else 0.0
    keep = ts <= now
    if max_age_days is not None:
        keep &= ts >= now - max_age_days * DAY_SECONDS
    ts, vs = ts[keep], vs[keep]
    fallback = LearnedProfile(values=[float(request)] * slots, samples=int(len(ts)),
                              days=float((ts.max() - ts.min()) / DAY_SECONDS) if len(ts) else 0.0,
                              last_sample=float(ts.max()) if len(ts) else None,
                              coverage=0.0, confidence=0.0, source="fallback")
    if len(ts) < min_samples:
        return fallback
    util = np.clip(vs / capacity, 0.0, 1.0)
    slot_len = DAY_SECONDS / slots
    slot = (((ts + day_offset_s) % DAY_SECONDS) // slot_len).astype(np.int64) % slots
    age_days = (now - ts) / DAY_SECONDS
    weight = np.power(0.5, age_days / half_life_days) if half_life_days > 0 else np.ones_like(ts)
    prof, counts = _weighted_quantile_by_slot(slot, util, weight, slots, quantile)
    coverage = float((counts > 0).mean())
    if coverage < min_coverage:
        fallback.coverage = coverage
        return fallback
    prof = fill_gaps(prof)
    days = float((ts.max() - ts.min()) / DAY_SECONDS)
    # Effective days: decay-weighted history, so a month-old burst earns little trust.
    eff = float(weight.sum() / max(len(ts), 1) * max(days, 1.0 / slots))
    confidence = coverage * (min(1.0, eff / full_confidence_days)
                             if full_confidence_days > 0 else 1.0)
    return LearnedProfile(values=[float(x) for x in np.clip(prof, 0.0, 1.0)],
                          samples=int(len(ts)), days=days, last_sample=float(ts.max()),
                          coverage=coverage, confidence=float(min(max(confidence, 0.0), 1.0)))


def learn_profiles(samples: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   now: float | None = None, slots: int = DEFAULT_SLOTS,
                   quantile: float = 0.95, half_life_days: float = 3.0,
                   capacity: float | Mapping[str, float] = 1.0,
                   requests: Mapping[str, float] | None = None,
                   min_samples: int = 24, min_coverage: float = 0.5,
                   full_confidence_days: float = 3.0, day_offset_s: float = 0.0,
                   max_age_days: float | None = None) -> dict[str, LearnedProfile]:
    """Learn a daily profile for every workload from its utilisation samples.

    - `samples[w] = (timestamps_s, values)`; values are divided by `capacity` (a number,
      or one per workload: 100 for percent duty cycles, a service's saturation rate for
      request rates) and clipped to [0, 1].
    - `now` (default: the newest sample of all workloads) anchors the decay: a sample
      `a` days old weighs 0.5 ** (a / half_life_days); samples after `now` are ignored,
      and so are those older than `max_age_days` when given.
    - Each slot's value is the weighted `quantile` of its samples, over every past day.
    - Workloads in `requests` but without (enough) samples get a flat profile at their
      request (default 1.0, a whole GPU busy): the fallback is never optimistic.
    - `day_offset_s` shifts timestamps into local time before folding onto the day.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if slots < 1:
        raise ValueError(f"slots must be positive, got {slots}")
    if now is None:
        lasts = [float(np.nanmax(t)) for t, _ in samples.values() if len(t)]
        now = max(lasts) if lasts else 0.0
    requests = requests or {}
    out: dict[str, LearnedProfile] = {}
    for wid, (ts, vs) in samples.items():
        cap = capacity[wid] if isinstance(capacity, Mapping) else capacity
        if cap <= 0:
            raise ValueError(f"capacity of {wid!r} must be positive, got {cap}")
        out[wid] = learn_profile(ts, vs, now=now, slots=slots, quantile=quantile,
                                 half_life_days=half_life_days, capacity=cap,
                                 request=requests.get(wid, 1.0), min_samples=min_samples,
                                 min_coverage=min_coverage,
                                 full_confidence_days=full_confidence_days,
                                 day_offset_s=day_offset_s, max_age_days=max_age_days)
    for wid, req in requests.items():
        if wid not in out:
            out[wid] = LearnedProfile(values=[float(req)] * slots, samples=0, days=0.0,
                                      last_sample=None, coverage=0.0, confidence=0.0,
                                      source="fallback")
    return out


def samples_from_long(ids: np.ndarray, timestamps: np.ndarray, values: np.ndarray
                      ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Group long-format samples (one row per sample) into `learn_profiles` input."""
    ids = np.asarray(ids)
    order = np.argsort(ids, kind="stable")
    ids_s = ids[order]
    uniq, start = np.unique(ids_s, return_index=True)
    ends = np.append(start[1:], len(ids_s))
    ts, vs = np.asarray(timestamps)[order], np.asarray(values)[order]
    return {str(u): (ts[a:b], vs[a:b]) for u, a, b in zip(uniq, start, ends, strict=True)}
