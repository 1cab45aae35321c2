"""Real GPU runners, made as the broker makes them, with the operator's rights.

The steps, in order, each a function of the `Context` (a step with nothing to do does
nothing): make the Jobs from ConfigMap gpu-runner-template; wait until their runners are
online in GitHub with exactly their run's label; read what the cold-start table needs;
look for the GPU inside each; delete the Jobs; wait until their runners leave GitHub; print
the cold start. `delete_leftovers` runs on the way out, whatever happened.
"""

from __future__ import annotations

from runner_contract import BROKER, JOB_NAME_LABEL, SMOKE_TEST_LABEL, TEMPLATE_CONFIGMAP, TEMPLATE_KEY

from .cluster import KubeError
from .cold_start import cold_start_row, cold_start_table
from .context import Context, GpuRunner
from .github import gpu_runner_view, status_of
from .report import one_line
from .states import (
    autoscaler_note,
    is_image_problem,
    is_scheduling_problem,
    latest,
    phase,
    runner_container,
    waiting_reason,
)
from .template import TemplateError, images, parse_template, render_job

JOBS_CHECK = "GPU runner jobs"
ATTEMPT = 1
GPU_LINE = "GPU 0:"


def online_check(runner: GpuRunner) -> str:
    return f"GPU runner online ({runner.job})"


def gpu_check(runner: GpuRunner) -> str:
    return f"GPU ({runner.job})"


def removed_check(runner: GpuRunner) -> str:
    return f"GPU runner removed ({runner.job})"


def _read_template(ctx: Context) -> dict | None:
    """The Job template from the cluster's ConfigMap; None after a FAIL."""
    check, ns, report = "GPU runner template", ctx.namespace, ctx.report
    try:
        config_map = ctx.cluster.get("configmap", TEMPLATE_CONFIGMAP, ns)
    except KubeError as error:
        report.failed(
            check,
            f"could not read ConfigMap {TEMPLATE_CONFIGMAP} in namespace {ns}: {one_line(error.message)}",
            f"the smoke test makes GPU runners as the broker does, with your own rights: you need to read "
            f"ConfigMaps and create Jobs in {ns} (e.g. roles/container.admin; gcloud auth login)",
        )
        return None
    if config_map is None:
        report.failed(check, f"ConfigMap {TEMPLATE_CONFIGMAP} not found in namespace {ns}", "run pulumi up")
        return None
    text = (config_map.get("data") or {}).get(TEMPLATE_KEY)
    if not text:
        report.failed(
            check, f"ConfigMap {TEMPLATE_CONFIGMAP} in namespace {ns} has no key {TEMPLATE_KEY}", "run pulumi up"
        )
        return None
    try:
        return parse_template(text)
    except TemplateError as error:
        report.failed(
            check,
            f"key {TEMPLATE_KEY} of ConfigMap {TEMPLATE_CONFIGMAP} {error}",
            f"pulumi up writes it; kubectl -n {ns} get configmap {TEMPLATE_CONFIGMAP} -o yaml shows it",
        )
        return None


def make_gpu_runners(ctx: Context) -> None:
    """SMOKE_GPU_RUNNERS Jobs (run ids SMOKE_RUN_ID, +1, ...; attempt 1), all created before the first poll."""
    template = _read_template(ctx)
    if template is None:
        return  # no Job was started: nothing else to check
    ns = ctx.namespace
    for i in range(ctx.settings.gpu_runners):
        run_id = ctx.settings.run_id + i
        manifest = render_job(template, run_id, ATTEMPT, ns)
        runner = GpuRunner(job=manifest["metadata"]["name"], run_id=run_id, manifest=manifest)
        ctx.gpu.runners.append(runner)  # before it is created: whatever happens, it is deleted
        try:
            ctx.cluster.create(manifest)
        except KubeError as error:
            runner.state = "absent"
            ctx.report.failed(
                JOBS_CHECK,
                f"kubectl create {runner.job} was refused: {one_line(error.message)}",
                "the template no longer matches the cluster (pulumi up), the namespace's Pod Security "
                f"(restricted) or GPU quota refused it, or you may not create Jobs in {ns}; "
                f"kubectl -n {ns} get events",
            )
    created = [r.job for r in ctx.gpu.created]
    if created:
        ctx.report.passed(
            JOBS_CHECK,
            f"created {' '.join(created)} in namespace {ns} from ConfigMap "
            f"{TEMPLATE_CONFIGMAP}, as the broker makes them, with your own rights",
        )


