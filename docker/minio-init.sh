#!/bin/sh
# One-shot MinIO setup for local development: create the bucket and upload the bundled
# sample images (data/sample/<label>/<file>.jpg, mounted at /sample) to s3://$FRUITS_BUCKET/raw/.
# Safe to re-run: the bucket is kept and files already there are overwritten with the same bytes.
set -eu

: "${MINIO_ENDPOINT:?set MINIO_ENDPOINT, e.g. http://minio:9000}"
: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER in .env}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD in .env}"
: "${FRUITS_BUCKET:?set FRUITS_BUCKET in .env}"
SAMPLE_DIR="${SAMPLE_DIR:-/sample}"

if ! ls "${SAMPLE_DIR}"/*/* >/dev/null 2>&1; then
    echo "minio-init: no images under ${SAMPLE_DIR}; is ./data/sample mounted and populated?" >&2
    exit 1
fi

mc alias set local "${MINIO_ENDPOINT}" "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}"
mc mb --ignore-existing "local/${FRUITS_BUCKET}"
# Only the <label>/<image> tree goes to raw/; NOTICE.md and other top-level files stay out.
mc mirror --overwrite --exclude "*.md" "${SAMPLE_DIR}" "local/${FRUITS_BUCKET}/raw"
echo "minio-init: s3://${FRUITS_BUCKET}/raw/ holds $(mc find "local/${FRUITS_BUCKET}/raw" | wc -l) objects"
