"""The plugin's S3 object calls, on a boto3 S3 client (the DAG passes the one of its AWS connection,
tests one pointed at moto): existence, listing, JSON objects, batched deletes, and the error for
run outputs that are missing or contradict the run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

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


def read_json_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """A JSON object's content, or None when there is no such object."""
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    return json.loads(body)


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
