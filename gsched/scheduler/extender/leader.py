"""Leader election through a `coordination.k8s.io/v1` Lease, as client-go does it.

Every replica answers filter and prioritize from its own watched state; only the leader
binds (and plans), so two replicas never hand out the same GPU.

The algorithm is client-go's `leaderelection` with a Lease lock:
- a replica reads the Lease; if it is held by someone else whose record has not
  changed for `lease_duration_s` *by this replica's own clock* (so clock skew between
  machines does not matter), it takes it over: `holderIdentity` = itself,
  `acquireTime` = `renewTime` = now, `leaseTransitions` + 1;
- the holder renews (`renewTime` = now) every `retry_period_s`; every write carries the
  `resourceVersion` it read, so two replicas racing for an expired lease cannot both
  win (the loser gets 409 Conflict);
- a leader that has not renewed for `renew_deadline_s` stops acting as leader at once,
  before its lease can expire and another replica take over;
- `stop()` releases the lease (empty holder) so a successor need not wait.

Timestamps are written as Kubernetes `MicroTime` (RFC 3339, microseconds, UTC).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from gsched.scheduler.extender.metrics import SchedulerMetrics
from gsched.scheduler.extender.periodic import PeriodicStep

log = logging.getLogger(__name__)


def micro_time(t: float) -> str:
    """Unix seconds → Kubernetes MicroTime (`2026-11-24T13:00:00.000001Z`).

    The `kubernetes` client re-parses the string into a datetime and writes it back with
    `isoformat()`, which drops the fraction when it is zero; the API server's MicroTime
    parser requires six digits. So a whole second is written one microsecond later.
    """
    dt = datetime.fromtimestamp(t, tz=timezone.utc)
    if dt.microsecond == 0:
        dt = dt.replace(microsecond=1)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector(PeriodicStep):
    """One replica's side of the election; `start()` runs it in a thread."""

    thread_name = "gsched-leader"

    def __init__(self, coord: client.CoordinationV1Api, namespace: str, name: str,
                 identity: str, *, lease_duration_s: int = 15, renew_deadline_s: float = 10.0,
                 retry_period_s: float = 2.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 metrics: SchedulerMetrics | None = None,
                 on_change: Callable[[bool], None] | None = None) -> None:
        if not lease_duration_s > renew_deadline_s > retry_period_s > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self.coord = coord
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self.clock, self.monotonic = clock, monotonic
        self.metrics = metrics
        self.on_change = on_change
        self._observed: tuple | None = None   # (holder, renewTime, transitions) last read
        self._observed_at = 0.0                # monotonic time the record last changed
        self._holder: str | None = None
        self._leader = False
        self._renewed_at = -float("inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- queries
    def is_leader(self) -> bool:
        return self._leader and self.monotonic() - self._renewed_at < self.renew_deadline_s

    def leader_name(self) -> str | None:
        return self._holder or None

    # ------------------------------------------------------------------ steps
    def _path(self) -> tuple[str, str]:
        return self.name, self.namespace

    def _read(self) -> dict | None:
        try:
            resp = self.coord.read_namespaced_lease(*self._path(), _preload_content=False)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return json.loads(resp.data)

    def _spec(self, transitions: int, acquire: str) -> dict[str, Any]:
        now = micro_time(self.clock())
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.lease_duration_s,
                "acquireTime": acquire or now, "renewTime": now,
                "leaseTransitions": transitions}

    def try_acquire_or_renew(self) -> bool:
        """One round: read, then create / take over / renew if allowed. True if leader."""
        now_mono = self.monotonic()
        try:
            lease = self._read()
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": self._spec(0, "")}
                self.coord.create_namespaced_lease(self.namespace, body,
                                                   _preload_content=False)
                return self._became(True, now_mono, self.identity)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            record = (holder, spec.get("renewTime"), spec.get("leaseTransitions"))
            if record != self._observed:
                self._observed, self._observed_at = record, now_mono
            duration = spec.get("leaseDurationSeconds") or self.lease_duration_s
            if holder and holder != self.identity and \
                    self._observed_at + duration > now_mono:
                return self._became(False, now_mono, holder)
            transitions = int(spec.get("leaseTransitions") or 0)
            acquire = spec.get("acquireTime") or ""
            if holder != self.identity:
                transitions, acquire = transitions + 1, ""
            lease["spec"] = self._spec(transitions, acquire)
            self.coord.replace_namespaced_lease(self.name, self.namespace, lease,
                                                _preload_content=False)
            return self._became(True, now_mono, self.identity)
        except ApiException as e:
            if e.status == 409:
                log.debug("lost a lease race: %s", e.reason)
            else:
                log.warning("lease %s/%s: %s %s", self.namespace, self.name, e.status, e.reason)
        except Exception as e:  # API server unreachable
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
        return self._became(self.is_leader(), None, self._holder)

    def _became(self, leader: bool, renewed_at: float | None, holder: str | None) -> bool:
        if renewed_at is not None and leader:
            self._renewed_at = renewed_at
            self._observed = None  # our own write: re-read it as a fresh record
        self._holder = holder
        was, self._leader = self._leader, leader
        if was != leader:
            log.info("%s is %s the leader", self.identity, "now" if leader else "no longer")
            if self.on_change:
                self.on_change(leader)
        if self.metrics is not None:
            self.metrics.leader.set(1 if self.is_leader() else 0)
        return leader

    def release(self) -> None:
        """Give the lease up (if held) so another replica takes over without waiting."""
        if not self._leader:
            return
        try:
            lease = self._read()
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                self.coord.replace_namespaced_lease(self.name, self.namespace, lease,
                                                    _preload_content=False)
        except Exception as e:
            log.warning("releasing lease: %s", e)
        self._became(False, None, None)

    # -------------------------------------------------------------- lifecycle
    def step(self) -> None:
        self.try_acquire_or_renew()

    def start(self) -> LeaderElector:  # type: ignore[override]
        """Try for the lease at once, then every `retry_period_s`."""
        return super().start(self.retry_period_s, now=True)

    def stop(self) -> None:
        super().stop()
        self.release()


class StaticLeader:
    """No API server: the single process is the leader."""

    def is_leader(self) -> bool:
        return True

    def leader_name(self) -> str | None:
        return None
