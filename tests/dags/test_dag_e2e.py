"""The whole DAG with dag.test() against moto (S3 + EMR).

moto creates clusters and steps but runs nothing; StepDriver plays EMR: when a step is
pending it runs the step's job locally (the step's own arguments, S3 paths mapped to local
files, outputs uploaded back to the moto bucket) and sets the step COMPLETED or FAILED.

The local compute mode needs no stand-in: its run_steps_locally task runs the steps itself
with spark-submit, against moto's S3.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spark_jobs.contract.run_files import format_manifest, parse_manifest
from spark_jobs.contract.s3_uri import split_s3_uri
from tests.support import ACCOUNT, REGION, REPO_ROOT
from tests.support.moto import JAVA_TRUST_ANY_CERT

BUCKET = "fruits-e2e"
SAMPLE = REPO_ROOT / "data" / "sample"
WEIGHTS = "models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
CONF = {"bucket": BUCKET, "weights": WEIGHTS, "alpha": 0.35, "image_size": 96, "variance": 0.9}
JOB_TIMEOUT = 900

needs_jobs = pytest.mark.skipif(
    not (REPO_ROOT / "spark_jobs" / "pca.py").exists() or not (REPO_ROOT / WEIGHTS).exists(),
    reason="needs spark_jobs/ and the bundled weights",
)


class StepDriver(threading.Thread):
    """Plays EMR for moto's clusters: runs each pending step in order, or fails the chosen one."""

    def __init__(self, s3, workdir: Path, fail: str | None = None):
        super().__init__(daemon=True)
        self.s3, self.workdir, self.fail = s3, workdir, fail
        self.executed: list[tuple[str, list[str]]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=JOB_TIMEOUT)

    def run(self) -> None:
        from moto.emr.models import emr_backends

        while not self._halt.is_set():
            for cluster in list(emr_backends[ACCOUNT][REGION].clusters.values()):
                if cluster.state in ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"):
                    continue
                step = next((s for s in cluster.steps if s.state in ("PENDING", "RUNNING")), None)
                if step is not None:
                    try:
                        self.play(cluster, step)
                    except Exception as exc:  # a driver bug must fail the test, not hang it
                        self.errors.append(repr(exc))
                        step.state = "FAILED"
            time.sleep(0.2)

    def play(self, cluster, step) -> None:
        step.state = "RUNNING"
        step.start()
        job = step.name.split()[0]
        args = list(step.args)
        script_at = next(i for i, arg in enumerate(args) if arg.endswith(f"/{job}.py"))
        self.executed.append((job, args))
        if job == self.fail:
            ok, reason = False, "Step failed by the test: simulated executor loss"
        else:
            ok, reason = self.run_locally(job, args[script_at + 1:])
        step.end_date_time = datetime.now(UTC)
        step.state = "COMPLETED" if ok else "FAILED"
        if not ok:
            step.last_state_change_reason = reason
            for later in cluster.steps:  # ActionOnFailure CANCEL_AND_WAIT
                if later.state == "PENDING":
                    later.state = "CANCELLED"
        cluster.state = "WAITING"

    def local(self, uri: str) -> Path:
        return self.workdir / "s3" / uri.removeprefix("s3://")

    def download(self, uri: str) -> Path:
        target = self.local(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        bucket, key = split_s3_uri(uri)
        self.s3.download_file(bucket, key, str(target))
        # EMRFS reports the object's LastModified as the file's modification time
        stamp = self.s3.head_object(Bucket=bucket, Key=key)["LastModified"].timestamp()
        os.utime(target, (stamp, stamp))
        return target

    def run_locally(self, job: str, args: list[str]) -> tuple[bool, str]:
        args = list(args)
        output_uri = args[args.index("--output") + 1]
        output = self.local(output_uri)
        args[args.index("--output") + 1] = str(output)
        if job == "featurize":
            shutil.rmtree(output, ignore_errors=True)  # a fresh cluster has no local state
            manifest_at = args.index("--manifest") + 1
            images = parse_manifest(self.download(args[manifest_at]).read_text())
            local_manifest = self.workdir / "manifest.txt"
            local_manifest.write_text(format_manifest(str(self.download(uri)) for uri in images))
            args[manifest_at] = str(local_manifest)
            for at, flag in enumerate(list(args)):
                if flag == "--allowed-prefix":  # the raw prefix, where the images were downloaded to
                    args[at + 1] = str(self.local(args[at + 1]))
            for flag in ("--weights", "--model-artifact"):
                if flag in args and args[args.index(flag) + 1].startswith("s3://"):
                    at = args.index(flag) + 1
                    if flag == "--model-artifact":
                        self.download(args[at] + ".json")  # the exported model's sidecar
                    args[at] = str(self.download(args[at]))
        model_outputs = {}
        for at, flag in enumerate(list(args)):
            if flag in ("--model", "--corpus") and args[at + 1].startswith("s3://"):
                args[at + 1] = str(self.download_folder(args[at + 1]))
            elif flag == "--model-output":
                model_outputs[args[at + 1]] = self.local(args[at + 1])
                args[at + 1] = str(model_outputs[args[at + 1]])
        done = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("emr_step_runner.py")), job, *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=JOB_TIMEOUT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        if done.returncode != 0:
            return False, f"{job} exited {done.returncode}: {done.stderr[-2000:]}"
        for uri, folder in {output_uri: output, **model_outputs}.items():
            bucket, key = split_s3_uri(uri)
            for path in folder.rglob("*"):
                if path.is_file() and not path.name.endswith(".crc"):
                    self.s3.upload_file(str(path), bucket, f"{key}/{path.relative_to(folder).as_posix()}")
        return True, ""

    def download_folder(self, uri: str) -> Path:
        """Every object under the folder uri (a saved PCA model, a committed features dataset)."""
        bucket, key = split_s3_uri(uri)
        for obj in self.s3.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/").get("Contents", []):
            self.download(f"s3://{bucket}/{obj['Key']}")
        return self.local(uri)


