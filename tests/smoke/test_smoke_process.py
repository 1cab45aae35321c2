"""The real entry point as a user runs it, with stub `pulumi` and `kubectl` on PATH and the
fake GitHub: the wiring the in-process tests leave out (the commands' argv, the private
kubeconfig, signals, exit codes)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fake_github import FakeGitHub, Reply
from smoke_doubles import (
    CI_GOOGLE,
    CI_READS,
    GPU_LINE,
    KUBECONFIG_TEXT,
    NAMESPACE,
    STACK_OUTPUTS,
    TEMPLATE,
    GpuScenario,
    ci_binding,
    deployment,
    events,
    node_object,
    pod_object,
    stamp,
)
from smoke_harness import JOB, OWN_RUNNERS, RELEASE_PATH, RUN_ID, RUNNERS_PATH, TOKEN, project_folder

ENTRY = Path(__file__).resolve().parents[2] / "scripts" / "smoke_test.py"

STUB = """\
#!@PYTHON@ -S
# A stub @TOOL@: records its argv, stdin and KUBECONFIG, answers from the scenario.
import json, os, stat, sys, time

args = sys.argv[1:]
scenario = json.load(open(os.environ["STUB_SCENARIO"]))
record = {"tool": "@TOOL@", "argv": args}
kubeconfig = os.environ.get("KUBECONFIG")
if "@TOOL@" == "kubectl" and kubeconfig and os.path.exists(kubeconfig):
    record.update(kubeconfig=kubeconfig, mode=stat.S_IMODE(os.stat(kubeconfig).st_mode),
                  text=open(kubeconfig).read())
stdin = sys.stdin.read() if "-" in args else None
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")


def reply(answer):
    sys.stdout.write(answer.get("stdout", ""))
    sys.stderr.write(answer.get("stderr", ""))
    sys.exit(answer.get("exit", 0))


if "@TOOL@" == "pulumi":
    reply(scenario["pulumi"][args[0]])
