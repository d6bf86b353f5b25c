"""Report ingestion: validation, auth, idempotency, history and profile learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gsched.agents.model import Report, Series
from gsched.models import DAY_SECONDS
from gsched.scheduler.extender.history import UsageHistory
from gsched.scheduler.extender.ingest import IngestService
from gsched.scheduler.extender.metrics import SchedulerMetrics

AUTH = {"Authorization": "Bearer tok"}


def make_report(rid: str, node: str = "n1", t0: float = 1000.0, n: int = 4,
                util: float = 0.5, workloads: tuple[str, ...] = ("ns/a",)) -> Report:
    ts = [t0 + i for i in range(n)]
    return Report(
        report_id=rid, node=node, created_at=t0 + n,
        gpus=[Series(gpu="GPU-0", index=0, t=ts, util=[util] * n),
              Series(gpu="GPU-1", index=1, t=ts, util=[0.0] * n)],
        workloads=[Series(gpu="GPU-0", index=0, workload=w, t=ts, util=[util / 2] * n)
                   for w in workloads])


def body(r: Report) -> bytes:
    return r.model_dump_json(exclude_none=True).encode()


@pytest.fixture
def svc(tmp_path: Path) -> IngestService:
    clock = iter(range(10_000, 100_000)).__next__
    return IngestService(UsageHistory(tmp_path / "gsched.sqlite"), SchedulerMetrics(), "tok",
                         clock=lambda: float(clock()))


def value(m: SchedulerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_a_new_report_is_stored_and_accounted(svc: IngestService) -> None:
    status, ans = svc.handle(body(make_report("r-00000001")), AUTH)
    assert status == 200 and ans["duplicate"] is False and ans["samples"] == 12
    m = svc.metrics
    assert value(m, "gsched_agent_reports_total", node="n1", outcome="accepted") == 1
    assert value(m, "gsched_agent_samples_total") == 12
    assert value(m, "gsched_agent_last_report_timestamp_seconds", node="n1") == 10_000
    assert value(m, "gsched_node_actual_utilization_ratio", node="n1") == 0.25
    assert value(m, "gsched_cluster_gpu_utilization_ratio") == 0.25
    t, v = svc.history.samples("ns/a")
    assert list(t) == [1000, 1001, 1002, 1003] and list(v) == [0.25] * 4


def test_a_resent_report_is_acknowledged_once_and_not_stored_twice(
        svc: IngestService) -> None:
    r = body(make_report("r-00000001"))
    assert svc.handle(r, AUTH)[1]["duplicate"] is False
    status, ans = svc.handle(r, AUTH)
    assert status == 200 and ans["duplicate"] is True
    assert svc.history.counts() == {"usage_reports": 1, "usage_samples": 4,
                                    "usage_gpu_samples": 8}
    assert value(svc.metrics, "gsched_agent_reports_total", node="n1", outcome="duplicate") == 1
    assert value(svc.metrics, "gsched_agent_samples_total") == 12


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic tok"}])
def test_a_bad_token_is_401(svc: IngestService, headers: dict[str, str]) -> None:
    status, ans = svc.handle(body(make_report("r-00000001")), headers)
    assert status == 401 and "token" in ans["error"]
    assert svc.history.counts()["usage_reports"] == 0


def test_header_names_are_case_insensitive(svc: IngestService) -> None:
    assert svc.handle(body(make_report("r-00000001")), {"authorization": "bearer tok"})[0] == 200


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("node"), "node"),
    (lambda d: d.update(report_id="x"), "report_id"),
    (lambda d: d["workloads"][0].update(util=[1.5, 0, 0, 0]), "workloads.0"),
    (lambda d: d["gpus"][1].update(t=[1.0]), "gpus.1"),
    (lambda d: d.update(surprise=1), "surprise"),
])
def test_an_invalid_report_is_400_naming_the_field(svc: IngestService, mutate, field) -> None:
    d = json.loads(body(make_report("r-00000001")))
    mutate(d)
    status, ans = svc.handle(json.dumps(d).encode(), AUTH)
    assert status == 400 and ans["field"].startswith(field) and field in ans["error"]
    assert svc.history.counts()["usage_reports"] == 0
    assert value(svc.metrics, "gsched_agent_reports_total", node=d.get("node", ""),
                 outcome="rejected") == 1


def test_bad_json_and_oversized_bodies(svc: IngestService) -> None:
    assert svc.handle(b"{not json", AUTH)[0] == 400
    assert svc.handle(b"[]", AUTH)[0] == 400
    svc.max_body_bytes = 100
    assert svc.handle(body(make_report("r-00000001")), AUTH)[0] == 413


def test_no_token_configured_accepts_any_request(tmp_path: Path) -> None:
    svc = IngestService(UsageHistory(), SchedulerMetrics(), None)
    assert svc.handle(body(make_report("r-00000001")), {})[0] == 200


def test_cluster_utilisation_weighs_nodes_by_gpus_and_forgets_stale_ones(
        svc: IngestService) -> None:
    now = [0.0]
    svc.clock = lambda: now[0]
    svc.handle(body(make_report("r-00000001", node="n1", util=0.8)), AUTH)  # node mean 0.4
    now[0] = 60.0
    svc.handle(body(make_report("r-00000002", node="n2", util=0.0)), AUTH)  # node mean 0
    assert value(svc.metrics, "gsched_cluster_gpu_utilization_ratio") == pytest.approx(0.2)
    now[0] = 200.0  # n1 silent for 200 s > stale_after_s
    svc.handle(body(make_report("r-00000003", node="n2", util=0.4)), AUTH)
    assert value(svc.metrics, "gsched_cluster_gpu_utilization_ratio") == pytest.approx(0.2)
    assert value(svc.metrics, "gsched_node_actual_utilization_ratio", node="n1") == 0.4


def test_history_groups_multi_gpu_workloads_per_timestamp() -> None:
    h = UsageHistory()
    ts = [0.0, 1.0]
    r = Report(report_id="r-00000001", node="n", created_at=2.0, workloads=[
        Series(gpu="GPU-0", index=0, workload="ns/big", t=ts, util=[0.2, 0.4]),
        Series(gpu="GPU-1", index=1, workload="ns/big", t=ts, util=[0.6, 0.8]),
        Series(gpu="GPU-1", index=1, workload="ns/small", t=ts, util=[0.1, 0.1])])
    assert h.store(r) == (False, 6)
    got = h.all_samples()
    assert sorted(got) == ["ns/big", "ns/small"]
    np.testing.assert_allclose(got["ns/big"][1], [0.4, 0.6])
    np.testing.assert_allclose(h.samples("ns/big", since=1.0)[1], [0.6])
    assert h.prune(1.0) == 3 and h.counts()["usage_samples"] == 3
    assert h.has_report("r-00000001")


def deliver(svc: IngestService, t: np.ndarray, util: np.ndarray) -> None:
    """Samples of workload ns/svc on one GPU, delivered in reports of twelve."""
    for i in range(0, len(t), 12):
        r = Report(report_id=f"r-{i:08d}", node="n1", created_at=float(t[i] + 3600),
                   workloads=[Series(gpu="GPU-0", index=0, workload="ns/svc",
                                     t=[float(x) for x in t[i:i + 12]],
                                     util=[float(x) for x in util[i:i + 12]])])
        assert svc.handle(body(r), AUTH)[0] == 200


def test_profiles_are_learned_from_ingested_history(svc: IngestService) -> None:
    # Two days of a workload busy (0.9) from 12:00 to 18:00 and idle (0.1) otherwise,
    # sampled every 5 minutes, delivered in hourly reports.
    step = 300.0
    got: dict = {}
    svc.on_profiles = got.update
    t = np.arange(0, 2 * DAY_SECONDS, step)
    busy = ((t % DAY_SECONDS) >= 12 * 3600) & ((t % DAY_SECONDS) < 18 * 3600)
    util = np.where(busy, 0.9, 0.1)
    deliver(svc, t, util)
    learned = svc.refresh_profiles()
    prof = learned["ns/svc"]
    assert prof.source == "learned" and len(prof.values) == 96
    assert prof.values[13 * 4] == pytest.approx(0.9) and prof.values[3 * 4] == pytest.approx(0.1)
    assert got["ns/svc"] is prof
    stamp = value(svc.metrics, "gsched_profile_last_update_timestamp_seconds", workload="ns/svc")
    assert stamp is not None and stamp >= 10_000
    # With profiles known, the node's predicted utilisation follows the newest sample's slot.
    r = make_report("r-99999999", t0=2 * DAY_SECONDS + 13 * 3600, util=0.9,
                    workloads=("ns/svc",))
    svc.handle(body(r), AUTH)
    assert value(svc.metrics, "gsched_node_predicted_utilization_ratio",
                 node="n1") == pytest.approx(0.45)  # 0.9 on one GPU of two


def test_history_at_a_coarser_resolution_keeps_bucket_means() -> None:
    h = UsageHistory(resolution_s=60.0)
    ts = [0.0, 30.0, 59.0, 60.0, 119.0]
    r = Report(report_id="r-00000001", node="n", created_at=120.0, workloads=[
        Series(gpu="GPU-0", index=0, workload="ns/a", t=ts, util=[0.1, 0.2, 0.3, 0.5, 0.7],
               mem_mib=[1.0, 5.0, 2.0, None, 3.0])])
    assert h.store(r) == (False, 2)
    t, v = h.samples("ns/a")
    assert list(t) == [0.0, 60.0]
    np.testing.assert_allclose(v, [0.2, 0.6])
    with pytest.raises(ValueError, match="resolution"):
        UsageHistory(resolution_s=-1)


def test_refresh_forgets_samples_beyond_retention(svc: IngestService) -> None:
    svc.retention_days = 1.0
    for i, t0 in enumerate([0.0, 3 * DAY_SECONDS]):
        assert svc.handle(body(make_report(f"r-0000000{i}", t0=t0)), AUTH)[0] == 200
    svc.refresh_profiles()
    t, _ = svc.history.samples("ns/a")
    assert t.min() >= 2 * DAY_SECONDS


def test_fallback_profiles_do_not_make_a_prediction(svc: IngestService) -> None:
    svc.handle(body(make_report("r-00000001")), AUTH)  # 4 samples: too few to learn
    learned = svc.refresh_profiles()
    assert learned["ns/a"].source == "fallback"
    svc.handle(body(make_report("r-00000002", t0=2000.0)), AUTH)
    assert value(svc.metrics, "gsched_node_predicted_utilization_ratio", node="n1") is None


def test_concurrent_reports_are_group_committed_exactly_once(tmp_path: Path) -> None:
    import threading

    h = UsageHistory(tmp_path / "h.sqlite")
    reports = [make_report(f"r-{i:08d}", t0=1000.0 * i) for i in range(40)]
    results: list[tuple[bool, int]] = []
    lock = threading.Lock()

    def worker(rs: list[Report]) -> None:
        for r in rs:
            got = h.store(r)
            with lock:
                results.append(got)

    # Every report twice, from different threads.
    threads = [threading.Thread(target=worker, args=(reports[i::4] + reports[(i + 1) % 4::4],))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    h.close()
    h = UsageHistory(tmp_path / "h.sqlite")  # what reached the disk
    assert sorted(d for d, _ in results) == [False] * 40 + [True] * 40
    assert sum(n for _, n in results) == 40 * 12
    assert h.counts() == {"usage_reports": 40, "usage_samples": 160, "usage_gpu_samples": 320}


def _ingest_days(svc: IngestService, days: int, seed: int = 0) -> None:
    """`days` days of a service busy 12:00-18:00 at 0.5, each day's level off by up to
    +-30 % (a day-to-day error the decayed p95 cannot know), every 5 minutes."""
    rng = np.random.default_rng(seed)
    step = 300.0
    t = np.arange(0, days * DAY_SECONDS, step)
    level = 1.0 + rng.uniform(-0.3, 0.3, size=days)
    busy = ((t % DAY_SECONDS) >= 12 * 3600) & ((t % DAY_SECONDS) < 18 * 3600)
    util = np.where(busy, 0.5, 0.1) * level[(t // DAY_SECONDS).astype(int)]
    deliver(svc, t, util)


def test_a_profile_books_its_own_margin_once_held_back_days_exist(tmp_path: Path) -> None:
    from gsched.scheduler.packing.forecast import decayed_quantile, error_margin

    plain = IngestService(UsageHistory(tmp_path / "a.sqlite"), SchedulerMetrics(), "tok",
                          margin_quantile=None)
    own = IngestService(UsageHistory(tmp_path / "b.sqlite"), SchedulerMetrics(), "tok")
    for s in (plain, own):
        _ingest_days(s, 6)
    base, booked = plain.refresh_profiles()["ns/svc"], own.refresh_profiles()["ns/svc"]
    assert base.margin == 0.0 and booked.margin > 0.05
    # the margin is the p90 excess of the last three days over their own forecasts
    from gsched.scheduler.packing.forecast import daily_matrix
    t, v = own.history.samples("ns/svc")
    _, hist = daily_matrix(t, v)
    fc = decayed_quantile()
    expect = error_margin([fc.predict(hist[:k])[1] for k in (3, 4, 5)],
                          [hist[k] for k in (3, 4, 5)], 0.9)
    assert booked.margin == pytest.approx(expect)
    np.testing.assert_allclose(booked.values,
                               np.clip(np.array(base.values) * (1 + expect), 0.0, 1.0))


def test_without_enough_history_the_quantile_is_booked_alone(tmp_path: Path) -> None:
    own = IngestService(UsageHistory(tmp_path / "b.sqlite"), SchedulerMetrics(), "tok")
    _ingest_days(own, 3)  # one training day + three held back would need four
    assert own.refresh_profiles()["ns/svc"].margin == 0.0