@pytest.fixture
def raw_images(s3, tmp_path):
    """The repo's 40 sample images plus one corrupt file, uploaded now under raw/<label>/, and a
    README.txt: a file but no photo (the manifest lists it, featurize ignores and lists it)."""
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(SAMPLE.glob("*/*.jpg")):
        s3.upload_file(str(path), BUCKET, f"raw/{path.parent.name}/{path.name}")
    s3.put_object(Bucket=BUCKET, Key="raw/apple/corrupt_100.jpg", Body=b"not a jpeg")
    s3.put_object(Bucket=BUCKET, Key="raw/README.txt", Body=b"not an image")
    stamps = [obj["LastModified"] for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    # the logical date whose daily data interval holds the upload times
    return datetime.combine(max(stamps).date() + timedelta(days=1), datetime.min.time(), UTC), 41


@pytest.fixture(autouse=True)
def node_wheelhouse(tmp_path, monkeypatch):
    """The stage task stages the node wheelhouse from the local cache (a real, tiny wheel), not PyPI."""
    from tests.support.wheels import prebuilt_cache

    monkeypatch.setenv("FRUITS_WHEELHOUSE_CACHE", str(prebuilt_cache(tmp_path / "wheelhouse-cache", REPO_ROOT)))


@pytest.fixture
def driver(s3, tmp_path):
    drivers = []

    def start(fail: str | None = None) -> StepDriver:
        d = StepDriver(s3, tmp_path / "emr", fail)
        d.start()
        drivers.append(d)
        return d

    yield start
    for d in drivers:
        d.stop()


def run_dag(conf: dict, logical_date: datetime):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO_ROOT / "dags")).dags["fruits_features"]
    run = dag.test(logical_date=logical_date, run_conf=conf)
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


@pytest.fixture
def task_log(caplog, capfd):
    """What the run's tasks logged so far: dag.test() runs them in this process; their own lines go
    through logging (caplog), Airflow's and the operators' to the console."""
    caplog.set_level(logging.INFO)

    def logged() -> str:
        captured = capfd.readouterr()
        return caplog.text + captured.out + captured.err

    return logged


def clusters(emr_client) -> list[dict]:
    return [emr_client.describe_cluster(ClusterId=c["Id"])["Cluster"] for c in emr_client.list_clusters()["Clusters"]]


