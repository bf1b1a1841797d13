"""Offline evaluation of IAM requests against the pipeline's policies, with @cloud-copilot/iam-simulate.

moto enforces actions and resources but no conditions (tags, iam:PassedToService, encryption headers);
iam-simulate (npm, pinned with its integrity hash in tests/support/iam_simulator/package-lock.json)
implements IAM's evaluation logic: identity and resource policies, explicit deny, every condition
operator, IfExists, missing keys, and it refuses requests whose context keys the action does not
have. `make iam-simulator` installs it (`npm ci`); tests/fruits_emr/test_iam_conditions.py checks it
on cases AWS documents before trusting it with ours.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.support import ACCOUNT, REPO_ROOT

SIMULATOR = REPO_ROOT / "tests" / "support" / "iam_simulator"
INSTALL = "make iam-simulator   # npm ci --prefix tests/support/iam_simulator"
ALLOWED, IMPLICIT_DENY, EXPLICIT_DENY = "Allowed", "ImplicitlyDenied", "ExplicitlyDenied"


@dataclass(frozen=True)
class Request:
    """One request a principal makes, and the policies that decide it."""

    id: str
    action: str
    resource: str
    identityPolicies: list[dict[str, Any]]  # noqa: N815 - the simulator's field names
    principal: str = f"arn:aws:iam::{ACCOUNT}:user/fruits-airflow"
    context: dict[str, Any] = field(default_factory=dict)
    resourcePolicy: dict[str, Any] | None = None  # noqa: N815
    resourceAccount: str = ACCOUNT  # noqa: N815


def simulate(requests: list[Request]) -> dict[str, str]:
    """{request id: Allowed | ImplicitlyDenied | ExplicitlyDenied}; a request the simulator refuses
    (a context key the action does not have, a malformed policy) is an error, not a denial."""
    if shutil.which("node") is None or not (SIMULATOR / "node_modules" / "@cloud-copilot" / "iam-simulate").is_dir():
        raise RuntimeError(f"the IAM policy simulator is not installed: {INSTALL}")
    ids = [request.id for request in requests]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate request ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    done = subprocess.run(["node", str(SIMULATOR / "simulate.mjs")], input=json.dumps([asdict(r) for r in requests]),
                          capture_output=True, text=True, cwd=SIMULATOR, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the IAM policy simulator failed:\n{done.stderr[-3000:]}")
    results = json.loads(done.stdout)
    errors = {key: value for key, value in results.items() if value.startswith("error")}
    if errors:
        raise ValueError(f"the simulator refused these requests: {errors}")
    return results
