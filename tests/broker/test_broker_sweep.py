"""The sweep: runners whose pods are gone, pods whose one job is done, Jobs of completed runs; and the final
sweep on the way out. The broker in this process; rounds are run by the test, time is the test's."""

from __future__ import annotations

import time

import pytest
from broker_harness import NAMESPACE, REPOSITORY, wait_until
from fake_github import Reply, run_path
from github_runners import runners_api
from runner_broker import github as broker_github
from runner_broker.sweep import Sweeper

from runner_contract import GRANTED_AT_ANNOTATION

pytest_plugins = ["broker_fixtures"]  # setup, broker, make_setup

RUNNERS = runners_api(REPOSITORY)
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


class Clock:
    """Wall and monotonic time that move only when told; sleeping moves them."""

    def __init__(self) -> None:
        self.now = time.time()
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def sweeper(broker, clock: Clock, **settings) -> Sweeper:
    config = broker.config
    if settings:
        from dataclasses import replace

        config = replace(config, **settings)
    service = broker.service
    return Sweeper(
        config, service.kubernetes, service.github, clock=clock.time, monotonic=clock.monotonic, sleep=clock.sleep
    )


# ------------------------------------------------------------ runners, pods gone --


def test_the_sweep_removes_our_runners_whose_pods_are_gone_and_nothing_else(broker, setup):
    staying, leaving = setup.cluster.base_runner_pod(), setup.cluster.base_runner_pod()
    gpu = setup.cluster.gpu_runner_pod(run_id="555")
    for runner_pod in (staying, leaving, gpu):
        assert broker.jitconfig(runner_pod).status == 201
    setup.runners.add("tutorial-runner", ["base-runner"])
    setup.runners.add("gpu-runner-1-1", ["gpu-runner-2"])  # our shape, another run's label: not ours
    setup.runners.add("base-runner-5d8f7c9b4-orphan", ["base-runner"])
    setup.cluster.delete(leaving)
    setup.cluster.stored(gpu)["status"]["phase"] = "Succeeded"

    broker.service.sweeper.sweep()

    assert setup.runners.names() == {staying.name, "tutorial-runner", "gpu-runner-1-1"}
    for removed in (leaving.name, "gpu-runner-555-1", "base-runner-5d8f7c9b4-orphan"):
        broker.wait_for_log("sweep", "decision=removed", f"runner={removed}")


def test_the_sweep_reads_every_page_of_runners(broker, setup):
    orphans = {f"base-runner-5d8f7c9b4-orphan{number:03d}" for number in range(230)}
    for name in sorted(orphans):
        setup.runners.add(name, ["base-runner"])
    setup.runners.add("tutorial-runner", ["base-runner"])

    broker.service.sweeper.sweep()

    assert setup.runners.names() == {"tutorial-runner"}
    queries = {r.query for r in setup.github.requests_to(RUNNERS)}
    assert {"per_page=100&page=1", "per_page=100&page=2", "per_page=100&page=3"} <= queries


def test_the_sweep_reads_github_before_the_pods(broker, setup):
    """A runner registered between the two reads then belongs to a pod the second read sees."""
    broker.service.sweeper.sweep()

    (runner_list,) = setup.github.requests_to(RUNNERS)
    (pod_list,) = setup.kube.requests_to("GET", PODS)
    assert runner_list.wall <= pod_list.wall
    assert "labelSelector=app.kubernetes.io%2Fpart-of%3Dgke-gpu-runners" in pod_list.query


def test_a_refused_pod_list_while_serving_removes_nothing_and_says_why(broker, setup):
    """While the broker runs, a refused pod list means its Role is missing, not that every pod is gone."""
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.cluster.delete(runner_pod)
    setup.kube.fail(PODS, status=403, times=1)  # a refusal is not retried

    broker.service.sweeper.sweep()

    broker.wait_for_log("sweep", "decision=failed", "Role")
    assert setup.runners.names() == {runner_pod.name}
    broker.service.sweeper.sweep()  # the next round, the fault gone
    assert setup.runners.names() == set()


def test_the_sweep_runs_every_interval(setup):
    setup.start_in_process(BROKER_SWEEP_SECONDS="0.05")
    setup.runners.add("base-runner-5d8f7c9b4-orphan", ["base-runner"])
    wait_until(lambda: setup.runners.names() == set(), "a sweep", timeout=5)


