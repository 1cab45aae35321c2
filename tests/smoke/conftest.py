"""The smoke test's own doubles sit beside its tests; its project folder is made once."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import smoke_harness  # noqa: E402 - after the path is set


@pytest.fixture(scope="session", autouse=True)
def smoke_project(tmp_path_factory) -> Path:
    """A project folder whose Dockerfile pins the runner version GitHub's fake calls latest."""
    project = smoke_harness.project_folder(tmp_path_factory.mktemp("project"))
    smoke_harness.DEFAULT_PROJECT[:] = [project]
    return project
