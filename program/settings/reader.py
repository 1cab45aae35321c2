"""Reads raw configuration values, collecting every problem instead of stopping at one."""

import re

import pulumi
from pulumi.runtime.config import get_config, is_config_secret

PROJECT = "gke-gpu-runners"


class Reader:
    """Reads raw config values, collecting every problem instead of stopping at one."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._configs: dict[str, pulumi.Config] = {}

    def _config(self, namespace: str) -> pulumi.Config:
        return self._configs.setdefault(namespace, pulumi.Config(namespace))

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        namespace, _, name = key.rpartition(":")
        return namespace or PROJECT, name

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.qualified(key)}: {message}")

    def qualified(self, key: str) -> str:
        namespace, name = self._split(key)
        return f"{namespace}:{name}"

    @staticmethod
    def raw(qualified_key: str) -> str | None:
        """The value exactly as stored, a secret's plain text included: only to look at its shape."""
        return get_config(qualified_key)

    def text(self, key: str, default: str | None = None) -> str | None:
        namespace, name = self._split(key)
        value = self._config(namespace).get(name)
        return default if value in (None, "") else value.strip()

    def secret(self, key: str) -> pulumi.Output[str] | None:
        """A secret value, None when unset or empty (Pulumi.yaml declares "" as unset)."""
        qualified = self.qualified(key)
        if not (self.raw(qualified) or "").strip():
            return None
        if not is_config_secret(qualified):
            # Stored in plain text in the stack file: refuse rather than spread it further.
            self.problem(
                key,
                f"is stored in plain text in Pulumi.{pulumi.get_stack()}.yaml (rotate the token if "
                f"that file was committed or shared); accepted: pulumi config set --secret {qualified} ...",
            )
        namespace, name = self._split(key)
        return self._config(namespace).get_secret(name)

    def matching(self, key: str, pattern: re.Pattern, accepted: str, default: str | None = None) -> str:
        value = self.text(key, default)
        if value is None:
            self.problem(key, f"required; accepted: {accepted}")
        elif not pattern.match(value):
            self.problem(key, f"got {value!r}; accepted: {accepted}")
        return value or ""

    def choice(self, key: str, choices: tuple[str, ...] | list[str], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            self.problem(key, f"got {value!r}; accepted: {', '.join(choices)}")
        return value

    def integer(self, key: str, default: int, minimum: int) -> int:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problem(key, f"got {raw!r}; accepted: a whole number >= {minimum}")
            return default
        if value < minimum:
            self.problem(key, f"got {value}; accepted: a whole number >= {minimum}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.text(key)
        if raw is None:
            return default
        if raw.lower() not in ("true", "false"):
            self.problem(key, f"got {raw!r}; accepted: true, false")
            return default
        return raw.lower() == "true"

    def bounds(self, prefix: str, default_min: int, default_max: int, least_max: int) -> tuple[int, int]:
        low = self.integer(f"{prefix}MinNodes", default_min, minimum=0)
        high = self.integer(f"{prefix}MaxNodes", default_max, minimum=least_max)
        if low > high:
            self.problem(
                f"{prefix}MinNodes",
                f"{low} is above {self.qualified(prefix + 'MaxNodes')} ({high}); accepted: a number <= {high}",
            )
        return low, high


def got(value: str) -> str:
    return f"got {value!r}" if value else "required"
