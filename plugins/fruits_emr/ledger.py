"""What committed runs processed: the ledger a run's selection subtracts from the raw prefix.

The PCA pointer is the one object that says which attempt of each run date the corpus is made of
(pca_pointer: "committed"), and each attempt lists the image versions it processed in its
images.json ({image URI: ETag}, written by find_new_images before any job ran). The ledger is those
versions less the pointer's "retired" rows: one GET of the pointer, then one GET per committed run
date, PARALLEL_READS at a time. Its cost grows with the number of committed dates (one a day, plus
one per event run), never with how many runs there were, and it holds exactly what the corpus holds,
whatever the images' timestamps say.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from fruits_emr import pca_pointer
from fruits_emr.layout import IMAGES_FILE
from fruits_emr.s3_objects import read_many
from fruits_emr.settings import RunConfig
from spark_jobs.contract.run_files import MANIFEST_FILE, parse_manifest
from spark_jobs.contract.s3_uri import is_not_found, split_s3_uri

log = logging.getLogger(__name__)


def attempt_versions(s3: Any, output_uri: str) -> dict[str, str | None]:
    """{image URI: ETag} an attempt processed (its images.json; an attempt made before images.json
    existed: its manifest's URIs, version None: any version counts as processed; a folder with
    neither, e.g. find_new_images stopped before its manifest: nothing)."""
    bucket, key = split_s3_uri(f"{output_uri.rstrip('/')}/{IMAGES_FILE}")
    for name in (IMAGES_FILE, MANIFEST_FILE):
        try:
            body = s3.get_object(Bucket=bucket, Key=key.removesuffix(IMAGES_FILE) + name)["Body"].read()
        except ClientError as exc:
            if not is_not_found(exc):
                raise
            continue
        return json.loads(body) if name == IMAGES_FILE else dict.fromkeys(parse_manifest(body.decode()))
    log.warning("%s has neither %s nor %s: it selected nothing", output_uri, IMAGES_FILE, MANIFEST_FILE)
    return {}


@dataclass
class Ledger:
    """The pointer as read (content and ETag), its committed attempts, and the image versions that
    count as processed: live[uri] = (run date, ETag) of the first date holding uri; a uri held by
    more than one date (a race the next commit resolves) has its other holders in `more`."""

    pointer: dict[str, Any] | None
    etag: str | None
    attempts: dict[str, str]
    live: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    more: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)

    def holders(self, uri: str) -> list[tuple[str, str | None]]:
        """(run date, ETag) of every committed row of uri that counts."""
        first = self.live.get(uri)
        return [] if first is None else [first, *self.more.get(uri, [])]

    def holds(self, uri: str, etag: str, except_date: str | None = None) -> bool:
        """True when a committed date other than except_date holds this version of the image."""
        return any(date != except_date and version in (etag, None) for date, version in self.holders(uri))

    def rows(self) -> Iterator[tuple[str, str, str | None]]:
        """(image URI, run date, ETag) of every row that counts."""
        for uri, (date, etag) in self.live.items():
            yield uri, date, etag
            for other_date, other_etag in self.more.get(uri, []):
                yield uri, other_date, other_etag

    def date_versions(self, run_date: str) -> dict[str, str | None]:
        """{image URI: ETag} of the rows of one date that count."""
        return {uri: etag for uri, date, etag in self.rows() if date == run_date}

    @property
    def committed_rows(self) -> int:
        return len(self.live) + sum(len(more) for more in self.more.values())


def build_ledger(
    pointer: dict[str, Any] | None, etag: str | None, attempts: Mapping[str, str],
    versions: Mapping[str, Mapping[str, str | None]],
) -> Ledger:
    """The ledger of the dates' versions ({run date: {uri: ETag}}) less the pointer's retired rows."""
    ledger = Ledger(pointer, etag, dict(attempts))
    retired = pca_pointer.retired_rows(pointer)
    for date in sorted(versions):
        left_out = retired.get(date, {})
        for uri, version in versions[date].items():
            if uri in left_out:
                continue
            if uri in ledger.live:
                ledger.more.setdefault(uri, []).append((date, version))
            else:
                ledger.live[uri] = (date, version)
    return ledger


def read_ledger(s3: Any, config: RunConfig) -> Ledger:
    """The ledger as the PCA pointer has it now."""
    pointer, etag = pca_pointer.read_pointer(s3, config)
    attempts = pca_pointer.committed_attempts(s3, config, pointer)
    dates = sorted(attempts)
    versions = dict(zip(dates, read_many(lambda date: attempt_versions(s3, attempts[date]), dates), strict=True))
    ledger = build_ledger(pointer, etag, attempts, versions)
    log.info("ledger: %d committed run dates, %d image versions processed (PCA model %s)", len(dates),
             ledger.committed_rows, (pointer or {}).get("version", "none yet"))
    return ledger
