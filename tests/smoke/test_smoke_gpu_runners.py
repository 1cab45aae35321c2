"""Real GPU runners as the smoke test makes them, against the fake cluster and GitHub:
the Jobs, their runners coming online and leaving, the GPU inside, the cold-start and
billing tables, and the cleanup whatever happens."""

import re

import pytest
import yaml
from smoke_doubles import GPU_LINE, IMAGE, NAMESPACE, PARTS, TEMPLATE, GpuScenario, stamp
from smoke_harness import JOB, RUN_ID, Run, smoke

from runner_contract import (
    APP_NAME_LABEL,
    GPU_RUNNER_RUN_ID,
    JOB_NAME_LABEL,
    RUN_ATTEMPT_LABEL,
    RUN_ID_LABEL,
    RUN_INDEX_LABEL,
    SMOKE_TEST_LABEL,
)
from scripts.smoke.cluster import KubeError
from scripts.smoke.main import Interrupted


@pytest.fixture(scope="module")
def healthy() -> Run:
    return smoke(KEEP_ME="must-stay-a-placeholder")


def kinds(run: Run) -> list[str]:
    """The cluster calls in a word or two each."""
    return [f"{c.what} {c.args[0]}" if c.what in ("get", "list") else c.what for c in run.cluster.calls]


def test_the_created_job_is_the_template_with_only_the_run_id_and_attempt_filled_in(healthy):
    (create,) = healthy.cluster.calls_to("create")
    name, job = create.args
    expected = yaml.safe_load(TEMPLATE.replace("${GITHUB_RUN_ID}", str(RUN_ID)).replace("${GITHUB_RUN_ATTEMPT}", "1"))
    labels = {
        APP_NAME_LABEL: "gpu-runner",
        RUN_ID_LABEL: str(RUN_ID),
        RUN_ATTEMPT_LABEL: "1",
        RUN_INDEX_LABEL: "0",
        SMOKE_TEST_LABEL: "true",
    }
    expected["metadata"]["labels"].update(labels)
    expected["spec"]["template"]["metadata"]["labels"].update(labels)
    assert job == expected
    assert name == job["metadata"]["name"] == JOB and job["metadata"]["namespace"] == NAMESPACE
    assert job["metadata"]["annotations"]["smoke-test/untouched"] == "$HOME ${KEEP_ME} $(date)"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[GPU_RUNNER_RUN_ID] == str(RUN_ID)  # a string, as the template quotes it


def test_the_template_is_read_from_the_cluster_not_from_the_stack_output(healthy):
    (create,) = healthy.cluster.calls_to("create")
    assert "stale" not in repr(create.args)
    assert ("configmap", "gpu-runner-template", NAMESPACE) in [c.args for c in healthy.cluster.calls_to("get")]
    assert (
        f"created {JOB} in namespace {NAMESPACE} from ConfigMap gpu-runner-template, as the broker makes them, "
        "with your own rights" in healthy.line("PASS  GPU runner jobs")
    )


def test_pods_are_watched_by_their_job_name_label_and_the_gpu_looked_for_in_the_runner_container(healthy):
    pod_lists = [c for c in healthy.cluster.calls_to("list") if c.args[0] == "pods"]
    assert {c.args[1] for c in pod_lists} == {f"{JOB_NAME_LABEL}={JOB}"}
    (exec_call,) = healthy.cluster.calls_to("exec")
    assert exec_call.args == (NAMESPACE, f"{JOB}-x7k2p", "runner", ("nvidia-smi", "-L"))
    order = kinds(healthy)
    assert order.index("create") < order.index("list pods") < order.index("exec") < order.index("delete")


def test_the_runner_leaves_github_only_after_its_job_is_deleted(healthy):
    (delete,) = healthy.cluster.calls_to("delete")
    assert delete.args == ((JOB,), NAMESPACE)
    after = [
        t for t, deleted in zip(healthy.board.listed_at, healthy.board.deleted_then, strict=True) if JOB in deleted
    ]
    assert [t + healthy.clock.start - delete.at for t in after] == [0, 10]  # offline once, then gone 10 s later


