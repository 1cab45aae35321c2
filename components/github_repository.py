"""The repository the runners serve, looked up before anything is created."""

import pulumi
import pulumi_github as github


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


def require_repository_fit_for_runners(full_name: str, allow_public: bool, provider: github.Provider) -> None:
    """Looks the repository up with the caller's GitHub provider; refuses a public one unless allowed."""
    repository = github.get_repository(full_name=full_name, opts=pulumi.InvokeOptions(provider=provider))
    problem = public_repository_problem(full_name, repository.visibility, allow_public)
    if problem:
        raise pulumi.RunError(f"1 configuration problem(s); nothing was created:\n  - {problem}")
