"""The suite's session fixtures: the whole program run under mocks (see program_harness.py).

It also puts the project, the broker's package, the shared test doubles and the
benchmark's models on sys.path, for tests in any subfolder."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "broker", ROOT / "tests", ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from program_harness import PROJECT, SCALE_SET, Program, run_program  # noqa: E402 - after the path is set


@pytest.fixture(scope="session")
def program() -> Program:
    """The program run once with the sample configuration; read-only for tests."""
    return run_program()


@pytest.fixture(scope="session")
def every_object() -> Program:
    """The program with every optional object turned on (warm GPU runners), for whole-manifest checks."""
    return run_program({f"{PROJECT}:gpuWarmRunners": "1"})


@pytest.fixture(scope="session")
def every_scale_set_object() -> Program:
    """runnerMode scale-set with every optional object turned on, for whole-manifest checks."""
    return run_program({**SCALE_SET, f"{PROJECT}:gpuWarmRunners": "1"})


def pytest_collection_modifyitems(items):
    """The real control plane's tests share one control plane: with pytest-xdist they run
    on one worker (`--dist loadgroup`), beside the rest of the suite on the others."""
    for item in items:
        if "/realkube/" in f"/{item.nodeid}":
            item.add_marker(pytest.mark.xdist_group("realkube"))