def test_cold_start_table_splits_the_start_into_parts_from_kubernetes_timestamps(healthy):
    table = healthy.table("GPU runner cold start, seconds after its Job was created")
    assert table[""] == ["pod-created", "scale-up", "node-ready", "scheduled", "pulled", "started", "online"]
    # Online is the tool's own clock: the first poll (every 10 s) that saw the runner online.
    assert table[JOB] == [
        str(PARTS[p]) for p in ("pod", "scale_up", "node_ready", "scheduled", "pulled", "started")
    ] + ["150"]
    assert "-: did not happen or not seen. online: the first poll (every 10s)" in healthy.stdout
    assert "already present" not in healthy.stdout and "negative" not in healthy.stdout
    assert "billed" not in healthy.stdout  # SMOKE_FOLLOW_NODE is off by default


def test_waiting_says_how_long_and_polls_every_poll_seconds(healthy):
    assert (
        "Waiting up to 900s for 1 GPU runner(s); the GPU pool may have to scale up from zero first." in healthy.stdout
    )
    assert set(healthy.clock.sleeps) == {10}


def test_three_runners_start_at_once_and_get_one_row_each():
    runners = [
        GpuScenario(RUN_ID),
        GpuScenario(
            RUN_ID + 1,
            warm_node=True,
            cached_image=True,
            pods=((0, "running"),),
            github=((0, "offline"), (20, "online")),
        ),
        GpuScenario(RUN_ID + 2, github=((0, "absent"), (300, "online"))),
    ]
    run = smoke(*runners, SMOKE_GPU_RUNNERS="3")

    jobs = [f"gpu-runner-{RUN_ID + i}-1" for i in range(3)]
    assert run.returncode == 0, run.output
    assert [c.args[0] for c in run.cluster.calls_to("create")] == jobs
    order = kinds(run)
    assert max(i for i, k in enumerate(order) if k == "create") < order.index("list pods")  # all made before a poll
    for job in jobs:
        assert run.line(f"PASS  GPU runner online ({job})")
        assert run.line(f"PASS  GPU ({job})")
        assert run.line(f"PASS  GPU runner removed ({job})")
    assert f"created {' '.join(jobs)} in namespace {NAMESPACE}" in run.line("PASS  GPU runner jobs")
    table = run.table("GPU runner cold start")
    assert set(table) == {"", *jobs}
    assert table[jobs[0]] == ["1", "3", "95", "97", "128", "130", "150"]
    # A node that was already up: no scale-up, node ready before the Job; a cached image.
    assert table[jobs[1]] == ["1", "-", "-3000", "97", "128*", "130", "20"]
    assert table[jobs[2]][-1] == "300"
    assert "* the image was already present (image streaming or a cached image)" in run.stdout
    assert "negative: before the Job was created (the node was already up)" in run.stdout
    assert len(run.cluster.calls_to("delete")) == 1  # one call deletes them all
    assert run.deleted_jobs() == jobs


def test_runner_with_an_extra_label_fails():
    run = smoke(GpuScenario(RUN_ID, labels=("self-hosted", "Linux", "X64", f"gpu-runner-{RUN_ID}", "gpu")))

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner online ({JOB})")
    assert f"expected gpu-runner-{RUN_ID} alone (besides self-hosted, Linux, X64)" in failure
    assert "the broker alone chooses a runner's labels" in run.output and "deploy/runner-broker" in run.output
    assert run.line(f"PASS  GPU ({JOB})")  # the pod runs: the GPU is still looked for
    assert run.deleted_jobs() == [JOB]


def test_runner_with_only_the_default_labels_fails():
    run = smoke(GpuScenario(RUN_ID, labels=("self-hosted", "Linux", "X64")))

    assert run.returncode == 1
    assert "registered with labels self-hosted, Linux, X64;" in run.line(f"FAIL  GPU runner online ({JOB})")


