"""Odd file and folder names round-trip: every input lands once, in features or quarantine, under
the name the user gave it (issue 10). Property-based (hypothesis) on the local filesystem and on
S3 keys through a manifest (S3A against moto), plus the original crash as a plain regression test.

Names are never normalised: an NFC and an NFD spelling are two files (two S3 keys) on Linux.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from spark_jobs import featurize, hadoop_fs
from spark_jobs.contract.model_choices import has_image_extension
from spark_jobs.featurization import image_listing
from tests.support import REPO_ROOT, SAMPLE, s3_client_of

PHOTO = sorted((SAMPLE / "apple").iterdir())[0]
IMAGE_SUFFIXES = (".jpg", ".JPG", ".jpeg", ".Jpeg", ".png", ".PNG")
# The characters the issue names, Hadoop's glob and URI specials, and both spellings of é.
SPECIAL = [" ", "%", "+", "#", "?", "&", "=", "'", '"', "é", "e\u0301", "ü", "ñ", "Ω", "🍎", "🍋", "-", ".", "_",
           "[", "]", "{", "}", "*", "\\", ",", ";", "~", "!", "$", "@", "%20", "%C3%A9", "%%", ":"]
# Any character a name can hold, but control characters and line/paragraph separators: a manifest
# is one entry per line (str.splitlines), so those names cannot be listed in one.
NAME_CHARACTERS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="/")
LEADING = ["", "", "", "-", "--", ".", "_", " ", "..."]
KINDS = ["image", "image", "image", "zero", "truncated", "text", "notes"]  # notes: .txt, not an input
EXAMPLES = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never flakes on a new one
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def utf8_cut(text: str, limit: int) -> str:
    """text shortened to at most `limit` UTF-8 bytes, on a character boundary."""
    return text.encode()[:limit].decode("utf-8", "ignore")


core = st.lists(
    st.one_of(st.sampled_from(SPECIAL), st.text(NAME_CHARACTERS, max_size=3)),
    min_size=1,
    max_size=8,
).map("".join)


@st.composite
def names(draw, suffixes: tuple[str, ...]) -> str:
    """A file or folder name: a leading dash/dot/space sometimes, odd characters, sometimes near
    the 255-byte limit of a name."""
    suffix = draw(st.sampled_from(suffixes))
    body = draw(st.sampled_from(LEADING)) + draw(core)
    if draw(st.booleans()) and draw(st.booleans()):
        body += "x" * 300
    body = utf8_cut(body, 255 - len(suffix.encode()))
    name = body + suffix
    return name if name.strip(".") else "dots" + name


@st.composite
def trees(draw) -> list[tuple[str, str, str]]:
    """(folder, file name, kind) of a few files under an image root; unique paths."""
    folders = draw(st.lists(names(("",)), min_size=1, max_size=3, unique=True))
    files = draw(st.lists(st.tuples(st.sampled_from(folders), names(IMAGE_SUFFIXES), st.sampled_from(KINDS)),
                          min_size=2, max_size=7, unique_by=lambda f: (f[0], f[1])))
    files = [(folder, utf8_cut(Path(name).stem, 240) + ".txt" if kind == "notes" else name, kind)
             for folder, name, kind in files]
    first_folder, first_name, _ = files[0]
    nfd = unicodedata.normalize("NFD", first_name)
    nfc = unicodedata.normalize("NFC", first_name)
    twin = nfd if nfd != first_name else nfc
    if twin != first_name and len(twin.encode()) <= 255 and not any(f[:2] == (first_folder, twin) for f in files):
        files.append((first_folder, twin, "image"))  # the same name in the other normal form: another file
    return list(dict.fromkeys(files))


def content(kind: str) -> bytes:
    photo = PHOTO.read_bytes()
    return {"image": photo, "zero": b"", "truncated": photo[: len(photo) // 3], "text": b"no pixels here\n" * 8,
            "notes": b"a note, not an image\n"}[kind]


def is_input(name: str) -> bool:
    """An image by its name's ending, as `--images` globs it (".jpg" alone counts: it is a hidden image)."""
    return has_image_extension(name)


