"""The repository the runners serve, looked up before anything is created."""

from dataclasses import dataclass

import pulumi
import pulumi_github as github

from program.settings import this_stack

# An Actions variable names the stack owning the secrets, so a later `pulumi up`
# tells its own secrets from someone else's.
from runner_contract import OWNER_VARIABLE


def public_repository_problem(full_name: str, visibility: str | None, allow_public: bool) -> str | None:
    """Why a repository must not get these runners, or None."""
    if visibility != "public" or allow_public:
        return None
    return (
        f"gke-gpu-runners:githubRepository: {full_name} is public, and a fork's pull request can run code on "
        "self-hosted runners; accepted: a private or internal repository, or "
        "`pulumi config set allowPublicRepository true` after requiring approval for workflows "
        "from outside collaborators (Settings > Actions > General)"
    )


@dataclass(frozen=True)
class RepositoryFacts:
    """What GitHub says of the repository: its name as GitHub spells it, the immutable IDs, and
    its default branch (where data may be written from unless `dataWriteBranch` says otherwise)."""

    full_name: str
    repository_id: str
    owner_id: str
    default_branch: str


def look_up_repository(full_name: str, allow_public: bool, provider: github.Provider) -> RepositoryFacts:
    """Looks the repository and its owner up with the caller's GitHub provider; refuses a public one unless allowed."""
    options = pulumi.InvokeOptions(provider=provider)
    repository = github.get_repository(full_name=full_name, opts=options)
    problem = public_repository_problem(full_name, repository.visibility, allow_public)
    if problem:
        raise pulumi.RunError(f"1 configuration problem(s); nothing was created:\n  - {problem}")
    owner = github.get_user(username=full_name.split("/")[0], opts=options)
    return RepositoryFacts(
        repository.full_name or full_name, str(repository.repo_id), str(owner.id), repository.default_branch or ""
    )


def takeover_problem(full_name: str, ours: set[str], existing: set[str], owner: str | None, adopt: bool) -> str | None:
    """Why writing `ours` would silently take over secrets this stack did not write, or None."""
    clashing = sorted(ours & existing)
    if not clashing or adopt or owner == this_stack():
        return None
    writer = f"stack {owner}" if owner else "something other than this stack (a tutorial's workflow, or by hand)"
    return (
        f"gke-gpu-runners:adoptExistingSecrets: {full_name} already has the Actions secrets or variables "
        f"{', '.join(clashing)}, "
        f"written by {writer}; pulumi up would overwrite them and pulumi destroy would delete them, so workflows "
        "that read them would then reach this cluster; accepted: delete or rename them in the repository "
        "(Settings > Secrets and variables > Actions), or `pulumi config set adoptExistingSecrets true` "
        "to take them over"
    )


def require_no_silent_takeover(full_name: str, names: set[str], adopt: bool, provider: github.Provider) -> None:
    """Looks at the repository's Actions secrets and variables, and the owner variable, before any is written."""
    options = pulumi.InvokeOptions(provider=provider)
    existing = {secret.name for secret in github.get_actions_secrets(full_name=full_name, opts=options).secrets or []}
    variables = github.get_actions_variables(full_name=full_name, opts=options).variables or []
    existing |= {variable.name for variable in variables if variable.name != OWNER_VARIABLE}
    owner = next((variable.value for variable in variables if variable.name == OWNER_VARIABLE), None)
    problem = takeover_problem(full_name, names, existing, owner, adopt)
    if problem:
        raise pulumi.RunError(f"1 configuration problem(s); nothing was created:\n  - {problem}")
