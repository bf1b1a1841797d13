"""Run one EMR step's Spark job on this machine: the job's own parser reads the step's arguments,
local Spark stands in for the cluster.

    python tests/dags/emr_step_runner.py featurize|pca ARG...
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from local_spark.session import local_spark
    from spark_jobs import featurize, pca

    job, args = argv[0], argv[1:]
    module = {"featurize": featurize, "pca": pca}[job]
    parsed = module.build_parser().parse_args(args)
    spark = local_spark("local[2,4]", "2g")  # task retries, as on EMR
    try:
        module.run(spark, parsed)
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
