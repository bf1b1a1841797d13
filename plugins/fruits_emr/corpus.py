"""The reduced corpus as downstream DAGs see it: the Asset that commit_outputs updates after each
commit, what its events carry, and what the example consumer DAG (dags/fruits_corpus_check.py) does
with the corpus: read it through `commits.reduced_corpus`, count rows per label and run date, and
score a nearest-centroid classifier on a held-out split (docs/downstream.md).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

from fruits_emr.layout import commit_key, pca_pointer_key
from fruits_emr.s3_objects import RunOutputError, list_objects
from fruits_emr.settings import RunConfig
from fruits_emr.task_records import PcaPlan, RunCommit
from spark_jobs.contract.s3_uri import split_s3_uri

# name-only, like the S3-events asset: a logical dataset; its events' extra say where it is
REDUCED_CORPUS = Asset(name="fruits_reduced_corpus")
HOLDOUT_FRACTION = 0.25
SEED = 42


def event_extra(config: RunConfig, record: RunCommit, plan: PcaPlan) -> dict[str, Any]:
    """What a commit changed, for the asset event: the run date, its counts, the PCA model version the
    corpus is now in, and where to read it (the pointer; bucket and output prefix for the reader)."""
    return {
        "run_date": record.run_date,
        "images": record.images,
        "features_rows": record.features_rows,
        "quarantined": record.quarantined,
        "pca_model_version": plan.version,
        "pca_fitted": plan.fit,
        "pointer": f"s3://{config.bucket}/{pca_pointer_key(config)}",
        "commit": f"s3://{config.bucket}/{commit_key(config, record.run_date)}",
        "bucket": config.bucket,
        "output_prefix": config.output_prefix,
        "dag_run_id": record.dag_run_id,
    }


def read_rows(s3: Any, corpus: Mapping[str, Any]) -> Any:
    """Every reduced row of the corpus `commits.reduced_corpus` returned, as one pandas DataFrame
    (path, label, pca, pca_model, run_date)."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = []
    for run_date, uri in sorted(corpus["parts"].items()):
        bucket, key = split_s3_uri(uri)
        parts = [obj["Key"] for obj in list_objects(s3, bucket, key.rstrip("/") + "/")
                 if obj["Key"].endswith(".parquet")]
        if not parts:
            raise RunOutputError(f"the corpus part of {run_date}, {uri}, holds no Parquet file")
        for part in parts:
            table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=part)["Body"].read()),
                                  columns=["path", "label", "pca", "pca_model"])
            frames.append(table.to_pandas().assign(run_date=run_date))
    return pd.concat(frames, ignore_index=True)


def nearest_centroid_accuracy(rows: Any, holdout_fraction: float = HOLDOUT_FRACTION, seed: int = SEED) -> dict[str, Any]:
    """Accuracy of scikit-learn's NearestCentroid on a stratified held-out split of the PCA vectors.

    Labels with a single row cannot be both trained and tested: they are left out and named. The
    held-out part holds at least one row per label and leaves one per label to train on."""
    import numpy as np
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import NearestCentroid

    counts = rows["label"].value_counts()
    single = sorted(counts[counts < 2].index)
    usable = rows[~rows["label"].isin(single)]
    labels = usable["label"].nunique()
    if labels < 2:
        return {"accuracy": None, "reason": "needs two labels with two rows or more", "left_out_labels": single}
    held_out = min(len(usable) - labels, max(labels, math.ceil(holdout_fraction * len(usable))))
    vectors = np.stack(usable["pca"].to_numpy()).astype("float64")
    train_x, test_x, train_y, test_y = train_test_split(
        vectors, usable["label"].to_numpy(), test_size=held_out, stratify=usable["label"], random_state=seed)
    accuracy = float(NearestCentroid().fit(train_x, train_y).score(test_x, test_y))
    return {"accuracy": round(accuracy, 4), "train_rows": len(train_y), "test_rows": len(test_y),
            "left_out_labels": single}


def check(rows: Any, version: str) -> dict[str, Any]:
    """The consumer's report: row counts per label and per run date, the model version, the accuracy."""
    models = sorted(set(rows["pca_model"]))
    if models != [version]:
        raise RunOutputError(f"the corpus of PCA model {version} holds rows of models {models}")
    return {
        "pca_model_version": version,
        "rows": len(rows),
        "rows_per_label": {label: int(n) for label, n in sorted(rows["label"].value_counts().items())},
        "rows_per_run_date": {date: int(n) for date, n in sorted(rows["run_date"].value_counts().items())},
        "dimensions": len(rows["pca"].iloc[0]),
        "nearest_centroid": nearest_centroid_accuracy(rows),
    }
