"""featurize + pca read and write S3 themselves (S3A against a moto server), odd names among the keys."""

from __future__ import annotations

import argparse
import unicodedata

import pandas as pd
import pytest

from spark_jobs import featurize, hadoop_fs, pca
from tests.spark_jobs.test_pca import pca_args
from tests.support import S3_KMS_KEY, SAMPLE, s3_client_of

BUCKET = "fruits-s3a"
PHOTOS = sorted((SAMPLE / "apple").iterdir())[:4] + sorted((SAMPLE / "lemon").iterdir())[:4]
ODD_NAMES = [
    "pêche mûre ü.jpg",
    unicodedata.normalize("NFD", "pêche mûre ü.jpg"),  # another key: never normalised
    "100% a+b c#d?e&f=g.JPG",
    "it's \"quoted\" 🍎.jpeg",
    "-leading dash.jpg",
    "a:b [1].jpg",
    "plain.jpg",
    "x" * 200 + ".jpg",
]


def parquet_frame(s3_client, prefix: str) -> pd.DataFrame:
    import io

    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    parts = [pd.read_parquet(io.BytesIO(s3_client.get_object(Bucket=BUCKET, Key=k)["Body"].read()))
             for k in keys if k.endswith(".parquet")]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def raw_keys(s3_server):
    s3 = s3_client_of(s3_server)
    s3.create_bucket(Bucket=BUCKET)
    keys = {}
    for index, (name, photo) in enumerate(zip(ODD_NAMES, PHOTOS, strict=True)):
        label = ["fruits à l'eau", "lemon"][index % 2]
        keys[f"raw/{label}/{name}"] = photo.read_bytes()
    keys["raw/lemon/zero bytes.jpg"] = b""
    keys["raw/fruits à l'eau/truncated #1.jpg"] = PHOTOS[0].read_bytes()[:300]
    keys["raw/lemon/not an image.png"] = b"plain text, not pixels\n" * 10
    keys["raw/lemon/.kiwi, ripe #2.jpg"] = PHOTOS[1].read_bytes()  # hidden: Spark's listing skips it
    for key, body in keys.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return keys


def featurize_args(source: list[str], output: str) -> argparse.Namespace:
    return featurize.build_parser().parse_args(
        [*source, "--output", output, "--weights", "random", "--alpha", "0.35", "--image-size", "96"]
    )


@pytest.mark.parametrize("scheme", ["s3", "s3a"])
def test_featurize_and_pca_run_directly_on_s3(spark, s3_client, raw_keys, scheme):
    out = f"{scheme}://{BUCKET}/out-{scheme}"
    summary = featurize.run(spark, featurize_args(["--images", f"{scheme}://{BUCKET}/raw/"], out))
    report = pca.run(spark, pca.build_parser().parse_args(["--output", out, "--k", "2"]))

    assert summary["images_seen"] == len(raw_keys) == summary["features_rows"] + summary["quarantined"]
    features = parquet_frame(s3_client, f"out-{scheme}/features/")
    quarantine = parquet_frame(s3_client, f"out-{scheme}/quarantine/")
    expected = {f"{scheme}://{BUCKET}/{key}" for key in raw_keys}
    seen = list(features.path) + list(quarantine.path)
    assert sorted(seen) == sorted(expected)  # each key once, under its own name
    assert set(quarantine.path) == {f"{scheme}://{BUCKET}/raw/{name}" for name in
                                    ("lemon/zero bytes.jpg", "fruits à l'eau/truncated #1.jpg", "lemon/not an image.png",
                                     "lemon/.kiwi, ripe #2.jpg")}
    assert summary["quarantine_reasons"]["hidden name (a file or folder name starts with '.' or '_')"] == 1
    assert set(features.label) | set(quarantine.label) == {"fruits à l'eau", "lemon"}
    assert report["k"] == 2 and len(parquet_frame(s3_client, f"out-{scheme}/pca/")) == len(features)
    written = [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"out-{scheme}/")["Contents"]]
    assert {"featurize.json", "report.json", "pca_scatter.png"} <= {k.rsplit("/", 1)[-1] for k in written}
    heads = [s3_client.head_object(Bucket=BUCKET, Key=k) for k in written]
    assert {(h.get("ServerSideEncryption"), h.get("SSEKMSKeyId")) for h in heads} == {("aws:kms", S3_KMS_KEY)}


