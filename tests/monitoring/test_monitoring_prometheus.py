"""A real Prometheus server scrapes a replay agent and the scheduler on loopback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from monitoring_support import PROMETHEUS, Prometheus, scheduler_server, wait_for

from gsched.agents.agent import Agent, AgentConfig
from gsched.agents.replay import ReplaySource
from gsched.scheduler.extender.history import UsageHistory
from gsched.scheduler.extender.ingest import IngestService
from gsched.scheduler.extender.metrics import SchedulerMetrics

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not os.access(PROMETHEUS, os.X_OK),
    reason="/usr/bin/prometheus is not installed (Debian package 'prometheus'; .ci/run "
           "installs it)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, traces_dir: Path):
    work = tmp_path_factory.mktemp("prom")
    metrics = SchedulerMetrics()
    ingest = IngestService(UsageHistory(work / "gsched.sqlite"), metrics, "tok")
    sched = scheduler_server(ingest.routes(), metrics)
    src = ReplaySource(traces_dir / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz",
                       "replay-node-1", gpus=8, speed=60.0, offset=0)
    agent = Agent(src, AgentConfig(node="replay-node-1", interval_s=0.2, report_every=2,
                                   port=0, host="127.0.0.1", scheduler=sched.url, token="tok",
                                   queue_dir=work / "queue", max_backoff_s=0.2))
    agent.start()
    spec = yaml.safe_load((ROOT / "manifests" / "prometheus-rules.yaml").read_text())["spec"]
    rules = work / "rules.yml"
    rules.write_text(yaml.safe_dump(spec))
    prom = Prometheus(work, {"gsched-agent": [f"127.0.0.1:{agent.port}"],
                             "gsched-scheduler": [f"127.0.0.1:{sched.port}"]},
                      interval="1s", rule_files=[rules]).start()
    try:
        yield prom, agent, src
    finally:
        prom.stop()
        agent.stop()
        sched.stop()


def test_promql_returns_the_agents_dcgm_series(stack) -> None:
    prom, agent, src = stack
    q = 'DCGM_FI_DEV_GPU_UTIL{Hostname="replay-node-1"}'
    result = wait_for(lambda: (lambda r: r if len(r) == 8 else None)(prom.query(q)),
                      "8 GPU utilisation series in Prometheus")
    pods = set(src.pod_names)
    for series in result:
        labels = series["metric"]
        assert labels["job"] == "gsched-agent" and labels["namespace"] == "replay"
        assert labels["pod"] in pods and labels["modelName"] == "A100 (replay)"
        assert 0.0 <= float(series["value"][1]) <= 100.0
    assert {s["metric"]["gpu"] for s in result} == {str(i) for i in range(8)}


def test_promql_returns_the_schedulers_ingestion_series(stack) -> None:
    prom, agent, _ = stack
    q = 'gsched_agent_reports_total{job="gsched-scheduler",node="replay-node-1",' \
        'outcome="accepted"}'
    result = wait_for(lambda: [r for r in prom.query(q) if float(r["value"][1]) >= 2],
                      "accepted reports counted by the scheduler")
    assert len(result) == 1
    util = wait_for(lambda: prom.query(
        'gsched_node_actual_utilization_ratio{node="replay-node-1"}'), "node utilisation")
    assert 0.0 <= float(util[0]["value"][1]) <= 1.0
    agent_side = wait_for(lambda: [r for r in prom.query(
        'gsched_agent_reports_sent_total{job="gsched-agent"}') if float(r["value"][1]) >= 1],
        "reports acknowledged, seen from the agent")
    assert agent_side


def test_every_dashboard_and_rule_query_evaluates(stack) -> None:
    prom, _, _ = stack
    dash = json.loads((ROOT / "manifests" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for e in exprs:
        e = e.replace("$__rate_interval", "1m").replace("$node", ".*")
        ans = prom.api("query", query=e)
        assert ans["status"] == "success", (e, ans)
    # Prometheus loaded the PrometheusRule's groups and evaluates every rule cleanly.
    groups = wait_for(lambda: [g for g in prom.api("rules")["data"]["groups"]
                               if all(r.get("lastEvaluation", "").startswith("20")
                                      for r in g["rules"])] or None,
                      "rules to be evaluated")
    rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
    spec = yaml.safe_load((ROOT / "manifests" / "prometheus-rules.yaml").read_text())["spec"]
    assert groups and len(rules) == sum(len(g["rules"]) for g in spec["groups"])
    assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
