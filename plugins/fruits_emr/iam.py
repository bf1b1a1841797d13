"""Least-privilege IAM documents of the pipeline, rendered from the run configuration's bucket and prefixes.

- airflow_policy: the identity of the Airflow connection aws_default (S3 staging/manifest/report and
  the commit pointers, the EMR calls of the DAG's operators on the DAG's clusters only (the action
  table and its scoping: fruits_emr.emr_actions), iam:PassRole of the two EMR roles to their services).
- instance_profile_policy: the cluster nodes (read raw images and staged code/models, write attempt
  folders and logs, never a commit pointer).
- bucket_policy: the bucket refuses plain-HTTP access, uploads that ask for an unknown encryption,
  uploads to the pipeline's prefixes that ask for none, and with SSE-KMS for another key.
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

from fruits_emr import layout
from fruits_emr.emr_actions import emr_statements
from fruits_emr.settings import DAG_ID, RunConfig
from spark_jobs.contract.s3_uri import key_prefix

VERSION = "2012-10-17"
PLACEHOLDER_KMS_KEY = "arn:aws:kms:<region>:<account>:key/<key-id>"
# Which service each passed role is for (the RunJobFlow request passes both)
EMR_SERVICE = "elasticmapreduce.amazonaws.com"
EC2_SERVICE = "ec2.amazonaws.com"


def run_attempt_objects(bucket: str, config: RunConfig) -> list[str]:
    """Every run date's attempt folders (<output>run_date=D/_attempts/<attempt>/)."""
    return [f"arn:aws:s3:::{bucket}/{layout.partition_key(config, '*')}{layout.ATTEMPTS_FOLDER}/*"]


def attempt_objects(bucket: str, config: RunConfig) -> list[str]:
    """What the jobs write: a run's attempt folders and the PCA fits' per-attempt model folders
    (<output>_pca_models/_attempts/<attempt>/)."""
    return [*run_attempt_objects(bucket, config),
            f"arn:aws:s3:::{bucket}/{layout.pca_models_key(config)}{layout.ATTEMPTS_FOLDER}/*"]


def pointer_objects(bucket: str, config: RunConfig) -> list[str]:
    """The commit pointers readers start from: written by the Airflow identity alone, after validation."""
    return [f"arn:aws:s3:::{bucket}/{layout.commit_key(config, '*')}",
            f"arn:aws:s3:::{bucket}/{layout.pca_pointer_key(config)}"]


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


def alerts_statement(topic_arn: str | None) -> list[dict[str, Any]]:
    """The DAG's failure alert (fruits_emr.alerts) publishes to one SNS topic, nothing else."""
    if not topic_arn:
        return []
    return [{"Sid": "PublishRunFailureAlerts", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": [topic_arn]}]


def emr_service_pass_role_policy(account: str, config: RunConfig | None = None) -> dict[str, Any]:
    """Inline policy of the EMR service role beside AmazonEMRServicePolicy_v2: EMR passes the
    instance-profile role to EC2 when it starts the nodes, and may pass no other role."""
    config = config or RunConfig()
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "PassTheInstanceProfileRoleToEc2",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": [f"arn:aws:iam::{account}:role/{config.job_flow_role}"],
                "Condition": {"StringLike": {"iam:PassedToService": "ec2.amazonaws.com*"}},
            }
        ],
    }


def _objects(bucket: str, *prefixes: str) -> list[str]:
    return [f"arn:aws:s3:::{bucket}/{key_prefix(p)}*" for p in dict.fromkeys(prefixes)]


def airflow_policy(
    bucket: str, account: str, config: RunConfig | None = None, local_compute: bool = False,
    kms_key_arn: str | None = None, queue_arn: str | None = None, dag_id: str = DAG_ID,
) -> dict[str, Any]:
    """Identity policy of aws_default. local_compute: the worker also runs the jobs (FRUITS_COMPUTE_MODE=local),
    so it reads raw images and writes what the cluster writes; kms_key_arn: the SSE-KMS key of the outputs
    (none with SSE-S3); queue_arn: the S3-events queue (none without event-driven runs)."""
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
                # staged code, models, weights and wheels; manifests and images.json in attempt folders;
                # the commit pointers, which only this identity writes
                "Sid": "StageArtifactsWriteManifestsAndCommit",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": [*_objects(bucket, artifacts), *run_attempt_objects(bucket, config),
                             *pointer_objects(bucket, config)],
            },
            {
                "Sid": "DeleteAttemptsNoLongerCommitted",  # never a commit pointer
                "Effect": "Allow",
                "Action": ["s3:DeleteObject"],
                "Resource": run_attempt_objects(bucket, config),
            },
            *emr_statements(account, dag_id),
            {
                "Sid": "PassTheServiceRoleToEmrOnly",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": [f"arn:aws:iam::{account}:role/{config.service_role}"],
                "Condition": {"StringEquals": {"iam:PassedToService": EMR_SERVICE}},
            },
            {
                "Sid": "PassTheNodeRoleToEc2Only",  # the role of the job_flow_role instance profile
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": [f"arn:aws:iam::{account}:role/{config.job_flow_role}"],
                "Condition": {"StringEquals": {"iam:PassedToService": EC2_SERVICE}},
            },
            *(cluster_write_statements(bucket, config) if local_compute else []),
            *kms_statement(kms_key_arn),
            *queue_statement(queue_arn),
        ],
    }


