"""The raw prefix against the committed outputs: how many images are in each state, so an operator can
check "nothing lost" in one command, and each scheduled run logs the same counts before it selects.

    make coverage BUCKET=acme-fruits                    # python -m fruits_emr.coverage --bucket acme-fruits
    python -m fruits_emr.coverage --bucket b --list pending --check    # exit 1 while an image is pending

Each image under the raw prefix, in its current version (ETag), is in exactly one state:

    committed          a committed attempt the PCA pointer names holds its features
    quarantined        one holds it in its quarantine (the file could not be used; the reason is there)
    in_failed_attempt  none holds it, but an attempt that was never committed selected it (the run
                       failed, or is still running): the next run takes it again
    pending            none of the above, stamped before the end of the newest committed daily interval:
                       runs already covered its time, the next run takes it
    new                stamped after that: no run covered its time yet

About the outputs: the rows the corpus leaves out (retired: deleted or replaced images), and run dates
whose _COMMITTED.json lags the PCA pointer (a commit stopped between its two writes; the next run,
or `--repair`, writes it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from fruits_emr import commits, validation
from fruits_emr import ledger as ledgers
from fruits_emr.layout import ATTEMPTS_FOLDER, COMMIT_RECORD_FILE, attempt_of, commit_key
from fruits_emr.s3_objects import list_folders, list_objects, read_json_object, read_many
from fruits_emr.settings import RunConfig
from spark_jobs.contract.model_choices import has_image_extension
from spark_jobs.contract.s3_uri import key_prefix, split_s3_uri

log = logging.getLogger(__name__)

STATES = ("committed", "quarantined", "in_failed_attempt", "pending", "new")
DAILY_DATE_LENGTH = len("2024-06-01")  # event partitions are named by their time: 2024-06-01T001530Z


# --- the raw prefix ---------------------------------------------------------------------------------

class RawFile(NamedTuple):
    """A file under the raw prefix as listed: its current version, when S3 stamped it, its size."""

    etag: str
    stamped: datetime
    size: int


def is_file_key(key: str) -> bool:
    """Any object but a folder marker ("raw/apple/"): a run's manifest lists every new file under the
    raw prefix, and featurize ignores (and lists) those that are not photos by name."""
    return not key.endswith("/")


def raw_files_of(bucket: str, objects: Iterable[Mapping[str, Any]]) -> dict[str, RawFile]:
    """{URI: RawFile} of the files among listed objects (ListObjectsV2 "Contents" entries)."""
    return {
        f"s3://{bucket}/{obj['Key']}": RawFile(str(obj.get("ETag", "")).strip('"'), obj["LastModified"],
                                                int(obj.get("Size", 0)))
        for obj in objects if is_file_key(obj["Key"])
    }


def raw_files(s3: Any, config: RunConfig) -> dict[str, RawFile]:
    """{URI: RawFile} of every file under the raw prefix, photos and the rest (one listing)."""
    return raw_files_of(config.bucket, list_objects(s3, config.bucket, key_prefix(config.raw_prefix)))


# --- what the outputs say ---------------------------------------------------------------------------

def quarantined_images(s3: Any, output_uri: str) -> list[str]:
    """URIs of the images an attempt quarantined: its commit.json, else its quarantine/ Parquet."""
    bucket, key = split_s3_uri(f"{output_uri.rstrip('/')}/{COMMIT_RECORD_FILE}")
    record = read_json_object(s3, bucket, key)
    if record is not None and "quarantined_images" in record:
        return list(record["quarantined_images"])
    return validation.quarantine_paths(s3, output_uri)


def uncommitted_attempts(s3: Any, config: RunConfig, committed: Mapping[str, str]) -> list[str]:
    """Attempt folder URIs under every run date that the PCA pointer does not name."""
    root = f"{key_prefix(config.output_prefix)}run_date="
    named = set(committed.values())
    folders = [f"{root}{date}/{ATTEMPTS_FOLDER}/" for date in list_folders(s3, config.bucket, root)]
    found = read_many(lambda prefix: [f"s3://{config.bucket}/{prefix}{attempt}"
                                      for attempt in list_folders(s3, config.bucket, prefix)], folders)
    return [uri for uris in found for uri in uris if uri not in named]


def lagging_dates(s3: Any, config: RunConfig, committed: Mapping[str, str]) -> dict[str, str | None]:
    """{run date: attempt its _COMMITTED.json names (None: none)} for the dates whose _COMMITTED.json
    does not name the attempt the PCA pointer names."""
    dates = sorted(committed)
    records = read_many(lambda date: read_json_object(s3, config.bucket, commit_key(config, date)), dates)
    return {date: (record or {}).get("attempt") for date, record in zip(dates, records, strict=True)
            if (record or {}).get("attempt") != attempt_of(committed[date])}


# --- the counts -------------------------------------------------------------------------------------

@dataclass
class Coverage:
    """Images by state (STATES), the URIs of each, and what the outputs say besides."""

    raw_prefix: str
    images: dict[str, list[str]] = field(default_factory=lambda: {state: [] for state in STATES})
    watermark: datetime | None = None  # end of the newest committed daily interval
    model_version: str | None = None
    committed_dates: int = 0
    retired_rows: int = 0
    lagging: dict[str, str | None] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return {state: len(uris) for state, uris in self.images.items()}

    def summary(self) -> str:
        counts = self.counts
        by_state = ", ".join(f"{state} {counts[state]}" for state in STATES)
        mark = self.watermark.isoformat() if self.watermark else "none committed yet"
        lag = ", ".join(sorted(self.lagging)) or "none"
        return (f"coverage of {self.raw_prefix}: {sum(counts.values())} images: {by_state} (pending: stamped before"
                f" {mark}, the end of the newest committed daily interval) | corpus: PCA model"
                f" {self.model_version or 'none yet'}, {self.committed_dates} run dates, {self.retired_rows} rows"
                f" retired (deleted or replaced images) | run dates whose _COMMITTED.json lags the PCA pointer: {lag}")

    def as_json(self) -> dict[str, Any]:
        return {"raw_prefix": self.raw_prefix, "counts": self.counts,
                "watermark": self.watermark.isoformat() if self.watermark else None,
                "model_version": self.model_version, "committed_dates": self.committed_dates,
                "retired_rows": self.retired_rows, "lagging_dates": self.lagging}


def watermark_of(committed: Mapping[str, str]) -> datetime | None:
    """The end of the newest committed daily interval (daily run dates are days; event ones are not)."""
    days = [date for date in committed if len(date) == DAILY_DATE_LENGTH]
    if not days:
        return None
    return datetime.fromisoformat(max(days)).replace(tzinfo=UTC) + timedelta(days=1)


def measure(
    s3: Any, config: RunConfig, raw: Mapping[str, RawFile] | None = None,
    ledger: ledgers.Ledger | None = None,
) -> Coverage:
    """The coverage now of the photos under the raw prefix (raw and ledger: a listing and a ledger the
    caller already has)."""
    raw = raw_files(s3, config) if raw is None else raw
    ledger = ledgers.read_ledger(s3, config) if ledger is None else ledger
    attempts = ledger.attempts
    dates = sorted(attempts)
    quarantined = dict(zip(dates, read_many(lambda date: set(quarantined_images(s3, attempts[date])), dates),
                           strict=True))
    selected: set[tuple[str, str | None]] = set()
    for versions in read_many(lambda uri: ledgers.attempt_versions(s3, uri),
                              uncommitted_attempts(s3, config, attempts)):
        selected.update(versions.items())
    report = Coverage(f"s3://{config.bucket}/{key_prefix(config.raw_prefix)}", watermark=watermark_of(attempts),
                      model_version=(ledger.pointer or {}).get("version"), committed_dates=len(dates),
                      retired_rows=sum(len(rows) for rows in ((ledger.pointer or {}).get("retired") or {}).values()),
                      lagging=lagging_dates(s3, config, attempts))
    for uri, (etag, stamped, _) in sorted(raw.items()):
        if not has_image_extension(uri):
            continue  # a file that is not a photo: featurize ignores and lists it, it has no row
        holders = [date for date, version in ledger.holders(uri) if version in (etag, None)]
        if holders:
            state = "quarantined" if uri in quarantined[holders[0]] else "committed"
        elif (uri, etag) in selected or (uri, None) in selected:
            state = "in_failed_attempt"
        elif report.watermark is not None and stamped < report.watermark:
            state = "pending"
        else:
            state = "new"
        report.images[state].append(uri)
    return report


# --- the command ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fruits_emr.coverage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--raw-prefix", default=RunConfig.raw_prefix)
    parser.add_argument("--output-prefix", default=RunConfig.output_prefix)
    parser.add_argument("--endpoint-url", default=None, help="an S3-compatible server (the local stack's moto)")
    parser.add_argument("--list", choices=STATES, action="append", default=[], help="print the URIs in this state")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when an image is pending or in a failed attempt")
    parser.add_argument("--repair", action="store_true",
                        help="write the _COMMITTED.json of run dates that lag the PCA pointer")
    args = parser.parse_args(argv)

    import boto3

    s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
    config = RunConfig(bucket=args.bucket, raw_prefix=args.raw_prefix, output_prefix=args.output_prefix)
    report = measure(s3, config)
    if args.repair and report.lagging:
        commits.repair_date_pointers(s3, config, ledgers.read_ledger(s3, config).attempts, report.lagging)
    print(json.dumps(report.as_json(), indent=2, sort_keys=True) if args.json else report.summary().replace(" | ", "\n"))
    for state in args.list:
        for uri in report.images[state]:
            print(f"{state}\t{uri}")
    counts = Counter(report.counts)
    return 1 if args.check and (counts["pending"] or counts["in_failed_attempt"]) else 0


if __name__ == "__main__":
    sys.exit(main())
