"""The scheduler-extender verbs over a `ClusterState` and a policy.

kube-scheduler calls filter, then prioritize (when more than one node passed), then
bind on the chosen node; preempt when a pod fits nowhere. Each verb here is a function
of a decoded request and the cluster state, returning the canonical JSON-able answer;
HTTP lives in `server.py`, the Kubernetes API in `kube.py`.

- `filter` asks the policy for a reason per node (`Policy.filter`); nodes that could
  never take the pod (GPU model, GPU count, GPU memory) go to
  `FailedAndUnresolvableNodes`, so kube-scheduler does not try preemption there.
  nodeCacheCapable requests (`NodeNames`) are answered with `NodeNames`; the other mode
  (`Nodes`) with the passing Node objects echoed back, as kube-scheduler only reads
  `Nodes` then.
- `prioritize` maps the policy's scores onto 0..10 by rank (`normalized_scores`): the
  node the simulator's `place` would pick alone gets 10, the others keep the policy's
  order below it, so kube-scheduler (whose own scorers the gsched profile disables)
  picks what the simulator picks and never breaks a tie at random.
- `bind` (leader only) re-checks the fit, picks the GPUs (`Policy.choose_gpus`), books
  them in the state, then has the binder annotate the pod with `gsched.io/gpus` and
  create its Binding; the assignment goes to the store.
- `preempt` keeps, on each candidate node, the shortest prefix of kube-scheduler's
  victims, reordered best-effort training first, then other training, then inference,
  that makes the pod fit; nodes that would need inference victims are dropped when
  another node needs none.

Pods gsched does not manage get the neutral answer at once (every node passes, every
score is 0, victims unchanged). Failures go in `Error`, never an exception to the
caller: `WireError` (a bad request) is the only exception that leaves a verb.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from gsched.models import Cluster, Job
from gsched.scheduler.extender import answers
from gsched.scheduler.extender import pods as podlib
from gsched.scheduler.extender.metrics import SchedulerMetrics
from gsched.scheduler.extender.store import Assignment, Store
from gsched.scheduler.extender.victims import victim_prefix
from gsched.scheduler.extender.wire import (
    MAX_EXTENDER_PRIORITY,
    MIN_EXTENDER_PRIORITY,
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderPreemptionArgs,
    MetaPod,
    MetaVictims,
    RawJSON,
    WireError,
    host_entries,
)
from gsched.scheduler.packing.profiles import LearnedProfile
from gsched.scheduler.policies.policy import Policy, normalized_scores
from gsched.scheduler.policies.state import ClusterState, Placement, Reason

log = logging.getLogger(__name__)

#: Reasons no eviction can cure: kube-scheduler should not preempt for these nodes.
UNRESOLVABLE = frozenset({Reason.GPU_MODEL, Reason.GPU_COUNT, Reason.GPU_MEMORY})
UNKNOWN_NODE = "node is not in gsched's GPU inventory"


class Binder(Protocol):
    """Makes a binding real (the API server); absent in static mode."""

    def bind(self, namespace: str, name: str, uid: str, node: str,
             annotations: Mapping[str, str]) -> None: ...


def job_to_json(job: Job) -> dict[str, Any]:
    d = job.model_dump(exclude={"profile"})
    d["gpu_models"] = list(job.gpu_models)
    d["profile"] = None if job.profile is None else [float(x) for x in job.profile]
    return d


class Extender:
    """One replica's view of the cluster and its answers to the four verbs."""

    def __init__(self, cluster: Cluster, policy: Policy, *, store: Store | None = None,
                 binder: Binder | None = None, metrics: SchedulerMetrics | None = None,
                 is_leader: Callable[[], bool] = lambda: True,
                 leader_name: Callable[[], str | None] = lambda: None,
                 pod_lookup: Callable[[str, str], Mapping[str, Any] | None] | None = None,
                 priority_classes: Mapping[str, int] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.store = store
        self.binder = binder
        self.metrics = metrics or SchedulerMetrics()
        self.is_leader = is_leader
        self.leader_name = leader_name
        self.pod_lookup = pod_lookup
        self.priority_classes = dict(priority_classes or {})
        self.clock = clock
        self.lock = threading.RLock()
        self.pod_cache = podlib.PodCache()
        self.arrival_view = lambda pj: pj  # how a new pod is booked (re-phasing sets it)
        #: pods seen in filter/prioritize, by UID: what bind needs (it only gets names)
        self._pending: OrderedDict[str, podlib.PodJob] = OrderedDict()
        self._pending_max = 4096
        #: pods holding resources in the state, by UID
        self.placed: dict[str, podlib.PodJob] = {}
        self._profiles: dict[str, np.ndarray] = store.profile_arrays() if store else {}
        #: recent node-name lists (kube-scheduler repeats them: prioritize asks about the
        #: list filter answered) with their node indices
        self._lists: list[answers.NameList] = []
        self._node_entries: np.ndarray | None = None
        self._zero_lengths = np.zeros(0, dtype=np.int64)  # of each node's zero entry
        self.state = ClusterState(cluster)
        self.ready = threading.Event()

    # ------------------------------------------------------------ state upkeep
    def profile(self, name: str) -> np.ndarray | None:
        return self._profiles.get(name)

    def set_profiles(self, learned: Mapping[str, LearnedProfile]) -> None:
        """New learned profiles (from agent-report ingestion): keep and persist them."""
        if self.store is not None:
            self.store.put_profiles(dict(learned))
            # with the ones stored before (e.g. `gsched profiles learn --prometheus`)
            self._profiles = self.store.profile_arrays()
        else:
            self._profiles = {w: p.array() for w, p in learned.items()
                              if p.source == "learned"}
        self.pod_cache.clear()

    def translate(self, pod: Mapping[str, Any]) -> podlib.PodJob:
        return self.arrival_view(self.pod_cache.get(pod, self.profile, self.priority_classes))

    def rebuild(self, cluster: Cluster, pods: Iterable[podlib.PodJob]) -> None:
        """Start over from an inventory and the pods that hold resources (a relist)."""
        with self.lock:
            self.state = ClusterState(cluster, slots=self.state.slots)
            self._lists, self._node_entries = [], None
            self.placed.clear()
            for pj in pods:
                self._place_observed(pj)
            self._update_gauges()

    def observe(self, pj: podlib.PodJob) -> None:
        """A pod changed (watch event): book it, move it, or release it."""
        with self.lock:
            cur = self.placed.get(pj.uid)
            if pj.phase in podlib.TERMINAL_PHASES:
                if cur is not None:
                    self._release(pj.uid)
                self._pending.pop(pj.uid, None)
                return
            if not pj.node:
                return  # still pending; if gsched booked it, its binding is under way
            if cur is not None and cur.node == pj.node:
                self.placed[pj.uid] = (pj if pj.gpus or not cur.gpus
                                       else answers.with_gpus(pj, cur.gpus))
                return
            if cur is not None:
                self._release(pj.uid)
            self._place_observed(pj)
            self._pending.pop(pj.uid, None)

    def forget(self, uid: str) -> None:
        """A pod was deleted."""
        with self.lock:
            if uid in self.placed:
                self._release(uid)
            self._pending.pop(uid, None)

    def _release(self, uid: str) -> None:
        self.placed.pop(uid, None)
        if uid in self.state.running:
            self.state.release(uid)
        if self.store is not None:
            self.store.release(uid, self.clock())
        self.metrics.pods_placed.set(len(self.placed))

    def _place_observed(self, pj: podlib.PodJob) -> None:
        """Book a pod that already runs on a node, on its recorded GPUs when known."""
        if not pj.active:
            return
        idx = self.state.node_index.get(pj.node)
        if idx is None:
            return  # a node without GPUs: nothing gsched schedules lives there
        job = pj.job
        gpus: tuple[int, ...] = ()
        if job.num_gpu:
            gpus = pj.gpus or ()
            if not gpus and self.store is not None:
                a = self.store.assignment(pj.uid)
                if a is not None and a.node == pj.node:
                    gpus = a.gpus
            count = int(self.state.gpu_count[idx])
            if len(gpus) != job.num_gpu or any(g >= count for g in gpus):
                gpus = self.policy.choose_gpus(self.state, job, idx)
                if len(gpus) < job.num_gpu:  # overcommitted: take the emptiest GPUs
                    order = np.argsort(-self.state.free[idx, :count], kind="stable")
                    gpus = tuple(int(g) for g in order[: job.num_gpu])
        self.state.allocate(job, Placement(idx, gpus, self.policy.reservation(job)))
        self.placed[pj.uid] = answers.with_gpus(pj, gpus)
        self.metrics.pods_placed.set(len(self.placed))

    def restore_from_store(self) -> int:
        """Static mode: book every active assignment recorded in the store again."""
        if self.store is None:
            return 0
        n = 0
        with self.lock:
            for a in self.store.active_assignments():
                if a.job is None or a.uid in self.placed:
                    continue
                job = Job.model_validate({**a.job, "gpu_models": tuple(a.job["gpu_models"])})
                pj = podlib.PodJob(a.uid, a.namespace, a.name, a.node, "Running", True, job,
                                   "", a.gpus)
                self._place_observed(pj)
                n += 1
        return n

    # ------------------------------------------------------------------ helpers
    def _name_list(self, names: list[str]) -> answers.NameList:
        """`names` with their node indices (-1 for unknown), from the recent lists if it
        is one of them (lock held)."""
        for i, nl in enumerate(self._lists):
            if nl.names is names or (len(nl.names) == len(names) and nl.names == names):
                if i:
                    self._lists.insert(0, self._lists.pop(i))
                return nl
        index = self.state.node_index
        idx = np.fromiter((index.get(n, -1) for n in names), dtype=np.int64, count=len(names))
        return self._keep(answers.NameList(names, idx))

    def _locate(self, names: list[str]) -> tuple[answers.NameList, np.ndarray, np.ndarray]:
        """Stamp the clock and resolve node names to indices (-1: unknown). Hold the lock."""
        self.state.now = self.clock()
        nl = self._name_list(names)
        return nl, nl.idx, nl.idx >= 0

    def _keep(self, nl: answers.NameList) -> answers.NameList:
        self._lists = [x for x in self._lists if x is not nl]
        self._lists.insert(0, nl)
        del self._lists[answers.RECENT_LISTS:]
        return nl

    def _indices(self, names: list[str]) -> np.ndarray:
        return self._name_list(names).idx

    def _priority_list(self, nl: answers.NameList, scores: np.ndarray) -> RawJSON:
        """`HostPriorityList` JSON: every node's eleven possible entries are encoded once
        (a nodes x 11 array of bytes); a list of known nodes keeps its zero-score answer,
        so an answer is that template with the few non-zero digits written in."""
        if self._node_entries is None:
            entries = np.empty((self.state.n_nodes, MAX_EXTENDER_PRIORITY + 1), dtype=object)
            for i, name in enumerate(self.state.node_names):
                entries[i, :] = host_entries(name)
            self._node_entries = entries
            self._zero_lengths = np.fromiter(map(len, entries[:, 0]), dtype=np.int64,
                                             count=len(entries))
        known = nl.idx >= 0
        if known.all():
            if nl.zero is None:
                parent = nl.parent
                if parent is not None and parent.zero is None and (parent.idx >= 0).all():
                    self._template(parent)  # once: its passing lists are cut from it
                if not answers.cut_template(nl):
                    self._template(nl)
            return RawJSON(answers.priority_answer(nl, scores))
        picked = np.empty(len(nl.names), dtype=object)
        picked[known] = self._node_entries[nl.idx[known], scores[known]]
        for i in np.flatnonzero(~known).tolist():
            picked[i] = host_entries(nl.names[i])[int(scores[i])]
        return RawJSON(b"[" + b",".join(picked.tolist()) + b"]")

    def _template(self, nl: answers.NameList) -> None:
        answers.priority_template(nl, self._node_entries[nl.idx, 0].tolist(),
                                  self._zero_lengths[nl.idx])
        nl.parent = nl.kept = None

    def _remember(self, pj: podlib.PodJob) -> None:
        with self.lock:
            self._pending[pj.uid] = pj
            self._pending.move_to_end(pj.uid)
            while len(self._pending) > self._pending_max:
                self._pending.popitem(last=False)

    def _pod(self, args_pod: Mapping[str, Any] | None) -> podlib.PodJob | None:
        """None for an unmanaged pod (the quick neutral answer)."""
        if args_pod is None:
            raise WireError("Pod", "pod is missing")
        if not podlib.is_managed(args_pod):
            return None
        pj = self.translate(args_pod)
        self._remember(pj)
        return pj

    # -------------------------------------------------------------------- verbs
    def filter(self, args: ExtenderArgs) -> dict[str, Any]:
        cache_mode = args.node_names is not None
        names = args.candidate_names()
        items = args.nodes.items if (args.nodes is not None and args.nodes.items) else []
        pj = self._pod(args.pod)
        if pj is None:
            return answers.filter_result(cache_mode, names, items, None, {}, {})
        job = pj.job
        with self.lock:
            nl, idx, known = self._locate(names)
            if answers.whole(nl, self.state.n_nodes):  # every node, in index order
                reasons = self.policy.filter(self.state, job)
            else:
                reasons = np.zeros(len(names), dtype=np.int64)
                if known.any():
                    reasons[known] = self.policy.filter(self.state, job)[idx[known]]
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        ok = reasons == 0
        if job.num_gpu:
            ok &= known
        if not ok.all():
            for i in np.flatnonzero(~ok).tolist():
                if not known[i]:
                    failed[names[i]] = UNKNOWN_NODE
                    continue
                r = Reason(int(reasons[i]))
                (unresolvable if r in UNRESOLVABLE else failed)[names[i]] = r.message
        if cache_mode and not ok.all():  # prioritize will most likely ask about these
            with self.lock:
                passed = answers.passing_list(self._lists, names, idx, ok, nl)
                self._keep(passed)
            return answers.filter_result(True, passed.names, items, None, failed, unresolvable)
        return answers.filter_result(cache_mode, names, items, ok, failed, unresolvable)

    def prioritize(self, args: ExtenderArgs) -> list[dict[str, Any]] | RawJSON:
        names = args.candidate_names()
        pj = self._pod(args.pod)
        if pj is None or not names:
            return [{"Host": n, "Score": 0} for n in names]
        job = pj.job
        with self.lock:
            nl, idx, known = self._locate(names)
            feasible = self.policy.feasible(self.state, job)
            scores = np.zeros(len(names), dtype=np.int64)
            if feasible.any():
                raw = self.policy.score(self.state, job, feasible)
                if answers.whole(nl, self.state.n_nodes):
                    scores = normalized_scores(raw, feasible)
                else:  # normalise over the nodes asked about, not the whole cluster
                    ask = np.zeros(self.state.n_nodes, dtype=bool)
                    ask[idx[known]] = True
                    norm = normalized_scores(raw, feasible & ask)
                    scores[known] = norm[idx[known]]
            np.clip(scores, MIN_EXTENDER_PRIORITY, MAX_EXTENDER_PRIORITY, out=scores)
            return self._priority_list(nl, scores)

    def bind(self, args: ExtenderBindingArgs) -> dict[str, Any]:
        m = self.metrics
        if not self.is_leader():
            m.binds.labels(outcome="not_leader").inc()
            leader = self.leader_name()
            return {"Error": "this gsched replica is not the leader"
                             + (f" (the leader is {leader})" if leader else "")
                             + "; kube-scheduler will retry the pod"}
        with self.lock:
            pj = (self._pending.get(args.pod_uid) or self.placed.get(args.pod_uid)) \
                if args.pod_uid else None
            if pj is None:
                ns = args.pod_namespace or "default"
                pj = next((c for c in self._pending.values()
                           if c.name == args.pod_name and c.namespace == ns), None)
        if pj is None and self.pod_lookup is not None:
            raw = self.pod_lookup(args.pod_namespace or "default", args.pod_name)
            if raw is not None:
                pj = self.translate(raw)
        if pj is None:
            m.binds.labels(outcome="unknown_pod").inc()
            return {"Error": f"pod {args.pod_namespace}/{args.pod_name} is unknown to gsched "
                             "(no filter call and no such pod in the API server)"}
        uid = args.pod_uid or pj.uid
        job = pj.job if pj.job.id == uid else pj.job.model_copy(update={"id": uid})
        gpus: tuple[int, ...] = ()
        booked = False
        with self.lock:
            idx = self.state.node_index.get(args.node)
            if pj.managed and job.num_gpu:
                if idx is None:
                    m.binds.labels(outcome="rejected").inc()
                    return {"Error": f"node {args.node}: {UNKNOWN_NODE}"}
                if uid in self.placed:
                    prev = self.placed[uid]
                    if prev.node == args.node:  # a retried bind: already done
                        m.binds.labels(outcome="bound").inc()
                        return {"Error": ""}
                    m.binds.labels(outcome="rejected").inc()
                    return {"Error": f"pod is already bound to {prev.node}"}
                self.state.now = self.clock()
                if not self.policy.feasible(self.state, job)[idx]:
                    reason = Reason(int(self.policy.filter(self.state, job)[idx]) or
                                    Reason.GPU_FREE)
                    m.binds.labels(outcome="rejected").inc()
                    return {"Error": f"pod no longer fits node {args.node}: {reason.message}"}
                gpus = self.policy.choose_gpus(self.state, job, idx)
                self.state.allocate(job, Placement(idx, gpus, self.policy.reservation(job)))
                booked = True
            elif idx is not None and uid not in self.placed:
                self.state.allocate(job, Placement(idx, (), 0.0))
                booked = True
            if booked:
                self.placed[uid] = podlib.PodJob(uid, pj.namespace, pj.name, args.node,
                                                 "Pending", pj.managed, job, pj.workload,
                                                 gpus)
        annotations = {podlib.ANN_GPUS: ",".join(map(str, gpus))} if gpus else {}
        try:
            if self.binder is not None:
                self.binder.bind(args.pod_namespace or "default", args.pod_name, uid,
                                 args.node, annotations)
        except Exception as e:  # the API server said no: undo the booking
            with self.lock:
                if booked:
                    self.placed.pop(uid, None)
                    if uid in self.state.running:
                        self.state.release(uid)
            m.binds.labels(outcome="failed").inc()
            log.warning("binding %s/%s to %s failed: %s", args.pod_namespace, args.pod_name,
                        args.node, e)
            return {"Error": f"binding failed: {e}"}
        if self.store is not None and pj.managed and job.num_gpu:
            self.store.record(Assignment(uid=uid, namespace=pj.namespace, name=pj.name,
                                         node=args.node, gpus=gpus,
                                         share=self.policy.reservation(job),
                                         job=job_to_json(job),
                                         bound_at=self.clock()))
        with self.lock:
            self._pending.pop(uid, None)
        m.binds.labels(outcome="bound").inc()
        self._update_gauges()
        return {"Error": ""}

    def preempt(self, args: ExtenderPreemptionArgs) -> dict[str, Any]:
        cands = args.meta_victims()
        pj = self._pod(args.pod)
        if pj is None:
            return {"NodeNameToMetaVictims": {
                n: answers.meta_victims(v.pods or [], v.num_pdb_violations)
                for n, v in cands.items()}}
        job = pj.job
        out: dict[str, MetaVictims] = {}
        needs_inference: dict[str, bool] = {}
        with self.lock:
            self.state.now = self.clock()
            for node, mv in cands.items():
                victims = [p.uid for p in (mv.pods or [])]
                idx = self.state.node_index.get(node)
                if idx is None:
                    if not job.num_gpu:
                        out[node] = mv
                        needs_inference[node] = False
                    continue
                chosen = victim_prefix(self.policy, self.state, self.placed, job, idx, victims)
                if chosen is None:
                    continue
                out[node] = MetaVictims(Pods=[MetaPod(UID=u) for u in chosen],
                                        NumPDBViolations=min(mv.num_pdb_violations,
                                                             len(chosen)))
                needs_inference[node] = any(self._kind_of(u) == "inference" for u in chosen)
        if any(not v for v in needs_inference.values()):
            out = {n: v for n, v in out.items() if not needs_inference[n]}
        for v in out.values():
            for p in v.pods or []:
                self.metrics.preemptions.labels(kind=self._kind_of(p.uid)).inc()
        return {"NodeNameToMetaVictims": {n: answers.meta_victims([p.uid for p in v.pods or []],
                                                   v.num_pdb_violations)
                                          for n, v in out.items()}}

    def _kind_of(self, uid: str) -> str:
        pj = self.placed.get(uid)
        if pj is None or not pj.managed:
            return "other"
        return pj.job.kind

    def _update_gauges(self) -> None:
        self.metrics.pods_placed.set(len(self.placed))
        total = self.state.total_gpus
        if total:
            self.metrics.cluster_allocation.set(self.state.allocated_gpus() / total)

    def refresh_gauges(self) -> None:
        """Cluster-wide gauges that cost a pass over every GPU's day (run periodically):
        allocation, and GPUs whose predicted load exceeds capacity minus headroom in
        some slot."""
        with self.lock:
            st = self.state
            self._update_gauges()
            cap = 1.0 - self.policy.config.headroom
            risky = (st.load.max(axis=2) > cap + 1e-9) & st.gpu_valid & \
                (st.inference_on_gpu > 0)
            self.metrics.gpus_at_slo_risk.set(int(risky.sum()))
