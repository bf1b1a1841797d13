"""Wall time of a job's named phases, for its report (featurize.json's phase_seconds)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseTimer:
    """`with timer.phase("write"):` records the block's seconds under its name; `total` since creation."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - started, 3)

    @property
    def total(self) -> float:
        return round(time.monotonic() - self._started, 3)
