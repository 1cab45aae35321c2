"""CI's rights in the cluster, asked as CI: `kubectl auth can-i --as <CI's identity>`.

CI's identity is the first subject of RoleBinding ci-runner-launcher in the runner
namespace (a User: the Google service account CI signs in as; or a ServiceAccount). It
must read what `gpu-runner` watches, and write nothing: the broker alone makes and
removes runners. The answers come from the cluster's authorizers, GKE's IAM among
them, so a project-wide IAM role that lets CI write shows here too.
"""

from __future__ import annotations

from runner_contract import CI_ROLE

from .cluster import KubeError
from .context import Context
from .report import one_line

READ_CHECK = "CI reads"
WRITE_CHECK = "CI read-only"

READ = ("get", "list", "watch")
# (verb, resource, where): what `gpu-runner` needs, in the runner namespace.
MUST_ALLOW = tuple((verb, resource) for resource in ("pods", "events", "jobs.batch") for verb in READ) + (
    ("get", "pods/log"),
)
# What would let CI start its own runner, reach a runner or read a credential; "system"
# stands for the broker's namespace, where the runner credential lives.
MUST_REFUSE = (
    ("create", "jobs.batch", "runner"),
    ("delete", "jobs.batch", "runner"),
    ("create", "pods", "runner"),
    ("create", "pods/exec", "runner"),
    ("get", "secrets", "runner"),
    ("get", "secrets", "system"),
)


def identity(subject: dict, namespace: str) -> tuple[str, str] | None:
    """CI's identity as `kubectl --as` spells it, and its kind; None when it cannot be impersonated."""
    kind, name = subject.get("kind"), subject.get("name")
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        return None
    if kind == "ServiceAccount":
        return f"system:serviceaccount:{subject.get('namespace') or namespace}:{name}", kind
    if kind == "User":
        return name, kind
    return None


def impersonation_hint(who: str, kind: str) -> str:
    resource = "serviceaccounts" if kind == "ServiceAccount" else "users"
    return (
        f"the smoke test asks the cluster what CI may do as CI, so you need the right to impersonate {who}: "
        "e.g. roles/container.admin on the cluster's project (gcloud projects add-iam-policy-binding <project> "
        f"--member=user:<you> --role=roles/container.admin), or a ClusterRole with verb impersonate on {resource} "
        "bound to you"
    )


def _ci_identity(ctx: Context) -> tuple[str, str] | None:
    """CI's identity from its RoleBinding; None after a FAIL."""
    check, ns, report = "CI identity", ctx.namespace, ctx.report
    try:
        binding = ctx.cluster.get("rolebinding", CI_ROLE, ns)
    except KubeError as error:
        report.failed(
            check,
            f"could not read RoleBinding {CI_ROLE} in namespace {ns}: {one_line(error.message)}",
            f"kubectl -n {ns} get rolebinding {CI_ROLE} must work with your own rights (gcloud auth login; "
            "e.g. roles/container.admin); if the RoleBinding is missing, run pulumi up",
        )
        return None
    if binding is None:
        report.failed(
            check,
            f"RoleBinding {CI_ROLE} not found in namespace {ns}",
            "the RoleBinding that gives CI its rights is missing: run pulumi up",
        )
        return None
    subjects = binding.get("subjects") or []
    subject = subjects[0] if subjects and isinstance(subjects[0], dict) else None
    if subject is None or not subject.get("kind") or not subject.get("name"):
        report.failed(
            check,
            f"RoleBinding {CI_ROLE} in namespace {ns} names no subject",
            "its first subject must be the identity CI signs in as: run pulumi up",
        )
        return None
    found = identity(subject, ns)
    if found is None:
        report.failed(
            check,
            f"the first subject of RoleBinding {CI_ROLE} is {subject.get('kind')} "
            f"{subject.get('name')}: only a ServiceAccount or a User can be impersonated",
            "make the identity CI signs in as the RoleBinding's first subject: run pulumi up",
        )
    return found


def ci_access(ctx: Context) -> None:
    found = _ci_identity(ctx)
    if found is None:
        return
    who, kind = found
    ns, system = ctx.namespace, ctx.system_namespace
    where = {"runner": ns, "system": system}
    try:
        missing = [
            f"{verb} {resource}" for verb, resource in MUST_ALLOW if not ctx.cluster.can_i(verb, resource, ns, who)
        ]
        allowed = [
            f"{verb} {resource} in {where[place]}"
            for verb, resource, place in MUST_REFUSE
            if ctx.cluster.can_i(verb, resource, where[place], who)
        ]
    except KubeError as error:
        if error.reason == "Impersonation":
            ctx.report.failed(
                "CI identity",
                f"you may not act as {who} ({kind} of RoleBinding {CI_ROLE}): {one_line(error.message)}",
                impersonation_hint(who, kind),
            )
        else:
            ctx.report.failed(
                "CI identity",
                f"kubectl auth can-i --as={who} failed: {one_line(error.message)}",
                f"kubectl -n {ns} auth can-i list pods --as={who} must answer yes or no",
            )
        return
    as_ci = f"{who} (CI: the {kind} of RoleBinding {CI_ROLE})"
    if missing:
        ctx.report.failed(
            READ_CHECK,
            f"{who} may not {', '.join(missing)} in namespace {ns}",
            f"CI's Role {CI_ROLE} must allow get, list and watch on pods, pods/log, events and jobs, as "
            "gpu-runner watches its runners: run pulumi up",
        )
    else:
        ctx.report.passed(
            READ_CHECK, f"{as_ci} may get, list and watch pods, events and jobs, and read pod logs, in namespace {ns}"
        )
    if allowed:
        ctx.report.failed(
            WRITE_CHECK,
            f"{who} may {', '.join(allowed)}: CI could start its own runners or read what it must not",
            f"CI must only read: its Role {CI_ROLE} (pulumi up restores it) must be its only grant; look "
            f"for other RoleBindings or ClusterRoleBindings naming {who}, and for IAM roles on the "
            "project that give it more (roles/container.developer or wider apply in every namespace)",
        )
    else:
        ctx.report.passed(
            WRITE_CHECK,
            f"{who} may not create or delete jobs, create pods or exec into them in {ns}, "
            f"nor read secrets in {ns} or {system}",
        )
