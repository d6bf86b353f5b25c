"""The extender's shortcuts at scale answer exactly as the plain path does.

kube-scheduler sends the same long `NodeNames` list again and again: the server keeps
recent lists by their encoding and does not decode them again (`wire.NameListCache`),
filter hands back a recent equal list of passing nodes, and prioritize writes its scores
into a zero-score template. Each must be indistinguishable from decoding and encoding
everything, including for bodies built to confuse the shortcut.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from extender_util import k8s_pod, make_server, post, ser

from gsched.models import Cluster, Node
from gsched.scheduler.extender import answers, wire

NAMES = [f"gpu-node-{i}" for i in range(120)]


def pod_json(annotations: dict | None = None) -> dict:
    return ser(k8s_pod("p", "uid-p", milli=500, annotations=annotations))


def decoded(cache: wire.NameListCache, body: bytes) -> tuple[object, list[str] | None]:
    """(Pod, NodeNames) as the server gets them through the cache."""
    raw, names = cache.loads(body)
    args = wire.parse(wire.ExtenderArgs, raw)
    if names is not None:
        args.node_names = names
    return args.pod, args.node_names


def plain(body: bytes) -> tuple[object, list[str] | None]:
    args = wire.parse(wire.ExtenderArgs, orjson.loads(body))
    return args.pod, args.node_names


def test_a_remembered_list_comes_back_as_the_same_object():
    cache = wire.NameListCache()
    names = list(NAMES)
    cache.remember(names)
    body = orjson.dumps({"Pod": pod_json(), "Nodes": None, "NodeNames": names})
    raw, got = cache.loads(body)
    assert got is names and raw["NodeNames"] is None
    assert decoded(cache, body) == plain(body)
    # a list it has not seen is decoded as usual
    other = orjson.dumps({"Pod": pod_json(), "NodeNames": NAMES[:-1]})
    assert cache.loads(other)[1] is None and decoded(cache, other) == plain(other)


ELIDED = "gsched:node-names-elided"


@pytest.mark.parametrize("body", [
    # the placeholder's text already in the pod
    orjson.dumps({"Pod": pod_json({"a": ELIDED}), "NodeNames": NAMES}),
    # ... spelled with \u escapes (decodes to the same string)
    orjson.dumps({"Pod": pod_json({"a": "PLACEHOLDER"}), "NodeNames": NAMES}).replace(
        b"PLACEHOLDER", "".join(f"\\u{ord(c):04x}" for c in ELIDED).encode()),
    # the list nested in the pod under the same key, another list at the top
    orjson.dumps({"Pod": {**pod_json(), "NodeNames": NAMES}, "NodeNames": NAMES[:3]}),
    # the same key twice in another case: Go (and the model) take the last
    orjson.dumps({"NodeNames": NAMES, "Pod": pod_json()})[:-1] + b',"nodenames":["x"]}',
    # the list, then the placeholder itself as a value elsewhere
    orjson.dumps({"Pod": pod_json(), "NodeNames": NAMES, "Other": ELIDED}),
    # whitespace after the colon (not what Go writes): decoded whole
    json.dumps({"Pod": pod_json(), "NodeNames": NAMES}).encode(),
    # a longer list that starts with the remembered one's bytes is not it
    orjson.dumps({"Pod": pod_json(), "NodeNames": NAMES + ["extra"]}),
    # the list nested first, the placeholder's text as the (invalid) top-level value
    orjson.dumps({"Pod": {**pod_json(), "NodeNames": NAMES}, "NodeNames": ELIDED}),
])
def test_bodies_built_to_confuse_the_cache_decode_as_a_whole(body):
    cache = wire.NameListCache()
    cache.remember(list(NAMES))

    def outcome(fn):
        try:
            return fn()
        except wire.WireError as e:
            return ("refused", e.field)

    assert outcome(lambda: decoded(cache, body)) == outcome(lambda: plain(body))


def test_invalid_json_is_still_refused():
    cache = wire.NameListCache()
    cache.remember(list(NAMES))
    body = orjson.dumps({"Pod": pod_json(), "NodeNames": NAMES})
    with pytest.raises(orjson.JSONDecodeError):
        cache.loads(body[:-1])
    with pytest.raises(orjson.JSONDecodeError):
        cache.loads(body.replace(b'"Pod":', b'"Pod"'))


def test_a_priority_answer_from_the_template_is_the_plain_encoding():
    rng = np.random.default_rng(0)
    names = [f"n-{i}" for i in range(300)]
    nl = answers.NameList(names, np.arange(300))
    answers.priority_template(nl, [wire.host_entries(n)[0] for n in names])
    for _ in range(20):
        scores = rng.integers(0, 11, size=300)
        scores[rng.random(300) < 0.6] = 0
        want = orjson.dumps([{"Host": n, "Score": int(s)}
                             for n, s in zip(names, scores, strict=True)])
        assert answers.priority_answer(nl, scores) == want


def cluster(n: int = 80) -> Cluster:
    return Cluster(nodes=[Node(name=f"gpu-node-{i}", gpu_count=8 if i % 5 else 2,
                               gpu_model="A100", cpu_milli=64000) for i in range(n)])


@pytest.mark.parametrize("policy", ["tidal", "binpack"])
def test_the_server_answers_as_it_would_without_its_shortcuts(policy):
    fast, _, _ = make_server(policy, cluster())
    slow, _, _ = make_server(policy, cluster())
    slow.app.names = wire.NameListCache(min_names=10**9)  # never remembers a list
    names = [f"gpu-node-{i}" for i in range(80)] + ["not-a-gpu-node"]
    try:
        for i in range(24):
            gpus = 4 if i % 3 == 0 else None
            pod = ser(k8s_pod(f"p{i}", f"uid-{i}", gpus=gpus,
                              milli=None if gpus else 500))
            body = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": names})
            got = [post(s.port, "/filter", body) for s in (fast, slow)]
            assert got[0] == got[1] and got[0][0] == 200
            passed = got[0][1]["NodeNames"]
            pbody = orjson.dumps({"Pod": pod, "Nodes": None, "NodeNames": passed})
            prio = [post(s.port, "/prioritize", pbody) for s in (fast, slow)]
            assert prio[0] == prio[1] and prio[0][0] == 200
            best = max(prio[0][1], key=lambda h: h["Score"])["Host"]
            bind = {"PodName": f"p{i}", "PodNamespace": "default", "PodUID": f"uid-{i}",
                    "Node": best}
            assert [post(s.port, "/bind", bind)[1] for s in (fast, slow)] == \
                [{"Error": ""}] * 2
        assert fast.app.names.hits > 20 and slow.app.names.hits == 0
    finally:
        fast.stop()
        slow.stop()


@pytest.mark.parametrize("seed", range(4))
def test_a_filter_answer_spliced_around_a_kept_list_is_the_plain_encoding(seed):
    rng = np.random.default_rng(seed)
    names = [f"n-{i}" for i in range(int(rng.integers(64, 400)))]
    failed = {f"f-{i}": "why \"quoted\" é" for i in range(int(rng.integers(0, 5)))}
    result = answers.filter_result(True, names, [], None, failed,
                                   {"u": "never"} if seed % 2 else {})
    cache = wire.NameListCache()
    encoded = cache.remember(names)
    assert encoded == orjson.dumps(names) and cache.remember(names) is encoded
    assert wire.filter_json(result, encoded) == orjson.dumps(result)
    # not the canonical shape (Nodes mode): encoded as it is
    other = {"Nodes": {"items": []}, "NodeNames": names, "Error": ""}
    assert wire.filter_json(other, encoded) == orjson.dumps(other)


def test_concurrent_connections_get_the_answers_of_one():
    """filter and prioritize are served one at a time across connections: answers from
    several threads at once are those of the same requests in sequence."""
    from concurrent.futures import ThreadPoolExecutor

    srv, _, _ = make_server("tidal", cluster())
    names = [f"gpu-node-{i}" for i in range(80)]
    bodies = [orjson.dumps({"Pod": ser(k8s_pod(f"p{i}", f"uid-{i}", milli=250 * (1 + i % 3))),
                            "Nodes": None, "NodeNames": names}) for i in range(12)]
    try:
        alone = [(post(srv.port, "/filter", b), post(srv.port, "/prioritize", b))
                 for b in bodies]
        with ThreadPoolExecutor(6) as pool:
            together = list(pool.map(lambda b: (post(srv.port, "/filter", b),
                                                post(srv.port, "/prioritize", b)), bodies))
        assert together == alone and all(f[0] == p[0] == 200 for f, p in alone)
    finally:
        srv.stop()


@pytest.mark.parametrize("seed", range(6))
def test_a_template_cut_from_its_parent_is_the_one_built_whole(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 600))
    names = [f"node-{'x' * int(rng.integers(0, 4))}{i}" for i in range(n)]
    parent = answers.NameList(names, np.arange(n))
    answers.priority_template(parent, [wire.host_entries(x)[0] for x in names])
    # few holes, many holes, the first or last node gone, one node left
    drop = rng.random(n) < float(rng.choice([0.01, 0.3, 0.9]))
    drop[0] |= seed == 1
    drop[-1] |= seed == 2
    if seed == 3:
        drop[:] = True
        drop[n // 2] = False
    ok = ~drop
    if not ok.any():
        ok[0] = True
    child = answers.passing_list([], names, np.arange(n), ok, parent)
    assert child.parent is parent
    assert answers.cut_template(child) and child.parent is None
    whole = answers.NameList(child.names, child.idx)
    answers.priority_template(whole, [wire.host_entries(x)[0] for x in child.names])
    assert child.zero == whole.zero and np.array_equal(child.digit, whole.digit)
    scores = rng.integers(0, 11, size=len(child.names))
    assert answers.priority_answer(child, scores) == orjson.dumps(
        [{"Host": h, "Score": int(s)} for h, s in zip(child.names, scores, strict=True)])
    # a list cut from a child is not kept alive through it
    grandchild = answers.passing_list([], child.names, child.idx, np.ones(len(child.names),
                                                                          dtype=bool), child)
    assert grandchild.parent is child
    orphan = answers.passing_list([], grandchild.names, grandchild.idx,
                                  np.ones(len(grandchild.names), dtype=bool), grandchild)
    assert orphan.parent is None and not answers.cut_template(orphan)
