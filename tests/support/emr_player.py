"""Plays EMR for moto's clusters in this process, as EMR 7.10+ runs a step: the step's own
spark-submit command on this machine (fruits_emr.local_steps, the local compute mode's runner) with
s3:// read and written through S3A at a given endpoint (a moto server, or the fault proxy in front
of one) and the cluster's own core-site settings (its S3 encryption).

moto creates clusters and steps but runs nothing; the player takes each step that is pending or
running, in order, runs it and sets it COMPLETED or FAILED (ActionOnFailure CANCEL_AND_WAIT: the
later steps CANCELLED). With `hold` given it leaves the steps RUNNING until the event is set.
(tests/dags/test_dag_e2e.StepDriver plays EMR with local files instead, for dag.test runs.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from datetime import UTC, datetime

from tests.support import ACCOUNT, REGION

TERMINAL_CLUSTER = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")


class S3aStepPlayer(threading.Thread):
    def __init__(self, endpoint: str, hold: threading.Event | None = None, master: str = "local[2,4]"):
        super().__init__(daemon=True, name="emr-step-player")
        self.endpoint, self.hold, self.master = endpoint, hold, master
        self.executed: list[str] = []  # the jobs run, in order
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._process: subprocess.Popen | None = None

    def stop(self) -> None:
        """Stop playing; a step still running is killed (a failed test must not leave Spark behind)."""
        self._halt.set()
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)  # spark-submit's JVM and the Python driver
        self.join(timeout=60)

    def run(self) -> None:
        from moto.emr.models import emr_backends

        while not self._halt.wait(0.2):
            for cluster in list(emr_backends[ACCOUNT][REGION].clusters.values()):
                if cluster.state in TERMINAL_CLUSTER:
                    continue
                step = next((s for s in cluster.steps if s.state in ("PENDING", "RUNNING")), None)
                if step is None:
                    continue
                if step.state == "PENDING":
                    step.state = "RUNNING"
                    step.start()
                if self.hold is None or self.hold.is_set():
                    self.play(cluster, step)

    def spark_conf(self, cluster) -> dict[str, str]:
        from local_spark.s3a import s3a_conf

        conf = s3a_conf({"FRUITS_S3_ENDPOINT": self.endpoint, "AWS_DEFAULT_REGION": REGION})
        for classification in cluster.configurations:  # what EMR puts in the nodes' core-site.xml
            if classification.get("Classification") == "core-site":
                conf.update({f"spark.hadoop.{k}": v for k, v in classification.get("Properties", {}).items()})
        return conf

    def play(self, cluster, step) -> None:
        from fruits_emr.local_steps import local_step_command, spark_env, spark_submit_path

        self.executed.append(step.name.split()[0])
        command = local_step_command(list(step.args), spark_submit_path(), self.spark_conf(cluster), self.master, "1g")
        with tempfile.TemporaryDirectory(prefix="emr-step-") as scratch:
            self._process = subprocess.Popen(command, cwd=scratch, env=spark_env(), stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
            output, _ = self._process.communicate()
        ok = self._process.returncode == 0
        reason = "" if ok else f"{step.name} exited {self._process.returncode}: {output[-2000:]}"
        if not ok:
            self.errors.append(reason)
        step.end_date_time = datetime.now(UTC)
        step.state = "COMPLETED" if ok else "FAILED"
        if not ok:
            step.last_state_change_reason = reason
            for later in cluster.steps:
                if later.state == "PENDING":
                    later.state = "CANCELLED"
        cluster.state = "WAITING"
