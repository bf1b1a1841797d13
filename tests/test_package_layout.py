"""The repository's layout holds (README, "Repository layout"): packages by where their code runs, no
import cycle (imports inside functions included), the cluster package self-contained and the only
one staged, the shared contract pure, no module too long, no two modules with one name."""

from __future__ import annotations

import ast
import graphlib
import io
import zipfile
from pathlib import Path

import pytest

from fruits_emr import staging
from tests.support import REPO_ROOT

# first-party package -> its folder; where each runs is in the README
PACKAGES = {
    "spark_jobs": REPO_ROOT / "spark_jobs",  # the EMR cluster (driver and executors)
    "fruits_emr": REPO_ROOT / "plugins" / "fruits_emr",  # the Airflow worker
    "local_spark": REPO_ROOT / "local_spark",  # a developer's machine, the DAG's local compute mode
    "model_export": REPO_ROOT / "model_export",  # wherever a model is exported
}
SCRIPT_FOLDERS = ("dags", "scripts", "docker", "bench")  # entry points, not imported by the packages
# script folders whose modules import each other as a package (run from the repository root, not
# installed): in the import graph too, so a cycle among them fails like one in the packages
SCRIPT_PACKAGES = {"bench": REPO_ROOT / "bench"}
MAX_MODULE_LINES = 400
# the contract is imported by the DAG's worker and the cluster alike: the standard library only
CONTRACT_ALLOWED = {"__future__", "collections", "typing", "dataclasses", "spark_jobs"}


def module_files(packages: dict[str, Path] = PACKAGES) -> dict[str, Path]:
    """{dotted module name: file} of every first-party module."""
    modules = {}
    for package, folder in packages.items():
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            modules[name.removesuffix(".__init__")] = path
    return modules


def imports_of(path: Path) -> set[str]:
    """Every module an import statement names, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def first_party_graph(packages: dict[str, Path] = PACKAGES) -> dict[str, set[str]]:
    modules = module_files(packages)
    return {name: {imported for imported in imports_of(path) if imported in modules and imported != name}
            for name, path in modules.items()}


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = first_party_graph({**PACKAGES, **SCRIPT_PACKAGES})
    assert "bench.sample_images" in graph["bench.soak"]  # the bench's own edges are in the graph
    # a package's __init__ imports nothing here, so an edge to "pkg" from "pkg.mod" is no cycle
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
    assert set(order) == set(graph)


def test_the_cluster_package_imports_no_other_first_party_package():
    """Only spark_jobs/ is zipped and staged to EMR: an import of another package would fail there."""
    graph = first_party_graph()
    outside = {name: sorted(i for i in imported if not i.startswith("spark_jobs"))
               for name, imported in graph.items() if name.startswith("spark_jobs")}
    assert {name: found for name, found in outside.items() if found} == {}


def test_the_contract_is_pure_python():
    for name, path in module_files().items():
        if name.startswith("spark_jobs.contract"):
            roots = {imported.split(".")[0] for imported in imports_of(path)}
            assert roots <= CONTRACT_ALLOWED, (name, roots - CONTRACT_ALLOWED)


def test_only_the_cluster_package_is_staged():
    _, files = staging.code_bundle(REPO_ROOT)
    names = zipfile.ZipFile(io.BytesIO(files["spark_jobs.zip"])).namelist()
    assert names and all(name.startswith("spark_jobs/") for name in names)
    staged = {Path(name).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__") for name in names}
    assert staged == {name for name in module_files() if name.startswith("spark_jobs")}
    assert set(files) == {"featurize.py", "pca.py", "spark_jobs.zip", "bootstrap.sh"}


def source_files() -> list[Path]:
    scripts = [path for folder in SCRIPT_FOLDERS for path in (REPO_ROOT / folder).rglob("*.py")]
    return [*module_files().values(), *scripts]


def test_no_module_is_longer_than_the_style_allows():
    long = {str(path.relative_to(REPO_ROOT)): lines for path in source_files()
            if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_two_source_modules_share_a_name():
    names: dict[str, list[str]] = {}
    for path in source_files():
        if path.name != "__init__.py":
            names.setdefault(path.stem, []).append(str(path.relative_to(REPO_ROOT)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}


def test_pyproject_installs_every_package():
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert listed == packages