def outputs(out: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(Path(out) / "features"), pd.read_parquet(Path(out) / "quarantine")


def job_args(source: list[str], output: str) -> argparse.Namespace:
    return featurize.build_parser().parse_args(
        [*source, "--output", output, "--weights", "random", "--alpha", "0.35", "--image-size", "96"]
    )


def check_invariant(summary: dict, features: pd.DataFrame, quarantine: pd.DataFrame,
                    expected: dict[str, tuple[str, str, str]], folders_hide: bool, ignored: set[str]) -> None:
    """Each input exactly once, under its own name and label; valid visible images featurized;
    every other file (`ignored`: not a photo by name) listed as ignored under its own name.
    folders_hide: a hidden folder hides its files (listing an --images root) or not (a manifest
    names each file: Spark skips only a hidden file name)."""
    assert sorted(summary["ignored_files"]) == sorted(ignored) and summary["ignored"] == len(ignored)
    assert summary["files_seen"] == len(expected) + len(ignored)

    def hidden(folder: str, name: str) -> bool:
        return hadoop_fs.is_hidden_name(name) or (folders_hide and hadoop_fs.is_hidden_name(folder))

    assert sorted([*features.path, *quarantine.path]) == sorted(expected)
    assert summary["images_seen"] == len(expected) == summary["features_rows"] + summary["quarantined"]
    for frame in (features, quarantine):
        for path, label in zip(frame.path, frame.label, strict=True):
            assert label == expected[path][0], (path, label)
    featurized = set(features.path)
    for path, (_, _name, kind) in expected.items():
        if kind == "image" and not hidden(*expected[path][:2]):
            assert path in featurized or _unaddressable(path) or _unopenable(path), path
        elif kind != "image":
            assert path not in featurized, path
    reasons = dict(zip(quarantine.path, quarantine.reason, strict=True))
    for path, (folder, name, kind) in expected.items():
        if _unopenable(path) and not hidden(folder, name) and kind != "zero":
            assert reasons[path] == image_listing.UNOPENABLE_LOCAL_REASON, path
        if hidden(folder, name) and not _unaddressable(path):
            assert reasons[path] == image_listing.HIDDEN_REASON, path


def _unaddressable(path: str) -> bool:
    return image_listing.unaddressable(path) is not None


def _unopenable(path: str) -> bool:
    """A local name with ':' (image_listing.UNOPENABLE_LOCAL_REASON); S3 keys with ':' are read."""
    return path.startswith("file:") and ":" in path.rsplit("/", 1)[-1]


def test_literal_path_inverts_hadoop_uri_encoding(spark):
    """hadoop_fs.literal_path(Path.toUri().toString()) == Path.toString(), as the JVM computes both."""
    jvm = spark.sparkContext._jvm

    @given(st.lists(names(IMAGE_SUFFIXES + ("",)), min_size=1, max_size=3), st.sampled_from(["file:", "s3a://b", "s3://b"]))
    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    def check(parts: list[str], base: str) -> None:
        path = jvm.org.apache.hadoop.fs.Path(base + "/" + "/".join(parts))
        encoded = str(path.toUri().toString())
        assert hadoop_fs.literal_path(encoded) == str(path.toString())
        assert hadoop_fs.literal_path(encoded) == str(jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(encoded)).toString())

    check()


# What hypothesis found before the fixes: a local name with ':' (Hadoop's checksum sidecar name
# parsed as a URI failed the whole job) and "..jpg" (an image extension posixpath.splitext denies).
FOUND = [(" ", " .jpg", "image"), (" ", ":.jpg", "image"), (" ", "..jpg", "image"), ("-a:b", "c d.jpg", "zero")]


@EXAMPLES
@given(tree=trees())
@example(tree=FOUND)
def test_odd_local_names_round_trip(spark, tree):
    with tempfile.TemporaryDirectory(prefix="fruits-names-") as scratch:
        root = Path(scratch) / "images ü #1 100%"
        expected, ignored = {}, set()
        for folder, name, kind in tree:
            path = root / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content(kind))
            if is_input(name):
                expected[f"file:{path}"] = (folder, name, kind)
            else:
                ignored.add(f"file:{path}")
        out = str(Path(scratch) / "out")

        summary = featurize.run(spark, job_args(["--images", str(root)], out))

        check_invariant(summary, *outputs(out), expected, folders_hide=True, ignored=ignored)


@EXAMPLES
@given(tree=trees())
@example(tree=FOUND)
def test_odd_s3_keys_round_trip_through_a_manifest(spark, s3_server, tree):
    s3 = s3_client_of(s3_server)
    bucket = "fruits-names"
    s3.create_bucket(Bucket=bucket)
    run = f"run-{abs(hash(tuple(tree)))}"
    expected, listed = {}, []
    for folder, name, kind in tree:
        key = f"{run}/raw/{folder}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=content(kind))
        listed.append(f"s3://{bucket}/{key}")
        if is_input(name):
            expected[f"s3://{bucket}/{key}"] = (folder, name, kind)
    manifest = f"s3://{bucket}/{run}/manifest.txt"
    hadoop_fs.write_bytes(spark, manifest, "".join(f"{uri}\n" for uri in listed).encode())
    out = f"s3://{bucket}/{run}/out"

    summary = featurize.run(spark, job_args(["--manifest", manifest], out))

    features, quarantine = (s3_parquet(s3, bucket, f"{run}/out/{part}/") for part in ("features", "quarantine"))
    not_inputs = {uri for uri in listed if uri not in expected}  # .txt: ignored, listed by name
    check_invariant(summary, features, quarantine, expected, folders_hide=False, ignored=not_inputs)


def s3_parquet(s3, bucket: str, prefix: str) -> pd.DataFrame:
    import io

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return pd.concat([pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read()))
                      for k in keys if k.endswith(".parquet")], ignore_index=True)


@pytest.mark.spark  # run_local in a child process
def test_zero_byte_file_beside_an_accented_name_no_longer_crashes(tmp_path):
    """The run of issue 10: `run_local` over a folder with a zero-byte file and "pêche mûre ü.jpg"
    crashed in unscanned_files -> hadoop_fs.size on a URI-encoded path."""
    images = tmp_path / "images" / "apple"
    images.mkdir(parents=True)
    photos = sorted((SAMPLE / "apple").iterdir())
    shutil.copy(photos[0], images / "pêche mûre ü.jpg")
    shutil.copy(photos[1], images / "plain.jpg")  # another photo: PCA needs some variance
    (images / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "local_spark.run_local", "--images", str(tmp_path / "images"), "--output", str(out),
         "--weights", "random", "--alpha", "0.35", "--image-size", "96", "--k", "1", "--master", "local[1]"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    features, quarantine = outputs(str(out))
    assert sorted(features.path) == sorted([f"file:{images}/pêche mûre ü.jpg", f"file:{images}/plain.jpg"])
    assert list(zip(quarantine.path, quarantine.reason, strict=True)) == [(f"file:{images}/empty.jpg", "empty file (0 bytes)")]
    assert set(features.label) | set(quarantine.label) == {"apple"}