# ---------------------------------------------------------------- spent pods --


@pytest.mark.parametrize("kind", ["base", "gpu"])
def test_attack_pod_frozen_after_its_job_is_deleted_by_the_sweep(broker, setup, clock, kind):
    """The attack: a job SIGSTOPs startup.sh (and fakes the listener for the probes), so /v1/finished never comes
    and the pod lives on. Now the sweep sees GitHub no longer lists the pod's runner (a JIT runner leaves after
    its one job) and deletes the pod (a base pod: its ReplicaSet makes a fresh one) or the GPU runner's Job."""
    runner_pod = setup.cluster.base_runner_pod() if kind == "base" else setup.cluster.gpu_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    runner_name = setup.cluster.annotations(runner_pod)["gke-gpu-runners/runner"]
    setup.runners.remove(runner_name)  # its one job done, the runner deregistered; the pod's processes frozen
    clock.now += 61  # past the grace

    sweeper(broker, clock).sweep()

    assert setup.cluster.stored(runner_pod) is None
    if kind == "gpu":
        assert setup.kube.objects("Job", NAMESPACE) == []  # so that no other pod takes the Job's runner name
    broker.wait_for_log("sweep", "decision=deleted", f"pod={runner_pod.name}", "its one job is done")


def test_a_pod_granted_moments_ago_is_left_for_the_next_round(broker, setup, clock):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.runners.remove(runner_pod.name)  # as if GitHub's list predated the grant

    clock.now += 30
    sweeper(broker, clock).sweep()
    assert setup.cluster.stored(runner_pod) is not None

    clock.now += 31
    sweeper(broker, clock).sweep()
    assert setup.cluster.stored(runner_pod) is None


def test_a_pod_at_work_is_left_alone(broker, setup, clock):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.runners.set_state(runner_pod.name, status="online", busy=True)
    clock.now += 3600

    sweeper(broker, clock).sweep()

    assert setup.cluster.stored(runner_pod) is not None and setup.runners.names() == {runner_pod.name}


def test_no_pod_is_deleted_on_a_partial_list_of_runners(broker, setup, clock, monkeypatch):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.runners.remove(runner_pod.name)
    for number in range(120):
        setup.runners.add(f"someone-else-{number}", ["other"])
    monkeypatch.setattr(broker_github, "MAX_PAGES", 1)
    clock.now += 3600

    sweeper(broker, clock).sweep()

    assert setup.cluster.stored(runner_pod) is not None
    broker.wait_for_log("sweep", "decision=skipped", "more runners than were read")


def test_a_grant_without_a_time_is_old_enough(broker, setup, clock):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    del setup.cluster.stored(runner_pod)["metadata"]["annotations"][GRANTED_AT_ANNOTATION]
    setup.runners.remove(runner_pod.name)

    sweeper(broker, clock).sweep()

    assert setup.cluster.stored(runner_pod) is None


# ------------------------------------------------------------- completed runs --


def test_gpu_jobs_of_completed_vanished_or_rerun_runs_are_deleted(broker, setup):
    for run in ("1", "2", "3", "4"):
        setup.cluster.gpu_runner_pod(run_id=run)
        setup.runs.start_run(run)
    setup.runs.set_run_status("1", "completed")
    setup.runs.forget_run("3")  # deleted: GitHub answers 404
    setup.github.script(run_path(REPOSITORY, "4"), *[Reply(503)] * 3)
    setup.cluster.gpu_runner_pod(run_id="2", attempt=2)
    setup.runs.start_run("2", attempt=2)  # re-run: attempt 1 is over

    broker.service.sweeper.sweep()

    left = sorted(j["metadata"]["name"] for j in setup.kube.objects("Job", NAMESPACE))
    assert left == ["gpu-runner-2-2", "gpu-runner-4-1"]  # in progress; unknown for now
    assert sorted(
        p["metadata"]["name"].rsplit("-p", 1)[0]
        for p in setup.kube.objects("Pod", NAMESPACE)
        if p["metadata"]["name"].startswith("gpu-")
    ) == ["gpu-runner-2-2", "gpu-runner-4-1"]
    broker.wait_for_log("sweep", "decision=deleted", "job=gpu-runner-1-1", "completed")
    broker.wait_for_log("sweep", "decision=deleted", "job=gpu-runner-3-1", "no longer has the run")
    broker.wait_for_log("sweep", "decision=deleted", "job=gpu-runner-2-1", "moved on to attempt 2")
    broker.wait_for_log("sweep", "decision=failed", "run=4")
    assert len(setup.github.requests_to(run_path(REPOSITORY, "2"))) == 1  # one look per run, not per Job


