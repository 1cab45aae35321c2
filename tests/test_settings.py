"""Configuration: defaults, derived values, and bad values refused before any resource."""

import pytest
import yaml
from pulumi import RunError

from program.catalog.gpus import ACCELERATORS, machine_problem, smallest_machine
from program_harness import run_program

P = "gke-gpu-runners"

BAD = [
    # (config changes, keys dropped, key the message must name, words it must contain)
    ({f"{P}:githubRepository": "just-a-name"}, (), f"{P}:githubRepository", "owner/name"),
    ({f"{P}:githubRepository": "a/b/c"}, (), f"{P}:githubRepository", "owner/name"),
    ({f"{P}:gpuType": "nvidia-gtx-1080"}, (), f"{P}:gpuType", "nvidia-tesla-t4"),
    ({f"{P}:gpuMachineType": "e2-standard-4"}, (), f"{P}:gpuMachineType", "N1"),
    ({f"{P}:gpuType": "nvidia-l4", f"{P}:gpuMachineType": "n1-standard-4"}, (), f"{P}:gpuMachineType", "g2-standard-4"),
    (
        {f"{P}:gpuType": "nvidia-tesla-a100", f"{P}:gpuMachineType": "g2-standard-4"},
        (),
        f"{P}:gpuMachineType",
        "a2-highgpu-1g",
    ),
    (
        {f"{P}:gpuType": "nvidia-h100-80gb", f"{P}:gpuMachineType": "a2-highgpu-1g"},
        (),
        f"{P}:gpuMachineType",
        "a3-highgpu-1g",
    ),
    (
        {f"{P}:gpuType": "nvidia-l4", f"{P}:gpuCount": "2", f"{P}:gpuMachineType": "g2-standard-4"},
        (),
        f"{P}:gpuMachineType",
        "carries 1",
    ),
    (
        {f"{P}:gpuType": "nvidia-tesla-v100", f"{P}:gpuMachineType": "n1-standard-16"},
        (),
        f"{P}:gpuMachineType",
        "at most 12 vCPUs",
    ),
    ({f"{P}:gpuCount": "0"}, (), f"{P}:gpuCount", ">= 1"),
    ({f"{P}:gpuCount": "3"}, (), f"{P}:gpuCount", "1, 2, 4"),
    ({f"{P}:gpuCount": "two"}, (), f"{P}:gpuCount", "whole number"),
    ({f"{P}:gpuMinNodes": "-1"}, (), f"{P}:gpuMinNodes", ">= 0"),
    ({f"{P}:cpuMinNodes": "-2"}, (), f"{P}:cpuMinNodes", ">= 0"),
    ({f"{P}:cpuMinNodes": "4", f"{P}:cpuMaxNodes": "2"}, (), f"{P}:cpuMinNodes", "above"),
    ({f"{P}:gpuMinNodes": "3"}, (), f"{P}:gpuMinNodes", "above"),
    ({f"{P}:gpuDriverVersion": "INSTALLATION_DISABLED"}, (), f"{P}:gpuDriverVersion", "DEFAULT, LATEST"),
    ({}, ("gcp:zone",), "gcp:zone", "zone"),
    ({f"{P}:location": "us-central1"}, (), f"{P}:location", "us-central1-a"),
    ({}, ("github:token",), "github:token", "may write the repository's Actions secrets and variables"),
    ({"gcp:project": "my-gcp-project"}, (), "gcp:project", "sample stack's placeholder"),
    ({f"{P}:githubRepository": "my-org/my-ml-repository"}, (), f"{P}:githubRepository", "sample stack's placeholder"),
    ({f"{P}:gpuType": "nvidia-t4"}, (), f"{P}:gpuType", "did you mean nvidia-tesla-t4?"),
    ({f"{P}:gpuType": "nvidia-tesla-l4"}, (), f"{P}:gpuType", "did you mean nvidia-l4?"),
    ({f"{P}:gpuType": "nvidia-a100-80g"}, (), f"{P}:gpuType", "did you mean nvidia-a100-80gb?"),
    ({f"{P}:githubRepository": "Acme/Models.git"}, (), f"{P}:githubRepository", "without a URL or .git: Acme/Models"),
    ({f"{P}:githubRepository": "https://github.com/Acme/Models"}, (), f"{P}:githubRepository", ": Acme/Models"),
    ({f"{P}:cpuMachineType": "e2-medium"}, (), f"{P}:cpuMachineType", "accepted: e2-standard-2 or larger"),
    ({"gcp:zone": "europe-west4"}, (), "gcp:zone", "europe-west4-a, europe-west4-b or europe-west4-c"),
    ({}, ("gcp:project",), "gcp:project", "required"),
    ({f"{P}:gpuSpot": "yes"}, (), f"{P}:gpuSpot", "true, false"),
    ({f"{P}:clusterName": "GPU_Runners"}, (), f"{P}:clusterName", "lowercase"),
    ({f"{P}:namespace": "Runners!"}, (), f"{P}:namespace", "DNS label"),
    ({f"{P}:baseRunnerReplicas": "-1"}, (), f"{P}:baseRunnerReplicas", ">= 0"),
    ({f"{P}:gpuWarmRunners": "-1"}, (), f"{P}:gpuWarmRunners", ">= 0"),
    ({f"{P}:gpuWarmRunners": "3"}, (), f"{P}:gpuWarmRunners", "0 to gke-gpu-runners:gpuMaxNodes (2)"),
    ({f"{P}:autoscalingProfile": "AGGRESSIVE"}, (), f"{P}:autoscalingProfile", "OPTIMIZE_UTILIZATION, BALANCED"),
    ({f"{P}:cpuSpot": "maybe"}, (), f"{P}:cpuSpot", "true, false"),
    ({f"{P}:gpuRunnerDeadlineMinutes": "1"}, (), f"{P}:gpuRunnerDeadlineMinutes", ">= 5"),
]


