"""The runner broker, as a real process with its own ServiceAccount's rights, against the real API server.

What stands in for what: the Kubernetes side is real here (the API server's TokenReview
of tokens the TokenRequest API bound to pods, RBAC as the program writes it, Pod
Security and ResourceQuota admission, the ReplicaSet, Job, garbage collector and
namespace controllers, the scheduler), where tests/broker runs the broker against
tests/fake_kubernetes.py. No kubelet runs: FakeNodes (realkube/cluster.py) keeps the
nodes Ready and finishes pod deletions, and `mark_running` sets a bound pod's phase.
GitHub stays a double: tests/fake_github.py with the runner registry and workflow runs
of tests/github_runners.py.

The scenarios share one broker world (realkube/broker_env.py) and run in this order;
the last one tears it down as `pulumi destroy` does.
"""

import pytest

from broker_harness import RunnerPod
from conftest import run_program
from fake_github import Reply
from realkube.broker_env import (
    BASE_REPLICAS,
    PROGRAM_CONFIG,
    RUNNER_NAMESPACE,
    SYSTEM_NAMESPACE,
    BrokerWorld,
)
from realkube.cluster import GPU_NODES, ApiError, pod_manifest, wait_until
from runner_contract import (
    BASE_RUNNER,
    BROKER_AUDIENCE,
    GRANTED_AT_ANNOTATION,
    JOB_NAME_LABEL,
    RUN_ID_LABEL,
    RUNNER_ACCOUNT,
    RUNNER_ANNOTATION,
    gpu_runner_label,
)

OTHER_NAMESPACE = "rk-broker-elsewhere"


@pytest.fixture(scope="module")
def world(kube, nodes, tmp_path_factory):
    """The program's broker world on the real API server, and a broker process serving it."""
    built = BrokerWorld.build(kube, tmp_path_factory.mktemp("realkube-broker"), run_program(PROGRAM_CONFIG))
    try:
        built.start_broker()
        yield built
    finally:
        built.close()


