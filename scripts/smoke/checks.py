"""The checks of a per-run stack that need no GPU: the broker and the base runners, the
runner list in GitHub, the runner's version, and CI's rights. Each is a function of the
`Context`; `modes.py` lists them in order."""

from __future__ import annotations

import re

from runner_contract import BASE_RUNNER, BROKER

from .cluster import KubeError
from .context import Context, StackError
from .github import foreign_runners, online_base_runners, summary
from .report import one_line
from .settings import REPOSITORY
from .states import rollout_state

DOCKERFILE = "runner_image/Dockerfile"
VERSION = re.compile(r"^ARG RUNNER_VERSION=([0-9][0-9.]*)", re.MULTILINE)
X_Y_Z = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")


def _deployment_available(ctx: Context, check: str, name: str, namespace: str, hint: str) -> None:
    detail = ""

    def available() -> bool:
        nonlocal detail
        try:
            done, detail = rollout_state(ctx.cluster.get("deployment", name, namespace))
        except KubeError as error:
            done, detail = False, one_line(error.message)
        return done

    timeout = ctx.settings.rollout_timeout_seconds
    if ctx.wait(timeout, available):
        ctx.report.passed(check, f"deployment/{name} is available in namespace {namespace} ({detail})")
    else:
        ctx.report.failed(check, f"not available after {timeout}s: {detail}", hint)


def broker_deployment(ctx: Context) -> None:
    ns = ctx.system_namespace
    _deployment_available(
        ctx,
        "broker deployment",
        BROKER,
        ns,
        f"kubectl -n {ns} describe deploy/{BROKER}; kubectl -n {ns} logs deploy/{BROKER} says why it stopped "
        "(a runner credential it cannot read: runnerToken or the GitHub App keys; pulumi up)",
    )


def base_runner_deployment(ctx: Context) -> None:
    ns, system = ctx.namespace, ctx.system_namespace
    _deployment_available(
        ctx,
        "base runner deployment",
        BASE_RUNNER,
        ns,
        f"kubectl -n {ns} describe deploy/{BASE_RUNNER}; kubectl -n {ns} logs deploy/{BASE_RUNNER}; "
        f"kubectl -n {system} logs deploy/{BROKER} (image pull through Artifact Registry? "
        "gke-gcloud-auth-plugin and gcloud login?)",
    )


def _repository(ctx: Context) -> str:
    if ctx.settings.github_repository:
        return ctx.settings.github_repository
    try:
        return ctx.pulumi.config("githubRepository")
    except StackError:
        return ""


def base_runner_online(ctx: Context) -> None:
    check = "base runner online"
    ns, system = ctx.namespace, ctx.system_namespace
    if not ctx.settings.github_token:
        ctx.github_ok, ctx.github_reason = False, "GITHUB_TOKEN is not set"
        ctx.report.failed(
            check,
            "GITHUB_TOKEN is not set",
            'export a token that may list the repository\'s runners, e.g. GITHUB_TOKEN="$(gh auth token)"',
        )
        return
    ctx.repository = repo = _repository(ctx)
    if not REPOSITORY.fullmatch(repo):
        ctx.github_ok, ctx.github_reason = False, "no repository"
        ctx.report.failed(
            check,
            f"no repository: GITHUB_REPOSITORY unset and pulumi config githubRepository gives '{repo}'",
            "export GITHUB_REPOSITORY=owner/name",
        )
        return
    answer = None
    online: list[str] = []

    def listed() -> bool:
        nonlocal answer, online
        answer = ctx.github.runners(repo)
        if answer.status == 200:
            ctx.runners = answer.runners
            online = online_base_runners(ctx.runners)
            return bool(online)
        return answer.status in (401, 403, 404)  # waiting will not change these

    ctx.wait(ctx.settings.runner_timeout_seconds, listed)
    assert answer is not None
    if online:
        ctx.report.passed(check, f"{repo}: {', '.join(online)}")
    elif answer.status == 401:
        ctx.github_ok, ctx.github_reason = False, "GitHub refused the token"
        ctx.report.failed(
            check,
            "GitHub refused the token (401)",
            'GITHUB_TOKEN is expired or wrong; try GITHUB_TOKEN="$(gh auth token)"',
        )
    elif answer.status in (403, 404):
        ctx.github_ok, ctx.github_reason = False, f"GitHub answered {answer.status} for the runners"
        ctx.report.failed(
            check,
            f"GitHub answered {answer.status} for {repo}'s runners: {one_line(answer.message)}",
            f"the token needs admin access to {repo} (classic PAT: repo scope; fine-grained: "
            "Administration read), and the name must be right",
        )
    elif answer.status == 200:
        ctx.report.failed(
            check,
            f"no runner labelled {BASE_RUNNER} is online in {repo} ({summary(ctx.runners)})",
            f"kubectl -n {system} logs deploy/{BROKER} says why GitHub refused a runner (the runner "
            "PAT or GitHub App: pulumi config set --secret runnerToken ...); "
            f"kubectl -n {ns} logs deploy/{BASE_RUNNER}",
        )
    else:
        ctx.report.failed(
            check,
            f"no answer from {ctx.settings.github_api_url} (HTTP {answer.status or 'none'}: "
            f"{one_line(answer.error or answer.message)})",
            "check the network and GITHUB_API_URL",
        )


