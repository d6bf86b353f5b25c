"""The central scheduler, in three parts, each a subpackage with one job.

- `policies`: the per-decision core (cluster state, the `Policy` interface, every policy).
- `packing`: the CP-SAT planner (problem, greedy start, search, bounds, plan check).
- `extender`: the Kubernetes-facing service (verbs, HTTP, API-server sync, store).

`policies` and `packing` sit side by side and never import each other; `extender` sits
above both. The contracts are in `pyproject.toml` ([tool.importlinter]).
"""
