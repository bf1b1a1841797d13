"""The plugin's S3 object calls, on a boto3 S3 client (the DAG passes the one of its AWS connection,
tests one pointed at moto): existence, listing, JSON objects (also read with their ETag and replaced
only if unchanged: S3 conditional writes), reads of many small objects at once, batched deletes, and
the error for run outputs that are missing or contradict the run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from spark_jobs.contract.s3_uri import is_not_found


class RunOutputError(RuntimeError):
    """A run's outputs in S3 are missing, do not reconcile, or another run changed what it planned on."""


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


def list_objects(s3: Any, bucket: str, key_prefix: str, start_after: str = "") -> Iterator[dict[str, Any]]:
    """Every object under the prefix (ListObjectsV2 pages), in key order."""
    extra = {"StartAfter": start_after} if start_after else {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix, **extra):
        yield from page.get("Contents", [])


def list_folders(s3: Any, bucket: str, key_prefix: str, start_after: str = "") -> Iterator[str]:
    """The names of the 'folders' right under the prefix (common prefixes, without the prefix and '/')."""
    extra = {"StartAfter": start_after} if start_after else {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix, Delimiter="/", **extra)
    for page in pages:
        for folder in page.get("CommonPrefixes", []):
            yield folder["Prefix"][len(key_prefix):].rstrip("/")


def current_version(s3: Any, bucket: str, key: str) -> tuple[str, int] | None:
    """The object's (ETag, bytes) now, or None when there is none. A one-key listing, not a HEAD:
    Airflow's policy lists raw/ but does not read it (iam/airflow-policy.json)."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("Contents") or []
    if listed and listed[0]["Key"] == key:  # the key itself sorts first among keys it prefixes
        return str(listed[0]["ETag"]).strip('"'), int(listed[0].get("Size", 0))
    return None


def current_etag(s3: Any, bucket: str, key: str) -> str | None:
    """The object's ETag now, or None when there is none (current_version)."""
    version = current_version(s3, bucket, key)
    return None if version is None else version[0]


def read_json_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """A JSON object's content, or None when there is no such object."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return json.loads(body)


def read_json_with_etag(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """(content, ETag) of a JSON object, or (None, None) when there is none: the ETag is what a
    conditional write names to replace exactly this version."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None, None
        raise
    return json.loads(response["Body"].read()), str(response["ETag"])


# S3's answers to a conditional PutObject whose condition does not hold: 412 (If-Match: another write
# came first; If-None-Match: the object exists), 409 (a concurrent conditional write of the same key
# is in progress), 404 (If-Match on an object deleted since)
CONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404", "409", "412")


def put_json_if_unchanged(
    s3: Any, bucket: str, key: str, record: Any, etag: str | None, sse: dict[str, str]
) -> bool:
    """Write the JSON object only if it is still the version read (If-Match: etag), or, with etag None,
    only if it does not exist yet (If-None-Match: "*"). False when another writer came first: re-read."""
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=json_body(record), ContentType="application/json",
                      **condition, **sse)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in CONDITION_FAILED:
            return False
        raise
    return True


Item = TypeVar("Item")
Result = TypeVar("Result")
PARALLEL_READS = 10  # small objects read at once: botocore keeps 10 connections per client


def read_many(read: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """read(item) for each item, PARALLEL_READS at a time (boto3 clients are thread-safe), in order."""
    items = list(items)
    if len(items) <= 1:
        return [read(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(PARALLEL_READS, len(items))) as pool:
        return list(pool.map(read, items))


def json_body(record: Any) -> bytes:
    """How the plugin writes a JSON object: sorted keys, indented, one trailing newline."""
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def delete_keys(s3: Any, bucket: str, keys: list[str], what: str) -> None:
    """DeleteObjects in batches of 1,000; any key S3 refused to delete is an error naming the fix."""
    for first in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[first:first + 1000]]
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        # DeleteObjects answers 200 even when it deleted nothing
        errors = response.get("Errors") or []
        if errors:
            first_error = errors[0]
            raise RunOutputError(
                f"Could not delete {what}: {len(errors)} objects not deleted"
                f" (first: {first_error.get('Key')}: {first_error.get('Code')} {first_error.get('Message')})."
                " Give the aws_default identity s3:DeleteObject on the output prefix (iam/airflow-policy.json)."
            )
