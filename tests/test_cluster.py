"""The GKE cluster and its pools, as the whole program registers them."""

import base64

import pytest
import yaml

from program_harness import FAKE_CA_B64, FAKE_ENDPOINT, run_program

CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"
IAM = "gcp:projects/iAMMember:IAMMember"
ACCOUNT = "gcp:serviceaccount/account:Account"


def test_cluster_is_zonal_in_the_configured_zone_with_the_configured_name(program):
    cluster = program.one(CLUSTER).inputs
    assert cluster["location"] == "us-central1-a"
    assert cluster["name"] == "gpu-runners"
    assert cluster["project"] == "acme-ml"


def test_location_overrides_gcp_zone():
    cluster = run_program({"gke-gpu-runners:location": "europe-west4-b"}).one(CLUSTER).inputs
    assert cluster["location"] == "europe-west4-b"


def test_every_gcp_resource_uses_the_explicit_provider_for_the_configured_project(program):
    provider = program.one("pulumi:providers:gcp")
    assert provider.inputs["project"] == "acme-ml"
    assert provider.inputs["zone"] == "us-central1-a"
    gcp = [r for r in program.resources if r.typ.startswith("gcp:")]
    assert len(gcp) >= 10
    for resource in gcp:
        assert resource.provider.rsplit("::", 1)[0] == provider.urn, resource.name


def test_cluster_removes_the_default_pool(program):
    assert program.one(CLUSTER).inputs["removeDefaultNodePool"] is True


def test_cluster_has_workload_identity_for_the_project(program):
    assert program.one(CLUSTER).inputs["workloadIdentityConfig"] == {"workloadPool": "acme-ml.svc.id.goog"}


def test_cluster_follows_a_release_channel(program):
    assert program.one(CLUSTER).inputs["releaseChannel"]["channel"] in ("RAPID", "REGULAR", "STABLE")


def test_cluster_hardening_shielded_nodes_no_abac_no_client_certificate(program):
    cluster = program.one(CLUSTER).inputs
    assert cluster["enableShieldedNodes"] is True
    assert cluster["enableLegacyAbac"] is False
    assert cluster["masterAuth"]["clientCertificateConfig"] == {"issueClientCertificate": False}


def test_cluster_enforces_network_policies_with_dataplane_v2(program):
    assert program.one(CLUSTER).inputs["datapathProvider"] == "ADVANCED_DATAPATH"


def test_deletion_protection_is_off_by_default_so_destroy_works(program):
    assert program.one(CLUSTER).inputs["deletionProtection"] is False


def test_deletion_protection_follows_config():
    cluster = run_program({"gke-gpu-runners:deletionProtection": "true"}).one(CLUSTER).inputs
    assert cluster["deletionProtection"] is True


@pytest.mark.parametrize("kind", [CLUSTER, POOL])
def test_gke_resources_wait_at_least_30_minutes(program, kind):
    for resource in program.of_type(kind):
        timeouts = resource.custom_timeouts
        for operation in ("create", "update", "delete"):
            value = getattr(timeouts, operation)
            assert value.endswith("m") and int(value[:-1]) >= 30, (resource.name, operation, value)


def test_nodes_run_as_a_dedicated_account_with_only_logging_and_metrics_roles_project_wide(program):
    account = program.one(ACCOUNT, "gke-nodes")
    email = f"{account.inputs['accountId']}@acme-ml.iam.gserviceaccount.com"
    roles = {r.inputs["role"] for r in program.of_type(IAM) if r.inputs["member"] == f"serviceAccount:{email}"}
    assert roles == {
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/monitoring.viewer",
        "roles/stackdriver.resourceMetadata.writer",
        "roles/autoscaling.metricsWriter",
    }  # images: read on the project's own repository alone (test_broker_program)
    assert not {r.inputs["role"] for r in program.of_type(IAM)} & {"roles/editor", "roles/owner"}
    for pool in program.of_type(POOL):
        assert pool.inputs["nodeConfig"]["serviceAccount"] == email


def test_cluster_is_created_after_its_node_roles_are_granted(program):
    cluster = program.one(CLUSTER)
    node_roles = [role for role in program.of_type(IAM) if role.name.startswith("gke-nodes-")]
    assert len(node_roles) == 5
    for role in node_roles:
        assert program.depends_on(cluster, role), role.name


def pool(program, role):
    return program.one(POOL, f"-{role}-pool").inputs


def test_cpu_pool_is_labelled_untainted_and_autoscales_within_bounds(program):
    cpu = pool(program, "cpu")
    assert cpu["nodeConfig"]["labels"] == {"gpu": "false"}
    assert not cpu["nodeConfig"].get("taints")
    assert not cpu["nodeConfig"].get("guestAccelerators")
    assert cpu["nodeConfig"]["machineType"] == "e2-standard-2"  # two base runners, the broker, GKE's pods
    assert cpu["autoscaling"] == {"minNodeCount": 1, "maxNodeCount": 3}