rest = args[2:] if args[:1] == ["-n"] else args
if rest[0] == "create":
    job = json.loads(stdin)
    job["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    reply({"stdout": json.dumps(job)})
if rest[0] == "auth":
    subresource = [a.split("=")[1] for a in rest if a.startswith("--subresource=")]
    key = " ".join([*rest[:3], "/".join([rest[3], *subresource]), args[1]])
elif rest[0] == "get":
    key = " ".join(rest[:2] if rest[2].startswith("-") else rest[:3])
else:
    key = rest[0]
reply(scenario["kubectl"].get(key, {"exit": 1, "stderr": "the stub has no answer for %s\\n" % key}))
"""


def listing(*items) -> dict:
    return {"stdout": json.dumps({"apiVersion": "v1", "kind": "List", "items": [i for i in items if i]})}


def scenario(pods: str = "running") -> dict:
    runner = GpuScenario(RUN_ID)
    t0 = time.time() - 150
    can_i = {f"auth can-i {verb} {resource} {namespace}": {"stdout": "yes\n"} for verb, resource, namespace in CI_READS}
    for verb, resource, namespace in [
        ("create", "jobs.batch", NAMESPACE),
        ("delete", "jobs.batch", NAMESPACE),
        ("create", "pods", NAMESPACE),
        ("create", "pods/exec", NAMESPACE),
        ("get", "secrets", NAMESPACE),
        ("get", "secrets", f"{NAMESPACE}-system"),
    ]:
        can_i[f"auth can-i {verb} {resource} {namespace}"] = {"stdout": "no\n", "exit": 1}
    return {
        "pulumi": {"stack": {"stdout": json.dumps(STACK_OUTPUTS)}, "config": {"stdout": "o/r\n"}},
        "kubectl": {
            **can_i,
            "get deployment runner-broker": {"stdout": json.dumps(deployment("runner-broker"))},
            "get deployment base-runner": {"stdout": json.dumps(deployment("base-runner"))},
            "get rolebinding ci-runner-launcher": {"stdout": json.dumps(ci_binding())},
            "get configmap gpu-runner-template": {"stdout": json.dumps({"data": {"runner-gpu.yaml": TEMPLATE}})},
            "get pods": listing(pod_object(runner, t0, pods)),
            f"get job {JOB}": {"stdout": json.dumps({"metadata": {"name": JOB, "creationTimestamp": stamp(t0)}})},
            "get events": listing(*events(runner, t0)),
            f"get node {runner.node}": {"stdout": json.dumps(node_object(runner, t0))},
            "exec": {"stdout": GPU_LINE + "\n"},
            "delete": {"stdout": f'job.batch "{JOB}" deleted\n'},
        },
    }


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def board(log: Path, online: bool = True):
    """Our base runner, and the GPU runner online until the stub kubectl has deleted its Job."""

    def answer(_request, _match) -> Reply:
        deleted = any(call["argv"][2:4] == ["delete", "job"] for call in calls(log))
        gpu = [{"id": 9, "name": JOB, "status": "online", "labels": [{"name": f"gpu-runner-{RUN_ID}"}]}]
        runners = OWN_RUNNERS + (gpu if online and not deleted else [])
        return Reply(200, {"total_count": len(runners), "runners": runners})

    return answer


def environment(tmp_path: Path, github: FakeGitHub, the_scenario: dict, **env: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("pulumi", "kubectl"):
        stub = bin_dir / tool
        stub.write_text(STUB.replace("@PYTHON@", sys.executable).replace("@TOOL@", tool))
        stub.chmod(0o755)
    (tmp_path / "scenario.json").write_text(json.dumps(the_scenario))
    (tmp_path / "tmp").mkdir(exist_ok=True)
    log = tmp_path / "calls.jsonl"
    github.respond("GET", RUNNERS_PATH, board(log, online=the_scenario.get("online", True)))
    github.default(RELEASE_PATH, Reply(200, {"tag_name": "v2.336.0"}))
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path / "tmp"),
        "STUB_SCENARIO": str(tmp_path / "scenario.json"),
        "STUB_LOG": str(log),
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_API_URL": github.url,
        "SMOKE_RUN_ID": str(RUN_ID),
        "SMOKE_POLL_SECONDS": "0",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        **env,
    }


def test_the_entry_point_is_an_executable_python3_script():
    assert os.access(ENTRY, os.X_OK)
    assert ENTRY.read_text().startswith("#!/usr/bin/env python3\n")


def test_help_and_a_bad_setting_as_a_user_runs_them(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ENTRY), "--help"], capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout.startswith("Usage: python3 scripts/smoke_test.py")
    done = subprocess.run(
        [sys.executable, str(ENTRY)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "SMOKE_FOLLOW_NODE": "yes"},
    )
    assert done.returncode == 2 and done.stderr == "smoke-test: SMOKE_FOLLOW_NODE must be 0 or 1, not 'yes'\n"


def test_a_healthy_stack_passes_through_the_real_commands(tmp_path):
    project = project_folder(tmp_path / "project")
    with FakeGitHub() as github:
        env = environment(tmp_path, github, scenario())
        done = subprocess.run(
            [sys.executable, str(ENTRY)], env=env, capture_output=True, text=True, timeout=60, check=False, cwd=project
        )
    log = calls(tmp_path / "calls.jsonl")

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("\nAll checks passed.\n") and "SKIP" not in done.stdout
    assert [c["argv"] for c in log if c["tool"] == "pulumi"] == [["stack", "output", "--json", "--show-secrets"]]
    kubectl = [c for c in log if c["tool"] == "kubectl"]
    for call in kubectl:
        assert call["text"] == KUBECONFIG_TEXT and call["mode"] == 0o600, call["argv"]
        assert call["argv"][:2] == ["-n", NAMESPACE] or call["argv"][:2] in (
            ["-n", f"{NAMESPACE}-system"],
            ["get", "node"],
        ), call["argv"]
        impersonating = [a for a in call["argv"] if a.startswith("--as")]
        assert impersonating == ([f"--as={CI_GOOGLE}"] if "can-i" in call["argv"] else [])
        assert TOKEN not in json.dumps(call)
    assert not Path(kubectl[0]["kubeconfig"]).exists()
    assert list((tmp_path / "tmp").iterdir()) == [], "the private folder must be removed"
    (delete,) = [c for c in kubectl if c["argv"][2] == "delete"]
    assert "gpu-runner-9000-1            1         3          95" in done.stdout  # the table, from the real JSON
    assert delete["argv"] == ["-n", NAMESPACE, "delete", "job", JOB, "--ignore-not-found", "--wait=false"]
    assert TOKEN not in done.stdout + done.stderr


def test_a_terminated_run_deletes_its_jobs_and_exits_143(tmp_path):
    """SIGTERM as a CI runner or `timeout` sends it (Ctrl-C's SIGINT is tested in-process)."""
    waiting = {**scenario(pods="pending"), "online": False}
    with FakeGitHub() as github:
        env = environment(tmp_path, github, waiting, SMOKE_GPU_TIMEOUT_SECONDS="600", SMOKE_POLL_SECONDS="0.05")
        log = tmp_path / "calls.jsonl"
        process = subprocess.Popen(
            [sys.executable, str(ENTRY)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=project_folder(tmp_path / "project"),
        )
        deadline = time.monotonic() + 30
        # Once it polls the Job's pod: the Job is made, and the smoke test waits for its runner.
        while time.monotonic() < deadline and "job-name=" not in (log.read_text() if log.exists() else ""):
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 143, stdout + stderr
    deletes = [c["argv"] for c in calls(log) if c["argv"][2:3] == ["delete"]]
    assert deletes == [["-n", NAMESPACE, "delete", "job", JOB, "--ignore-not-found", "--wait=false"]]
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list((tmp_path / "tmp").iterdir()) == []
