"""Packing: the CP-SAT planner that decides which workload goes on which GPU for a day.

Owns the problem model (`problem`), the greedy start (`greedy`), the search
(`ruin`: ruin-and-recreate; `lns`: CP-SAT large-neighbourhood search; `cpsat`: the
model itself), the lower bounds (`bounds`), the independent plan check (`plan`), the
pipeline that strings them together under a time limit (`pack`), CP-SAT time planning
of training into valleys (`tidal_plan`) and profile learning from usage history
(`profiles`).

May import: `gsched.models`, `gsched.errors`. Never `scheduler.policies`: the two sit
side by side, and a plan reaches a policy as data.
"""
