#!/usr/bin/env bash
# EMR bootstrap action: install Python 3.11 and the Spark jobs' pinned deps on every node.
#   bootstrap.sh s3://<bucket>/<artifacts>/code/<hash>/requirements-emr.txt
# Runs as hadoop before applications start; a non-zero exit fails the cluster (no half-set-up nodes).
set -euo pipefail

requirements_uri="${1:?usage: bootstrap.sh s3://.../requirements-emr.txt}"
python=python3.11

if ! command -v "$python" >/dev/null 2>&1; then
  sudo dnf install -y -q python3.11 python3.11-pip python3.11-devel
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
aws s3 cp --only-show-errors "$requirements_uri" "$workdir/requirements-emr.txt"

sudo "$python" -m pip install --quiet --upgrade pip
sudo "$python" -m pip install --quiet --no-cache-dir -r "$workdir/requirements-emr.txt"

# Fail the bootstrap (and the cluster) now rather than in the first Spark task.
"$python" -c "import numpy, pandas, pyarrow, PIL, onnxruntime, tensorflow, keras; print('python deps ok')"
