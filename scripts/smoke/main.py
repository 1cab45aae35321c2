"""The smoke test from start to end: settings, stack outputs, the mode's checks, cleanup.

`main` takes everything it talks to as arguments, so tests run it in-process with
doubles; `cli` is what `scripts/smoke_test.py` runs.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from .cluster import Cluster, Kubectl
from .context import Clock, Context, Pulumi, StackError, SystemClock
from .github import GitHub
from .gpu_runners import delete_leftovers
from .modes import MODES, mode_of
from .report import Report
from .settings import SettingsError, read_settings, usage

PROJECT = Path(__file__).resolve().parents[2]
REQUIRED_OUTPUTS = ("namespace", "clusterRunnerImage", "kubeconfig")


class Interrupted(BaseException):
    """SIGTERM (or SIGINT): stop the checks, clean up, exit with `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def main(
    argv: Sequence[str],
    *,
    environ: Mapping[str, str] = os.environ,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    clock: Clock | None = None,
    project: Path = PROJECT,
    pulumi: Pulumi | None = None,
    make_cluster: Callable[[Path], Cluster] | None = None,
    github: Callable[[str, str | None], GitHub] = GitHub,
) -> int:
    """Runs the smoke test; the exit status. `make_cluster` gets the operator kubeconfig's path."""
    if list(argv) in (["-h"], ["--help"]):
        out.write(usage())
        return 0
    if argv:
        err.write(usage())
        return 2
    clock = clock or SystemClock()
    try:
        settings = read_settings(environ, clock.time())
    except SettingsError as error:
        err.write(f"smoke-test: {error}\n")
        return 2
    if importlib.util.find_spec("yaml") is None:
        err.write(
            "smoke-test: PyYAML is missing: run it with the project's virtualenv, "
            ".venv/bin/python scripts/smoke_test.py (pulumi up makes it)\n"
        )
        return 2
    needed = ([settings.pulumi] if pulumi is None else []) + ([settings.kubectl] if make_cluster is None else [])
    for tool in needed:
        if shutil.which(tool) is None:
            err.write(f"smoke-test: {tool} not found on PATH\n")
            return 2
    pulumi = pulumi or Pulumi(settings.pulumi, settings.stack, project)
    report = Report(out)
    try:
        outputs = pulumi.outputs()
    except StackError as error:
        report.failed(
            "stack outputs",
            f"pulumi stack output failed: {error}",
            "select the stack (pulumi stack select, or SMOKE_STACK=<stack>) and deploy it (pulumi up)",
        )
        return 1
    missing = [name for name in REQUIRED_OUTPUTS if not isinstance(outputs.get(name), str) or not outputs[name]]
    if missing:
        report.failed("stack outputs", f"missing: {' '.join(missing)}", "run pulumi up to completion, then try again")
        return 1
    mode = mode_of(outputs)
    scale_set = f", scale-set mode: scale set {outputs['scaleSetName']}" if mode == "scale-set" else ""
    report.passed(
        "stack outputs", f"namespace {outputs['namespace']}, image {outputs['clusterRunnerImage']}{scale_set}"
    )

    # The operator kubeconfig goes into a private folder, removed whatever happens.
    with tempfile.TemporaryDirectory(prefix="gpu-runners-smoke.") as workdir:
        kubeconfig = Path(workdir) / "kubeconfig"
        with os.fdopen(os.open(kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(outputs["kubeconfig"])
        cluster = (make_cluster or (lambda path: Kubectl(settings.kubectl, path)))(kubeconfig)
        ctx = Context(
            settings=settings,
            report=report,
            cluster=cluster,
            github=github(settings.github_api_url, settings.github_token),
            clock=clock,
            pulumi=pulumi,
            outputs=outputs,
            project=project,
        )
        return run_checks(ctx, MODES[mode], err)


def run_checks(ctx: Context, checks: Sequence[Callable[[Context], None]], err: TextIO) -> int:
    try:
        for check in checks:
            check(ctx)
        return ctx.report.summary()
    except Interrupted as interrupted:
        err.write(f"smoke-test: interrupted (exit {interrupted.code}); deleting the Jobs it made\n")
        return interrupted.code
    except KeyboardInterrupt:
        err.write("smoke-test: interrupted; deleting the Jobs it made\n")
        return 130
    finally:
        # A test GPU runner must not keep a GPU node alive, whatever happened.
        problem = delete_leftovers(ctx)
        if problem:
            err.write(f"smoke-test: {problem}\n")


def _on_signal(signum: int, _frame: object) -> None:
    raise Interrupted(128 + signum)


def cli() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    sys.exit(main(sys.argv[1:]))
