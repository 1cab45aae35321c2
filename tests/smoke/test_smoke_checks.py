"""The smoke test in-process, healthy and with the checks that need no GPU failing:
settings, stack outputs, the broker and base runner Deployments, GitHub's runner list,
the runner version."""

import re
from pathlib import Path

import pytest
from fake_github import Reply
from smoke_doubles import GPU_LINE, NAMESPACE, STACK_OUTPUTS, deployment
from smoke_harness import JOB, RELEASE_PATH, RUN_ID, RUNNERS_PATH, TOKEN, Run, runner_list, smoke

from scripts.smoke.context import StackError
from scripts.smoke.settings import NAMES, VARIABLES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def healthy() -> Run:
    """One run with everything healthy, shared by the tests that only read it."""
    return smoke()


def assert_token_kept_secret(run: Run) -> None:
    assert TOKEN not in run.output
    assert TOKEN not in repr(run.cluster.calls)


def test_all_checks_pass_with_a_real_gpu_runner(healthy):
    run = healthy

    assert run.returncode == 0, run.output
    assert "deployment/runner-broker is available in namespace github-runners-system" in run.line(
        "PASS  broker deployment"
    )
    assert run.line("PASS  base runner deployment")
    assert "base-runner-7d9f-abcde" in run.line("PASS  base runner online")
    assert run.line("PASS  runner version")
    assert run.line("PASS  CI reads") and run.line("PASS  CI read-only")
    assert JOB in run.line("PASS  GPU runner jobs")
    online = run.line(f"PASS  GPU runner online ({JOB})")
    assert f"label gpu-runner-{RUN_ID}" in online and f"gke-gpu-runners-gpu-pool-5f1c2a3b-{RUN_ID}" in online
    assert GPU_LINE in run.line(f"PASS  GPU ({JOB})")
    assert "10s after its Job was deleted" in run.line(f"PASS  GPU runner removed ({JOB})")
    assert "FAIL" not in run.output and "WARN" not in run.output and "SKIP" not in run.output
    assert run.stdout.endswith("\nAll checks passed.\n")
    assert run.deleted_jobs() == [JOB]
    assert_token_kept_secret(run)


def test_checks_run_in_order_and_print_one_line_each(healthy):
    checks = [line.split(":")[0] for line in healthy.stdout.splitlines() if re.match(r"(PASS|FAIL|WARN|SKIP)  ", line)]
    assert checks == [
        "PASS  stack outputs",
        "PASS  broker deployment",
        "PASS  base runner deployment",
        "PASS  base runner online",
        "PASS  runner version",
        "PASS  CI reads",
        "PASS  CI read-only",
        "PASS  GPU runner jobs",
        f"PASS  GPU runner online ({JOB})",
        f"PASS  GPU ({JOB})",
        f"PASS  GPU runner removed ({JOB})",
    ]


def test_one_pulumi_call_reads_every_output(healthy):
    assert healthy.pulumi.calls == [("outputs",)]  # GITHUB_REPOSITORY is set: no config read


def test_the_operator_kubeconfig_lives_in_a_private_file_that_is_removed(healthy):
    # smoke() checked its text and modes (0600 in a 0700 folder) when the cluster client was made.
    assert healthy.kubeconfig is not None and not healthy.kubeconfig.exists()
    assert not healthy.kubeconfig.parent.exists()


def test_github_gets_the_token_in_a_header(healthy):
    requests = healthy.github_requests
    assert {r.path for r in requests} == {RUNNERS_PATH, RELEASE_PATH} and len(requests) >= 4
    for request in requests:
        assert request.method == "GET"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["x-github-api-version"] == "2022-11-28"
        assert request.headers["accept"] == "application/vnd.github+json"
    assert {r.query for r in healthy.runner_lists()} == {"per_page=100"}


def test_help_names_every_setting_and_touches_nothing():
    run = smoke(argv=("--help",))

    assert run.returncode == 0
    assert run.stdout.startswith("Usage: python3 scripts/smoke_test.py")
    assert "gh auth token" in run.stdout and "auth can-i" in run.stdout
    words = " ".join(run.stdout.split())
    for variable in VARIABLES:
        assert f"\n  {variable.name} " in run.stdout and f"(default: {variable.default})" in words, variable.name
    assert len(VARIABLES) == 15
    assert run.cluster.calls == [] and run.pulumi.calls == [] and run.github_requests == []


