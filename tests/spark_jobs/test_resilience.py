"""A Python worker that crashes mid-featurize costs one retried task: no image lost, none twice.

The local run is started as a user starts it; while it featurizes the real sample, one real
PySpark Python worker (the one running the CNN) is SIGKILLed. Nothing in the job is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support import REPO_ROOT, SAMPLE, WEIGHTS

WORKER_TIMEOUT_S = 600
POLL_S = 0.1


def is_pyspark_daemon(process: psutil.Process) -> bool:
    return "pyspark.daemon" in process.cmdline()


def python_workers(job_pid: int) -> list[psutil.Process]:
    """PySpark Python workers of the job: the processes a pyspark.daemon forked."""
    try:
        tree = psutil.Process(job_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for process in tree:
        try:
            parent = process.parent()
            if parent is not None and is_pyspark_daemon(process) and is_pyspark_daemon(parent):
                workers.append(process)
        except psutil.Error:  # ended, or a zombie, between listing and inspection
            continue
    return workers


def has_inference_engine(worker: psutil.Process) -> bool:
    """The worker mapped ONNX Runtime: it runs the featurize UDF, not some other Python stage."""
    return "onnxruntime" in Path(f"/proc/{worker.pid}/maps").read_text()


def kill_busy_featurize_worker(job: subprocess.Popen) -> int:
    """SIGKILL the first worker seen computing with the model loaded, i.e. mid-task; its pid."""
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    cpu_seen: dict[int, float] = {}
    while job.poll() is None and time.monotonic() < deadline:
        for worker in python_workers(job.pid):
            try:
                cpu = sum(worker.cpu_times()[:2])
                # Busy = its CPU time grew since the last poll; a worker idling between tasks
                # would be a kill that no task notices.
                busy = cpu > cpu_seen.get(worker.pid, cpu)
                cpu_seen[worker.pid] = cpu
                if busy and has_inference_engine(worker):
                    worker.send_signal(signal.SIGKILL)  # psutil refuses a reused pid
                    return worker.pid
            except (psutil.Error, OSError):
                continue
        time.sleep(POLL_S)
    state = f"exited with {job.returncode}" if job.poll() is not None else f"still running after {WORKER_TIMEOUT_S} s"
    pytest.fail(
        f"no busy PySpark Python worker with ONNX Runtime loaded appeared (workers seen: {sorted(cpu_seen)};"
        f" job {state}): nothing was killed, so nothing here was tested"
    )


def stop(job: subprocess.Popen) -> None:
    """End the job and everything it started, if a failed assertion left it running."""
    if job.poll() is not None:
        return
    try:
        children = psutil.Process(job.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for process in children:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    job.kill()
    job.wait()


def task_attempts(event_log_dir: Path) -> list[dict]:
    """Every task attempt Spark recorded: stage, partition index, attempt number, end reason."""
    (log,) = event_log_dir.iterdir()
    attempts = []
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerTaskEnd":
            info = event["Task Info"]
            attempts.append(
                {
                    "stage": event["Stage ID"],
                    "index": info["Index"],
                    "attempt": info["Attempt"],
                    "reason": event["Task End Reason"]["Reason"],
                }
            )
    return attempts


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a worker's mapped libraries from /proc")
@pytest.mark.spark  # run_local in a child process
def test_crashed_python_worker_is_retried_without_duplicate_rows(tmp_path):
    images = sorted(p for p in SAMPLE.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out, events = tmp_path / "out", tmp_path / "events"
    events.mkdir()
    env = os.environ.copy()
    env["PYSPARK_PYTHON"] = sys.executable
    # Observation only: Spark's event log records every task attempt and how it ended.
    env["PYSPARK_SUBMIT_ARGS"] = (
        f"--conf spark.eventLog.enabled=true --conf spark.eventLog.dir={events.as_uri()} pyspark-shell"
    )
    command = [
        sys.executable, "-m", "local_spark.run_local", "--images", str(SAMPLE), "--output", str(out),
        "--weights", str(WEIGHTS), "--alpha", "0.35",
    ]  # default --master: the retrying local[2,4]
    with open(tmp_path / "stdout.log", "w") as stdout, open(tmp_path / "stderr.log", "w") as stderr:
        job = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr)
        try:
            killed = kill_busy_featurize_worker(job)
            job.wait(timeout=900)
        finally:
            stop(job)
    log = (tmp_path / "stderr.log").read_text()
    assert job.returncode == 0, f"killed worker {killed}; job failed:\n{log[-4000:]}"

    assert "Exception in task" in log, f"Spark logged no failed task after worker {killed} was killed"
    attempts = task_attempts(events)
    failed = [a for a in attempts if a["reason"] != "Success"]
    assert failed, f"worker {killed} was killed but no task attempt failed"
    for attempt in failed:
        retried = [
            a for a in attempts
            if (a["stage"], a["index"]) == (attempt["stage"], attempt["index"])
            and a["attempt"] > attempt["attempt"] and a["reason"] == "Success"
        ]
        assert retried, f"failed task {attempt} never succeeded on a later attempt"

    import pyarrow.parquet as pq

    features = pq.read_table(out / "features", columns=["path"]).column("path").to_pylist()
    quarantine = pq.read_table(out / "quarantine", columns=["path"]).column("path").to_pylist()
    assert len(features) + len(quarantine) == len(images)
    assert len(set(features)) == len(features), "duplicate path in features"
    assert len(set(features + quarantine)) == len(features) + len(quarantine), "path in features and quarantine"
    assert sorted(features + quarantine) == sorted(f"file:{p}" for p in images)
    report = json.loads((out / "report.json").read_text())
    assert (report["images_seen"], report["features_rows"]) == (len(images), len(features))
