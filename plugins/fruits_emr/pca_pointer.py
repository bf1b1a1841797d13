"""The PCA pointer `<output_prefix>_pca_models/_CURRENT.json`: the model version readers use, the corpus
in its space, and which attempt of each run date the corpus is made of. Every change to it is an S3
conditional write, so two runs can never both replace one version of it.

    version, number, model, k, fitted_run_date   the current model (model: its folder)
    corpus     {run date: URI of the date's reduced rows in that model's space}
    committed  {run date: the attempt folder whose features/, quarantine/ and images.json are the date's}
    retired    {run date: {image URI: ETag}}: rows of that date that no longer count (the image was
               deleted, or a newer version of it is committed, or another date holds the same version)
    updated_by, updated_at

`update` reads the pointer with its ETag, asks `change` for the new content and writes it with
If-Match on that ETag (If-None-Match "*" when there is none yet). When another run wrote in between,
it reads again and asks again, a bounded number of times: a change that merges (an apply adding its
date beside another's) goes through; one that cannot (two fits) raises CommitConflict from `change`,
whose message says what to do.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fruits_emr.layout import attempt_of, commit_key, pca_pointer_key
from fruits_emr.s3_objects import (
    RunOutputError,
    put_json_if_unchanged,
    read_json_object,
    read_json_with_etag,
    read_many,
)
from fruits_emr.settings import RunConfig
from fruits_emr.task_records import PcaPlan
from spark_jobs.contract.run_files import PCA, PCA_CORPUS_PART

log = logging.getLogger(__name__)

WRITE_TRIES = 8  # conditional writes of one change before giving up (another run kept writing)
BACKOFF_SECONDS = 0.2  # first pause between tries, doubled each time, with jitter


class CommitConflict(RunOutputError):
    """Another run changed the pointer in a way this run's commit cannot be merged with."""


class PointerBusy(RuntimeError):
    """The pointer changed under every try: a retry of the task (a later moment) can succeed."""


def read_pointer(s3: Any, config: RunConfig) -> tuple[dict[str, Any] | None, str | None]:
    """(pointer, ETag), or (None, None) before the first commit."""
    return read_json_with_etag(s3, config.bucket, pca_pointer_key(config))


def committed_attempts(s3: Any, config: RunConfig, pointer: Mapping[str, Any] | None) -> dict[str, str]:
    """{run date: attempt folder URI} the pointer's corpus is made of. A pointer written before it
    recorded them: each corpus date's _COMMITTED.json."""
    if not pointer:
        return {}
    if "committed" in pointer:
        return dict(pointer["committed"])
    dates = sorted(pointer.get("corpus") or {})
    records = read_many(lambda date: read_json_object(s3, config.bucket, commit_key(config, date)), dates)
    return {date: str(record["output"]) for date, record in zip(dates, records, strict=True) if record}