def test_a_failed_part_of_the_sweep_does_not_stop_the_others(broker, setup):
    setup.cluster.gpu_runner_pod(run_id="1")
    setup.runs.start_run("1", status="completed")
    setup.github.script(RUNNERS, *[Reply(503)] * 3)

    broker.service.sweeper.sweep()

    broker.wait_for_log("sweep", "decision=failed", "part=runners_and_pods")
    assert setup.kube.objects("Job", NAMESPACE) == []


# ---------------------------------------------------------------- final sweep --


def test_after_the_runner_namespace_went_the_final_sweep_removes_every_runner_of_ours(broker, setup, clock):
    """pulumi destroy deletes the runner namespace, and the broker's Role in it, before the broker."""
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.runners.add("gpu-runner-77-1", ["gpu-runner-77"])
    setup.runners.add("tutorial-runner", ["base-runner"])  # not ours: never touched
    setup.kube.fail(PODS, status=403, times=100)

    assert sweeper(broker, clock).final() == []

    assert setup.runners.names() == {"tutorial-runner"}
    broker.wait_for_log("sweep", "decision=namespace-gone")


def test_attack_busy_runner_at_destroy_is_retried_until_github_lets_it_go(broker, setup, clock):
    """The attack: a runner still busy at pulumi destroy stayed registered (GitHub answers 422). Now the final
    sweep retries it, bounded, and removes it once GitHub lets it go."""
    setup.runners.add("gpu-runner-77-1", ["gpu-runner-77"], busy=True)
    setup.kube.fail(PODS, status=403, times=100)
    deletes = []

    def sleep(seconds):
        clock.sleep(seconds)
        deletes.append(len(setup.github.requests_to(f"{RUNNERS}/1001")))
        if len(deletes) == 3:
            setup.runners.set_state("gpu-runner-77-1", busy=False)  # GitHub has noticed the listener is gone

    final = Sweeper(
        broker.config,
        broker.service.kubernetes,
        broker.service.github,
        clock=clock.time,
        monotonic=clock.monotonic,
        sleep=sleep,
    )
    from dataclasses import replace

    final._config = replace(broker.config, final_sweep_seconds=120)

    assert final.final() == []

    assert setup.runners.names() == set()
    assert deletes == [1, 2, 3] and clock.slept == [0.5, 1, 2]
    broker.wait_for_log("sweep", "decision=left", "runner=gpu-runner-77-1", "still running a job")
    broker.wait_for_log("sweep", "decision=removed", "runner=gpu-runner-77-1", "try 4")


def test_a_runner_busy_past_the_bound_is_named(broker, setup, clock):
    setup.runners.add("gpu-runner-77-1", ["gpu-runner-77"], busy=True)
    setup.runners.add("base-runner-5d8f7c9b4-gone", ["base-runner"], busy=True)
    setup.kube.fail(PODS, status=403, times=100)

    remaining = sweeper(broker, clock, final_sweep_seconds=120).final()

    assert remaining == ["gpu-runner-77-1", "base-runner-5d8f7c9b4-gone"]
    assert 115 <= sum(clock.slept) <= 120 and max(clock.slept) <= 5
    line = broker.wait_for_log("sweep", "decision=remain")
    assert "runners=gpu-runner-77-1,base-runner-5d8f7c9b4-gone" in line and "BROKER_FINAL_SWEEP_SECONDS" in line


def test_the_final_sweep_keeps_runners_whose_pods_live(broker, setup, clock):
    staying = setup.cluster.base_runner_pod()
    assert broker.jitconfig(staying).status == 201
    setup.runners.add("base-runner-5d8f7c9b4-gone", ["base-runner"])

    assert sweeper(broker, clock).final() == []

    assert setup.runners.names() == {staying.name}
