"""existingCluster: the runners join a cluster the user already has, which stays out of the stack."""

import copy
import json

import pytest
import yaml
from pulumi import RunError

from program_harness import EXISTING_CLUSTER, EXISTING_ENDPOINT, FAKE_CA_B64, run_program
from fake_compute import shared_fake_compute

P = "gke-gpu-runners"
CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"
GET_CLUSTER = "gcp:container/getCluster:getCluster"
EXISTING = {f"{P}:existingCluster": "mlops-kubernetes"}
FIX = "gcloud container clusters update mlops-kubernetes --location us-central1-a --project acme-ml"
SHARED_CPU_TAINT = {"key": "gke-gpu-runners/pool", "value": "cpu", "effect": "NO_SCHEDULE"}


@pytest.fixture(scope="module")
def joined():
    """The program with the tutorial's cluster, healthy."""
    return run_program(EXISTING)


def pools(program) -> dict:
    return {pool.inputs["name"]: pool for pool in program.of_type(POOL)}


def refused(existing_cluster: dict | None = None, config: dict | None = None) -> tuple[str, list]:
    runs = []
    with pytest.raises(RunError) as error:
        run_program({**EXISTING, **(config or {})}, existing_cluster=existing_cluster, on_run=runs.append)
    return str(error.value), runs[0].resources


def created(resources) -> list:
    return [r.typ for r in resources if not r.typ.startswith("pulumi:providers:")]


def test_no_cluster_is_created_and_the_named_one_is_read_through_the_explicit_provider(joined):
    assert joined.of_type(CLUSTER) == []
    (call,) = [c for c in joined.calls if c[0] == GET_CLUSTER]
    assert {k: call[1][k] for k in ("name", "location", "project")} == {
        "name": "mlops-kubernetes",
        "location": "us-central1-a",
        "project": "acme-ml",
    }
    assert call[2].startswith(joined.one("pulumi:providers:gcp").urn)


def test_the_gpu_pool_and_a_cpu_pool_are_added_to_the_named_cluster_and_named_as_ours(joined):
    added = pools(joined)
    assert set(added) == {"gpu-runners-cpu-pool", "gpu-runners-gpu-pool"}
    for pool in added.values():
        assert (pool.inputs["cluster"], pool.inputs["location"]) == ("mlops-kubernetes", "us-central1-a")
        assert "nodeLocations" not in pool.inputs  # a zonal cluster's own zone
    # The runners' nodeSelector: the user's own nodes carry no gpu label, so the CPU pool always comes.
    assert added["gpu-runners-cpu-pool"].inputs["nodeConfig"]["labels"] == {"gpu": "false"}


def test_the_pools_are_the_same_as_in_a_cluster_the_program_creates_but_for_the_cpu_pools_taint(joined, program):
    mine = {p.inputs["name"].removeprefix("gpu-runners-"): p for p in pools(joined).values()}
    theirs = pools(program)
    assert set(mine) == set(theirs) == {"cpu-pool", "gpu-pool"}
    for role, pool in mine.items():
        same = ("nodeConfig", "autoscaling", "management", "initialNodeCount", "project")
        inputs = copy.deepcopy({k: pool.inputs[k] for k in same})
        if role == "cpu-pool":
            assert inputs["nodeConfig"].pop("taints") == [SHARED_CPU_TAINT]
            assert not theirs[role].inputs["nodeConfig"].get("taints")
            inputs["nodeConfig"]["taints"] = theirs[role].inputs["nodeConfig"].get("taints")
        assert inputs == {k: theirs[role].inputs[k] for k in same}, role
        assert pool.ignore_changes == theirs[role].ignore_changes and pool.delete_before_replace
        assert pool.custom_timeouts == theirs[role].custom_timeouts


def test_the_clusters_own_workloads_stay_off_the_cpu_pool_which_the_runners_and_broker_tolerate(joined):
    """On the runners' nodes the user's pods could not pull their images, and would sit beside runners."""
    cpu = pools(joined)["gpu-runners-cpu-pool"]
    assert cpu.inputs["nodeConfig"]["taints"] == [SHARED_CPU_TAINT]
    for deployment in joined.of_type("kubernetes:apps/v1:Deployment"):
        spec = deployment.inputs["spec"]["template"]["spec"]
        if spec["nodeSelector"] == {"gpu": "false"}:
            assert {"key": "gke-gpu-runners/pool", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"} in spec[
                "tolerations"
            ], deployment.name


