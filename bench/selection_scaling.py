"""What the daily run's selection costs as the bucket grows: `selection_seconds_by_keys` in
bench/results.json (docs/performance.md#selection).

    python -m bench.selection_scaling [--keys 100000 1000000] [--moto-keys 100000] [--rounds 5]    # make bench-selection

The selection (fruits_emr.selection.find_new_images, a scheduled run) is: one listing of the raw
prefix (ListObjectsV2, 1,000 keys a page), one GET of the PCA pointer and one of each committed run
date's images.json (the ledger), then the subtraction in memory. Two measurements:

- `generated`: the selection's own code (coverage.raw_files_of, ledger.build_ledger,
  selection.interval_images) over a generated listing of N keys, as boto3 returns its pages, and a
  ledger of a year of committed days holding every key but the last day's: the CPU and memory part,
  which is all that grows with N besides the number of requests. The requests are counted, not timed:
  S3's time per LIST page does not depend on the bucket's size, a stand-in's does.
- `moto`: the whole selection (listing, ledger reads, subtraction) against in-process moto holding
  N keys: a cross-check of the generated figure, and where the listing's share shows. moto scans
  every key for each page, so its listing time grows faster than N; it is not S3's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import resource
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fruits_emr import coverage, ledger, selection
from fruits_emr.settings import RunConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench-selection"
LABELS = ("apple", "lemon", "mango", "raspberry")
DAYS = 365  # the uploads span a year; every day but the last one is committed
FIRST_DAY = datetime(2025, 1, 1, tzinfo=UTC)
PAGE = 1000  # keys per ListObjectsV2 page


def generated_listing(keys: int) -> list[dict[str, Any]]:
    """keys objects under raw/ as ListObjectsV2 lists them, stamped evenly over DAYS days."""
    per_day = math.ceil(keys / DAYS)
    return [{"Key": f"raw/{LABELS[index % 4]}/{index:08d}.jpg",
             "ETag": f'"{hashlib.md5(str(index).encode()).hexdigest()}"',
             "LastModified": FIRST_DAY + timedelta(days=index // per_day, seconds=index % 86_000),
             "Size": 2_000_000 + index % 1_000_000} for index in range(keys)]


def committed_days(raw: dict[str, coverage.RawFile]) -> dict[str, dict[str, str]]:
    """{run date: images.json content} of the committed days: every image but the last day's."""
    last_day = max(file.stamped for file in raw.values()).date()
    versions: dict[str, dict[str, str]] = {}
    for uri, file in raw.items():
        if file.stamped.date() < last_day:
            versions.setdefault(file.stamped.date().isoformat(), {})[uri] = file.etag
    return versions


def attempt_of(date: str) -> str:
    return f"s3://{BUCKET}/features/run_date={date}/_attempts/20250101T000000000000Z-000000"


def last_interval(raw: dict[str, coverage.RawFile]) -> tuple[datetime, datetime, str]:
    last = max(file.stamped for file in raw.values())
    start = datetime(last.year, last.month, last.day, tzinfo=UTC)
    return start, start + timedelta(days=1), start.date().isoformat()


def generated_round(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """One selection over a generated listing: seconds of each part, what it took, the requests it needs."""
    config = RunConfig(bucket=BUCKET)
    started = time.perf_counter()
    raw = coverage.raw_files_of(BUCKET, objects)
    listed = time.perf_counter()
    versions = committed_days(raw)  # (as read_ledger's GETs return them; not timed: S3 reads)
    begin_ledger = time.perf_counter()
    held = ledger.build_ledger({"retired": {}}, "etag", {date: attempt_of(date) for date in versions}, versions)
    built = time.perf_counter()
    found = selection.interval_images(config, raw, held, *last_interval(raw))
    done = time.perf_counter()
    return {"seconds": (listed - started) + (done - begin_ledger), "parse_listing_s": listed - started,
            "ledger_s": built - begin_ledger, "subtract_s": done - built, "taken": len(found.images),
            "list_requests": math.ceil(len(objects) / PAGE), "ledger_gets": len(versions) + 1}


def moto_round(keys: int) -> dict[str, Any]:
    """The whole selection against in-process moto holding `keys` raw objects and a year of commits."""
    import boto3
    from moto import mock_aws
    from moto.s3.models import s3_backends

    config = RunConfig(bucket=BUCKET)
    objects = generated_listing(keys)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        backend = s3_backends["123456789012"]["aws"]
        for obj in objects:  # straight into moto's store: uploading N objects is not what is measured
            stored = backend.put_object(BUCKET, obj["Key"], b"x")
            stored.last_modified = obj["LastModified"].replace(tzinfo=None)
        raw = coverage.raw_files(s3, config)
        versions = committed_days(raw)
        for date, held in versions.items():
            bucket, key = attempt_of(date).removeprefix("s3://").split("/", 1)
            s3.put_object(Bucket=bucket, Key=f"{key}/images.json", Body=json.dumps(held).encode())
        pointer = {"version": "v0001", "number": 1, "model": "m", "corpus": {}, "retired": {},
                   "committed": {date: attempt_of(date) for date in versions}}
        s3.put_object(Bucket=BUCKET, Key="features/_pca_models/_CURRENT.json", Body=json.dumps(pointer).encode())
        started = time.perf_counter()
        raw = coverage.raw_files(s3, config)
        listed = time.perf_counter()
        held = ledger.read_ledger(s3, config)
        read = time.perf_counter()
        found = selection.interval_images(config, raw, held, *last_interval(raw))
        done = time.perf_counter()
    return {"seconds": done - started, "list_s": listed - started, "ledger_reads_s": read - listed,
            "subtract_s": done - read, "taken": len(found.images), "list_requests": math.ceil(keys / PAGE),
            "ledger_gets": len(versions) + 1}


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each part's median over the rounds, and min/median/max of the whole selection's seconds."""
    whole = [r["seconds"] for r in rounds]
    return {name: (round(statistics.median(r[name] for r in rounds), 3) if isinstance(value, float) else value)
            for name, value in rounds[0].items()} | {
        "rounds": len(rounds),
        "seconds_spread": {"min": round(min(whole), 3), "median": round(statistics.median(whole), 3),
                           "max": round(max(whole), 3)}}


def measure(keys: list[int], moto_keys: list[int], rounds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for count in keys:
        objects = generated_listing(count)
        figures[str(count)] = {"generated": medians([generated_round(objects) for _ in range(rounds)])}
        del objects
        print(f"{count} keys, generated listing: {figures[str(count)]['generated']}", flush=True)
    for count in moto_keys:
        figures.setdefault(str(count), {})["moto"] = medians([moto_round(count) for _ in range(max(1, rounds // 5))])
        print(f"{count} keys, in-process moto: {figures[str(count)]['moto']}", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selection_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--moto-keys", type=int, nargs="*", default=[100_000])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--results", default=str(REPO_ROOT / "bench" / "results.json"))
    args = parser.parse_args(argv)
    figures = measure(args.keys, args.moto_keys, args.rounds)
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["selection_seconds_by_keys"] = {
        **figures, "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}",
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "note": "seconds: median of rounds (seconds_spread: min/median/max). generated = the selection's code over a generated listing and a year"
                " of committed days (requests counted, not timed); moto = the whole selection against in-process"
                " moto (its listing scans every key per page: not S3's time). A shared machine: other suites ran.",
    }
    results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
