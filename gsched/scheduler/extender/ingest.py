"""Agent-report ingestion (`POST /v1/reports`) and profile learning from its history.

`IngestService.handle(body, headers)` is a plain function of the request, mounted on the
scheduler's HTTP server through `routes()`. It answers:

- 401 when a token is configured and the request's bearer token is not it;
- 413 for a body over `max_body_bytes`; 400 for bad JSON or a report that fails
  validation, naming the first bad field (`{"error", "field", "detail"}`);
- 200 `{"duplicate": false, "samples": n}` for a new report, stored in SQLite history;
- 200 `{"duplicate": true}` for a report id it already has — the agent may delete it.

It keeps the scheduler's agent metrics current (`gsched_agent_reports_total`,
`gsched_agent_samples_total`, `gsched_agent_last_report_timestamp_seconds`,
`gsched_node_actual_utilization_ratio`, `gsched_cluster_gpu_utilization_ratio`) and, with
`predict_nodes`, `gsched_node_predicted_utilization_ratio` from learned profiles.

`refresh_profiles()` (every `profile_interval_s` once `start()`ed) learns every
workload's daily profile from history with `profiles.learn_profiles`, books each at
(1 + its own margin) once it has held-back days (`forecast.own_margin`, `margin_quantile`),
sets `gsched_profile_last_update_timestamp_seconds` and hands the result to
`on_profiles` (e.g. the extender's profile store).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import ValidationError

from gsched.agents.model import Report
from gsched.models import DAY_SECONDS, DEFAULT_SLOTS
from gsched.scheduler.extender.history import UsageHistory
from gsched.scheduler.extender.metrics import SchedulerMetrics
from gsched.scheduler.packing.forecast import booking, own_margin
from gsched.scheduler.packing.profiles import LearnedProfile, learn_profiles

log = logging.getLogger(__name__)

REPORTS_ROUTE = ("POST", "/v1/reports")
Handler = Callable[[bytes, Mapping[str, str]], tuple[int, dict]]


@dataclass
class _NodeState:
    util: float
    gpus: int
    received_at: float
    gpu_workloads: dict[str, list[str]]  # GPU UUID -> workloads seen on it
    newest_sample: float


def _header(headers: Mapping[str, str], name: str) -> str | None:
    want = name.lower()
    for k, v in headers.items():
        if k.lower() == want:
            return v
    return None


def _field_of(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(report)"
    return loc, first.get("msg", "invalid")


class IngestService:
    """Validates, stores and accounts for agent reports; learns profiles from them."""

    def __init__(self, history: UsageHistory, metrics: SchedulerMetrics, token: str | None,
                 *, max_body_bytes: int = 8 << 20, stale_after_s: float = 120.0,
                 slots: int = DEFAULT_SLOTS, window_days: float = 14.0,
                 profile_interval_s: float = 300.0, retention_days: float | None = 15.0,
                 predict_nodes: bool = True,
                 on_profiles: Callable[[dict[str, LearnedProfile]], None] | None = None,
                 learn_kwargs: Mapping[str, object] | None = None,
                 clock: Callable[[], float] = time.time,
                 on_report: Callable[[Report], object] | None = None,
                 margin_quantile: float | None = 0.9, margin_holdout_days: int = 3) -> None:
        self.history = history
        self.metrics = metrics
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.stale_after_s = stale_after_s
        self.slots = slots
        self.window_days = window_days
        self.profile_interval_s = profile_interval_s
        self.retention_days = retention_days
        self.predict_nodes = predict_nodes
        self.on_profiles = on_profiles
        self.learn_kwargs = dict(learn_kwargs or {})
        self.margin_quantile = margin_quantile
        self.margin_holdout_days = margin_holdout_days
        self.clock = clock
        #: called with every accepted report (the load guard, extender/guard.py)
        self.on_report = on_report
        self.profiles: dict[str, LearnedProfile] = {}
        self._nodes: dict[str, _NodeState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def routes(self) -> dict[tuple[str, str], Handler]:
        """What to pass as the server's `extra_routes`."""
        return {REPORTS_ROUTE: self.handle}

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        if not self.token:
            return True
        got = _header(headers, "Authorization") or ""
        scheme, _, cred = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(),
                                                                  self.token.encode())

    def handle(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, dict]:
        """One `POST /v1/reports`: (HTTP status, JSON-able answer)."""
        m = self.metrics
        if not self._authorised(headers):
            m.reports.labels(node="", outcome="rejected").inc()
            return 401, {"error": "missing or wrong bearer token"}
        if len(body) > self.max_body_bytes:
            m.reports.labels(node="", outcome="rejected").inc()
            return 413, {"error": f"report is {len(body)} bytes, over the limit of "
                                  f"{self.max_body_bytes}"}
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            m.reports.labels(node="", outcome="rejected").inc()
            return 400, {"error": f"invalid JSON: {e}"}
        node_label = raw.get("node") if isinstance(raw, dict) else None
        node_label = node_label if isinstance(node_label, str) and len(node_label) <= 253 \
            else ""
        try:
            report = Report.model_validate(raw)
        except ValidationError as e:
            field, detail = _field_of(e)
            m.reports.labels(node=node_label, outcome="rejected").inc()
            return 400, {"error": f"invalid report: field '{field}': {detail}", "field": field,
                         "detail": detail}
        now = self.clock()
        duplicate, n = self.history.store(report, received_at=now)
        if duplicate:
            m.reports.labels(node=report.node, outcome="duplicate").inc()
            return 200, {"ok": True, "duplicate": True, "report_id": report.report_id}
        m.reports.labels(node=report.node, outcome="accepted").inc()
        m.samples.inc(n)
        m.last_report.labels(node=report.node).set(now)
        self._account(report, now)
        if self.on_report is not None:
            try:
                self.on_report(report)
            except Exception:  # the guard must never cost the agent its report
                log.exception("acting on the report from %s", report.node)
        return 200, {"ok": True, "duplicate": False, "report_id": report.report_id,
                     "samples": n}

    def _account(self, report: Report, now: float) -> None:
        utils = [float(np.mean(s.util)) for s in report.gpus]
        placed: dict[str, list[str]] = {}
        for s in report.workloads:
            placed.setdefault(s.gpu, []).append(s.workload or "")
        newest = max((s.t[-1] for s in report.gpus + report.workloads), default=now)
        with self._lock:
            if utils:
                node_util = float(np.mean(utils))
                self.metrics.node_actual_util.labels(node=report.node).set(node_util)
                self._nodes[report.node] = _NodeState(node_util, len(utils), now, placed,
                                                      newest)
            elif report.node in self._nodes:
                self._nodes[report.node].received_at = now
            fresh = [s for s in self._nodes.values() if now - s.received_at <= self.stale_after_s]
            gpus = sum(s.gpus for s in fresh)
            if gpus:
                self.metrics.cluster_utilization.set(sum(s.util * s.gpus for s in fresh) / gpus)
            if self.predict_nodes and self.profiles and report.node in self._nodes:
                self._predict(report.node, self._nodes[report.node])

    def _predict(self, node: str, state: _NodeState) -> None:
        """Predicted utilisation of a node in the slot of its newest sample: per GPU, the
        sum of its workloads' learned profiles, capped at 1, averaged over the GPUs.

        Only learned profiles count; a workload still on its fallback (too little
        history) contributes nothing rather than its request, so the gauge compares
        prediction with measurement and is absent until something was learned."""
        slot = int((state.newest_sample % DAY_SECONDS) // (DAY_SECONDS / self.slots))
        learned = {w: p for w, p in self.profiles.items() if p.source == "learned"}
        if not learned:
            return
        per_gpu = []
        for _gpu, wls in state.gpu_workloads.items():
            per_gpu.append(min(1.0, sum(learned[w].values[slot] for w in wls if w in learned)))
        per_gpu += [0.0] * max(state.gpus - len(per_gpu), 0)
        if per_gpu:
            self.metrics.node_predicted_util.labels(node=node).set(float(np.mean(per_gpu)))

    def refresh_profiles(self, now: float | None = None) -> dict[str, LearnedProfile]:
        """Learn every workload's profile from the last `window_days` of history, and
        forget samples older than `retention_days`."""
        newest = self.history.latest_timestamp()
        if newest is None:
            return {}
        if self.retention_days is not None:
            self.history.prune(newest - self.retention_days * DAY_SECONDS)
        since = newest - self.window_days * DAY_SECONDS
        samples = self.history.all_samples(since=since)
        learned = learn_profiles(samples, now=now, slots=self.slots, **self.learn_kwargs)
        if self.margin_quantile:
            learned = self._with_margins(learned, samples)
        stamp = self.clock()
        for w in learned:
            self.metrics.profile_updated.labels(workload=w).set(stamp)
        with self._lock:
            self.profiles = learned
            if self.predict_nodes:
                for node, state in self._nodes.items():
                    self._predict(node, state)
        if self.on_profiles:
            self.on_profiles(learned)
        log.info("learned %d profiles from %d workloads' history", len(learned), len(samples))
        return learned

    def _with_margins(self, learned: dict[str, LearnedProfile],
                      samples: Mapping[str, tuple[np.ndarray, np.ndarray]]
                      ) -> dict[str, LearnedProfile]:
        """Each learned profile booked at (1 + its own margin), the margin measured on
        its last `margin_holdout_days` days (`forecast.own_margin`); profiles with less
        history keep the quantile alone. The booking is capped at the request (a whole
        share): the live path does not raise a pod's request."""
        cap = self.learn_kwargs.get("capacity", 1.0)
        out = {}
        for w, prof in learned.items():
            t, v = samples.get(w, ((), ()))
            c = cap.get(w, 1.0) if isinstance(cap, Mapping) else cap
            m = (own_margin(np.asarray(t), np.clip(np.asarray(v) / c, 0.0, 1.0), self.slots,
                            q=self.margin_quantile, holdout=self.margin_holdout_days)
                 if prof.source == "learned" and len(t) else None)
            if m:
                prof = prof.model_copy(update={
                    "values": [float(x) for x in booking(prof.array(), m, cap=1.0)],
                    "margin": m})
            out[w] = prof
        return out

    def start(self) -> None:
        """Refresh profiles every `profile_interval_s` in a background thread."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.profile_interval_s):
                try:
                    self.refresh_profiles()
                except Exception:  # a bad batch must not end learning for good
                    log.exception("profile refresh failed")

        self._thread = threading.Thread(target=loop, name="gsched-profiles", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
