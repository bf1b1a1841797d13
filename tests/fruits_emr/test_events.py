"""Event-driven runs (plugins/fruits_emr/events.py) against moto: S3 delivers ObjectCreated
notifications of real images to SQS, the watcher's trigger batches a burst into one event, and a
run's images leave out what committed runs already processed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from fruits_emr import commits, coverage, events, iam, layout, ledger, selection
from fruits_emr.settings import RunConfig
from tests.support import ACCOUNT, LABELS, REGION, SAMPLE
from tests.support.pipeline import commit_candidates

BUCKET = "fruits-data"
QUEUE = "fruits-raw-images"


@pytest.fixture
def sqs(moto):
    import boto3

    from tests.support.moto import certificate_of

    return boto3.client("sqs", endpoint_url=moto, region_name=REGION, verify=certificate_of(moto))


@pytest.fixture
def queue_url(s3, sqs):
    """The bucket, the queue, and the bucket's notification configuration of iam/s3-notification.json."""
    s3.create_bucket(Bucket=BUCKET)
    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE}"
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration=iam.notification_configuration(arn))
    return url  # holding S3's s3:TestEvent


def config(**overrides) -> RunConfig:
    return RunConfig(bucket=BUCKET, **overrides)


def drain(sqs, url: str) -> list[str]:
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [m["Body"] for m in messages]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]}
                                                        for m in messages])
    return bodies


def upload(s3, per_label: int, offset: int = 0, name=lambda source: source.name) -> list[str]:
    """Real images of each fruit to raw/<label>/; returns their URIs."""
    uris = []
    for label in LABELS:
        for source in sorted((SAMPLE / label).iterdir())[offset:offset + per_label]:
            key = f"raw/{label}/{name(source)}"
            s3.upload_file(str(source), BUCKET, key)
            uris.append(f"s3://{BUCKET}/{key}")
    return sorted(uris)


def commit(s3, found: selection.Candidates) -> layout.RunPaths:
    """Commit the candidates as a run does (the stand-in jobs, validation, commit_outputs)."""
    return commit_candidates(s3, config(), found).selection.paths


