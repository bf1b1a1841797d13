"""The node wheelhouse (plugins/fruits_emr/wheelhouse.py): its pins and how it is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruits_emr import wheelhouse
from fruits_emr.wheelhouse import read_pins
from tests.support import REPO_ROOT


def test_node_constraints_file_is_current():
    """emr/constraints-emr.txt = every node package and dependency, versions from constraints.txt."""
    assert (REPO_ROOT / "emr" / "constraints-emr.txt").read_text() == wheelhouse.node_constraints(REPO_ROOT), (
        "emr/constraints-emr.txt is out of date: python -m fruits_emr.wheelhouse constraints"
        " > emr/constraints-emr.txt")


def test_node_pins_come_from_the_repo_constraints():
    repo = read_pins(REPO_ROOT / "constraints.txt")
    nodes = read_pins(REPO_ROOT / "emr" / "constraints-emr.txt")
    assert {"numpy", "pandas", "pyarrow", "onnxruntime", "botocore", "protobuf", "tensorflow-cpu"} <= set(nodes)
    assert {name: nodes[name] for name in repo.keys() & nodes.keys()} == {name: repo[name] for name in repo.keys() & nodes.keys()}
    assert set(nodes) - set(repo) <= set(wheelhouse.FREEZE_OMITS)
    for name in ("requirements-emr.txt", "requirements-emr-tensorflow.txt"):
        for package, pinned in read_pins(REPO_ROOT / "emr" / name).items():
            assert nodes[package] == pinned, f"{name}: {package}=={pinned}, constraints-emr.txt {nodes[package]}"


def test_download_command_targets_the_nodes_platform():
    command = wheelhouse.download_command("/py", Path("/w"), [Path("a.txt"), Path("b.txt")], Path("c.txt"))
    assert command[:4] == ["/py", "-m", "pip", "download"]
    joined = " ".join(command)
    # AL2023's glibc 2.34 and below (numpy 2.4 has no manylinux2014 wheel), never above
    assert "--platform manylinux_2_34_x86_64" in joined and "manylinux_2_35" not in joined
    for part in ("--only-binary=:all:", "--platform manylinux_2_28_x86_64", "--platform manylinux2014_x86_64",
                 "--python-version 3.11",
                 "--implementation cp", "--dest /w", "-c c.txt", "-r a.txt", "-r b.txt"):
        assert part in joined


def test_built_wheelhouse_is_reused_per_content_hash(tmp_path):
    """A complete wheelhouse in the cache is returned without running pip (a bogus interpreter proves it)."""
    requirements = tmp_path / "requirements-emr.txt"
    constraints = tmp_path / "constraints-emr.txt"
    requirements.write_text("numpy==2.4.6\n")
    constraints.write_text("numpy==2.4.6\n")
    cached = tmp_path / "cache" / wheelhouse.wheelhouse_hash([requirements, constraints])
    cached.mkdir(parents=True)
    (cached / wheelhouse.COMPLETE_MARKER).write_text("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.whl\n")
    assert wheelhouse.build_wheelhouse([requirements], constraints, tmp_path / "cache", python="/nonexistent") == cached
    constraints.write_text("numpy==2.4.5\n")  # other pins: another hash, so a build (which fails here)
    with pytest.raises((RuntimeError, FileNotFoundError)):
        wheelhouse.build_wheelhouse([requirements], constraints, tmp_path / "cache", python="/nonexistent")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [cached.name]  # no half-built folder left
