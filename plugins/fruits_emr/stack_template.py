"""The CloudFormation template of the pipeline's AWS side (cloudformation/fruits-features.json),
generated from the IAM documents of fruits_emr.iam so that the policies have one source.

The documents are rendered with CloudFormation substitutions in place of the bucket, the account
and the ARNs (`${BucketName}`, `${AWS::AccountId}`, `${RawImagesQueue.Arn}`, ...), and every string
holding one becomes an `Fn::Sub`. `python -m fruits_emr.stack_template` prints the template;
tests/fruits_emr/test_stack_template.py fails while the committed file differs from it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fruits_emr import iam
from fruits_emr.alerts import ALERTS_VARIABLE
from fruits_emr.settings import DEFAULTS_VARIABLE, RunConfig

TEMPLATE_FILE = Path("cloudformation") / "fruits-features.json"

BUCKET, ACCOUNT = "${BucketName}", "${AWS::AccountId}"
QUEUE_ARN, TOPIC_ARN, KMS_KEY = "${RawImagesQueue.Arn}", "${AlertsTopic}", "${KmsKeyArn}"
NO_VALUE = {"Ref": "AWS::NoValue"}
# the roles the DAG passes (Params service_role / job_flow_role): the stack's own, named by parameters
STACK_ROLES = RunConfig(service_role="${EmrServiceRoleName}", job_flow_role="${EmrInstanceProfileName}")
EMR_SERVICE_POLICY = "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"

PARAMETERS: dict[str, dict[str, Any]] = {
    "BucketName": {
        "Type": "String", "AllowedPattern": "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]",
        "Description": "The pipeline's bucket (created by the stack): raw/, features/, artifacts/, emr-logs/",
    },
    "KmsKeyArn": {
        "Type": "String", "Default": "",
        "Description": "SSE-KMS key ARN of the bucket and the outputs (Param kms_key_id); empty: SSE-S3",
    },
    "SubnetId": {"Type": "String", "Default": "", "Description": "Subnet of the clusters (Param subnet_id); empty: the default VPC"},
    "AirflowPrincipalArn": {
        "Type": "String", "Default": "",
        "Description": "Who may assume the Airflow role (the workers' role); empty: principals of this account allowed to",
    },
    "AirflowRoleName": {"Type": "String", "Default": "fruits-airflow"},
    "EmrServiceRoleName": {"Type": "String", "Default": "fruits-emr-service-v2", "Description": "Param service_role"},
    "EmrInstanceProfileName": {
        "Type": "String", "Default": "fruits-emr-nodes",
        "Description": "Param job_flow_role: the instance profile and its role (same name)",
    },
    "CreateEmrSecurityConfiguration": {
        "Type": "String", "Default": "false", "AllowedValues": ["false", "true"],
        "Description": "Create an EMR security configuration (at rest: S3, and local disks with KmsKeyArn; in transit with TlsCertificatesZip)",
    },
    "TlsCertificatesZip": {
        "Type": "String", "Default": "",
        "Description": "s3:// URI of the PEM zip (privateKey.pem, certificateChain.pem) for in-transit encryption; empty: none",
    },
    "AlertEmail": {"Type": "String", "Default": "", "Description": "E-mail address subscribed to the failure alerts; empty: none"},
}

CONDITIONS = {
    "HasKmsKey": {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]},
    "HasSubnet": {"Fn::Not": [{"Fn::Equals": [{"Ref": "SubnetId"}, ""]}]},
    "HasAirflowPrincipal": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AirflowPrincipalArn"}, ""]}]},
    "HasAlertEmail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlertEmail"}, ""]}]},
    "CreateSecurityConfiguration": {"Fn::Equals": [{"Ref": "CreateEmrSecurityConfiguration"}, "true"]},
    "HasTlsCertificates": {"Fn::Not": [{"Fn::Equals": [{"Ref": "TlsCertificatesZip"}, ""]}]},
}


def substituted(value: Any) -> Any:
    """The document with every string that holds a `${...}` substitution as an Fn::Sub."""
    if isinstance(value, dict):
        return {key: substituted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [substituted(item) for item in value]
    if isinstance(value, str) and "${" in value:
        return {"Fn::Sub": value}
    return value


def role(name: str, principal: dict[str, Any], policies: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": {"Ref": name},
            "AssumeRolePolicyDocument": {"Version": iam.VERSION, "Statement": [
                {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}]},
            "Policies": [{"PolicyName": policy_name, "PolicyDocument": substituted(document)}
                         for policy_name, document in policies.items()],
            **extra,
        },
    }


def s3_notification(config: RunConfig) -> dict[str, Any]:
    """iam.notification_configuration (the API's shape) as the bucket's CloudFormation property."""
    queues = iam.notification_configuration(QUEUE_ARN, config)["QueueConfigurations"]
    return {"QueueConfigurations": [
        {"Queue": substituted(queue["QueueArn"]), "Event": event,
         "Filter": {"S3Key": {"Rules": queue["Filter"]["Key"]["FilterRules"]}}}
        for queue in queues for event in queue["Events"]
    ]}


def security_configuration() -> dict[str, Any]:
    """At rest: S3 with the bucket's encryption (SSE-KMS with the key, else SSE-S3), local disks with
    the key; in transit: TLS with the PEM certificates zip. resolve_config accepts it (S3 at rest)."""
    s3_encryption = {
        "EncryptionMode": {"Fn::If": ["HasKmsKey", "SSE-KMS", "SSE-S3"]},
        "AwsKmsKey": {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, NO_VALUE]},
    }
    local_disks = {"EncryptionKeyProviderType": "AwsKms", "AwsKmsKey": {"Ref": "KmsKeyArn"}, "EnableEbsEncryption": True}
    return {
        "Type": "AWS::EMR::SecurityConfiguration",
        "Condition": "CreateSecurityConfiguration",
        "Properties": {
            "Name": {"Fn::Sub": "${AWS::StackName}-encryption"},
            "SecurityConfiguration": {"EncryptionConfiguration": {
                "EnableAtRestEncryption": True,
                "AtRestEncryptionConfiguration": {
                    "S3EncryptionConfiguration": s3_encryption,
                    "LocalDiskEncryptionConfiguration": {"Fn::If": ["HasKmsKey", local_disks, NO_VALUE]},
                },
                "EnableInTransitEncryption": {"Fn::If": ["HasTlsCertificates", True, False]},
                "InTransitEncryptionConfiguration": {"Fn::If": ["HasTlsCertificates", {"TLSCertificateConfiguration": {
                    "CertificateProviderType": "PEM", "S3Object": {"Ref": "TlsCertificatesZip"}}}, NO_VALUE]},
            }},
        },
    }


def defaults_variable() -> dict[str, Any]:
    """The Variable fruits_features_defaults as JSON text: the bucket, the stack's roles, and the key,
    subnet and security configuration when the stack has them."""
    def optional(condition: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"Fn::If": [condition, {"Fn::Join": ["", [f', "{key}": "', value, '"']]}, ""]}

    return {"Fn::Join": ["", [
        {"Fn::Sub": '{"bucket": "${BucketName}", "service_role": "${EmrServiceRoleName}",'
                    ' "job_flow_role": "${EmrInstanceProfileName}"'},
        optional("HasKmsKey", "kms_key_id", {"Ref": "KmsKeyArn"}),
        optional("HasSubnet", "subnet_id", {"Ref": "SubnetId"}),
        optional("CreateSecurityConfiguration", "security_configuration", {"Ref": "EmrSecurityConfiguration"}),
        "}",
    ]]}


def template(config: RunConfig | None = None) -> dict[str, Any]:
    """The whole template. config: the prefixes (RunConfig's defaults unless given)."""
    config = config or RunConfig()
    roles = RunConfig(**{**config.to_dict(), "service_role": STACK_ROLES.service_role,
                         "job_flow_role": STACK_ROLES.job_flow_role})
    # the KMS statement is a policy of its own, attached to both roles only with a key (HasKmsKey)
    airflow = iam.airflow_policy(BUCKET, ACCOUNT, roles, queue_arn=QUEUE_ARN)
    airflow["Statement"] += iam.alerts_statement(TOPIC_ARN)
    account_root = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    resources: dict[str, Any] = {
        "DataBucket": {
            "Type": "AWS::S3::Bucket",
            "DependsOn": "RawImagesQueuePolicy",  # S3 checks it may send to the queue when the notification is set
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BucketName": {"Ref": "BucketName"},
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [{"Fn::If": [
                    "HasKmsKey",
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Ref": "KmsKeyArn"}},
                     "BucketKeyEnabled": True},
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}},
                ]}]},
                "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                   "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "NotificationConfiguration": s3_notification(config),
            },
        },
        "DataBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {"Bucket": {"Ref": "DataBucket"}, "PolicyDocument": substituted(iam.bucket_policy(BUCKET, config))},
        },
        "RawImagesQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"QueueName": {"Fn::Sub": f"${{AWS::StackName}}-{iam.QUEUE_NAME}"}, "SqsManagedSseEnabled": True},
        },
        "RawImagesQueuePolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {"Queues": [{"Ref": "RawImagesQueue"}],
                           "PolicyDocument": substituted(iam.queue_policy(BUCKET, ACCOUNT, QUEUE_ARN))},
        },
        "AlertsTopic": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Fn::Sub": "${AWS::StackName}-alerts"}}},
        "AlertsEmail": {
            "Type": "AWS::SNS::Subscription",
            "Condition": "HasAlertEmail",
            "Properties": {"TopicArn": {"Ref": "AlertsTopic"}, "Protocol": "email", "Endpoint": {"Ref": "AlertEmail"}},
        },
        "AirflowRole": role("AirflowRoleName",
                            {"AWS": {"Fn::If": ["HasAirflowPrincipal", {"Ref": "AirflowPrincipalArn"}, account_root]}},
                            {"fruits-airflow": airflow}),
        "EmrServiceRole": role("EmrServiceRoleName", {"Service": "elasticmapreduce.amazonaws.com"},
                               {"pass-the-instance-profile-role": iam.emr_service_pass_role_policy(ACCOUNT, roles)},
                               ManagedPolicyArns=[{"Fn::Sub": EMR_SERVICE_POLICY}]),
        "EmrInstanceRole": role("EmrInstanceProfileName", {"Service": "ec2.amazonaws.com"}, {
            "fruits-emr-nodes": iam.instance_profile_policy(BUCKET, config)}),
        "OutputKmsKeyUse": {
            "Type": "AWS::IAM::Policy",
            "Condition": "HasKmsKey",
            "Properties": {"PolicyName": "fruits-output-kms-key", "Roles": [{"Ref": "AirflowRole"}, {"Ref": "EmrInstanceRole"}],
                           "PolicyDocument": substituted({"Version": iam.VERSION, "Statement": iam.kms_statement(KMS_KEY)})},
        },
        "EmrInstanceProfile": {
            "Type": "AWS::IAM::InstanceProfile",
            "Properties": {"InstanceProfileName": {"Ref": "EmrInstanceProfileName"}, "Roles": [{"Ref": "EmrInstanceRole"}]},
        },
        "EmrSecurityConfiguration": security_configuration(),
    }
    outputs = {
        "BucketName": ("the Param bucket", {"Ref": "DataBucket"}),
        "DefaultsVariable": (f"the Variable {DEFAULTS_VARIABLE}", defaults_variable()),
        "AirflowRoleArn": ("the role the connection aws_default assumes", {"Fn::GetAtt": ["AirflowRole", "Arn"]}),
        "AirflowConnectionExtra": ("the extra of the connection aws_default", {"Fn::Sub": (
            '{"region_name": "${AWS::Region}", "role_arn": "${AirflowRole.Arn}"}')}),
        "EventsQueueUrl": ("FRUITS_EVENTS_QUEUE_URL (event-driven runs)", {"Ref": "RawImagesQueue"}),
        "AlertsTopicArn": (f"the Variable {ALERTS_VARIABLE} (failure alerts)", {"Ref": "AlertsTopic"}),
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Fruits! image-features pipeline: bucket, roles, S3-events queue, alerts topic"
                       " (generated by python -m fruits_emr.stack_template; do not edit)",
        "Parameters": PARAMETERS,
        "Conditions": CONDITIONS,
        "Resources": resources,
        "Outputs": {name: {"Description": description, "Value": value} for name, (description, value) in outputs.items()},
    }


def render(config: RunConfig | None = None) -> str:
    return json.dumps(template(config), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the template (redirect it into cloudformation/fruits-features.json)."""
    del argv
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
