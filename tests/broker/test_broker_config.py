"""Configuration read once from the environment, every problem named at once; and the GPU runner template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from broker_harness import (
    APP_ID,
    AUDIENCE,
    INSTALLATION_ID,
    NAMESPACE,
    PAT,
    REPOSITORY,
    RUNNER_IMAGE,
    BrokerSetup,
    gpu_runner_template,
)
from runner_broker import config as broker_config
from runner_broker.config import Address, ConfigError, PatCredential, load_config
from runner_broker.errors import CredentialUnreadable, NotConfigured
from runner_broker.http import RetryPolicy
from runner_broker.template import Template, TemplateSource, load_template, render

from runner_contract import APP_NAME_LABEL, RUN_ATTEMPT_LABEL, RUN_ID_LABEL, RUN_INDEX_LABEL, gpu_runner_job_name

pytest_plugins = ["broker_fixtures"]  # setup, broker, make_setup

STARTUP_SH_TIMEOUT_SECONDS = 15  # runner_image/startup.sh: RUNNER_BROKER_TIMEOUT_SECONDS' default


@pytest.fixture
def setup(tmp_path):
    with BrokerSetup(tmp_path) as made:
        yield made


def test_defaults(tmp_path):
    token, kube_token = tmp_path / "pat", tmp_path / "kube"
    token.write_text(PAT)
    kube_token.write_text("k")
    config = load_config(
        {
            "BROKER_REPOSITORY": REPOSITORY,
            "BROKER_RUNNER_NAMESPACE": NAMESPACE,
            "BROKER_AUDIENCE": AUDIENCE,
            "GITHUB_TOKEN_FILE": str(token),
            "KUBERNETES_TOKEN_FILE": str(kube_token),
            "KUBERNETES_API_URL": "http://127.0.0.1:1",
        }
    )
    assert config.listen == Address("0.0.0.0", 8080) and config.health_listen == Address("0.0.0.0", 8081)
    assert config.base_runner_deployment == "base-runner" and config.runner_service_account == "github-runner"
    assert config.gpu_runner_template_file is None and config.max_gpu_runners_per_run == 2
    assert (config.sweep_seconds, config.grant_grace_seconds, config.final_sweep_seconds) == (30, 60, 120)
    assert config.request_deadline_seconds == 12 < STARTUP_SH_TIMEOUT_SECONDS
    assert (config.max_connections, config.max_connections_per_client) == (64, 8)
    assert config.github_api_url == "https://api.github.com"
    assert config.github_retry == RetryPolicy(4, 10, 1, 10)
    assert config.credential == PatCredential(token) and config.repository_name == "models"


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config(env)
    return error.value.problems


@pytest.mark.parametrize(
    "changes, named",
    [
        (
            {"BROKER_REPOSITORY": None, "BROKER_RUNNER_NAMESPACE": None, "BROKER_AUDIENCE": None},
            ["BROKER_REPOSITORY", "BROKER_RUNNER_NAMESPACE", "BROKER_AUDIENCE"],
        ),
        (
            {
                "BROKER_REPOSITORY": "just-a-name",
                "BROKER_LISTEN": "8080",
                "BROKER_HEALTH_LISTEN": "localhost:x",
                "BROKER_SWEEP_SECONDS": "0",
                "BROKER_GITHUB_RETRIES": "-1",
                "GITHUB_API_URL": "ftp://example.com",
                "BROKER_REQUEST_DEADLINE_SECONDS": "0",
                "BROKER_MAX_CONNECTIONS": "0",
                "BROKER_RUNNER_SERVICE_ACCOUNT": "Not_An_Account",
                "BROKER_MAX_GPU_RUNNERS_PER_RUN": "101",
                "BROKER_GRANT_GRACE_SECONDS": "soon",
                "BROKER_FINAL_SWEEP_SECONDS": "nan",
            },
            [
                "BROKER_REPOSITORY",
                "BROKER_LISTEN",
                "BROKER_HEALTH_LISTEN",
                "BROKER_SWEEP_SECONDS",
                "BROKER_GITHUB_RETRIES",
                "GITHUB_API_URL",
                "BROKER_REQUEST_DEADLINE_SECONDS",
                "BROKER_MAX_CONNECTIONS",
                "BROKER_RUNNER_SERVICE_ACCOUNT",
                "BROKER_MAX_GPU_RUNNERS_PER_RUN",
                "BROKER_GRANT_GRACE_SECONDS",
                "BROKER_FINAL_SWEEP_SECONDS",
            ],
        ),
        (
            {"BROKER_MAX_CONNECTIONS": "4", "BROKER_MAX_CONNECTIONS_PER_CLIENT": "5"},
            ["BROKER_MAX_CONNECTIONS_PER_CLIENT"],
        ),
        ({"BROKER_LISTEN": "127.0.0.1:9000", "BROKER_HEALTH_LISTEN": "127.0.0.1:9000"}, ["BROKER_HEALTH_LISTEN"]),
        (
            {"GITHUB_API_URL": "http://api.github.com", "KUBERNETES_API_URL": "http://10.0.0.1:6443"},
            ["GITHUB_API_URL", "KUBERNETES_API_URL"],
        ),
        ({"GITHUB_TOKEN_FILE": None}, ["GITHUB_TOKEN_FILE", "GITHUB_APP_ID", "Administration: read and write"]),
        (
            {"GITHUB_TOKEN_FILE": None, "GITHUB_APP_ID": APP_ID},
            ["GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY_FILE"],
        ),
        (
            {"GITHUB_APP_ID": APP_ID, "GITHUB_APP_INSTALLATION_ID": INSTALLATION_ID},
            ["GITHUB_TOKEN_FILE", "GITHUB_APP_ID"],
        ),
        (
            {
                "GITHUB_TOKEN_FILE": "/nonexistent/pat",
                "KUBERNETES_TOKEN_FILE": "/nonexistent/token",
                "BROKER_GPU_RUNNER_TEMPLATE_FILE": "/nonexistent/template.json",
            },
            ["GITHUB_TOKEN_FILE", "KUBERNETES_TOKEN_FILE", "BROKER_GPU_RUNNER_TEMPLATE_FILE"],
        ),
        (
            {"KUBERNETES_API_URL": "https://10.0.0.1", "KUBERNETES_CA_FILE": "/nonexistent/ca.crt"},
            ["KUBERNETES_CA_FILE"],
        ),
        ({"GITHUB_TOKEN_FILE": PAT}, ["GITHUB_TOKEN_FILE"]),  # the PAT pasted where its file belongs: never echoed
    ],
    ids=[
        "required",
        "malformed",
        "per client above all",
        "one port for both",
        "plain http elsewhere",
        "no credential",
        "partial app",
        "pat and app",
        "unreadable files",
        "no ca",
        "pat instead of file",
    ],
)
def test_every_problem_is_named_at_once(setup, changes, named):
    found = problems(setup.env(**changes))
    for variable in named:
        assert any(variable in problem for problem in found), (variable, found)
    assert len(found) >= len([n for n in named if n.startswith("BROKER_")])
    assert PAT not in "\n".join(found)


def test_a_token_file_of_several_lines_is_a_configuration_error(setup):
    setup.pat_file.write_text(f"{PAT}\nsecond line\n")
    (problem,) = problems(setup.env())
    assert "GITHUB_TOKEN_FILE" in problem and "single-line token" in problem and PAT not in problem


def test_an_app_key_that_is_not_a_key_is_a_configuration_error(tmp_path):
    with BrokerSetup(tmp_path, app=True) as app:
        app.key_file.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
        (problem,) = problems(app.env())
    assert "GITHUB_APP_PRIVATE_KEY_FILE" in problem and "not a key" not in problem


@pytest.mark.parametrize(
    "url, accepted",
    [
        ("https://api.github.com", True),
        ("https://github.example.com:8443/api/v3", True),
        ("http://127.0.0.1:8080", True),
        ("http://127.8.0.1", True),
        ("http://[::1]:9", True),
        ("http://localhost:9", True),
        ("http://LOCALHOST", True),
        ("http://api.github.com", False),
        ("http://10.0.0.1", False),
        ("http://localhost.example.com", False),
        ("http://[::ffff:10.0.0.1]", False),
        ("http://127.0.0.1:port", False),
        ("ftp://127.0.0.1", False),
        ("https://api.github.com/?x=1", False),
    ],
)
def test_plain_http_only_to_a_loopback_host(url, accepted):
    env = broker_config._Environment({"GITHUB_API_URL": url})
    env.url("GITHUB_API_URL", "https://api.github.com")
    assert (env.problems == []) is accepted, env.problems


def test_in_cluster_api_url():
    env = broker_config._Environment({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert broker_config._in_cluster_api_url(env) == "https://10.0.0.1:443"
    env = broker_config._Environment({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert broker_config._in_cluster_api_url(env) == "https://[fd00::1]:443"
    assert broker_config._in_cluster_api_url(broker_config._Environment({})) == "https://kubernetes.default.svc"


def test_addresses_take_ipv6_hosts():
    env = broker_config._Environment({"BROKER_LISTEN": "[::]:8080"})
    assert env.address("BROKER_LISTEN", 1) == Address("::", 8080) and str(Address("::", 8080)) == "[::]:8080"


# ------------------------------------------------------------------ the template --


def write(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


@pytest.mark.parametrize(
    "document, problem",
    [
        ("{not json", "is not JSON"),
        ([], "not a batch/v1 Job"),
        ({**gpu_runner_template(), "kind": "Pod"}, "not a batch/v1 Job"),
        ({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"containers": []}}}}, "no container"),
        (
            {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}},
            "no container with an image",
        ),
        ("", "is empty"),
    ],
)
def test_a_template_that_cannot_serve_is_refused(tmp_path, document, problem):
    with pytest.raises(CredentialUnreadable, match=problem):
        load_template(write(tmp_path / "t.json", document))


def test_render_names_labels_and_substitutes_only_checked_digits(tmp_path):
    template = load_template(write(tmp_path / "t.json", gpu_runner_template()))
    assert template.images == (RUNNER_IMAGE,)

    made = render(template, "987654321", "2", 1, "runners")

    assert made["metadata"]["name"] == gpu_runner_job_name("987654321", "2", 1) == "gpu-runner-987654321-2-1"
    assert made["metadata"]["namespace"] == "runners"
    for labels in (made["metadata"]["labels"], made["spec"]["template"]["metadata"]["labels"]):
        assert {k: labels[k] for k in (APP_NAME_LABEL, RUN_ID_LABEL, RUN_ATTEMPT_LABEL, RUN_INDEX_LABEL)} == {
            APP_NAME_LABEL: "gpu-runner",
            RUN_ID_LABEL: "987654321",
            RUN_ATTEMPT_LABEL: "2",
            RUN_INDEX_LABEL: "1",
        }
    assert made["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "GPU_RUN", "value": "987654321-2"}]
    assert "${" not in json.dumps(made)
    assert render(template, "1", "1", 0, "runners")["metadata"]["name"] == "gpu-runner-1-1"
    assert template.document == gpu_runner_template()  # rendering leaves the template as it was
    with pytest.raises(ValueError):
        render(template, "1; rm -rf", "1", 0, "runners")


def test_the_template_is_read_again_when_its_file_changes(tmp_path):
    path = write(tmp_path / "t.json", gpu_runner_template())
    source = TemplateSource(path)
    first = source.load()
    assert source.load() is first  # unchanged: not parsed again
    write(tmp_path / "next.json", gpu_runner_template("runner:next")).replace(path)  # as a ConfigMap update swaps it

    assert source.load().images == ("runner:next",)
    with pytest.raises(NotConfigured):
        TemplateSource(None).load()
    assert isinstance(first, Template)
