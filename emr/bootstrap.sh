#!/usr/bin/env bash
# EMR bootstrap action: install Python 3.11 and the Spark jobs' pinned deps on every node.
#   bootstrap.sh s3://.../requirements-emr.txt [s3://.../requirements-emr-tensorflow.txt]
# The first file is always installed (engine onnxruntime: no TensorFlow needed, the DAG ships an
# exported ONNX model); the second, the TensorFlow add-on, only when the DAG passes it (engine tensorflow).
# Runs as hadoop before applications start; a non-zero exit fails the cluster (no half-set-up nodes).
set -euo pipefail

requirements_uri="${1:?usage: bootstrap.sh s3://.../requirements-emr.txt [s3://.../requirements-emr-tensorflow.txt]}"
tensorflow_uri="${2:-}"
python=python3.11

if ! command -v "$python" >/dev/null 2>&1; then
  sudo dnf install -y -q python3.11 python3.11-pip python3.11-devel
fi

# Native BLAS/LAPACK for Spark ML: netlib's JNI loader looks for libblas.so.3 / liblapack.so.3 and
# otherwise falls back to pure-Java BLAS; PCA's SVD runs ~2x faster native. Optional: a node
# without them is only slower, so a failed install must not fail the cluster.
sudo dnf install -y -q openblas lapack blas \
  || echo "bootstrap: native BLAS/LAPACK not installed; Spark ML falls back to Java BLAS (slower PCA)" >&2

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT
aws s3 cp --only-show-errors "$requirements_uri" "$workdir/requirements-emr.txt"
requirements=(-r "$workdir/requirements-emr.txt")
imports="numpy, pandas, pyarrow, PIL, matplotlib, onnxruntime"
if [ -n "$tensorflow_uri" ]; then
  aws s3 cp --only-show-errors "$tensorflow_uri" "$workdir/requirements-emr-tensorflow.txt"
  requirements+=(-r "$workdir/requirements-emr-tensorflow.txt")
  imports="$imports, tensorflow, keras"
fi

sudo "$python" -m pip install --quiet --upgrade pip
sudo "$python" -m pip install --quiet --no-cache-dir "${requirements[@]}"

# Fail the bootstrap (and the cluster) now rather than in the first Spark task.
"$python" -c "import $imports; print('python deps ok: $imports')"
