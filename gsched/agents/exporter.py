"""The agent's `/metrics`: dcgm-exporter's names and labels, plus `gsched_agent_*`.

Device metrics mirror NVIDIA dcgm-exporter (`etc/default-counters.csv`) so existing
dashboards work unchanged: same names, same units (percent, MiB, MHz, W, °C), same
labels — `gpu` (index), `UUID`, `device` (`nvidia<index>`), `modelName`, `Hostname`, and
`container`, `namespace`, `pod`. As dcgm-exporter does with Kubernetes mapping on, a GPU
used by pods is exported once per pod with that pod's labels (the device value repeated);
an idle GPU once with empty pod labels. Aggregate with `max by (Hostname, gpu)` to count
each GPU once.

A field the GPU could not report is left out (dcgm-exporter does the same), never
exported as zero. The agent's own metrics (`AgentMetrics`) live in the same registry.
Everything is bound to a registry object, never the process-global one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gsched.agents.model import GpuReading, NodeSample

DCGM_LABELS = ("gpu", "UUID", "device", "modelName", "Hostname", "container", "namespace",
               "pod")

#: (metric name, help, how to read it from a `GpuReading`)
DCGM_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "util_pct"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "mem_copy_util_pct"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "mem_used_mib"),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "mem_free_mib"),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w"),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temp_c"),
)

POD_LABELS = ("gpu", "UUID", "Hostname", "modelName", "namespace", "pod", "container")
SAMPLE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class AgentMetrics:
    """The agent's own metrics (`gsched_agent_*`), bound to one registry.

    Names differ from the scheduler's `gsched_agent_reports_total` /
    `gsched_agent_samples_total` (what the scheduler *received*) so one PromQL query never
    mixes the two sides.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.collections = Counter(
            "gsched_agent_collections_total",
            "Sampling passes over the node's GPUs, by outcome (ok, partial, failed).",
            ["outcome"], registry=r)
        self.collection_duration = Histogram(
            "gsched_agent_collection_duration_seconds",
            "Time one sampling pass over every GPU took.", buckets=SAMPLE_BUCKETS, registry=r)
        self.nvml_errors = Counter(
            "gsched_agent_gpu_errors_total",
            "GPU read failures: a lost GPU or an NVML call that failed.", ["gpu"], registry=r)
        self.gpus = Gauge("gsched_agent_gpus", "GPUs on this node, by state (ok, lost).",
                          ["state"], registry=r)
        self.queue_reports = Gauge(
            "gsched_agent_queue_reports",
            "Reports waiting in the on-disk queue for the scheduler.", registry=r)
        self.queue_samples = Gauge(
            "gsched_agent_queue_samples",
            "Samples inside the reports waiting in the on-disk queue.", registry=r)
        self.reports_sent = Counter(
            "gsched_agent_reports_sent_total",
            "Reports the scheduler acknowledged (including ones it already had).",
            registry=r)
        self.send_failures = Counter(
            "gsched_agent_report_send_failures_total",
            "Attempts to send a report that failed, by reason (unreachable, http_<code>).",
            ["reason"], registry=r)
        self.reports_dropped = Counter(
            "gsched_agent_reports_dropped_total",
            "Reports discarded unsent, by reason (queue_full, rejected, queue_error).",
            ["reason"],
            registry=r)
        self.samples_dropped = Counter(
            "gsched_agent_samples_dropped_total",
            "Samples inside discarded reports, by reason (queue_full, rejected, queue_error).",
            ["reason"],
            registry=r)
        self.last_collection = Gauge(
            "gsched_agent_last_collection_timestamp_seconds",
            "Unix time of the last sampling pass.", registry=r)
        self.last_sent = Gauge(
            "gsched_agent_last_report_sent_timestamp_seconds",
            "Unix time the scheduler last acknowledged a report.", registry=r)
        for outcome in ("ok", "partial", "failed"):
            self.collections.labels(outcome)
        for reason in ("queue_full", "rejected", "queue_error"):
            self.reports_dropped.labels(reason)
            self.samples_dropped.labels(reason)


class DcgmCollector(Collector):
    """Renders the newest `NodeSample` as dcgm-exporter metrics plus per-pod usage."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._lock = threading.Lock()
        self._sample: NodeSample | None = None

    def update(self, sample: NodeSample) -> None:
        with self._lock:
            self._sample = sample

    def _device_labels(self, g: GpuReading, namespace: str = "", pod: str = "",
                       container: str = "") -> list[str]:
        return [str(g.index), g.uuid, f"nvidia{g.index}", g.name, self.hostname, container,
                namespace, pod]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            sample = self._sample
        fams = {name: GaugeMetricFamily(name, help_, labels=DCGM_LABELS)
                for name, help_, _ in DCGM_FIELDS}
        pod_util = GaugeMetricFamily(
            "gsched_agent_pod_gpu_utilization_ratio",
            "Share of a GPU (0-1) a pod's processes used, from per-process NVML samples.",
            labels=POD_LABELS)
        pod_mem = GaugeMetricFamily(
            "gsched_agent_pod_gpu_memory_used_bytes",
            "GPU memory a pod's processes hold on a GPU.", labels=POD_LABELS)
        if sample is not None:
            by_gpu: dict[int, list] = {}
            for u in sample.pods:
                by_gpu.setdefault(u.gpu_index, []).append(u)
            for g in sample.gpus:
                if g.lost:
                    continue
                users = by_gpu.get(g.index) or [None]
                for name, _, attr in DCGM_FIELDS:
                    value = getattr(g, attr)
                    if value is None:
                        continue
                    for u in users:
                        labels = (self._device_labels(g, u.namespace, u.pod, u.container)
                                  if u is not None else self._device_labels(g))
                        fams[name].add_metric(labels, float(value))
            models = {g.index: g.name for g in sample.gpus}
            for u in sample.pods:
                labels = [str(u.gpu_index), u.gpu_uuid, self.hostname,
                          models.get(u.gpu_index, ""), u.namespace, u.pod, u.container]
                pod_util.add_metric(labels, u.util_pct / 100.0)
                if u.mem_used_mib is not None:
                    pod_mem.add_metric(labels, u.mem_used_mib * 1024 * 1024)
        yield from fams.values()
        yield pod_util
        yield pod_mem


class AgentExporter:
    """One registry holding the DCGM-compatible collector and the agent's own metrics."""

    def __init__(self, hostname: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.dcgm = DcgmCollector(hostname)
        self.registry.register(self.dcgm)
        self.metrics = AgentMetrics(self.registry)

    def observe(self, sample: NodeSample, duration_s: float, wall_time: float) -> None:
        """Publish a sampling pass: its values, how long it took, and how it went.

        `wall_time` is the real clock (a replay's sample timestamps are virtual).
        """
        self.dcgm.update(sample)
        m = self.metrics
        lost = sum(1 for g in sample.gpus if g.lost)
        m.gpus.labels("ok").set(len(sample.gpus) - lost)
        m.gpus.labels("lost").set(lost)
        m.collection_duration.observe(duration_s)
        m.last_collection.set(wall_time)
        if sample.gpus and lost == len(sample.gpus):
            m.collections.labels("failed").inc()
        elif sample.errors:
            m.collections.labels("partial").inc()
        else:
            m.collections.labels("ok").inc()
        for err in sample.errors:
            gpu = err.split(":", 1)[0].removeprefix("gpu ").strip()
            m.nvml_errors.labels(gpu).inc()
