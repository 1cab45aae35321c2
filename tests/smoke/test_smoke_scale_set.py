"""The smoke test of a scale-set stack, in-process against a fake cluster with ARC in it:
the mode chosen from the stack's outputs, ARC's controller, scale set and listener, the
runner pods ARC made and their start latency, and what it says when no job ran yet."""

import re

import pytest
from fake_github import Reply
from smoke_doubles import (
    ARC_CONTROLLER,
    GPU_LINE,
    NAMESPACE,
    SCALE_SET,
    SCALE_SET_KIND,
    SCALE_SET_OUTPUTS,
    STACK_OUTPUTS,
    SYSTEM_NAMESPACE,
    Arc,
    arc_runner_pod,
    autoscaling_runner_set,
    deployment,
    listener_pod,
)
from smoke_harness import RELEASE_PATH, RUNNERS_PATH, TOKEN, Run, runner_list, smoke

from program.manifests import scale_set as program_scale_set
from scripts.smoke import scale_set as checks
from scripts.smoke.modes import MODES, mode_of

NEWEST_RUNNING = f"{SCALE_SET}-8xk2q-runner-9bz5m"


def verdicts(run: Run) -> list[str]:
    return [line.split(":")[0] for line in run.stdout.splitlines() if re.match(r"(PASS|FAIL|WARN|SKIP)  ", line)]


@pytest.fixture(scope="module")
def healthy() -> Run:
    return smoke(arc=Arc())


def test_a_healthy_scale_set_stack_passes_every_check_in_order(healthy):
    run = healthy

    assert run.returncode == 0, run.output
    assert verdicts(run) == [
        "PASS  stack outputs",
        "PASS  ARC controller",
        "PASS  scale set",
        "PASS  scale set listener",
        "PASS  scale set in GitHub",
        "PASS  runner version",
        "PASS  CI reads",
        "PASS  CI read-only",
        "PASS  scale set runners",
        "PASS  GPU in a scale set runner",
    ]
    assert run.line("PASS  stack outputs").endswith(f", scale-set mode: scale set {SCALE_SET}")
    assert f"deployment/{ARC_CONTROLLER} is available in namespace {SYSTEM_NAMESPACE}" in run.line(
        "PASS  ARC controller"
    )
    assert "scale set id 7 in GitHub" in run.line("PASS  scale set:")
    assert f"{SCALE_SET}-754b578d-listener is running in namespace {SYSTEM_NAMESPACE}" in run.line(
        "PASS  scale set listener"
    )
    assert "ARC registers one for each job" in run.line("PASS  scale set in GitHub")
    assert run.line("PASS  GPU in a scale set runner").endswith(f"{NEWEST_RUNNING}: {GPU_LINE}")
    assert run.stdout.endswith("\nAll checks passed.\n")
    assert TOKEN not in run.output


def test_start_latency_of_the_recent_runner_pods_comes_from_kubernetes_timestamps(healthy):
    lines = healthy.stdout.splitlines()
    start = lines.index("Scale set runner start, seconds after its pod was created:")
    rows = {line.split()[0]: line.split()[1:] for line in lines[start + 2 : start + 5]}
    # Newest first: created, phase, scheduled, started, node.
    assert list(rows) == [f"{SCALE_SET}-8xk2q-runner-c2wlp", NEWEST_RUNNING, f"{SCALE_SET}-8xk2q-runner-4tq7z"]
    assert rows[f"{SCALE_SET}-8xk2q-runner-c2wlp"][1:] == ["Pending", "-", "-", "-"]
    assert rows[NEWEST_RUNNING][:4] == ["2025-10-09T08:51:20Z", "Running", "90", "115"]


def test_it_asks_only_for_the_scale_sets_objects_and_makes_nothing(healthy):
    calls = healthy.cluster.calls
    assert not healthy.cluster.calls_to("create") and not healthy.cluster.calls_to("delete")
    assert {c.args[0] for c in healthy.cluster.calls_to("get")} == {"deployment", SCALE_SET_KIND, "rolebinding"}
    lists = {(c.args[1], c.args[2]) for c in healthy.cluster.calls_to("list")}
    assert lists == {
        (
            f"actions.github.com/scale-set-name={SCALE_SET},app.kubernetes.io/component=runner-scale-set-listener",
            SYSTEM_NAMESPACE,
        ),
        (f"actions.github.com/scale-set-name={SCALE_SET}", NAMESPACE),
    }
    assert [c.args for c in calls if c.what == "exec"] == [(NAMESPACE, NEWEST_RUNNING, "runner", ("nvidia-smi", "-L"))]
    assert {r.path for r in healthy.github_requests} == {RUNNERS_PATH, RELEASE_PATH}


def test_the_mode_comes_from_the_stack_outputs():
    assert mode_of(SCALE_SET_OUTPUTS) == "scale-set" and mode_of(STACK_OUTPUTS) == "per-run"
    assert mode_of({**STACK_OUTPUTS, "scaleSetName": ""}) == "per-run"
    assert set(MODES) == {"per-run", "scale-set"}

    per_run = smoke()
    assert per_run.returncode == 0, per_run.output
    assert "PASS  broker deployment" in per_run.stdout and "ARC controller" not in per_run.stdout
    assert not any(c.args[0] == SCALE_SET_KIND for c in per_run.cluster.calls_to("get"))


def test_the_names_it_looks_for_are_the_ones_the_program_installs():
    assert checks.CONTROLLER_RELEASE == program_scale_set.CONTROLLER_RELEASE
    assert checks.RUNNER_CONTAINER == program_scale_set.RUNNER_CONTAINER
    assert program_scale_set.LISTENER_POD_LABELS[checks.COMPONENT_LABEL] == checks.LISTENER_COMPONENT


