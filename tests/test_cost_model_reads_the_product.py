"""The cost model (benchmarks/cold_start_model.py) reads the program's own defaults and sizes,
so the README's cost and cold-start figures move with the product; its prices
(benchmarks/published.py) cover every machine the program picks. Its arithmetic is
tested beside it, in benchmarks/."""

import pytest

import cold_start_model as model
import published
import report
from program import settings
from program.catalog.gpus import smallest_machine


@pytest.fixture(scope="module")
def program() -> model.Program:
    return model.read_program()


def test_the_after_setup_is_the_programs_defaults(program):
    after = model.after_setup(program)
    assert after.base_runners == settings.default_base_runner_replicas(settings.DEFAULT_GPU_MAX_NODES)
    assert after.cpu_machine == settings.default_cpu_machine(after.base_runners)
    assert after.profile == settings.AUTOSCALING_PROFILES[0] == program.defaults["autoscalingProfile"]
    assert after.warm_nodes == program.defaults["gpuWarmRunners"]


def test_every_default_gpu_machine_has_a_price(program):
    for gpu_type in published.GPU_TYPES:
        assert smallest_machine(gpu_type, program.defaults["gpuCount"]) in published.MACHINE_PRICES
        assert gpu_type in published.GPU_PRICES
    assert model.after_setup(program).cpu_machine in published.MACHINE_PRICES


def test_the_base_runners_and_broker_fit_on_one_default_cpu_node(program):
    after = model.after_setup(program)
    need_cpu, has_cpu, need_gib, has_gib = model.cpu_node_fit(after.cpu_machine, after.base_runners)
    assert need_cpu <= has_cpu and need_gib <= has_gib


def test_the_models_print(program, capsys):
    report.print_models(program)
    out = capsys.readouterr().out
    for heading in ("1. Cold start", "2. N runs", "3. The bill", "always-on"):
        assert heading in out


def test_the_scale_set_setup_is_the_programs_scale_set_defaults(program):
    scale_set = model.scale_set_setup(program)
    assert scale_set.base_runners == 0 and scale_set.scale_set
    assert scale_set.cpu_machine == settings.default_scale_set_cpu_machine()
    assert scale_set.warm_nodes == program.defaults["gpuWarmRunners"]