def committed(s3, run_date: str) -> dict | None:
    """The run date's commit pointer, as a reader sees it (None: nothing committed)."""
    try:
        body = s3.get_object(Bucket=BUCKET, Key=f"features/run_date={run_date}/_COMMITTED.json")["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def attempts(s3, run_date: str) -> list[str]:
    prefix = f"features/run_date={run_date}/_attempts/"
    return sorted({k[len(prefix):].split("/")[0] for k in bucket_keys(s3, prefix)})


def partition_snapshot(s3, tmp_path: Path, run_date: str) -> dict:
    """What readers see of a run date: the committed attempt's entries, report, features sorted by image."""
    import pyarrow.parquet as pq

    pointer = committed(s3, run_date)
    assert pointer is not None, f"nothing committed for {run_date}"
    prefix = f"features/run_date={run_date}/_attempts/{pointer['attempt']}/"
    assert pointer["output"] == f"s3://{BUCKET}/{prefix}".rstrip("/")
    keys = bucket_keys(s3, prefix)
    target = tmp_path / f"snapshot-{len(list(tmp_path.glob('snapshot-*')))}"
    for key in keys:
        if key.startswith(prefix + "features/") and key.endswith(".parquet"):
            (target / key).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(BUCKET, key, str(target / key))
    features = pq.read_table(target / prefix / "features").to_pylist()
    path_column = next(c for c in ("path", "uri", "image", "origin") if c in features[0])
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "report.json")["Body"].read())
    return {
        "entries": sorted({k[len(prefix):].split("/")[0] for k in keys}),
        "report": {k: report[k] for k in ("files_seen", "images_seen", "features_rows", "quarantined", "ignored", "k",
                                          "feature_dim", "ignored_files")},
        "features": sorted((row[path_column], json.dumps(row, sort_keys=True, default=str)) for row in features),
        "manifest": s3.get_object(Bucket=BUCKET, Key=prefix + "manifest.txt")["Body"].read(),
        "counts": {k: pointer[k] for k in ("files", "images", "features_rows", "quarantined", "ignored", "k")},
    }


@needs_jobs
def test_success_failed_rerun_then_clean_rerun(airflow_db, s3, emr_client, raw_images, driver, tmp_path, task_log):
    """(1) a run commits its outputs; (2) a re-run whose pca step fails after featurize wrote part of
    its outputs changes nothing readers see; (3) the next re-run completes cleanly with the same
    outputs, no duplicates; the failed attempt stays, read by nobody (a commit never deletes another
    run's attempt: it may still be writing)."""
    logical_date, n_images = raw_images
    run_date = (logical_date - timedelta(days=1)).date().isoformat()
    emr_driver = driver()

    run, states = run_dag(CONF, logical_date)

    assert emr_driver.errors == []
    assert states == {task: "success" for task in states}, states
    assert run.state == "success"
    [cluster] = clusters(emr_client)
    assert cluster["Status"]["State"] == "TERMINATED"
    tags = {t["Key"]: t["Value"] for t in cluster["Tags"]}
    assert (tags["project"], tags["dag_id"], tags["run_id"]) == ("fruits", "fruits_features", run.run_id)
    assert [job for job, _ in emr_driver.executed] == ["featurize", "pca"]
    # the nodes install from the wheelhouse the stage task put in S3
    [wheelhouse_marker] = [k for k in bucket_keys(s3, "artifacts/wheelhouse/") if k.endswith("/_STAGED")]
    staged = run.get_task_instance("stage_artifacts").xcom_pull(task_ids="stage_artifacts")
    assert staged["wheelhouse"] == f"s3://{BUCKET}/{wheelhouse_marker.removesuffix('_STAGED')}"
    first = partition_snapshot(s3, tmp_path, run_date)
    assert first["report"]["images_seen"] == n_images and first["report"]["files_seen"] == n_images + 1
    assert (first["report"]["features_rows"], first["report"]["quarantined"], first["report"]["ignored"]) == (40, 1, 1)
    assert [Path(p).name for p in first["report"]["ignored_files"]] == ["README.txt"]
    assert first["counts"] == {"files": 42, "images": 41, "features_rows": 40, "quarantined": 1, "ignored": 1,
                               "k": first["report"]["k"]}
    assert {"features", "quarantine", "pca", "report.json", "manifest.txt"} <= set(first["entries"])
    assert "pca_model" not in first["entries"]  # the model is the attempt's own under features/_pca_models/
    assert len(first["features"]) == 40
    summary = run.get_task_instance("validate_outputs").xcom_pull(task_ids="validate_outputs")
    assert (summary["files"], summary["images"], summary["features_rows"], summary["quarantined"], summary["ignored"]) == (
        42, 41, 40, 1, 1)
    assert summary["k"] == first["report"]["k"] and summary["estimated_cost_usd"] >= 0
    assert "42 files -> 40 featurized, 1 quarantined" in task_log() and "1 ignored (not photos: {'.txt': 1}" in task_log()
    first_attempt = committed(s3, run_date)["attempt"]

    # (2) pca fails after featurize wrote its outputs into the new attempt's folder
    emr_driver.stop()
    failing = driver(fail="pca")
    failed_run, states = run_dag(CONF, logical_date)
    assert failed_run.state == "failed"
    assert (states["watch_pca"], states["terminate_cluster"]) == ("failed", "success")
    assert (states["validate_outputs"], states["commit_outputs"]) == ("upstream_failed", "upstream_failed")
    assert [job for job, _ in failing.executed] == ["featurize", "pca"]
    failed_attempt = next(a for a in attempts(s3, run_date) if a != first_attempt)
    partial = bucket_keys(s3, f"features/run_date={run_date}/_attempts/{failed_attempt}/")
    assert any("/features/" in k for k in partial) and not any(k.endswith("report.json") for k in partial)
    assert committed(s3, run_date)["attempt"] == first_attempt  # readers still see the first run, whole
    assert partition_snapshot(s3, tmp_path, run_date) == first

    # (3) the re-run after the failure: a new attempt, committed; the failed one named by no pointer
    failing.stop()
    emr_driver = driver()
    rerun, states = run_dag(CONF, logical_date)
    assert rerun.state == "success", states
    assert emr_driver.errors == []
    third = partition_snapshot(s3, tmp_path, run_date)
    assert third == first  # same features, same counts, no duplicates
    latest = committed(s3, run_date)["attempt"]
    assert latest not in (first_attempt, failed_attempt)
    # the previous commit kept for readers mid-way; the failed run's attempt is another run's: kept, unread
    assert attempts(s3, run_date) == sorted([first_attempt, failed_attempt, latest])
    assert failed_attempt not in json.dumps(pca_pointer(s3))
    assert [c["Status"]["State"] for c in clusters(emr_client)] == ["TERMINATED"] * 3


