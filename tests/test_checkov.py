"""checkov on the Kubernetes manifests the program registers, and on the GPU runner template."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from program_harness import ROOT, kubernetes_objects

# Each skip with its reason. Keep this short.
SKIPS = {
    "CKV_K8S_22": "A CI runner needs a writable root filesystem: jobs install tools and write their workspace.",
}


def checkov_binary() -> str:
    binary = os.environ.get("CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    assert Path(binary).exists(), f"checkov not found at {binary}: run `bash .ci/run` to install it"
    return binary


def render(program, directory: Path, prefix: str = "") -> list[str]:
    """One YAML file per registered Kubernetes object (a scale set's runner as a Pod), secrets
    replaced, plus a rendered GPU runner where the program publishes its template."""
    names = []
    for index, manifest in enumerate(kubernetes_objects(program)):
        for field in ("stringData", "data"):
            if field in manifest:
                manifest[field] = dict.fromkeys(manifest[field], "redacted")
        name = f"{prefix}{index:03}-{manifest['metadata']['name']}.yaml"
        (directory / name).write_text(yaml.safe_dump(manifest))
        names.append(f"{manifest['kind']}.{manifest['metadata']['name']}")
    if "gpuRunnerTemplate" in program.outputs:
        job = (
            program.outputs["gpuRunnerTemplate"].replace("${GITHUB_RUN_ID}", "42").replace("${GITHUB_RUN_ATTEMPT}", "1")
        )
        (directory / f"{prefix}gpu-runner-42-1.yaml").write_text(job)
    return names


@pytest.fixture(scope="module")
def report(every_object, every_scale_set_object, tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("manifests")
    render(every_object, directory, "per-run-")
    render(every_scale_set_object, directory, "scale-set-")
    result = subprocess.run(
        [
            checkov_binary(),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_TELEMETRY": "false"},
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    parsed = json.loads(result.stdout)
    results = (parsed[0] if isinstance(parsed, list) else parsed)["results"]
    # Our skips are applied here, not by checkov, so a skip nothing needs shows up.
    return {
        "passed": results["passed_checks"],
        "failed": [c for c in results["failed_checks"] if c["check_id"] not in SKIPS],
        "skipped": [c for c in results["failed_checks"] if c["check_id"] in SKIPS],
    }


def test_checkov_finds_no_failure_in_the_cluster_objects_and_the_gpu_runner(report):
    print(f"checkov: {len(report['passed'])} passed, {len(report['failed'])} failed, {len(report['skipped'])} skipped")
    assert not report["failed"], "\n".join(
        f"{c['check_id']} {c['check_name']} on {c['resource']}" for c in report["failed"]
    )


def test_checkov_scanned_every_runner_workload(report):
    scanned = {c["resource"] for c in report["passed"]}
    assert any(r.startswith("Deployment.") and r.endswith(".base-runner") for r in scanned), scanned
    assert any(r.startswith("Job.") and "gpu-runner-42-1" in r for r in scanned), scanned
    assert any(r.startswith("Pod.") and r.endswith(".gpu-runner") for r in scanned), scanned  # the scale set's
    assert len(report["passed"]) > 100


def test_every_skip_has_a_reason_and_is_still_needed(report):
    skipped = {c["check_id"] for c in report["skipped"]}
    for check, reason in SKIPS.items():
        assert len(reason.split()) >= 5, check
        assert check in skipped, f"{check} is skipped but nothing would fail it: drop the skip"
