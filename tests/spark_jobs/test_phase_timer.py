"""PhaseTimer: named phase durations for a job's report, on a clock the test controls."""

from __future__ import annotations

import itertools

import pytest

from spark_jobs.featurization import phase_timer
from spark_jobs.featurization.phase_timer import PhaseTimer


@pytest.fixture
def clock(monkeypatch):
    """time.monotonic for phase_timer: 0, 1.5, 3, 4.5, ... one tick per call."""
    ticks = itertools.count(0.0, 1.5)
    monkeypatch.setattr(phase_timer.time, "monotonic", lambda: next(ticks))


def test_phases_are_named_timed_and_a_repeated_name_adds_up(clock):
    timer = PhaseTimer()  # created at 0
    with timer.phase("list_inputs"):  # 1.5 -> 3
        pass
    with timer.phase("write"):  # 4.5 -> 6
        pass
    with timer.phase("write"):  # 7.5 -> 9
        pass
    assert timer.seconds == {"list_inputs": 1.5, "write": 3.0}
    assert timer.total == 10.5


def test_a_failing_phase_is_still_recorded(clock):
    timer = PhaseTimer()
    with pytest.raises(RuntimeError):
        with timer.phase("verify_counts"):
            raise RuntimeError("counts do not reconcile")
    assert timer.seconds == {"verify_counts": 1.5}
