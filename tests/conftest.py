import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

from tests.helpers import make_tiny_target  # noqa: E402


@pytest.fixture(scope="session")
def tiny_target(tmp_path_factory):
    return make_tiny_target(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def real_target():
    from core.target import TargetModel

    return TargetModel.load("default", dtype="float32", device="cpu")