def refusal(config: dict, drop: tuple = (), plain_text: bool = False) -> tuple[str, object]:
    """The error message, and the program run that produced it (to inspect what was registered)."""
    runs = []

    def record(program):
        runs.append(program)

    with pytest.raises(RunError) as refused:
        run_program(config, drop=drop, on_run=record, plain_text=plain_text)
    return str(refused.value), runs[0]


@pytest.mark.parametrize(
    "config, drop, key, accepted", BAD, ids=[f"{b[2]}={list(b[0].values()) or 'unset'}" for b in BAD]
)
def test_bad_config_is_refused_naming_the_key_and_what_is_accepted_before_any_resource(config, drop, key, accepted):
    message, program = refusal(config, drop)
    line = next((entry for entry in message.splitlines() if entry.strip().startswith(f"- {key}:")), None)
    assert line is not None, message
    assert accepted in line, line
    assert program.resources == [], [r.typ for r in program.resources]


def test_every_problem_is_reported_at_once():
    message, _ = refusal(
        {f"{P}:githubRepository": "nope", f"{P}:gpuCount": "0", f"{P}:gpuDriverVersion": "OLD"}, drop=("gcp:zone",)
    )
    for key in (f"{P}:githubRepository", f"{P}:gpuCount", f"{P}:gpuDriverVersion", "gcp:zone"):
        assert f"- {key}:" in message
    assert message.startswith("4 configuration problem(s)")


def test_a_token_stored_in_plain_text_is_refused():
    message, _ = refusal({f"{P}:runnerToken": "pat", f"{P}:registryToken": "pat"}, plain_text=True)
    assert (
        f"- {P}:runnerToken: is stored in plain text in Pulumi.test.yaml (rotate the token if that file was "
        f"committed or shared); accepted: pulumi config set --secret {P}:runnerToken ..."
    ) in message
    assert f"- {P}:registryToken: is stored in plain text" in message


def test_runner_token_alone_is_enough_for_the_runners():
    message, _ = refusal({f"{P}:runnerToken": "pat"}, drop=("github:token",))
    assert f"- {P}:runnerToken" not in message
    assert "- github:token:" in message  # the GitHub provider still needs its token


def cluster_autoscaling_profile(program) -> str:
    return program.one("gcp:container/cluster:Cluster").inputs["clusterAutoscaling"]["autoscalingProfile"]