def foreign_runner_warnings(ctx: Context) -> None:
    """WARN for each runner in the list just read that this stack did not register but
    that could take its jobs."""
    if not ctx.github_ok:
        return
    repo = ctx.repository
    for runner, why in foreign_runners(ctx.runners):
        labels = ", ".join(label["name"] for label in runner.get("labels") or []) or "none"
        runner_id = runner.get("id", "?")
        ctx.report.warned(
            f"foreign runner ({runner.get('name')})",
            f"labels {labels} (id {runner_id}, {runner.get('status') or 'unknown'}); "
            f"this stack did not register it, {why}",
            f"such a runner (the tutorial's, say) can take this stack's jobs: remove it in {repo}'s "
            f"Settings > Actions > Runners, or gh api -X DELETE repos/{repo}/actions/runners/{runner_id}",
        )


def runner_version(ctx: Context) -> None:
    check = "runner version"
    dockerfile = ctx.project / DOCKERFILE
    try:
        found = VERSION.search(dockerfile.read_text())
    except OSError:
        found = None
    ours = found.group(1) if found else ""
    if not X_Y_Z.fullmatch(ours):
        ctx.report.warned(
            check,
            f"no ARG RUNNER_VERSION=x.y.z in {dockerfile}",
            "run the smoke test from the project folder to compare the image's runner with GitHub's latest release",
        )
        return
    answer = ctx.github.latest_runner_release()
    tag = answer.body.get("tag_name") if isinstance(answer.body, dict) else None
    latest = tag.removeprefix("v") if isinstance(tag, str) else ""
    if answer.status != 200 or not X_Y_Z.fullmatch(latest):
        error = f": {one_line(answer.error)}" if answer.error else ""
        ctx.report.warned(
            check,
            f"could not read GitHub's latest runner release (HTTP {answer.status or 'none'}"
            f"{error}); the image has {ours}",
            "compare it by hand with https://github.com/actions/runner/releases/latest",
        )
        return
    if tuple(map(int, ours.split("."))) < tuple(map(int, latest.split("."))):
        ctx.report.warned(
            check,
            f"the image has runner {ours}, GitHub's latest is {latest}: each GPU runner's cold "
            "start then downloads and installs the update before it takes a job",
            'bump ARG RUNNER_VERSION and ARG RUNNER_SHA256 (from the release\'s "SHA-256 Checksums": '
            f"https://github.com/actions/runner/releases/tag/v{latest}) in {DOCKERFILE}, then pulumi up",
        )
    else:
        ctx.report.passed(check, f"the image has runner {ours}, GitHub's latest release is {latest}")
