"""The scheduler's manifests: valid against the Kubernetes OpenAPI schemas (offline, with
`kubernetes-validate`), least-privilege RBAC, and a kube-scheduler configuration that
points at what `gsched serve` really serves."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from gsched.commands.serve import serve_cmd
from gsched.scheduler.extender import pods as podlib
from gsched.scheduler.extender.kube import LEADER_LABEL
from gsched.scheduler.extender.server import VERBS

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
MINE = ["namespace.yaml", "scheduler-rbac.yaml", "scheduler.yaml", "kube-scheduler.yaml"]
#: json tags of `Extender` in k8s.io/kube-scheduler/config/v1 (types.go)
EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight",
                   "bindVerb", "enableHTTPS", "tlsConfig", "httpTimeout", "nodeCacheCapable",
                   "managedResources", "ignorable"}


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def find(kind: str, name: str) -> dict:
    for f in MINE:
        for d in docs(f):
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
    raise KeyError((kind, name))


@pytest.mark.parametrize("version", ["1.29", "1.31", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("name", MINE)
def test_every_object_validates_strictly_against_the_openapi_schema(name, version):
    for d in docs(name):
        kubernetes_validate.validate(d, version, strict=True)


def test_the_validator_does_reject_a_broken_object():
    bad = find("Deployment", "gsched-scheduler")
    bad = yaml.safe_load(yaml.safe_dump(bad))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.31", strict=True)


def rules(kind: str, name: str) -> set[tuple[str, str, str, str]]:
    out = set()
    for r in find(kind, name)["rules"]:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    out.add((g, res, v, ",".join(r.get("resourceNames", []))))
    return out


def test_rbac_grants_only_the_calls_gsched_makes():
    assert rules("ClusterRole", "gsched-scheduler") == {
        ("", "nodes", "list", ""), ("", "nodes", "watch", ""),
        ("", "pods", "get", ""), ("", "pods", "list", ""), ("", "pods", "watch", ""),
        ("", "pods", "patch", ""), ("", "pods/binding", "create", ""),
        ("", "pods/eviction", "create", "")}
    assert rules("Role", "gsched-scheduler-lease") == {
        ("coordination.k8s.io", "leases", "create", ""),
        ("coordination.k8s.io", "leases", "get", "gsched"),
        ("coordination.k8s.io", "leases", "update", "gsched")}
    for f in MINE:
        for d in docs(f):
            for r in d.get("rules", []):
                assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"]


def test_kube_scheduler_configuration_points_at_the_extender():
    cm = find("ConfigMap", "gsched-kube-scheduler-config")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert cfg["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert cfg["kind"] == "KubeSchedulerConfiguration"
    assert [p["schedulerName"] for p in cfg["profiles"]] == ["gsched"]
    (ext,) = cfg["extenders"]
    assert set(ext) <= EXTENDER_FIELDS
    assert {"urlPrefix", "filterVerb", "prioritizeVerb", "bindVerb", "preemptVerb", "weight",
            "nodeCacheCapable", "managedResources", "ignorable", "httpTimeout"} <= set(ext)
    assert [ext[f"{v}Verb"] for v in VERBS] == list(VERBS)
    assert isinstance(ext["weight"], int) and ext["weight"] > 0
    assert ext["nodeCacheCapable"] is True
    assert re.fullmatch(r"\d+(ms|s)", ext["httpTimeout"])
    assert {m["name"] for m in ext["managedResources"]} == set(podlib.MANAGED_RESOURCES)
    ignored = {m["name"] for m in ext["managedResources"] if m.get("ignoredByScheduler")}
    assert ignored == {podlib.SHARE_RESOURCE}  # nodes do not advertise GPU shares
    svc = find("Service", "gsched-scheduler")
    port = svc["spec"]["ports"][0]["port"]
    assert ext["urlPrefix"] == f"http://gsched-scheduler.gsched-system.svc:{port}"
    sched = find("Deployment", "gsched-kube-scheduler")
    vol = sched["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    assert vol == cm["metadata"]["name"]
    assert "--config=/etc/gsched/config.yaml" in \
        sched["spec"]["template"]["spec"]["containers"][0]["command"]


def test_extender_deployment_matches_the_cli_and_the_service():
    dep = find("Deployment", "gsched-scheduler")
    assert dep["spec"]["replicas"] >= 2
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "serve"
    params = {p.replace("_", "-") for p in inspect.signature(serve_cmd).parameters}
    for arg in c["args"][1:]:
        flag = arg.split("=", 1)[0].removeprefix("--")
        assert flag in params, arg
    svc = find("Service", "gsched-scheduler")
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "gsched-scheduler",
                                       LEADER_LABEL: "true"}
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "gsched-scheduler"
    env = {e["name"] for e in c["env"]}
    assert {"POD_NAME", "POD_NAMESPACE"} <= env  # the leader labels its own pod
    # agents push to this Service with the same token
    agent = (MANIFESTS / "agent-daemonset.yaml").read_text()
    assert "http://gsched-scheduler.gsched-system.svc:8888" in agent
    secret = dep["spec"]["template"]["spec"]["volumes"][1]["secret"]["secretName"]
    assert f"secretName: {secret}" in agent


def test_gsched_profile_leaves_scoring_to_gsched_in_both_config_versions():
    """Default scorers disabled, every node scored, and a weight that outranks them should
    they come back; the v1beta1 file (Kubernetes 1.18-1.21) says the same as the v1
    ConfigMap, apart from its version and the explicit Lease lock."""
    cm = find("ConfigMap", "gsched-kube-scheduler-config")
    v1 = yaml.safe_load(cm["data"]["config.yaml"])
    v1beta1 = yaml.safe_load((MANIFESTS / "kube-scheduler-config-v1beta1.yaml").read_text())
    for cfg in (v1, v1beta1):
        (prof,) = cfg["profiles"]
        assert prof["plugins"]["score"]["disabled"] == [{"name": "*"}]
        assert cfg["percentageOfNodesToScore"] == 100
        # one priority step (x10 in kube-scheduler's 0-100 scale) beats 8 default scorers
        assert cfg["extenders"][0]["weight"] * 10 > 8 * 100
    assert v1beta1["apiVersion"] == "kubescheduler.config.k8s.io/v1beta1"
    assert v1beta1["leaderElection"].pop("resourceLock") == "leases"
    same = ("leaderElection", "profiles", "extenders", "percentageOfNodesToScore")
    assert {k: v1beta1[k] for k in same} == {k: v1[k] for k in same}
