"""The DAG folder imports cleanly, without AWS or Variable calls, and follows the project's policy."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

from fruits_emr import artifacts, emr_request
from tests.support import REPO_ROOT
from tests.support.airflow import DAGS


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["fruits_features"]


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert sorted(dagbag.dag_ids) == ["fruits_corpus_check", "fruits_features"]


def test_import_makes_no_aws_or_variable_calls_and_no_heavy_imports(tmp_path):
    """Parse the DAG file in a clean interpreter where any AWS API call or Variable read raises.

    The interpreter finds `fruits_emr` as Airflow does in production, on the plugins folder, and
    `spark_jobs` (whose pure helpers the plugin shares) on PYTHONPATH, the repo root, as the
    docker-compose stack sets it.
    """
    probe = textwrap.dedent(
        f"""
        import json, sys
        calls = []
        import botocore.client
        def no_aws(self, operation, params):
            calls.append("aws:" + operation)
            raise RuntimeError("AWS call at parse time: " + operation)
        botocore.client.BaseClient._make_api_call = no_aws
        import airflow.sdk
        def no_variable(*args, **kwargs):
            calls.append("variable:" + str(args))
            raise RuntimeError("Variable read at parse time")
        airflow.sdk.Variable.get = classmethod(no_variable)
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS)!r})
        heavy = sorted(m for m in ("tensorflow", "pyspark", "keras", "onnxruntime", "torch") if m in sys.modules)
        print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                          "dags": sorted(bag.dag_ids), "calls": calls, "heavy": heavy}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"errors": {}, "dags": ["fruits_corpus_check", "fruits_features"], "calls": [], "heavy": []}


def test_the_consumer_is_scheduled_on_the_asset_commit_outputs_updates(dagbag, dag):
    from fruits_emr.corpus import REDUCED_CORPUS

    consumer = dagbag.dags["fruits_corpus_check"]
    assert list(consumer.timetable.asset_condition.objects) == [REDUCED_CORPUS]
    assert dag.get_task("commit_outputs").outlets == [REDUCED_CORPUS]
    assert consumer.catchup is False and consumer.max_active_runs == 1 and consumer.on_failure_callback


def test_policy(dag):
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"fruits", "emr"} <= set(dag.tags)
    assert dag.doc_md and "fruits_features" in dag.doc_md
    from airflow.sdk import CronDataIntervalTimetable

    # a data-interval timetable: each run covers the previous day's LastModified window
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("0 0 * * *", "UTC")
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_delay >= timedelta(seconds=1), task.task_id


def test_task_order(dag):
    upstream = {task.task_id: task.upstream_task_ids for task in dag.tasks}
    assert "resolve_config" in upstream["stage_artifacts"]
    assert "stage_artifacts" in upstream["find_new_images"]
    assert "find_new_images" in upstream["emr_request"]
    assert upstream["create_cluster"] == {"emr_request"}
    assert "create_cluster" in upstream["add_steps"]
    assert "add_steps" in upstream["watch_featurize"]
    assert "watch_featurize" in upstream["watch_pca"]
    assert {"watch_pca", "terminate_cluster"} <= upstream["validate_outputs"]
    # outputs become visible only after they were checked
    assert upstream["commit_outputs"] >= {"validate_outputs"}
    assert dag.get_task("commit_outputs").trigger_rule == "all_success"


def test_teardown_always_terminates_the_cluster(dag):
    from fruits_emr.operators import EmrAddRunSteps, EmrCreateRunCluster, EmrTerminateRunClusters

    create, terminate = dag.get_task("create_cluster"), dag.get_task("terminate_cluster")
    assert isinstance(create, EmrCreateRunCluster) and create.is_setup
    assert isinstance(dag.get_task("add_steps"), EmrAddRunSteps)
    assert isinstance(terminate, EmrTerminateRunClusters) and terminate.is_teardown
    # not a teardown's all_done_setup_success: it must run when create_cluster failed too (a cluster
    # RunJobFlow made before the failure); skipped only when find_new_images skips the run
    assert terminate.trigger_rule == "none_skipped"
    assert {"create_cluster", "watch_pca"} <= terminate.upstream_task_ids
    assert create.job_flow_overrides is not None and create.emr_conn_id is None