def test_s3_notifications_name_the_raw_images_only(s3, sqs, queue_url):
    uploaded = upload(s3, 1, name=lambda source: f"a b+{source.name}")  # keys arrive URL-encoded
    s3.put_object(Bucket=BUCKET, Key="features/x.jpg", Body=b"x")  # outside the notification's prefix
    bodies = drain(sqs, queue_url)
    records = [record for body in bodies for record in events.object_created(body)]

    assert sorted(record.uri for record in records) == uploaded
    heads = {f"s3://{BUCKET}/{key}": s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
             for key in (uri.removeprefix(f"s3://{BUCKET}/") for uri in uploaded)}
    assert {record.uri: record.etag for record in records} == heads
    assert events.object_created(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []


def test_trigger_makes_one_event_of_a_burst(s3, sqs, queue_url):
    trigger = events.watcher_trigger(events.EventSettings(queue_url=queue_url, debounce_seconds=3, poll_seconds=1))

    async def first_event(after_start):
        runner = trigger.run()
        task = asyncio.ensure_future(runner.__anext__())
        await after_start()
        event = await asyncio.wait_for(task, timeout=120)
        await runner.aclose()
        return event

    async def burst():  # two uploads one second apart: within the debounce window
        await asyncio.to_thread(upload, s3, 2, 0)
        await asyncio.sleep(1)
        await asyncio.to_thread(upload, s3, 1, 2)

    event = asyncio.run(first_event(burst))
    bodies = [message["Body"] for message in event.payload["message_batch"]]
    named = sorted(record.uri for body in bodies for record in events.object_created(body))

    assert len(named) == 3 * len(LABELS) and len(set(named)) == len(named)
    assert len(bodies) == len(named)  # S3's s3:TestEvent was dropped
    assert drain(sqs, queue_url) == []  # received messages are deleted
    # the event survives the trip through the metadata DB's JSON column
    assert json.loads(json.dumps(event.payload)) == event.payload
    name, kwargs = trigger.serialize()
    assert name == "fruits_emr.events.S3EventQueueTrigger" and kwargs["debounce_seconds"] == 3


def test_trigger_stops_collecting_at_max_images(s3, sqs, queue_url):
    upload(s3, 3)  # 12 messages
    trigger = events.watcher_trigger(
        events.EventSettings(queue_url=queue_url, debounce_seconds=60, max_images=5, poll_seconds=1))

    async def first_event():
        runner = trigger.run()
        event = await asyncio.wait_for(runner.__anext__(), timeout=60)
        await runner.aclose()
        return event

    event = asyncio.run(first_event())
    assert len(event.payload["message_batch"]) == 5  # long before the 60 s debounce
    assert len(drain(sqs, queue_url)) == 12 - 5  # the rest waits for the next event


class AssetEvent:
    def __init__(self, bodies):
        self.extra = {"from_trigger": True, "payload": {"status": "success", "message_batch": [
            {"MessageId": str(i), "Body": body} for i, body in enumerate(bodies)]}}


def test_redelivered_messages_are_a_no_op_once_committed(s3, sqs, queue_url):
    uploaded = upload(s3, 2)
    bodies = drain(sqs, queue_url)
    run_after = datetime.now(UTC)
    # at least once: the same messages twice, in two asset events
    delivered = events.message_bodies({"fruits_raw_images": [AssetEvent(bodies), AssetEvent(bodies)]})

    first = selection.event_images(s3, config(), delivered, 100, run_after)
    assert sorted(first.images) == uploaded
    assert first.skipped == {"named again in the batch": len(uploaded)}
    assert first.run_date == run_after.strftime("%Y-%m-%dT%H%M%SZ")
    commit(s3, first)

    again = selection.event_images(s3, config(), bodies, 100, run_after + timedelta(minutes=5))
    assert again.images == {}
    assert again.skipped == {"already processed by a committed run": len(uploaded)}


def test_a_new_version_of_a_processed_image_is_processed_again(s3, sqs, queue_url):
    upload(s3, 1)
    first = selection.event_images(s3, config(), drain(sqs, queue_url), 100, datetime.now(UTC))
    commit(s3, first)
    apple = sorted(first.images)[0]
    key = apple.removeprefix(f"s3://{BUCKET}/")
    other = sorted((SAMPLE / "lemon").iterdir())[5]
    s3.upload_file(str(other), BUCKET, key)  # same name, other photo

    later = selection.event_images(s3, config(), drain(sqs, queue_url), 100,
                                datetime.now(UTC) + timedelta(seconds=1))
    assert later.images == {apple: s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')}
    assert later.images[apple] != first.images[apple]


def test_deleted_images_are_left_out(s3, sqs, queue_url):
    uploaded = upload(s3, 1)
    s3.delete_object(Bucket=BUCKET, Key=uploaded[0].removeprefix(f"s3://{BUCKET}/"))
    found = selection.event_images(s3, config(), drain(sqs, queue_url), 100, datetime.now(UTC))
    assert sorted(found.images) == uploaded[1:]
    assert found.skipped == {"deleted since": 1}


def test_images_past_max_go_back_to_the_queue(s3, sqs, queue_url):
    uploaded = upload(s3, 2)
    found = selection.event_images(s3, config(), drain(sqs, queue_url), 3, datetime.now(UTC))
    assert len(found.images) == 3 and len(found.requeue) == len(uploaded) - 3

    events.requeue(sqs, queue_url, found.requeue)
    rest = selection.event_images(s3, config(), drain(sqs, queue_url), 100, datetime.now(UTC))
    assert sorted([*found.images, *rest.images]) == uploaded


def test_daily_backstop_takes_only_what_event_runs_missed(s3, sqs, queue_url):
    """Images of the day processed by an event run are left out of the daily run; the event
    partition and the daily commit of the same day are separate objects, neither replaces the other."""
    uploaded = upload(s3, 2)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    bodies = drain(sqs, queue_url)
    caught = selection.event_images(s3, config(), bodies[: len(bodies) // 2], 100, datetime.now(UTC))
    event_paths = commit(s3, caught)
    run_date = day.date().isoformat()

    def daily_images(**overrides):
        return selection.interval_images(config(**overrides), coverage.raw_files(s3, config()),
                                         ledger.read_ledger(s3, config()), day, day + timedelta(days=1), run_date)

    daily = daily_images()
    assert sorted(daily.images) == sorted(set(uploaded) - set(caught.images))
    assert daily.skipped == {"already processed by a committed run": len(caught.images)}
    daily_paths = commit(s3, daily)

    committed = commits.committed_features(s3, config())
    assert set(committed) == {run_date, caught.run_date}
    assert commits.read_commit(s3, BUCKET, event_paths.commit_key)["attempt"] == event_paths.attempt
    assert commits.read_commit(s3, BUCKET, daily_paths.commit_key)["attempt"] == daily_paths.attempt
    # a re-run of the day replaces its own commit: its own partition does not count as processed
    rerun = daily_images()
    assert rerun.images == daily.images
    assert rerun.taken == {selection.AGAIN: len(daily.images)}
    # full refresh takes everything
    assert sorted(daily_images(full_refresh=True).images) == uploaded


def test_partitions_committed_before_images_json_count_by_name(s3, sqs, queue_url):
    upload(s3, 1)
    found = selection.event_images(s3, config(), drain(sqs, queue_url), 100, datetime.now(UTC))
    paths = commit(s3, found)
    s3.delete_object(Bucket=BUCKET, Key=paths.images_key)  # as an attempt made before images.json existed
    held = ledger.read_ledger(s3, config())
    assert held.date_versions(found.run_date) == dict.fromkeys(found.images)  # by name: any version counts
    assert all(held.holds(uri, "another-etag") for uri in found.images)


def test_settings_from_the_environment():
    assert events.EventSettings.from_environ({}) is None
    settings = events.EventSettings.from_environ(
        {events.QUEUE_ENV: "https://sqs.us-east-1.amazonaws.com/1/q", "FRUITS_EVENTS_DEBOUNCE_SECONDS": "0"})
    assert settings.debounce_seconds == 0 and settings.max_images == 500
    with pytest.raises(ValueError, match="FRUITS_EVENTS_MAX_IMAGES='0'"):
        events.EventSettings.from_environ({events.QUEUE_ENV: "q", "FRUITS_EVENTS_MAX_IMAGES": "0"})


def test_dag_runs_on_the_asset_and_daily_with_a_queue(tmp_path):
    """With FRUITS_EVENTS_QUEUE_URL the DAG is scheduled on the watched asset or its daily timetable,
    and serializes as the dag-processor stores it; without, on the daily timetable alone."""
    import os
    import subprocess
    import sys
    import textwrap

    from tests.support.airflow import DAGS

    probe = textwrap.dedent(f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        from airflow.serialization.serialized_objects import DagSerialization
        dag = DagBag(dag_folder={str(DAGS)!r}).dags["fruits_features"]
        stored = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
        condition = getattr(dag.timetable, "asset_condition", None)
        print(json.dumps({{"timetable": type(stored).__name__,
                          "watchers": [w.trigger.serialize() for w in condition.watchers] if condition else []}}))
    """)
    outputs = {}
    for queue in ("https://sqs.us-east-1.amazonaws.com/123456789012/fruits-raw-images", ""):
        env = {**os.environ, events.QUEUE_ENV: queue}
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[bool(queue)] = json.loads(done.stdout.strip().splitlines()[-1])
    assert outputs[True]["timetable"] == "AssetOrTimeSchedule"
    [(classpath, kwargs)] = outputs[True]["watchers"]
    assert classpath == "fruits_emr.events.S3EventQueueTrigger" and kwargs["sqs_queue"].endswith("/fruits-raw-images")
    assert outputs[False] == {"timetable": "CronDataIntervalTimetable", "watchers": []}
