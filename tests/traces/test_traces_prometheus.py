"""Reading dcgm-exporter history: names, durations and the trace made from it (no server;
the real Prometheus server is in tests/monitoring/test_monitoring_prometheus_history.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.errors import InputError
from gsched.models import DAY_SECONDS
from gsched.traces.prometheus import (
    PodSeries,
    PrometheusReader,
    parse_duration,
    samples_by_workload,
    trace_from_history,
    workload_of,
)


@pytest.mark.parametrize("pod,workload", [
    ("chat-7d9f8c6b5d-x2k9p", "ns/chat"),           # a Deployment's pod
    ("my-llm-server-5c8d7f9b-abcde", "ns/my-llm-server"),
    ("vllm-3", "ns/vllm"),                          # a StatefulSet's pod
    ("finetune-job", "ns/finetune-job"),            # a bare pod is its own workload
])
def test_workload_of_follows_how_controllers_name_pods(pod, workload):
    assert workload_of("ns", pod) == workload


def test_durations():
    assert parse_duration("14d") == 14 * DAY_SECONDS
    assert parse_duration("36h") == 36 * 3600
    assert parse_duration("2w") == 14 * DAY_SECONDS
    assert parse_duration("900") == 900
    for bad in ("two weeks", "-3d", "0", "d"):
        with pytest.raises(InputError, match="--since"):
            parse_duration(bad)


def test_a_url_is_checked_before_any_request():
    with pytest.raises(InputError, match="--prometheus"):
        PrometheusReader("localhost:9090")


def _series(ns, pod, node, gpus, t, v):
    ps = PodSeries(ns, pod, workload_of(ns, pod), node)
    for g in gpus:
        ps.gpus[f"{node}/{g}"] = (t, v)
    return ps


def test_trace_from_history_one_job_per_pod():
    day0 = 1_700_000_000 - 1_700_000_000 % DAY_SECONDS
    t = day0 + np.arange(0, 2 * DAY_SECONDS, 60.0)
    busy = np.where(((t % DAY_SECONDS) // 3600) >= 12, 0.8, 0.2)
    end = float(t[-1])
    pods = {
        "a/chat-7d9f8c6b5d-aaaaa": _series("a", "chat-7d9f8c6b5d-aaaaa", "n1", [0], t, busy),
        "a/chat-7d9f8c6b5d-bbbbb": _series("a", "chat-7d9f8c6b5d-bbbbb", "n1", [1], t, busy),
        "a/train-x": _series("a", "train-x", "n2", [0, 1, 2, 3], t[:600],
                             np.full(600, 0.9)),
    }
    assert set(samples_by_workload(pods)) == {"a/chat", "a/train-x"}
    tr = trace_from_history(pods, start=day0, end=end, step_s=60)
    assert [j.kind for j in tr.jobs].count("inference") == 2
    train = next(j for j in tr.jobs if j.kind == "training")
    assert train.num_gpu == 4 and train.duration == pytest.approx(600 * 60)
    assert train.utilization == pytest.approx(0.9)
    chat = next(j for j in tr.jobs if j.kind == "inference")
    assert chat.duration is None and chat.profile_name == "a/chat"  # still running
    assert chat.profile[:48].max() == pytest.approx(0.2)
    assert chat.profile[48:].min() == pytest.approx(0.8)
    assert min(j.submit_time for j in tr.jobs) == 0.0  # midnight of the first day
