"""The canonical JSON answers of the extender verbs, and the small records behind them.

Kept apart from `verbs` so that the shape of what kube-scheduler reads (which of
`Nodes` / `NodeNames` it looks at in each mode, the neutral answer of a failed verb) is
defined in one place.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gsched.scheduler.extender import pods as podlib
from gsched.scheduler.extender.wire import ExtenderArgs, ExtenderPreemptionArgs, MetaPod

#: how many recent node-name lists the extender remembers with their indices
RECENT_LISTS = 4


@dataclass(eq=False)
class NameList:
    names: list[str]
    idx: np.ndarray
    #: the `HostPriorityList` of these nodes with every score 0, and where each score's
    #: digit is in it (built on the first prioritize over this list)
    zero: bytes | None = None
    digit: np.ndarray | None = None
    #: whether it is every node of the cluster in index order (set on first use)
    every: bool | None = None
    #: a list this one was cut from (filter's passing nodes of it) and the positions
    #: in it that were kept: its template is cut from the parent's (`cut_template`)
    parent: NameList | None = None
    kept: np.ndarray | None = None


def whole(nl: NameList, n_nodes: int) -> bool:
    """Whether `nl` names every node in index order: answers then need no reindexing."""
    if nl.every is None:
        nl.every = len(nl.idx) == n_nodes and bool(
            (nl.idx == np.arange(n_nodes)).all())
    return nl.every


def passing_list(recent: list[NameList], names: list[str], idx: np.ndarray,
                 ok: np.ndarray, parent: NameList | None = None) -> NameList:
    """The nodes of `names` that passed filter, as a NameList: a recent one with the same
    nodes when there is one (its list object, its prioritize template), else a new one.
    Successive pods mostly pass on the same nodes; reusing the list saves building it,
    encoding it and, in prioritize, resolving it again. A new list remembers `parent`
    (the list asked about, `names` in its order) to cut its template from."""
    kept = idx[ok]
    if (kept >= 0).all():  # known nodes: the indices determine the names
        for nl in recent:
            if len(nl.idx) == len(kept) and np.array_equal(nl.idx, kept):
                return nl
    if parent is not None and parent.parent is not None:
        parent = None  # no chains of lists kept alive by their children
    return NameList(list(itertools.compress(names, ok.tolist())), kept, parent=parent,
                    kept=np.flatnonzero(ok) if parent is not None else None)


#: a template is cut from its parent's when at most this many runs of it are kept
MAX_CUT_RUNS = 512


def cut_template(nl: NameList) -> bool:
    """Fill `nl.zero` / `nl.digit` by cutting the parent's zero-score template (the
    nodes filter dropped taken out): a few slices joined, instead of joining 10,000
    entries again. False (nothing done) without a parent template or when the kept
    nodes fall in too many runs."""
    p, kept = nl.parent, nl.kept
    nl.parent = nl.kept = None  # used once: the parent need not be kept alive
    if p is None or p.zero is None or p.digit is None or kept is None:
        return False
    if len(kept) == 0:
        return False
    # runs of consecutive kept positions: [first[r], last[r]] in the parent
    breaks = np.flatnonzero(np.diff(kept) != 1)
    first = kept[np.concatenate(([0], breaks + 1))]
    last = kept[np.concatenate((breaks, [len(kept) - 1]))]
    if len(first) > MAX_CUT_RUNS:
        return False
    # an entry ends at its digit + 2 (`<digit>}`); it starts after the previous entry's
    # comma (or the opening bracket)
    ends = p.digit + 2
    starts = np.concatenate(([1], ends[:-1] + 1))
    lo, hi = starts[first].tolist(), ends[last].tolist()
    nl.zero = b"[" + b",".join(p.zero[a:b] for a, b in zip(lo, hi, strict=True)) + b"]"
    # each run moves left by where it was, less where it lands
    lands = np.cumsum([1] + [b - a + 1 for a, b in zip(lo[:-1], hi[:-1], strict=True)])
    shift = np.repeat(np.asarray(lo) - lands, last - first + 1)
    nl.digit = p.digit[kept] - shift
    return True


def priority_template(nl: NameList, entries: list[bytes],
                      lengths: np.ndarray | None = None) -> None:
    """Fill `nl.zero` / `nl.digit` from the nodes' encoded zero-score entries
    (`{"Host":"n","Score":0}`, in list order); `lengths`, their lengths, when known."""
    if lengths is None:
        lengths = np.fromiter(map(len, entries), dtype=np.int64, count=len(entries))
    starts = np.ones(len(entries), dtype=np.int64)  # after the opening bracket
    starts[1:] += np.cumsum(lengths[:-1] + 1)       # each entry, then a comma
    nl.zero = b"[" + b",".join(entries) + b"]"
    nl.digit = starts + lengths - 2                  # the digit before the closing brace


def priority_answer(nl: NameList, scores: np.ndarray) -> bytearray:
    """The `HostPriorityList` of `nl` with `scores` (0..10): its zero-score template with
    the non-zero digits written in; a 10 is one character longer, inserted in place
    (last first, so the earlier positions hold)."""
    assert nl.zero is not None and nl.digit is not None
    buf = bytearray(nl.zero)
    view = np.frombuffer(buf, dtype=np.uint8)
    nz = np.flatnonzero(scores)
    view[nl.digit[nz]] = ord("0") + np.minimum(scores[nz], 9)
    tens = nl.digit[nz[scores[nz] >= 10]]
    view[tens] = ord("1")
    del view  # a bytearray with a live buffer export cannot be resized
    for at in sorted(tens.tolist(), reverse=True):  # "1" is written; a "0" follows it
        buf[at + 1:at + 1] = b"0"
    return buf


def with_gpus(pj: podlib.PodJob, gpus: tuple[int, ...]) -> podlib.PodJob:
    return podlib.PodJob(pj.uid, pj.namespace, pj.name, pj.node, pj.phase, pj.managed,
                         pj.job, pj.workload, gpus, pj.deleting)


def meta_victims(uids: Iterable[Any], pdb: int) -> dict[str, Any]:
    return {"Pods": [{"UID": u.uid if isinstance(u, MetaPod) else u} for u in uids],
            "NumPDBViolations": pdb}


def filter_result(cache_mode: bool, names: list[str], items: list[dict[str, Any]],
                   ok: np.ndarray | None, failed: dict[str, str],
                   unresolvable: dict[str, str]) -> dict[str, Any]:
    """`ExtenderFilterResult` in canonical form: `NodeNames` in nodeCacheCapable mode,
    else `Nodes` with the passing Node objects (what kube-scheduler reads in each)."""
    keep = ok.tolist() if ok is not None and not ok.all() else None
    res: dict[str, Any] = {"Nodes": None, "NodeNames": None, "FailedNodes": failed,
                           "FailedAndUnresolvableNodes": unresolvable, "Error": ""}
    if cache_mode:
        res["NodeNames"] = names if keep is None else list(itertools.compress(names, keep))
    else:
        res["Nodes"] = {"metadata": {}, "items": items if keep is None
                        else list(itertools.compress(items, keep))}
    return res


def error_result(verb: str, message: str, args: Any = None) -> Any:
    """The answer of a verb that failed inside gsched (not the request's fault)."""
    if verb == "filter":
        return {"Nodes": None, "NodeNames": None, "FailedNodes": {},
                "FailedAndUnresolvableNodes": {}, "Error": message}
    if verb == "bind":
        return {"Error": message}
    if verb == "prioritize":  # HostPriorityList has no Error: answer neutrally
        names = args.candidate_names() if isinstance(args, ExtenderArgs) else []
        return [{"Host": n, "Score": 0} for n in names]
    if verb == "preempt":  # no Error either: leave kube-scheduler's victims as they were
        cands = args.meta_victims() if isinstance(args, ExtenderPreemptionArgs) else {}
        return {"NodeNameToMetaVictims": {n: meta_victims(v.pods or [], v.num_pdb_violations)
                                          for n, v in cands.items()}}
    return {"Error": message}
