"""runnerMode: scale-set: GitHub's Actions Runner Controller (ARC), as the whole program registers it.

The charts are not vendored. Their values are checked key by key against the keys the charts
document for the version the program pins, 0.14.2:
https://github.com/actions/actions-runner-controller/blob/gha-runner-scale-set-0.14.2/charts/gha-runner-scale-set-controller/values.yaml
https://github.com/actions/actions-runner-controller/blob/gha-runner-scale-set-0.14.2/charts/gha-runner-scale-set/values.yaml
"""

import json

import pytest
import yaml
from pulumi import RunError

from program_harness import GITHUB_TOKEN, HELM_RELEASE, RUNNER_TOKEN, SCALE_SET, is_secret, run_program

P = "gke-gpu-runners"
CHARTS = "oci://ghcr.io/actions/actions-runner-controller-charts"
VERSION = "0.14.2"
RUNNER_NS = "github-runners"
SYSTEM_NS = "github-runners-system"
SECRET = "kubernetes:core/v1:Secret"
NAMESPACE = "kubernetes:core/v1:Namespace"
POD_MONITORING = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
APP_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----\n"
ORGANIZATION = {
    **SCALE_SET,
    f"{P}:githubOrganization": "Acme",
    f"{P}:runnerGroup": "gpu-runners",
    f"{P}:githubAppId": "12345",
    f"{P}:githubAppInstallationId": "67890",
    f"{P}:githubAppPrivateKey": APP_KEY,
    f"{P}:runnerToken": None,
}

# Every key path of the values we set, as the 0.14.2 values.yaml documents it (commented-out
# keys included: the file documents them so). Below a path ending in "*" the value is a
# Kubernetes object the chart passes through whole (a PodSpec, a SecurityContext, ...).
CONTROLLER_KEYS = {
    "serviceAccount.create",
    "serviceAccount.name",
    "flags.watchSingleNamespace",
    "flags.updateStrategy",
    "flags.logLevel",
    "flags.logFormat",
    "metrics.controllerManagerAddr",
    "metrics.listenerAddr",
    "metrics.listenerEndpoint",
    "podSecurityContext.*",
    "securityContext.*",
    "resources.*",
    "nodeSelector.*",
    "tolerations",
}
SCALE_SET_KEYS = {
    "githubConfigUrl",
    "githubConfigSecret",
    "runnerScaleSetName",
    "runnerGroup",
    "minRunners",
    "maxRunners",
    "controllerServiceAccount.name",
    "controllerServiceAccount.namespace",
    "listenerTemplate.*",
    "template.*",
}


@pytest.fixture(scope="module")
def scale_set():
    return run_program(SCALE_SET)


@pytest.fixture(scope="module")
def organization():
    return run_program(ORGANIZATION)


def release(program, chart: str):
    (found,) = [r for r in program.of_type(HELM_RELEASE) if r.inputs["chart"] == f"{CHARTS}/{chart}"]
    return found


def controller(program):
    return release(program, "gha-runner-scale-set-controller")


def gpu_scale_set(program):
    return release(program, "gha-runner-scale-set")


def runner_pod(program) -> dict:
    return gpu_scale_set(program).inputs["values"]["template"]["spec"]


def key_paths(values: dict, documented: set[str], prefix: str = "") -> set[str]:
    """The key paths of `values`, stopping where the documentation passes a whole object through."""
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if f"{path}.*" in documented:
            paths.add(f"{path}.*")
        elif isinstance(value, dict):
            paths |= key_paths(value, documented, f"{path}.")
        else:
            paths.add(path)
    return paths


# --- the charts ------------------------------------------------------------------------------


