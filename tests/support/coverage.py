"""What readers of the bucket see, against what landed: the invariant of the fault tests (issue 26):
the committed features and quarantine rows name every image under the raw prefix, each once."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from spark_jobs.contract.model_choices import has_image_extension


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    return [obj["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])]


def raw_images(s3, bucket: str, raw_prefix: str = "raw/") -> list[str]:
    """S3 URIs of the images under the raw prefix (the pipeline's image extensions)."""
    return sorted(f"s3://{bucket}/{key}" for key in _keys(s3, bucket, raw_prefix) if has_image_extension(key))


def committed_rows(s3, bucket: str, output_prefix: str = "features/") -> list[str]:
    """The image URI of every features and quarantine row of every committed run date (as readers
    find them: from each run_date=*/_COMMITTED.json), one entry per row, sorted."""
    import pyarrow.parquet as pq

    rows: list[str] = []
    pointers = [key for key in _keys(s3, bucket, f"{output_prefix}run_date=") if key.endswith("/_COMMITTED.json")]
    with tempfile.TemporaryDirectory() as folder:
        for pointer_key in pointers:
            output = json.loads(s3.get_object(Bucket=bucket, Key=pointer_key)["Body"].read())["output"]
            attempt = output.removeprefix(f"s3://{bucket}/").rstrip("/")
            for part in ("features", "quarantine"):
                for key in _keys(s3, bucket, f"{attempt}/{part}/"):
                    if key.endswith(".parquet"):
                        local = Path(folder) / f"{len(list(Path(folder).iterdir()))}.parquet"
                        s3.download_file(bucket, key, str(local))
                        rows += [str(row["path"]) for row in pq.read_table(local, columns=["path"]).to_pylist()]
    return sorted(rows)