def controller(obj):
    (reference,) = [r for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")]
    return reference


def granted(world, runner):
    answer = world.broker.jitconfig(runner)
    assert answer.status == 201, answer.raw
    return answer


def runners_given(world, runner):
    """How many JIT runners the GitHub double registered under the pod's name."""
    return sum(1 for config in world.runners.jit_configs if config.endswith(f"-{runner.name}-do-not-log"))


def jobs_of_run(world, run_id):
    return world.kube.get(
        f"/apis/batch/v1/namespaces/{RUNNER_NAMESPACE}/jobs", labelSelector=f"{RUN_ID_LABEL}={run_id}"
    )["items"]


def scheduled_pods_of(world, job_names):
    """The Job controller's pods of these Jobs, once the scheduler has bound every one."""

    def bound():
        pods = [
            p
            for name in job_names
            for p in world.pods(**{JOB_NAME_LABEL: name})
            if not p["metadata"].get("deletionTimestamp")
        ]
        return pods if len(pods) == len(job_names) and all(p["spec"].get("nodeName") for p in pods) else None

    return wait_until(bound, f"the pods of {job_names} to be scheduled", timeout_seconds=60)


def test_a_base_runner_pod_made_by_the_real_replicaset_controller_gets_its_jit_config_and_the_grant_is_on_it(world):
    """Retires, for this path, fake_kubernetes' TokenReview, its pod and ReplicaSet reads and its PATCH: the token
    is the TokenRequest API's, bound to a pod the real ReplicaSet of the program's Deployment made, and the
    grant is read back from the real API server."""
    runner = world.fresh_base_pod()
    replicaset = controller(world.pod(runner))
    assert replicaset["kind"] == "ReplicaSet"
    rs = world.kube.get(f"/apis/apps/v1/namespaces/{RUNNER_NAMESPACE}/replicasets/{replicaset['name']}")
    assert (controller(rs)["kind"], controller(rs)["name"]) == ("Deployment", BASE_RUNNER)

    answer = granted(world, runner)

    assert answer.body["name"] == runner.name
    assert answer.body["labels"] == [BASE_RUNNER]
    assert answer.body["encodedJitConfig"] in world.runners.jit_configs
    assert BASE_RUNNER in world.runners.labels(runner.name)
    annotations = world.annotations(runner)  # as the admin reads it
    assert annotations[RUNNER_ANNOTATION] == runner.name
    assert annotations[GRANTED_AT_ANNOTATION].endswith("Z")


def test_a_second_ask_is_refused_409_also_after_the_broker_process_restarts(world):
    """Retires fake_kubernetes' store as the grants' memory: the grant is an annotation on the real pod, which a
    new broker process reads back."""
    first, second = world.fresh_base_pod(), world.fresh_base_pod()
    granted(world, first)
    granted(world, second)

    again = world.broker.jitconfig(second)
    assert again.status == 409, again.raw
    assert "already had its runner" in again.body["error"]
    assert "deleted it" in again.body["error"]  # a spent base pod goes; its ReplicaSet starts a fresh one

    world.start_broker()  # SIGTERM, final sweep, and a new process that remembers nothing
    after = world.broker.jitconfig(first)

    assert after.status == 409, after.raw
    assert f"already had its runner, {first.name} (recorded on the pod)" in after.body["error"]
    assert runners_given(world, first) == runners_given(world, second) == 1
    wait_until(lambda: world.gone(first) and world.gone(second), "the refused pods to be deleted")


def test_the_token_of_a_deleted_pod_is_refused_by_the_api_servers_own_token_review(world):
    """Retires fake_kubernetes' token table: the real API server invalidates a pod-bound token when its pod goes.
    Until its cache of recent reviews (about 10 s) lets go, the broker itself finds no pod (403); then the review
    says no (401). Never a runner."""
    runner = world.fresh_base_pod()
    granted(world, runner)
    world.kube.delete(f"/api/v1/namespaces/{RUNNER_NAMESPACE}/pods/{runner.name}")
    wait_until(lambda: world.gone(runner), "the pod to be gone")

    answers = []

    def refused_by_review():
        answers.append(world.broker.jitconfig(runner))
        return answers[-1].status == 401

    wait_until(
        refused_by_review, "the API server to refuse the deleted pod's token", timeout_seconds=30, interval_seconds=0.5
    )
    assert {answer.status for answer in answers} <= {401, 403}, [a.raw for a in answers]
    assert all("does not exist" in a.body["error"] for a in answers if a.status == 403), [a.raw for a in answers]
    assert "token has been invalidated" in answers[-1].body["error"], answers[-1].raw
    assert runners_given(world, runner) == 1  # the one it had while it lived


def test_a_pod_of_another_namespace_is_refused_403_however_like_a_runner_it_looks(world):
    """Retires fake_kubernetes' namespaces: a pod of another namespace, made by a real ReplicaSet of a copy of the
    program's base-runner Deployment, running as a `github-runner` ServiceAccount, with a token bound to it for
    the broker's audience, is refused before the broker reads anything of it (its Role could not)."""
    kube = world.kube
    kube.create(
        "/api/v1/namespaces",
        {"metadata": {"name": OTHER_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    try:
        kube.create(f"/api/v1/namespaces/{OTHER_NAMESPACE}/serviceaccounts", {"metadata": {"name": RUNNER_ACCOUNT}})
        (deployment,) = [o for o in world.objects if o["kind"] == "Deployment"]
        copy = {**deployment, "metadata": {**deployment["metadata"], "namespace": OTHER_NAMESPACE}}
        kube.create(f"/apis/apps/v1/namespaces/{OTHER_NAMESPACE}/deployments", copy)
        pod = wait_until(lambda: next(iter(world.pods(OTHER_NAMESPACE)), None), "the copy's pod")
        stranger = world.runner_pod(pod)

        answer = world.broker.jitconfig(stranger)

        assert answer.status == 403, answer.raw
        assert f"is not in the runner namespace {RUNNER_NAMESPACE}" in answer.body["error"]
        assert RUNNER_ANNOTATION not in (world.pod(stranger)["metadata"].get("annotations") or {})
        assert stranger.name not in world.runners.names()
        with pytest.raises(ApiError) as refused:  # nor could the broker have read it: RBAC as the program wrote it
            kube.with_token(world.token_file.read_text().strip()).get(f"/api/v1/namespaces/{OTHER_NAMESPACE}/pods")
        assert refused.value.status == 403
    finally:
        kube.delete(f"/api/v1/namespaces/{OTHER_NAMESPACE}")


def test_a_runner_pods_token_for_another_audience_or_a_token_bound_to_no_pod_is_refused_401(world):
    """Retires fake_kubernetes' audiences and pod claims: the real TokenReview, asked for the broker's audience,
    refuses a token of the API server's own audience, and vouches for no pod for a token bound to none."""
    runner = world.fresh_base_pod()
    pod = world.pod(runner)
    (api_server_audience,) = world.api_server_audiences()
    for_the_api_server = world.pod_token(RUNNER_NAMESPACE, runner.name, runner.uid, audience=api_server_audience)
    unbound = world.kube.create(
        f"/api/v1/namespaces/{RUNNER_NAMESPACE}/serviceaccounts/{RUNNER_ACCOUNT}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [BROKER_AUDIENCE], "expirationSeconds": 600},
        },
    )["status"]["token"]
    world.tokens.append(unbound)

    for token, reason in ((for_the_api_server, "not for this audience"), (unbound, "not bound to a pod")):
        answer = world.broker.jitconfig(RunnerPod(runner.name, runner.uid, token, RUNNER_NAMESPACE))
        assert answer.status == 401, answer.raw
        assert reason in answer.body["error"]
    assert world.pod(runner)["metadata"].get("annotations") == pod["metadata"].get("annotations")
    assert granted(world, runner).body["name"] == runner.name  # the pod's own token still works
    assert world.broker.finished(runner).status == 200


def test_a_pod_replaced_by_another_of_its_name_before_the_grant_is_recorded_gets_nothing(world):
    """Retires fake_kubernetes' UID precondition on PATCH: the real API server refuses to change a pod's UID with
    422 Invalid (the double answered 409 Conflict). The grant's PATCH names the reviewed pod's UID, so a pod
    that has taken the name in between gets no annotation, the caller gets 403 and GitHub's runner is
    withdrawn."""
    runner = world.fresh_base_pod()
    pod_path = f"/api/v1/namespaces/{RUNNER_NAMESPACE}/pods/{runner.name}"

    def replace():  # while the broker asks GitHub: the pod goes, a bare pod of the same name comes
        world.kube.delete(pod_path, grace_period_seconds=0)
        wait_until(lambda: world.gone(runner), "the pod to be gone")
        world.kube.create(
            f"/api/v1/namespaces/{RUNNER_NAMESPACE}/pods", pod_manifest(runner.name, labels={"app": "impostor"})
        )

    world.github.script(world.runners_path("generate-jitconfig"), Reply(502, action=replace))
    try:
        answer = world.broker.jitconfig(runner)

        assert answer.status == 403, answer.raw
        assert "is gone or replaced: no runner handed out" in answer.body["error"]
        impostor = world.kube.get(pod_path)
        assert impostor["metadata"]["uid"] != runner.uid
        assert RUNNER_ANNOTATION not in (impostor["metadata"].get("annotations") or {})
        assert runner.name not in world.runners.names()  # registered on the retry, then withdrawn
    finally:
        world.kube.delete(pod_path, grace_period_seconds=0)


def test_finished_deletes_the_base_pod_and_the_real_replicaset_replaces_it_with_a_new_pod(world):
    """Retires fake_kubernetes' pod deletion with a UID precondition, and the ReplicaSet stand-in: the real
    controller makes the fresh pod."""
    runner = world.fresh_base_pod()
    granted(world, runner)
    replicaset = controller(world.pod(runner))["uid"]
    before = {p["metadata"]["uid"] for p in world.live_base_pods()}

    answer = world.broker.finished(runner)

    assert answer.status == 200, answer.raw
    assert answer.body == {"name": runner.name, "runnerRemoved": True, "podDeleted": True}
    assert runner.name not in world.runners.names()
    wait_until(lambda: world.gone(runner), "the finished pod to be gone")

    def replaced():
        pods = world.live_base_pods()
        new = [p for p in pods if p["metadata"]["uid"] not in before and controller(p)["uid"] == replicaset]
        return new if len(pods) == BASE_REPLICAS else None

    (fresh,) = wait_until(replaced, "the ReplicaSet to replace the pod")
    assert fresh["metadata"]["name"] != runner.name


def test_gpu_runners_are_jobs_the_real_admission_job_controller_and_scheduler_accept_for_a_job_of_that_run_only(world):
    """Retires fake_kubernetes' Job store, its event list and its Job controller stand-in: the Jobs made from the
    program's template pass Pod Security `restricted` and the GPU quota, the real Job controller makes their
    pods, the scheduler binds them to GPU nodes, and one of those pods gets its GPU runner; a Job beyond the
    quota gets no pod, and the broker reports why from the Job controller's own events."""
    run_id, other_run = "5151", "6161"
    caller, other = world.fresh_base_pod(), world.fresh_base_pod()
    granted(world, caller)
    granted(world, other)
    world.runs.add_job(run_id, 1, "start", runner_name=caller.name)
    world.runs.add_job(other_run, 1, "start", runner_name=other.name)
    names = [f"gpu-runner-{run_id}-1", f"gpu-runner-{run_id}-1-1"]

    namespace = world.kube.get(f"/api/v1/namespaces/{RUNNER_NAMESPACE}")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    created = world.broker.gpu_runners(caller, run_id, "1", count=2)

    assert created.status == 201, created.raw
    assert created.body == {"label": gpu_runner_label(run_id), "jobs": names, "created": names}
    assert sorted(j["metadata"]["name"] for j in jobs_of_run(world, run_id)) == names
    pods = scheduled_pods_of(world, names)
    assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(GPU_NODES)  # one GPU each: one runner a node
    again = world.broker.gpu_runners(caller, run_id, "1", count=2)
    assert (again.status, again.body["jobs"], again.body["created"]) == (201, names, [])

    state = world.broker.gpu_runner_state(caller, run_id, "1")
    assert state.status == 200, state.raw
    assert [(r["job"], r["state"]) for r in state.body["runners"]] == [(name, "starting") for name in names]

    # The Job's pod, running, asks for its runner as its container would.
    (pod,) = [p for p in pods if p["metadata"]["labels"][JOB_NAME_LABEL] == names[0]]
    gpu = world.runner_pod(world.mark_running(pod))
    jit = granted(world, gpu)
    assert (jit.body["name"], jit.body["labels"]) == (names[0], [gpu_runner_label(run_id)])
    state = world.broker.gpu_runner_state(caller, run_id, "1")
    assert state.body["runners"][0]["runnerStatus"] == "offline"  # registered; the double never connects it

    for refused in (
        world.broker.gpu_runners(other, run_id, "1"),
        world.broker.gpu_runner_state(other, run_id, "1"),
        world.broker.stop_gpu_runners(other, run_id, "1"),
    ):
        assert refused.status == 403, refused.raw
        assert f"is not running a job of run {run_id}" in refused.body["error"]
    assert len(jobs_of_run(world, run_id)) == 2

    # The other run's own GPU runner: the quota (gpuMaxNodes GPUs) is spent, so the Job gets no pod, and the
    # broker says why from the Job controller's events.
    assert world.broker.gpu_runners(other, other_run, "1").status == 201

    def waiting_for_quota():
        (runner,) = world.broker.gpu_runner_state(other, other_run, "1").body["runners"]
        return runner if runner["reason"] == "QuotaExceeded" else None

    waiting = wait_until(waiting_for_quota, "the broker to report the quota")
    assert (waiting["state"], waiting["pod"]) == ("pending", None)
    assert "exceeded quota: gpu-runners" in waiting["message"]
    assert world.broker.stop_gpu_runners(other, other_run, "1").body == {"deleted": [f"gpu-runner-{other_run}-1"]}

    stopped = world.broker.stop_gpu_runners(caller, run_id, "1")

    assert stopped.status == 200, stopped.raw
    assert stopped.body == {"deleted": names}
    wait_until(lambda: not jobs_of_run(world, run_id), "the Jobs to be gone")
    wait_until(
        lambda: not any(world.pods(**{JOB_NAME_LABEL: name}) for name in names),
        "the garbage collector to delete their pods",
    )
    for runner in (caller, other):
        assert world.broker.finished(runner).status == 200


def test_the_sweep_deletes_pods_whose_runner_left_github_removes_runners_whose_pods_are_gone_and_finished_runs_jobs(
    world,
):
    """Retires fake_kubernetes' pod list by label, Job list by label and Job deletion under the sweep: a broker
    sweeping every second."""
    run_id = "7171"
    world.start_broker(BROKER_SWEEP_SECONDS="1", BROKER_GRANT_GRACE_SECONDS="2")
    try:
        done, lost, caller = world.fresh_base_pod(), world.fresh_base_pod(), world.fresh_base_pod()
        for runner in (done, lost, caller):
            granted(world, runner)
        world.runs.add_job(run_id, 1, "start", runner_name=caller.name)
        assert world.broker.gpu_runners(caller, run_id, "1").status == 201
        assert jobs_of_run(world, run_id)

        world.runners.remove(done.name)  # its one job is done, whatever its pod's processes do
        world.kube.delete(f"/api/v1/namespaces/{RUNNER_NAMESPACE}/pods/{lost.name}")  # gone without a word
        world.runs.set_run_status(run_id, "completed")

        wait_until(lambda: world.gone(done), "the sweep to delete the pod whose runner left GitHub")
        wait_until(lambda: lost.name not in world.runners.names(), "the sweep to remove the runner of a gone pod")
        wait_until(lambda: not jobs_of_run(world, run_id), "the sweep to delete the completed run's Job")
        assert caller.name in world.runners.names() and not world.gone(caller)
        assert "tutorial-runner" in world.runners.names()
        world.broker.wait_for_log("sweep decision=deleted", f"pod={done.name}", "GitHub no longer lists")
        assert world.broker.finished(caller).status == 200
    finally:
        world.start_broker()  # back to a broker that leaves sweeping to its final sweep


def test_teardown_in_the_programs_order_leaves_no_runner_registered_and_no_namespace_stuck(world):
    """Retires fake_kubernetes' namespace deletion: the real namespace controller removes the runner namespace
    (and the broker's Role in it) first, as `pulumi destroy` does; then the broker's final sweep, unable to list
    the namespace, removes every runner of ours; then the broker's own objects and namespace go."""
    run_id = "8181"
    base = world.fresh_base_pod()
    granted(world, base)
    world.runs.add_job(run_id, 1, "start", runner_name=base.name)
    (job,) = world.broker.gpu_runners(base, run_id, "1").body["jobs"]
    (pod,) = scheduled_pods_of(world, [job])
    granted(world, world.runner_pod(world.mark_running(pod)))
    assert {base.name, job} <= world.runner_names()

    world.kube.delete(f"/api/v1/namespaces/{RUNNER_NAMESPACE}")
    world.wait_namespace_gone(RUNNER_NAMESPACE)
    broker = world.broker
    assert {base.name, job} <= world.runner_names()  # nothing told GitHub yet: no kubelet ran their SIGTERM

    assert world.stop_broker() == 0

    assert world.runner_names() == set()
    assert "tutorial-runner" in world.runners.names()
    broker.wait_for_log("sweep decision=namespace-gone")
    for obj in reversed(world.objects):
        if obj["metadata"].get("namespace") == SYSTEM_NAMESPACE or obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            world.delete(obj)
    world.delete({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE}})
    world.wait_namespace_gone(SYSTEM_NAMESPACE)
    world.wait_namespace_gone(OTHER_NAMESPACE)
    world.check_no_leaks()
