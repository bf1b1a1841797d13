"""Event-driven runs: S3 ObjectCreated notifications → SQS → the DAG's asset watcher (docs/events.md).

- `S3EventQueueTrigger` (the watcher) collects a burst of notifications into one asset event: it
  keeps receiving until the queue has been quiet for the debounce window or it holds max images.
- An event run's manifest is the images named by its asset events (`event_images`), at most
  `event_max_images`; the rest go back to the queue for the next run.
- Every run records the images it processes with their ETag (`images.json` in its attempt folder).
  An image version that another committed partition lists is skipped (`covered_images`), so a
  redelivered message, or the daily backstop after an event run, never makes a duplicate row.

Parse-time settings come from the environment (FRUITS_EVENTS_*), as the DAG's others do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
from airflow.triggers.base import TriggerEvent
from botocore.exceptions import ClientError

from fruits_emr.layout import COMMIT_FILE, RunPaths, is_file_key, partition_key
from fruits_emr.settings import RunConfig
from fruits_emr.storage import new_raw_files, read_commit, read_manifest
from spark_jobs.s3_uri import key_prefix, split_s3_uri

ASSET_NAME = "fruits_raw_images"
WATCHER_NAME = "fruits_raw_images_sqs"
QUEUE_ENV = "FRUITS_EVENTS_QUEUE_URL"  # set: the DAG also runs on S3 events from this queue
IMAGES_FILE = "images.json"  # in each attempt folder: {image URI: ETag} of the images it processes
EVENT_RUN_DATE = "%Y-%m-%dT%H%M%SZ"  # an event run's partition: run_date=2026-11-26T001530Z
# A partition older than (oldest candidate's day - 1) cannot hold a candidate's version: a day's
# run holds that day's uploads; a run without a data interval takes the day before it ran.
COVERAGE_SLACK = timedelta(days=1)
ASSET_TRIGGERED = "asset_triggered"


@dataclass(frozen=True)
class EventSettings:
    """The watcher's settings (FRUITS_EVENTS_*), fixed when the DAG is parsed."""

    queue_url: str
    debounce_seconds: int = 60
    max_images: int = 500
    poll_seconds: int = 10
    aws_conn_id: str = "aws_default"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], aws_conn_id: str = "aws_default") -> EventSettings | None:
        """None without FRUITS_EVENTS_QUEUE_URL (the DAG then runs on its daily schedule only)."""
        queue_url = environ.get(QUEUE_ENV, "").strip()
        if not queue_url:
            return None
        numbers = {}
        for name, default in (("debounce_seconds", cls.debounce_seconds), ("max_images", cls.max_images),
                              ("poll_seconds", cls.poll_seconds)):
            variable = f"FRUITS_EVENTS_{name.upper()}"
            raw = environ.get(variable, str(default))
            if not raw.strip().isdigit() or (name != "debounce_seconds" and int(raw) < 1):
                raise ValueError(f"{variable}={raw!r}: use a whole number of {name.split('_')[-1]}"
                                 f"{' (at least 1)' if name != 'debounce_seconds' else ''}, e.g. {default}.")
            numbers[name] = int(raw)
        return cls(queue_url=queue_url, aws_conn_id=aws_conn_id, **numbers)


def param_specs(settings: EventSettings | None) -> dict[str, dict[str, Any]]:
    """The Param of event runs (a default, so the manual trigger form accepts it as is)."""
    default = settings.max_images if settings else EventSettings.max_images
    return {
        "event_max_images": {
            "default": default,
            "type": "integer",
            "minimum": 1,
            "title": "event max images",
            "description": "Most images one S3-event run processes; the rest go back to the queue for the next"
                           " run. The burst window is the watcher's FRUITS_EVENTS_DEBOUNCE_SECONDS.",
        }
    }


# --- the watcher ---------------------------------------------------------------------------------

class _ThreadedSqs:
    """The two calls SqsSensorTrigger.poke makes, on a boto3 client in a worker thread: aiobotocore (the
    provider's async client) has no release for the pinned botocore 1.44."""

    def __init__(self, client: Any):
        self._client = client

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._client.receive_message, **kwargs)

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._client.delete_message_batch, **kwargs)


