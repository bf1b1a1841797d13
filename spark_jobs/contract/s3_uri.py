"""S3 addressing shared by the Spark jobs and the DAG's plugin (plugins/fruits_emr): key prefixes,
s3:// URIs, and what S3 answers for a missing object or bucket.

Pure Python (no Spark, no boto3), so the Airflow worker imports it as well as the jobs.
"""

from __future__ import annotations

S3_SCHEMES = ("s3", "s3a", "s3n")  # three connectors, one bucket namespace
# Error codes of a missing object or bucket: GetObject says NoSuchKey, HeadObject and HeadBucket
# have no body and say 404 (botocore: "404" or "NotFound"), other bucket calls say NoSuchBucket.
NOT_FOUND_CODES = frozenset({"404", "NotFound", "NoSuchKey", "NoSuchBucket"})


def key_prefix(value: str) -> str:
    """A key prefix with no leading slash and one trailing slash ('' stays the bucket root)."""
    value = value.strip("/")
    return f"{value}/" if value else ""


def is_s3_uri(uri: str) -> bool:
    scheme, separator, _ = uri.partition("://")
    return bool(separator) and scheme.lower() in S3_SCHEMES


def split_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of s3://bucket/key (s3a:// and s3n:// too); the key may be empty."""
    if not is_s3_uri(uri):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri.partition("://")[2].partition("/")
    return bucket, key


def is_not_found(error: BaseException) -> bool:
    """True when a botocore ClientError says the object or bucket does not exist."""
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in NOT_FOUND_CODES
