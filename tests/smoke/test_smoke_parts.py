"""The smoke test's parts on their own: the pure functions, table by table, and the
kubectl, pulumi and GitHub edges with their commands faked."""

import json
import subprocess
from pathlib import Path

import pytest
from fake_github import FakeGitHub, Reply
from smoke_doubles import TEMPLATE, deployment

from scripts.smoke.cluster import KubeError, Kubectl
from scripts.smoke.cold_start import NodeLife, billing_table, cold_start_row, epoch
from scripts.smoke.context import Pulumi, StackError
from scripts.smoke.github import GitHub, foreign_runners, gpu_runner_view, online_base_runners
from scripts.smoke.states import rollout_state, waiting_reason
from scripts.smoke.template import TemplateError, parse_template, render_job

# --- pure ---------------------------------------------------------------------------


def test_timestamps_with_and_without_a_fraction_are_whole_epoch_seconds():
    assert epoch("2025-10-09T08:53:20Z") == 1760000000
    assert epoch("2025-10-09T08:53:20.999999Z") == 1760000000
    assert epoch("2025-10-09T08:53:20+00:00") == 1760000000
    assert epoch("") is None and epoch(None) is None and epoch("yesterday") is None


def test_a_row_for_a_runner_that_has_nothing_yet_is_all_not_seen():
    row = cold_start_row("gpu-runner-1-1", None, None, [], None, None)
    assert row.values == ("-",) * 7 and not row.cached


@pytest.mark.parametrize(
    ("change", "available", "said"),
    [
        ({}, True, "1 of 1 replicas available"),
        (
            {"status": {"observedGeneration": 1, "updatedReplicas": 1, "availableReplicas": 1, "replicas": 1}},
            False,
            "its latest change is not yet observed",
        ),
        (
            {
                "status": {
                    "observedGeneration": 2,
                    "updatedReplicas": 0,
                    "replicas": 1,
                    "conditions": [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"}],
                }
            },
            False,
            "0 of 1 replicas are updated; exceeded quota",
        ),
        (
            {"status": {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1, "replicas": 2}},
            False,
            "1 old replicas are still terminating",
        ),
        (
            {
                "status": {
                    "observedGeneration": 2,
                    "conditions": [
                        {
                            "type": "Progressing",
                            "status": "False",
                            "reason": "ProgressDeadlineExceeded",
                            "message": "too slow",
                        }
                    ],
                }
            },
            False,
            "its rollout exceeded its progress deadline: too slow",
        ),
    ],
)
def test_a_deployment_is_available_as_kubectl_rollout_status_decides(change, available, said):
    assert rollout_state({**deployment("base-runner"), **change}) == (available, said)


def test_a_missing_deployment_is_not_available():
    assert rollout_state(None) == (False, "not found")


def test_a_pod_that_waits_says_why_first_from_its_containers():
    pod = {
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"state": {"waiting": {"reason": "ErrImagePull", "message": "denied"}}}],
            "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes"}],
        }
    }
    assert waiting_reason(pod) == "ErrImagePull: denied"
    assert waiting_reason({"status": {}}) == "pod Pending"
    assert waiting_reason(None) == "no pod yet"


def test_rendering_fills_in_digits_names_and_labels_the_job_and_leaves_the_template_alone():
    template = parse_template(TEMPLATE)
    before = json.dumps(template, sort_keys=True)
    job = render_job(template, 123, 2, "ns")
    assert job["metadata"]["name"] == "gpu-runner-123-2" and job["metadata"]["namespace"] == "ns"
    assert "${GITHUB_RUN" not in json.dumps(job) and "${KEEP_ME}" in json.dumps(job)
    assert json.dumps(template, sort_keys=True) == before
    with pytest.raises(ValueError):
        render_job(template, "12; rm -rf /", 1, "ns")


def test_both_placeholders_are_filled_in_wherever_the_template_has_them():
    template = parse_template(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  annotations:\n"
        "    run: '${GITHUB_RUN_ID}/${GITHUB_RUN_ATTEMPT} $GITHUB_RUN_ID'\n"
        "spec:\n  template:\n    spec:\n      containers: [{name: c, image: i}]\n"
    )
    job = render_job(template, 123, 2, "ns")
    assert job["metadata"]["annotations"]["run"] == "123/2 $GITHUB_RUN_ID"
    assert job["metadata"]["labels"]["gke-gpu-runners/run-attempt"] == "2"