def test_failed_step_fails_run_and_still_terminates(airflow_db, s3, emr_client, raw_images, driver, task_log):
    logical_date, _ = raw_images
    emr_driver = driver(fail="featurize")

    run, states = run_dag(CONF, logical_date)

    assert run.state == "failed"
    assert states["watch_featurize"] == "failed"
    assert states["watch_pca"] == "upstream_failed"
    assert states["terminate_cluster"] == "success"
    assert states["validate_outputs"] == "upstream_failed"
    [cluster] = clusters(emr_client)
    assert cluster["Status"]["State"] == "TERMINATED"
    step_id = emr_client.list_steps(ClusterId=cluster["Id"], StepStates=["FAILED"])["Steps"][0]["Id"]
    log = task_log()
    assert "ended FAILED: Step failed by the test: simulated executor loss" in log
    assert f"s3://{BUCKET}/emr-logs/{cluster['Id']}/steps/{step_id}/stderr.gz" in log
    assert f"s3://{BUCKET}/emr-logs/{cluster['Id']}/steps/{step_id}/stdout.gz" in log
    assert [job for job, _ in emr_driver.executed] == ["featurize"]
    assert committed(s3, (logical_date - timedelta(days=1)).date().isoformat()) is None  # nothing visible


def test_no_new_images_no_cluster(airflow_db, s3, emr_client, raw_images, task_log):
    run, states = run_dag(CONF, datetime(2024, 3, 2, tzinfo=UTC))  # nothing landed on 2024-03-01

    assert run.state == "success"
    assert states["find_new_images"] == "success"
    assert {states[t] for t in ("emr_request", "create_cluster", "add_steps", "watch_featurize", "watch_pca",
                                "terminate_cluster", "validate_outputs")} == {"skipped"}
    assert emr_client.list_clusters()["Clusters"] == []
    assert ("every image not processed yet stamped before 2024-03-02 00:00:00+00:00 (interval [2024-03-01"
            " 00:00:00+00:00, 2024-03-02 00:00:00+00:00)): no cluster") in task_log()
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="features/").get("KeyCount", 0) == 0


def test_missing_bucket_fails_before_any_cluster(airflow_db, s3, emr_client, task_log):
    run, states = run_dag({**CONF, "bucket": "no-such-bucket"}, datetime(2024, 6, 2, tzinfo=UTC))

    assert run.state == "failed"
    assert states["resolve_config"] == "failed"
    assert states["create_cluster"] == "upstream_failed"
    assert emr_client.list_clusters()["Clusters"] == []
    log = task_log()
    assert "Param 'bucket': s3://no-such-bucket does not exist with the Airflow connection aws_default" in log