def test_the_smoke_test_reads_no_variable_its_help_does_not_name():
    read: set[str] = set()
    assert smoke(read=read).returncode == 0
    assert read == NAMES  # every one it names, and no other


def test_unknown_arguments_print_the_usage_and_exit_2():
    run = smoke(argv=("--fast",))

    assert run.returncode == 2 and run.stderr.startswith("Usage:")
    assert run.cluster.calls == [] and run.pulumi.calls == []


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("SMOKE_GPU_RUNNERS", "0"),
        ("SMOKE_GPU_RUNNERS", "100"),
        ("SMOKE_FOLLOW_NODE", "yes"),
        ("SMOKE_RUN_ID", "12a"),
        ("SMOKE_RUN_ID", "0"),
        ("SMOKE_DEREGISTER_TIMEOUT_SECONDS", "-1"),
        ("SMOKE_NODE_TIMEOUT_SECONDS", "1h"),
        ("SMOKE_POLL_SECONDS", "fast"),
    ],
)
def test_bad_settings_are_refused_before_anything_runs(setting, value):
    run = smoke(**{setting: value})

    assert run.returncode == 2
    assert run.stderr.startswith(f"smoke-test: {setting} must be") and f"'{value}'" in run.stderr
    assert run.cluster.calls == [] and run.pulumi.calls == [] and run.github_requests == []


def test_without_stack_outputs_nothing_else_runs():
    run = smoke(outputs=StackError("error: no stack selected"))

    assert run.returncode == 1
    assert "no stack selected" in run.line("FAIL  stack outputs")
    assert "pulumi stack select" in run.output
    assert run.cluster.calls == [] and run.github_requests == [] and run.kubeconfig is None


def test_missing_outputs_are_named():
    run = smoke(outputs={"namespace": NAMESPACE, "clusterName": "gpu-runners"})

    assert run.returncode == 1
    assert "missing: clusterRunnerImage kubeconfig" in run.line("FAIL  stack outputs")
    assert run.cluster.calls == [] and run.github_requests == []


def test_base_runner_deployment_not_available_fails_and_the_other_checks_still_run():
    def stuck(cluster):
        cluster.deployments[(NAMESPACE, "base-runner")] = deployment("base-runner", available=False)

    run = smoke(change=stuck, SMOKE_ROLLOUT_TIMEOUT_SECONDS="60")

    assert run.returncode == 1
    failure = run.line("FAIL  base runner deployment")
    assert "not available after 60s: 0 of 1 updated replicas are available" in failure
    assert "logs deploy/base-runner" in run.output
    assert len([c for c in run.cluster.calls_to("get") if c.args[:2] == ("deployment", "base-runner")]) == 7
    assert run.line("PASS  broker deployment") and run.line("PASS  base runner online")
    assert run.line(f"PASS  GPU ({JOB})")
    assert "1 check(s) failed: base runner deployment" in run.stdout


def test_broker_deployment_missing_fails_with_its_log_hint():
    def no_broker(cluster):
        del cluster.deployments[("github-runners-system", "runner-broker")]

    run = smoke(change=no_broker, SMOKE_ROLLOUT_TIMEOUT_SECONDS="0")

    assert run.returncode == 1
    assert "not available after 0s: not found" in run.line("FAIL  broker deployment")
    assert "kubectl -n github-runners-system logs deploy/runner-broker" in run.output
    assert run.line("PASS  base runner deployment")


def test_base_runner_offline_fails_with_the_runner_hint():
    offline = runner_list([{"name": "base-runner-x", "status": "offline", "labels": [{"name": "base-runner"}]}])
    run = smoke(runners_reply=offline)

    assert run.returncode == 1
    assert "base-runner-x offline" in run.line("FAIL  base runner online")
    assert "logs deploy/base-runner" in run.output and "PAT" in run.output
    assert "kubectl -n github-runners-system logs deploy/runner-broker" in run.output
    assert "1 check(s) failed: base runner online" in run.stdout
    # Waited SMOKE_RUNNER_TIMEOUT_SECONDS (120) for it, polling every SMOKE_POLL_SECONDS (10).
    assert run.board.listed_at[:14] == [*range(0, 130, 10), 120]  # then at once the GPU runner's first poll
    assert run.line(f"PASS  GPU runner online ({JOB})")
    assert run.deleted_jobs() == [JOB]
    assert_token_kept_secret(run)


