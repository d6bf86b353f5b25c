"""Shared fixtures: where the public traces are."""

from __future__ import annotations

from pathlib import Path

import pytest

from gsched.traces.paths import shared_traces_dir


@pytest.fixture(scope="session")
def traces_dir() -> Path:
    d = shared_traces_dir()
    if not d.is_dir():
        pytest.fail(f"shared traces not found at {d}; set GSCHED_TRACES")
    return d