def _fetch_pod(ctx: Context, runner: GpuRunner) -> None:
    try:
        pods = ctx.cluster.list("pods", ctx.namespace, labels=f"{JOB_NAME_LABEL}={runner.job}")
    except KubeError:
        pods = []
    runner.pod = latest(pods)
    runner.phase = phase(runner.pod)


def _pod_events(ctx: Context, runner: GpuRunner) -> list[dict]:
    if not runner.pod_name:
        return []
    try:
        return ctx.cluster.list("events", ctx.namespace, fields=f"involvedObject.name={runner.pod_name}")
    except KubeError:
        return []


def _job_gone(ctx: Context, runner: GpuRunner) -> bool:
    try:
        return ctx.cluster.get("job", runner.job, ctx.namespace) is None
    except KubeError:
        return False


def _pod_hint(ctx: Context, runner: GpuRunner, reason: str) -> str:
    ns = ctx.namespace
    if reason == "no pod yet":
        return (
            f"the Job made no pod: the namespace's GPU quota (gpuMaxNodes x gpuCount) may be spent by other "
            f"runners; kubectl -n {ns} describe job {runner.job}"
        )
    if is_image_problem(reason):
        image = (images(runner.manifest) or ["the GPU runner image"])[0]
        return (
            f"the GPU node cannot pull {image} from the stack's Artifact Registry repository: check that the last "
            "pulumi up pushed it (pulumi stack output gpuRunnerImage) and that the nodes' service account may "
            "still read the repository; pulumi up restores both"
        )
    if is_scheduling_problem(reason):
        return (
            "the GPU pool did not give a node: check the GPU quota of the region (NVIDIA_*_GPUS and "
            "GPUS_ALL_REGIONS), that the zone offers gpuType (gcloud compute accelerator-types list "
            f"--filter=zone:<zone>), and kubectl -n {ns} get events --field-selector "
            f"involvedObject.name={runner.pod_name or '<pod>'}"
        )
    return (
        f"kubectl -n {ns} logs {runner.pod_name or 'job/' + runner.job} says what the runner did; "
        f"kubectl -n {ctx.system_namespace} logs deploy/{BROKER} says why it refused the pod or why GitHub "
        "refused a runner (the runner PAT or GitHub App)"
    )


def _poll(ctx: Context) -> None:
    """One poll: every waiting runner's pod, then GitHub's runner list once."""
    waiting = [r for r in ctx.gpu.runners if r.state == "waiting"]
    for runner in waiting:
        _fetch_pod(ctx, runner)
    answer = ctx.github.runners(ctx.repository) if ctx.github_ok else None
    if answer is not None:
        ctx.gpu.last_answer = answer
    now = int(ctx.clock.time())
    for runner in waiting:
        if answer is not None and answer.status == 200:
            listed, problem = gpu_runner_view(answer.runners, runner.job, runner.label)
            if listed is not None:
                runner.seen = True
                if problem:
                    runner.state = "failed"
                    ctx.report.failed(
                        online_check(runner),
                        problem,
                        f"the broker alone chooses a runner's labels ({runner.label} for this GPU "
                        f"runner): is kubectl -n {ctx.system_namespace} get deploy/{BROKER} running "
                        f"this project's image? Is another runner named {runner.job} registered in "
                        f"{ctx.repository}?",
                    )
                    continue
                if listed == "online":
                    runner.state, runner.online_at = "online", now
                    ctx.report.passed(
                        online_check(runner),
                        f"online in {ctx.repository} with label {runner.label}, on node {runner.node or '?'}",
                    )
                    continue
        elif not ctx.github_ok and runner.phase == "Running":
            runner.state = "up"
            continue
        if runner.phase in ("Succeeded", "Failed"):
            runner.state = "failed"
            ctx.report.failed(
                online_check(runner),
                f"its pod ended ({runner.phase}: {waiting_reason(runner.pod)}) before its runner was online",
                _pod_hint(ctx, runner, "ended"),
            )
        elif runner.phase == "none" and _job_gone(ctx, runner):
            runner.state, runner.deleted = "failed", True
            ctx.report.failed(
                online_check(runner),
                "its Job was deleted before its runner was online, not by the smoke test",
                f"the broker's sweep deletes GPU runner Jobs of runs GitHub does not have, unless they "
                f"carry the label {SMOKE_TEST_LABEL}: kubectl -n {ctx.system_namespace} logs "
                f"deploy/{BROKER} says what it deleted and why",
            )


