"""Policy names as users type them, and how to build each one."""

from __future__ import annotations

from gsched.errors import InputError
from gsched.scheduler.policies.baselines import BinpackPolicy, K8sSpreadPolicy, PeakFFDPolicy
from gsched.scheduler.policies.fgd import ExactFGDPolicy
from gsched.scheduler.policies.fgd_paper import PaperFGDPolicy
from gsched.scheduler.policies.paper import (
    DotProductPolicy,
    GpuClusteringPolicy,
    GpuPackingPolicy,
    PaperBestFitPolicy,
    RandomPolicy,
)
from gsched.scheduler.policies.policy import Policy, PolicyConfig
from gsched.scheduler.policies.tidal import TidalPolicy

#: every policy, in the order `all` runs them: kube-scheduler's two, the FGD paper's six
#: (as its artifact defines them), gsched's exact-delta FGD, then the profile-aware two.
POLICIES: dict[str, type[Policy]] = {
    "k8s-spread": K8sSpreadPolicy,
    "binpack": BinpackPolicy,
    "random": RandomPolicy,
    "dotprod": DotProductPolicy,
    "clustering": GpuClusteringPolicy,
    "gpupacking": GpuPackingPolicy,
    "bestfit": PaperBestFitPolicy,
    "fgd": PaperFGDPolicy,
    "fgd-exact": ExactFGDPolicy,
    "peak": PeakFFDPolicy,
    "tidal": TidalPolicy,
}


def policy_names(spec: str) -> list[str]:
    """Parse `all` or a comma-separated list of policy names, in the order given."""
    if spec.strip() == "all":
        return list(POLICIES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        if n not in POLICIES:
            raise InputError(f"unknown policy {n!r}; choose from {', '.join(POLICIES)} or 'all'",
                             field="--policy")
    if not names:
        raise InputError("no policy given", field="--policy")
    return list(dict.fromkeys(names))


def make_policy(name: str, config: PolicyConfig | None = None) -> Policy:
    if name not in POLICIES:
        raise InputError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}",
                         field="policy")
    return POLICIES[name](config)
