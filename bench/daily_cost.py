"""What a daily run costs (fruits_emr.cost, docs/cost.md): from the figures bench/results.json holds
(spark_img_s on this machine's cores, bootstrap_install_seconds) and plugins/fruits_emr/prices.json,
writes `usd_per_daily_run` (1k, 10k, 100k new images, per cluster shape, fixed overhead included)
into bench/results.json (other keys untouched). `make bench` runs it after run_bench.py.

    python -m bench.daily_cost
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fruits_emr.cost import usd_per_daily_run

RESULTS = Path(__file__).resolve().parent / "results.json"
KEY = "usd_per_daily_run"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    path = Path(args.results)
    results = json.loads(path.read_text())
    results[KEY] = usd_per_daily_run(results)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(json.dumps(results[KEY], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
