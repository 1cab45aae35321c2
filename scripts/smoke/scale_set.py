"""The checks of a scale-set stack: GitHub's Actions Runner Controller (ARC) and its scale set.

ARC's controller (Helm release `arc`) runs in `<namespace>-system` and starts the scale
set's listener there; the scale set (an AutoscalingRunnerSet named `<scaleSetName>`)
lives in the runner namespace, where ARC makes one runner pod per job. The smoke test
cannot start a job itself (that takes a workflow run), so it reports the runner pods ARC
made most recently, their start latency from Kubernetes' own timestamps and the GPU
inside a running one, and says how to start one when there is none.

The names and labels are ARC's own, as of gha-runner-scale-set-0.14.2: the controller
chart's `fullname` (`<release>-gha-rs-controller`), and the labels ARC's resourcebuilder.go
puts on the listener pod (copied from its AutoscalingListener) and on each runner pod
(copied from its EphemeralRunner): `actions.github.com/scale-set-name` and
`app.kubernetes.io/component`. The AutoscalingRunnerSet carries the scale set's id in
GitHub in its `runner-scale-set-id` annotation once the controller has registered it.
"""

from __future__ import annotations

import time

from .checks import _deployment_available, _repository
from .cluster import KubeError
from .cold_start import NOT_SEEN, epoch
from .context import Context
from .report import one_line
from .settings import REPOSITORY
from .states import latest, phase, waiting_reason

CONTROLLER_RELEASE = "arc"
CONTROLLER_DEPLOYMENT = f"{CONTROLLER_RELEASE}-gha-rs-controller"
SCALE_SET_KIND = "autoscalingrunnersets.actions.github.com"
SCALE_SET_NAME_LABEL = "actions.github.com/scale-set-name"
COMPONENT_LABEL = "app.kubernetes.io/component"
LISTENER_COMPONENT = "runner-scale-set-listener"
SCALE_SET_ID_ANNOTATION = "runner-scale-set-id"
RUNNER_CONTAINER = "runner"
RECENT_RUNNERS = 5
GPU_LINE = "GPU 0:"
WORKFLOW_FILE = "gpu-smoke.yml"


def _controller_logs(ctx: Context) -> str:
    return f"kubectl -n {ctx.system_namespace} logs deploy/{CONTROLLER_DEPLOYMENT}"


def arc_controller(ctx: Context) -> None:
    ns = ctx.system_namespace
    _deployment_available(
        ctx,
        "ARC controller",
        CONTROLLER_DEPLOYMENT,
        ns,
        f"kubectl -n {ns} describe deploy/{CONTROLLER_DEPLOYMENT}; helm -n {ns} status {CONTROLLER_RELEASE}; "
        "pulumi up installs it",
    )


def scale_set(ctx: Context) -> None:
    """The AutoscalingRunnerSet exists, and ARC has registered it with GitHub."""
    check, ns, name = "scale set", ctx.namespace, ctx.scale_set_name
    try:
        found = ctx.cluster.get(SCALE_SET_KIND, name, ns)
    except KubeError as error:
        ctx.report.failed(
            check,
            f"could not read {SCALE_SET_KIND} {name} in namespace {ns}: {one_line(error.message)}",
            f"kubectl -n {ns} get {SCALE_SET_KIND} must work with your own rights (e.g. roles/container.admin)",
        )
        return
    if found is None:
        ctx.report.failed(
            check,
            f"AutoscalingRunnerSet {name} not found in namespace {ns}",
            f"helm -n {ns} status {name}; pulumi up installs it (after ARC's controller, which brings its CRD)",
        )
        return
    annotations = (found.get("metadata") or {}).get("annotations") or {}
    status = found.get("status") or {}
    scale_set_id = str(annotations.get(SCALE_SET_ID_ANNOTATION) or "")
    if not scale_set_id.isdigit() or int(scale_set_id) <= 0:
        ctx.report.failed(
            check,
            f"AutoscalingRunnerSet {name} in namespace {ns} is not registered with GitHub "
            f"(no {SCALE_SET_ID_ANNOTATION} annotation)",
            f"{_controller_logs(ctx)} says why GitHub refused it: the credential (runnerToken or the GitHub App keys, "
            "Secret github-config), or githubRepository/githubOrganization",
        )
        return
    if status.get("phase") == "Outdated":
        ctx.report.failed(
            check,
            f"ARC marked AutoscalingRunnerSet {name} Outdated: GitHub no longer accepts the image's runner version",
            "bump ARG RUNNER_VERSION and ARG RUNNER_SHA256 in runner_image/Dockerfile, then pulumi up",
        )
        return
    counts = ", ".join(
        f"{status.get(key) or 0} {word}"
        for key, word in (("currentRunners", "runner(s)"), ("runningEphemeralRunners", "running"))
    )
    ctx.report.passed(
        check, f"AutoscalingRunnerSet {name} in namespace {ns}, scale set id {scale_set_id} in GitHub ({counts})"
    )


