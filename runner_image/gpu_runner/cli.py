"""The `gpu-runner` command line: its help, the environment it reads, and its exit statuses.

Exit status: 0 done; 1 the runners failed, never came, or took the wrong job (the
reason is printed as an `::error::`); 2 bad usage or a missing or bad variable;
130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from gpu_runner import transport
from gpu_runner.actions import Log
from gpu_runner.broker import Broker, BrokerError, read_token
from gpu_runner.credential import credential
from gpu_runner.github import GitHub
from gpu_runner.guard import guard
from gpu_runner.runners import start, stop
from gpu_runner.waiting import Clock
from runner_contract import RUNNER_BROKER_TOKEN_FILE, RUNNER_BROKER_URL

DEFAULT_TIMEOUT_SECONDS = 1200
DEFAULT_POLL_SECONDS = 5
DEFAULT_JOB = "train"

DESCRIPTION = """\
Start, guard and stop this workflow run's GPU runners, from a job on a base runner
(runs-on: base-runner). The runner broker creates them, for this run only, labelled
gpu-runner-<run id>; a job takes one with `runs-on: gpu-runner-${{ github.run_id }}`.

  start       ask for the run's GPU runners and wait until they are online
  guard       wait until they have taken this run's job(s); cancel the run if not
  stop        delete them (always, at the end of the run)
  credential  kubectl's exec plugin for the CI kubeconfig (GCP_K8S_KUBECONFIG)

`gpu-runner <command> --help` says more about each."""

BROKER_ENVIRONMENT = f"""\
environment:
  {RUNNER_BROKER_URL}          the runner broker's URL (set in every base runner's pod)
  {RUNNER_BROKER_TOKEN_FILE}   the pod's projected token, read for each request (set in the pod)
  GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT
                             this run (set by GitHub Actions)
  GPU_RUNNER_POLL_SECONDS    pause between looks (default {DEFAULT_POLL_SECONDS})"""

HELP = {
    "start": (
        "ask for this run attempt's GPU runners and wait until they are online",
        f"""\
Asks the runner broker for N single-job GPU runners for this run attempt (again: the
same ones), then waits until all are online, saying what it waits for: a GPU node the
autoscaler is adding, GPUs held by other runs (the quota), the image being pulled.
Waiting is the rule, up to GPU_RUNNER_TIMEOUT_SECONDS; it fails at once only for what
waiting cannot fix: an image the cluster cannot pull, a pod that cannot be created, a
pool that can never hold the runner, a failed Job, a refusal from the broker.

{BROKER_ENVIRONMENT}
  GPU_RUNNER_TIMEOUT_SECONDS longest wait (default {DEFAULT_TIMEOUT_SECONDS})
  GITHUB_OUTPUT              (set by GitHub Actions) gets `label=gpu-runner-<run id>`""",
    ),
    "guard": (
        "wait until the GPU runners have taken this run's job(s); cancel the run if not",
        f"""\
Waits until each of this run attempt's GPU runners has taken a job of this run named
--job (or a matrix instance of it, "NAME (...)"), as GitHub's list of the run's jobs
shows. If a runner goes, fails, or takes another job first, or none is taken within
GPU_RUNNER_TIMEOUT_SECONDS, it cancels the run, so that the job does not wait a day
for a runner that never comes, and fails saying why.

{BROKER_ENVIRONMENT}
  GPU_RUNNER_TIMEOUT_SECONDS longest wait (default {DEFAULT_TIMEOUT_SECONDS})
  GITHUB_TOKEN               the job's token (`env: GITHUB_TOKEN: ${{{{ github.token }}}}`), with
                             `permissions: actions: write`: to read the run's jobs and cancel it
  GITHUB_REPOSITORY, GITHUB_API_URL
                             (set by GitHub Actions; GITHUB_API_URL default https://api.github.com)""",
    ),
    "stop": (
        "delete this run attempt's GPU runners",
        f"""\
Deletes this run attempt's GPU runners through the broker: their pods stop and the
broker removes them from GitHub. Run it with `if: always()`. Runners already gone are
no failure.

{BROKER_ENVIRONMENT}""",
    ),
    "credential": (
        "print a short-lived cluster credential for kubectl (its exec plugin)",
        """\
What the CI kubeconfig (GCP_K8S_KUBECONFIG) runs for its credential: trades this job's
GitHub OIDC token at Google's STS and then IAM Credentials for a 10-minute token of
GCP_SERVICE_ACCOUNT, printed on stdout as an ExecCredential. Nothing is written to disk.

environment:
  ACTIONS_ID_TOKEN_REQUEST_URL, ACTIONS_ID_TOKEN_REQUEST_TOKEN
                             set by GitHub for a job with `permissions: id-token: write`
  GCP_WORKLOAD_IDENTITY_PROVIDER  the provider's full name (vars.GCP_WORKLOAD_IDENTITY_PROVIDER)
  GCP_SERVICE_ACCOUNT        the service account to act as (vars.GCP_SERVICE_ACCOUNT)
  GCP_STS_URL                default https://sts.googleapis.com/v1/token
  GCP_IAM_CREDENTIALS_URL    default https://iamcredentials.googleapis.com""",
    ),
}


