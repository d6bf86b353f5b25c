"""The policy interface: one placement decision at a time, over plain data.

A policy answers three questions about a job against a `ClusterState`:
- `filter`: which nodes can take it now, with a reason code for each that cannot;
- `score`: how good each feasible node is (higher is better, any scale);
- `choose_gpus`: which GPUs of the chosen node it gets.

`place` strings them together for the simulator; the Kubernetes extender calls the three
separately for its filter / prioritize / bind verbs. Neither driver knows anything about
a policy beyond this interface, so what the simulator scores is what the extender runs.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from gsched.models import Job
from gsched.scheduler.policies.state import ClusterState, NoFit, Placement, Reason


class PolicyConfig(BaseModel):
    """Knobs shared by all policies; each policy reads the ones it needs."""

    headroom: float = Field(default=0.1, ge=0, lt=1,
                            description="share of each GPU kept free of predicted load")
    seed: int = 0
    #: tidal: the relative surge inference sharing a GPU with inference must survive
    #: (`online.LoadIndex.surge_proof`); 0 = share by profile alone
    inference_reserve: float = Field(default=0.0, ge=0, le=4)
    #: Jobs that describe the expected workload (FGD's target distribution).
    workload: list[Job] = Field(default_factory=list)

    model_config = {"arbitrary_types_allowed": True}


class Policy:
    """Base class: request-based fitting; subclasses override `score` (and maybe more)."""

    name = "base"
    #: True when the policy books daily profiles rather than fixed requests.
    profile_aware = False

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        #: the policy's only source of randomness (policies that draw, e.g. `random`)
        self.rng = np.random.default_rng(self.config.seed)

    def reseed(self, seed: int) -> None:
        """Start the policy's random draws afresh (drivers call it once per seeded run)."""
        self.rng = np.random.default_rng(seed)

    # -- what a job books ------------------------------------------------------
    def reservation(self, job: Job) -> float:
        """Share of each of its GPUs the job books: its request, by default."""
        return job.gpu_share

    # -- the three questions ---------------------------------------------------
    def filter(self, state: ClusterState, job: Job) -> np.ndarray:
        """Reason code per node; 0 (`Reason.FITS`) where the job fits now."""
        return state.fit_reasons(job, self.reservation(job))

    def feasible(self, state: ClusterState, job: Job) -> np.ndarray:
        """Boolean mask of nodes that fit now: `filter(...) == 0`, without the reasons.

        Request-based policies take a fast path; a policy that overrides `filter` is
        answered through its own filter, so the two can never disagree.
        """
        if type(self).filter is Policy.filter:
            return state.fit_mask(job, self.reservation(job))
        return self.filter(state, job) == 0

    def fit_key(self, job: Job) -> tuple:
        """Jobs with equal keys fit in exactly the same places under this policy.

        Drivers use it to stop retrying a queue of identical jobs after one fails.
        """
        return (job.shape_key(), self.reservation(job))

    def score(self, state: ClusterState, job: Job, feasible: np.ndarray) -> np.ndarray:
        """Score per node (higher is better); only `feasible` entries are read."""
        raise NotImplementedError

    def choose_gpus(self, state: ClusterState, job: Job, node: int) -> tuple[int, ...]:
        """Pick the job's GPUs on `node`: tightest fitting GPUs first, then lowest index."""
        return tightest_gpus(state, job, node, self.reservation(job))

    # -- time hooks ------------------------------------------------------------
    def on_slot(self, state: ClusterState, slot: int, now: float) -> list[str]:
        """Called by drivers when the time-of-day slot changes (before it starts).

        Returns ids of running preemptible jobs to checkpoint and move out now; the
        driver evicts them and queues them again. Request-based policies never do.
        """
        return []

    # -- queue order -----------------------------------------------------------
    def queue_key(self, job: Job) -> tuple:
        """Order in which waiting jobs are retried: priority, then arrival."""
        return (-job.priority, job.submit_time, job.id)


def tightest_gpus(state: ClusterState, job: Job, node: int, reserve: float) -> tuple[int, ...]:
    """The `num_gpu` GPUs of `node` that fit with the least free share left over."""
    if job.num_gpu == 0:
        return ()
    free = state.free[node].tolist()
    # a stable sort by free share: ties keep index order, as a stable argsort would
    return tuple(sorted(state.fitting_gpus(job, reserve, node), key=free.__getitem__)
                 [: job.num_gpu])


def loosest_gpus(state: ClusterState, job: Job, node: int, reserve: float) -> tuple[int, ...]:
    """The `num_gpu` GPUs of `node` with the most free share (spreading)."""
    if job.num_gpu == 0:
        return ()
    free = state.free[node].tolist()
    return tuple(sorted(state.fitting_gpus(job, reserve, node), key=lambda g: -free[g])
                 [: job.num_gpu])


def summarize_reasons(reasons: np.ndarray) -> NoFit:
    counts = np.bincount(reasons.astype(np.int64), minlength=len(Reason))
    return NoFit({Reason(r).message: int(c) for r, c in enumerate(counts) if r and c})