def test_runner_never_online_fails_with_the_broker_hint():
    run = smoke(GpuScenario(RUN_ID, github=((0, "absent"),)))

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner online ({JOB})")
    assert "not online after 900s" in failure and f"no runner named {JOB} is registered in o/r" in failure
    assert f"kubectl -n {NAMESPACE}-system logs deploy/runner-broker" in run.output
    assert f"kubectl -n {NAMESPACE} logs {JOB}-x7k2p" in run.output
    assert "its runner never registered" in run.line(f"SKIP  GPU runner removed ({JOB})")
    assert run.table("GPU runner cold start")[JOB][-1] == "-"
    assert run.deleted_jobs() == [JOB]
    assert run.clock.monotonic() == 900  # the wait; a runner never seen is not waited for to leave


def test_runner_registered_but_offline_says_so():
    run = smoke(GpuScenario(RUN_ID, pods=((0, "running"),), github=((0, "offline"),)), SMOKE_GPU_TIMEOUT_SECONDS="60")

    assert run.returncode == 1
    assert "not online after 60s: registered in o/r but offline" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert run.line(f"PASS  GPU runner removed ({JOB})")


def test_gpu_pool_that_never_scales_up_fails_with_a_quota_hint():
    refusal = {
        "reason": "NotTriggerScaleUp",
        "after": 20,
        "involvedObject": {"kind": "Pod"},
        "message": "pod didn't trigger scale-up: 1 max node group size reached",
    }
    run = smoke(GpuScenario(RUN_ID, pods=((0, "pending"),), github=((0, "absent"),), extra_events=[refusal]))

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner online ({JOB})")
    assert "Insufficient nvidia.com/gpu" in failure and "autoscaler: pod didn't trigger scale-up: 1 max node" in failure
    assert "quota" in run.output and "accelerator-types" in run.output
    assert run.cluster.calls_to("exec") == []
    assert "its pod is not running" in run.line(f"SKIP  GPU ({JOB})")
    assert run.deleted_jobs() == [JOB]


def test_job_without_a_pod_points_at_the_namespace_gpu_quota():
    run = smoke(GpuScenario(RUN_ID, pods=((0, "none"),), github=((0, "absent"),)), SMOKE_GPU_TIMEOUT_SECONDS="30")

    assert run.returncode == 1
    assert "not online after 30s: no pod yet" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert f"describe job {JOB}" in run.output and "GPU quota" in run.output
    assert run.table("GPU runner cold start")[JOB] == ["-"] * 7


def test_image_pull_failure_names_the_image_and_the_registry():
    run = smoke(GpuScenario(RUN_ID, pods=((0, "pulling"),), github=((0, "absent"),)), SMOKE_GPU_TIMEOUT_SECONDS="30")

    assert run.returncode == 1
    assert "ImagePullBackOff: 403 Forbidden" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert f"cannot pull {IMAGE} from the stack's Artifact Registry repository" in run.output
    assert "gpuRunnerImage" in run.output
    assert run.deleted_jobs() == [JOB]


def test_pod_that_ends_before_its_runner_is_online_fails_without_waiting():
    run = smoke(GpuScenario(RUN_ID, pods=((0, "failed"),), github=((0, "absent"),)))

    assert run.returncode == 1
    assert "its pod ended (Failed: Error (exit 3))" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert "logs deploy/runner-broker" in run.output
    assert run.clock.monotonic() < 60  # the first poll saw it; no 900 s wait
    assert run.deleted_jobs() == [JOB]


def test_a_job_deleted_by_someone_else_fails_at_once_naming_the_broker_sweep():
    def swept(cluster):
        cluster.vanish_at[JOB] = 30

    run = smoke(change=swept)

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner online ({JOB})")
    assert "its Job was deleted before its runner was online, not by the smoke test" in failure
    assert SMOKE_TEST_LABEL in run.output and "logs deploy/runner-broker" in run.output
    assert run.clock.monotonic() < 60