def test_param_outside_schema_is_rejected_at_trigger(airflow_db, moto):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="core_instance_count"):
        run_dag({**CONF, "core_instance_count": 0}, datetime(2024, 6, 2, tzinfo=UTC))


def test_sensor_timeout_fails_run_and_still_terminates(airflow_db, s3, emr_client, raw_images, monkeypatch):
    """No one runs the steps (moto leaves them RUNNING): the featurize sensor times out."""
    monkeypatch.setenv("FRUITS_STEP_TIMEOUT_HOURS", str(4 / 3600))  # parse-time setting: 4 s
    logical_date, _ = raw_images

    run, states = run_dag(CONF, logical_date)

    assert run.state == "failed"
    assert (states["watch_featurize"], states["watch_pca"]) == ("failed", "upstream_failed")
    assert states["terminate_cluster"] == "success"
    [cluster] = clusters(emr_client)
    assert cluster["Status"]["State"] == "TERMINATED"
    assert {s["Status"]["State"] for s in emr_client.list_steps(ClusterId=cluster["Id"])["Steps"]} == {
        "RUNNING", "PENDING"}


@pytest.mark.airflow
def test_create_cluster_failing_after_creating_still_terminates_its_clusters(
        airflow_db, moto, s3, emr_client, raw_images, monkeypatch, task_log):
    """RunJobFlow makes the cluster, then create_cluster fails, on each of its tries (DescribeCluster
    denied to it, through the fault proxy). The teardown runs all the same and its sweep by the run's
    tags ends every cluster the tries made: none left RUNNING or WAITING, nothing committed."""
    from tests.support.fault_proxy import ACCESS_DENIED, Rule, running_fault_proxy

    logical_date, _ = raw_images
    denied = Rule("elasticmapreduce", (ACCESS_DENIED,), operation="DescribeCluster", caller="Caller/EmrCreateRunCluster")
    with running_fault_proxy(moto, [denied]) as proxy:
        connection = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
        connection["extra"] = {**connection["extra"], "endpoint_url": proxy.endpoint}
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
        run, states = run_dag(CONF, logical_date)

    assert run.state == "failed"
    assert (states["create_cluster"], states["terminate_cluster"]) == ("failed", "success")
    assert {states[t] for t in ("add_steps", "watch_featurize", "watch_pca", "validate_outputs")} == {"upstream_failed"}
    assert proxy.count(ACCESS_DENIED) >= 3  # each of the three tries failed after its RunJobFlow
    made = clusters(emr_client)
    assert len(made) == 3 and {c["Status"]["State"] for c in made} == {"TERMINATED"}
    assert "or by a create_cluster that failed" in task_log()
    assert committed(s3, (logical_date - timedelta(days=1)).date().isoformat()) is None


# --- local compute mode (FRUITS_COMPUTE_MODE=local) -------------------------------------------

@pytest.fixture
def few_raw_images(s3):
    """Every other sample image (20, all four labels; two under odd names) plus one corrupt file, uploaded
    now, and a Live Photo's video beside a photo (no photo: ignored and listed)."""
    s3.create_bucket(Bucket=BUCKET)
    odd_names = iter(["pêche mûre ü #1 100%+.jpg", "it's [1] & c=d?.JPG"])
    for index, path in enumerate(sorted(SAMPLE.glob("*/*.jpg"))[::2]):
        name = next(odd_names, path.name) if index % 7 == 0 else path.name
        s3.upload_file(str(path), BUCKET, f"raw/{path.parent.name}/{name}")
    s3.put_object(Bucket=BUCKET, Key="raw/lemon/corrupt_7.jpg", Body=b"\xff\xd8\xff\xe0 truncated jpeg")
    s3.put_object(Bucket=BUCKET, Key="raw/lemon/IMG_0007.MOV", Body=b"\x00\x00\x00\x14ftypqt  " + bytes(64))
    stamps = [obj["LastModified"] for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    return datetime.combine(max(stamps).date() + timedelta(days=1), datetime.min.time(), UTC), 21


def bucket_keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]


