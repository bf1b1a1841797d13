"""One-shot setup of the compose stack's S3 server: create the bucket and upload the bundled
sample images (data/sample/<label>/<file>, mounted at SAMPLE_DIR) to s3://$FRUITS_BUCKET/raw/.
Safe to re-run: the bucket is kept and the same keys are overwritten with the same bytes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import boto3

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def main() -> int:
    endpoint, bucket = os.environ["FRUITS_S3_ENDPOINT"], os.environ["FRUITS_BUCKET"]
    sample = Path(os.environ.get("SAMPLE_DIR", "/sample"))
    images = sorted(p for p in sample.glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        print(f"s3-init: no images under {sample}; is ./data/sample mounted and populated?", file=sys.stderr)
        return 1
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    for image in images:
        s3.upload_file(str(image), bucket, f"raw/{image.parent.name}/{image.name}")
    print(f"s3-init: uploaded {len(images)} sample images to s3://{bucket}/raw/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
