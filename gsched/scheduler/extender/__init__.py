"""Extender: the Kubernetes-facing service behind `gsched serve`.

Owns the HTTP server (`server`), the four kube-scheduler verbs (`verbs`: filter,
prioritize, bind, preempt), their wire types (`wire`), API-server list+watch (`kube`),
pod translation (`pods`), Lease leader election (`leader`), the eviction planner
(`planner`), agent-report ingestion (`ingest`), usage history and the assignment store
(`history`, `store`, `sqlite`) and the scheduler's Prometheus metrics (`metrics`).

May import: `scheduler.policies`, `scheduler.packing`, `gsched.agents` (report and pod
models), `gsched.traces`, `gsched.models`, `gsched.errors`. Never `gsched.simulator`.
"""