def test_the_pools_nodes_run_as_their_own_account_which_holds_its_roles_first(joined):
    account = joined.one("gcp:serviceaccount/account:Account", "gke-nodes")
    email = f"{account.inputs['accountId']}@acme-ml.iam.gserviceaccount.com"
    roles = [
        r for r in joined.of_type("gcp:projects/iAMMember:IAMMember") if r.inputs["member"] == f"serviceAccount:{email}"
    ]
    assert len(roles) == 5
    for pool in pools(joined).values():
        assert pool.inputs["nodeConfig"]["serviceAccount"] == email
        assert pool.inputs["nodeConfig"]["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
        assert all(joined.depends_on(pool, role) for role in roles)


def kubernetes_objects(program) -> set:
    return {
        (r.typ, r.name, json.dumps(r.inputs, sort_keys=True))
        for r in program.resources
        if r.typ.startswith("kubernetes:") and not r.typ.startswith("kubernetes:index")
    }


def test_the_same_kubernetes_objects_are_deployed_as_in_a_cluster_the_program_creates(joined, program):
    assert kubernetes_objects(joined) == kubernetes_objects(program)
    assert len(kubernetes_objects(joined)) >= 20


def test_kubernetes_goes_through_a_kubeconfig_of_the_existing_clusters_endpoint_and_ca(joined):
    provider = joined.one("pulumi:providers:kubernetes")
    config = yaml.safe_load(provider.inputs["kubeconfig"])
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {"server": f"https://{EXISTING_ENDPOINT}", "certificate-authority-data": FAKE_CA_B64}
    assert config["current-context"] == "gke_acme-ml_us-central1-a_mlops-kubernetes"
    assert "kubeconfig" in joined.secret_outputs and yaml.safe_load(joined.outputs["kubeconfig"]) == config
    ci = yaml.safe_load(next(s.inputs["value"] for s in joined.of_type("github:index/actionsSecret:ActionsSecret")))
    assert ci["clusters"][0]["cluster"]["server"] == f"https://{EXISTING_ENDPOINT}"


def test_outputs_name_the_existing_cluster(joined):
    assert (joined.outputs["clusterName"], joined.outputs["clusterLocation"]) == ("mlops-kubernetes", "us-central1-a")


def test_destroy_can_only_remove_what_the_program_added(joined, program):
    """The cluster is not in the stack; everything that is, a created-cluster stack has too."""

    def cloud(run) -> set:
        return {r.typ for r in run.resources if r.custom}

    assert cloud(joined) <= cloud(program)
    assert cloud(program) - cloud(joined) == {CLUSTER}


def test_the_runners_and_the_broker_wait_for_the_cpu_pool(joined):
    cpu = joined.one(POOL, "cpu-pool")
    for deployment in joined.of_type("kubernetes:apps/v1:Deployment"):
        assert joined.depends_on(deployment, cpu), deployment.name


def test_the_preflight_still_runs_for_the_pools_zone(joined):
    compute = shared_fake_compute()
    compute.reset()
    run_program(EXISTING)
    assert "/compute/v1/projects/acme-ml/zones/us-central1-a/acceleratorTypes" in [path for path, _ in compute.requests]


def test_a_first_preview_works():
    program = run_program(EXISTING, preview=True)
    assert program.of_type(CLUSTER) == [] and len(program.of_type(POOL)) == 2


# --- a regional cluster --------------------------------------------------------------


def test_a_regional_clusters_pools_go_in_the_zone_gcp_zone_names():
    compute = shared_fake_compute()
    compute.reset()
    program = run_program(
        {**EXISTING, f"{P}:location": "us-central1", "gcp:zone": "us-central1-b"},
        existing_cluster={"location": "us-central1"},
    )
    for pool in program.of_type(POOL):
        assert (pool.inputs["location"], pool.inputs["nodeLocations"]) == ("us-central1", ["us-central1-b"])
    assert "/compute/v1/projects/acme-ml/zones/us-central1-b/acceleratorTypes" in [p for p, _ in compute.requests]
    assert program.outputs["clusterLocation"] == "us-central1"
    context = yaml.safe_load(program.outputs["kubeconfig"])["current-context"]
    assert context == "gke_acme-ml_us-central1_mlops-kubernetes"


@pytest.mark.parametrize(
    "config", [{"gcp:zone": "us-central1"}, {f"{P}:location": "us-central1", "gcp:zone": "europe-west4-a"}]
)
def test_a_regional_cluster_without_a_zone_of_it_for_the_pools_is_refused(config):
    message, resources = refused(config=config)
    line = next(line for line in message.splitlines() if "- gcp:zone:" in line)
    assert "existingCluster mlops-kubernetes is regional (us-central1)" in line
    assert "accepted: location us-central1 and gcp:zone a zone of us-central1" in line
    assert resources == []


# --- what the runners' safety needs ------------------------------------------------------


def test_a_cluster_without_workload_identity_or_dataplane_v2_is_refused_before_anything_naming_each_fix():
    message, resources = refused({"workloadIdentityConfigs": [], "datapathProvider": "LEGACY_DATAPATH"})

    assert message.startswith("2 existing cluster problem(s); nothing was created")
    workload_identity = next(line for line in message.splitlines() if "Workload Identity" in line)
    assert workload_identity.strip().startswith(f"- {P}:existingCluster: mlops-kubernetes has no Workload Identity")
    assert f"{FIX} --workload-pool=acme-ml.svc.id.goog" in workload_identity
    policy = next(line for line in message.splitlines() if "NetworkPolicy" in line)
    assert "Dataplane V2 cannot be turned on in an existing cluster" in policy
    assert f"{FIX} --update-addons=NetworkPolicy=ENABLED, then {FIX} --enable-network-policy" in policy
    assert "pulumi config set allowNoNetworkPolicy true" in policy
    assert created(resources) == []


def test_network_policy_enforcement_without_dataplane_v2_is_enough():
    program = run_program(
        EXISTING,
        existing_cluster={
            "datapathProvider": "LEGACY_DATAPATH",
            "networkPolicies": [{"enabled": True, "provider": "CALICO"}],
        },
    )
    assert len(program.of_type(POOL)) == 2


def test_allow_no_network_policy_accepts_the_risk_but_never_a_missing_workload_identity():
    no_policy = {
        "datapathProvider": "LEGACY_DATAPATH",
        "networkPolicies": [{"enabled": False, "provider": "PROVIDER_UNSPECIFIED"}],
    }
    accepted = run_program({**EXISTING, f"{P}:allowNoNetworkPolicy": "true"}, existing_cluster=no_policy)
    assert len(accepted.of_type(POOL)) == 2

    message, _ = refused({**no_policy, "workloadIdentityConfigs": []}, {f"{P}:allowNoNetworkPolicy": "true"})
    assert message.startswith("1 existing cluster problem(s)") and "no Workload Identity" in message


def test_a_gke_that_does_not_install_gpu_drivers_is_refused_with_the_upgrade():
    message, resources = refused({"masterVersion": "1.26.5-gke.1200"})
    assert (
        "mlops-kubernetes runs GKE 1.26.5-gke.1200, and GKE installs the GPU driver of a node pool itself only "
        "from 1.27.2-gke.1200 on"
    ) in message
    assert (
        "gcloud container clusters upgrade mlops-kubernetes --location us-central1-a --project acme-ml --master"
    ) in message
    assert created(resources) == []
    assert run_program(EXISTING, existing_cluster={"masterVersion": "1.27.2-gke.1200"}).of_type(POOL)


def test_an_autopilot_cluster_is_refused():
    message, _ = refused({"enableAutopilot": True})
    assert "mlops-kubernetes is an Autopilot cluster, to which node pools cannot be added" in message


def test_a_cluster_gke_cannot_find_is_refused_naming_where_it_looked():
    message, resources = refused({"error": 'Cluster "mlops-kubernetes" not found'})
    assert (
        f"- {P}:existingCluster: no cluster mlops-kubernetes in us-central1-a of project acme-ml could be read "
        '(invoke of gcp:container/getCluster:getCluster failed: Cluster "mlops-kubernetes" not found'
    ) in message
    assert "gcloud container clusters list --project acme-ml" in message
    assert created(resources) == []


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("autoscalingProfile", "BALANCED", "--autoscaling-profile=optimize-utilization"),
        ("controlPlaneAuthorizedNetworks", '["203.0.113.0/24"]', "--enable-master-authorized-networks"),
        ("deletionProtection", "true", "pulumi destroy never deletes an existing cluster"),
    ],
)
def test_settings_of_a_created_cluster_are_refused_with_an_existing_one(key, value, words):
    message, resources = refused(config={f"{P}:{key}": value})
    line = next(line for line in message.splitlines() if f"- {P}:{key}:" in line)
    assert "existingCluster mlops-kubernetes keeps its own; accepted: the default" in line and words in line
    assert resources == []