def test_controller_and_scale_set_come_from_githubs_oci_charts_at_one_pinned_version(scale_set):
    arc, gpu = controller(scale_set).inputs, gpu_scale_set(scale_set).inputs
    assert arc["version"] == gpu["version"] == VERSION
    assert (arc["name"], arc["namespace"]) == ("arc", SYSTEM_NS)
    assert (gpu["name"], gpu["namespace"]) == ("gpu", RUNNER_NS)
    for chart in (arc, gpu):
        assert "repositoryOpts" not in chart  # the OCI reference names the registry itself
        assert chart["timeout"] >= 300  # uninstalling waits for ARC to lift its finalizers
        assert not chart.get("skipAwait")
    provider = scale_set.one("pulumi:providers:kubernetes")
    assert controller(scale_set).provider.startswith(provider.urn)
    assert gpu_scale_set(scale_set).provider.startswith(provider.urn)


def test_the_controller_values_are_the_documented_keys_with_our_values(scale_set):
    values = controller(scale_set).inputs["values"]
    assert key_paths(values, CONTROLLER_KEYS) == CONTROLLER_KEYS
    assert values["serviceAccount"] == {"create": True, "name": "arc-controller"}
    assert values["flags"] == {
        "watchSingleNamespace": RUNNER_NS,
        "updateStrategy": "eventual",
        "logLevel": "info",
        "logFormat": "json",
    }
    # The chart's own example, which enables metrics on the controller and every listener.
    assert values["metrics"] == {
        "controllerManagerAddr": ":8080",
        "listenerAddr": ":8080",
        "listenerEndpoint": "/metrics",
    }
    assert values["nodeSelector"] == {"gpu": "false"}
    # The program's CPU pool is tainted in a user's existing cluster; ARC's pods tolerate it.
    assert values["tolerations"] == [
        {"key": "gke-gpu-runners/pool", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}
    ]


def test_the_scale_set_values_are_the_documented_keys_with_our_values(scale_set, organization):
    values = gpu_scale_set(scale_set).inputs["values"]
    assert key_paths(values, SCALE_SET_KEYS) == SCALE_SET_KEYS - {"runnerGroup"}
    assert values["githubConfigUrl"] == "https://github.com/Acme/Models"
    assert values["githubConfigSecret"] == "github-config"  # a pre-defined Secret, by name: no credential in values
    assert values["runnerScaleSetName"] == "gpu"
    assert (values["minRunners"], values["maxRunners"]) == (0, 2)  # gpuWarmRunners, gpuMaxNodes
    # Named, not looked up while rendering (pulumi/pulumi-kubernetes#2766).
    assert values["controllerServiceAccount"] == {"name": "arc-controller", "namespace": SYSTEM_NS}
    assert controller(scale_set).inputs["values"]["serviceAccount"]["name"] == "arc-controller"
    # No privileged Docker-in-Docker, no Kubernetes-mode hooks: only our pod template.
    assert "containerMode" not in values

    org = gpu_scale_set(organization).inputs["values"]
    assert key_paths(org, SCALE_SET_KEYS) == SCALE_SET_KEYS
    assert org["githubConfigUrl"] == "https://github.com/Acme"
    assert org["runnerGroup"] == "gpu-runners"


def test_runners_and_idle_runners_follow_the_gpu_pool():
    values = gpu_scale_set(
        run_program({**SCALE_SET, f"{P}:gpuMaxNodes": "4", f"{P}:gpuWarmRunners": "1", f"{P}:scaleSetName": "a100"})
    ).inputs
    assert (values["values"]["minRunners"], values["values"]["maxRunners"]) == (1, 4)
    assert values["name"] == values["values"]["runnerScaleSetName"] == "a100"


# --- the order of creation and destruction ---------------------------------------------------


def test_the_scale_set_waits_for_the_controller_which_waits_for_its_namespaces_and_the_credential(scale_set):
    arc, gpu = controller(scale_set), gpu_scale_set(scale_set)
    credential = scale_set.one(SECRET, "credential")
    system_namespace = scale_set.one(NAMESPACE, "controller-namespace")
    runner_namespace = scale_set.one(NAMESPACE, "runner-namespace")
    # Destroy runs this backwards: the scale set goes while its controller still runs to remove
    # the runners from GitHub and lift the actions.github.com/cleanup-protection finalizers.
    assert arc.urn in gpu.dependencies
    assert program_depends(scale_set, arc, system_namespace, runner_namespace, credential)
    assert program_depends(scale_set, gpu, credential, runner_namespace)
    assert not scale_set.depends_on(arc, gpu)
    assert scale_set.depends_on(arc, scale_set.one("gcp:container/nodePool:NodePool", "cpu-pool"))
    assert not scale_set.depends_on(gpu, scale_set.one("gcp:container/nodePool:NodePool", "gpu-pool"))