def test_gpu_pool_is_labelled_tainted_and_scales_from_zero(program):
    gpu = pool(program, "gpu")
    assert gpu["nodeConfig"]["labels"] == {"gpu": "true"}
    assert gpu["nodeConfig"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}]
    assert gpu["autoscaling"] == {"minNodeCount": 0, "maxNodeCount": 2}
    assert gpu["initialNodeCount"] == 0
    assert gpu["nodeConfig"]["spot"] is False


def test_gpu_pool_carries_the_gpus_with_gke_installing_the_driver(program):
    gpu = pool(program, "gpu")
    assert gpu["nodeConfig"]["guestAccelerators"] == [
        {"type": "nvidia-tesla-t4", "count": 1, "gpuDriverInstallationConfig": {"gpuDriverVersion": "DEFAULT"}}
    ]
    assert gpu["nodeConfig"]["machineType"] == "n1-standard-4"


def test_gpu_settings_follow_config():
    program = run_program(
        {
            "gke-gpu-runners:gpuType": "nvidia-l4",
            "gke-gpu-runners:gpuCount": "2",
            "gke-gpu-runners:gpuMinNodes": "1",
            "gke-gpu-runners:gpuMaxNodes": "4",
            "gke-gpu-runners:gpuSpot": "true",
            "gke-gpu-runners:gpuDriverVersion": "LATEST",
            "gke-gpu-runners:cpuMachineType": "e2-standard-8",
            "gke-gpu-runners:cpuMinNodes": "2",
            "gke-gpu-runners:cpuMaxNodes": "5",
        }
    )
    gpu, cpu = pool(program, "gpu"), pool(program, "cpu")
    assert gpu["nodeConfig"]["guestAccelerators"] == [
        {"type": "nvidia-l4", "count": 2, "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"}}
    ]
    assert gpu["nodeConfig"]["machineType"] == "g2-standard-24"
    assert gpu["nodeConfig"]["spot"] is True
    assert gpu["autoscaling"] == {"minNodeCount": 1, "maxNodeCount": 4}
    assert cpu["nodeConfig"]["machineType"] == "e2-standard-8"
    assert cpu["autoscaling"] == {"minNodeCount": 2, "maxNodeCount": 5}


@pytest.mark.parametrize("role", ["cpu", "gpu"])
def test_pools_self_heal_and_use_the_gke_metadata_server(program, role):
    config = pool(program, role)
    assert config["management"] == {"autoRepair": True, "autoUpgrade": True}
    assert config["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert config["nodeConfig"]["shieldedInstanceConfig"] == {
        "enableSecureBoot": True,
        "enableIntegrityMonitoring": True,
    }


def test_changing_pool_bounds_resizes_instead_of_replacing_the_pool(program):
    for node_pool in program.of_type(POOL):
        assert "initialNodeCount" in node_pool.ignore_changes, node_pool.name


def test_a_replaced_pool_frees_its_fixed_name_first(program):
    for node_pool in program.of_type(POOL):
        assert node_pool.delete_before_replace, node_pool.name


def test_pools_belong_to_the_cluster(program):
    cluster = program.one(CLUSTER)
    for node_pool in program.of_type(POOL):
        assert node_pool.inputs["cluster"] == "gpu-runners"
        assert program.depends_on(node_pool, cluster)


def test_outputs_name_the_cluster_and_its_location(program):
    assert program.outputs["clusterName"] == "gpu-runners"
    assert program.outputs["clusterLocation"] == "us-central1-a"


def test_kubeconfig_output_is_secret_and_authenticates_with_the_gke_plugin(program):
    assert "kubeconfig" in program.secret_outputs
    config = yaml.safe_load(program.outputs["kubeconfig"])
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {"server": f"https://{FAKE_ENDPOINT}", "certificate-authority-data": FAKE_CA_B64}
    base64.b64decode(cluster["cluster"]["certificate-authority-data"], validate=True)
    (user,) = config["users"]
    assert user["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert user["user"]["exec"]["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert config["current-context"] == "gke_acme-ml_us-central1-a_gpu-runners"
    assert "token" not in user["user"]


def test_a_first_preview_with_unknown_cluster_outputs_does_not_crash():
    program = run_program(preview=True, cluster={"endpoint": None})
    assert program.one(CLUSTER).inputs["name"] == "gpu-runners"
    assert program.outputs["kubeconfig"] is None  # unknown until GKE answers
    assert len(program.of_type(POOL)) == 2
