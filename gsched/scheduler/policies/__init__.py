"""Policies: the per-decision core that every driver calls.

Owns the cluster state (`state.ClusterState`, a numpy snapshot of free share, memory, CPU
and per-slot load), the `Policy` interface (`filter` → `score` → `choose_gpus`, plus
`on_slot`), every placement policy, the vectorised online score of one pod against every
GPU, the choice of preemption victims and the registry of policies by name.

May import: `gsched.models`, `gsched.errors`. Nothing else in gsched: the simulator and
the extender drive these objects, and a plan from `scheduler.packing` reaches a policy
only as data inside the state its driver hands it.
"""
