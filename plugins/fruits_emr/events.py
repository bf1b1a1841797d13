"""Event-driven runs: S3 ObjectCreated notifications → SQS → the DAG's asset watcher (docs/events.md).

- `S3EventQueueTrigger` (the watcher) collects a burst of notifications into one asset event: it
  keeps receiving until the queue has been quiet for the debounce window or it holds max images.
- An event run's manifest is the images named by its asset events (selection.event_images), at most
  `event_max_images`; the rest go back to the queue for the next run (`requeue`).

Parse-time settings come from the environment (FRUITS_EVENTS_*), as the DAG's others do.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from airflow.providers.amazon.aws.triggers.sqs import SqsSensorTrigger
from airflow.triggers.base import TriggerEvent

ASSET_NAME = "fruits_raw_images"
WATCHER_NAME = "fruits_raw_images_sqs"
QUEUE_ENV = "FRUITS_EVENTS_QUEUE_URL"  # set: the DAG also runs on S3 events from this queue
EVENT_RUN_DATE = "%Y-%m-%dT%H%M%SZ"  # an event run's partition: run_date=2026-11-26T001530Z
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


# --- an event run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventBatch:
    """What an asset-triggered run consumed: its messages' bodies, its cap on images, and the queue
    that takes back the records over the cap."""

    bodies: list[str]
    max_images: int
    queue_url: str


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
