"""The find_new_images task: which raw files a run processes, written as the manifest, their versions
(images.json) and what the run saw (attempt.json) of a new attempt folder. Every file is listed,
photos and the rest (a Live Photo's .MOV, a .xmp sidecar): featurize featurizes or quarantines the
photos by name and ignores, and lists, the others.

A file counts as processed when the ledger (ledger.py: the attempts the PCA pointer's corpus is
made of) holds its current version (ETag); every other file under the raw prefix is the next
runs' to take, whatever its timestamp says:

- A scheduled or manual run takes every such image stamped (LastModified) before the end of its data
  interval: days the DAG was paused, runs that failed and were never cleared, uploads stamped inside
  an interval that was already listed (a multipart upload is stamped when it started) all come into
  the next run, once. Images stamped after its interval wait for the next run. A re-run of a date
  also takes the date's committed images again (its commit replaces the date). full_refresh takes
  every image.
- An event run takes the images its S3 notifications name, in their current version, that the
  ledger does not hold; at most event_max_images, the rest go back to the queue.
- Rows the ledger holds that no longer count (the image was deleted, or this run takes its new
  version, or two dates hold it) are retired by this run's commit (pca_pointer.RunChange), or at once
  when the run has no images (commits.retire_rows).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fruits_emr import commits, coverage, events
from fruits_emr.layout import RunPaths, new_attempt_id, run_paths
from fruits_emr.ledger import Ledger, read_ledger
from fruits_emr.s3_objects import current_version, json_body
from fruits_emr.settings import RunConfig, sse_arguments
from fruits_emr.task_records import FROM_EARLIER_INTERVALS, RunSelection
from spark_jobs.contract.model_choices import has_image_extension
from spark_jobs.contract.run_files import format_manifest, parse_manifest
from spark_jobs.contract.s3_uri import key_prefix

log = logging.getLogger(__name__)

IN_INTERVAL = "in the interval"
AGAIN = "committed for this date before (a re-run replaces it)"
EVERY_IMAGE = "every image (full refresh)"
NAMED = "named by S3 events"
PROCESSED = "already processed by a committed run"
AFTER_INTERVAL = "stamped after the interval (the next run takes them)"


@dataclass
class Candidates:
    """The files a run would process ({URI: ETag}: its photos and the files featurize ignores and
    lists), its partition, why it took each (counts), what it left out and why, the event records to
    requeue, the rows to retire ({run date: {URI: ETag}}) and the files' sizes where known."""

    images: dict[str, str]
    run_date: str
    scope: str
    taken: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    requeue: list[events.ObjectCreated] = field(default_factory=list)
    retire: dict[str, dict[str, str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


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


# --- the attempt folder's files --------------------------------------------------------------------

def write_images(s3: Any, paths: RunPaths, versions: Mapping[str, str], sse: dict[str, str]) -> None:
    """Record the image versions of the attempt; they count as processed once it is committed."""
    body = (json.dumps(dict(sorted(versions.items())), indent=0) + "\n").encode()
    s3.put_object(Bucket=paths.bucket, Key=paths.images_key, Body=body, ContentType="application/json", **sse)


def write_manifest(s3: Any, paths: RunPaths, uris: list[str], sse: dict[str, str]) -> None:
    body = format_manifest(uris).encode()
    s3.put_object(Bucket=paths.bucket, Key=paths.manifest_key, Body=body, ContentType="text/plain", **sse)


def read_manifest(s3: Any, bucket: str, manifest_key: str) -> list[str]:
    """A manifest's entries (run_files.parse_manifest: blanks, comments and repeats dropped)."""
    return parse_manifest(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read().decode())


def write_attempt_file(s3: Any, paths: RunPaths, run_id: str, found: Candidates, ledger: Ledger,
                       sse: dict[str, str]) -> None:
    """Who made the attempt, the committed attempts it was selected against (the commit merges with
    what changed since) and the rows its commit retires."""
    record = {"dag_run_id": run_id, "created_at": datetime.now(UTC).isoformat(), "run_date": paths.run_date,
              "scope": found.scope, "taken": found.taken, "seen": ledger.attempts, "retire": found.retire}
    s3.put_object(Bucket=paths.bucket, Key=paths.attempt_file_key, Body=json_body(record),
                  ContentType="application/json", **sse)


# --- the candidates of a run ---------------------------------------------------------------------

def stale_rows(raw: Mapping[str, coverage.RawFile], ledger: Ledger, taken: Mapping[str, str],
               run_date: str) -> dict[str, dict[str, str]]:
    """{run date: {URI: ETag}} of the ledger's rows that no longer count: the image was deleted, or its
    current version is taken by this run or held by another date, or a second date holds the same
    version (the later date's row goes). Rows of run_date itself are replaced by the run's attempt."""
    stale: dict[str, dict[str, str]] = {}
    for uri, date, etag in ledger.rows():
        now = raw.get(uri)
        if date == run_date or etag is None:
            continue
        if now is None or (now[0] != etag and (uri in taken or ledger.holds(uri, now[0]))):
            stale.setdefault(date, {})[uri] = etag
    for uri in ledger.more:
        now = raw.get(uri)
        keepers = [date for date, etag in ledger.holders(uri) if now and etag == now[0] and date != run_date]
        for date in keepers[1:]:
            stale.setdefault(date, {})[uri] = now[0]
    return stale


def interval_images(
    config: RunConfig, raw: Mapping[str, coverage.RawFile], ledger: Ledger, start: datetime, end: datetime,
    run_date: str,
) -> Candidates:
    """The files of a scheduled or manual run (the raw prefix's files, coverage.raw_files, against
    the ledger): those not processed and stamped before `end`, the run date's own again, every image on
    full_refresh."""
    images: dict[str, str] = {}
    taken: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    own = ledger.date_versions(run_date)
    for uri, (etag, stamped, _) in sorted(raw.items()):
        if config.full_refresh:
            reason = EVERY_IMAGE
        elif ledger.holds(uri, etag, except_date=run_date):
            skipped[PROCESSED] += 1
            continue
        elif uri in own and own[uri] in (etag, None):
            reason = AGAIN
        elif stamped < start:
            reason = FROM_EARLIER_INTERVALS
        elif stamped < end:
            reason = IN_INTERVAL
        else:
            skipped[AFTER_INTERVAL] += 1
            continue
        images[uri] = etag
        taken[reason] += 1
    retire = {} if config.full_refresh else stale_rows(raw, ledger, images, run_date)
    scope = "all images (full refresh)" if config.full_refresh else (
        f"every image not processed yet stamped before {end} (interval [{start}, {end}))")
    sizes = {uri: raw[uri].size for uri in images}
    return Candidates(images, run_date, scope, dict(taken), dict(skipped), [], retire, sizes)


def event_images(s3: Any, config: RunConfig, bodies: Iterable[str], max_images: int, run_after: datetime,
                 ledger: Ledger | None = None) -> Candidates:
    """The files an event run processes: those its messages name under the raw prefix (photos and the
    rest), in their current version, that the ledger does not hold, at most max_images (oldest events first; the rest
    are returned to requeue)."""
    skipped: Counter[str] = Counter()
    raw = key_prefix(config.raw_prefix)
    newest: dict[str, events.ObjectCreated] = {}
    for record in (record for body in bodies for record in events.object_created(body)):
        if record.bucket != config.bucket or not record.key.startswith(raw) or not coverage.is_file_key(record.key):
            skipped["not a file under the raw prefix"] += 1
        elif record.uri in newest:
            skipped["named again in the batch"] += 1
            newest[record.uri] = max(newest[record.uri], record, key=lambda r: r.event_time)
        else:
            newest[record.uri] = record
    run_date = events.event_run_date(run_after)
    ordered = sorted(newest.values(), key=lambda r: (r.event_time, r.key))
    ledger = ledger if ledger is not None or not ordered else read_ledger(s3, config)
    images: dict[str, str] = {}
    sizes: dict[str, int] = {}
    requeue: list[events.ObjectCreated] = []
    for record in ordered:
        if len(images) >= max_images:
            requeue.append(record)
            continue
        version = current_version(s3, config.bucket, record.key)
        if version is None:
            skipped["deleted since"] += 1
        elif ledger is not None and ledger.holds(record.uri, version[0], except_date=run_date):
            skipped[PROCESSED] += 1
        else:
            images[record.uri], sizes[record.uri] = version
    taken = {NAMED: len(images)} if images else {}
    return Candidates(images, run_date, f"S3 events naming {len(newest)} files", taken, dict(skipped), requeue,
                      sizes=sizes)


# --- the task --------------------------------------------------------------------------------------

def find_new_images(
    s3: Any, config: RunConfig, data_interval_start: datetime | None, data_interval_end: datetime | None,
    run_after: datetime, event_batch: events.EventBatch | None = None, sqs: Any = None, run_id: str = "",
) -> RunSelection | None:
    """Write the manifest of the run's files (and their versions, images.json, and what the run saw,
    attempt.json) into a new attempt folder: those its S3 events name (event_batch: a run on the asset;
    the ones over its cap go back to the queue through `sqs`), else every file not processed yet
    stamped before the end of its interval. Photos by name are featurized or quarantined, the other
    files ignored and listed in the report. None when there is no photo (the rest of the run is
    skipped: no cluster for files that would all be ignored; the log names them); rows of deleted
    images are then retired at once."""
    start, end, run_date = run_window(data_interval_start, data_interval_end, run_after)
    ledger = read_ledger(s3, config)
    if event_batch is None:
        raw = coverage.raw_files(s3, config)
        before = coverage.measure(s3, config, raw, ledger)
        log.info("before this run, %s", before.summary())
        if before.lagging:
            commits.repair_date_pointers(s3, config, ledger.attempts, before.lagging)
        found = interval_images(config, raw, ledger, start, end, run_date)
    else:
        found = event_images(s3, config, event_batch.bodies, event_batch.max_images, run_after, ledger)
        if found.requeue:
            events.requeue(sqs, event_batch.queue_url, found.requeue)
    if found.skipped or found.requeue:
        log.info("left out: %s; sent back to the queue: %d", found.skipped, len(found.requeue))
    window = (start.isoformat(), end.isoformat()) if event_batch is None else None
    return start_attempt(s3, config, found, ledger, run_id, window)


def start_attempt(s3: Any, config: RunConfig, found: Candidates, ledger: Ledger, run_id: str,
                  window: tuple[str, str] | None = None) -> RunSelection | None:
    """Write a new attempt folder's manifest, images.json and attempt.json for the candidates (selected
    against `ledger`). None when they hold no photo; rows of deleted images are then retired at once."""
    photos = [uri for uri in found.images if has_image_extension(uri)]
    ignored = sorted(set(found.images) - set(photos))
    if not photos:
        if found.retire:
            commits.retire_rows(s3, config, found.retire, ledger.attempts, run_id)
        log.info("No images under s3://%s/%s with %s: no cluster.%s", config.bucket, key_prefix(config.raw_prefix),
                 found.scope, f" {len(ignored)} files that are not photos, not processed: {ignored[:20]}" if ignored else "")
        return None
    paths = run_paths(config, found.run_date, new_attempt_id(datetime.now(UTC)))
    sse = sse_arguments(config)
    write_manifest(s3, paths, sorted(found.images), sse)
    write_images(s3, paths, found.images, sse)
    write_attempt_file(s3, paths, run_id, found, ledger, sse)
    sizes = sorted(found.sizes[uri] for uri in photos if uri in found.sizes)
    median_bytes = sizes[len(sizes) // 2] if sizes else None
    log.info("%d files with %s -> %s: %d photos by name (median %s bytes), %d not photos (featurize lists them as"
             " ignored); taken: %s; %d files from earlier intervals; retiring %d rows of deleted or replaced images",
             len(found.images), found.scope, paths.manifest_uri, len(photos), median_bytes, len(ignored), found.taken,
             found.taken.get(FROM_EARLIER_INTERVALS, 0), sum(len(rows) for rows in found.retire.values()))
    return RunSelection(paths=paths, files=len(found.images), images=len(photos), scope=found.scope, window=window,
                        median_bytes=median_bytes, replaces=ledger.attempts.get(found.run_date), taken=found.taken)
