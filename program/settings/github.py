"""The GitHub keys: the repository, the tokens, the runner credential, and scale-set scope."""

import re

import pulumi

from program.settings.model import DEFAULT_SCALE_SET_NAME, SCALE_SET, RunnerCredential
from program.settings.reader import Reader

# GHCR accepts only personal access tokens (classic) for pushing packages.
FINE_GRAINED = "github_pat_"
GITHUB_REPOSITORY = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/([A-Za-z0-9._-]{1,100})$")
GITHUB_ORGANIZATION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")

# ARC's runnerScaleSetName: at most 45 characters (the chart refuses more), and the name of
# Kubernetes objects and label values; a leading letter keeps YAML from reading it as a number.
SCALE_SET_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,43}[a-z0-9])?$")
# The scale set chart writes the group unquoted into YAML: letters first, no ':' or '#'.
RUNNER_GROUP = re.compile(r"^[A-Za-z][A-Za-z0-9 ._-]{0,99}$")


def read_repository(read: Reader) -> str:
    """owner/name; a clone URL or a trailing .git is refused with the owner/name it stands for."""
    accepted = "owner/name, e.g. octo-org/ml-models"
    value = read.text("githubRepository")
    if value is None:
        read.problem("githubRepository", f"required; accepted: {accepted}")
        return ""
    meant = re.sub(r"^(?:https?://github\.com/|git@github\.com:|github\.com/)", "", value).rstrip("/")
    meant = meant.removesuffix(".git")
    if meant != value and GITHUB_REPOSITORY.match(meant):
        read.problem("githubRepository", f"got {value!r}; accepted: owner/name alone, without a URL or .git: {meant}")
    elif not GITHUB_REPOSITORY.match(value):
        read.problem("githubRepository", f"got {value!r}; accepted: {accepted}")
    return value


def read_registry_token(read: Reader) -> pulumi.Output[str] | None:
    """registryToken, refusing a fine-grained token there or, without it, in github:token: GHCR takes neither."""
    token = read.secret("registryToken")
    fix = (
        "accepted: a personal access token (classic) with write:packages: "
        f"pulumi config set --secret {read.qualified('registryToken')} ghp_..."
    )
    if token is not None and (read.raw(read.qualified("registryToken")) or "").strip().startswith(FINE_GRAINED):
        read.problem(
            "registryToken", f"is a fine-grained token, which GHCR does not accept for pushing the runner image; {fix}"
        )
    elif token is None and (read.raw("github:token") or "").strip().startswith(FINE_GRAINED):
        read.problem(
            "registryToken",
            "unset, so the runner image would be pushed to GHCR with github:token, a "
            f"fine-grained token, which GHCR does not accept for pushing packages; {fix}",
        )
    return token


def read_scale_set(read: Reader, runner_mode: str, owner: str) -> dict:
    """The scale-set keys, read in either mode (every declared key is read); per-run mode refuses
    an organization or a runner group, which only a scale set can use."""
    organization = read.text("githubOrganization")
    runner_group = read.text("runnerGroup")
    name = read.matching(
        "scaleSetName",
        SCALE_SET_NAME,
        "1-45 lowercase letters, digits or '-', starting with a "
        "letter (it is the label workflows ask for: runs-on: <scaleSetName>)",
        DEFAULT_SCALE_SET_NAME,
    )
    if runner_mode != SCALE_SET:
        for key, value in (("githubOrganization", organization), ("runnerGroup", runner_group)):
            if value is not None:
                read.problem(
                    key,
                    f"is only used with runnerMode {SCALE_SET} (per-run runners serve "
                    f"githubRepository alone); accepted: pulumi config set runnerMode {SCALE_SET}, "
                    f"or pulumi config rm {key}",
                )
        return {"github_organization": None, "runner_group": None, "scale_set_name": name}
    if organization is not None:
        if not GITHUB_ORGANIZATION.match(organization):
            read.problem(
                "githubOrganization", f"got {organization!r}; accepted: an organization's login, e.g. octo-org"
            )
        elif owner and organization.lower() != owner.lower():
            read.problem(
                "githubOrganization",
                f"got {organization!r}, but githubRepository belongs to {owner!r}; "
                f"accepted: {owner} (the organization whose workflows the runners "
                "serve holds githubRepository, where the kubeconfig secret goes)",
            )
    if runner_group is not None:
        if organization is None:
            read.problem(
                "runnerGroup",
                "needs githubOrganization (a repository's runners have no group); accepted: "
                "set githubOrganization, or remove runnerGroup (pulumi config rm runnerGroup)",
            )
        elif not RUNNER_GROUP.match(runner_group):
            read.problem(
                "runnerGroup",
                f"got {runner_group!r}; accepted: the name of one of the organization's "
                "runner groups: a letter, then up to 99 letters, digits, spaces, '.', '_' "
                "or '-'",
            )
    return {"github_organization": organization, "runner_group": runner_group, "scale_set_name": name}


APP_KEYS = ("githubAppId", "githubAppInstallationId", "githubAppPrivateKey")
NUMERIC_ID = re.compile(r"^[0-9]{1,20}$")


def read_runner_credential(read: Reader) -> RunnerCredential:
    """A GitHub App when all three App keys are set, else the PAT in `runnerToken`; never `github:token`."""
    app_id = read.text("githubAppId")
    installation_id = read.text("githubAppInstallationId")
    private_key = read.secret("githubAppPrivateKey")
    given = [
        key for key, value in zip(APP_KEYS, (app_id, installation_id, private_key), strict=True) if value is not None
    ]
    pat = read.secret("runnerToken")
    if not given:
        if pat is None:
            read.problem(
                "runnerToken",
                "required unless a GitHub App is set (it is never taken from github:token, which "
                "can do far more); accepted: a fine-grained PAT for this repository alone with "
                "Administration read and write and Actions read (pulumi config set --secret "
                "runnerToken ...), or all three githubAppId, githubAppInstallationId and "
                "githubAppPrivateKey of an App with those permissions",
            )
        return RunnerCredential(pat=pat)
    if len(given) < len(APP_KEYS):
        missing = ", ".join(read.qualified(k) for k in APP_KEYS if k not in given)
        read.problem(
            given[0],
            f"a GitHub App needs all three App keys; missing: {missing}; accepted: all of them, "
            "or none (a PAT in runnerToken)",
        )
    if pat is not None:
        read.problem(
            "runnerToken", "set together with a GitHub App; accepted: runnerToken or the githubApp* keys, not both"
        )
    for key, value in (("githubAppId", app_id), ("githubAppInstallationId", installation_id)):
        if value is not None and not NUMERIC_ID.match(value):
            read.problem(key, f"got {value!r}; accepted: the numeric ID GitHub shows for the App")
    if private_key is not None and "PRIVATE KEY-----" not in (read.raw(read.qualified("githubAppPrivateKey")) or ""):
        read.problem(
            "githubAppPrivateKey",
            "is not a PEM private key; accepted: the App's key file, "
            "pulumi config set --secret githubAppPrivateKey < app.private-key.pem",
        )
    return RunnerCredential(app_id=app_id, app_installation_id=installation_id, app_private_key=private_key)
