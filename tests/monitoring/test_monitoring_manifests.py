"""The monitoring manifests name only metrics that gsched actually exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from fake_nvml import FakeProcess, eight_gpu_node
from prometheus_client.parser import text_string_to_metric_families

from gsched.agents.exporter import DCGM_FIELDS, AgentExporter
from gsched.agents.nvml import NvmlSource
from gsched.agents.pods import PodAttributor, PodDirectory, PodInfo
from gsched.scheduler.extender.metrics import SchedulerMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "manifests" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "manifests" / "grafana-dashboard.json"

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
    "or", "unless", "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values", "group", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, keywords or label names)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # string literals
    e = re.sub(r"\{[^}]*\}", "", e)                          # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                         # range selectors
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = e.replace("$__rate_interval", "")
    names = set()
    for m in re.finditer(r"(?<![\w$.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?", e):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def rule_exprs() -> list[str]:
    spec = yaml.safe_load(RULES.read_text())["spec"]
    return [r["expr"] for g in spec["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q or "")
        if m:
            exprs.append(m.group(1))
    return exprs


def scheduler_names() -> set[str]:
    """Every series name the scheduler's `SchedulerMetrics` exports."""
    sched = SchedulerMetrics()
    # Labelled metrics show no series until a child exists; make one of each.
    for metric in vars(sched).values():
        if hasattr(metric, "_labelnames") and metric._labelnames:
            metric.labels(*["x"] * len(metric._labelnames))
    return {s.name for fam in sched.registry.collect() for s in fam.samples}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    mp = pytest.MonkeyPatch()
    try:
        fake = eight_gpu_node().install(mp)
        fake.gpus[0].processes.append(FakeProcess(pid=1, used_bytes=1, sm_util=1))
        proc = tmp_path_factory.mktemp("proc")
        uid = "11111111-2222-3333-4444-555555555555"
        for p in fake.gpus[0].processes:
            (proc / str(p.pid)).mkdir()
            (proc / str(p.pid) / "cgroup").write_text(f"0::/kubepods/pod{uid}/{'c' * 64}\n")
        pods = PodDirectory(lambda: [PodInfo(namespace="ns", name="p", uid=uid,
                                             containers={"c" * 64: "main"})])
        src = NvmlSource("node-1", attributor=PodAttributor(pods, proc))
        src.open()
        sample = src.sample()
        assert sample.pods, "the fake node must have attributed pods"
        exp = AgentExporter("node-1")
        exp.observe(sample, 0.001, 1.0)
        from prometheus_client import generate_latest

        agent = {s.name for fam in text_string_to_metric_families(
            generate_latest(exp.registry).decode()) for s in fam.samples}
    finally:
        mp.undo()
    return scheduler_names() | agent


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, verb) (rate(a_b_bucket{x="y"}'
                        '[5m]))) > 0.25') == {"a_b_bucket"}
    assert metric_names("time() - max by (node) (foo_seconds) > 120") == {"foo_seconds"}
    assert metric_names('x{job=~"a|b"} / on (node) group_left y offset 5m') == {"x", "y"}


def test_every_dcgm_field_is_exported_with_a_real_gpu_reading(exported: set[str]) -> None:
    assert {name for name, _, _ in DCGM_FIELDS} <= exported


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_in_the_manifests_is_exported(exported: set[str], source: str) -> None:
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    named = set().union(*(metric_names(e) for e in exprs))
    assert named, "no metric found: extraction is broken"
    missing = sorted(named - exported)
    assert not missing, f"{source} name metrics nobody exports: {missing}"


def test_dashboard_has_the_panels_the_platform_team_asked_for() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dash["panels"]).lower()
    for want in ("utilisation vs allocation", "per-gpu utilisation over the day",
                 "predicted vs actual", "cost per experiment", "extender latency"):
        assert want in titles
    heat = next(p for p in dash["panels"] if p["type"] == "heatmap")
    assert "DCGM_FI_DEV_GPU_UTIL" in heat["targets"][0]["expr"]


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (Debian package 'prometheus'; .ci/run "
                           "installs it)")
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    spec = yaml.safe_load(RULES.read_text())["spec"]
    out = tmp_path / "rules.yml"
    out.write_text(yaml.safe_dump(spec))
    r = subprocess.run(["promtool", "check", "rules", str(out)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in r.stdout


def test_rules_cover_agent_down_headroom_and_stale_profiles() -> None:
    spec = yaml.safe_load(RULES.read_text())
    assert spec["kind"] == "PrometheusRule"
    alerts = {r["alert"] for g in spec["spec"]["groups"] for r in g["rules"]}
    assert {"GschedAgentDown", "GschedPredictedPeakOverHeadroom",
            "GschedProfilesStale"} <= alerts


def test_agent_daemonset_is_valid_kubernetes() -> None:
    import kubernetes_validate

    docs = list(yaml.safe_load_all((ROOT / "manifests" / "agent-daemonset.yaml").read_text()))
    for d in docs:
        kubernetes_validate.validate(d, "1.29", strict=True)
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and spec["runtimeClassName"] == "nvidia"
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    (c,) = spec["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The agent sees every GPU through the runtime but never takes one from workloads.
    assert all("nvidia.com/gpu" not in c["resources"].get(k, {}) for k in ("requests", "limits"))
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"} in c["env"]
    args = " ".join(c["args"])
    assert "--source=nvml" in args and "--token-file=" in args and "--queue-dir=" in args