def retired_rows(pointer: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """{run date: {image URI: ETag}} of the rows the pointer's corpus leaves out (a copy)."""
    return {date: dict(rows) for date, rows in ((pointer or {}).get("retired") or {}).items()}


def with_retired(retired: Mapping[str, Mapping[str, str]], date: str, rows: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """retired plus rows of date (a copy; a date with no rows left out is dropped)."""
    merged = {d: dict(r) for d, r in retired.items()}
    if rows:
        merged.setdefault(date, {}).update(rows)
    return {d: dict(sorted(r.items())) for d, r in sorted(merged.items()) if r}


def update(
    s3: Any, config: RunConfig, change: Callable[[dict[str, Any] | None, dict[str, str]], dict[str, Any] | None],
    sse: dict[str, str], what: str,
) -> dict[str, Any] | None:
    """Replace the pointer with change(current, its committed attempts), written only over the version
    read; when another writer came first, read and ask again (WRITE_TRIES times). change returns None
    when there is nothing to write (e.g. an earlier try of the task already wrote it). Returns the
    pointer now in S3."""
    pause = BACKOFF_SECONDS
    for attempt in range(1, WRITE_TRIES + 1):
        current, etag = read_pointer(s3, config)
        new = change(current, committed_attempts(s3, config, current))
        if new is None:
            return current
        if put_json_if_unchanged(s3, config.bucket, pca_pointer_key(config), new, etag, sse):
            if attempt > 1:
                log.info("%s: written at try %d (another run had changed the PCA pointer)", what, attempt)
            return new
        log.info("%s: the PCA pointer changed since it was read (try %d of %d); reading it again",
                 what, attempt, WRITE_TRIES)
        time.sleep(pause * (0.5 + random.random()))
        pause *= 2
    raise PointerBusy(f"{what}: s3://{config.bucket}/{pca_pointer_key(config)} changed under each of {WRITE_TRIES}"
                      " conditional writes (other runs committing); the task's retry will try again.")


# --- a run's commit ---------------------------------------------------------------------------------

Versions = dict[str, str | None]  # {image URI: ETag} of an attempt (its images.json)


@dataclass
class RunChange:
    """How one run's commit changes the pointer: its date now names its attempt (and its reduced rows,
    in the plan's model space; a fit: the whole corpus re-projected), the rows its selection found
    deleted or replaced are retired, and an image another date committed since the selection is kept
    once. Called by `update` with the pointer as it is now, as often as another writer comes first."""

    run_date: str
    output: str  # this attempt's folder URI
    plan: PcaPlan
    seen: dict[str, str]  # the pointer's committed attempts when the run selected its images
    own: Versions  # this attempt's images.json
    retire: dict[str, dict[str, str]]  # {run date: {uri: ETag}} the selection found no longer current
    versions_of: Callable[[str], Versions]  # an attempt's images.json (folder URI)
    etag_now: Callable[[str], str | None]  # an image's ETag now (URI)
    k: int
    run_id: str
    now: str
    resolved: dict[str, int] = field(default_factory=dict)  # what the last call retired, for the log

    def __call__(self, current: dict[str, Any] | None, attempts: dict[str, str]) -> dict[str, Any] | None:
        if attempts.get(self.run_date) == self.output:
            return None  # an earlier try of this task wrote it
        problem = self.conflict(current, attempts)
        if problem:
            raise CommitConflict(problem)
        plan, date = self.plan, self.run_date
        if plan.fit:
            corpus = {entry.run_date: f"{plan.model}/{PCA_CORPUS_PART.format(index=index)}"
                      for index, entry in enumerate(plan.corpus)}
            committed = {entry.run_date: attempts[entry.run_date] for entry in plan.corpus}
            retired = {d: rows for d, rows in retired_rows(current).items() if d in corpus}
            fitted = {"fitted_run_date": date, "k": self.k}
        else:
            current = current or {}
            corpus, committed, retired = dict(current.get("corpus") or {}), dict(attempts), retired_rows(current)
            fitted = {"fitted_run_date": current.get("fitted_run_date"), "k": current.get("k")}
        corpus[date], committed[date] = f"{self.output}/{PCA}", self.output
        retired.pop(date, None)  # this attempt replaces the date's rows
        retired = self.retired_now(retired, committed)
        return {"version": plan.version, "number": plan.number, "model": plan.model, **fitted,
                "corpus": dict(sorted(corpus.items())), "committed": dict(sorted(committed.items())),
                "retired": retired, "updated_by": self.run_id, "updated_at": self.now}

    def retired_now(self, retired: dict[str, dict[str, str]], committed: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """retired plus the selection's retire list (where the date's attempt is still the one it saw),
        plus one row of each image this attempt and a date committed since the selection both hold."""
        self.resolved = {"deleted or replaced": 0, "held twice": 0}
        for date, rows in self.retire.items():
            if date != self.run_date and date in committed and committed[date] == self.seen.get(date):
                retired = with_retired(retired, date, rows)
                self.resolved["deleted or replaced"] += len(rows)
        for date, output in sorted(committed.items()):
            if date == self.run_date or self.seen.get(date) == output:
                continue
            theirs = self.versions_of(output)
            for uri in sorted(self.own.keys() & theirs.keys()):
                if uri in retired.get(date, {}):
                    continue
                mine, other = self.own[uri], theirs[uri]
                now = mine if other in (mine, None) else self.etag_now(uri)
                # the other date committed first: it keeps an identical row; a stale row goes
                if other in (mine, None) or now != mine:
                    retired = with_retired(retired, self.run_date, {uri: mine or ""})
                if other not in (mine, None) and now != other:
                    retired = with_retired(retired, date, {uri: other})
                self.resolved["held twice"] += 1
        return retired

    def conflict(self, current: dict[str, Any] | None, attempts: Mapping[str, str]) -> str | None:
        """Why this commit cannot be merged with the pointer as it is now (None: it can)."""
        plan, date = self.plan, self.run_date
        who = f"run {current.get('updated_by')!r}" if current else "another run"
        found = int(current["number"]) if current else None
        if found != plan.pointer_number:
            if plan.fit:
                return (f"{who} committed PCA model {current['version'] if current else 'none'} after this run"
                        f" planned its fit of {plan.version}: only one fit can be the current model, and this run's"
                        f" ({plan.model}) is left unused. Clear this run from plan_pca: it plans again on the current"
                        " pointer (a refit_pca run fits the next version on the whole corpus, any other run applies"
                        " the current model).")
            return (f"{who} moved the PCA pointer to {current['version'] if current else 'nothing'} after this run"
                    f" planned to apply {plan.version}: this run's reduced rows are in {plan.version}'s space, which"
                    " the corpus no longer uses. Clear this run from plan_pca: it runs the steps again and applies"
                    " the current model.")
        if attempts.get(date) != self.seen.get(date):
            now = attempts.get(date)
            return (f"run_date {date} was committed by {who} (attempt {attempt_of(now) if now else 'none'}) after"
                    f" this run selected its images: committing this attempt would drop what that one holds."
                    " Clear this run from find_new_images: the new attempt takes the date's committed images and"
                    " whatever is still pending.")
        if plan.fit:
            others = {d: a for d, a in attempts.items() if d != date}
            planned = {d: a for d, a in plan.planned_on.items() if d != date}
            if others != planned:
                changed = sorted(d for d in others.keys() | planned.keys() if others.get(d) != planned.get(d))
                return (f"{who} committed run dates {', '.join(changed)} after this run planned its fit of"
                        f" {plan.version} on {len(planned)} other dates: the new model's corpus would not hold"
                        " them. Clear this run from plan_pca to fit again on the whole corpus.")
        return None
