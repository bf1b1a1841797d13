"""Least-privilege IAM documents of the pipeline, rendered from the run configuration's bucket and prefixes.

- airflow_policy: the identity of the Airflow connection aws_default (S3 staging/manifest/report,
  the EMR calls of the DAG's operators, iam:PassRole on the two EMR roles only).
- instance_profile_policy: the cluster nodes (read raw images and staged code/models, write outputs and logs).
- bucket_policy: the bucket refuses plain-HTTP access, uploads that ask for an unknown encryption, and
  uploads to the pipeline's prefixes that ask for none.
- queue_policy / notification_configuration: S3 sends ObjectCreated notifications of the raw prefix to
  the SQS queue the DAG's asset watcher reads (event-driven runs, docs/events.md).

iam/*.json in the repo are these documents rendered with the placeholders <bucket> and <account>:
`python -m fruits_emr.iam --bucket acme-fruits --account 123456789012 airflow`
prints the one for your account.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fruits_emr.settings import RunConfig
from spark_jobs.contract.s3_uri import key_prefix

VERSION = "2012-10-17"

# Every EMR API the DAG calls, with the caller (tests/security checks the list against the code).
EMR_ACTIONS = {
    "RunJobFlow": "EmrCreateJobFlowOperator (EmrHook.create_job_flow)",
    "AddTags": "RunJobFlow with Tags (tag-on-create is authorized as AddTags)",
    "DescribeCluster": "operator links (get_log_uri), EmrStepSensorWithLogs, validate_outputs, teardown",
    "AddJobFlowSteps": "EmrAddStepsOperator",
    "DescribeStep": "EmrStepSensor / step_complete waiter",
    "ListClusters": "EmrTerminateRunClusters (clusters of earlier attempts of the run)",
    "TerminateJobFlows": "EmrTerminateRunClusters / EmrTerminateJobFlowOperator",
    "DescribeSecurityConfiguration": "resolve_config checks Param security_configuration exists",
    # RunJobFlow with an AutoTerminationPolicy (idle_timeout_minutes) is authorized as these too
    "PutAutoTerminationPolicy": "RunJobFlow with AutoTerminationPolicy",
    "GetAutoTerminationPolicy": "RunJobFlow with AutoTerminationPolicy",
    "RemoveAutoTerminationPolicy": "RunJobFlow with AutoTerminationPolicy",
}
# Authorized as part of RunJobFlow, not called by the DAG itself (the static call check skips them).
IMPLIED_BY_RUN_JOB_FLOW = ("AddTags", "PutAutoTerminationPolicy", "GetAutoTerminationPolicy", "RemoveAutoTerminationPolicy")
PLACEHOLDER_KMS_KEY = "arn:aws:kms:<region>:<account>:key/<key-id>"


def kms_statement(kms_key_arn: str | None) -> list[dict[str, Any]]:
    """With SSE-KMS (Param kms_key_id), writers need GenerateDataKey and readers Decrypt on that key only."""
    if not kms_key_arn:
        return []
    return [
        {
            "Sid": "UseTheOutputKmsKeyOnly",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": [kms_key_arn],
        }
    ]


def queue_statement(queue_arn: str | None) -> list[dict[str, Any]]:
    """The watcher receives and deletes (DeleteMessageBatch); an event run sends back what it left
    for the next run (SendMessageBatch). S3 itself is allowed to send by the queue's own policy."""
    if not queue_arn:
        return []
    return [
        {
            "Sid": "ConsumeTheS3EventsQueue",
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"],
            "Resource": [queue_arn],
        }
    ]


def _objects(bucket: str, *prefixes: str) -> list[str]:
    return [f"arn:aws:s3:::{bucket}/{key_prefix(p)}*" for p in dict.fromkeys(prefixes)]


def airflow_policy(
    bucket: str, account: str, config: RunConfig | None = None, local_compute: bool = False,
    kms_key_arn: str | None = None, queue_arn: str | None = None,
) -> dict[str, Any]:
    """Identity policy of aws_default. local_compute: the worker also reads raw images (FRUITS_COMPUTE_MODE=local);
    kms_key_arn: the SSE-KMS key of the outputs (none with SSE-S3); queue_arn: the S3-events queue (none
    without event-driven runs)."""
    config = config or RunConfig()
    artifacts, output, raw = config.artifacts_prefix, config.output_prefix, config.raw_prefix
    readable = (artifacts, output, raw) if local_compute else (artifacts, output)
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ListAndHeadTheBucket",  # ListObjectsV2 of raw/ and the partition; HeadBucket
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Sid": "ReadStagedArtifactsManifestAndReport",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _objects(bucket, *readable),
            },
            {
                "Sid": "StageArtifactsAndWriteTheRunPartition",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": _objects(bucket, artifacts, output),
            },
            {
                "Sid": "DeleteAttemptsNoLongerCommitted",
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": _objects(bucket, output),
            },
            {
                "Sid": "TransientEmrCluster",
                "Effect": "Allow",
                "Action": [f"elasticmapreduce:{action}" for action in EMR_ACTIONS],
                "Resource": "*",
            },
            {
                "Sid": "PassOnlyTheTwoEmrRoles",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": [
                    f"arn:aws:iam::{account}:role/{config.service_role}",
                    f"arn:aws:iam::{account}:role/{config.job_flow_role}",
                ],
            },
            *kms_statement(kms_key_arn),
            *queue_statement(queue_arn),
        ],
    }


