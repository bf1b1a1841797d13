#!/usr/bin/env bash
# EMR bootstrap action: install the Spark jobs' Python deps on every node, from a hash-pinned wheelhouse.
#   bootstrap.sh s3://.../wheelhouse/<hash>/ [tensorflow]
# The wheelhouse (staged by the DAG's stage task) holds manylinux x86_64 cp311 wheels of every node
# package and requirements-hashed.txt, which pins each of them by version and sha256 (generated into
# emr/hashed-requirements-emr*.txt by `python -m fruits_emr.wheelhouse hashes`). pip installs with
# --no-index --require-hashes: nodes in a private subnet (S3 gateway endpoint only) and a PyPI outage
# do not stop a run, and a wheel whose bytes are not the pinned ones stops the bootstrap.
# `tensorflow`: the wheelhouse holds the TensorFlow add-on (engine tensorflow); check it imports too.
# Runs as hadoop before applications start; a non-zero exit fails the cluster (no half-set-up nodes).
set -euo pipefail

usage="usage: bootstrap.sh WHEELHOUSE_URI [tensorflow]"
wheelhouse_uri="${1:?$usage}"
add_on="${2:-}"
if [ -n "$add_on" ] && [ "$add_on" != "tensorflow" ]; then
  echo "$usage" >&2
  exit 2
fi
# The interpreter PYSPARK_PYTHON names (fruits_emr.emr_request.PYTHON); FRUITS_NODE_PYTHON only for tests.
python="${FRUITS_NODE_PYTHON:-/usr/bin/python3.11}"

# EMR 7.x images ship python3.11 but not always its pip. Exact versions, so every node gets the
# same ones whatever the AMI: python3.11-3.11.15-1.amzn2023.0.2 and python3.11-pip-22.3.1-2.amzn2023.0.13
# are the AL2023 2023.12.20260622 builds ("Core Updated Packages" of
# https://docs.aws.amazon.com/linux/al2023/release-notes/relnotes-2023.12.20260622.html). The default
# release emr-7.12.0 (21 Nov 2025) is the latest 7.12 patch, so EMR launches it on the newest AL2023
# release it validated (https://docs.aws.amazon.com/emr/latest/ManagementGuide/emr-default-ami.html),
# 2023.12.20260629.0 or later today, whose repository holds these builds too. dnf installs an exact
# version even when another one is installed (dnf(8), "install"); a repository without it fails the
# bootstrap with "No match for argument", naming the package to re-pin (docs/security.md).
sudo dnf install -y -q python3.11-3.11.15-1.amzn2023.0.2 python3.11-pip-22.3.1-2.amzn2023.0.13

# No native BLAS/LAPACK: the PCA fit solves its eigenproblem with numpy on the driver, never with
# Spark ML's netlib LAPACK (whose pure-Java fallback gave wrong spectra; docs/pca.md).

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
aws s3 cp --only-show-errors --recursive "$wheelhouse_uri" "$workdir/wheels"
imports="numpy, pandas, pyarrow, PIL, matplotlib, onnxruntime"
if [ "$add_on" = "tensorflow" ]; then
  imports="$imports, tensorflow, keras"
fi

# Every requirement pinned with ==, every wheel checked against its sha256: anything else is an error.
sudo "$python" -m pip install --quiet --no-index --find-links "$workdir/wheels" --require-hashes \
  -r "$workdir/wheels/requirements-hashed.txt"

# Fail the bootstrap (and the cluster) now rather than in the first Spark task.
"$python" -c "import $imports; print('python deps ok: $imports')"
