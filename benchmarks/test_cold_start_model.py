"""The cold-start, concurrency and cost models that benchmarks/benchmark.py prints.

Run on demand, beside the benchmark: `.venv/bin/python -m pytest benchmarks`. The few
checks that the models read the product rather than restate it run with the suite, in
tests/test_cost_model_reads_the_product.py."""

from itertools import pairwise

import pytest

import cold_start_model as model
import published
import report
from program import settings


@pytest.fixture(scope="module")
def program() -> model.Program:
    return model.read_program()


def parts(pull: float, driver: float, overlap: bool) -> dict[str, float]:
    return model.cold_start(
        autoscaler=35, vm=100, driver=driver, pull=pull, runner=10, notice=2.5, handover=3, pull_overlaps_driver=overlap
    )


# --- Model 1: one cold start -------------------------------------------------------------------


def test_overlap_shortens_the_cold_start_by_exactly_the_pull_when_the_pull_is_shorter_than_the_driver_install():
    before = sum(parts(pull=20, driver=30, overlap=False).values())
    after = sum(parts(pull=20, driver=30, overlap=True).values())
    assert before - after == 20


def test_overlap_saves_only_the_driver_install_when_the_pull_outlasts_it():
    before = sum(parts(pull=45, driver=30, overlap=False).values())
    after = sum(parts(pull=45, driver=30, overlap=True).values())
    assert before - after == 30


def test_the_floor_is_below_after_which_is_below_before(program):
    before = sum(model.cold_start_for(model.before_setup(), program.poll_seconds).values())
    after_setup = model.after_setup(program)
    after = sum(model.cold_start_for(after_setup, program.poll_seconds).values())
    floor = sum(model.cold_start_for(after_setup, program.poll_seconds, "low").values())
    assert floor < after < before


def test_a_warm_node_starts_the_runner_faster_than_the_cold_start_floor(program):
    floor = sum(model.cold_start_for(model.after_setup(program), program.poll_seconds, "low").values())
    assert sum(model.warm_start_for(program, "high").values()) < floor


def test_the_poll_wait_is_half_the_poll_on_average_and_the_whole_poll_at_worst():
    assert model.poll_wait(5, "typical") == 2.5
    assert model.poll_wait(5, "high") == 5
    assert model.poll_wait(5, "low") == 0


# --- What the model reads rather than restates ---------------------------------------------------


def test_more_gpu_nodes_mean_more_base_runners_after_but_one_before(program):
    assert model.after_setup(program, 5).base_runners == settings.default_base_runner_replicas(5)
    assert model.before_setup().base_runners == 1


def test_the_start_jobs_timeout_is_read_from_the_step_that_runs_gpu_runner_start():
    workflow = {
        "jobs": {
            "guard": {"steps": [{"run": "gpu-runner guard", "env": {"GPU_RUNNER_TIMEOUT_SECONDS": "600"}}]},
            "start": {"steps": [{"run": "gpu-runner start", "env": {"GPU_RUNNER_TIMEOUT_SECONDS": "900"}}]},
        }
    }
    assert model.start_job_timeout(workflow) == 900


def test_the_repository_gives_the_poll_timeout_grace_and_disk(program):
    assert program.poll_seconds > 0
    assert program.start_timeout_seconds > 0
    assert program.placeholder_grace_seconds >= 0
    assert program.boot_disk_gb > 0


# --- Model 2: runs started together --------------------------------------------------------------


def timeline(base_runners: int, gpu_max_nodes: int, runs: int = 5, profile: str = "OPTIMIZE_UTILIZATION"):
    return model.concurrent_runs(
        runs=runs,
        job_seconds=300,
        gpu_max_nodes=gpu_max_nodes,
        base_runners=base_runners,
        cold_until_up=175,
        reuse_until_up=12,
        notice=2.5,
        handover=3,
        base_turnaround=10,
        autoscaler=35,
        scale_down=published.SCALE_DOWN[profile],
    )


def test_the_fifth_of_five_runs_waits_for_a_base_runner_before_but_not_after(program):
    before = model.concurrent_for(model.before_setup(), program, runs=5, job_minutes=5, gpu_max_nodes=5)
    after = model.concurrent_for(model.after_setup(program, 5), program, runs=5, job_minutes=5, gpu_max_nodes=5)
    assert before[4].waited_for_base_runner
    assert not after[4].waited_for_base_runner
    assert after[4].train_starts < before[4].train_starts


def test_one_base_runner_serializes_the_start_jobs():
    runs = timeline(base_runners=1, gpu_max_nodes=5)
    for earlier, later in pairwise(runs):
        assert later.start_job_begins > earlier.runner_up


def test_with_a_base_runner_per_node_runs_up_to_gpu_max_nodes_start_together():
    runs = timeline(base_runners=5, gpu_max_nodes=5)
    assert len({run.train_starts for run in runs}) == 1
    assert all(run.cold_node for run in runs)


def test_runs_beyond_gpu_max_nodes_wait_for_a_node_and_reuse_it_without_a_cold_start():
    runs = timeline(base_runners=2, gpu_max_nodes=2)
    third = runs[2]
    assert third.waited_for_node and not third.cold_node
    assert third.runner_up == runs[0].train_ends + 12


