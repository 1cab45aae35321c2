"""Documents the program hands to tools: kubeconfigs.

Plain functions from values to text, built as dicts and serialised, so their shape is
tested directly and no value can break out of a string template.
"""

import yaml

AUTH_PLUGIN_HINT = (
    "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin "
    "(https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl)"
)


def _kubeconfig(name: str, endpoint: str, ca_certificate_b64: str, user: dict, namespace: str | None = None) -> str:
    context = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": f"https://{endpoint}",
                    "certificate-authority-data": ca_certificate_b64,
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)


def operator_kubeconfig(name: str, endpoint: str, ca_certificate_b64: str) -> str:
    """An operator's kubeconfig: credentials come from the caller's gcloud login."""
    return _kubeconfig(
        name,
        endpoint,
        ca_certificate_b64,
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "gke-gcloud-auth-plugin",
                "installHint": AUTH_PLUGIN_HINT,
                "provideClusterInfo": True,
                "interactiveMode": "Never",
            }
        },
    )


CI_CREDENTIAL_HINT = (
    "gpu-runner comes with the runner image; the job needs permissions: id-token: write and the variables "
    "GCP_WORKLOAD_IDENTITY_PROVIDER and GCP_SERVICE_ACCOUNT in its environment"
)


def ci_kubeconfig(name: str, endpoint: str, ca_certificate_b64: str, namespace: str) -> str:
    """CI's kubeconfig: no credential in it; `gpu-runner credential` brings a short-lived one."""
    return _kubeconfig(
        name,
        endpoint,
        ca_certificate_b64,
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "gpu-runner",
                "args": ["credential"],
                "installHint": CI_CREDENTIAL_HINT,
                "provideClusterInfo": False,
                "interactiveMode": "Never",
            }
        },
        namespace,
    )
