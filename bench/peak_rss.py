"""Peak RSS of this process's descendants while a measurement runs (the bench's probes; bench.soak
extends it with a time series)."""

from __future__ import annotations

import threading


class PeakRss:
    """Samples the summed RSS of this process's descendants (the Spark JVM and its Python
    workers) every 0.2 s."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak = 0
        self.peak_by_kind = {"jvm": 0, "python": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            by_kind = {"jvm": 0, "python": 0}
            for child in self._me.children(recursive=True):
                try:
                    kind = "jvm" if "java" in child.name() else "python"
                    by_kind[kind] += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, sum(by_kind.values()))
            for kind, value in by_kind.items():
                self.peak_by_kind[kind] = max(self.peak_by_kind[kind], value)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

