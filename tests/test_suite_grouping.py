"""The suite's own plumbing (tests/conftest.py). Under `--dist loadgroup` the tests that share a
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


def test_boto3_sessions_share_one_botocore_loader_and_their_clients_still_work():
    """tests/conftest.py::share_botocore_loader: two sessions (as two Airflow AWS hooks make) parse
    botocore's JSON once, and each one's client still calls AWS (moto) as before."""
    import boto3
    from moto import mock_aws

    sessions = [boto3.session.Session(region_name="eu-west-1", aws_access_key_id="testing",
                                      aws_secret_access_key="testing") for _ in range(2)]
    first, second = (session._session.get_component("data_loader") for session in sessions)
    assert first is second
    with mock_aws():
        sessions[0].client("s3").create_bucket(Bucket="shared-loader",
                                               CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        assert [b["Name"] for b in sessions[1].client("s3").list_buckets()["Buckets"]] == ["shared-loader"]
        assert sessions[1].client("emr").list_clusters()["Clusters"] == []