class S3EventQueueTrigger(SqsSensorTrigger):
    """SqsSensorTrigger (receive, then delete, each batch) that fires once per burst: after the
    first messages it keeps receiving until none came for `debounce_seconds`, or `max_images`
    messages are held. The event carries each message's body only, of messages naming new objects."""

    def __init__(self, *, debounce_seconds: int = 60, max_images: int = 500, **kwargs: Any):
        super().__init__(**kwargs)
        self.debounce_seconds = debounce_seconds
        self.max_images = max_images

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {**kwargs, "debounce_seconds": self.debounce_seconds, "max_images": self.max_images})

    async def run(self) -> AsyncIterator[Any]:
        client = _ThreadedSqs(await asyncio.to_thread(self.hook.get_conn))
        batch: list[dict[str, Any]] = []
        last_message = time.monotonic()
        while True:
            self.max_messages = min(10, self.max_images - len(batch))  # 10: the SQS maximum per receive
            received = await self.poke(client)
            # kept: messages naming new objects; dropped (deleted, never an event): S3's s3:TestEvent
            kept = [{"MessageId": m["MessageId"], "Body": m["Body"]} for m in received if object_created(m["Body"])]
            if kept:
                batch += kept
                last_message = time.monotonic()
            if batch and (len(batch) >= self.max_images or time.monotonic() - last_message >= self.debounce_seconds):
                self.log.info("%d messages after %.0f s without new ones: one asset event", len(batch),
                              time.monotonic() - last_message)
                yield TriggerEvent({"status": "success", "message_batch": batch})
                return
            if not received:
                await asyncio.sleep(1 if batch else self.waiter_delay)


def watcher_trigger(settings: EventSettings) -> S3EventQueueTrigger:
    return S3EventQueueTrigger(
        sqs_queue=settings.queue_url,
        aws_conn_id=settings.aws_conn_id,
        wait_time_seconds=min(settings.poll_seconds, 20),  # long polling; 20 s is the SQS maximum
        waiter_delay=settings.poll_seconds,
        debounce_seconds=settings.debounce_seconds,
        max_images=settings.max_images,
    )


def asset(settings: EventSettings) -> Any:
    """The asset the DAG is scheduled on (besides its daily timetable), updated by the watcher."""
    from airflow.sdk import Asset, AssetWatcher

    return Asset(name=ASSET_NAME, watchers=[AssetWatcher(name=WATCHER_NAME, trigger=watcher_trigger(settings))])


# --- what the notifications name ---------------------------------------------------------------

@dataclass(frozen=True)
class ObjectCreated:
    """One S3 ObjectCreated record."""

    bucket: str
    key: str
    etag: str
    event_time: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def object_created(body: str) -> list[ObjectCreated]:
    """The ObjectCreated records of one message body; test events and other messages hold none."""
    try:
        records = json.loads(body).get("Records") or []
    except (ValueError, AttributeError):
        return []
    found = []
    for record in records:
        if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        found.append(ObjectCreated(
            bucket=(s3.get("bucket") or {}).get("name", ""),
            key=unquote_plus((s3.get("object") or {}).get("key", "")),  # keys arrive URL-encoded
            etag=str((s3.get("object") or {}).get("eTag", "")).strip('"'),
            event_time=str(record.get("eventTime", "")),
        ))
    return found


def message_bodies(triggering_asset_events: Mapping[Any, Iterable[Any]] | None) -> list[str]:
    """Message bodies the watcher put into a run's asset events (extra.payload.message_batch)."""
    bodies = []
    for event in (event for batch in (triggering_asset_events or {}).values() for event in batch):
        payload = (getattr(event, "extra", None) or {}).get("payload") or {}
        bodies += [message.get("Body", "") for message in payload.get("message_batch") or []]
    return bodies


def is_event_run(dag_run: Any) -> bool:
    return str(getattr(dag_run, "run_type", "")).removeprefix("DagRunType.").lower() == ASSET_TRIGGERED


def event_run_date(run_after: datetime) -> str:
    """An event run's partition name: its time, so it sorts after its day's daily partition."""
    return run_after.astimezone(UTC).strftime(EVENT_RUN_DATE)


# --- what committed runs already processed -------------------------------------------------------

def images_key(paths: RunPaths) -> str:
    return f"{paths.attempt_key}{IMAGES_FILE}"


def write_images(s3: Any, paths: RunPaths, versions: Mapping[str, str], sse: dict[str, str]) -> None:
    """Record the image versions of the attempt; they count as processed once it is committed."""
    body = (json.dumps(dict(sorted(versions.items())), indent=0) + "\n").encode()
    s3.put_object(Bucket=paths.bucket, Key=images_key(paths), Body=body, ContentType="application/json", **sse)


def covered_images(s3: Any, config: RunConfig, since: datetime, own_run_date: str) -> dict[str, set[str | None]]:
    """{image URI: ETags} of the committed partitions from (since's day - 1) on, except own_run_date
    (a re-run of a date replaces its own commit). None: a partition committed before images.json
    existed, which names its images but not their versions."""
    root = f"{key_prefix(config.output_prefix)}run_date="
    first = (since - COVERAGE_SLACK).date().isoformat()
    covered: dict[str, set[str | None]] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=config.bucket, Prefix=root, Delimiter="/", StartAfter=f"{root}{first}")
    for page in pages:
        for folder in page.get("CommonPrefixes", []):
            run_date = folder["Prefix"][len(root):].rstrip("/")
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
        if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
    paths = RunPaths(bucket=bucket, run_date="", attempt="", partition_key="", attempts_key="", attempt_key=attempt_key,
                     manifest_key=f"{attempt_key}manifest.txt", report_key="", commit_key="", log_uri="")
    return dict.fromkeys(read_manifest(s3, paths))


