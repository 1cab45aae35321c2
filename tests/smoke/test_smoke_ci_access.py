"""CI's rights, asked as CI (`kubectl auth can-i --as`): it reads what gpu-runner watches
and writes nothing. The GPU runners are made with the operator's rights whatever CI may do."""

import pytest
from smoke_doubles import CI_ACCOUNT, CI_GOOGLE, CI_READS, NAMESPACE, ci_binding
from smoke_harness import JOB, smoke

from scripts.smoke.ci_access import MUST_ALLOW, MUST_REFUSE

SYSTEM = f"{NAMESPACE}-system"


def can_i_calls(run) -> list[tuple]:
    return [c.args for c in run.cluster.calls_to("can_i")]


def test_ci_that_only_reads_passes_both_checks_as_the_user_of_its_rolebinding():
    run = smoke()

    assert run.returncode == 0, run.output
    assert run.line("PASS  CI reads") == (
        f"PASS  CI reads: {CI_GOOGLE} (CI: the User of RoleBinding ci-runner-launcher) may get, list and watch pods, "
        f"events and jobs, and read pod logs, in namespace {NAMESPACE}"
    )
    assert run.line("PASS  CI read-only") == (
        f"PASS  CI read-only: {CI_GOOGLE} may not create or delete jobs, create pods or exec into them in "
        f"{NAMESPACE}, nor read secrets in {NAMESPACE} or {SYSTEM}"
    )
    asked = can_i_calls(run)
    assert {a[3] for a in asked} == {CI_GOOGLE}  # every question is asked as CI's identity
    assert {a[:3] for a in asked} == CI_READS | {
        ("create", "jobs.batch", NAMESPACE),
        ("delete", "jobs.batch", NAMESPACE),
        ("create", "pods", NAMESPACE),
        ("create", "pods/exec", NAMESPACE),
        ("get", "secrets", NAMESPACE),
        ("get", "secrets", SYSTEM),
    }
    assert len(asked) == len(MUST_ALLOW) + len(MUST_REFUSE)


def test_the_gpu_runner_jobs_are_made_and_deleted_with_the_operators_rights_not_as_ci():
    run = smoke()

    order = [c.what for c in run.cluster.calls]
    # Impersonation is only ever used to ask; the Jobs come after CI's checks, from the operator.
    assert max(i for i, what in enumerate(order) if what == "can_i") < order.index("create")
    assert ("rolebinding", "ci-runner-launcher", NAMESPACE) in [c.args for c in run.cluster.calls_to("get")]
    assert run.cluster.created and JOB in run.cluster.deleted


def test_a_service_account_subject_is_asked_about_as_kubectl_spells_it():
    def service_account(cluster):
        cluster.binding, cluster.ci_identity = ci_binding("ServiceAccount"), CI_ACCOUNT

    run = smoke(change=service_account)

    assert run.returncode == 0, run.output
    assert f"{CI_ACCOUNT} (CI: the ServiceAccount of RoleBinding ci-runner-launcher)" in run.line("PASS  CI reads")
    assert {a[3] for a in can_i_calls(run)} == {f"system:serviceaccount:{NAMESPACE}:ci-runner-launcher"}


def test_ci_that_may_write_fails_naming_each_right_it_should_not_have():
    def writer(cluster):
        cluster.ci_granted |= {
            ("create", "jobs.batch", NAMESPACE),
            ("delete", "jobs.batch", NAMESPACE),
            ("get", "secrets", SYSTEM),
        }

    run = smoke(change=writer)

    assert run.returncode == 1
    failure = run.line("FAIL  CI read-only")
    assert (
        f"{CI_GOOGLE} may create jobs.batch in {NAMESPACE}, delete jobs.batch in {NAMESPACE}, "
        f"get secrets in {SYSTEM}: CI could start its own runners"
    ) in failure
    assert "roles/container.developer" in run.output and "ClusterRoleBindings" in run.output
    assert run.line("PASS  CI reads")
    assert "1 check(s) failed: CI read-only" in run.stdout
    assert run.line(f"PASS  GPU runner online ({JOB})")  # the runners are checked all the same


def test_ci_that_cannot_read_what_gpu_runner_watches_fails():
    def blind(cluster):
        cluster.ci_granted -= {("get", "pods/log", NAMESPACE), ("watch", "jobs.batch", NAMESPACE)}

    run = smoke(change=blind)

    assert run.returncode == 1
    assert f"{CI_GOOGLE} may not watch jobs.batch, get pods/log in namespace {NAMESPACE}" in run.line("FAIL  CI reads")
    assert "run pulumi up" in run.output
    assert run.line("PASS  CI read-only")


def test_refused_impersonation_fails_with_the_operator_rights_hint_and_the_runners_are_still_checked():
    def refused(cluster):
        cluster.impersonation_refused = True

    run = smoke(change=refused)

    assert run.returncode == 1
    failure = run.line("FAIL  CI identity")
    assert f"you may not act as {CI_GOOGLE} (User of RoleBinding ci-runner-launcher)" in failure
    assert 'cannot impersonate resource "users"' in failure
    assert "roles/container.admin" in run.output and "verb impersonate on users" in run.output
    assert len(can_i_calls(run)) == 1  # refused: nothing else asked
    assert "CI reads" not in run.stdout and "CI read-only" not in run.stdout
    assert "1 check(s) failed: CI identity" in run.stdout
    assert run.line(f"PASS  GPU runner online ({JOB})") and run.line("PASS  base runner online")


def test_missing_ci_rolebinding_fails_with_the_pulumi_up_hint():
    def missing(cluster):
        cluster.binding = None

    run = smoke(change=missing)

    assert run.returncode == 1
    assert f"RoleBinding ci-runner-launcher not found in namespace {NAMESPACE}" in run.line("FAIL  CI identity")
    assert "the RoleBinding that gives CI its rights is missing: run pulumi up" in run.output
    assert can_i_calls(run) == []
    assert run.line(f"PASS  GPU ({JOB})")


@pytest.mark.parametrize(
    ("subjects", "said"),
    [
        ([], "names no subject"),
        ([{"kind": "Group", "name": "ci@acme.com"}], "is Group ci@acme.com: only a ServiceAccount or a User"),
    ],
)
def test_a_rolebinding_without_an_impersonable_first_subject_fails(subjects, said):
    def odd(cluster):
        cluster.binding = {**ci_binding(), "subjects": subjects}

    run = smoke(change=odd)

    assert said in run.line("FAIL  CI identity")
    assert can_i_calls(run) == []
