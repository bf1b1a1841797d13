"""Local Spark's JVM options (local_spark.jvm_options) and its class archive (local_spark.class_archive):
C1 only, the caller's options, the archive once built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from local_spark import class_archive, jvm_options
from tests.support import FORCE_F2J_LAPACK, REPO_ROOT

F2J_OPTION = FORCE_F2J_LAPACK["spark.driver.extraJavaOptions"]


def test_the_session_jvm_runs_c1_only_with_the_archive_when_built_and_the_callers_options(spark):
    """The session fixture passes its own JVM option (F2J LAPACK): every option is in effect."""
    jvm = spark.sparkContext._jvm
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    expected = jvm_options.local_jvm_options(F2J_OPTION).split()
    assert jvm_options.LOCAL_JVM_OPTIONS in expected and F2J_OPTION in expected
    assert set(expected) <= set(arguments)


def test_the_archive_is_used_only_once_it_is_there(tmp_path, monkeypatch):
    monkeypatch.setenv(jvm_options.CACHE_ENV, str(tmp_path))
    archive = jvm_options.archive_path()
    assert archive is not None and archive.parent == tmp_path
    assert jvm_options.local_jvm_options("-Dx=1") == f"{jvm_options.LOCAL_JVM_OPTIONS} -Dx=1"
    archive.write_bytes(b"")
    assert jvm_options.local_jvm_options("-Dx=1") == f"{jvm_options.LOCAL_JVM_OPTIONS} -XX:SharedArchiveFile={archive} -Dx=1"


def test_archives_of_a_class_path_that_is_gone_or_changed_are_removed(tmp_path):
    jars = {name: tmp_path / name / "spark-core.jar" for name in ("kept", "gone", "changed")}
    for name, jar in jars.items():
        jar.parent.mkdir()
        jar.write_bytes(b"jar")
        (tmp_path / f"{name}.jsa").write_bytes(b"archive")
        (tmp_path / f"{name}.json").write_text(json.dumps({"class_path": jvm_options.file_identities([jar])}))
    jars["gone"].unlink()
    jars["changed"].write_bytes(b"another jar")  # a re-created virtualenv: same path, other file
    class_archive.remove_stale_archives(tmp_path)
    assert sorted(path.name for path in tmp_path.glob("*.js*")) == ["kept.jsa", "kept.json"]


@pytest.mark.spark  # builds the archive with local Spark in child processes
def test_a_built_archive_is_mapped_by_the_next_local_spark(tmp_path, monkeypatch):
    """`python -m local_spark.class_archive` (what make setup runs) builds the archive; a local Spark
    started with -Xshare:on (the JVM refuses to start unless it maps the archive) then runs a job."""
    monkeypatch.setenv(jvm_options.CACHE_ENV, str(tmp_path))
    env = {**os.environ, jvm_options.CACHE_ENV: str(tmp_path)}
    built = subprocess.run([sys.executable, "-m", "local_spark.class_archive"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    archive = jvm_options.archive_path()
    assert f"local Spark class archive: {archive}" in built.stdout
    assert archive.is_file() and archive.stat().st_size > 0
    assert sorted(path.name for path in archive.parent.iterdir()) == [archive.name, archive.with_suffix(".json").name]
    job = textwrap.dedent(f"""
        from local_spark.session import local_spark
        spark = local_spark("local[1]", "1g", {{"spark.driver.extraJavaOptions": "-Xshare:on"}})
        arguments = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
        assert "-XX:SharedArchiveFile={archive}" in arguments, arguments
        print("rows", spark.range(5).count())
    """)
    started = subprocess.run([sys.executable, "-c", job], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr[-3000:]
    assert "rows 5" in started.stdout