def test_a_template_that_is_not_yaml_says_so():
    with pytest.raises(TemplateError, match="is not YAML"):
        parse_template("a: [")


def test_own_base_runners_are_named_base_runner_and_carry_its_label():
    runners = [
        {"name": "base-runner-a", "status": "online", "labels": [{"name": "base-runner"}]},
        {"name": "base-runner-b", "status": "offline", "labels": [{"name": "base-runner"}]},
        {"name": "base-runner-c", "status": "online", "labels": [{"name": "other"}]},
        {"name": "tutorial", "status": "online", "labels": [{"name": "base-runner"}]},
    ]
    assert online_base_runners(runners) == ["base-runner-a"]


def test_labels_compare_without_case_for_foreign_runners_and_only_our_label_counts_for_gpu_runners():
    shouting = {"name": "x", "labels": [{"name": "Self-Hosted"}, {"name": "LINUX"}]}
    ours_upper = {"name": "gpu-runner-7-1", "labels": [{"name": "GPU-RUNNER-7"}]}
    assert [why for _, why in foreign_runners([shouting, ours_upper])] == [
        "and it has only default labels: it takes any job that asks for self-hosted"
    ]
    runners = [
        {"name": "gpu-runner-7-1", "status": "online", "labels": [{"name": "self-hosted"}, {"name": "gpu-runner-7"}]}
    ]
    assert gpu_runner_view(runners, "gpu-runner-7-1", "gpu-runner-7") == ("online", "")
    assert gpu_runner_view(runners, "gpu-runner-8-1", "gpu-runner-8") == (None, "")


def test_billing_counts_started_minutes_and_says_when_nothing_is_known():
    lines = billing_table([NodeLife("n1", 0, 61), NodeLife("n2", None, None)], runners_ended=30, now=100)
    assert lines[3].split() == ["n1", "1970-01-01T00:00:00Z", "1970-01-01T00:01:01Z", "2", "min", "31s"]
    assert lines[4].split() == ["n2", "-", "-", "-", "-"]


# --- kubectl ------------------------------------------------------------------------


class FakeRun:
    """subprocess.run for a kubectl that answers from a list, recording what it was given."""

    def __init__(self, *answers: tuple[int, str, str]) -> None:
        self.answers = list(answers)
        self.calls: list[dict] = []

    def __call__(self, argv, **kwargs):
        self.calls.append({"argv": argv, **kwargs})
        code, out, err = self.answers.pop(0)
        return subprocess.CompletedProcess(argv, code, out, err)


KUBECONFIG = Path("/private/kubeconfig")


def kubectl(*answers: tuple[int, str, str]) -> tuple[Kubectl, FakeRun]:
    run = FakeRun(*answers)
    return Kubectl("kubectl", KUBECONFIG, run=run), run


def test_kubectl_reads_one_object_as_json_with_the_operator_kubeconfig():
    cluster, run = kubectl((0, '{"kind": "Deployment"}', ""))
    assert cluster.get("deployment", "base-runner", "ns") == {"kind": "Deployment"}
    (call,) = run.calls
    assert call["argv"] == ["kubectl", "-n", "ns", "get", "deployment", "base-runner", "-o", "json"]
    assert call["env"]["KUBECONFIG"] == str(KUBECONFIG) and call["timeout"] and call["check"] is False


def test_kubectl_not_found_is_none_and_other_errors_say_why():
    cluster, _ = kubectl(
        (1, "", 'Error from server (NotFound): nodes "n" not found\n'),
        (1, "", 'Error from server (Forbidden): nodes "n" is forbidden\n'),
        (0, "not json", ""),
    )
    assert cluster.get("node", "n") is None
    with pytest.raises(KubeError) as refused:
        cluster.get("node", "n")
    assert refused.value.reason == "Forbidden" and "is forbidden" in refused.value.message
    with pytest.raises(KubeError, match="answered no JSON"):
        cluster.get("node", "n")


def test_kubectl_lists_by_selector_creates_from_stdin_and_deletes_in_the_background():
    cluster, run = kubectl((0, '{"items": [{"a": 1}, "junk"]}', ""), (0, '{"metadata": {}}', ""), (0, "", ""))
    assert cluster.list("pods", "ns", labels="batch.kubernetes.io/job-name=j") == [{"a": 1}]
    cluster.create({"metadata": {"name": "j", "namespace": "ns"}})
    cluster.delete_jobs(["a", "b"], "ns")
    assert [c["argv"][1:] for c in run.calls] == [
        ["-n", "ns", "get", "pods", "-l", "batch.kubernetes.io/job-name=j", "-o", "json"],
        ["-n", "ns", "create", "-f", "-", "-o", "json"],
        ["-n", "ns", "delete", "job", "a", "b", "--ignore-not-found", "--wait=false"],
    ]
    assert json.loads(run.calls[1]["input"]) == {"metadata": {"name": "j", "namespace": "ns"}}


