"""The Params table of docs/dag.md, generated from the DAG's own Params (their one source).

    python -m scripts.params_table          # rewrite the table (`make docs`)

Loads dags/fruits_features.py as Airflow does (DagBag) with no FRUITS_*
environment variable set, so the defaults are the code's, and renders `dag.params`.
`tests/dags/test_params_table.py` fails when the committed table differs from this one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from scripts.doc_blocks import read_block, write_block

REPO_ROOT = Path(__file__).resolve().parents[1]
DAGS = REPO_ROOT / "dags"
DAG_DOC = REPO_ROOT / "docs" / "dag.md"
BLOCK = "params"
DAG_ID = "fruits_features"
ENV_PREFIX = "FRUITS_"


def load_params() -> Any:
    """The `params` of the DAG as parsed with no FRUITS_* variable in the environment."""
    from airflow.dag_processing.dagbag import DagBag

    saved = {name: value for name, value in os.environ.items() if name.startswith(ENV_PREFIX)}
    for name in saved:
        del os.environ[name]
    try:
        bag = DagBag(dag_folder=str(DAGS))
    finally:
        os.environ.update(saved)
    if DAG_ID not in bag.dags:
        raise RuntimeError(f"{DAGS} did not load {DAG_ID}: {bag.import_errors or 'no such DAG'}")
    return bag.dags[DAG_ID].params


def schema_text(schema: dict[str, Any]) -> str:
    """A Param's JSON schema in words: its type, then what the schema allows."""
    types = schema.get("type", "any")
    types = [types] if isinstance(types, str) else list(types)
    words = " or ".join(t for t in types if t != "null")
    if words == "array" and "items" in schema:
        words = f"array of {schema['items'].get('type', 'any')}"
    if "null" in types:
        words += " or empty"
    limits = []
    if "enum" in schema:
        limits.append("one of " + ", ".join(f"`{value}`" for value in schema["enum"]))
    for key, sign in (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤")):
        if key in schema:
            limits.append(f"{sign} {schema[key]}")
    if "minItems" in schema or "maxItems" in schema:
        limits.append(f"{schema.get('minItems', 0)}–{schema.get('maxItems', '∞')} items")
    if schema.get("minLength"):
        limits.append("not empty")
    if "maxLength" in schema:
        limits.append(f"≤ {schema['maxLength']} characters")
    return words + (": " + ", ".join(limits) if limits else "")


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no HTML tags, no column breaks)."""
    return text.replace("<", "&lt;").replace("|", "\\|")


def render(params: Any) -> str:
    """The Markdown table: one row per Param, in the DAG's order."""
    lines = ["| Param | type | default | description |", "|---|---|---|---|"]
    for name in params:
        param = params.get_param(name)
        default = "" if param.value in (None, "") else f"`{json.dumps(param.value)}`"
        lines.append(f"| `{name}` | {cell(schema_text(param.schema))} | {default} | {cell(param.description or '')} |")
    return "\n".join(lines)


def committed_table() -> str:
    return read_block(DAG_DOC, BLOCK)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fruits-params-table-") as home:
        os.environ["AIRFLOW_HOME"] = home  # Airflow's config and logs go there, not to ~/airflow
        table = render(load_params())
    write_block(DAG_DOC, BLOCK, table)
    print(f"{DAG_DOC.relative_to(REPO_ROOT)}: Params table written ({table.count(chr(10)) - 1} Params)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
