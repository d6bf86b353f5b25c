"""The scheduler's own Prometheus metrics, defined once.

The extender server, agent-report ingestion and the planner all update these; the
Grafana dashboard and the PrometheusRule in `manifests/` may name only these (and
dcgm-exporter's `DCGM_FI_*` series that the node agent exports). Names follow
`gsched_<thing>_<unit>`; counters end in `_total`.

Metrics live in a `SchedulerMetrics` object bound to a registry, so tests and several
servers in one process never collide on the global registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class SchedulerMetrics:
    """Every metric the central scheduler exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.request_duration = Histogram(
            "gsched_extender_request_duration_seconds",
            "Time to answer one scheduler-extender request, by verb.",
            ["verb"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter(
            "gsched_extender_requests_total",
            "Scheduler-extender requests answered, by verb and HTTP status code.",
            ["verb", "code"], registry=r)
        self.binds = Counter(
            "gsched_binds_total", "Pods bound by this replica, by outcome.",
            ["outcome"], registry=r)
        self.preemptions = Counter(
            "gsched_preemptions_total", "Pods offered as preemption victims, by kind.",
            ["kind"], registry=r)
        self.plan_age = Gauge(
            "gsched_plan_age_seconds", "Seconds since the last placement plan was made.",
            registry=r)
        self.plan_gap = Gauge(
            "gsched_plan_gap_ratio",
            "Relative gap between the last plan's GPUs and its lower bound (0 = optimal).",
            registry=r)
        self.node_predicted_util = Gauge(
            "gsched_node_predicted_utilization_ratio",
            "Predicted GPU utilisation of a node in the current slot, from learned profiles.",
            ["node"], registry=r)
        self.node_actual_util = Gauge(
            "gsched_node_actual_utilization_ratio",
            "Measured GPU utilisation of a node, from agent reports.", ["node"], registry=r)
        self.gpus_at_slo_risk = Gauge(
            "gsched_gpus_at_slo_risk",
            "GPUs whose predicted load in some slot exceeds capacity minus headroom.",
            registry=r)
        self.cost_per_experiment = Gauge(
            "gsched_cost_per_experiment_usd",
            "Cost of occupied GPU-hours divided by completed training jobs.", registry=r)
        self.pods_placed = Gauge(
            "gsched_pods_placed",
            "Pods holding resources in this replica's view of the cluster (bound, not "
            "finished): moves as soon as a watch event is applied.", registry=r)
        self.cluster_allocation = Gauge(
            "gsched_cluster_gpu_allocation_ratio",
            "Share of the cluster's GPUs reserved by pods gsched placed.", registry=r)
        self.cluster_utilization = Gauge(
            "gsched_cluster_gpu_utilization_ratio",
            "Measured mean GPU utilisation over the cluster, from agent reports.", registry=r)
        self.reports = Counter(
            "gsched_agent_reports_total",
            "Agent reports received, by node and outcome (accepted, duplicate, rejected).",
            ["node", "outcome"], registry=r)
        self.samples = Counter(
            "gsched_agent_samples_total", "Utilisation samples stored from agent reports.",
            registry=r)
        self.last_report = Gauge(
            "gsched_agent_last_report_timestamp_seconds",
            "Unix time of the last accepted report from a node's agent.", ["node"], registry=r)
        self.profile_updated = Gauge(
            "gsched_profile_last_update_timestamp_seconds",
            "Unix time a workload's daily profile was last learned.", ["workload"], registry=r)
        # the tidal loop's load guard (extender/guard.py)
        self.guard_trips = Counter(
            "gsched_guard_trips_total",
            "GPU reports whose measured load was over the guard's safe line.", registry=r)
        self.guard_evictions = Counter(
            "gsched_guard_evictions_total",
            "Training pods the load guard evicted from GPUs measured over the safe line.",
            registry=r)
        self.guard_boundary_closures = Counter(
            "gsched_guard_boundary_closures_total",
            "GPUs closed at a slot boundary because their last measured load was over the "
            "new slot's forecast (a valley not yet seen by the agents).", registry=r)
        self.rephased_bookings = Counter(
            "gsched_rephased_bookings_total",
            "Inference bookings moved in time because the pod's measured day ran late or "
            "early against its forecast.", registry=r)
        self.guard_blocked = Gauge(
            "gsched_guard_blocked_gpus",
            "GPUs the load guard has closed to new work until their load recedes.",
            registry=r)
        # the tidal loop's re-plans (extender/replanner.py)
        self.replans = Counter(
            "gsched_replans_total", "CP-SAT re-plans of running and pending pods, by outcome.",
            ["outcome"], registry=r)
        self.replan_moves = Counter(
            "gsched_replan_moves_total",
            "Training pods moved (evicted to be re-placed) because a re-plan moved them.",
            registry=r)
        self.leader = Gauge(
            "gsched_leader", "1 if this replica holds the leader lease, else 0.", registry=r)