def program_depends(program, resource, *targets) -> bool:
    return all(program.depends_on(resource, target) for target in targets)


# --- what this mode does not have ------------------------------------------------------------


def test_no_base_runner_broker_runner_template_or_ci_write_access(scale_set):
    names = {(r.typ, r.inputs.get("metadata", {}).get("name")) for r in scale_set.resources}
    kinds = {r.typ for r in scale_set.resources}
    assert "kubernetes:core/v1:ConfigMap" not in kinds  # neither gpu-runner-template nor the broker's copy
    assert "kubernetes:apps/v1:Deployment" not in kinds  # no base runner, no broker, no placeholders
    assert not [n for n in names if n[1] and ("broker" in n[1] or "base-runner" in n[1])]
    assert not {"gke-gpu-runners:index:RunnerBroker", "gke-gpu-runners:index:Runners"} & kinds
    assert not [r for r in scale_set.of_type("gke-gpu-runners:index:ContainerImage") if r.name == "broker-image"]
    assert not scale_set.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    (ci_role,) = scale_set.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
    assert ci_role.inputs["metadata"]["namespace"] == RUNNER_NS
    assert {verb for rule in ci_role.inputs["rules"] for verb in rule["verbs"]} <= {"get", "list", "watch"}
    assert "gpuRunnerTemplate" not in scale_set.outputs and "brokerImage" not in scale_set.outputs
    assert scale_set.outputs["namespace"] == RUNNER_NS
    assert scale_set.outputs["scaleSetName"] == "gpu"


def test_the_preloader_stays_and_idle_runners_replace_the_placeholders():
    program = run_program({**SCALE_SET, f"{P}:gpuWarmRunners": "1"})
    (preloader,) = program.of_type("kubernetes:apps/v1:DaemonSet")
    assert preloader.inputs["metadata"]["namespace"] == SYSTEM_NS
    assert not program.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")
    assert gpu_scale_set(program).inputs["values"]["minRunners"] == 1


# --- per-run mode stays as it was ------------------------------------------------------------


def registrations(program) -> list:
    names = {r.urn: r.name for r in program.resources}
    return sorted(
        (r.typ, r.name, json.dumps(r.raw_inputs, sort_keys=True), sorted(names.get(d, d) for d in r.dependencies))
        for r in program.resources
    )


def test_per_run_mode_is_unchanged_when_runner_mode_is_unset(program):
    explicit = run_program({f"{P}:runnerMode": "per-run", f"{P}:scaleSetName": "something-else"})
    assert registrations(explicit) == registrations(program)
    assert explicit.outputs == program.outputs
    kinds = {r.typ for r in program.resources}
    assert not {HELM_RELEASE, POD_MONITORING, DASHBOARD} & kinds
    assert "monitoringConfig" not in program.one("gcp:container/cluster:Cluster").inputs
    assert "scaleSetName" not in program.outputs
    assert program.one("kubernetes:apps/v1:Deployment", "base-runner")


@pytest.mark.parametrize("key, value", [("githubOrganization", "Acme"), ("runnerGroup", "gpu-runners")])
def test_scale_set_keys_are_refused_in_per_run_mode_with_the_fix(key, value):
    runs = []
    with pytest.raises(RunError) as refused:
        run_program({f"{P}:{key}": value}, on_run=runs.append)
    line = next(text for text in str(refused.value).splitlines() if text.strip().startswith(f"- {P}:{key}:"))
    assert "only used with runnerMode scale-set" in line
    assert "pulumi config set runnerMode scale-set" in line and f"pulumi config rm {key}" in line
    assert runs[0].resources == []


