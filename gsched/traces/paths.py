"""Where the shared public traces live, so tests, benchmarks and docs agree."""

from __future__ import annotations

import os
from pathlib import Path


def shared_traces_dir() -> Path:
    """`$GSCHED_TRACES`, else `../shared/traces` beside the checkout (or the cwd)."""
    env = os.environ.get("GSCHED_TRACES")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for base in (repo, Path.cwd()):
        cand = base.parent / "shared" / "traces"
        if cand.is_dir():
            return cand
    return repo.parent / "shared" / "traces"