class UsageError(Exception):
    """Exit 2, saying what to set or how to call."""


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    clock: Clock | None = None,
    request: Callable[..., transport.Answer] = transport.request,
) -> int:
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    clock = clock or Clock(time.monotonic, time.sleep)
    try:
        arguments = _parser(out, err).parse_args(argv)
    except _Exit as done:
        return done.status
    if arguments.command == "credential":  # stdout is kubectl's
        return credential(env, out, err, request)
    log = Log(out)
    try:
        broker = _broker(env, request)
        timeout, poll = _seconds(env, "GPU_RUNNER_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS), _poll(env)
        if arguments.command == "start":
            output = env.get("GITHUB_OUTPUT")
            return start(
                broker,
                arguments.count,
                log,
                clock,
                timeout=timeout,
                poll=poll,
                github_output=Path(output) if output else None,
            )
        if arguments.command == "guard":
            return guard(
                broker,
                _github(env, broker, request),
                arguments.job or [DEFAULT_JOB],
                log,
                clock,
                timeout=timeout,
                poll=poll,
            )
        return stop(broker, log, clock, poll=poll)
    except UsageError as error:
        log.error(str(error))
        return 2
    except KeyboardInterrupt:
        log.line("interrupted")
        return 130


# ------------------------------------------------------------------ environment --


def _broker(env: Mapping[str, str], request: Callable[..., transport.Answer]) -> Broker:
    url = env.get(RUNNER_BROKER_URL, "")
    if not url:
        raise UsageError(
            f"{RUNNER_BROKER_URL} is not set: gpu-runner runs in a job on a base runner "
            "(runs-on: base-runner), whose pod sets it"
        )
    if not re.fullmatch(r"https?://[^\s/\"\\?#]+(/[^\s\"\\?#]*)?", url):
        raise UsageError(f"{RUNNER_BROKER_URL} must be the broker's http(s) URL, got {url[:200]!r}")
    token_file = env.get(RUNNER_BROKER_TOKEN_FILE, "")
    if not token_file:
        raise UsageError(
            f"{RUNNER_BROKER_TOKEN_FILE} is not set: gpu-runner runs in a job on a base runner "
            "(runs-on: base-runner), whose pod sets it"
        )
    try:
        read_token(Path(token_file))
    except BrokerError as error:
        raise UsageError(str(error)) from None
    run_id, run_attempt = env.get("GITHUB_RUN_ID", ""), env.get("GITHUB_RUN_ATTEMPT", "")
    if not (run_id.isdigit() and run_attempt.isdigit() and run_id.isascii() and run_attempt.isascii()):
        raise UsageError("GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT must be set (by GitHub Actions)")
    return Broker(url.rstrip("/"), Path(token_file), run_id, run_attempt, request)


def _github(env: Mapping[str, str], broker: Broker, request: Callable[..., transport.Answer]) -> GitHub:
    token, repository = env.get("GITHUB_TOKEN", ""), env.get("GITHUB_REPOSITORY", "")
    if not token:
        raise UsageError(
            "guard reads this run's jobs and may cancel the run: give its step "
            "`env: GITHUB_TOKEN: ${{ github.token }}` and its job `permissions: actions: write`"
        )
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        raise UsageError(f"GITHUB_REPOSITORY must be owner/name (set by GitHub Actions), got {repository[:200]!r}")
    api = env.get("GITHUB_API_URL") or "https://api.github.com"
    if not re.fullmatch(r"https?://\S+", api):
        raise UsageError(f"GITHUB_API_URL must be an http(s) URL, got {api[:200]!r}")
    return GitHub(api.rstrip("/"), repository, token, broker.run_id, broker.run_attempt, request)


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name) or str(default)
    if not value.isdigit() or not value.isascii() or int(value) < 1:
        raise UsageError(f"{name} must be a whole number of seconds, at least 1, got {value[:50]!r}")
    return int(value)


def _poll(env: Mapping[str, str]) -> float:
    value = env.get("GPU_RUNNER_POLL_SECONDS") or str(DEFAULT_POLL_SECONDS)
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 300:
        raise UsageError(f"GPU_RUNNER_POLL_SECONDS must be seconds from 0 to 300, got {value[:50]!r}")
    return seconds


# ---------------------------------------------------------------- command line --


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, at least 1, got {text!r}")
    return int(text)


def _parser(out: TextIO, err: TextIO) -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        """Writes to `out` and `err`, and returns its exit status instead of exiting."""

        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                (err if file is sys.stderr else out).write(message)

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            if message:
                err.write(message)
            raise _Exit(status)

        def error(self, message: str) -> NoReturn:
            self.print_usage(sys.stderr)
            err.write(f"{self.prog}: error: {message}\nTry `{self.prog} --help`.\n")
            raise _Exit(2)

    formatter = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog="gpu-runner", description=DESCRIPTION, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, (summary, details) in HELP.items():
        command = commands.add_parser(name, help=summary, description=details, formatter_class=formatter)
        if name == "start":
            command.add_argument(
                "--count",
                type=_count,
                default=1,
                metavar="N",
                help="how many GPU runners this run needs, one per GPU job (default 1; "
                "the broker allows up to the stack's gpuMaxNodes)",
            )
        if name == "guard":
            command.add_argument(
                "--job",
                action="append",
                metavar="NAME",
                help=f"the name of a job the GPU runners are for, as GitHub shows it "
                f"(its `name:`, else its id); repeat for several (default {DEFAULT_JOB})",
            )
    return parser
