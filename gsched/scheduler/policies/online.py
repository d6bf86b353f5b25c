"""Online tidal scoring: one job against every node, in well under a millisecond.

Between CP-SAT plans, pods arrive one at a time and must be placed now. For a job with
per-GPU daily load `l` (T slots) and a node's GPUs with load `L[g]`, the job fits a GPU
when `L[g, t] + l[t] <= 1 - headroom` in the slots that matter:
- a non-preemptible job (inference) must fit every slot of the day against the *firm*
  load (non-preemptible jobs); preemptible work on that GPU will be moved out before it
  collides (`TidalPolicy.on_slot`), so it only has to fit the next `window` slots;
- a preemptible job (training) must fit the next `window` slots against everything
  placed: it runs in the valley and is checkpointed and moved before the peak.
Headroom protects inference latency against forecast error, so it applies to GPUs that
hold (or would hold) inference whose load is a forecast (a daily profile); a GPU of
training, or of inference booked at its flat request (no forecast to be wrong about, as
Kubernetes books it), may be filled to 1. A job whose peak exceeds its usable
capacity gets empty GPUs only.

Speed comes from a per-node cache, refreshed only for nodes whose `node_version` moved:
the firm load max-pooled into `blocks` blocks of the day. A GPU whose block maxima fit
surely fits; one that fails at the job's own peak slot surely does not; only the few
in between get the exact T-slot test. The score of a fitting GPU rewards, in order:
already being occupied (no new GPU paid for), peaks that interleave (the job's peak
lands in the GPU's valley, so the GPU's peak hardly grows) and a fuller day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gsched.models import Job
from gsched.scheduler.policies.state import EPS, ClusterState

#: score weights: occupied GPU, interleave (0..1), daily fill (0..1)
W_OCCUPIED, W_INTERLEAVE, W_FILL = 1.0, 0.5, 0.25


def guarded(job: Job) -> bool:
    """Inference whose load is a forecast: it gets (and imposes) the headroom."""
    return job.kind == "inference" and job.profile is not None


@dataclass
class GpuFit:
    """Per GPU of every node: does the job fit, and how good a home is it."""

    ok: np.ndarray     # (nodes, gpus) bool
    score: np.ndarray  # (nodes, gpus) float, -inf where not ok


class LoadIndex:
    """Cached per-node views of a `ClusterState`'s load, for `fit` and `score`.

    One index belongs to one state; it notices changes through `node_version`, so it
    stays correct however the driver mutates the state (allocate, release, preempt).
    """

    def __init__(self, state: ClusterState, headroom: float = 0.1, blocks: int = 12,
                 window: int = 4, inference_reserve: float = 0.0) -> None:
        self.state = state
        self.cap = 1.0 - headroom
        #: see `surge_proof`; 0 = inference shares with inference by profile alone
        self.reserve = inference_reserve
        t = state.slots
        self.blocks = blocks if t % blocks == 0 else 1
        self.window = max(1, min(window, t))
        n, g = state.n_nodes, state.max_gpus
        self.version = np.full(n, -1, dtype=np.int64)
        # block-major layout: reductions over blocks run along the leading axis (fast)
        self.firm_block = np.zeros((self.blocks, n, g))
        self.firm_peak = np.zeros((n, g))
        self.firm_mean = np.zeros((n, g))
        # slot-major copies: reading a few slots for every GPU is then contiguous
        self.load_t = np.zeros((t, n, g))
        self.firm_t = np.zeros((t, n, g))
        # per GPU, the highest load over the coming window (for flat-load jobs) and the
        # capacity a training job may fill; valid for `_win_slot` and current versions
        self._win_slot = -1
        self.win_max = np.zeros((n, g))
        self.train_cap = np.where(state.forecast_on_gpu > 0, self.cap, 1.0) + EPS
        self._job_cache: dict[tuple, tuple[np.ndarray, np.ndarray, int, float, float]] = {}

    # ------------------------------------------------------------------ cache
    def refresh(self) -> None:
        st = self.state
        changed = np.flatnonzero(st.node_version != self.version)
        if len(changed) == 0:
            return
        firm = st.load[changed] - st.preemptible_load[changed]
        np.maximum(firm, 0.0, out=firm)
        self.load_t[:, changed] = np.moveaxis(st.load[changed], 2, 0)
        self.firm_t[:, changed] = np.moveaxis(firm, 2, 0)
        self.train_cap[changed] = np.where(st.forecast_on_gpu[changed] > 0, self.cap,
                                           1.0) + EPS
        if self._win_slot >= 0:
            win = (self._win_slot + np.arange(self.window)) % st.slots
            self.win_max[changed] = self.load_t[win][:, changed].max(axis=0)
        self.firm_block[:, changed] = np.moveaxis(
            firm.reshape(len(changed), st.max_gpus, self.blocks, -1).max(axis=3), 2, 0)
        self.firm_peak[changed] = firm.max(axis=2)
        self.firm_mean[changed] = firm.mean(axis=2)
        self.version[changed] = st.node_version[changed]

    def _job_view(self, job: Job) -> tuple[np.ndarray, np.ndarray, int, float, float]:
        """(load, block maxima, peak slot, peak, mean) of the job's per-GPU profile."""
        key = (job.profile_name or id(job.profile), job.gpu_share, job.utilization,
               job.profile is None)
        v = self._job_cache.get(key)
        if v is None:
            load = job.load_profile(self.state.slots)
            v = (load, load.reshape(self.blocks, -1).max(axis=1), int(np.argmax(load)),
                 float(load.max()), float(load.mean()))
            if len(self._job_cache) > 4096:
                self._job_cache.clear()
            self._job_cache[key] = v
        return v

    def window_slots(self) -> np.ndarray:
        s = self.state.current_slot
        return (s + np.arange(self.window)) % self.state.slots

    def window_max(self) -> np.ndarray:
        """Per GPU, the highest total load over the coming window (call after refresh)."""
        s = self.state.current_slot
        if s != self._win_slot:
            self.win_max = self.load_t[self.window_slots()].max(axis=0)
            self._win_slot = s
        return self.win_max

    # ------------------------------------------------------------------ fit
    def node_mask(self, job: Job) -> np.ndarray:
        """Nodes that pass the non-GPU checks (model, GPU count, CPU, memory)."""
        st = self.state
        mask = st.static_mask(job).copy()
        if job.cpu_milli:
            mask &= st.cpu_unlimited | (st.cpu_free >= job.cpu_milli - EPS)
        if job.memory_mib:
            mask &= st.mem_unlimited | (st.mem_free >= job.memory_mib - EPS)
        return mask

    def fit(self, job: Job, nodes: np.ndarray | None = None) -> GpuFit:
        """Which GPUs of every node can take the job now, and their scores.

        Only the rows of `nodes` (default: those passing `node_mask`) are evaluated;
        the rest come back as not fitting.
        """
        self.refresh()
        st = self.state
        mask = self.node_mask(job) if nodes is None else nodes
        idx = np.flatnonzero(mask)
        ok_full = np.zeros(st.gpu_valid.shape, dtype=bool)
        score_full = np.full(st.gpu_valid.shape, -np.inf)
        if not len(idx):
            return GpuFit(ok_full, score_full)
        # A slice keeps every row a view (no copy of the load cube) in the common case.
        rows = slice(None) if len(idx) == st.n_nodes else idx
        base = st.gpu_valid[rows] & ~st.blocked[rows]  # the load guard's closed GPUs
        if job.gpu_mem_mib:
            base = base & (st.gpu_mem_free[rows] >= job.gpu_mem_mib)
        jobs_on = st.jobs_on_gpu[rows]
        load, lb, tp, lpeak, lmean = self._job_view(job)
        infer = guarded(job)
        if infer:
            cap = np.full(base.shape, self.cap + EPS)
        else:
            cap = self.train_cap[rows]
        if lpeak > (self.cap if infer else 1.0) + EPS:  # exclusive: whole empty GPUs only
            ok = base & (jobs_on == 0)
            ok_full[rows] = ok
            score_full[rows] = np.where(ok, W_FILL * min(lmean, 1.0), -np.inf)
            return GpuFit(ok_full, score_full)
        # window: everything placed (preemptible too) plus the job, next `window` slots
        win = self.window_slots()
        if job.profile is None:  # flat load: only the window's highest load matters
            ok = base & (self.window_max()[rows] + lpeak <= cap)
        else:
            ok = base.copy()
            room = np.empty(base.shape)
            for s in win:  # one contiguous (nodes x gpus) slab per slot
                np.subtract(cap, self.load_t[s][rows], out=room)
                ok &= room >= load[s]
        firm_peak = self.firm_peak[rows]
        if job.profile is None:
            # A flat load: the day's new peak is the firm peak plus the load, exactly.
            new_peak = firm_peak + lpeak
            if not job.preemptible:
                ok &= new_peak <= cap
        else:
            with_job = self.firm_block[:, rows] + lb[:, None, None]  # (blocks, rows, gpus)
            new_peak = np.maximum.reduce(with_job, axis=0)
            if not job.preemptible:
                sure = new_peak <= cap  # every block's maximum fits
                firm_tp = self.firm_t[tp][rows]
                amb = ok & ~sure & (firm_tp + load[tp] <= cap)
                ok &= sure | amb
                if amb.any():
                    ri, gi = np.nonzero(amb)
                    firm = self.firm_t[:, idx[ri], gi].T  # (ambiguous GPUs, slots)
                    ok[ri, gi] = ((firm + load) <= cap[ri, gi, None]).all(axis=1)
        if self.reserve > 0 and infer and not job.preemptible:
            self.surge_proof(ok, rows, idx, load)
        inter = 1.0 - (new_peak - firm_peak) / max(lpeak, EPS)
        score = (W_OCCUPIED * (jobs_on > 0) + W_INTERLEAVE * np.clip(inter, 0.0, 1.0)
                 + W_FILL * np.minimum(self.firm_mean[rows] + lmean, 1.0))
        score = np.where(ok, score, -np.inf)
        if isinstance(rows, slice):  # every row asked: the arrays are the answer
            return GpuFit(ok, score)
        ok_full[rows] = ok
        score_full[rows] = score
        return GpuFit(ok_full, score_full)

    def surge_proof(self, ok: np.ndarray, rows: slice | np.ndarray, idx: np.ndarray,
                    load: np.ndarray) -> None:
        """Clear `ok` where inference would share a GPU with firm load and their summed
        profile, grown by `reserve`, would not fit under the whole GPU in some slot.

        The load guard protects inference from the training beside it (training is
        evicted within one report), but nothing can be evicted from inference beside
        inference: a surprise surge on such a GPU stays until it passes. So inference
        shares by profile with other firm load only as far as the pair survives a
        relative surge of `reserve`; a GPU of its own is always allowed, and training
        still rides every valley (it is checked against the forecast, not the reserve)."""
        shared = ok & (self.firm_peak[rows] > EPS)
        if not shared.any():
            return
        ri, gi = np.nonzero(shared)
        firm = self.firm_t[:, idx[ri], gi].T  # (GPUs, slots)
        ok[ri, gi] = (firm + load).max(axis=1) * (1.0 + self.reserve) <= 1.0 + EPS

    def node_scores(self, job: Job, nodes: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """(feasible nodes, node score): the best GPU's score, or the mean of the best
        `num_gpu` for a multi-GPU job."""
        st = self.state
        mask = self.node_mask(job) if nodes is None else nodes
        if job.num_gpu == 0:
            return mask, np.zeros(st.n_nodes)
        gf = self.fit(job, mask)
        k = job.num_gpu
        count = gf.ok.sum(axis=1)
        feasible = mask & (count >= k)
        if k == 1:
            return feasible, gf.score.max(axis=1)
        top = -np.sort(-gf.score, axis=1)[:, :k]
        return feasible, np.where(feasible, top.mean(axis=1) if k else 0.0, -np.inf)

    def choose(self, job: Job, node: int) -> tuple[int, ...]:
        """The job's GPUs on `node`: its `num_gpu` best-scoring fitting GPUs."""
        if job.num_gpu == 0:
            return ()
        mask = np.zeros(self.state.n_nodes, dtype=bool)
        mask[node] = self.node_mask(job)[node]
        gf = self.fit(job, mask)
        idx = np.flatnonzero(gf.ok[node])
        order = idx[np.argsort(-gf.score[node, idx], kind="stable")]
        return tuple(sorted(int(g) for g in order[: job.num_gpu]))
