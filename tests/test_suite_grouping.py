"""The suite's own plumbing (tests/conftest.py): under `--dist loadgroup` the tests that share a
module- or class-scoped fixture carry their file as xdist group, so one worker runs them and the
fixture (a stack, a featurize run, a model export) is made once. pytest 9.2 with pytest-xdist 3.8.0
lost the group silently (pytest-dev/pytest-xdist#1386); this test fails if that comes back."""
import os

import pytest


@pytest.fixture(scope="module")
def shared() -> str:
    return "made once per worker that runs this module"


@pytest.mark.parametrize("case", range(2))
def test_tests_sharing_a_module_fixture_carry_their_file_as_xdist_group(shared, request, case):
    if not (os.environ.get("PYTEST_XDIST_WORKER") and request.config.getvalue("loadgroup")):
        pytest.skip("only under pytest-xdist with --dist loadgroup (make test, make test-fast)")
    # loadgroup's scheduler sends every test whose node id ends with the same "@group" to one worker
    assert request.node.nodeid.endswith("@tests/test_suite_grouping.py"), request.node.nodeid


def test_a_test_without_shared_fixtures_is_scheduled_alone(request):
    assert "@" not in request.node.nodeid