def test_a_start_job_queued_behind_two_long_jobs_outlasts_the_workflows_timeout(program):
    runs = model.concurrent_runs(
        runs=3,
        job_seconds=900,
        gpu_max_nodes=1,
        base_runners=3,
        cold_until_up=175,
        reuse_until_up=12,
        notice=2.5,
        handover=3,
        base_turnaround=10,
        autoscaler=35,
        scale_down=published.SCALE_DOWN["OPTIMIZE_UTILIZATION"],
    )
    assert runs[0].start_job_seconds < program.start_timeout_seconds
    assert runs[2].start_job_seconds > program.start_timeout_seconds


# --- Model 3: the bill -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["OPTIMIZE_UTILIZATION", "BALANCED"])
def test_billed_minutes_grow_linearly_with_job_length_once_past_the_delay_after_add(profile):
    scale_down = published.SCALE_DOWN[profile]
    lengths = [700, 1300, 1900, 3600]  # every job ends after the delay after add
    billed = [model.billed_node_seconds(150, length, scale_down) for length in lengths]
    for (a, b), (x, y) in zip(pairwise(lengths), pairwise(billed), strict=True):
        assert y - x == b - a


def test_balanced_bills_the_same_for_jobs_that_end_within_the_delay_after_add():
    scale_down = published.SCALE_DOWN["BALANCED"]
    assert model.billed_node_seconds(150, 60, scale_down) == model.billed_node_seconds(150, 300, scale_down)


@pytest.mark.parametrize("gpu_type", published.GPU_TYPES)
@pytest.mark.parametrize("minutes", published.JOB_MINUTES)
def test_balanced_bills_more_than_optimize_utilization(program, gpu_type, minutes):
    after = model.after_setup(program)
    balanced = model.run_bill(after, program, gpu_type, minutes, "BALANCED")
    optimized = model.run_bill(after, program, gpu_type, minutes, "OPTIMIZE_UTILIZATION")
    assert balanced[0] > optimized[0] and balanced[1] > optimized[1]


def test_a_five_minute_run_bills_about_twenty_minutes_under_balanced(program):
    minutes, _ = model.run_bill(model.before_setup(), program, "nvidia-tesla-t4", 5)
    assert 20 <= minutes <= 25


def test_compute_engine_bills_at_least_a_minute():
    assert model.billed_node_seconds(0, 0, published.ScaleDown(0, 0), delete_seconds=0) == 60


def test_a_spot_node_costs_less_than_an_on_demand_one():
    for machine, gpu in (("n1-standard-4", "nvidia-tesla-t4"), ("g2-standard-4", "nvidia-l4")):
        spot = model.node_price_per_hour(machine, gpu, 1, 100, spot=True)
        assert spot < model.node_price_per_hour(machine, gpu, 1, 100)


def test_the_cluster_fee_counts_only_beyond_the_free_tier(program):
    cost = model.always_on("e2-standard-2", 1, program.boot_disk_gb)
    assert cost.total() == pytest.approx(cost.machine_on_demand + cost.boot_disk)
    assert cost.total(free_tier=False) == pytest.approx(cost.machine_on_demand + cost.boot_disk + cost.cluster_fee)


def test_the_always_on_part_costs_less_after(program):
    nodes = program.defaults["cpuMinNodes"]
    before = model.always_on(model.before_setup().cpu_machine, nodes, program.boot_disk_gb)
    after = model.always_on(model.after_setup(program).cpu_machine, nodes, program.boot_disk_gb)
    assert after.total() < before.total()


# --- Model 4: runnerMode: scale-set ------------------------------------------------------------


def test_a_scale_set_job_waits_for_no_start_job_and_no_poll(program):
    scale_set = model.scale_set_cold_start_for(model.scale_set_setup(program))
    assert not [part for part in scale_set if "poll" in part or "start job" in part]
    # The node dominates either way: the modes' cold starts differ by seconds, not minutes.
    per_run = model.per_run_queued_to_train(model.after_setup(program), program.poll_seconds)
    assert abs(sum(scale_set.values()) - per_run) < 15


def test_scale_set_jobs_up_to_gpu_max_nodes_start_together_and_later_ones_reuse_a_node(program):
    runs = model.scale_set_concurrent_for(model.scale_set_setup(program), runs=4, job_minutes=5, gpu_max_nodes=2)
    assert runs[0].train_starts == runs[1].train_starts
    assert runs[0].cold_node and runs[1].cold_node
    assert not runs[2].cold_node and runs[2].waited_for_node
    assert runs[2].train_starts > runs[0].train_ends
    assert not any(run.waited_for_base_runner for run in runs)


def test_arc_fits_on_one_default_scale_set_cpu_node_with_gke_pods(program):
    setup = model.scale_set_setup(program)
    need_cpu, has_cpu, need_gib, has_gib = model.cpu_node_fit(setup.cpu_machine, 0, scale_set=True)
    assert need_cpu <= has_cpu and need_gib <= has_gib
    assert setup.cpu_machine in published.MACHINE_PRICES


def test_the_scale_set_model_prints(program, capsys):
    report.print_models(program)
    assert "4. runnerMode: scale-set" in capsys.readouterr().out
