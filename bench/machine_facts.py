"""What results.json and soak.json say about the machine: CPU, cores, memory, library versions,
local Spark's JVM options."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path


def versions() -> dict:
    names = ("pyspark", "onnxruntime", "tensorflow-cpu", "keras", "numpy", "pandas", "pyarrow", "pillow")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    found["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return found


def local_jvm_options_in_use() -> str:
    """The JVM options every local Spark of the bench runs with, its class archive built first."""
    from local_spark.class_archive import ensure_archive
    from local_spark.jvm_options import local_jvm_options

    ensure_archive()
    return local_jvm_options()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()



def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