def test_every_step_has_a_sensor(dag):
    from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor

    sensors = {task.task_id: task for task in dag.tasks if isinstance(task, EmrStepSensor)}
    assert sorted(sensors) == ["watch_featurize", "watch_pca"]
    assert [sensors[t].step_id for t in ("watch_featurize", "watch_pca")] == [
        "{{ ti.xcom_pull(task_ids='add_steps')[0] }}", "{{ ti.xcom_pull(task_ids='add_steps')[1] }}"]
    for sensor in sensors.values():
        assert sensor.timeout > 0 and sensor.poke_interval > 0


def test_params_form(dag):
    from fruits_emr import events
    from fruits_emr.settings import RunConfig

    params = dag.params
    assert set(params.keys()) == set(RunConfig().to_dict()) | set(events.param_specs(None))
    for name in params.keys():
        assert params.get_param(name).description, name
    assert params["release_label"].startswith("emr-7.")
    assert params["full_refresh"] is False


def _form_required(schema: dict) -> bool:
    """Airflow's trigger form (FlexibleForm/isParamRequired): a Param with a type is required unless
    the type is a list that includes "null"; a required Param whose value is null or "" marks the form
    invalid and disables the Trigger button."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def test_trigger_form_opens_valid_with_the_defaults(dag):
    """Every Param, whatever its name: its default passes its own schema (the server-side check of the
    trigger request) and the form needs no value the user did not choose to give."""
    from airflow.sdk.definitions.param import ParamsDict

    params = dag.params
    ParamsDict(params.dump()).validate()  # what a trigger with the form's untouched values runs
    for name in params.keys():
        param = params.get_param(name)
        assert param.schema.get("title") and param.description, name  # the form's label and help text
        if _form_required(param.schema):
            assert param.value not in (None, ""), f"Param {name!r} is required in the form but defaults to empty"


def test_cleared_optional_fields_are_valid_and_mean_the_default(dag):
    """The form sends a cleared text field as null: the Param accepts it and the run uses the same
    setting as an untouched field (so the Variable fruits_features_defaults still applies)."""
    from airflow.sdk.definitions.param import ParamsDict

    from fruits_emr import settings

    params = dag.params
    optional = [name for name in params.keys() if not _form_required(params.get_param(name).schema)]
    assert {"bucket", "subnet_id", "kms_key_id", "security_configuration", "k"} <= set(optional)
    cleared = {**params.dump(), **dict.fromkeys(optional)}
    ParamsDict(cleared).validate()
    variable = {"bucket": "from-variable", "kms_key_id": "alias/fruits"}
    defaults = settings.parse_time_defaults({})
    untouched_config, _ = settings.resolve_run_config(params.dump(), defaults, variable)
    cleared_config, sources = settings.resolve_run_config(cleared, defaults, variable)
    assert cleared_config == untouched_config
    assert (cleared_config.bucket, cleared_config.kms_key_id, sources["bucket"]) == ("from-variable", "alias/fruits", "variable")
    with pytest.raises(settings.ConfigError, match="Param 'bucket' is empty"):
        settings.resolve_run_config(cleared, defaults, {})


def parse_with_env(tmp_path, **env: str) -> dict:
    """Parse the DAG in a clean interpreter with extra environment variables; describe its tasks."""
    probe = textwrap.dedent(
        f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(DAGS)!r})
        dag = bag.dags.get("fruits_features")
        print(json.dumps({{
            "errors": [str(e) for e in bag.import_errors.values()],
            "tasks": {{t.task_id: {{"type": type(t).__name__, "deferrable": getattr(t, "deferrable", None),
                                   "upstream": sorted(t.upstream_task_ids)}} for t in (dag.tasks if dag else [])}},
        }}))
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


SENSORS = ("watch_featurize", "watch_pca")


def test_deferrable_is_airflows_default_deferrable_switch(tmp_path):
    """[operators] default_deferrable makes the step sensors deferrable, and only them: the provider's
    triggers of the other EMR operators need aiobotocore (the sensors' is fruits_emr.step_trigger's)."""
    tasks = parse_with_env(tmp_path, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="true")["tasks"]
    assert {task: tasks[task]["deferrable"] for task in (*SENSORS, "create_cluster", "add_steps", "terminate_cluster")
            } == {"watch_featurize": True, "watch_pca": True, "create_cluster": False, "add_steps": False,
                  "terminate_cluster": False}
    # FRUITS_DEFERRABLE, if set, decides for this DAG's sensors alone
    tasks = parse_with_env(tmp_path, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="true", FRUITS_DEFERRABLE="false")["tasks"]
    assert [tasks[task]["deferrable"] for task in SENSORS] == [False, False]


def test_local_compute_mode_runs_the_steps_without_a_cluster(tmp_path):
    tasks = parse_with_env(tmp_path, FRUITS_COMPUTE_MODE="local")["tasks"]
    assert sorted(tasks) == ["commit_outputs", "emr_request", "find_new_images", "plan_pca", "resolve_config",
                             "run_steps_locally", "stage_artifacts", "validate_outputs"]
    assert "find_new_images" in tasks["plan_pca"]["upstream"] and "plan_pca" in tasks["emr_request"]["upstream"]
    assert "resolve_config" in tasks["stage_artifacts"]["upstream"]
    assert "stage_artifacts" in tasks["find_new_images"]["upstream"]
    assert "find_new_images" in tasks["emr_request"]["upstream"]
    assert set(tasks["run_steps_locally"]["upstream"]) == {"emr_request", "find_new_images", "resolve_config"}
    assert "run_steps_locally" in tasks["validate_outputs"]["upstream"]
    assert "validate_outputs" in tasks["commit_outputs"]["upstream"]


def test_unknown_compute_mode_is_an_import_error_naming_the_variable(tmp_path):
    result = parse_with_env(tmp_path, FRUITS_COMPUTE_MODE="kubernetes")
    assert result["tasks"] == {}
    assert len(result["errors"]) == 1 and "FRUITS_COMPUTE_MODE='kubernetes': use 'emr'" in result["errors"][0]


def read_pins(name: str) -> dict[str, str]:
    lines = (REPO_ROOT / "emr" / name).read_text().splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_emr_bootstrap_and_requirements_are_pinned():
    light, tensorflow = read_pins("requirements-emr.txt"), read_pins("requirements-emr-tensorflow.txt")
    assert {"numpy", "pandas", "pyarrow", "pillow", "matplotlib", "onnxruntime", "boto3"} <= set(light)
    # engine onnxruntime ships an exported model: nothing of the Keras/TensorFlow stack on the nodes
    assert not {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "h5py"} & set(light)
    assert {"tensorflow-cpu", "keras", "h5py", "tf2onnx", "onnx"} <= set(tensorflow)
    assert light["onnxruntime"] == "1.31.1" and tensorflow["tensorflow-cpu"] == "2.21.0"
    from importlib.metadata import version

    for package, pinned in {**light, **tensorflow}.items():
        assert version(package) == pinned, f"{package}: EMR pins {pinned}, the tested venv has {version(package)}"
    bootstrap = (REPO_ROOT / "emr" / "bootstrap.sh").read_text()
    assert 'python="${FRUITS_NODE_PYTHON:-/usr/bin/python3.11}"' in bootstrap  # the interpreter of PYSPARK_PYTHON
    assert "pip install --upgrade" not in bootstrap  # nothing from PyPI on the nodes
    syntax = subprocess.run(["bash", "-n", str(REPO_ROOT / "emr" / "bootstrap.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


NODE_ARGS = ("s3://b/wheelhouse/0123/",)
# aws s3 cp: recorded, and with FAKE_S3 set served from that folder (s3://<bucket>/<key> = $FAKE_S3/<bucket>/<key>)
FAKE_AWS = """#!/usr/bin/env bash
echo "aws $*" >> {log}
if [ -n "${{FAKE_S3:-}}" ]; then
  source="${{@: -2:1}}"
  cp -r "$FAKE_S3/${{source#s3://}}" "${{@: -1}}"
