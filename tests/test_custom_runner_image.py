"""runnerImageDockerfile: the GPU runners' own image, built FROM ours and pinned the same way."""

import pytest
import yaml
from pulumi import RunError

from program_harness import run_program
from program.manifests.images import custom_dockerfile_problem

P = "gke-gpu-runners"
EXAMPLE = "examples/ml-image/Dockerfile"
IMAGE = "docker:index/image:Image"


@pytest.fixture(scope="module")
def custom():
    return run_program({f"{P}:runnerImageDockerfile": EXAMPLE})


def gpu_runner_image(program) -> str:
    return yaml.safe_load(program.outputs["gpuRunnerTemplate"])["spec"]["template"]["spec"]["containers"][0]["image"]


def test_without_it_gpu_runners_run_our_image(program):
    assert program.outputs["gpuRunnerImage"] == program.outputs["clusterRunnerImage"] == gpu_runner_image(program)
    assert len(program.of_type(IMAGE)) == 2


def test_the_users_image_is_built_from_its_own_folder_on_our_image_by_digest(custom):
    built = custom.one(IMAGE, "gpu-runner-image").inputs
    assert built["build"]["context"] == "examples/ml-image"
    assert built["build"]["dockerfile"] == EXAMPLE
    assert built["build"]["args"] == {"RUNNER_IMAGE": custom.outputs["runnerImage"]}
    assert built["imageName"].startswith("ghcr.io/acme/models/github-runner-custom:")


def test_gpu_runners_and_gpu_nodes_run_the_users_image_and_base_runners_keep_ours(custom):
    pulled = custom.outputs["gpuRunnerImage"]
    assert pulled.startswith("us-central1-docker.pkg.dev/acme-ml/gpu-runners-images/github-runner-custom@sha256:")
    assert gpu_runner_image(custom) == pulled
    preloader = custom.one("kubernetes:apps/v1:DaemonSet", "preloader").inputs["spec"]["template"]["spec"]
    assert preloader["containers"][0]["image"] == pulled  # pulled while the driver installs
    base = custom.one("kubernetes:apps/v1:Deployment", "base-runner").inputs["spec"]["template"]["spec"]
    assert base["containers"][0]["image"] == custom.outputs["clusterRunnerImage"]


@pytest.mark.parametrize(
    "value, words",
    [
        ("examples/missing/Dockerfile", "is not a file"),
        ("../Dockerfile", "inside the project folder"),
        ("runner_image/Dockerfile", "its first FROM must be the runner image"),
    ],
)
def test_a_dockerfile_that_cannot_be_a_runner_image_is_refused_before_any_resource(value, words):
    with pytest.raises(RunError) as refused:
        run_program({f"{P}:runnerImageDockerfile": value})
    (line,) = [line for line in str(refused.value).splitlines() if "runnerImageDockerfile:" in line]
    assert words in line


@pytest.mark.parametrize(
    "text, accepted",
    [
        ("ARG RUNNER_IMAGE\nFROM ${RUNNER_IMAGE}\nRUN true\n", True),
        ("ARG RUNNER_IMAGE\nFROM $RUNNER_IMAGE AS base\n", True),
        ("ARG RUNNER_IMAGE\nFROM --platform=linux/amd64 ${RUNNER_IMAGE}\n", True),
        ("FROM ubuntu:24.04\nFROM ${RUNNER_IMAGE}\n", False),  # the first FROM is what runs
        ("ARG RUNNER_IMAGE\nFROM ${RUNNER_IMAGE_OTHER}\n", False),
        ("RUN true\n", False),
    ],
)
def test_only_a_dockerfile_whose_first_from_is_ours_is_accepted(text, accepted):
    assert (custom_dockerfile_problem(text) is None) is accepted


def test_the_example_image_passes_hadolint():
    from program_harness import ROOT
    from test_image_lint import run_tool, tool

    done = run_tool(tool("hadolint"), str(ROOT / EXAMPLE))
    assert done.returncode == 0, done.stdout + done.stderr