def instance_profile_policy(bucket: str, config: RunConfig | None = None, kms_key_arn: str | None = None) -> dict[str, Any]:
    """Policy of the role in the job_flow_role instance profile: nothing but the pipeline's S3 prefixes
    (and the outputs' KMS key with SSE-KMS)."""
    config = config or RunConfig()
    raw, artifacts, output, logs = config.raw_prefix, config.artifacts_prefix, config.output_prefix, config.logs_prefix
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ListTheBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Sid": "ReadImagesCodeModelsAndFeatures",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": _objects(bucket, raw, artifacts, output),
            },
            {
                "Sid": "WriteOutputs",  # Spark overwrites a partition's folders: delete, then write
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                "Resource": _objects(bucket, output),
            },
            {
                "Sid": "ShipEmrLogs",
                "Effect": "Allow",
                "Action": ["s3:PutObject"],
                "Resource": _objects(bucket, logs),
            },
            *kms_statement(kms_key_arn),
        ],
    }


def bucket_policy(bucket: str, config: RunConfig | None = None) -> dict[str, Any]:
    """Deny plain HTTP; deny uploads that ask for an unknown encryption; deny uploads to the
    pipeline's own prefixes (artifacts, outputs) that ask for no encryption at all.

    Every writer of those prefixes sends the header: the DAG's boto3 puts (settings.sse_arguments)
    and Spark on EMR (emr_request.s3_encryption_configurations). EMR's own log shipping is not asked
    to, so the logs prefix relies on the bucket's default encryption (SSE-S3 for every new object).
    """
    config = config or RunConfig()
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "DenyUnknownEncryption",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
                "Condition": {
                    "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": ["AES256", "aws:kms", "aws:kms:dsse"]}
                },
            },
            {
                "Sid": "DenyUnencryptedPipelineUploads",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": _objects(bucket, config.artifacts_prefix, config.output_prefix),
                "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}},
            },
        ],
    }


def queue_policy(bucket: str, account: str, queue_arn: str) -> dict[str, Any]:
    """Resource policy of the SQS queue: only S3, for this bucket of this account, may send to it."""
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "S3ObjectCreatedNotificationsOfTheBucket",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {
                    "ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                    "StringEquals": {"aws:SourceAccount": account},
                },
            }
        ],
    }


def notification_configuration(queue_arn: str, config: RunConfig | None = None) -> dict[str, Any]:
    """The bucket's NotificationConfiguration (PutBucketNotificationConfiguration): every new object
    under the raw prefix, as one SQS message."""
    config = config or RunConfig()
    return {
        "QueueConfigurations": [
            {
                "Id": "fruits-raw-images-created",
                "QueueArn": queue_arn,
                "Events": ["s3:ObjectCreated:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": key_prefix(config.raw_prefix)}]}},
            }
        ]
    }


PLACEHOLDER_BUCKET = "<bucket>"
PLACEHOLDER_ACCOUNT = "<account>"

QUEUE_NAME = "fruits-raw-images"


def queue_arn(account: str, region: str = "<region>", name: str = QUEUE_NAME) -> str:
    return f"arn:aws:sqs:{region}:{account}:{name}"


DOCUMENTS = {
    "airflow-policy.json": lambda bucket, account, kms: airflow_policy(
        bucket, account, kms_key_arn=kms, queue_arn=queue_arn(account)),
    "emr-instance-profile-policy.json": lambda bucket, account, kms: instance_profile_policy(bucket, kms_key_arn=kms),
    "bucket-policy.json": lambda bucket, account, kms: bucket_policy(bucket),
    "sqs-queue-policy.json": lambda bucket, account, kms: queue_policy(bucket, account, queue_arn(account)),
    "s3-notification.json": lambda bucket, account, kms: notification_configuration(queue_arn(account)),
}


def render(
    name: str, bucket: str = PLACEHOLDER_BUCKET, account: str = PLACEHOLDER_ACCOUNT,
    kms_key_arn: str | None = PLACEHOLDER_KMS_KEY,
) -> str:
    """One document of iam/ as JSON text. The repo's files use the placeholders, and show the SSE-KMS
    statement with a placeholder key (drop it with SSE-S3)."""
    return json.dumps(DOCUMENTS[name](bucket, account, kms_key_arn), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("document", choices=[name.removesuffix(".json").removesuffix("-policy") for name in DOCUMENTS])
    parser.add_argument("--bucket", default=PLACEHOLDER_BUCKET)
    parser.add_argument("--account", default=PLACEHOLDER_ACCOUNT)
    parser.add_argument("--kms-key-arn", default="", help="ARN of the SSE-KMS key (Param kms_key_id); empty = SSE-S3")
    args = parser.parse_args(argv)
    name = next(n for n in DOCUMENTS if n.startswith(args.document))
    sys.stdout.write(render(name, args.bucket, args.account, args.kms_key_arn or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
