"""One-shot setup of the compose stack's S3 server: create the bucket and upload the bundled
sample images (data/sample/<label>/<file>, mounted at SAMPLE_DIR) to s3://$FRUITS_BUCKET/raw/;
then create the SQS queue of event-driven runs on the same moto server and give the bucket the
notification configuration of iam/s3-notification.json (mounted at NOTIFICATION_FILE), so new
uploads to raw/ start runs (docs/events.md). The sample itself is uploaded before, so it starts none.
Safe to re-run: the bucket is kept and the same keys are overwritten with the same bytes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import boto3

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MOTO_ACCOUNT = "123456789012"  # moto's default account, in the queue's ARN and URL


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
    notify_queue(s3, bucket, endpoint)
    return 0


def notify_queue(s3, bucket: str, endpoint: str) -> None:
    """The queue named in iam/s3-notification.json, and that configuration on the bucket."""
    region = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    template = Path(os.environ.get("NOTIFICATION_FILE") or Path(__file__).resolve().parents[1] / "iam"
                    / "s3-notification.json").read_text()
    configuration = json.loads(template.replace("<region>", region).replace("<account>", MOTO_ACCOUNT))
    queue_name = configuration["QueueConfigurations"][0]["QueueArn"].rsplit(":", 1)[1]
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=region)
    queue_url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=configuration)
    print(f"s3-init: new objects under raw/ notify {queue_url}")


if __name__ == "__main__":
    sys.exit(main())
