"""What lands in GitHub: the repository's Actions secrets CI reads."""

from dataclasses import dataclass

import pulumi
import pulumi_github as github


@dataclass(frozen=True)
class GitHubSecretsArgs:
    repository: str
    """The repository's name; its owner comes with the caller's GitHub provider."""
    secrets: dict[str, pulumi.Input[str]]
    """Secret name -> value; the provider stores every value as a Pulumi secret."""


class GitHubSecrets(pulumi.ComponentResource):
    """Writes Actions secrets to one repository through the caller's GitHub provider."""

    def __init__(self, name: str, args: GitHubSecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:GitHubSecrets", name, None, opts)
        for secret_name, value in args.secrets.items():
            github.ActionsSecret(
                f"{name}-{secret_name.lower().replace('_', '-')}",
                repository=args.repository,
                secret_name=secret_name,
                value=value,  # the provider keeps `value` secret
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({})
