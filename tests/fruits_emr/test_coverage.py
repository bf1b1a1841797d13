"""The coverage command (`make coverage`, `python -m fruits_emr.coverage`) run for real, as an operator
runs it, in a subprocess against the moto server: the images under raw/ by state after a committed
run with a broken upload, a failed run nobody cleared, a late-stamped upload and one stamped after
every interval; then one daily run, and the command reports 0 pending (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from fruits_emr.settings import RunConfig
from tests.support import ACCOUNT, REPO_ROOT
from tests.support.moto import certificate_of
from tests.support.pipeline import BROKEN, daily_run

BUCKET = "fruits-coverage"
DAY = datetime(2024, 6, 1, tzinfo=UTC)


def upload(s3, key: str, when: datetime, body: bytes = b"jpeg") -> str:
    """Put an object and stamp it `when` (S3's LastModified; the moto server runs in this process)."""
    from moto.s3.models import s3_backends

    s3.put_object(Bucket=BUCKET, Key=key, Body=body + key.encode())
    s3_backends[ACCOUNT]["aws"].buckets[BUCKET].keys[key].last_modified = when.replace(tzinfo=None)
    return f"s3://{BUCKET}/{key}"


def coverage_command(endpoint: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    certificate = certificate_of(endpoint)
    if isinstance(certificate, str):
        env["AWS_CA_BUNDLE"] = certificate
    return subprocess.run([sys.executable, "-m", "fruits_emr.coverage", "--bucket", BUCKET, "--endpoint-url", endpoint,
                           *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_coverage_command_counts_each_state_then_zero_pending_after_a_run(moto, s3):
    config = RunConfig(bucket=BUCKET)
    s3.create_bucket(Bucket=BUCKET)
    for name in ("a", "b"):
        upload(s3, f"raw/apple/{name}.jpg", DAY + timedelta(hours=1))
    upload(s3, "raw/apple/broken.jpg", DAY + timedelta(hours=2), BROKEN)
    upload(s3, "raw/apple/notes.txt", DAY + timedelta(hours=3))  # not a photo: listed by featurize, no state
    assert daily_run(s3, config, DAY).run().commit is not None
    failed = [upload(s3, f"raw/lemon/{name}.jpg", DAY + timedelta(days=1, hours=1)) for name in ("c", "d")]
    stopped = daily_run(s3, config, DAY + timedelta(days=1)).run(until=lambda task: task == "validate_outputs")
    assert stopped.selection is not None and stopped.commit is None  # failed after its jobs, never cleared
    late = upload(s3, "raw/lemon/late.jpg", DAY + timedelta(hours=12))  # stamped inside day 1, listed after
    new = upload(s3, "raw/lemon/new.jpg", DAY + timedelta(days=5))

    before = coverage_command(moto, "--json", "--check", "--list", "pending", "--list", "in_failed_attempt")
    assert before.returncode == 1, before.stderr  # --check: an image is pending or in a failed attempt
    report = json.loads(before.stdout[:before.stdout.rindex("}") + 1])
    assert report["counts"] == {"committed": 2, "quarantined": 1, "in_failed_attempt": 2, "pending": 1, "new": 1}
    assert report["watermark"] == (DAY + timedelta(days=1)).isoformat() and report["committed_dates"] == 1
    listed = [line.split("\t") for line in before.stdout.splitlines() if "\t" in line]
    assert sorted(listed) == sorted([["pending", late], *(["in_failed_attempt", uri] for uri in failed)])
    assert new not in before.stdout

    run = daily_run(s3, config, DAY + timedelta(days=5)).run()
    assert run.selection.from_earlier_intervals == 3  # the failed run's two and the late one
    after = coverage_command(moto, "--check")
    assert after.returncode == 0, after.stdout + after.stderr
    assert ("committed 6, quarantined 1, in_failed_attempt 0, pending 0, new 0" in after.stdout), after.stdout
