"""The process running the local compute mode's steps killed with SIGKILL mid-featurize, then the
task's retry (issue 26 (b)): real spark-submit jobs against the moto server (S3A), nothing mocked but
AWS.

The process is a child (tests/support/local_steps_child.py) running local_steps.run_steps_locally as
the Airflow task does; only it is killed, as an OOM kill or a lost worker would: its spark-submit JVM
must die with it (PR_SET_PDEATHSIG), or it would go on writing the attempt while the retry writes it
again. Then: nobody reads the torn attempt (no pointer names it; coverage shows its images in a failed
attempt), the retry (same attempt folder) commits every image exactly once, a second commit changes
nothing, and the date has one attempt folder (none orphaned).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from fruits_emr import commits, coverage, emr_request, local_steps, pca_plan, selection, staging, validation
from fruits_emr.settings import RunConfig
from fruits_emr.task_io import to_xcom
from tests.support import ACCOUNT, REPO_ROOT
from tests.support.coverage import committed_rows, raw_images
from tests.support.moto import JAVA_TRUST_ANY_CERT

pytestmark = pytest.mark.spark

BUCKET = "fruits-killed"
SAMPLE = REPO_ROOT / "data" / "sample"
WEIGHTS = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
DAY = datetime(2024, 6, 1, tzinfo=UTC)
MASTER, DRIVER_MEMORY = "local[2,4]", "1g"
KILL_AFTER_SECONDS = 8  # of featurize's JVM, at the latest: it is still featurizing (it takes longer)


def keys(s3, prefix: str) -> list[str]:
    return [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for obj in page.get("Contents", [])]


def jvm_of(child: subprocess.Popen):
    """The featurize step's driver JVM under the child, once it started (None while it has not)."""
    import psutil

    for process in psutil.Process(child.pid).children(recursive=True):
        try:
            command = process.cmdline()  # SparkSubmit's, not the launcher's that builds it and exits
            if "org.apache.spark.deploy.SparkSubmit" in command and any("featurize" in part for part in command):
                return process
        except psutil.NoSuchProcess:
            continue
    return None


def test_steps_killed_mid_featurize_then_the_retry_commits_each_image_once(moto, s3, tmp_path, monkeypatch):
    import psutil
    from moto.s3.models import s3_backends

    monkeypatch.setenv("FRUITS_S3_ENDPOINT", moto)  # Spark talks to moto itself, through S3A
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", JAVA_TRUST_ANY_CERT)  # moto's self-signed certificate
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(SAMPLE.glob("*/*.jpg"))[::3]:
        key = f"raw/{path.parent.name}/{path.name}"
        s3.upload_file(str(path), BUCKET, key)
        s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[key].last_modified = (DAY + timedelta(hours=3)).replace(
            tzinfo=None)
    config = RunConfig(bucket=BUCKET, weights=WEIGHTS, alpha=0.35, image_size=96, variance=0.9)
    staged, _ = staging.stage_artifacts(s3, config, REPO_ROOT, None, None)
    run = selection.find_new_images(s3, config, DAY, DAY + timedelta(days=1), DAY + timedelta(days=1, minutes=5),
                                    run_id="scheduled__2024-06-01")
    plan = pca_plan.plan_run_pca(s3, config, run)
    steps = emr_request.build_request(config, staged, run, plan, None, None, REPO_ROOT).steps
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"config": to_xcom(config), "steps": steps, "master": MASTER,
                                   "driver_memory": DRIVER_MEMORY, "workdir": str(tmp_path)}))
    features = f"{run.paths.attempt_key}features/"

    # the task process, killed while featurize runs: at its first output object, or after a few seconds
    child = subprocess.Popen([sys.executable, "-m", "tests.support.local_steps_child", str(request)], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, jvm, started = time.monotonic() + 300, None, None
        while time.monotonic() < deadline and child.poll() is None:
            jvm = jvm or jvm_of(child)
            started = started or (time.monotonic() if jvm else None)
            if started and (keys(s3, features) or time.monotonic() - started > KILL_AFTER_SECONDS):
                break
            time.sleep(0.1)
        assert jvm is not None and child.poll() is None, child.stdout.read().decode()[-3000:] if child.poll() else ""
        descendants = psutil.Process(child.pid).children(recursive=True)
        # the JVM stopped first, so it cannot die of a write to its closed log pipe: only the death
        # signal the task process armed (PR_SET_PDEATHSIG: SIGKILL, which a stopped process gets too) ends it
        jvm.suspend()
        child.kill()  # SIGKILL to the task process alone, not its process group
        child.wait(30)
        assert f"{run.paths.attempt_key}featurize.json" not in keys(s3, run.paths.attempt_key), "featurize had ended"
        _, alive = psutil.wait_procs(descendants, timeout=30)
        assert alive == [], f"spark-submit outlived the task process: {alive}"
    finally:  # whatever the test found, nothing it started outlives it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(30)

    # nobody reads the torn attempt: no pointer names it, its images are in a failed attempt
    assert commits.read_pca_pointer(s3, config) is None and commits.committed_output(s3, config, run.paths.run_date) is None
    counts = coverage.measure(s3, config).counts
    assert (counts["in_failed_attempt"], counts["committed"], counts["pending"]) == (run.images, 0, 0)

    # the retry of run_steps_locally: same attempt folder, the steps from the start
    local_steps.run_steps_locally(config, steps, MASTER, DRIVER_MEMORY, str(tmp_path))
    summary = validation.validate_outputs(s3, config, run, plan, None)
    record = commits.commit_outputs(s3, config, run, plan, summary, "scheduled__2024-06-01")
    pointer_etag = s3.head_object(Bucket=BUCKET, Key="features/_pca_models/_CURRENT.json")["ETag"]
    # a retry of commit_outputs after it succeeded (its success was lost): nothing is committed twice
    again = commits.commit_outputs(s3, config, run, plan, summary, "scheduled__2024-06-01")
    assert again.attempt == record.attempt == run.paths.attempt
    assert s3.head_object(Bucket=BUCKET, Key="features/_pca_models/_CURRENT.json")["ETag"] == pointer_etag

    assert committed_rows(s3, BUCKET) == raw_images(s3, BUCKET)  # every image once, as a reader finds them
    assert summary.features_rows + summary.quarantined == run.images
    counts = coverage.measure(s3, config).counts
    assert (counts["committed"] + counts["quarantined"], counts["in_failed_attempt"], counts["pending"]) == (
        run.images, 0, 0)
    attempts = {key.split("/_attempts/")[1].split("/")[0] for key in keys(s3, f"features/run_date={run.paths.run_date}/")
                if "/_attempts/" in key}
    assert attempts == {run.paths.attempt}  # one attempt folder: none orphaned