def test_no_gpu_in_nvidia_smi_output_fails():
    no_gpu = (False, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n")
    run = smoke(GpuScenario(RUN_ID, exec_reply=no_gpu))

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU ({JOB})")
    assert "printed no 'GPU 0:' line" in failure and "couldn't communicate" in failure
    assert "gpuDriverVersion" in run.output and "nvidia-gpu-device-plugin" in run.output
    assert run.line(f"PASS  GPU runner online ({JOB})")
    assert "1 check(s) failed: GPU (gpu-runner-9000-1)" in run.stdout
    assert run.deleted_jobs() == [JOB]


def test_runner_that_stays_in_github_after_its_job_is_deleted_fails():
    run = smoke(GpuScenario(RUN_ID, leaves_after=None), SMOKE_DEREGISTER_TIMEOUT_SECONDS="30")

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner removed ({JOB})")
    assert "still registered in o/r 30s after its Job was deleted" in failure and failure.endswith("(offline)")
    assert "logs deploy/runner-broker" in run.output and "Settings > Actions > Runners" in run.output


def test_refused_create_fails_and_the_jobs_made_are_still_deleted():
    second = f"gpu-runner-{RUN_ID + 1}-1"

    def quota(cluster):
        cluster.create_errors[second] = KubeError(
            'Error from server (Forbidden): jobs "x" is forbidden: exceeded quota', "Forbidden"
        )

    run = smoke(GpuScenario(RUN_ID), GpuScenario(RUN_ID + 1), change=quota, SMOKE_GPU_RUNNERS="2")

    assert run.returncode == 1
    assert f"kubectl create {second} was refused" in run.line("FAIL  GPU runner jobs")
    assert "exceeded quota" in run.output
    assert run.line(f"PASS  GPU runner online ({JOB})")  # the one that was created is still checked
    assert set(run.table("GPU runner cold start")) == {"", JOB}
    # The checks delete the Job they ran; the way out deletes the one whose create failed.
    assert [c.args[0] for c in run.cluster.calls_to("delete")] == [(JOB,), (second,)]


def test_jobs_whose_delete_failed_are_deleted_again_on_the_way_out():
    def refuse_once(cluster):
        cluster.delete_errors.append(KubeError("Unable to connect to the server: i/o timeout"))

    run = smoke(change=refuse_once)

    assert run.returncode == 1
    assert f"kubectl delete job {JOB} failed: Unable to connect" in run.line("FAIL  GPU runner jobs deleted")
    assert f"kubectl -n {NAMESPACE} delete job {JOB}" in run.output
    assert [c.args[0] for c in run.cluster.calls_to("delete")] == [(JOB,), (JOB,)]
    assert JOB in run.cluster.deleted
    assert "its runner never registered" not in run.output and run.stderr == ""


def test_jobs_that_cannot_be_deleted_at_all_are_named_for_deleting_by_hand():
    def refuse(cluster):
        cluster.delete_errors += [KubeError("i/o timeout"), KubeError("i/o timeout")]

    run = smoke(change=refuse)

    assert run.returncode == 1
    assert (
        f"smoke-test: could not delete job(s) {JOB} in namespace {NAMESPACE} (i/o timeout); delete them by hand"
        in run.stderr
    )


@pytest.mark.parametrize(("signal", "code"), [(Interrupted(143), 143), (KeyboardInterrupt(), 130)])
def test_an_interrupted_run_still_deletes_the_jobs(signal, code):
    from smoke_doubles import FakeClock

    clock = FakeClock()
    clock.interrupt_after, clock.interrupt = 3, signal  # while waiting for the GPU runners
    run = smoke(
        GpuScenario(RUN_ID, github=((0, "absent"),)),
        GpuScenario(RUN_ID + 1, github=((0, "absent"),)),
        clock=clock,
        SMOKE_GPU_RUNNERS="2",
    )

    assert run.returncode == code
    assert run.deleted_jobs() == [JOB, f"gpu-runner-{RUN_ID + 1}-1"]
    assert "interrupted" in run.stderr and "All checks passed" not in run.stdout


def test_follow_node_prints_the_billed_minutes_once_the_node_is_gone():
    runner = GpuScenario(RUN_ID, node_gone_after=25, node_age_seconds=630 - 150 - 10)
    run = smoke(runner, SMOKE_FOLLOW_NODE="1")

    assert run.returncode == 0, run.output
    calls = run.cluster.calls
    node_reads = [c for c in calls if c.what == "get" and c.args[:2] == ("node", runner.node)]
    (delete,) = run.cluster.calls_to("delete")
    assert calls.index(node_reads[0]) < calls.index(delete)  # read for the table before the Job goes
    # Then followed, once the runner has left GitHub (10 s), every 10 s until it is gone (25 s).
    assert [c.at - delete.at for c in node_reads[1:]] == [10, 20, 30]
    assert "Following 1 GPU node(s) until the autoscaler removes them (up to 3600s)." in run.stdout
    table = run.table("GPU node billing")
    assert table[""] == ["created", "removed", "billed", "idle", "after", "its", "runner"]
    created, removed, billed, unit, idle = table[runner.node]
    t0 = run.cluster.created[JOB][0]
    assert created == stamp(t0 - (630 - 150 - 10))
    assert removed == stamp(delete.at + 30)
    assert (billed, unit) == ("11", "min")  # created 470 s before the Job, removed 180 s after it: 650 s
    assert idle == "30s"


def test_follow_node_that_stays_warns_after_the_node_timeout():
    runner = GpuScenario(RUN_ID, node_gone_after=None, node_age_seconds=100)
    run = smoke(runner, SMOKE_FOLLOW_NODE="1", SMOKE_NODE_TIMEOUT_SECONDS="600")

    assert run.returncode == 0, run.output
    warning = run.line(f"WARN  GPU node removed ({runner.node})")
    assert "still in the cluster 600s after its runner ended" in warning
    assert "gpuMinNodes or gpuWarmRunners" in run.output
    created, *rest = run.table("GPU node billing")[runner.node]
    assert rest == ["still", "there", ">=15", "min", ">=610s"]  # 100 + 150 + 10 + 600 s: 15 started minutes


def test_follow_node_without_a_node_skips():
    run = smoke(
        GpuScenario(RUN_ID, pods=((0, "pending"),), github=((0, "absent"),)),
        SMOKE_FOLLOW_NODE="1",
        SMOKE_GPU_TIMEOUT_SECONDS="0",
    )

    assert "no GPU runner got a node" in run.line("SKIP  GPU node billing")


def test_missing_template_fails_with_the_pulumi_up_hint_and_starts_no_job():
    def no_template(cluster):
        cluster.configmap = None

    run = smoke(change=no_template)

    assert run.returncode == 1
    assert f"ConfigMap gpu-runner-template not found in namespace {NAMESPACE}" in run.line("FAIL  GPU runner template")
    assert run.cluster.calls_to("create") == [] and run.cluster.calls_to("delete") == []
    assert not re.search(r"GPU runner (online|removed)", run.stdout) and "cold start" not in run.stdout


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"runner-gpu.json": "{}"}, "has no key runner-gpu.yaml"),
        ({"runner-gpu.yaml": "kind: [unclosed"}, "is not YAML"),
        ({"runner-gpu.yaml": "apiVersion: v1\nkind: Pod\n"}, "is not a batch/v1 Job"),
        ({"runner-gpu.yaml": "apiVersion: batch/v1\nkind: Job\nspec: {}\n"}, "has no containers"),
    ],
)
def test_a_template_that_is_no_job_fails_and_starts_no_job(data, said):
    def broken(cluster):
        cluster.configmap = {"data": data}

    run = smoke(change=broken)

    assert said in run.line("FAIL  GPU runner template")
    assert run.cluster.calls_to("create") == []


def test_a_template_you_may_not_read_names_the_rights_needed():
    def forbidden(cluster):
        cluster.configmap = KubeError(
            'configmaps "gpu-runner-template" is forbidden: User "me" cannot get', "Forbidden"
        )

    run = smoke(change=forbidden)

    assert "could not read ConfigMap gpu-runner-template" in run.line("FAIL  GPU runner template")
    assert "create Jobs in github-runners" in run.output
    assert GPU_LINE not in run.output