def test_a_missing_controller_fails_after_the_rollout_timeout_with_a_hint():
    run = smoke(arc=Arc(controller=None, listener_after="absent"), SMOKE_ROLLOUT_TIMEOUT_SECONDS="60")

    assert run.returncode == 1
    assert run.line("FAIL  ARC controller") == "FAIL  ARC controller: not available after 60s: not found"
    hint = run.stdout.split("FAIL  ARC controller")[1].splitlines()[1]
    assert f"describe deploy/{ARC_CONTROLLER}" in hint and "pulumi up" in hint
    assert "no listener pod" in run.line("FAIL  scale set listener")
    assert sum(run.clock.sleeps) >= 120  # both waits ran on the fake clock
    assert run.stdout.endswith("2 check(s) failed: ARC controller, scale set listener\n")


def test_a_crash_looping_listener_fails_with_its_reason_and_where_to_look():
    run = smoke(arc=Arc(listener_after=None), SMOKE_ROLLOUT_TIMEOUT_SECONDS="30")

    assert run.returncode == 1
    assert "CrashLoopBackOff" in run.line("FAIL  scale set listener")
    hint = run.stdout.split("FAIL  scale set listener")[1].splitlines()[1]
    assert f"logs deploy/{ARC_CONTROLLER}" in hint and "get autoscalinglisteners" in hint


def test_a_listener_that_comes_up_while_it_waits_passes():
    run = smoke(arc=Arc(listener_after=40))

    assert run.returncode == 0, run.output
    assert run.line("PASS  scale set listener")
    assert 40 <= sum(run.clock.sleeps) < 60


@pytest.mark.parametrize(
    ("scale_set", "said", "hinted"),
    [
        (None, f"AutoscalingRunnerSet {SCALE_SET} not found in namespace {NAMESPACE}", "pulumi up"),
        (autoscaling_runner_set(registered=False), "not registered with GitHub", "runnerToken or the GitHub App"),
        (autoscaling_runner_set(phase="Outdated"), "Outdated", "RUNNER_VERSION"),
    ],
)
def test_a_scale_set_missing_unregistered_or_outdated_fails(scale_set, said, hinted):
    run = smoke(arc=Arc(scale_set=scale_set))

    assert run.returncode == 1
    assert said in run.line("FAIL  scale set:")
    assert hinted in run.stdout.split("FAIL  scale set:")[1].splitlines()[1]


def test_with_no_runner_pod_it_skips_and_says_how_to_start_one():
    run = smoke(arc=Arc(runner_pods=[]))

    assert run.returncode == 0, run.output
    assert "no job runs now" in run.line("SKIP  scale set runners")
    assert "GPU in a scale set runner" not in run.stdout
    assert "    on: workflow_dispatch" in run.stdout and f"        runs-on: {SCALE_SET}" in run.stdout
    assert "gh workflow run gpu-smoke.yml -R o/r" in run.stdout
    assert not run.cluster.calls_to("exec")


def test_runner_pods_that_do_not_run_are_reported_and_the_gpu_check_skipped():
    pending = arc_runner_pod(f"{SCALE_SET}-8xk2q-runner-c2wlp", -20, None, None)
    run = smoke(arc=Arc(runner_pods=[pending]))

    assert run.returncode == 0, run.output
    assert (
        run.line("SKIP  GPU in a scale set runner") == "SKIP  GPU in a scale set runner: no runner pod is running now"
    )


def test_a_runner_without_a_gpu_fails():
    run = smoke(arc=Arc(exec_reply=(False, "nvidia-smi: command not found")))

    assert run.returncode == 1
    assert "command not found" in run.line("FAIL  GPU in a scale set runner")


def test_github_is_asked_once_and_its_scale_set_runners_are_named():
    arc_runner = {
        "id": 40,
        "name": NEWEST_RUNNING,
        "status": "online",
        "busy": True,
        "labels": [{"name": SCALE_SET, "type": "read-only"}],
    }
    run = smoke(arc=Arc(), runners_reply=runner_list([arc_runner]))

    assert f"1 runner(s) of scale set {SCALE_SET} in o/r: {NEWEST_RUNNING} online" in run.line(
        "PASS  scale set in GitHub"
    )
    assert len(run.runner_lists()) == 1


def test_without_a_token_or_an_answer_github_is_not_a_failure():
    no_token = smoke(arc=Arc(), GITHUB_TOKEN=None)
    assert no_token.returncode == 0, no_token.output
    assert no_token.line("SKIP  scale set in GitHub") == "SKIP  scale set in GitHub: GITHUB_TOKEN is not set"
    assert not no_token.runner_lists()

    refused = smoke(arc=Arc(), runners_reply=Reply(403, {"message": "Resource not accessible"}))
    assert refused.returncode == 0, refused.output
    assert "HTTP 403: Resource not accessible" in refused.line("WARN  scale set in GitHub")


def test_the_start_table_is_empty_without_pods_and_shows_dashes_for_what_did_not_happen():
    assert checks.start_latency_table([]) == []
    pod = listener_pod("running")
    pod["metadata"]["creationTimestamp"] = "not a time"
    assert checks.start_latency_table([pod])[3].split()[1:4] == ["-", "Running", "-"]


def test_the_controller_deployment_is_waited_for_until_it_is_available():
    rolling = deployment(ARC_CONTROLLER, available=False)
    run = smoke(arc=Arc(controller=rolling), SMOKE_ROLLOUT_TIMEOUT_SECONDS="20")

    assert "0 of 1 updated replicas are available" in run.line("FAIL  ARC controller")
