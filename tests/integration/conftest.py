import pytest


def pytest_addoption(parser):
    parser.addoption("--longtune-bin", required=True, help="folder holding the longtune binary")


@pytest.fixture(scope="session")
def longtune(request):
    return request.config.getoption("--longtune-bin") + "/longtune"
