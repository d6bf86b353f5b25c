"""The wire types of `k8s.io/kube-scheduler/extender/v1`, as pydantic models.

The Go structs carry no JSON tags, so kube-scheduler marshals the Go field names
(`Pod`, `NodeNames`, `FailedNodes`, ...) and Go's decoder matches keys
case-insensitively. These models do the same: any case on input (`nodenames`,
`NODENAMES`), the canonical capitalised names on output (`model_dump(by_alias=True)`),
unknown keys ignored as Go ignores them. Go pointers and nil maps/slices are JSON
`null`, so every optional field here accepts `null`.

Pods and Nodes are Kubernetes objects with their own (lowerCamel) JSON tags; they are
kept as plain mappings and read by `gsched.scheduler.extender.pods` (pods) or just by name
(nodes), because validating a 5,000-node `NodeList` field by field would cost more than
answering the request.

`parse(model, raw)` turns a pydantic error into `WireError` naming the field with its
canonical path (`Pod.metadata`, `NodeNameToVictims.node-1.Pods[0]`), which the server
answers with 400.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MIN_EXTENDER_PRIORITY = 0
MAX_EXTENDER_PRIORITY = 10


class WireError(ValueError):
    """A request body that is not the extender type it should be; `field` names where."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.reason = field, message
        super().__init__(f"field '{field}': {message}" if field else message)