def test_defaults_follow_the_contract(program):
    pools = {r.inputs["name"]: r.inputs for r in program.of_type("gcp:container/nodePool:NodePool")}
    cpu, gpu = pools["cpu-pool"], pools["gpu-pool"]
    assert cpu["nodeConfig"]["machineType"] == "e2-standard-2"
    assert cpu["nodeConfig"]["spot"] is False
    assert cluster_autoscaling_profile(program) == "OPTIMIZE_UTILIZATION"
    assert cpu["autoscaling"] == {"minNodeCount": 1, "maxNodeCount": 3}
    assert gpu["nodeConfig"]["guestAccelerators"][0]["type"] == "nvidia-tesla-t4"
    assert gpu["nodeConfig"]["guestAccelerators"][0]["count"] == 1
    assert gpu["nodeConfig"]["guestAccelerators"][0]["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "DEFAULT"}
    assert gpu["autoscaling"] == {"minNodeCount": 0, "maxNodeCount": 2}
    assert gpu["nodeConfig"]["spot"] is False
    cluster = program.one("gcp:container/cluster:Cluster").inputs
    assert cluster["name"] == "gpu-runners" and cluster["location"] == "us-central1-a"
    assert cluster["deletionProtection"] is False
    assert program.outputs["namespace"] == "github-runners"
    assert program.one("kubernetes:apps/v1:Deployment", "base-runner").inputs["spec"]["replicas"] == 2
    assert not program.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")  # gpuWarmRunners 0
    job = yaml.safe_load(program.outputs["gpuRunnerTemplate"])
    assert job["spec"]["activeDeadlineSeconds"] == 240 * 60


@pytest.mark.parametrize(
    "gpu_type, count, expected",
    [
        ("nvidia-tesla-t4", 1, "n1-standard-4"),
        ("nvidia-tesla-t4", 4, "n1-standard-16"),
        ("nvidia-tesla-v100", 8, "n1-standard-32"),
        ("nvidia-l4", 1, "g2-standard-4"),
        ("nvidia-l4", 8, "g2-standard-96"),
        ("nvidia-tesla-a100", 2, "a2-highgpu-2g"),
        ("nvidia-a100-80gb", 1, "a2-ultragpu-1g"),
        ("nvidia-h100-80gb", 8, "a3-highgpu-8g"),
    ],
)
def test_default_gpu_machine_is_the_smallest_that_carries_the_gpus(gpu_type, count, expected):
    assert smallest_machine(gpu_type, count) == expected
    assert machine_problem(gpu_type, count, expected) is None


def test_every_default_gpu_machine_passes_its_own_check():
    for gpu_type, accelerator in ACCELERATORS.items():
        for count in accelerator.counts:
            machine = smallest_machine(gpu_type, count)
            assert machine_problem(gpu_type, count, machine) is None, (gpu_type, count, machine)


def test_gke_allocatable_matches_its_published_figures_for_n1_standard_4():
    from program.catalog.gpus import allocatable

    cores, gib = allocatable(4, 15.0)
    assert round(cores, 2) == 3.92
    assert 12.2 <= gib <= 12.5


@pytest.mark.parametrize("gpu_type", sorted(ACCELERATORS))
def test_gpu_runner_share_leaves_gke_room_on_every_default_machine(gpu_type):
    from program.catalog.gpus import (
        MIN_RUNNER_CPU_MILLIS,
        MIN_RUNNER_MEMORY_MIB,
        allocatable,
        machine_shape,
        runner_share,
    )

    for count in ACCELERATORS[gpu_type].counts:
        machine = smallest_machine(gpu_type, count)
        share = runner_share(machine)
        cores, gib = allocatable(*machine_shape(machine))
        assert MIN_RUNNER_CPU_MILLIS <= share.cpu_millis <= cores * 1000 - 1000, machine
        assert MIN_RUNNER_MEMORY_MIB <= share.memory_mib <= gib * 1024 - 2048, machine


def test_a_machine_too_small_for_a_runner_is_refused():
    message, _ = refusal({f"{P}:gpuMachineType": "n1-standard-1"})
    line = next(entry for entry in message.splitlines() if f"{P}:gpuMachineType" in entry)
    assert "less than 500m CPU" in line
    assert "accepted: n1-standard-2 or larger, up to 48 vCPUs" in line  # what the check really accepts
    assert machine_problem("nvidia-tesla-t4", 1, "n1-standard-2") is None


def test_base_runners_default_to_one_per_gpu_node_and_size_the_cpu_machine():
    from program.settings import default_cpu_machine

    program = run_program({f"{P}:gpuMaxNodes": "6"})
    assert program.one("kubernetes:apps/v1:Deployment", "base-runner").inputs["spec"]["replicas"] == 6
    cpu = next(p.inputs for p in program.of_type("gcp:container/nodePool:NodePool") if p.inputs["name"] == "cpu-pool")
    assert cpu["nodeConfig"]["machineType"] == default_cpu_machine(6) == "e2-standard-4"
    assert (
        run_program({f"{P}:baseRunnerReplicas": "1", f"{P}:gpuMaxNodes": "6"})
        .one("kubernetes:apps/v1:Deployment", "base-runner")
        .inputs["spec"]["replicas"]
        == 1
    )


@pytest.mark.parametrize(
    "replicas, machine",
    [(1, "e2-standard-2"), (2, "e2-standard-2"), (3, "e2-standard-4"), (8, "e2-standard-4"), (12, "e2-standard-8")],
)
def test_default_cpu_machine_is_the_smallest_that_holds_its_pods_with_room(replicas, machine):
    from program.catalog.cpu_machines import HEADROOM, SYSTEM_PODS_CPU_MILLIS, E2_STANDARD
    from program.catalog.gpus import allocatable
    from program.settings import default_cpu_machine

    assert default_cpu_machine(replicas) == machine
    cores, _ = allocatable(*E2_STANDARD[machine])
    assert (SYSTEM_PODS_CPU_MILLIS + replicas * 250 + 50) * HEADROOM <= cores * 1000


def test_the_autoscaling_profile_and_cpu_spot_follow_config():
    program = run_program(
        {f"{P}:autoscalingProfile": "BALANCED", f"{P}:cpuSpot": "true", f"{P}:cpuMachineType": "n2-standard-4"}
    )
    assert cluster_autoscaling_profile(program) == "BALANCED"
    cpu = next(p.inputs for p in program.of_type("gcp:container/nodePool:NodePool") if p.inputs["name"] == "cpu-pool")
    assert cpu["nodeConfig"]["spot"] is True
    assert cpu["nodeConfig"]["machineType"] == "n2-standard-4"


def test_no_token_at_all_is_one_problem_not_two():
    message, _ = refusal({}, drop=("github:token",))
    assert message.startswith("1 configuration problem(s)")
    assert f"{P}:runnerToken" not in message.replace("unless runnerToken", "")


@pytest.mark.parametrize("gpu_type", ["quantum-annealer", "nvidia-a10g", "nvidia-l44", "nvidia-k80"])
def test_a_gpu_type_of_a_model_gke_does_not_serve_gets_no_guess(gpu_type):
    """nvidia-a10g (AWS's) is not a spelling of nvidia-a100-80gb, a far pricier GPU: no guess across models."""
    message, _ = refusal({f"{P}:gpuType": gpu_type})
    line = next(entry for entry in message.splitlines() if f"{P}:gpuType" in entry)
    assert "did you mean" not in line and "nvidia-tesla-t4" in line


def test_a_cpu_machine_too_small_for_the_base_runners_names_the_smallest_that_fits():
    from program.settings import default_cpu_machine

    message, _ = refusal({f"{P}:cpuMachineType": "e2-standard-2", f"{P}:gpuMaxNodes": "6"})
    line = next(line for line in message.splitlines() if f"{P}:cpuMachineType" in line)
    assert "one node must hold 6 base runner(s), the broker and GKE's own pods" in line
    assert f"accepted: {default_cpu_machine(6)} or larger, or fewer baseRunnerReplicas" in line
    # The same sizing as the default: what it picks passes, and machines it does not know are not guessed at.
    assert run_program({f"{P}:cpuMachineType": default_cpu_machine(6), f"{P}:gpuMaxNodes": "6"})
    assert run_program({f"{P}:cpuMachineType": "c4-standard-4"})


@pytest.mark.parametrize(
    "config, words",
    [
        (
            {"github:token": "github_pat_11AAAA"},
            "unset, so the runner image would be pushed to GHCR with github:token, a fine-grained token",
        ),
        ({f"{P}:registryToken": "github_pat_22BBBB"}, "is a fine-grained token"),
    ],
)
def test_a_fine_grained_token_for_ghcr_is_refused_up_front_with_the_classic_token_fix(config, words):
    message, program = refusal(config)
    line = next(line for line in message.splitlines() if f"{P}:registryToken" in line)
    assert words in line
    assert (
        f"accepted: a personal access token (classic) with write:packages: pulumi config set --secret {P}:registryToken"
    ) in line
    assert program.resources == []


def test_a_fine_grained_github_token_is_fine_beside_a_classic_registry_token():
    program = run_program({"github:token": "github_pat_11AAAA", f"{P}:registryToken": "ghp_classic"})
    assert program.one("pulumi:providers:github")
