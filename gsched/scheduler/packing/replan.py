"""Re-planning a cluster in motion: running and queued work into one CP-SAT plan.

`pack.pack_problem` plans a day from scratch. A live cluster is not from scratch: some
work runs where it runs, more waits, and every move of a running job costs a checkpoint
and a restart. This module turns that situation into a `PackProblem`:
- running inference is *fixed* where it is (a service is not moved by a re-plan);
- running preemptible training has a *current* placement: keeping it is free, moving it
  counts as a move, and moves are capped by `move_budget` and minimised by the packer
  right after the GPU count (each move costs one checkpoint and restart);
- queued work has no placement yet.
Training only has to fit the coming `window` slots (it is moved out before the next
peak, as the online policy does), so its load is its flat level over the window and zero
elsewhere; inference books its whole day.

The answer, a `Replan`, is data: a target (node, GPUs) per job and the running jobs to
move, which are none unless the plan empties at least one GPU the running work holds (a
move that saves nothing only costs a restart). Drivers put the targets on
`ClusterState.plan`, where the `tidal` policy prefers them, and carry out the moves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gsched.errors import InputError
from gsched.models import Cluster, Job
from gsched.scheduler.packing.pack import pack_problem
from gsched.scheduler.packing.problem import Workload, build_problem


@dataclass(frozen=True)
class WorkItem:
    """One job the re-plan sees: where it runs now (None if queued), what it books."""

    job: Job
    load: np.ndarray  # (T,) per-GPU booked load over the day
    where: tuple[str, tuple[int, ...]] | None = None


@dataclass
class Replan:
    """Targets per job id, the running jobs whose target differs (the moves), and how
    the re-plan went."""

    targets: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    moves: list[str] = field(default_factory=list)
    planned_queued: int = 0
    dropped_queued: int = 0
    gpus: int = 0
    gap: float = 0.0  # the plan's GPUs against its lower bound (0 = proven optimal)
    gpus_saved: int = 0  # GPUs the running work holds now minus those it holds in the plan
    seconds: float = 0.0
    status: str = "ok"


def window_load(job: Job, slots: int, now_slot: int, window: int) -> np.ndarray:
    """A preemptible job's load over the coming `window` slots, zero elsewhere."""
    full = job.load_profile(slots)
    out = np.zeros(slots)
    idx = (now_slot + np.arange(window)) % slots
    out[idx] = full[idx]
    return out


def _workloads(items: Sequence[WorkItem]) -> list[Workload]:
    out = []
    for it in items:
        j = it.job
        kw: dict = {}
        if it.where is not None:
            kw["fixed" if not j.preemptible else "current"] = it.where
        out.append(Workload(id=j.id, load=np.clip(it.load, 0.0, 1.0), num_gpu=j.num_gpu,
                            gpu_mem_mib=j.gpu_mem_mib, gpu_models=j.gpu_models, **kw))
    return out


def replan(running: Sequence[WorkItem], queued: Sequence[WorkItem], cluster: Cluster,
           headroom: float = 0.1, move_budget: int = 8, time_limit: float = 1.0,
           seed: int = 0, attempts: int = 4) -> Replan:
    """Plan `running` plus as much of `queued` (in the order given) as the cluster takes.

    The packer refuses a problem that does not fit; then the queued tail is halved and
    the plan tried again, up to `attempts` times (the queue head is what runs next).
    """
    t0 = time.perf_counter()
    take = len(queued)
    out = Replan()
    for _ in range(attempts):
        items = list(running) + list(queued[:take])
        if not items:
            break
        try:
            prob = build_problem(_workloads(items), cluster, headroom)
            plan, assign = pack_problem(prob, time_limit=time_limit, seed=seed,
                                        move_budget=move_budget,
                                        neighbourhood_size=12)
        except InputError:
            if take == 0:
                out.status = "infeasible"
                break
            take //= 2
            continue
        out.targets = {jid: (node, tuple(int(g) for g in gpus))
                       for jid, (node, gpus) in assign.items()}
        moves = [it.job.id for it in running if it.where is not None
                 and it.job.preemptible and out.targets.get(it.job.id) is not None
                 and (out.targets[it.job.id][0], tuple(sorted(out.targets[it.job.id][1])))
                 != (it.where[0], tuple(sorted(it.where[1])))]
        before = {(it.where[0], g) for it in running if it.where is not None
                  for g in it.where[1]}
        after = {(out.targets[it.job.id][0], g) for it in running
                 if it.job.id in out.targets for g in out.targets[it.job.id][1]}
        out.gpus_saved = len(before) - len(after)
        # A move costs a checkpoint and a restart: carry moves out only when the plan
        # empties at least one GPU the running work holds now.
        out.moves = moves if out.gpus_saved > 0 else []
        out.planned_queued = take
        out.dropped_queued = len(queued) - take
        out.gpus = int(plan.gpus_used)
        out.gap = float(plan.gap)
        break
    else:
        out.status = "infeasible"
    out.seconds = time.perf_counter() - t0
    return out
