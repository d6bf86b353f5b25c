"""What every sample source (NVML, replay) shares: opened and closed around use."""

from __future__ import annotations

from typing import TypeVar

_S = TypeVar("_S", bound="ClosingSource")


class ClosingSource:
    """`with source:` opens it and always closes it; subclasses define open/close."""

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
