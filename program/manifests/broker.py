"""The runner broker's pod and rights, as plain dicts.

The broker is the one holder of the runner credential in the cluster and the one
creator of GPU runner Jobs, which it makes from the template mounted here: a file in
its own namespace, out of CI's reach.
"""

from program.manifests.runners import CPU_POOL_TOLERATION, container_security_context, pod_security_context
from runner_contract import (
    BASE_RUNNER,
    BROKER,
    BROKER_AUDIENCE,
    BROKER_HEALTH_PORT,
    BROKER_PORT,
    BROKER_TEMPLATE_FILE,
    BROKER_UID,
    CPU_POOL_LABELS,
    HEALTH_PATH,
    RUNNER_ACCOUNT,
)

CREDENTIAL_SECRET = "runner-credential"
CREDENTIAL_DIR = "/run/secrets/runner-credential"
BROKER_TEMPLATE_CONFIGMAP = "gpu-runner-job"
TEMPLATE_DIR, TEMPLATE_FILE = BROKER_TEMPLATE_FILE.rsplit("/", 1)
SWEEP_SECONDS = 30
# Enough for requests in flight (12 s) and the final sweep, which retries busy runners
# for up to two minutes until GitHub lets them go.
BROKER_GRACE_SECONDS = 180
# The broker's ServiceAccount token, mounted by hand so that nothing else is.
KUBE_API_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

BROKER_CPU_MILLIS = 50
BROKER_MEMORY_MIB = 64
BROKER_RESOURCES = {
    "requests": {"cpu": f"{BROKER_CPU_MILLIS}m", "memory": f"{BROKER_MEMORY_MIB}Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}

# TokenReview is cluster-scoped: the one right the broker has outside the two namespaces.
TOKEN_REVIEW_RULES = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
]
# In the runner namespace, exactly the calls the broker makes: review a pod and what
# owns it, record a grant on it, replace a spent one; create, watch and remove GPU
# runner Jobs; read the events that say why a runner waits. No Secret.
RUNNER_NAMESPACE_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "create", "delete"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
]


def credential_env(app_id: str | None, app_installation_id: str | None) -> list[dict]:
    """Where the broker finds its credential: the App's IDs and key file, or the PAT file."""
    if app_id is not None:
        return [
            {"name": "GITHUB_APP_ID", "value": app_id},
            {"name": "GITHUB_APP_INSTALLATION_ID", "value": app_installation_id},
            {"name": "GITHUB_APP_PRIVATE_KEY_FILE", "value": f"{CREDENTIAL_DIR}/private-key"},
        ]
    return [{"name": "GITHUB_TOKEN_FILE", "value": f"{CREDENTIAL_DIR}/token"}]


def kube_api_volume() -> dict:
    """What automounting would give, written out: a token for the API server, its CA, the namespace."""
    return {
        "name": "kube-api",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            ],
        },
    }


def broker_pod_spec(
    image: str,
    repository: str,
    runner_namespace: str,
    max_gpu_runners_per_run: int,
    app_id: str | None = None,
    app_installation_id: str | None = None,
) -> dict:
    """The broker's pod: read-only, non-root, on the CPU pool, the credential and the template as files."""
    probe = {"httpGet": {"path": HEALTH_PATH, "port": BROKER_HEALTH_PORT}, "periodSeconds": 10, "timeoutSeconds": 3}
    return {
        "serviceAccountName": BROKER,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(BROKER_UID),
        "nodeSelector": CPU_POOL_LABELS,
        "tolerations": [CPU_POOL_TOLERATION],
        "terminationGracePeriodSeconds": BROKER_GRACE_SECONDS,
        "containers": [
            {
                "name": "broker",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "env": [
                    {"name": "BROKER_REPOSITORY", "value": repository},
                    {"name": "BROKER_RUNNER_NAMESPACE", "value": runner_namespace},
                    {"name": "BROKER_AUDIENCE", "value": BROKER_AUDIENCE},
                    {"name": "BROKER_LISTEN", "value": f"0.0.0.0:{BROKER_PORT}"},
                    {"name": "BROKER_HEALTH_LISTEN", "value": f"0.0.0.0:{BROKER_HEALTH_PORT}"},
                    {"name": "BROKER_BASE_RUNNER_DEPLOYMENT", "value": BASE_RUNNER},
                    {"name": "BROKER_RUNNER_SERVICE_ACCOUNT", "value": RUNNER_ACCOUNT},
                    {"name": "BROKER_GPU_RUNNER_TEMPLATE_FILE", "value": BROKER_TEMPLATE_FILE},
                    {"name": "BROKER_MAX_GPU_RUNNERS_PER_RUN", "value": str(max_gpu_runners_per_run)},
                    {"name": "BROKER_SWEEP_SECONDS", "value": str(SWEEP_SECONDS)},
                    *credential_env(app_id, app_installation_id),
                ],
                "ports": [
                    {"name": "http", "containerPort": BROKER_PORT, "protocol": "TCP"},
                    {"name": "health", "containerPort": BROKER_HEALTH_PORT, "protocol": "TCP"},
                ],
                "resources": BROKER_RESOURCES,
                "securityContext": container_security_context(read_only_root=True, uid=BROKER_UID),
                "volumeMounts": [
                    {"name": "credential", "mountPath": CREDENTIAL_DIR, "readOnly": True},
                    {"name": "gpu-runner-job", "mountPath": TEMPLATE_DIR, "readOnly": True},
                    {"name": "kube-api", "mountPath": KUBE_API_DIR, "readOnly": True},
                ],
                "readinessProbe": probe,
                "livenessProbe": {**probe, "failureThreshold": 3},
            }
        ],
        "volumes": [
            # Whole Secret and ConfigMap, not subPaths: the kubelet then updates the files
            # when `pulumi up` rotates the credential or changes the template, and the
            # broker reads them on each use.
            {"name": "credential", "secret": {"secretName": CREDENTIAL_SECRET, "defaultMode": 0o440}},
            {"name": "gpu-runner-job", "configMap": {"name": BROKER_TEMPLATE_CONFIGMAP, "defaultMode": 0o444}},
            kube_api_volume(),
        ],
    }
