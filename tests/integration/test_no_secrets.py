"""No AWS credentials in the repository: every file git tracks (or would add) is scanned, and .env is ignored.

Dev placeholders (.env.example's fruits-dev values) and moto's fake "testing" credentials are not
key-shaped, so they pass; AWS's documented example keys (…EXAMPLE…) are allowed by name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO_ROOT

ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
# aws_secret_access_key = …, AWS_SECRET_ACCESS_KEY: "…", "aws_secret_access_key": "…", secretAccessKey=…
SECRET_ASSIGNMENT = re.compile(
    r"(?:aws_?secret_?access_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)
ALLOWED = ("EXAMPLE",)  # AKIAIOSFODNN7EXAMPLE and wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY from the AWS docs


def find_secrets(text: str) -> list[str]:
    """Key-shaped AWS credentials in text, each as 'line N: <first 8 characters>…' (never the whole secret)."""
    found = []
    for pattern in (ACCESS_KEY_ID, SECRET_ASSIGNMENT):
        for match in pattern.finditer(text):
            value = match.group(match.lastindex or 0)
            if any(word in value for word in ALLOWED):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"line {line}: {value[:8]}…")
    return found


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def repo_files() -> list[Path]:
    """Tracked files plus untracked, not ignored ones (what `git add -A` would commit)."""
    if shutil.which("git") is None or git("rev-parse", "--is-inside-work-tree").returncode != 0:
        pytest.skip("not a git checkout")
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    assert listed.returncode == 0, listed.stderr
    return [REPO_ROOT / name for name in sorted(set(listed.stdout.split("\0"))) if name]


def test_no_aws_credentials_in_repository_files():
    files = repo_files()
    assert len(files) > 20  # the scan really saw the repository
    leaks = {}
    for path in files:
        if not path.is_file():  # deleted in the work tree
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # images, weights, archives
            continue
        found = find_secrets(data.decode("utf-8", errors="replace"))
        if found:
            leaks[str(path.relative_to(REPO_ROOT))] = found
    assert not leaks, (
        f"AWS credentials in repository files: {leaks}. Remove them, rotate the key in IAM, and keep"
        " credentials in an Airflow connection or the untracked .env."
    )


def test_dot_env_is_ignored_and_untracked():
    repo_files()  # skips outside a git checkout
    assert git("check-ignore", "-q", ".env").returncode == 0, "add .env to .gitignore"
    assert git("ls-files", "--error-unmatch", ".env").returncode != 0, "git rm --cached .env: it must stay untracked"


# The planted keys are assembled at run time so this file itself never holds a key-shaped string.
FAKE_ID = "AKIA" + "Q7X2M9P4L6R8T3V5"
FAKE_SESSION_ID = "ASIA" + "Z" * 16
FAKE_SECRET = "q7X2m9P4/6R8t3V5+" + "a" * 23


@pytest.mark.parametrize(
    "text",
    [
        f"aws_access_key_id = {FAKE_ID}\n",
        f'"AccessKeyId": "{FAKE_SESSION_ID}"',
        f"export AWS_SECRET_ACCESS_KEY={FAKE_SECRET}",
        f"aws_secret_access_key = {FAKE_SECRET}\n",
        f'{{"aws_secret_access_key": "{FAKE_SECRET}"}}',
        f"conn = 'aws://{FAKE_ID}:x@/'",
    ],
)
def test_scanner_finds_planted_credentials(text):
    found = find_secrets(text)
    assert found and all(FAKE_SECRET not in item and FAKE_ID not in item for item in found)


@pytest.mark.parametrize(
    "text",
    [
        "AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n",  # moto's fake credentials
        (REPO_ROOT / ".env.example").read_text() if (REPO_ROOT / ".env.example").is_file() else "",
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",  # AWS documentation example
        f"id = {FAKE_ID}X",  # 21 characters: not an access key id
        f"aws_secret_access_key = {FAKE_SECRET}xyz",  # 43 characters: not a secret key
        '"login": "<access key id>", "password": "<secret key>"',  # docs/deploy-aws.md placeholders
    ],
)
def test_scanner_passes_placeholders(text):
    assert find_secrets(text) == []
