"""The project files: every key the program reads is declared, with the program's defaults."""

import json

import pytest
import yaml

from program_harness import ROOT, run_program

PULUMI_YAML = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
DECLARED = PULUMI_YAML["config"]


def keys_read_by_the_program(monkeypatch) -> set[str]:
    import pulumi.config
    from pulumi.runtime.config import get_config

    import program.settings.reader

    read = set()

    def recording_get_config(key):
        read.add(key)
        return get_config(key)

    monkeypatch.setattr(pulumi.config, "get_config", recording_get_config)
    monkeypatch.setattr(program.settings.reader, "get_config", recording_get_config)
    run_program()
    return read


def test_project_runs_python_in_its_own_virtualenv():
    assert PULUMI_YAML["name"] == "gke-gpu-runners"
    assert PULUMI_YAML["runtime"]["name"] == "python"
    assert PULUMI_YAML["runtime"]["options"]["virtualenv"]
    assert PULUMI_YAML["runtime"]["options"]["toolchain"] == "pip"


def test_every_project_key_the_program_reads_is_declared_with_type_and_description(monkeypatch):
    read = keys_read_by_the_program(monkeypatch)
    project_keys = {k.split(":", 1)[1] for k in read if k.startswith("gke-gpu-runners:")}
    assert project_keys == set(DECLARED)
    assert {"gcp:project", "gcp:zone", "github:token"} <= read
    for key, declaration in DECLARED.items():
        assert declaration["type"] in ("string", "integer", "boolean", "array"), key
        assert declaration["description"].strip(), key


def registered(program):
    return sorted((r.typ, r.name, repr(r.inputs)) for r in program.resources)


# runnerToken's empty default means "not set", which is refused unless a GitHub App is
# set (test_broker_program proves the refusal); every other default is the program's own.
@pytest.mark.parametrize("key", sorted(k for k, d in DECLARED.items() if "default" in d and k != "runnerToken"))
def test_declared_default_is_the_programs_default(key, program):
    default = DECLARED[key]["default"]
    text = (
        str(default).lower()
        if isinstance(default, bool)
        else json.dumps(default)
        if isinstance(default, list)
        else str(default)
    )
    assert registered(run_program({f"gke-gpu-runners:{key}": text})) == registered(program)


def test_sample_stack_holds_no_secret():
    sample = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    assert not {"github:token", "gke-gpu-runners:runnerToken", "gke-gpu-runners:registryToken"} & set(sample)
    assert sample["gke-gpu-runners:githubRepository"].count("/") == 1


def test_ci_script_passes_shellcheck():
    from test_image_lint import run_tool, tool

    done = run_tool(tool("shellcheck"), "--severity", "style", str(ROOT / ".ci" / "run"))
    assert done.returncode == 0, done.stdout + done.stderr