@pytest.mark.parametrize(
    "config, key, words",
    [
        ({f"{P}:runnerMode": "arc"}, "runnerMode", "per-run, scale-set"),
        ({**SCALE_SET, f"{P}:scaleSetName": "GPU"}, "scaleSetName", "lowercase"),
        ({**SCALE_SET, f"{P}:scaleSetName": "4gpus"}, "scaleSetName", "starting with a letter"),
        ({**SCALE_SET, f"{P}:scaleSetName": "g" * 46}, "scaleSetName", "1-45"),
        ({**SCALE_SET, f"{P}:githubOrganization": "other-org"}, "githubOrganization", "accepted: Acme"),
        ({**SCALE_SET, f"{P}:githubOrganization": "-acme"}, "githubOrganization", "organization's login"),
        ({**SCALE_SET, f"{P}:runnerGroup": "gpu-runners"}, "runnerGroup", "needs githubOrganization"),
        ({**SCALE_SET, f"{P}:githubOrganization": "Acme", f"{P}:runnerGroup": "a: b"}, "runnerGroup", "runner groups"),
    ],
)
def test_bad_scale_set_settings_are_refused_before_any_resource(config, key, words):
    runs = []
    with pytest.raises(RunError) as refused:
        run_program(config, on_run=runs.append)
    line = next((text for text in str(refused.value).splitlines() if text.strip().startswith(f"- {P}:{key}:")), "")
    assert words in line, str(refused.value)
    assert runs[0].resources == []


# --- the same guarantees as per-run mode -----------------------------------------------------


def test_a_public_repository_is_refused_in_scale_set_mode_too():
    runs = []
    with pytest.raises(RunError, match="is public"):
        run_program(SCALE_SET, repository={"visibility": "public", "private": False}, on_run=runs.append)
    assert {r.typ for r in runs[0].resources} == {"pulumi:providers:gcp", "pulumi:providers:github"}


def test_the_preflight_runs_in_scale_set_mode_too():
    runs = []
    with pytest.raises(RunError, match="is not a zone of Compute Engine"):
        run_program({**SCALE_SET, "gcp:zone": "us-central1-z"}, on_run=runs.append)
    assert not [r for r in runs[0].resources if not r.typ.startswith("pulumi:providers:")]


def test_a_first_preview_with_unknown_cluster_outputs_does_not_crash():
    program = run_program(SCALE_SET, preview=True, cluster={"endpoint": None})
    assert len(program.of_type(HELM_RELEASE)) == 2


def test_no_registry_credential_anywhere_in_the_cluster():
    program = run_program({**SCALE_SET, f"{P}:registryToken": "push-token"})
    for secret in program.of_type(SECRET):
        assert secret.inputs["type"] != "kubernetes.io/dockerconfigjson", secret.name
    assert "imagePullSecrets" not in runner_pod(program)
    assert "imagePullSecrets" not in controller(program).inputs["values"]
    for token in (GITHUB_TOKEN, "push-token"):
        for resource in program.resources:
            if resource.typ.startswith("kubernetes:"):
                assert token not in json.dumps(resource.inputs), resource.name


# --- the credential --------------------------------------------------------------------------


def test_the_pat_reaches_arc_as_a_pulumi_secret_in_the_charts_key_and_nowhere_else(scale_set):
    (credential,) = scale_set.of_type(SECRET)
    assert credential.inputs["metadata"]["name"] == "github-config"
    # ARC's controller reads githubConfigSecret beside the scale set, in its namespace, and nowhere else.
    assert credential.inputs["metadata"]["namespace"] == RUNNER_NS
    assert credential.inputs["stringData"] == {"github_token": RUNNER_TOKEN}
    assert is_secret(credential.raw_inputs["stringData"])
    holders = [r.name for r in scale_set.resources if RUNNER_TOKEN in json.dumps(r.inputs)]
    assert holders == [credential.name]  # not in the Helm values, not in a pod