def place(policy: Policy, state: ClusterState, job: Job,
          explain: bool = True) -> Placement | NoFit:
    """Filter, score, pick the best node (lowest index on ties), then its GPUs.

    With `explain=False` a miss returns an empty `NoFit` without computing per-node
    reasons (the simulator retries queues and only needs yes or no).
    """
    feasible = policy.feasible(state, job)
    if not np.count_nonzero(feasible):  # (`any`, at a fifth of the call overhead)
        return summarize_reasons(policy.filter(state, job)) if explain else NoFit()
    scores = policy.score(state, job, feasible)
    masked = np.where(feasible, scores, -np.inf)
    node = int(np.argmax(masked))
    gpus = policy.choose_gpus(state, job, node)
    return Placement(node=node, gpus=gpus, reserved=policy.reservation(job))


def normalized_scores(scores: np.ndarray, feasible: np.ndarray, top: int = 10) -> np.ndarray:
    """Map raw scores of feasible nodes onto integers 0..top (the extender's range),
    keeping the policy's order; infeasible nodes get 0.

    Why not a linear rescale: kube-scheduler adds the extender's 0..10 (times its
    weight) to its own scorers and picks the highest total, breaking ties at random.
    Rounding a linear rescale ties nodes the policy tells apart (a node that is 1%
    better lands on the same integer), and `place` - what the simulator runs - breaks
    ties in the raw score by the lowest node index, a preference kube-scheduler never
    hears of. So placements drift from the simulator's.

    Instead, by rank: the node `place` would pick (highest raw score, lowest index among
    equals) alone gets `top`; every other feasible node gets `top - 1 - r`, where `r` is
    the rank of its raw score among the distinct scores of the others (0 for the
    highest), floored at 0. The best node is never tied, the first `top` distinct
    levels below it keep their strict order, and nodes below those share 0: the order
    kube-scheduler sees is the policy's order as far as eleven integers can hold it.
    """
    from gsched.scheduler.policies.rank_kernels import rank_scores  # (numba: when used)

    if top >= 1:  # two compiled passes; the numpy below is its reference, and NaN's path
        ranks, done = rank_scores(np.ascontiguousarray(scores, dtype=np.float64),
                                  np.ascontiguousarray(feasible, dtype=np.bool_), top)
        if done:
            return ranks
    out = np.zeros(len(scores), dtype=np.int64)
    idx = np.flatnonzero(feasible)
    if len(idx) == 0:
        return out
    vals = np.asarray(scores, dtype=np.float64)[idx]
    pick = int(np.argmax(vals))  # first maximum: the lowest index, as `place` picks
    rest = np.ones(len(idx), dtype=bool)
    rest[pick] = False
    if rest.any():
        others = vals[rest]
        levels = _top_levels(others, top)  # ascending; every level that ranks above 0
        ranked = others >= levels[0]
        rank = len(levels) - np.searchsorted(levels, others[ranked], side="right")
        score = np.zeros(len(others), dtype=np.int64)
        score[ranked] = np.maximum(top - 1 - rank, 0)
        out[idx[rest]] = score
    out[idx[pick]] = top
    return out


def _top_levels(vals: np.ndarray, top: int) -> np.ndarray:
    """The `top` highest distinct values of `vals` (all of them if fewer), ascending:
    from a partial sort of the largest few when they hold that many distinct values,
    else from a sort of all (at 10,000 values a sort costs about two partitions, and
    tied scores would need several widening partitions to find ten levels)."""
    m, take = len(vals), 16 * top
    if take < m:
        cand = np.unique(np.partition(vals, m - take)[m - take:])
        if len(cand) >= top:
            return cand[-top:]
    return np.unique(vals)[-top:]


def resource_fractions(state: ClusterState, job: Job, reserve: float) -> list[np.ndarray]:
    """Per resource, the fraction of each node that would be *requested* after placing job.

    Kubernetes' NodeResourcesFit scorers (LeastAllocated / MostAllocated) average these
    over CPU, memory and GPUs; resources a node does not declare are left out.
    """
    gpu_used = (state.node_alloc + job.num_gpu * reserve) / state.gpu_count_or_1
    fracs = [gpu_used if state.all_have_gpus else np.where(state.has_gpus, gpu_used, 0.0)]
    if state.any_cpu_limit:
        fracs.append(np.where(state.cpu_unlimited, 0.0,
                              (state.cpu_total - state.cpu_free + job.cpu_milli)
                              / np.maximum(state.cpu_total, 1)))
    if state.any_mem_limit:
        fracs.append(np.where(state.mem_unlimited, 0.0,
                              (state.mem_total - state.mem_free + job.memory_mib)
                              / np.maximum(state.mem_total, 1)))
    return fracs


def mean_fraction(fracs: list[np.ndarray]) -> np.ndarray:
    """`np.mean(fracs, axis=0)`; one resource (GPUs only) is its own mean, exactly."""
    return fracs[0] if len(fracs) == 1 else np.mean(fracs, axis=0)
