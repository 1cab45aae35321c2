"""A real control plane for the tests here: `scripts/kube-env up` once per session, `down` at its end.

Set KUBECONFIG_REALKUBE to an admin kubeconfig of a control plane that is already up
(`scripts/kube-env up` prints one) to reuse it; the session then leaves it running.
"""

import itertools
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from realkube.cluster import CPU_NODE, GPU_NODES, GPUS_PER_NODE, ApiError, FakeNodes, Kube

ROOT = Path(__file__).resolve().parents[2]
KUBE_ENV = ROOT / "scripts" / "kube-env"
# The first `up` on a machine builds the control plane from the Go module proxy.
FIRST_BUILD_SECONDS = 3600


@pytest.fixture(scope="session")
def admin_kubeconfig(tmp_path_factory):
    if os.environ.get("KUBECONFIG_REALKUBE"):
        yield Path(os.environ["KUBECONFIG_REALKUBE"])
        return
    # A state directory of this session's own, so a control plane someone else runs is left alone.
    env = {**os.environ, "KUBE_ENV_DIR": str(tmp_path_factory.mktemp("kube-env"))}
    up = subprocess.run(
        [str(KUBE_ENV), "up"], env=env, capture_output=True, text=True, timeout=FIRST_BUILD_SECONDS, check=False
    )
    if up.returncode != 0:
        subprocess.run([str(KUBE_ENV), "down"], env=env, timeout=60, check=False)
        pytest.fail(f"scripts/kube-env up failed:\n{up.stderr[-4000:]}")
    last = up.stdout.strip().splitlines()[-1]
    assert last.startswith("KUBECONFIG="), up.stdout
    try:
        yield Path(last.removeprefix("KUBECONFIG="))
    finally:
        subprocess.run([str(KUBE_ENV), "down"], env=env, timeout=60, check=True)


@pytest.fixture(scope="session")
def kube(admin_kubeconfig) -> Kube:
    return Kube(admin_kubeconfig)


@pytest.fixture(scope="session")
def nodes(kube):
    """One CPU node and the GPU nodes, with a kubelet stand-in, for the whole session."""
    fake = FakeNodes(kube)
    for name in (CPU_NODE, *GPU_NODES):
        if kube.exists(f"/api/v1/nodes/{name}"):  # a reused control plane: a previous session's
            kube.delete(f"/api/v1/nodes/{name}")
    fake.add(CPU_NODE)
    for name in GPU_NODES:
        fake.add(name, gpus=GPUS_PER_NODE)
    fake.start()
    yield fake
    fake.stop()
    fake.delete_all()
    assert not fake.errors, fake.errors


_namespaces = itertools.count()


@pytest.fixture
def namespace(kube, nodes):
    """A fresh namespace per test (nodes present), deleted after it."""
    name = f"t{next(_namespaces)}-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    try:
        kube.delete(f"/api/v1/namespaces/{name}")
    except ApiError as error:
        if error.status != 404:
            raise