def test_a_base_runner_that_comes_online_while_waiting_passes():
    def board(seconds: float) -> Reply:
        status = "online" if seconds >= 30 else "offline"
        return runner_list([{"name": "base-runner-x", "status": status, "labels": [{"name": "base-runner"}]}])

    run = smoke(runners_reply=board, SMOKE_POLL_SECONDS="15")

    assert run.returncode == 0, run.output
    assert "o/r: base-runner-x" in run.line("PASS  base runner online")
    assert run.board.listed_at[:3] == [0, 15, 30]


def test_a_foreign_runner_with_our_label_is_not_taken_for_our_base_runner():
    runners = runner_list(
        [
            {"id": 1, "name": "base-runner-x", "status": "offline", "labels": [{"name": "base-runner"}]},
            {"id": 41, "name": "tutorial-runner", "status": "online", "labels": [{"name": "base-runner"}]},
        ]
    )
    run = smoke(runners_reply=runners, SMOKE_RUNNER_TIMEOUT_SECONDS="0")

    assert run.returncode == 1
    assert "base-runner-x offline" in run.line("FAIL  base runner online")
    assert run.line("WARN  foreign runner (tutorial-runner)")


# Runners of the repository that this stack did not register, next to its own.
TUTORIAL_RUNNER = {
    "id": 41,
    "name": "tutorial-runner",
    "status": "online",
    "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64", "base-runner")],
}
DEFAULT_LABELS_RUNNER = {
    "id": 42,
    "name": "old-laptop",
    "status": "offline",
    "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64")],
}
WRONG_RUN_RUNNER = {
    "id": 43,
    "name": "gpu-runner-5-1",
    "status": "offline",
    "labels": [{"name": n} for n in ("self-hosted", "gpu-runner-6")],
}
OTHER_TEAMS_RUNNER = {
    "id": 44,
    "name": "build-box",
    "status": "online",
    "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64", "big-cpu")],
}
OWN_GPU_RUNNER = {
    "id": 3,
    "name": "gpu-runner-77-2",
    "status": "online",
    "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64", "gpu-runner-77")],
}


def test_runners_this_stack_did_not_register_but_that_could_take_its_jobs_are_warned_about():
    from smoke_harness import OWN_RUNNERS

    runners = [
        *OWN_RUNNERS,
        OWN_GPU_RUNNER,
        TUTORIAL_RUNNER,
        DEFAULT_LABELS_RUNNER,
        WRONG_RUN_RUNNER,
        OTHER_TEAMS_RUNNER,
    ]
    run = smoke(runners_reply=runner_list(runners))

    assert run.returncode == 0, run.output
    assert "All checks passed." in run.stdout
    warned = re.findall(r"^WARN  foreign runner \((.*?)\):", run.stdout, re.MULTILINE)
    assert warned == ["tutorial-runner", "old-laptop", "gpu-runner-5-1"]  # not our own, not build-box
    assert run.line("WARN  foreign runner (tutorial-runner)") == (
        "WARN  foreign runner (tutorial-runner): labels self-hosted, Linux, X64, base-runner (id 41, online); "
        "this stack did not register it, yet it carries base-runner"
    )
    assert run.line("WARN  foreign runner (old-laptop)").endswith(
        "and it has only default labels: it takes any job that asks for self-hosted"
    )
    assert run.line("WARN  foreign runner (gpu-runner-5-1)").endswith("yet it carries gpu-runner-6")
    hints = [line.strip() for line in run.stdout.splitlines() if "the tutorial's, say" in line]
    assert hints[0] == (
        "hint: such a runner (the tutorial's, say) can take this stack's jobs: remove it in o/r's "
        "Settings > Actions > Runners, or gh api -X DELETE repos/o/r/actions/runners/41"
    )
    assert hints[1].endswith("repos/o/r/actions/runners/42") and hints[2].endswith("repos/o/r/actions/runners/43")
    assert len(hints) == 3


