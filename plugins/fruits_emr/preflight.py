"""The checks of the resolve_config task, before anything costs money: the run's settings merged and
validated, the bucket reachable, the EMR security configuration usable."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from fruits_emr.settings import ConfigError, RunConfig, resolve_run_config
from spark_jobs.contract.s3_uri import is_not_found

log = logging.getLogger(__name__)


def checked_run_config(
    params: Mapping[str, Any],
    parse_defaults: Mapping[str, Any],
    variable_defaults: Mapping[str, Any] | None,
    s3: Any,
    emr: Any | None,
) -> RunConfig:
    """Params merged over the defaults Variable, validated, the bucket and security configuration
    checked; each setting logged with where its value came from.

    emr: an EMR client to check the security configuration (None: local mode, no cluster)."""
    config, sources = resolve_run_config(params, parse_defaults, variable_defaults)
    check_bucket(s3, config.bucket)
    if config.security_configuration and emr is not None:
        check_security_configuration(emr, config.security_configuration)
    for name, value in config.to_dict().items():
        log.info("%-22s %-40r (%s)", name, value, sources[name])
    return config


def check_bucket(s3: Any, bucket: str) -> None:
    """Fail with one message when the bucket is missing or not accessible with the aws_default connection."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        reason = ("does not exist" if is_not_found(exc) else "is not accessible" if code == "403"
                  else f"cannot be read ({code})")
        raise ConfigError(
            f"Param 'bucket': s3://{bucket} {reason} with the Airflow connection aws_default."
            " Create the bucket or fix the Param / Variable fruits_features_defaults."
        ) from None


def check_security_configuration(emr_client: Any, name: str) -> None:
    """Fail with one message, before any cluster starts, when the EMR security configuration is missing
    or does not encrypt S3 writes (with one, the cluster request sends no S3 encryption settings of its own)."""
    try:
        described = emr_client.describe_security_configuration(Name=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise ConfigError(
            f"Param 'security_configuration' = {name!r}: EMR cannot describe it ({code}:"
            f" {exc.response.get('Error', {}).get('Message', '')}). Create it (aws emr"
            " create-security-configuration) or leave the Param empty."
        ) from None
    encryption = json.loads(described.get("SecurityConfiguration") or "{}").get("EncryptionConfiguration", {})
    s3_mode = (encryption.get("AtRestEncryptionConfiguration") or {}).get("S3EncryptionConfiguration", {}).get(
        "EncryptionMode")
    if not encryption.get("EnableAtRestEncryption") or not s3_mode:
        raise ConfigError(
            f"Param 'security_configuration' = {name!r} does not encrypt S3 at rest (no"
            " AtRestEncryptionConfiguration.S3EncryptionConfiguration): the cluster's writes would carry no"
            " encryption and the bucket policy refuses them. Add SSE-S3 or SSE-KMS to it, or leave the Param empty."
        )
