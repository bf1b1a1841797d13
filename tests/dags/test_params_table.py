"""docs/dag.md's Params table is the one scripts/params_table.py renders from the DAG's Params."""

from __future__ import annotations

import pytest

from scripts import params_table
from scripts.doc_blocks import read_block, write_block


@pytest.fixture(scope="module")
def params():
    return params_table.load_params()


def test_committed_params_table_is_the_generated_one(params):
    assert params_table.committed_table() == params_table.render(params), (
        "docs/dag.md's Params table differs from the DAG's Params: run `make docs` and commit docs/dag.md"
    )


def test_table_has_one_row_per_param_with_its_default_and_description(params):
    rows = params_table.render(params).splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [f"| `{name}`" for name in params]
    count = next(row for row in rows if row.startswith("| `core_instance_count` |"))
    assert "integer: ≥ 1, ≤ 20" in count and "| `2` |" in count  # FRUITS_* from the shell never leak in
    bucket = next(row for row in rows if row.startswith("| `bucket` |"))
    assert "string or empty: ≤ 63 characters |  |" in bucket and params.get_param("bucket").description in bucket


def test_params_of_the_environment_do_not_change_the_table(params, monkeypatch):
    monkeypatch.setenv("FRUITS_CORE_INSTANCE_COUNT", "7")
    monkeypatch.setenv("FRUITS_MAX_CORE_INSTANCES", "9")
    assert params_table.render(params_table.load_params()) == params_table.render(params)


def test_write_block_replaces_only_between_the_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# t\n\nbefore\n<!-- params:start -->\nold\n<!-- params:end -->\nafter\n")
    write_block(doc, "params", "| new |\n")
    assert doc.read_text() == "# t\n\nbefore\n<!-- params:start -->\n| new |\n<!-- params:end -->\nafter\n"
    assert read_block(doc, "params") == "| new |"
    with pytest.raises(ValueError, match="no <!-- bench:start --> ... <!-- bench:end --> markers"):
        write_block(doc, "bench", "x")