def test_refused_token_fails_once_and_the_gpu_runner_is_checked_in_the_cluster():
    run = smoke(runners_reply=Reply(401, {"message": "Bad credentials"}))

    assert run.returncode == 1
    assert "401" in run.line("FAIL  base runner online")
    assert "gh auth token" in run.output
    assert "GitHub refused the token" in run.line(f"SKIP  GPU runner online ({JOB})")
    assert run.line(f"PASS  GPU ({JOB})")
    assert "GitHub refused the token" in run.line(f"SKIP  GPU runner removed ({JOB})")
    assert "1 check(s) failed: base runner online" in run.stdout
    assert len(run.runner_lists()) == 1
    assert_token_kept_secret(run)


def test_runner_list_refused_for_the_repository_names_the_permission():
    run = smoke(runners_reply=Reply(404, {"message": "Not Found"}))

    assert "GitHub answered 404 for o/r's runners: Not Found" in run.line("FAIL  base runner online")
    assert "Administration read" in run.output
    assert "GitHub answered 404" in run.line(f"SKIP  GPU runner online ({JOB})")


def test_missing_token_checks_the_gpu_runner_in_the_cluster_only():
    run = smoke(GITHUB_TOKEN=None)

    assert run.returncode == 1
    assert "GITHUB_TOKEN is not set" in run.line("FAIL  base runner online")
    assert "GITHUB_TOKEN is not set" in run.line(f"SKIP  GPU runner online ({JOB})")
    assert run.line(f"PASS  GPU ({JOB})")
    assert run.line(f"SKIP  GPU runner removed ({JOB})")
    assert [request.path for request in run.github_requests] == [RELEASE_PATH]
    assert "authorization" not in run.github_requests[0].headers
    assert run.deleted_jobs() == [JOB]


def test_repository_comes_from_pulumi_config_when_not_in_env():
    run = smoke(GITHUB_REPOSITORY=None)

    assert run.returncode == 0, run.output
    assert ("config", "githubRepository") in run.pulumi.calls
    assert {request.path for request in run.github_requests} == {RUNNERS_PATH, RELEASE_PATH}


def test_github_that_does_not_answer_is_named():
    run = smoke(GITHUB_API_URL="http://127.0.0.1:9", SMOKE_RUNNER_TIMEOUT_SECONDS="0", SMOKE_GPU_TIMEOUT_SECONDS="0")

    failure = run.line("FAIL  base runner online")
    assert "no answer from http://127.0.0.1:9 (HTTP none: " in failure and "refused" in failure
    assert "GITHUB_API_URL" in run.output
    assert "no answer from GitHub's runner list (HTTP none" in run.line(f"FAIL  GPU runner online ({JOB})")


def test_older_runner_version_warns_without_failing():
    run = smoke(release=Reply(200, {"tag_name": "v2.337.0"}))

    assert run.returncode == 0, run.output
    warning = run.line("WARN  runner version")
    assert "the image has runner 2.336.0, GitHub's latest is 2.337.0" in warning
    assert "cold start then downloads and installs the update" in warning
    assert "ARG RUNNER_VERSION and ARG RUNNER_SHA256" in run.output
    assert "All checks passed." in run.stdout


def test_current_runner_version_of_the_real_dockerfile_passes():
    (ours,) = re.findall(r"^ARG RUNNER_VERSION=(\S+)$", (ROOT / "runner_image" / "Dockerfile").read_text(), re.M)
    run = smoke(release=Reply(200, {"tag_name": f"v{ours}"}), project=ROOT)

    assert run.returncode == 0, run.output
    assert f"the image has runner {ours}, GitHub's latest release is {ours}" in run.line("PASS  runner version")
    assert "WARN" not in run.output


def test_failed_release_lookup_warns_without_failing():
    run = smoke(release=Reply(503, {"message": "unavailable"}))

    assert run.returncode == 0, run.output
    assert "could not read GitHub's latest runner release (HTTP 503" in run.line("WARN  runner version")
    assert "releases/latest" in run.output


def test_missing_dockerfile_warns_without_failing(tmp_path):
    run = smoke(project=tmp_path)

    assert run.returncode == 0, run.output
    assert f"no ARG RUNNER_VERSION=x.y.z in {tmp_path}/runner_image/Dockerfile" in run.line("WARN  runner version")
    assert "from the project folder" in run.output
    assert RELEASE_PATH not in [request.path for request in run.github_requests]


def test_stack_outputs_line_names_the_namespace_and_image(healthy):
    assert healthy.line("PASS  stack outputs") == (
        f"PASS  stack outputs: namespace {NAMESPACE}, image {STACK_OUTPUTS['clusterRunnerImage']}"
    )
