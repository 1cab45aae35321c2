"""The preflight, as the whole program runs it, against a local stand-in of the Compute Engine API."""

import pytest
from pulumi import RunError

from program_harness import FAKE_GCP_ACCESS_TOKEN, run_program
from fake_compute import shared_fake_compute

P = "gke-gpu-runners"


@pytest.fixture
def compute():
    fake = shared_fake_compute()
    fake.reset()
    yield fake
    fake.reset()


def refused(config: dict | None = None) -> tuple[str, list]:
    runs = []
    with pytest.raises(RunError) as error:
        run_program(config, on_run=runs.append)
    return str(error.value), runs[0].resources


def cloud_resources(resources) -> list:
    return [r for r in resources if not r.typ.startswith("pulumi:providers:")]


def test_a_fit_zone_and_quota_pass_with_the_providers_own_token_in_four_reads(compute):
    program = run_program()

    assert program.one("gcp:container/cluster:Cluster")
    assert [path for path, _ in compute.requests] == [
        "/compute/v1/projects/acme-ml/zones/us-central1-a/acceleratorTypes",
        "/compute/v1/projects/acme-ml/zones/us-central1-a/machineTypes/n1-standard-4",
        "/compute/v1/projects/acme-ml/regions/us-central1",
        "/compute/v1/projects/acme-ml",
    ]
    assert {auth for _, auth in compute.requests} == {f"Bearer {FAKE_GCP_ACCESS_TOKEN}"}
    # The preflight's token, and the image push's: both the GCP provider's own.
    client_configs = [c for c in program.calls if c[0] == "gcp:organizations/getClientConfig:getClientConfig"]
    assert len(client_configs) == 2
    assert all(call[2].startswith(program.one("pulumi:providers:gcp").urn) for call in client_configs)


def test_an_unknown_zone_is_refused_before_any_resource(compute):
    message, resources = refused({"gcp:zone": "us-central1-z"})

    assert "- gcp:zone: us-central1-z is not a zone of Compute Engine" in message
    assert "gcloud compute zones list --filter=region:us-central1" in message
    assert cloud_resources(resources) == []


def test_a_zone_without_the_gpu_type_is_refused_naming_what_it_offers(compute):
    message, resources = refused({"gcp:zone": "us-central1-b", f"{P}:gpuType": "nvidia-l4"})

    line = next(entry for entry in message.splitlines() if f"{P}:gpuType" in entry)
    assert "us-central1-b does not offer nvidia-l4 (it offers: nvidia-tesla-t4)" in line
    assert "gcloud compute accelerator-types list --filter=name=nvidia-l4" in line
    assert cloud_resources(resources) == []


def test_a_zone_without_the_machine_is_refused(compute):
    compute.world.machine_types.discard("n1-standard-4")
    message, _ = refused()

    assert f"- {P}:gpuMachineType: us-central1-a does not offer n1-standard-4" in message


def test_regional_gpu_quota_below_the_pool_is_refused_with_the_numbers_and_the_fix(compute):
    compute.world.region_quotas["NVIDIA_T4_GPUS"] = 4
    compute.world.region_usage["NVIDIA_T4_GPUS"] = 3
    message, resources = refused()

    line = next(entry for entry in message.splitlines() if "NVIDIA_T4_GPUS" in entry)
    assert line.strip().startswith(f"- {P}:gpuMaxNodes: the GPU pool may use 2 GPUs (gpuMaxNodes 2 x gpuCount 1)")
    assert "NVIDIA_T4_GPUS in region us-central1 allows 4 with 3 in use (1 free)" in line
    assert "accepted: gpuMaxNodes 1 or fewer, or request more quota" in line
    assert "https://console.cloud.google.com/iam-admin/quotas?project=acme-ml&metric=NVIDIA_T4_GPUS" in line
    assert cloud_resources(resources) == []


def test_spot_gpus_are_checked_against_the_preemptible_quota(compute):
    compute.world.region_quotas["PREEMPTIBLE_NVIDIA_T4_GPUS"] = 1
    message, _ = refused({f"{P}:gpuSpot": "true"})

    assert "PREEMPTIBLE_NVIDIA_T4_GPUS in region us-central1 allows 1 with 0 in use" in message


def test_no_quota_at_all_is_said_plainly_with_the_request_to_make(compute):
    """A new project's GPUS_ALL_REGIONS is 0: there is no smaller pool to offer, only a request."""
    compute.world.all_regions_limit = 0
    message, _ = refused()

    line = next(line for line in message.splitlines() if "GPUS_ALL_REGIONS" in line)
    assert line.strip().startswith(
        f"- {P}:gpuMaxNodes: your project has no quota for GPUS_ALL_REGIONS in "
        "project acme-ml, and the GPU pool may use 2 GPUs"
    )
    assert (
        "request it (at least 2): "
        "https://console.cloud.google.com/iam-admin/quotas?project=acme-ml&metric=GPUS_ALL_REGIONS"
    ) in line
    assert "at most 0" not in message and "gpuMaxNodes 0" not in message


def test_quota_all_in_use_says_no_node_fits_rather_than_zero_nodes(compute):
    compute.world.region_quotas["NVIDIA_T4_GPUS"] = 4
    compute.world.region_usage["NVIDIA_T4_GPUS"] = 4
    message, _ = refused()

    line = next(line for line in message.splitlines() if "NVIDIA_T4_GPUS" in line)
    assert "allows 4 with 4 in use (0 free), not enough for one GPU node; accepted: free GPUs" in line


def test_the_global_gpu_quota_is_checked_too_and_every_problem_reported_at_once(compute):
    compute.world.all_regions_limit = 1
    compute.world.region_quotas["NVIDIA_T4_GPUS"] = 1
    message, _ = refused()

    assert message.startswith("2 preflight problem(s)")
    assert "GPUS_ALL_REGIONS in project acme-ml allows 1 with 0 in use" in message
    assert "NVIDIA_T4_GPUS in region us-central1 allows 1" in message


def test_a_project_whose_compute_api_is_not_enabled_yet_is_let_through(compute):
    """A project set up a minute ago: pulumi up enables the API with GKE's; the preflight steps aside."""
    compute.world.fail_with = (
        403,
        {
            "error": {
                "code": 403,
                "message": "Compute Engine API has not been used in project",
                "errors": [{"reason": "accessNotConfigured"}],
                "details": [{"reason": "SERVICE_DISABLED"}],
            }
        },
    )
    program = run_program()

    assert program.one("gcp:container/cluster:Cluster")


def test_refused_credentials_stop_with_the_login_hint(compute):
    compute.world.fail_with = (
        401,
        {"error": {"code": 401, "message": "Request had invalid authentication credentials."}},
    )
    message, resources = refused()

    assert (
        f"- {P}:skipPreflight: the preflight could not ask Compute Engine (Request had invalid authentication"
        in message
    )
    assert "gcloud auth application-default login" in message and "skipPreflight true" in message
    assert cloud_resources(resources) == []


def test_skip_preflight_asks_nothing(compute):
    compute.world.fail_with = (500, {"error": {"code": 500, "message": "down"}})
    program = run_program({f"{P}:skipPreflight": "true"})

    assert compute.requests == []
    # Only the image push still asks for the provider's token.
    assert len([c for c in program.calls if c[0] == "gcp:organizations/getClientConfig:getClientConfig"]) == 1