def is_covered(uri: str, etag: str, covered: Mapping[str, set[str | None]]) -> bool:
    versions = covered.get(uri, set())
    return None in versions or etag in versions


# --- the images of a run -----------------------------------------------------------------------

@dataclass(frozen=True)
class EventBatch:
    """What an asset-triggered run consumed: its messages' bodies, its cap on images, and how to send
    back the records over the cap."""

    bodies: list[str]
    max_images: int
    requeue: Callable[[list[ObjectCreated]], None]


@dataclass
class Selection:
    """The files a run processes ({URI: ETag}: its photos and the files featurize ignores and lists),
    their sizes where known, its partition, and what it left out and why."""

    images: dict[str, str]
    run_date: str
    scope: str
    skipped: dict[str, int]
    requeue: list[ObjectCreated]
    sizes: dict[str, int] = field(default_factory=dict)


def current_version(s3: Any, bucket: str, key: str) -> tuple[str, int] | None:
    """The object's (ETag, bytes) now, or None when it was deleted since its notification. A listing,
    not a HEAD: Airflow's policy lists raw/ but does not read it (iam/airflow-policy.json)."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents") or []
    if listed and listed[0]["Key"] == key:  # the key itself sorts first among keys it prefixes
        return str(listed[0]["ETag"]).strip('"'), int(listed[0].get("Size", 0))
    return None


def event_images(s3: Any, config: RunConfig, bodies: Iterable[str], max_images: int, run_after: datetime) -> Selection:
    """The files an event run processes: those its messages name under the raw prefix (photos and
    the rest), in their current version, not covered by a committed partition, at most max_images
    (oldest events first; the rest are returned to requeue)."""
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    raw = key_prefix(config.raw_prefix)
    newest: dict[str, ObjectCreated] = {}
    for record in (record for body in bodies for record in object_created(body)):
        if record.bucket != config.bucket or not record.key.startswith(raw) or not is_file_key(record.key):
            skip("not a file under the raw prefix")
        elif record.uri in newest:
            skip("named again in the batch")
            newest[record.uri] = max(newest[record.uri], record, key=lambda r: r.event_time)
        else:
            newest[record.uri] = record
    run_date = event_run_date(run_after)
    ordered = sorted(newest.values(), key=lambda r: (r.event_time, r.key))
    oldest = min((_parse_time(r.event_time) for r in ordered), default=run_after)
    covered = covered_images(s3, config, oldest, run_date) if ordered else {}
    images: dict[str, str] = {}
    sizes: dict[str, int] = {}
    requeue: list[ObjectCreated] = []
    for record in ordered:
        if len(images) >= max_images:
            requeue.append(record)
            continue
        version = current_version(s3, config.bucket, record.key)
        if version is None:
            skip("deleted since")
        elif is_covered(record.uri, version[0], covered):
            skip("already processed by a committed run")
        else:
            images[record.uri], sizes[record.uri] = version
    scope = f"S3 events naming {len(newest)} files"
    return Selection(images, run_date, scope, skipped, requeue, sizes)


def interval_images(s3: Any, config: RunConfig, start: datetime, end: datetime, run_date: str) -> Selection:
    """The files of a scheduled or manual run: LastModified in [start, end) (all with full_refresh),
    less those another committed partition processed in that version (none left out on full_refresh)."""
    found = new_raw_files(s3, config, start, end)
    versions = {uri: etag for uri, (etag, _) in found.items()}
    sizes = {uri: size for uri, (_, size) in found.items()}
    if config.full_refresh:
        return Selection(versions, run_date, "all files (full refresh)", {}, [], sizes)
    covered = covered_images(s3, config, start, run_date) if versions else {}
    images = {uri: etag for uri, etag in versions.items() if not is_covered(uri, etag, covered)}
    skipped = {"already processed by a committed run": len(versions) - len(images)} if len(images) < len(versions) else {}
    return Selection(images, run_date, f"LastModified in [{start}, {end})", skipped, [], sizes)


def requeue(sqs: Any, queue_url: str, records: list[ObjectCreated]) -> None:
    """Send records back to the queue as S3 notifications, for the next event run."""
    for first in range(0, len(records), 10):  # SendMessageBatch takes 10
        entries = [
            {"Id": str(index), "MessageBody": json.dumps({"Records": [{
                "eventSource": "aws:s3", "eventName": "ObjectCreated:Requeued", "eventTime": record.event_time,
                "s3": {"bucket": {"name": record.bucket}, "object": {"key": quote_plus(record.key), "eTag": record.etag}},
            }]})}
            for index, record in enumerate(records[first:first + 10])
        ]
        failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed") or []
        if failed:
            raise RuntimeError(f"SQS refused {len(failed)} requeued messages ({failed[0]}); the daily run will take them.")


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
