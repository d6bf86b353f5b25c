"""gsched's small error hierarchy.

Policy code never raises for "doesn't fit" (that is data, see `scheduler.state.NoFit`).
These exceptions are for real failures: bad user input and unavailable infrastructure.
The CLI turns every `GschedError` into a one-line message and a non-zero exit, never a
traceback.
"""

from __future__ import annotations


class GschedError(Exception):
    """Base class for every error gsched reports to a user."""


class InputError(GschedError):
    """Bad user input: names the file, line and field so the user can fix it."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file:
            where = f"{file}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if field:
            where += f"field '{field}': "
        super().__init__(where + message)


class UnavailableError(GschedError):
    """Something gsched needs is not here (NVML, a GPU, an API server)."""