def _fail_not_online(ctx: Context, runner: GpuRunner) -> None:
    reason = waiting_reason(runner.pod)
    if runner.phase == "Pending" and not is_image_problem(reason):
        note = autoscaler_note(_pod_events(ctx, runner))
        if note:
            reason = f"{reason}; autoscaler: {note}"
    answer, repo = ctx.gpu.last_answer, ctx.repository
    if not ctx.github_ok:
        where = f"its pod is not running ({reason})"
    elif answer is None or answer.status != 200:
        status = answer.status if answer else 0
        error = one_line(answer.error or answer.message) if answer else ""
        where = f"no answer from GitHub's runner list (HTTP {status or 'none'}: {error}); pod: {reason}"
    elif runner.phase == "Running":
        where = (
            f"registered in {repo} but {status_of(answer.runners, runner.job)}"
            if runner.seen
            else f"its pod runs, but no runner named {runner.job} is registered in {repo}"
        )
        reason = "running"
    else:
        where = reason
    ctx.report.failed(
        online_check(runner),
        f"not online after {ctx.settings.gpu_timeout_seconds}s: {where}",
        _pod_hint(ctx, runner, reason),
    )


def wait_online(ctx: Context) -> None:
    waiting = [r for r in ctx.gpu.runners if r.state == "waiting"]
    if not waiting:
        return
    timeout = ctx.settings.gpu_timeout_seconds
    ctx.report.say(
        f"Waiting up to {timeout}s for {len(waiting)} GPU runner(s); the GPU pool may have to scale up from zero first."
    )

    def all_decided() -> bool:
        _poll(ctx)
        return not any(r.state == "waiting" for r in ctx.gpu.runners)

    if not ctx.wait(timeout, all_decided):
        for runner in ctx.gpu.runners:
            if runner.state == "waiting":
                runner.state = "failed"
                _fail_not_online(ctx, runner)
    for runner in ctx.gpu.runners:
        if runner.state == "up":
            ctx.report.skipped(online_check(runner), f"{ctx.github_reason}; its pod runs on node {runner.node or '?'}")


def collect_timings(ctx: Context) -> None:
    """What the cold-start table needs, read before the Jobs are deleted."""
    for runner in ctx.gpu.created:
        _fetch_pod(ctx, runner)
        try:
            runner.job_object = ctx.cluster.get("job", runner.job, ctx.namespace)
        except KubeError:
            runner.job_object = None
        runner.events = _pod_events(ctx, runner)
        if runner.node:
            try:
                runner.node_object = ctx.cluster.get("node", runner.node)
            except KubeError:
                runner.node_object = None


