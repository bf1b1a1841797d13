"""The docker-compose stack, run for real: `make up` -> a committed run -> `make down` / `make up`.

What a user with Docker does, on a real Docker Engine (docker_engine.py), with the pulled images
replaced by stand-ins built here (standin_images.py, standins.compose.yaml: no registry is
reachable in CI) and the project's image built from docker/Dockerfile, unchanged, on top:

1. `docker compose build` (timed), then `make up` (`up -d --build --wait`): every long-running
   service healthy, the one-shot services exited 0, the 40 sample images seeded into the S3 server;
2. `make trigger CONF='{}'`: the run it queues succeeds without Spark (yesterday's interval, and
   the sample landed today: nothing stamped before the interval's end);
3. a run triggered through the REST API, in local compute mode: it succeeds, its outputs are
   committed in the S3 server and the counts reconcile with the sample;
4. the UI in Chromium: the run's page shows it succeeded, and the trigger form loads;
5. `make down`, then `make up`: the metadata DB still has the runs; the S3 server (moto, in memory)
   is seeded again and holds no outputs (docs/local-stack.md#what-survives-make-down).

One test, because each step needs the one before and the stack is too heavy to start twice.
Everything it started is stopped (`down -v`; a dockerd it started) whatever happens. The build and
run times are the test's `timings` property, printed at the end of the session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

import pytest

from tests.support import REPO_ROOT

from ..ui.stack import require_chromium
from .compose_stack import ComposeStack, compose_stack
from .docker_engine import DockerUnavailable, docker_engine
from .standin_images import standin_images

pytestmark = pytest.mark.compose

DAG_ID = "fruits_features"
BUCKET = "fruits-local"
SAMPLE_ROOT = REPO_ROOT / "data" / "sample"
SAMPLE_KEYS = sorted(f"raw/{p.parent.name}/{p.name}" for p in SAMPLE_ROOT.glob("*/*") if p.suffix == ".jpg")
RUN_TIMEOUT = 1800  # seconds: a safety net so a stuck run fails the test instead of hanging CI
LONG_RUNNING = ("postgres", "s3", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer")
ONE_SHOT = ("s3-init", "airflow-init")


def _require_docker(stack: ExitStack):
    """The engine, or a failure where CI runs (root on Debian: system-packages.sh installed Docker),
    or a skip on a developer machine without Docker."""
    try:
        return stack.enter_context(docker_engine())
    except DockerUnavailable as error:
        if os.geteuid() == 0 and Path("/etc/debian_version").is_file():
            pytest.fail(f"Docker could not be set up for the compose test: {error}")
        pytest.skip(f"no Docker Engine for the compose test: {error}")


def _raw_keys(s3) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="raw/")
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _pointers(s3) -> dict[str, dict]:
    """run_date -> the commit pointer features/run_date=D/_COMMITTED.json."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="features/")
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", []) if obj["Key"].endswith("/_COMMITTED.json")]
    return {re.search(r"run_date=([^/]+)/", key).group(1): json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            for key in keys}


def _feature_names(s3, attempt: str) -> list[str]:
    import pyarrow.parquet as pq

    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{attempt}/features/")
    names = []
    with tempfile.TemporaryDirectory() as folder:
        for obj in (o for page in pages for o in page.get("Contents", []) if o["Key"].endswith(".parquet")):
            local = Path(folder) / f"{len(names)}.parquet"
            s3.download_file(BUCKET, obj["Key"], str(local))
            names += [PurePosixPath(str(row["path"])).name for row in pq.read_table(local, columns=["path"]).to_pylist()]
    return sorted(names)


def _wait_for_run(stack: ComposeStack, api, run_id: str) -> dict:
    run = api.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT)
    assert run["state"] == "success", f"run {run_id} ended {run['state']}: {run['tasks']}\n{stack.diagnostics()}"
    return run


def _check_up(stack: ComposeStack) -> None:
    services = stack.services()
    for name in LONG_RUNNING:
        assert (services[name]["State"], services[name]["Health"]) == ("running", "healthy"), services[name]
    for name in ONE_SHOT:
        assert (services[name]["State"], services[name]["ExitCode"]) == ("exited", 0), services[name]
    assert _raw_keys(stack.s3()) == SAMPLE_KEYS, "s3-init did not seed exactly data/sample into raw/"