def test_kubectl_events_by_field_selector_and_exec_in_a_container():
    cluster, run = kubectl((0, '{"items": []}', ""), (1, "partial", " and an error"))
    assert cluster.list("events", "ns", fields="involvedObject.name=p") == []
    assert cluster.exec("ns", "p", "runner", ["nvidia-smi", "-L"]) == (False, "partial and an error")
    assert [c["argv"][1:] for c in run.calls] == [
        ["-n", "ns", "get", "events", "--field-selector", "involvedObject.name=p", "-o", "json"],
        ["-n", "ns", "exec", "p", "-c", "runner", "--", "nvidia-smi", "-L"],
    ]


def test_kubectl_can_i_asks_as_the_identity_and_tells_no_from_could_not_ask():
    cluster, run = kubectl(
        (0, "yes\n", ""),
        (1, "no\n", ""),
        (1, "no - RBAC: denied\n", ""),
        (
            1,
            "",
            'Error from server (Forbidden): users "ci" is forbidden: User "me" cannot '
            'impersonate resource "users" in API group ""\n',
        ),
    )
    assert cluster.can_i("list", "pods", "ns", "ci@x.iam.gserviceaccount.com") is True
    assert cluster.can_i("create", "jobs.batch", "ns", "ci") is False
    assert cluster.can_i("get", "secrets", "ns", "ci") is False
    with pytest.raises(KubeError) as refused:
        cluster.can_i("get", "pods/log", "ns", "ci")
    assert refused.value.reason == "Impersonation"
    assert run.calls[0]["argv"][1:] == [
        "-n",
        "ns",
        "auth",
        "can-i",
        "list",
        "pods",
        "--as=ci@x.iam.gserviceaccount.com",
    ]
    # `pods/log` would be the pod named "log": a subresource is asked about with its own flag.
    assert run.calls[3]["argv"][1:] == ["-n", "ns", "auth", "can-i", "get", "pods", "--subresource=log", "--as=ci"]


def test_a_kubectl_that_cannot_start_is_a_kube_error():
    def missing(argv, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", argv[0])

    with pytest.raises(KubeError, match="No such file"):
        Kubectl("kubectl", KUBECONFIG, run=missing).get("node", "n")


# --- pulumi and GitHub ----------------------------------------------------------------


def test_pulumi_reads_every_output_at_once_of_the_chosen_stack_in_the_project_folder(tmp_path):
    run = FakeRun((0, '{"namespace": "ns"}', ""), (0, "o/r\n", ""), (255, "", "error: no stack named 'x'\n"))
    pulumi = Pulumi("pulumi", "dev", tmp_path, run=run)
    assert pulumi.outputs() == {"namespace": "ns"}
    assert pulumi.config("githubRepository") == "o/r"
    with pytest.raises(StackError, match="no stack named 'x'"):
        pulumi.outputs()
    assert [c["argv"] for c in run.calls[:2]] == [
        ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", "dev"],
        ["pulumi", "config", "get", "githubRepository", "--stack", "dev"],
    ]
    assert {str(c["cwd"]) for c in run.calls} == {str(tmp_path)}


def test_github_answers_with_status_and_body_and_keeps_the_token_to_its_header():
    with FakeGitHub() as github:
        github.script("/x", Reply(403, {"message": "Must have admin rights"}), Reply(200, "not json"))
        client = GitHub(github.url + "/", "secret-token")
        refused, odd = client.get("/x"), client.get("/x")
    assert (refused.status, refused.message) == (403, "Must have admin rights")
    assert (odd.status, odd.body) == (200, None)
    assert "secret-token" not in repr(client)


def test_the_tool_needs_nothing_but_python_pyyaml_and_the_shared_names():
    """A user runs it with python3 and PyYAML: no Pulumi SDK, nothing of the program."""
    import ast
    import sys

    tool = Path(__file__).resolve().parents[2] / "scripts"
    imported = set()
    for module in [tool / "smoke_test.py", *(tool / "smoke").glob("*.py")]:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"yaml", "runner_contract", "scripts"}
