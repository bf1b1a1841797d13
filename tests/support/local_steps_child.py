"""The local compute mode's steps in a process of their own, as the Airflow task process runs them
(fruits_emr.local_steps.run_steps_locally, which starts spark-submit): a test can SIGKILL it.

    python -m tests.support.local_steps_child <request.json>    # {"config": RunConfig, "steps": [...], ...}
"""

from __future__ import annotations

import json
import logging
import sys

from fruits_emr import local_steps
from fruits_emr.settings import RunConfig
from fruits_emr.task_io import from_xcom


def main(path: str) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    with open(path) as file:
        request = json.load(file)
    local_steps.run_steps_locally(from_xcom(RunConfig, request["config"]), request["steps"], request["master"],
                                  request["driver_memory"], request["workdir"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