def cluster_write_statements(bucket: str, config: RunConfig) -> list[dict[str, Any]]:
    """What the jobs write (the cluster, or the worker in local compute mode): attempt folders only
    (Spark overwrites a folder's files: delete, then write), and never a commit pointer, whatever
    other policy the role has."""
    return [
        {
            "Sid": "WriteOnlyIntoAttemptFolders",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            "Resource": attempt_objects(bucket, config),
        },
    ]


def instance_profile_policy(bucket: str, config: RunConfig | None = None, kms_key_arn: str | None = None) -> dict[str, Any]:
    """Policy of the role in the job_flow_role instance profile: read the pipeline's inputs, write only
    into attempt folders and the logs prefix, never the commit pointers (explicitly denied, so a
    broader policy attached to the same role cannot grant it); with SSE-KMS, the outputs' key."""
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
            *cluster_write_statements(bucket, config),
            {
                "Sid": "NeverTheCommitPointers",
                "Effect": "Deny",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": pointer_objects(bucket, config),
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


def bucket_policy(bucket: str, config: RunConfig | None = None, kms_key_arn: str | None = None) -> dict[str, Any]:
    """Deny plain HTTP; deny uploads that ask for an unknown encryption; deny uploads to the
    pipeline's own prefixes (artifacts, outputs) that ask for no encryption at all; with SSE-KMS
    (kms_key_arn), deny uploads there that ask for another key, for the AWS managed key or for SSE-S3.

    Every writer of those prefixes sends the header: the DAG's boto3 puts (settings.sse_arguments)
    and Spark on EMR (emr_request.s3_encryption_configurations). EMR's own log shipping is not asked
    to, so the logs prefix relies on the bucket's default encryption (SSE-S3 for every new object).
    The key is compared as sent: set the Param kms_key_id to the key's ARN, not an alias or key id.
    """
    config = config or RunConfig()
    pipeline = _objects(bucket, config.artifacts_prefix, config.output_prefix)
    sse, key_id = "s3:x-amz-server-side-encryption", "s3:x-amz-server-side-encryption-aws-kms-key-id"
    kms = [
        {
            "Sid": "DenyPipelineUploadsUnderAnotherKmsKey",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": pipeline,
            # present and another key (Null false: a missing key makes a negated operator true, so a
            # Deny on StringNotEquals alone would also refuse requests without the header)
            "Condition": {"Null": {key_id: "false"}, "StringNotEquals": {key_id: kms_key_arn}},
        },
        {
            "Sid": "DenyPipelineUploadsNotUnderSseKms",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": pipeline,
            "Condition": {"Null": {sse: "false"}, "StringNotEquals": {sse: "aws:kms"}},
        },
        {
            "Sid": "DenyPipelineUploadsUnderTheAwsManagedKey",  # aws:kms without a key id: S3's aws/s3 key
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:PutObject",
            "Resource": pipeline,
            "Condition": {"StringEquals": {sse: "aws:kms"}, "Null": {key_id: "true"}},
        },
    ] if kms_key_arn else []
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
                # only a header that is there: EMR's log shipping sends none (the bucket's default applies)
                "Condition": {"Null": {sse: "false"}, "StringNotEquals": {sse: ["AES256", "aws:kms", "aws:kms:dsse"]}},
            },
            {
                "Sid": "DenyUnencryptedPipelineUploads",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": pipeline,
                "Condition": {"Null": {sse: "true"}},
            },
            *kms,
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
    "bucket-policy.json": lambda bucket, account, kms: bucket_policy(bucket, kms_key_arn=kms),
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