def _ui_after_the_run(stack: ComposeStack, run_id: str) -> None:
    """Chromium (Debian's, through Playwright): log in, the run's page says success (the screenshot
    of docs/local-stack.md), then the trigger form opens with its Params."""
    from playwright.sync_api import expect, sync_playwright

    profile = tempfile.mkdtemp(prefix="fruits-chromium-")
    shots = Path(os.environ.get("FRUITS_SCREENSHOTS") or profile)
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=require_chromium(), headless=True, viewport={"width": 1400, "height": 900},
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
            try:
                page = context.new_page()
                page.goto(stack.url)
                page.locator("input[name=username]").fill("admin")
                page.locator("input[name=password]").fill("admin-dev-only")
                page.locator("button[type=submit]").click()
                page.wait_for_url(lambda url: "/auth/login" not in url)
                page.goto(f"{stack.url}/dags/{DAG_ID}/runs/{run_id}")
                expect(page.get_by_text("success").first).to_be_visible(timeout=60_000)
                page.screenshot(path=str(shots / "compose-run.png"))
                page.goto(f"{stack.url}/dags/{DAG_ID}")  # on a run's page the button opens a menu
                page.get_by_test_id("trigger-dag-button").click()
                dialog = page.get_by_role("dialog")
                expect(dialog.get_by_text("Run Parameters")).to_be_visible(timeout=60_000)
                expect(dialog.get_by_test_id("trigger-dag-submit")).to_be_enabled()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def test_make_up_runs_the_dag_to_a_commit_and_make_down_keeps_the_db(record_property):
    with ExitStack() as resources:
        docker = _require_docker(resources)
        timings: dict[str, float] = {}
        try:
            logs = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="fruits-standin-logs-")))
            start = time.monotonic()
            standins = standin_images(docker, logs)
            timings["stand-in images (found or built)"] = round(time.monotonic() - start, 1)
            stack = resources.enter_context(compose_stack(docker, standins, timings))
            _run_the_stack(stack)
        finally:
            record_property("timings", timings)


def _run_the_stack(stack: ComposeStack) -> None:
    stack.timed("image build (docker compose build)", stack.compose, "build", timeout=3600)
    stack.timed("make up (start until healthy)", stack.make, "up")
    _check_up(stack)

    # 2. make trigger: the CLI in the api-server container unpauses the DAG and queues a run of
    # yesterday's interval: the sample landed today, so nothing is stamped before its end
    api = stack.api()
    stack.make("trigger", "CONF={}")
    queued = api.wait_for(lambda: [r["dag_run_id"] for r in api.get(f"dags/{DAG_ID}/dagRuns")["dag_runs"]
                                   if r["run_type"] == "manual"], 120)  # unpausing also schedules yesterday's run
    assert len(queued) == 1, queued
    triggered = _wait_for_run(stack, api, queued[0])
    assert triggered["tasks"]["find_new_images"] == "success" and triggered["tasks"]["run_steps_locally"] == "skipped"

    # 3. a run through the REST API, as the UI's trigger does: every image in raw/ (make trigger's default)
    run_id = api.post(f"dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": {"full_refresh": True}})["dag_run_id"]
    run = stack.timed("run (trigger to success)", _wait_for_run, stack, api, run_id)
    assert run["tasks"]["run_steps_locally"] == "success" and run["tasks"]["commit_outputs"] == "success", run["tasks"]
    s3 = stack.s3()
    pointer = next((p for p in _pointers(s3).values() if p["dag_run_id"] == run_id), None)
    assert pointer is not None, f"no commit pointer names {run_id}: {_pointers(s3)}"
    attempt = pointer["output"].removeprefix(f"s3://{BUCKET}/")
    manifest = s3.get_object(Bucket=BUCKET, Key=f"{attempt}/manifest.txt")["Body"].read().decode().split()
    assert sorted(manifest) == [f"s3://{BUCKET}/{key}" for key in SAMPLE_KEYS]
    assert (pointer["images"], pointer["features_rows"], pointer["quarantined"]) == (len(SAMPLE_KEYS),) * 2 + (0,)
    assert _feature_names(s3, attempt) == sorted(PurePosixPath(key).name for key in SAMPLE_KEYS)

    # 4. the UI
    stack.timed("UI in Chromium", _ui_after_the_run, stack, run_id)

    # 5. make down keeps the volumes: the metadata DB survives, the in-memory S3 server is seeded anew
    runs = {r["dag_run_id"]: r["state"] for r in api.get(f"dags/{DAG_ID}/dagRuns")["dag_runs"]}
    stack.timed("make down", stack.make, "down")
    assert not [s for s in stack.services().values() if s["State"] == "running"]
    stack.timed("make up again", stack.make, "up")
    _check_up(stack)
    again = stack.api()
    assert {r["dag_run_id"]: r["state"] for r in again.get(f"dags/{DAG_ID}/dagRuns")["dag_runs"]} == runs
    assert _pointers(stack.s3()) == {}, "moto keeps no data across make down: the outputs are gone"
