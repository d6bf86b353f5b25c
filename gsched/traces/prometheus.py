"""GPU utilisation history from a Prometheus server that scrapes dcgm-exporter.

Most GPU clusters already run NVIDIA's dcgm-exporter into Prometheus. Its
`DCGM_FI_DEV_GPU_UTIL` (percent, per GPU) carries, in Kubernetes mode, the `namespace`,
`pod` and `container` of the pod using the GPU, with `gpu` (index) and `Hostname`.
This module reads that history over the Prometheus HTTP API and hands back plain
per-pod samples; `gsched profiles learn` learns daily profiles from them and
`gsched trace build --prometheus` turns them into a native trace.

Two ways to read, both PromQL over a time range, chunked (`chunk_s`, a day by default)
so no answer grows past what Prometheus allows:
- `step_s = 0` (default): every raw sample, with a range-vector selector
  `DCGM_FI_DEV_GPU_UTIL{pod!=""}[<chunk>]` evaluated at each chunk's end
  (`/api/v1/query`). What is learned is then exactly what the samples say.
- `step_s > 0`: a range query (`/api/v1/query_range`) at that resolution, each point
  the newest sample within Prometheus' lookback: less data for long windows on big
  clusters, at the cost of resampling.

A pod's *workload*, the key a profile is learned under and the one `gsched serve`
looks profiles up by, is `namespace/name` of its owner, derived from the pod name as
Kubernetes builds it: a Deployment's `<name>-<template hash>-<5 chars>` and a
StatefulSet's `<name>-<ordinal>` become `<name>`; any other pod is its own workload.
A label given with `workload_label` (e.g. one a relabelling copies from the pod) wins.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gsched.errors import InputError, UnavailableError
from gsched.models import DAY_SECONDS, DEFAULT_SLOTS, Job, Trace
from gsched.traces.servegen import daily_mean

METRIC = "DCGM_FI_DEV_GPU_UTIL"
_DEPLOYMENT_POD = re.compile(r"^(?P<name>.+)-[0-9a-z]{5,10}-[0-9a-z]{5}$")
_STATEFUL_POD = re.compile(r"^(?P<name>.+)-\d+$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY_SECONDS, "w": 7 * DAY_SECONDS}


def parse_duration(text: str, what: str = "--since") -> float:
    """`14d`, `36h`, `90m`, `2w` or plain seconds, as seconds."""
    t = text.strip()
    m = _DURATION.match(t)
    try:
        secs = float(m.group(1)) * _UNITS[m.group(2)] if m else float(t)
    except ValueError:
        secs = -1.0
    if not secs > 0 or not math.isfinite(secs):
        raise InputError(f"not a duration: {text!r} (e.g. 14d, 36h, 90m)", field=what)
    return secs


def workload_of(namespace: str, pod: str) -> str:
    """`namespace/owner` from a pod name (see the module docstring)."""
    m = _DEPLOYMENT_POD.match(pod) or _STATEFUL_POD.match(pod)
    return f"{namespace}/{m.group('name') if m else pod}"


@dataclass
class PodSeries:
    """One pod's utilisation history: per GPU it used, (timestamps s, utilisation 0..1)."""

    namespace: str
    pod: str
    workload: str
    node: str = ""
    gpus: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """All GPUs' samples, time-sorted (a multi-GPU pod: each GPU is one sample)."""
        ts = np.concatenate([t for t, _ in self.gpus.values()]) if self.gpus else np.empty(0)
        vs = np.concatenate([v for _, v in self.gpus.values()]) if self.gpus else np.empty(0)
        order = np.argsort(ts, kind="stable")
        return ts[order], vs[order]

    @property
    def span(self) -> tuple[float, float]:
        ts, _ = self.samples()
        return float(ts.min()), float(ts.max())


