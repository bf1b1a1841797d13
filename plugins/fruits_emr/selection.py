"""The find_new_images task: which raw images a run processes, written as the manifest (and their
versions, images.json) of a new attempt folder.

- A scheduled or manual run takes the images whose LastModified is in its data interval (all of
  them with full_refresh); an event run the images its S3 notifications name (at most
  event_max_images, the rest go back to the queue).
- Every run records the image versions it processes (ETag, images.json in its attempt folder). An
  image version another committed partition lists is left out (`covered_images`), so a redelivered
  message, or the daily backstop after an event run, never makes a duplicate row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from fruits_emr import events
from fruits_emr.commits import read_commit
from fruits_emr.layout import COMMIT_FILE, RunPaths, new_attempt_id, partition_key, run_paths
from fruits_emr.s3_objects import list_folders, list_objects
from fruits_emr.settings import RunConfig, sse_arguments
from fruits_emr.task_records import RunSelection
from spark_jobs.contract.model_choices import has_image_extension
from spark_jobs.contract.run_files import MANIFEST_FILE, format_manifest, parse_manifest
from spark_jobs.contract.s3_uri import is_not_found, key_prefix, split_s3_uri

log = logging.getLogger(__name__)

IMAGES_FILE = "images.json"  # in each attempt folder: {image URI: ETag} of the images it processes
# A partition older than (oldest candidate's day - 1) cannot hold a candidate's version: a day's
# run holds that day's uploads; a run without a data interval takes the day before it ran.
COVERAGE_SLACK = timedelta(days=1)


@dataclass
class Candidates:
    """The images a run would process ({URI: ETag}), its partition, and what it left out and why."""

    images: dict[str, str]
    run_date: str
    scope: str
    skipped: dict[str, int]
    requeue: list[events.ObjectCreated]


# --- the run's window ------------------------------------------------------------------------------

def run_window(
    data_interval_start: datetime | None, data_interval_end: datetime | None, run_after: datetime
) -> tuple[datetime, datetime, str]:
    """The [start, end) window of image LastModified times and its run date (the start's day).

    Runs without a data interval (e.g. triggered with no logical date) take the last full UTC day.
    """
    if data_interval_start is None or data_interval_end is None or data_interval_end <= data_interval_start:
        end = datetime(run_after.year, run_after.month, run_after.day, tzinfo=run_after.tzinfo)
        data_interval_start, data_interval_end = end - timedelta(days=1), end
    return data_interval_start, data_interval_end, data_interval_start.date().isoformat()


def in_window(last_modified: datetime, start: datetime, end: datetime) -> bool:
    return start <= last_modified < end


def new_image_versions(s3: Any, config: RunConfig, start: datetime, end: datetime) -> dict[str, str]:
    """{URI: ETag} of the raw images whose LastModified is in [start, end), or of all of them on full
    refresh (the ETag: which version of the image the run sees)."""
    return {
        f"s3://{config.bucket}/{obj['Key']}": str(obj.get("ETag", "")).strip('"')
        for obj in list_objects(s3, config.bucket, key_prefix(config.raw_prefix))
        if has_image_extension(obj["Key"]) and (config.full_refresh or in_window(obj["LastModified"], start, end))
    }


# --- what committed runs already processed -------------------------------------------------------

def images_key(paths: RunPaths) -> str:
    return f"{paths.attempt_key}{IMAGES_FILE}"


def write_images(s3: Any, paths: RunPaths, versions: Mapping[str, str], sse: dict[str, str]) -> None:
    """Record the image versions of the attempt; they count as processed once it is committed."""
    body = (json.dumps(dict(sorted(versions.items())), indent=0) + "\n").encode()
    s3.put_object(Bucket=paths.bucket, Key=images_key(paths), Body=body, ContentType="application/json", **sse)


def write_manifest(s3: Any, paths: RunPaths, uris: list[str], sse: dict[str, str]) -> None:
    body = format_manifest(uris).encode()
    s3.put_object(Bucket=paths.bucket, Key=paths.manifest_key, Body=body, ContentType="text/plain", **sse)


def read_manifest(s3: Any, bucket: str, manifest_key: str) -> list[str]:
    """A manifest's entries (run_files.parse_manifest: blanks, comments and repeats dropped)."""
    return parse_manifest(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read().decode())


def covered_images(s3: Any, config: RunConfig, since: datetime, own_run_date: str) -> dict[str, set[str | None]]:
    """{image URI: ETags} of the committed partitions from (since's day - 1) on, except own_run_date
    (a re-run of a date replaces its own commit). None: a partition committed before images.json
    existed, which names its images but not their versions."""
    root = f"{key_prefix(config.output_prefix)}run_date="
    first = (since - COVERAGE_SLACK).date().isoformat()
    covered: dict[str, set[str | None]] = {}
    for run_date in list_folders(s3, config.bucket, root, start_after=f"{root}{first}"):
        if run_date == own_run_date:
            continue
        record = read_commit(s3, config.bucket, f"{partition_key(config, run_date)}{COMMIT_FILE}")
        if record is not None:
            for uri, etag in committed_versions(s3, record).items():
                covered.setdefault(uri, set()).add(etag)
    return covered


def committed_versions(s3: Any, record: Mapping[str, Any]) -> dict[str, str | None]:
    """{image URI: ETag} of a committed attempt (from its images.json, else its manifest)."""
    bucket, attempt_key = split_s3_uri(str(record["output"]).rstrip("/") + "/")
    try:
        body = s3.get_object(Bucket=bucket, Key=f"{attempt_key}{IMAGES_FILE}")["Body"].read()
        return json.loads(body)
    except ClientError as exc:
        if not is_not_found(exc):
            raise
    return dict.fromkeys(read_manifest(s3, bucket, f"{attempt_key}{MANIFEST_FILE}"))


def is_covered(uri: str, etag: str, covered: Mapping[str, set[str | None]]) -> bool:
    versions = covered.get(uri, set())
    return None in versions or etag in versions


# --- the candidates of a run ---------------------------------------------------------------------

def current_etag(s3: Any, bucket: str, key: str) -> str | None:
    """The object's ETag now, or None when it was deleted since its notification. A listing, not a
    HEAD: Airflow's policy lists raw/ but does not read it (iam/airflow-policy.json)."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents") or []
    if listed and listed[0]["Key"] == key:  # the key itself sorts first among keys it prefixes
        return str(listed[0]["ETag"]).strip('"')
    return None


def event_images(s3: Any, config: RunConfig, bodies: Iterable[str], max_images: int, run_after: datetime) -> Candidates:
    """The images an event run processes: those its messages name under the raw prefix, in their
    current version, not covered by a committed partition, at most max_images (oldest events first;
    the rest are returned to requeue)."""
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    raw = key_prefix(config.raw_prefix)
    newest: dict[str, events.ObjectCreated] = {}
    for record in (record for body in bodies for record in events.object_created(body)):
        if record.bucket != config.bucket or not record.key.startswith(raw) or not has_image_extension(record.key):
            skip("not an image under the raw prefix")
        elif record.uri in newest:
            skip("named again in the batch")
            newest[record.uri] = max(newest[record.uri], record, key=lambda r: r.event_time)
        else:
            newest[record.uri] = record
    run_date = events.event_run_date(run_after)
    ordered = sorted(newest.values(), key=lambda r: (r.event_time, r.key))
    oldest = min((_parse_time(r.event_time) for r in ordered), default=run_after)
    covered = covered_images(s3, config, oldest, run_date) if ordered else {}
    images: dict[str, str] = {}
    requeue: list[events.ObjectCreated] = []
    for record in ordered:
        if len(images) >= max_images:
            requeue.append(record)
            continue
        etag = current_etag(s3, config.bucket, record.key)
        if etag is None:
            skip("deleted since")
        elif is_covered(record.uri, etag, covered):
            skip("already processed by a committed run")
        else:
            images[record.uri] = etag
    scope = f"S3 events naming {len(newest)} images"
    return Candidates(images, run_date, scope, skipped, requeue)


def interval_images(s3: Any, config: RunConfig, start: datetime, end: datetime, run_date: str) -> Candidates:
    """The images of a scheduled or manual run: LastModified in [start, end) (all with full_refresh),
    less those another committed partition processed in that version (none left out on full_refresh)."""
    versions = new_image_versions(s3, config, start, end)
    if config.full_refresh:
        return Candidates(versions, run_date, "all images (full refresh)", {}, [])
    covered = covered_images(s3, config, start, run_date) if versions else {}
    images = {uri: etag for uri, etag in versions.items() if not is_covered(uri, etag, covered)}
    skipped = {"already processed by a committed run": len(versions) - len(images)} if len(images) < len(versions) else {}
    return Candidates(images, run_date, f"LastModified in [{start}, {end})", skipped, [])


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


# --- the task --------------------------------------------------------------------------------------

def find_new_images(
    s3: Any, config: RunConfig, data_interval_start: datetime | None, data_interval_end: datetime | None,
    run_after: datetime, event_batch: events.EventBatch | None = None, sqs: Any = None,
) -> RunSelection | None:
    """Write the manifest of the run's new images (and their versions, images.json) into a new attempt
    folder: those its S3 events name (event_batch: a run on the asset; the ones over its cap go back to
    the queue through `sqs`), else those of its data interval, less what a committed run already
    processed. None when there are none (the rest of the run is skipped: no cluster)."""
    start, end, run_date = run_window(data_interval_start, data_interval_end, run_after)
    if event_batch is None:
        found = interval_images(s3, config, start, end, run_date)
    else:
        found = event_images(s3, config, event_batch.bodies, event_batch.max_images, run_after)
        if found.requeue:
            events.requeue(sqs, event_batch.queue_url, found.requeue)
    if found.skipped or found.requeue:
        log.info("left out: %s; sent back to the queue: %d", found.skipped, len(found.requeue))
    if not found.images:
        log.info("No images under s3://%s/%s with %s: no cluster.", config.bucket, key_prefix(config.raw_prefix),
                 found.scope)
        return None
    paths = run_paths(config, found.run_date, new_attempt_id(datetime.now(UTC)))
    write_manifest(s3, paths, sorted(found.images), sse_arguments(config))
    write_images(s3, paths, found.images, sse_arguments(config))
    log.info("%d images with %s -> %s", len(found.images), found.scope, paths.manifest_uri)
    window = (start.isoformat(), end.isoformat()) if event_batch is None else None
    return RunSelection(paths=paths, images=len(found.images), scope=found.scope, window=window)