def _up(pod: dict | None) -> bool:
    """Running, every container ready: a crash-looping pod stays in phase Running."""
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return phase(pod) == "Running" and bool(statuses) and all(s.get("ready") for s in statuses)


def listener(ctx: Context) -> None:
    """The scale set's listener pod runs in the controller's namespace: it takes the jobs from GitHub."""
    check, system, name = "scale set listener", ctx.system_namespace, ctx.scale_set_name
    selector = f"{SCALE_SET_NAME_LABEL}={name},{COMPONENT_LABEL}={LISTENER_COMPONENT}"
    pod: dict | None = None
    problem = ""

    def running() -> bool:
        nonlocal pod, problem
        try:
            pod = latest(ctx.cluster.list("pods", system, labels=selector))
        except KubeError as error:
            pod, problem = None, one_line(error.message)
            return False
        problem = "no listener pod" if pod is None else waiting_reason(pod)
        return _up(pod)

    timeout = ctx.settings.rollout_timeout_seconds
    if ctx.wait(timeout, running):
        pod_name = (pod.get("metadata") or {}).get("name") if pod else "?"
        ctx.report.passed(check, f"pod {pod_name} is running in namespace {system}")
    else:
        ctx.report.failed(
            check,
            f"not running after {timeout}s ({selector} in namespace {system}): {problem}",
            f"ARC's controller starts it once the scale set is registered: {_controller_logs(ctx)}; "
            f"kubectl -n {system} get autoscalinglisteners; kubectl -n {system} logs -l {selector}",
        )


def scale_set_in_github(ctx: Context) -> None:
    """GitHub answers for the repository's runners; ARC's are listed only while they have a job
    (or wait as gpuWarmRunners), so none listed is fine."""
    check, name = "scale set in GitHub", ctx.scale_set_name
    if not ctx.settings.github_token:
        ctx.github_ok, ctx.github_reason = False, "GITHUB_TOKEN is not set"
        ctx.report.skipped(check, "GITHUB_TOKEN is not set")
        return
    ctx.repository = repo = _repository(ctx)
    if not REPOSITORY.fullmatch(repo):
        ctx.github_ok, ctx.github_reason = False, "no repository"
        ctx.report.skipped(check, "no repository: GITHUB_REPOSITORY unset and pulumi config githubRepository empty")
        return
    answer = ctx.github.runners(repo)
    if answer.status != 200:
        ctx.github_ok, ctx.github_reason = False, f"GitHub answered {answer.status or 'nothing'} for the runners"
        ctx.report.warned(
            check,
            f"could not list {repo}'s runners (HTTP {answer.status or 'none'}: "
            f"{one_line(answer.error or answer.message)})",
            f"the token needs admin access to {repo} (classic PAT: repo scope; fine-grained: Administration read); "
            "with githubOrganization, the scale set's runners are the organization's and are not listed here",
        )
        return
    ctx.runners = answer.runners
    ours = [r for r in ctx.runners if name in (label.get("name") for label in r.get("labels") or [])]
    listed = ", ".join(f"{r.get('name')} {r.get('status')}" for r in ours)
    ctx.report.passed(
        check,
        f"{len(ours)} runner(s) of scale set {name} in {repo}: {listed}"
        if ours
        else f"no runner of scale set {name} listed in {repo}: ARC registers one for each job, for that job only",
    )


def _created(pod: dict) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _scheduled(pod: dict) -> int | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            return epoch(condition.get("lastTransitionTime"))
    return None


def _started(pod: dict) -> int | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    runner = next((s for s in statuses if s.get("name") == RUNNER_CONTAINER), statuses[0] if statuses else {})
    state = runner.get("state") or {}
    return epoch((state.get("running") or {}).get("startedAt") or (state.get("terminated") or {}).get("startedAt"))


def _since(t: int | None, t0: int | None) -> str:
    return NOT_SEEN if t is None or t0 is None else str(t - t0)


