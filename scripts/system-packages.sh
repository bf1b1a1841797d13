#!/usr/bin/env bash
# Debian packages the tests and jobs need beyond Python: installs the missing ones when run as root
# with apt-get, otherwise stops naming the exact command to run. Called by `make setup` and .ci/run.
#   Java 17 (Spark), chromium (the UI tests' browser), postgresql (the UI tests' Airflow metadata DB)
#   and Node.js with npm (the IAM policy simulator of tests/fruits_emr/test_iam_conditions.py).
#   docker.io and debootstrap: the compose test (tests/integration/compose/test_stack_run.py) starts
#   Debian's dockerd and builds its stand-in images on a debootstrap'd Debian (docs/testing.md).
#   No native BLAS/LAPACK: the PCA fit never uses Spark's LAPACK (docs/pca.md).
set -euo pipefail
missing=()
command -v java >/dev/null || [ -n "${JAVA_HOME:-}" ] || missing+=(openjdk-17-jre-headless)
dpkg -s chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# an engine of its own (dockerd, in /usr/sbin outside root's PATH) or one that answers (Docker Desktop)
command -v dockerd >/dev/null || [ -x /usr/sbin/dockerd ] || docker info >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "error: missing system packages. Run as root:" >&2
echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
exit 1