@needs_jobs
def test_local_compute_mode_end_to_end(airflow_db, moto, s3, emr_client, few_raw_images, tmp_path, monkeypatch, task_log):
    """The same DAG parsed with FRUITS_COMPUTE_MODE=local: the EMR steps run by spark-submit on this
    machine, S3 is moto's, no cluster; outputs and report land in S3 and reconcile."""
    import pyarrow.parquet as pq

    monkeypatch.setenv("FRUITS_COMPUTE_MODE", "local")  # read when the DAG file is parsed
    monkeypatch.setenv("FRUITS_LOCAL_WORKDIR", str(tmp_path))
    monkeypatch.setenv("FRUITS_S3_ENDPOINT", moto)  # Spark talks to moto itself, through S3A
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", JAVA_TRUST_ANY_CERT)  # moto's self-signed certificate
    logical_date, n_images = few_raw_images
    run_date = (logical_date - timedelta(days=1)).date().isoformat()
    # (security_configuration is an EMR setting: not checked, not used without a cluster)
    conf = {**CONF, "kms_key_id": "alias/fruits-outputs", "security_configuration": "not-needed-locally"}

    run, states = run_dag(conf, logical_date)

    log = task_log()
    assert run.state == "success", (states, log[-5000:])
    assert states == dict.fromkeys(
        ["resolve_config", "stage_artifacts", "find_new_images", "plan_pca", "emr_request", "run_steps_locally",
         "validate_outputs", "commit_outputs"], "success")
    pointer = committed(s3, run_date)
    partition = f"features/run_date={run_date}/_attempts/{pointer['attempt']}/"
    assert attempts(s3, run_date) == [pointer["attempt"]]
    assert emr_client.list_clusters()["Clusters"] == []
    # staging happened: the code bundle and the exported model the steps ran
    assert any(k.endswith("/_STAGED") for k in bucket_keys(s3, "artifacts/code/"))
    models = bucket_keys(s3, "artifacts/models/")
    assert len(models) == 2 and models[0].endswith("/model.onnx") and models[1] == models[0] + ".json"
    # the EMR step's own arguments, s3:// URIs unchanged: no mirror, no upload
    assert f"--model-artifact s3://{BUCKET}/artifacts/models/" in log and "spark-submit --master 'local[*,4]'" in log
    assert f"--allowed-prefix s3://{BUCKET}/raw/" in log and f"--manifest s3://{BUCKET}/features/" in log
    assert f"spark.hadoop.fs.s3a.endpoint={moto}" in log and "fs.s3a.encryption.algorithm=SSE-KMS" in log
    # outputs in S3, written there by the two jobs
    keys = bucket_keys(s3, partition)
    entries = {k[len(partition):].split("/")[0] for k in keys}
    assert {"features", "quarantine", "pca", "report.json", "featurize.json", "manifest.txt",
            "explained_variance.png", "pca_scatter.png"} <= entries
    # the first run fits model v0001 under its own prefix, and the pointer names this date's reduced rows
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="features/_pca_models/_CURRENT.json")["Body"].read())
    assert (pointer["version"], pointer["corpus"]) == ("v0001", {run_date: f"s3://{BUCKET}/{partition}pca"})
    attempt = partition.rstrip("/").rsplit("/", 1)[1]  # the fit's model folder is the attempt's own
    assert pointer["model"] == f"s3://{BUCKET}/features/_pca_models/_attempts/{attempt}"
    assert f"features/_pca_models/_attempts/{attempt}/pca_model.json" in bucket_keys(s3, "features/_pca_models/")
    assert not [k for k in keys if k.endswith(".crc")]
    # everything the run wrote is SSE-KMS encrypted with the run's key: staged code and model, manifest,
    # the jobs' outputs (written by S3A), the commit pointer
    written = bucket_keys(s3, "artifacts/") + bucket_keys(s3, "features/")
    assert len(written) > 20 and f"features/run_date={run_date}/_COMMITTED.json" in written
    assert {(h.get("ServerSideEncryption"), h.get("SSEKMSKeyId")) for h in (
        s3.head_object(Bucket=BUCKET, Key=k) for k in written)} == {("aws:kms", "alias/fruits-outputs")}
    manifest = parse_manifest(s3.get_object(Bucket=BUCKET, Key=partition + "manifest.txt")["Body"].read().decode())
    assert len(manifest) == n_images + 1 and all(uri.startswith(f"s3://{BUCKET}/raw/") for uri in manifest)
    report = json.loads(s3.get_object(Bucket=BUCKET, Key=partition + "report.json")["Body"].read())
    assert (report["images_seen"], report["features_rows"], report["quarantined"]) == (n_images, 20, 1)
    assert report["features_rows"] + report["quarantined"] + report["ignored"] == report["files_seen"] == len(manifest)
    assert report["ignored_files"] == [f"s3://{BUCKET}/raw/lemon/IMG_0007.MOV"]
    assert report["engine"] == "onnxruntime" and report["model"].startswith("mobilenet_v2-a0.35-96-avg:")
    assert 1 <= report["k"] <= 20 and report["cumulative_explained_variance"][report["k"] - 1] >= 0.9
    for folder in ("features", "quarantine", "pca"):
        for key in bucket_keys(s3, partition + folder + "/"):
            if key.endswith(".parquet"):
                (tmp_path / "out" / key).parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(BUCKET, key, str(tmp_path / "out" / key))
    features = pq.read_table(tmp_path / "out" / partition / "features").to_pylist()
    quarantine = pq.read_table(tmp_path / "out" / partition / "quarantine").to_pylist()
    pca = pq.read_table(tmp_path / "out" / partition / "pca").to_pylist()
    photos = [uri for uri in manifest if not uri.endswith(".MOV")]
    assert sorted(row["path"] for row in features + quarantine) == sorted(photos)  # the S3 URIs themselves
    assert {row["label"] for row in features} == {"apple", "lemon", "mango", "raspberry"}
    assert [row["label"] for row in quarantine] == ["lemon"] and quarantine[0]["path"].endswith("/corrupt_7.jpg")
    assert len(pca) == 20 and {len(row["pca"]) for row in pca} == {report["k"]}
    assert {row["pca_model"] for row in pca} == {"v0001"} and (report["pca_model"], report["pca_fitted"]) == ("v0001", True)
    summary = run.get_task_instance("validate_outputs").xcom_pull(task_ids="validate_outputs")
    assert (summary["images"], summary["features_rows"], summary["quarantined"], summary["ignored"]) == (n_images, 20, 1, 1)
    assert summary["cluster_id"] is None and summary["estimated_cost_usd"] == 0
    assert f"{n_images + 1} files -> 20 featurized, 1 quarantined" in log
    assert list(tmp_path.glob("fruits-local-*")) == []  # Spark's scratch folder is removed after the run