def gpus_visible(ctx: Context) -> None:
    """`nvidia-smi -L` inside each runner's container (kubectl exec, with your own rights)."""
    for runner in ctx.gpu.created:
        if runner.phase != "Running" or runner.pod is None:
            ctx.report.skipped(gpu_check(runner), "its pod is not running")
            continue
        ok, output = ctx.cluster.exec(
            ctx.namespace, runner.pod_name, runner_container(runner.pod), ["nvidia-smi", "-L"]
        )
        line = next((line for line in output.splitlines() if line.startswith(GPU_LINE)), "") if ok else ""
        if line:
            ctx.report.passed(gpu_check(runner), line)
        else:
            ctx.report.failed(
                gpu_check(runner),
                f"nvidia-smi -L in {runner.pod_name} printed no '{GPU_LINE}' line: {one_line(output)}",
                "the node has no working driver or device plugin: check gpuDriverVersion, and kubectl "
                "-n kube-system get pods -l k8s-app=nvidia-gpu-device-plugin",
            )


def delete_gpu_runners(ctx: Context) -> None:
    names = [r.job for r in ctx.gpu.created]
    if not names:
        return
    ctx.gpu.deleted_at = int(ctx.clock.time())
    try:
        ctx.cluster.delete_jobs(names, ctx.namespace)
    except KubeError as error:
        ctx.report.failed(
            "GPU runner jobs deleted",
            f"kubectl delete job {' '.join(names)} failed: {one_line(error.message)}",
            "the smoke test tries again on its way out; else delete them by hand: "
            f"kubectl -n {ctx.namespace} delete job {' '.join(names)}",
        )
        return
    for runner in ctx.gpu.created:
        runner.deleted = True


def wait_deregistered(ctx: Context) -> None:
    """Each runner leaves GitHub once its Job is deleted: the broker removes it."""
    created = ctx.gpu.created
    if not ctx.github_ok:
        for runner in created:
            ctx.report.skipped(removed_check(runner), ctx.github_reason)
        return
    # Only runners that were seen, whose Jobs were deleted, can be seen leaving.
    leaving = [r for r in created if r.seen and r.deleted]
    answer = None

    def all_gone() -> bool:
        nonlocal answer
        answer = ctx.github.runners(ctx.repository)
        now = int(ctx.clock.time())
        for runner in leaving:
            listed = answer.status == 200 and status_of(answer.runners, runner.job) != "not listed"
            if runner.gone_at is None and answer.status == 200 and not listed:
                runner.gone_at = now
                ctx.report.passed(
                    removed_check(runner),
                    f"left {ctx.repository} {now - (ctx.gpu.deleted_at or now)}s after its Job was deleted",
                )
        return all(r.gone_at is not None for r in leaving)

    timeout = ctx.settings.deregister_timeout_seconds
    if leaving and not ctx.wait(timeout, all_gone):
        for runner in leaving:
            if runner.gone_at is None:
                where = (
                    status_of(answer.runners, runner.job) if answer.status == 200 else f"HTTP {answer.status or 'none'}"
                )
                ctx.report.failed(
                    removed_check(runner),
                    f"still registered in {ctx.repository} {timeout}s after its Job was deleted ({where})",
                    f"the broker removes a runner once its pod is gone, and sweeps every 30 s: kubectl "
                    f"-n {ctx.system_namespace} logs deploy/{BROKER}; remove it by hand in the "
                    "repository's Settings > Actions > Runners",
                )
    for runner in created:
        if not runner.seen:
            ctx.report.skipped(removed_check(runner), "its runner never registered")


def print_cold_start(ctx: Context) -> None:
    rows = [cold_start_row(r.job, r.job_object, r.pod, r.events, r.node_object, r.online_at) for r in ctx.gpu.created]
    for line in cold_start_table(rows, ctx.settings.poll_seconds):
        ctx.report.say(line)


def delete_leftovers(ctx: Context) -> str | None:
    """On the way out: delete every Job the smoke test made and did not delete yet, so that
    no test runner keeps a GPU node. A message when that failed too."""
    leftover = [r.job for r in ctx.gpu.runners if not r.deleted]
    if not leftover:
        return None
    try:
        ctx.cluster.delete_jobs(leftover, ctx.namespace)
    except KubeError as error:
        return (
            f"could not delete job(s) {' '.join(leftover)} in namespace {ctx.namespace} "
            f"({one_line(error.message)}); delete them by hand"
        )
    for runner in ctx.gpu.runners:
        runner.deleted = True
    return None