def test_the_fake_cluster_speaks_the_providers_result_type():
    """The mock's wire names are the ones pulumi_gcp's GetClusterResult reads."""
    import inspect

    from pulumi_gcp.container import GetClusterResult

    source = inspect.getsource(GetClusterResult)
    for wire_name in EXISTING_CLUSTER:
        assert f'name="{wire_name}"' in source or f"def {wire_name}(" in source, wire_name


SCALE_SET_MODE = {f"{P}:runnerMode": "scale-set"}


def test_scale_set_mode_in_a_cluster_without_managed_prometheus_is_refused_naming_the_fix():
    message, resources = refused(
        {"monitoringConfigs": [{"managedPrometheuses": [{"enabled": False}]}]}, config=SCALE_SET_MODE
    )
    (line,) = [line for line in message.splitlines() if "Managed Service for Prometheus" in line]
    assert f"{FIX} --enable-managed-prometheus" in line
    assert created(resources) == []


def test_managed_prometheus_is_needed_only_by_scale_set_mode():
    off = {"monitoringConfigs": [{"managedPrometheuses": [{"enabled": False}]}]}
    assert len(run_program(EXISTING, existing_cluster=off).of_type(POOL)) == 2
    on = {"monitoringConfigs": [{"managedPrometheuses": [{"enabled": True}]}]}
    assert len(run_program({**EXISTING, **SCALE_SET_MODE}, existing_cluster=on).of_type(POOL)) == 2