def test_a_github_app_reaches_arc_as_its_ids_and_its_key(organization):
    (credential,) = organization.of_type(SECRET)
    assert credential.inputs["stringData"] == {
        "github_app_id": "12345",
        "github_app_installation_id": "67890",
        "github_app_private_key": APP_KEY,
    }
    assert is_secret(credential.raw_inputs["stringData"])
    assert [r.name for r in organization.resources if "MIIBOgIBAAJBAK" in json.dumps(r.inputs)] == [credential.name]


def test_runner_pods_mount_no_secret_and_reach_no_kubernetes_api(scale_set):
    pod = runner_pod(scale_set)
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "github-runner"
    assert not [v for v in pod["volumes"] if "secret" in v or "projected" in v]
    assert "env" not in container and "envFrom" not in container  # ARC adds only the runner's own JIT config
    account = scale_set.one("kubernetes:core/v1:ServiceAccount", "runner-account").inputs
    assert account["metadata"] == {
        "name": "github-runner",
        "namespace": RUNNER_NS,
        "labels": account["metadata"]["labels"],
    }
    assert account["automountServiceAccountToken"] is False
    policy = scale_set.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs
    assert policy["metadata"]["namespace"] == RUNNER_NS
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


# --- the GPU runner pod ----------------------------------------------------------------------


def test_the_runner_pod_runs_our_image_by_digest_as_the_cluster_pulls_it_with_arcs_conventions(scale_set):
    pod = runner_pod(scale_set)
    (container,) = pod["containers"]
    assert container["name"] == "runner"  # the container ARC hands the JIT configuration to
    assert container["image"] == scale_set.outputs["gpuRunnerImage"] == scale_set.outputs["clusterRunnerImage"]
    assert "@sha256:" in container["image"] and container["image"].startswith("us-central1-docker.pkg.dev/")
    # ARC's convention, run.sh, at the place our image installs the runner.
    assert container["command"] == ["/usr/bin/tini", "--", "/home/runner/actions-runner/run.sh"]
    assert pod["restartPolicy"] == "Never"
    assert pod["activeDeadlineSeconds"] == 240 * 60


def test_the_runner_pod_takes_a_whole_gpu_node_on_the_tainted_pool(scale_set):
    pod = runner_pod(scale_set)
    (container,) = pod["containers"]
    assert pod["nodeSelector"] == {"gpu": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["cpu"] == "2900m"  # n1-standard-4, less GKE's share
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"


def test_the_runner_pod_follows_gpu_count_machine_and_deadline():
    program = run_program(
        {**SCALE_SET, f"{P}:gpuType": "nvidia-l4", f"{P}:gpuCount": "2", f"{P}:gpuRunnerDeadlineMinutes": "90"}
    )
    pod = runner_pod(program)
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["activeDeadlineSeconds"] == 90 * 60
    (quota,) = program.of_type("kubernetes:core/v1:ResourceQuota")
    assert quota.inputs["spec"] == {"hard": {"requests.nvidia.com/gpu": "4"}}  # gpuMaxNodes 2 x gpuCount 2


def test_the_runner_pod_meets_the_restricted_pod_security_standard(scale_set):
    pod = runner_pod(scale_set)
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == ["pgrep", "-f", "Runner.Listener"]


def test_arcs_controller_and_listener_meet_restricted_in_the_enforcing_system_namespace(scale_set):
    for namespace in scale_set.of_type(NAMESPACE):
        assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    arc = controller(scale_set).inputs["values"]
    listener = gpu_scale_set(scale_set).inputs["values"]["listenerTemplate"]["spec"]
    (listener_container,) = listener["containers"]
    assert listener_container["name"] == "listener"  # ARC merges the container of this name into its own
    for pod, container in (
        (arc["podSecurityContext"], arc["securityContext"]),
        (listener["securityContext"], listener_container["securityContext"]),
    ):
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"] == {"drop": ["ALL"]}
    assert listener["nodeSelector"] == {"gpu": "false"}
    assert listener["terminationGracePeriodSeconds"] == 60  # ARC's own, which the template would clear
    for resources in (arc["resources"], listener_container["resources"]):
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


# --- metrics ---------------------------------------------------------------------------------


def test_managed_prometheus_scrapes_the_controller_and_the_listener_on_arcs_metrics_port(scale_set):
    cluster = scale_set.one("gcp:container/cluster:Cluster").inputs
    assert cluster["monitoringConfig"] == {
        "enableComponents": ["SYSTEM_COMPONENTS"],
        "managedPrometheus": {"enabled": True},
    }
    monitorings = {m.inputs["metadata"]["name"]: m.inputs for m in scale_set.of_type(POD_MONITORING)}
    assert set(monitorings) == {"arc-controller", "arc-listener"}
    # The labels ARC 0.14.2 puts on its pods: the controller chart's deployment.yaml, and
    # resourcebuilder.go for the listener; ARC names both metrics ports "metrics".
    assert monitorings["arc-controller"]["spec"]["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/part-of": "gha-rs-controller",
            "app.kubernetes.io/component": "controller-manager",
        }
    }
    assert monitorings["arc-listener"]["spec"]["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/part-of": "gha-runner-scale-set",
            "app.kubernetes.io/component": "runner-scale-set-listener",
        }
    }
    for monitoring in monitorings.values():
        assert monitoring["apiVersion"] == "monitoring.googleapis.com/v1" and monitoring["kind"] == "PodMonitoring"
        assert monitoring["metadata"]["namespace"] == SYSTEM_NS
        assert set(monitoring["spec"]) == {"selector", "endpoints"}
        (endpoint,) = monitoring["spec"]["endpoints"]
        assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s"}