def test_manifest_of_s3_keys_round_trips(spark, s3_client, raw_keys, tmp_path):
    listed = [f"s3://{BUCKET}/{key}" for key in raw_keys] + [f"s3://{BUCKET}/raw/lemon/gone?.jpg"]
    manifest = f"s3://{BUCKET}/manifests/odd names.txt"
    hadoop_fs.write_bytes(spark, manifest, "".join(f"{uri}\n" for uri in listed).encode())
    out = f"s3://{BUCKET}/out-manifest"

    summary = featurize.run(spark, featurize_args(["--manifest", manifest], out))

    features = parquet_frame(s3_client, "out-manifest/features/")
    quarantine = parquet_frame(s3_client, "out-manifest/quarantine/").set_index("path")
    assert summary["images_seen"] == len(listed)
    assert sorted([*features.path, *quarantine.index]) == sorted(listed)
    assert quarantine.loc[f"s3://{BUCKET}/raw/lemon/gone?.jpg"].reason == "listed in the manifest but not found"


def test_a_saved_model_and_a_refits_corpus_are_read_and_written_on_s3(spark, s3_client, raw_keys):
    """The PCA model's life on S3 through S3A, as the DAG's steps run it in the local compute mode
    (the e2e test runs the same steps' DAG-side lifecycle in the EMR mode): day 1 fits a model into
    its own folder, day 2 applies it (same image, same coordinates), a refit of day 2 reads day 1's
    features as corpus and re-projects them into the new model's folder."""
    photos = sorted(key for key in raw_keys if key.endswith((".jpg", ".JPG", ".jpeg")) and raw_keys[key])
    again = next(key for key in photos if key.endswith("/plain.jpg"))
    days = {"day1": photos[::2], "day2": [*photos[1::2], again]}  # plain.jpg lands again on day 2
    root = f"s3://{BUCKET}/lifecycle"
    for day, keys in days.items():
        manifest = f"{root}/{day}/manifest.txt"
        hadoop_fs.write_bytes(spark, manifest, "".join(f"s3://{BUCKET}/{key}\n" for key in keys).encode())
        featurize.run(spark, featurize_args(["--manifest", manifest], f"{root}/{day}"))

    fit = pca.run(spark, pca_args(f"{root}/day1", k=2, model_output=f"{root}/models/v1", model_version="v0001"))
    applied = pca.run(spark, pca_args(f"{root}/day2", model=f"{root}/models/v1"))
    refit = pca.run(spark, pca_args(f"{root}/day2-refit", features=f"{root}/day2/features", corpus=f"{root}/day1/features",
                                    k=2, model_output=f"{root}/models/v2", model_version="v0002"))

    assert (fit["pca_fitted"], applied["pca_fitted"], applied["pca_model"], applied["k"]) == (True, False, "v0001", 2)
    by_key = lambda prefix: {row.path.removeprefix(f"s3://{BUCKET}/"): row for row in  # noqa: E731
                             parquet_frame(s3_client, prefix).itertuples()}
    day1, day2 = by_key("lifecycle/day1/pca/"), by_key("lifecycle/day2/pca/")
    assert set(day1) == set(by_key("lifecycle/day1/features/")) and set(day2) == set(by_key("lifecycle/day2/features/"))
    assert len(day1) >= 3 and again in day1 and again in day2
    assert list(day2[again].pca) == list(day1[again].pca)  # the saved model, read back from S3
    assert refit["pca_corpus"] == [{"features": f"{root}/day1/features", "pca": f"{root}/models/v2/corpus/part-00000"}]
    reprojected = by_key("lifecycle/models/v2/corpus/part-00000/")
    assert set(reprojected) == set(day1) and {row.pca_model for row in reprojected.values()} == {"v0002"}
    assert refit["pca_fit_rows"] == len(day1) + len(day2)
    saved = {o["Key"].rsplit("/", 1)[-1] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix="lifecycle/models/v2/")
             ["Contents"]}
    assert "pca_model.json" in saved
