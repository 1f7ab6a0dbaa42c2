import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--longtune-bin", required=True, help="folder holding the longtune-run binary")


@pytest.fixture(scope="session")
def launcher(request):
    return os.path.abspath(request.config.getoption("--longtune-bin")) + "/longtune-run"