class _Wire(BaseModel):
    """Base: fold input keys onto the Go field names, whatever their case."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _fold_case(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        canon = _aliases(cls)
        out: dict[str, Any] = {}
        for k, v in data.items():
            name = canon.get(k.lower()) if isinstance(k, str) else None
            if name is not None:
                out[name] = v
        return out


_ALIAS_CACHE: dict[type, dict[str, str]] = {}


def _aliases(cls: type[BaseModel]) -> dict[str, str]:
    table = _ALIAS_CACHE.get(cls)
    if table is None:
        table = {}
        for name, f in cls.model_fields.items():
            alias = f.alias or name
            table[alias.lower()] = alias
        _ALIAS_CACHE[cls] = table
    return table


KubeObject = dict[str, Any]


class NodeList(_Wire):
    """`v1.NodeList`: only `items` matters here (its JSON tag is lowercase)."""

    items: list[KubeObject] | None = Field(default=None, alias="items")


class ExtenderArgs(_Wire):
    """Filter and prioritize request. `NodeNames` when nodeCacheCapable, else `Nodes`."""

    pod: KubeObject | None = Field(default=None, alias="Pod")
    nodes: NodeList | None = Field(default=None, alias="Nodes")
    node_names: list[str] | None = Field(default=None, alias="NodeNames")

    def candidate_names(self) -> list[str]:
        """Node names asked about, in request order (whichever mode was used)."""
        if self.node_names is not None:
            return self.node_names
        if self.nodes is not None and self.nodes.items:
            return [node_name(n, i) for i, n in enumerate(self.nodes.items)]
        return []


def node_name(node: KubeObject, index: int = 0) -> str:
    """`metadata.name` of a Node object; a WireError naming the item if it has none."""
    meta = node.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise WireError(f"Nodes.items[{index}].metadata.name", "node has no name")
    return name


class ExtenderFilterResult(_Wire):
    nodes: NodeList | None = Field(default=None, alias="Nodes")
    node_names: list[str] | None = Field(default=None, alias="NodeNames")
    failed_nodes: dict[str, str] = Field(default_factory=dict, alias="FailedNodes")
    failed_and_unresolvable: dict[str, str] = Field(default_factory=dict,
                                                    alias="FailedAndUnresolvableNodes")
    error: str = Field(default="", alias="Error")


class HostPriority(_Wire):
    host: str = Field(alias="Host")
    score: int = Field(alias="Score")


class ExtenderBindingArgs(_Wire):
    pod_name: str = Field(alias="PodName", min_length=1)
    pod_namespace: str = Field(default="", alias="PodNamespace")
    pod_uid: str = Field(default="", alias="PodUID")
    node: str = Field(alias="Node", min_length=1)


class ExtenderBindingResult(_Wire):
    error: str = Field(default="", alias="Error")


class MetaPod(_Wire):
    uid: str = Field(alias="UID")


class MetaVictims(_Wire):
    pods: list[MetaPod] | None = Field(default=None, alias="Pods")
    num_pdb_violations: int = Field(default=0, alias="NumPDBViolations")


class Victims(_Wire):
    pods: list[KubeObject] | None = Field(default=None, alias="Pods")
    num_pdb_violations: int = Field(default=0, alias="NumPDBViolations")


class ExtenderPreemptionArgs(_Wire):
    """`NodeNameToMetaVictims` when nodeCacheCapable, else `NodeNameToVictims`."""

    pod: KubeObject | None = Field(default=None, alias="Pod")
    node_to_victims: dict[str, Victims | None] | None = Field(default=None,
                                                             alias="NodeNameToVictims")
    node_to_meta_victims: dict[str, MetaVictims | None] | None = Field(
        default=None, alias="NodeNameToMetaVictims")

    def meta_victims(self) -> dict[str, MetaVictims]:
        """Candidates as UIDs, whichever mode kube-scheduler used."""
        if self.node_to_meta_victims is not None:
            return {n: v or MetaVictims(Pods=[]) for n, v in self.node_to_meta_victims.items()}
        out: dict[str, MetaVictims] = {}
        for node, v in (self.node_to_victims or {}).items():
            pods = []
            for i, p in enumerate((v.pods if v else None) or []):
                uid = (p.get("metadata") or {}).get("uid") if isinstance(p, dict) else None
                if not isinstance(uid, str) or not uid:
                    raise WireError(f"NodeNameToVictims.{node}.Pods[{i}].metadata.uid",
                                    "victim pod has no uid")
                pods.append(MetaPod(UID=uid))
            out[node] = MetaVictims(Pods=pods,
                                    NumPDBViolations=v.num_pdb_violations if v else 0)
        return out


class ExtenderPreemptionResult(_Wire):
    node_to_meta_victims: dict[str, MetaVictims] = Field(default_factory=dict,
                                                         alias="NodeNameToMetaVictims")


def _go_path(model: type[BaseModel], loc: tuple) -> str:
    """Canonical dotted path of a pydantic error location (aliases, `[i]` for indexes)."""
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in ("function-after", "function-before") or str(p).startswith("function-"):
            continue
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts)


def parse(model: type[BaseModel], raw: Any) -> Any:
    """Validate a decoded JSON body as `model`; WireError (field, message) if it is not."""
    if not isinstance(raw, dict):
        raise WireError("", f"body must be a JSON object ({model.__name__}), "
                            f"got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(x for x in err.get("loc", ()) if x not in ("Victims", "MetaVictims"))
        raise WireError(_go_path(model, loc) or model.__name__,
                        err.get("msg", "invalid")) from None


class RawJSON(bytes):
    """An answer already encoded as JSON (the server sends it as is)."""


_SCORE_SUFFIX = [f"{s}}}".encode() for s in range(MAX_EXTENDER_PRIORITY + 1)]


def host_entries(name: str) -> list[bytes]:
    """The eleven possible `HostPriority` entries of one node, encoded: index = score."""
    prefix = b'{"Host":' + json.dumps(name).encode() + b',"Score":'
    return [prefix + suffix for suffix in _SCORE_SUFFIX]


def dump(obj: BaseModel | list[BaseModel]) -> Any:
    """Canonical (Go field name) JSON-able form of a result, every field present."""
    if isinstance(obj, list):
        return [o.model_dump(by_alias=True) for o in obj]
    return obj.model_dump(by_alias=True)


_FILTER_HEAD = b'{"Nodes":null,"NodeNames":'


def filter_json(result: dict[str, Any], names_json: bytes) -> bytes:
    """`orjson.dumps(result)` of a nodeCacheCapable `ExtenderFilterResult` whose
    `NodeNames` encodes as `names_json` (a list the `NameListCache` keeps): the list is
    not encoded again (10,000 names cost more than the rest of the answer)."""
    rest = orjson.dumps({**result, "NodeNames": None})
    if not rest.startswith(_FILTER_HEAD + b"null"):  # not the canonical shape: as is
        return orjson.dumps(result)
    return _FILTER_HEAD + names_json + rest[len(_FILTER_HEAD) + 4:]


#: what a known `NodeNames` array is replaced with before decoding (see `NameListCache`)
_ELIDED = "gsched:node-names-elided"
_ELIDED_JSON = b'"' + _ELIDED.encode() + b'"'
_NODE_NAMES_KEY = b'"NodeNames":'


class NameListCache:
    """Recent long `NodeNames` lists by their exact JSON encoding.

    kube-scheduler sends every node's name in every filter request (and prioritize asks
    about the list filter answered), the same list over and over; decoding 10,000 names,
    validating them and comparing them with the last list costs more than the policy's
    answer. `loads(body)` finds a remembered encoding right after the `"NodeNames":` key,
    decodes the body with a short placeholder in its place, and hands back the
    remembered list object itself. It is used only when that is provably the same as
    decoding the whole body: the placeholder must come back exactly once in the decoded
    body, as the value of its only top-level `NodeNames` key (any case); otherwise the
    body is decoded whole.
    """

    def __init__(self, size: int = 8, min_names: int = 64) -> None:
        self.size, self.min_names = size, min_names
        self._items: OrderedDict[bytes, list[str]] = OrderedDict()
        self._lock = threading.Lock()
        #: requests whose list was not decoded again
        self.hits = 0

    def remember(self, names: list[str] | None) -> bytes | None:
        """Keep a list (one seen in a request or sent in an answer) for later requests;
        its JSON encoding (`orjson.dumps(names)`), or None for a list too short to keep.
        Lists are never mutated once handed out, so a kept list's encoding stays true."""
        if names is None or len(names) < self.min_names:
            return None
        with self._lock:
            for encoded, known in self._items.items():
                if known is names:  # already here (e.g. a filter answer used again)
                    self._items.move_to_end(encoded)
                    return encoded
        encoded = orjson.dumps(names)
        with self._lock:
            self._items[encoded] = names
            self._items.move_to_end(encoded)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return encoded

    def loads(self, body: bytes) -> tuple[Any, list[str] | None]:
        """(decoded body, the remembered `NodeNames` list or None). With a list, the
        decoded body's `NodeNames` is None (the caller puts the list in after
        validation). Raises what `orjson.loads(body)` raises."""
        at = body.find(_NODE_NAMES_KEY)
        if at >= 0 and self._items:
            start = at + len(_NODE_NAMES_KEY)
            with self._lock:
                known = list(self._items.items())
            for encoded, names in reversed(known):  # the most recent first
                if body.startswith(encoded, start):
                    rest = body[:start] + _ELIDED_JSON + body[start + len(encoded):]
                    raw = _elided_once(rest)
                    if raw is not None:
                        with self._lock:
                            self.hits += 1
                            if encoded in self._items:
                                self._items.move_to_end(encoded)
                        return raw, names
                    break
        return orjson.loads(body), None


def _elided_once(rest: bytes) -> dict[str, Any] | None:
    """`rest` decoded with its placeholder as the only top-level `NodeNames` value (set
    to None), or None when the placeholder is anywhere else or more than once."""
    try:
        raw = orjson.loads(rest)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    keys = [k for k in raw if k.lower() == "nodenames"]
    if len(keys) != 1 or raw[keys[0]] != _ELIDED:
        return None
    # Only a \u escape can spell the placeholder other than literally; without one, one
    # literal occurrence is the one put there. With one, count what was decoded.
    if rest.count(_ELIDED.encode()) != 1 or (b"\\u" in rest and _count(raw, _ELIDED) != 1):
        return None
    raw[keys[0]] = None
    return raw


def _count(obj: Any, text: str) -> int:
    """How many keys and string values in a decoded JSON document equal `text`."""
    if isinstance(obj, str):
        return int(obj == text)
    if isinstance(obj, dict):
        return sum(int(k == text) + _count(v, text) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_count(v, text) for v in obj)
    return 0