def start_latency_table(pods: list[dict]) -> list[str]:
    """The runner pods' start, newest first: when each was created, and how many seconds later it
    was scheduled (a GPU node may have had to come up first) and its runner container started."""
    if not pods:
        return []
    width = max(3, *(len(str((p.get("metadata") or {}).get("name") or "")) for p in pods))
    lines = [
        "",
        "Scale set runner start, seconds after its pod was created:",
        f"{'pod':<{width}}  {'created (UTC)':<20}  {'phase':<9}  {'scheduled':>9}  {'started':>7}  node",
    ]
    for pod in pods:
        t0 = epoch(_created(pod))
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)) if t0 is not None else NOT_SEEN
        name = str((pod.get("metadata") or {}).get("name") or "")
        node = str((pod.get("spec") or {}).get("nodeName") or NOT_SEEN)
        lines.append(
            f"{name:<{width}}  {created:<20}  {phase(pod):<9}  {_since(_scheduled(pod), t0):>9}  "
            f"{_since(_started(pod), t0):>7}  {node}"
        )
    lines.append(
        "-: not yet, or not seen. The scale set's dashboard has ARC's own job start latency (assigned to started)."
    )
    return lines


def trigger_hint(ctx: Context) -> list[str]:
    """How to make ARC start a runner: a one-job workflow on the scale set, started by hand."""
    repo = ctx.repository or "<owner>/<name>"
    return [
        f"To start one, add .github/workflows/{WORKFLOW_FILE} to {repo}:",
        "",
        "    name: gpu-smoke",
        "    on: workflow_dispatch",
        "    permissions:",
        "      contents: read",
        "    jobs:",
        "      gpu:",
        f"        runs-on: {ctx.scale_set_name}",
        "        timeout-minutes: 30",
        "        steps:",
        "          - run: nvidia-smi -L",
        "          - run: sleep 300   # time for the smoke test to look at this runner",
        "",
        f"then run it (gh workflow run {WORKFLOW_FILE} -R {repo}) and this smoke test again while its job runs.",
    ]


def recent_runners(ctx: Context) -> None:
    """The runner pods ARC made for this scale set, newest first, and their start latency."""
    check, ns, name = "scale set runners", ctx.namespace, ctx.scale_set_name
    try:
        pods = ctx.cluster.list("pods", ns, labels=f"{SCALE_SET_NAME_LABEL}={name}")
    except KubeError as error:
        ctx.report.failed(
            check,
            f"could not list the runner pods in namespace {ns}: {one_line(error.message)}",
            f"kubectl -n {ns} get pods -l {SCALE_SET_NAME_LABEL}={name} must work with your own rights",
        )
        return
    pods.sort(key=_created, reverse=True)
    ctx.scale_set_pods = pods[:RECENT_RUNNERS]
    if not ctx.scale_set_pods:
        ctx.report.skipped(
            check,
            f"no runner pod of scale set {name} in namespace {ns}: no job runs now (ARC removes a runner's pod "
            "once its job ends)",
        )
        for line in trigger_hint(ctx):
            ctx.report.say(line)
        return
    names = " ".join(str((p.get("metadata") or {}).get("name")) for p in ctx.scale_set_pods)
    ctx.report.passed(check, f"{len(pods)} runner pod(s) of scale set {name} in namespace {ns}: {names}")
    for line in start_latency_table(ctx.scale_set_pods):
        ctx.report.say(line)


def gpu_in_runner(ctx: Context) -> None:
    """`nvidia-smi -L` inside the newest running runner pod (kubectl exec, with your own rights)."""
    check = "GPU in a scale set runner"
    running = [p for p in ctx.scale_set_pods if phase(p) == "Running"]
    if not running:
        if ctx.scale_set_pods:
            ctx.report.skipped(check, "no runner pod is running now")
        return
    pod_name = str(running[0]["metadata"]["name"])
    ok, output = ctx.cluster.exec(ctx.namespace, pod_name, RUNNER_CONTAINER, ["nvidia-smi", "-L"])
    line = next((line for line in output.splitlines() if line.startswith(GPU_LINE)), "") if ok else ""
    if line:
        ctx.report.passed(check, f"{pod_name}: {line}")
    else:
        ctx.report.failed(
            check,
            f"nvidia-smi -L in {pod_name} printed no '{GPU_LINE}' line: {one_line(output)}",
            "the node has no working driver or device plugin: check gpuDriverVersion, and kubectl -n kube-system "
            "get pods -l k8s-app=nvidia-gpu-device-plugin",
        )