def test_the_dashboard_shows_start_latency_queue_runners_and_gpu_nodes_of_this_scale_set(scale_set):
    dashboard = scale_set.one(DASHBOARD)
    document = json.loads(dashboard.inputs["dashboardJson"])
    assert dashboard.inputs["project"] == "acme-ml"
    tiles = document["mosaicLayout"]["tiles"]
    queries = [d["timeSeriesQuery"] for t in tiles for d in t["widget"]["xyChart"]["dataSets"]]
    promql = " ".join(q["prometheusQuery"] for q in queries if "prometheusQuery" in q)
    for metric in (
        "gha_job_startup_duration_seconds_bucket",
        "gha_assigned_jobs",
        "gha_running_jobs",
        "gha_busy_runners",
        "gha_idle_runners",
    ):
        assert metric in promql
    for query in (q["prometheusQuery"] for q in queries if "prometheusQuery" in q):
        assert f'cluster="gpu-runners",namespace="{SYSTEM_NS}"' in query
    (nodes,) = [q["timeSeriesFilter"] for q in queries if "timeSeriesFilter" in q]
    assert 'resource.type="k8s_node"' in nodes["filter"] and 'metadata.user_labels."gpu"="true"' in nodes["filter"]
    assert 'resource.label."cluster_name"="gpu-runners"' in nodes["filter"]
    assert nodes["aggregation"]["crossSeriesReducer"] == "REDUCE_COUNT"
    for tile in tiles:
        assert tile["xPos"] + tile["width"] <= document["mosaicLayout"]["columns"]
    api = scale_set.one("gcp:projects/service:Service", "monitoring-api")
    assert api.inputs["service"] == "monitoring.googleapis.com" and api.inputs["disableOnDestroy"] is False
    assert scale_set.depends_on(dashboard, api)


def test_the_runner_pod_template_renders_as_a_pod_for_whole_manifest_checks(scale_set):
    from program_harness import kubernetes_objects

    (pod,) = [o for o in kubernetes_objects(scale_set) if o["kind"] == "Pod"]
    assert pod["metadata"]["namespace"] == RUNNER_NS and pod["spec"] == runner_pod(scale_set)
    assert yaml.safe_load(yaml.safe_dump(pod)) == pod
