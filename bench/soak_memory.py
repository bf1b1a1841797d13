"""The soak's memory figures: the RSS of a run's process tree over time, split into its driver, the
Spark JVM and the Python workers, and the machine's load average while it ran."""

from __future__ import annotations

import os
import time

from bench.peak_rss import PeakRss

RSS_INTERVAL_SECONDS = 0.25
SERIES_BINS = 40  # soak.json keeps the RSS time series as the max over this many equal bins
KINDS = ("driver", "jvm", "python_workers")


class RssSeries(PeakRss):
    """PeakRss that keeps the time series, split into the run's driver process, the Spark JVM
    and its Python workers, and the machine's load average while it ran."""

    def __init__(self) -> None:
        super().__init__()
        self.peak_by_kind = dict.fromkeys(KINDS, 0)
        self.samples: list[tuple[float, int, int, int]] = []  # (seconds, *KINDS)
        self.load: list[float] = []

    def _run(self) -> None:
        import psutil

        started = time.monotonic()
        while not self._stop.is_set():
            by_kind = dict.fromkeys(KINDS, 0)
            for child in self._me.children(recursive=True):
                try:
                    if "java" in child.name():
                        kind = "jvm"
                    elif child.ppid() == self._me.pid:
                        kind = "driver"
                    else:
                        kind = "python_workers"
                    by_kind[kind] += child.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.monotonic() - started, *by_kind.values()))
            self.peak = max(self.peak, sum(by_kind.values()))
            for kind, value in by_kind.items():
                self.peak_by_kind[kind] = max(self.peak_by_kind[kind], value)
            self.load.append(os.getloadavg()[0])
            self._stop.wait(RSS_INTERVAL_SECONDS)


def binned_peaks(samples: list[tuple[float, int, int, int]], seconds: float, bins: int) -> list[int]:
    """Max total RSS in each of `bins` equal slices of the run (0 where a slice has no sample)."""
    peaks = [0] * bins
    for at, *by_kind in samples:
        index = min(bins - 1, int(at / seconds * bins)) if seconds > 0 else 0
        peaks[index] = max(peaks[index], sum(by_kind))
    return peaks