# --- PCA model lifecycle: fit, apply on the next date, refit ------------------------------------

def read_parquet(s3, uri: str, tmp_path: Path) -> list[dict]:
    """Rows of the Parquet dataset at uri (downloaded from moto)."""
    import pyarrow.parquet as pq

    key = uri.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/"
    target = tmp_path / "parquet" / key
    for name in bucket_keys(s3, key):
        if name.endswith(".parquet"):
            (tmp_path / "parquet" / name).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(BUCKET, name, str(tmp_path / "parquet" / name))
    return pq.read_table(target).to_pylist()


def pca_pointer(s3) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key="features/_pca_models/_CURRENT.json")["Body"].read())


def upload_on(s3, images: dict[str, Path], day: datetime) -> None:
    """Upload images under raw/ with LastModified on `day` (moto stamps uploads now; readers list by it)."""
    from moto.s3.models import s3_backends

    for key, path in images.items():
        s3.upload_file(str(path), BUCKET, key)
        s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[key].last_modified = day.replace(tzinfo=None)


@needs_jobs
def test_day_two_applies_day_one_model_then_a_refit_reprojects_the_corpus(airflow_db, s3, emr_client, driver, tmp_path,
                                                                         task_log):
    """Day 1 fits model v0001; day 2 applies it (no fit: the same image gets identical coordinates);
    a refit of day 2 makes v0002 and re-projects day 1, and the pointer switches both dates at once.
    The EMR compute mode: the plan, the steps' arguments and the commits are the local mode's too
    (test_local_compute_mode_end_to_end runs that mode's steps); the steps reading and writing the
    models and the corpus on S3 through S3A: tests/spark_jobs/test_jobs_on_s3.py."""
    from fruits_emr import commits, settings, validation

    driver()
    s3.create_bucket(Bucket=BUCKET)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day1, day2 = today - timedelta(days=2), today - timedelta(days=1)
    samples = sorted(SAMPLE.glob("*/*.jpg"))
    again = samples[0]  # lands on day 1 and again, under another name, on day 2
    upload_on(s3, {f"raw/{p.parent.name}/{p.name}": p for p in samples[::4]}, day1 + timedelta(hours=12))
    upload_on(s3, {f"raw/{p.parent.name}/{p.name}": p for p in samples[2::8]}
              | {f"raw/{again.parent.name}/again_{again.name}": again}, day2 + timedelta(hours=12))
    conf = {**CONF, "variance": 0.95}

    first, states = run_dag(conf, day2)
    assert first.state == "success", (states, task_log()[-3000:])
    v1 = pca_pointer(s3)
    run1 = committed(s3, day1.date().isoformat())
    assert (v1["version"], v1["number"], v1["model"]) == ("v0001", 1, f"s3://{BUCKET}/features/_pca_models/_attempts/"
                                                                      + run1["attempt"])
    assert v1["corpus"] == {day1.date().isoformat(): run1["output"] + "/pca"} and run1["pca_model"] == "v0001"
    report1 = json.loads(s3.get_object(Bucket=BUCKET, Key=run1["report"].removeprefix(f"s3://{BUCKET}/"))["Body"].read())
    assert (report1["pca_fitted"], report1["pca_model"], report1["pca_fit_rows"]) == (True, "v0001", 10)
    assert "pca_model" not in {k.split("/")[-2] for k in bucket_keys(s3, run1["output"].removeprefix(f"s3://{BUCKET}/"))}
    assert validation.pca_model_written(s3, v1["model"])

    second, states = run_dag(conf, today)
    assert second.state == "success", (states, task_log()[-3000:])
    v1_day2 = pca_pointer(s3)
    run2 = committed(s3, day2.date().isoformat())
    report2 = json.loads(s3.get_object(Bucket=BUCKET, Key=run2["report"].removeprefix(f"s3://{BUCKET}/"))["Body"].read())
    assert (report2["pca_fitted"], report2["pca_model"], report2["k"]) == (False, "v0001", report1["k"])
    assert report2["explained_variance"] == report1["explained_variance"]
    assert "PCA: apply the current model v0001" in task_log()
    assert v1_day2["version"] == "v0001" and v1_day2["corpus"] == {
        day1.date().isoformat(): run1["output"] + "/pca", day2.date().isoformat(): run2["output"] + "/pca"}
    by_name = lambda rows: {Path(r["path"]).name: r for r in rows}  # noqa: E731
    day1_rows = by_name(read_parquet(s3, run1["output"] + "/pca", tmp_path))
    day2_rows = by_name(read_parquet(s3, run2["output"] + "/pca", tmp_path))
    assert len(day1_rows) == 10 and len(day2_rows) == 6
    assert day2_rows[f"again_{again.name}"]["pca"] == day1_rows[again.name]["pca"]  # identical coordinates
    assert {r["pca_model"] for r in [*day1_rows.values(), *day2_rows.values()]} == {"v0001"}

    third, states = run_dag({**conf, "refit_pca": True}, today)
    assert third.state == "success", (states, task_log()[-3000:])
    v2 = pca_pointer(s3)
    run3 = committed(s3, day2.date().isoformat())
    report3 = json.loads(s3.get_object(Bucket=BUCKET, Key=run3["report"].removeprefix(f"s3://{BUCKET}/"))["Body"].read())
    assert (report3["pca_fitted"], report3["pca_model"], report3["pca_fit_rows"]) == (True, "v0002", 16)
    assert (v2["version"], v2["number"], v2["model"]) == ("v0002", 2, f"s3://{BUCKET}/features/_pca_models/_attempts/"
                                                                      + run3["attempt"])
    assert v2["corpus"] == {day1.date().isoformat(): v2["model"] + "/corpus/part-00000",
                            day2.date().isoformat(): run3["output"] + "/pca"}
    assert commits.reduced_corpus(s3, settings.RunConfig(bucket=BUCKET)) == {
        "version": "v0002", "model": v2["model"], "k": report3["k"], "parts": v2["corpus"], "retired": {}}
    reprojected = by_name(read_parquet(s3, v2["corpus"][day1.date().isoformat()], tmp_path))
    assert set(reprojected) == set(day1_rows) and {r["pca_model"] for r in reprojected.values()} == {"v0002"}
    assert {len(r["pca"]) for r in reprojected.values()} == {report3["k"]}
    refitted_day2 = by_name(read_parquet(s3, v2["corpus"][day2.date().isoformat()], tmp_path))
    assert refitted_day2[f"again_{again.name}"]["pca"] == reprojected[again.name]["pca"]
    assert validation.pca_model_written(s3, v1["model"])  # v0001 is left as it was, for readers mid-way
