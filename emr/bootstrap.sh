#!/usr/bin/env bash
# EMR bootstrap action: install the Spark jobs' pinned Python deps on every node, from a wheelhouse.
#   bootstrap.sh s3://.../wheelhouse/<hash>/ s3://.../constraints-emr.txt s3://.../requirements-emr.txt \
#                [s3://.../requirements-emr-tensorflow.txt]
# The wheelhouse (staged by the DAG's stage task) holds manylinux x86_64 cp311 wheels of every node
# package; pip installs with --no-index, so nodes in a private subnet (S3 gateway endpoint only) and
# a PyPI outage do not stop a run. The TensorFlow add-on only when the DAG passes it (engine tensorflow).
# Runs as hadoop before applications start; a non-zero exit fails the cluster (no half-set-up nodes).
set -euo pipefail

usage="usage: bootstrap.sh WHEELHOUSE_URI CONSTRAINTS_URI REQUIREMENTS_URI [TENSORFLOW_REQUIREMENTS_URI]"
wheelhouse_uri="${1:?$usage}"
constraints_uri="${2:?$usage}"
requirements_uri="${3:?$usage}"
tensorflow_uri="${4:-}"
# The interpreter PYSPARK_PYTHON names (fruits_emr.emr_request.PYTHON); FRUITS_NODE_PYTHON only for tests.
python="${FRUITS_NODE_PYTHON:-/usr/bin/python3.11}"

# EMR 7.x images ship python3.11 but not always its pip; dnf skips what is already installed.
sudo dnf install -y -q python3.11 python3.11-pip

# No native BLAS/LAPACK: the PCA fit solves its eigenproblem with numpy on the driver, never with
# Spark ML's netlib LAPACK (whose pure-Java fallback gave wrong spectra; docs/pca.md).

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
aws s3 cp --only-show-errors --recursive "$wheelhouse_uri" "$workdir/wheels"
aws s3 cp --only-show-errors "$constraints_uri" "$workdir/constraints-emr.txt"
aws s3 cp --only-show-errors "$requirements_uri" "$workdir/requirements-emr.txt"
requirements=(-r "$workdir/requirements-emr.txt")
imports="numpy, pandas, pyarrow, PIL, matplotlib, onnxruntime"
if [ -n "$tensorflow_uri" ]; then
  aws s3 cp --only-show-errors "$tensorflow_uri" "$workdir/requirements-emr-tensorflow.txt"
  requirements+=(-r "$workdir/requirements-emr-tensorflow.txt")
  imports="$imports, tensorflow, keras"
fi

sudo "$python" -m pip install --quiet --no-index --find-links "$workdir/wheels" \
  -c "$workdir/constraints-emr.txt" "${requirements[@]}"

# Fail the bootstrap (and the cluster) now rather than in the first Spark task.
"$python" -c "import $imports; print('python deps ok: $imports')"