class PrometheusReader:
    """Reads `DCGM_FI_DEV_GPU_UTIL` history from one Prometheus server."""

    def __init__(self, url: str, *, metric: str = METRIC, selector: str = 'pod!=""',
                 timeout_s: float = 60.0, workload_label: str | None = None) -> None:
        if not re.match(r"^https?://", url):
            raise InputError(f"not an http(s) URL: {url!r}", field="--prometheus")
        self.url = url.rstrip("/")
        self.metric, self.selector = metric, selector
        self.timeout_s = timeout_s
        self.workload_label = workload_label

    # ------------------------------------------------------------------ HTTP
    def _get(self, path: str, params: dict[str, str]) -> dict:
        q = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{q}", timeout=self.timeout_s) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                detail = json.loads(e.read()).get("error", "")
            except (ValueError, OSError):
                detail = ""
            raise UnavailableError(f"Prometheus at {self.url}: {e.code} {e.reason}"
                                   + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise UnavailableError(f"Prometheus at {self.url} unreachable: {reason}") from None
        if body.get("status") != "success":
            raise UnavailableError(f"Prometheus at {self.url}: {body.get('error', body)}")
        return body["data"]

    def _series(self) -> str:
        return f"{self.metric}{{{self.selector}}}"

    # ---------------------------------------------------------------- reading
    def read(self, start: float, end: float, *, step_s: float = 0.0,
             chunk_s: float = DAY_SECONDS) -> dict[str, PodSeries]:
        """Per pod (`namespace/pod`), its GPUs' samples in [start, end]."""
        if end <= start:
            return {}
        pods: dict[str, PodSeries] = {}
        parts: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        for lo, hi in _chunks(start, end, chunk_s):
            for labels, ts, vs in self._chunk(lo, hi, step_s):
                ns, pod = labels.get("namespace", ""), labels.get("pod", "")
                if not pod:
                    continue
                key = f"{ns}/{pod}"
                ps = pods.get(key)
                if ps is None:
                    wl = labels.get(self.workload_label or "") if self.workload_label else ""
                    ps = pods[key] = PodSeries(ns, pod, f"{ns}/{wl}" if wl
                                               else workload_of(ns, pod))
                ps.node = ps.node or labels.get("Hostname", "") or labels.get("instance", "")
                gpu = f"{labels.get('Hostname', '')}/{labels.get('gpu', '')}"
                parts.setdefault((key, gpu), []).append((ts, vs))
        for (key, gpu), chunks in parts.items():
            ts = np.concatenate([c[0] for c in chunks])
            vs = np.concatenate([c[1] for c in chunks])
            ts, first = np.unique(ts, return_index=True)  # chunk edges may repeat one
            pods[key].gpus[gpu] = (ts, np.clip(vs[first] / 100.0, 0.0, 1.0))
        return pods

    def _chunk(self, lo: float, hi: float, step_s: float
               ) -> Iterable[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        if step_s > 0:
            data = self._get("/api/v1/query_range", {
                "query": self._series(), "start": _fmt(lo), "end": _fmt(hi),
                "step": _fmt(step_s)})
        else:
            # samples in (hi - window, hi]: the chunks tile [start, end] without overlap
            window = max(int(math.ceil(hi - lo)), 1)
            data = self._get("/api/v1/query", {"query": f"{self._series()}[{window}s]",
                                               "time": _fmt(hi)})
        for r in data.get("result") or []:
            vals = r.get("values") or []
            if not vals:
                continue
            arr = np.asarray([(float(t), float(v)) for t, v in vals], dtype=np.float64)
            keep = np.isfinite(arr[:, 1]) & (arr[:, 0] >= lo if step_s > 0 else True)
            yield r.get("metric") or {}, arr[keep, 0], arr[keep, 1]


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _chunks(start: float, end: float, size: float) -> list[tuple[float, float]]:
    out, lo = [], start
    while lo < end:
        hi = min(lo + size, end)
        out.append((lo, hi))
        lo = hi
    return out


def samples_by_workload(pods: dict[str, PodSeries]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every pod's samples grouped under its workload (what profiles are learned from)."""
    grouped: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for ps in pods.values():
        grouped.setdefault(ps.workload, []).append(ps.samples())
    out = {}
    for wl, parts in grouped.items():
        ts = np.concatenate([p[0] for p in parts])
        vs = np.concatenate([p[1] for p in parts])
        order = np.argsort(ts, kind="stable")
        out[wl] = (ts[order], vs[order])
    return out


def trace_from_history(pods: dict[str, PodSeries], *, start: float, end: float,
                       step_s: float = 60.0, slots: int = DEFAULT_SLOTS,
                       utc_offset_hours: float = 0.0, name: str = "prometheus") -> Trace:
    """A native trace of what ran: one job per pod.

    - `submit_time` is the pod's first sample, counted from local midnight of the day
      `start` falls in (`utc_offset_hours` gives local time); `duration` its last
      sample minus its first plus one sample interval. A pod still reporting within
      two intervals of `end` runs to the end of the trace (inference) - its real end
      is unknown.
    - `num_gpu`: the GPUs it reported on. Whole GPUs: dcgm-exporter cannot tell a
      GPU's share, so a shared GPU appears once per pod, each at its own load.
    - kind: a workload with a controller-shaped name (Deployment or StatefulSet pods)
      is `inference`, with its daily profile (the per-slot mean of the workload's
      samples, by name); every other pod is `training`, flat at its mean utilisation.
    """
    offset = utc_offset_hours * 3600.0
    day0 = math.floor((start + offset) / DAY_SECONDS) * DAY_SECONDS - offset
    by_wl = samples_by_workload(pods)
    profiles: dict[str, np.ndarray] = {}
    jobs: list[Job] = []
    for key in sorted(pods, key=lambda k: (pods[k].span[0], k)):
        ps = pods[key]
        ts, vs = ps.samples()
        if len(ts) == 0:
            continue
        first, last = float(ts.min()), float(ts.max())
        controlled = bool(_DEPLOYMENT_POD.match(ps.pod) or _STATEFUL_POD.match(ps.pod))
        running = last >= end - 2 * step_s
        jid = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        common = dict(id=jid, submit_time=first - day0, num_gpu=max(len(ps.gpus), 1),
                      gpu_share=1.0)
        if controlled:
            if ps.workload not in profiles:
                t_w, v_w = by_wl[ps.workload]
                profiles[ps.workload] = np.clip(daily_mean(t_w, v_w, slots, offset), 0, 1)
            jobs.append(Job(kind="inference", **common,
                            duration=None if running else last - first + step_s,
                            profile=profiles[ps.workload], profile_name=ps.workload))
        else:
            jobs.append(Job(kind="training", **common, duration=last - first + step_s,
                            utilization=float(np.clip(vs.mean(), 0.0, 1.0))))
    return Trace(jobs=jobs, slots=slots, source=name)


def build_from_prometheus(url: str, since: str = "14d", *, until: float | None = None,
                          step_s: float = 0.0, slots: int = DEFAULT_SLOTS,
                          utc_offset_hours: float = 0.0) -> Trace:
    """`gsched trace build --prometheus`: read the history, make the trace."""
    window = parse_duration(since)
    reader = PrometheusReader(url)
    end = until if until is not None else time.time()
    pods = reader.read(end - window, end, step_s=step_s)
    if not pods:
        raise InputError(f"no {METRIC} samples with a pod label in the {since} before "
                         f"{end:.0f} (--until)", field="--prometheus")
    interval = _median_interval(pods) if step_s <= 0 else step_s
    return trace_from_history(pods, start=end - window, end=end, step_s=interval,
                              slots=slots, utc_offset_hours=utc_offset_hours,
                              name=f"prometheus {url} ({since} to {end:.0f})")


def _median_interval(pods: dict[str, PodSeries]) -> float:
    gaps = [np.median(np.diff(t)) for ps in pods.values() for t, _ in ps.gpus.values()
            if len(t) > 1]
    return float(np.median(gaps)) if gaps else 60.0