fi
"""


def run_bootstrap(tmp_path, *args: str, python: str | None = None, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run bootstrap.sh with sudo, dnf and aws replaced by recorders (and the node's python3.11 too,
    unless python names a real interpreter). Returns (the process, the recorded commands)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "calls.log"
    recorder = f'#!/usr/bin/env bash\necho "$(basename "$0") $*" >> {log}\n'
    for name in ("dnf", "python3.11"):
        (bin_dir / name).write_text(recorder)
    (bin_dir / "aws").write_text(FAKE_AWS.format(log=log))
    (bin_dir / "sudo").write_text('#!/usr/bin/env bash\nexec "$@"\n')
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    done = subprocess.run(["bash", str(REPO_ROOT / "emr" / "bootstrap.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin",
                               "FRUITS_NODE_PYTHON": python or str(bin_dir / "python3.11"), **env}, timeout=300)
    return done, log.read_text() if log.exists() else ""


def fake_bootstrap(tmp_path, *args: str) -> tuple[str, str, str]:
    """bootstrap.sh with every command recorded. Returns (recorded commands, the import check, stderr)."""
    done, calls = run_bootstrap(tmp_path, *args)
    assert done.returncode == 0, done.stderr
    imports = next(line for line in calls.splitlines() if line.startswith("python3.11 -c"))
    return calls, imports, done.stderr


def test_bootstrap_installs_the_tensorflow_add_on_only_when_given(tmp_path):
    calls, imports, _ = fake_bootstrap(tmp_path / "light", *NODE_ARGS)
    # python3.11 and its pip always (EMR 7.x images may lack pip), each at an exact AL2023 build
    dnf = calls.splitlines()[0].split()
    assert dnf[:4] == ["dnf", "install", "-y", "-q"] and len(dnf) == 6
    assert all(re.fullmatch(r"python3\.11(-pip)?-\d+(\.\d+)+-\d+\.amzn2023(\.\d+)*", package) for package in dnf[4:]), dnf
    assert "openblas" not in calls and "lapack" not in calls  # the PCA fit needs no native LAPACK
    assert "onnxruntime" in imports and "tensorflow" not in imports
    # from the staged wheelhouse only: no index, every wheel checked against the hash file shipped with it
    assert "aws s3 cp --only-show-errors --recursive s3://b/wheelhouse/0123/ " in calls
    [install] = [line for line in calls.splitlines() if " -m pip install" in line]
    assert "--no-index --find-links" in install and "/wheels" in install
    assert f"--require-hashes -r {install.split(' -r ')[1].split()[0]}" in install
    assert install.split(" -r ")[1].split()[0].endswith(f"/wheels/{artifacts.HASHED_REQUIREMENTS_FILE}")
    assert [line for line in calls.splitlines() if "pip" in line and "--no-index" not in line
            and not line.startswith("dnf ")] == []

    calls, imports, _ = fake_bootstrap(tmp_path / "tf", *NODE_ARGS, emr_request.TENSORFLOW_ADD_ON)
    [install] = [line for line in calls.splitlines() if " -m pip install" in line]
    assert "--require-hashes" in install and "tensorflow, keras" in imports

    done, calls = run_bootstrap(tmp_path / "typo", *NODE_ARGS, "tensorflw")
    assert done.returncode == 2 and "usage: bootstrap.sh WHEELHOUSE_URI [tensorflow]" in done.stderr and calls == ""


def test_bootstrap_installs_only_wheels_whose_sha256_is_pinned(tmp_path):
    """The real bootstrap with a real pip (installing into PIP_TARGET): the staged probe wheel
    installs; the same wheelhouse with that wheel's bytes changed stops the bootstrap (exit != 0)."""
    from tests.support.wheels import PROBE, hashed_requirements, write_wheel

    bucket = tmp_path / "s3"
    wheelhouse = bucket / "b" / "wheelhouse" / "0123"
    wheel = write_wheel(wheelhouse)
    hashed_requirements(wheelhouse / artifacts.HASHED_REQUIREMENTS_FILE, [wheel])
    target = tmp_path / "site"
    done, calls = run_bootstrap(tmp_path / "pinned", *NODE_ARGS, python=sys.executable, FAKE_S3=str(bucket),
                                PIP_TARGET=str(target))
    assert done.returncode == 0, done.stderr
    assert (target / f"{PROBE}.py").is_file() and "python deps ok" in done.stdout

    write_wheel(wheelhouse, payload="import os  # not the pinned bytes\n")
    target = tmp_path / "site-tampered"
    done, _ = run_bootstrap(tmp_path / "tampered", *NODE_ARGS, python=sys.executable, FAKE_S3=str(bucket),
                            PIP_TARGET=str(target))
    assert done.returncode != 0 and "DO NOT MATCH THE HASHES" in done.stderr
    assert not (target / f"{PROBE}.py").exists()
