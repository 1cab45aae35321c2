"""What the tests of `gpu-runner` share: its package on sys.path, a fake clock, an in-process run.

The command runs in this process (`main(argv, env=..., out=..., clock=...)`) against
doubles on 127.0.0.1: real HTTP, no real waiting. Its sleeps advance a fake clock,
and may act in between (`on_sleep`), as another run's job would.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "runner_image", ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from gpu_runner.cli import main  # noqa: E402 - needs the path above
from gpu_runner.waiting import Clock  # noqa: E402

LAUNCHER = ROOT / "runner_image" / "gpu-runner"
TOKEN = "fake-projected-token.for-gpu-runner-tests.0001"
RUN_ID, RUN_ATTEMPT = "4242", "3"
REPOSITORY = "acme/models"


@dataclass
class FakeClock:
    """Monotonic seconds that only sleeping moves; `on_sleep(n)` runs after the n-th sleep."""

    now_seconds: float = 1000.0
    on_sleep: Callable[[int], None] | None = None
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.now_seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_seconds += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))

    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)

    @property
    def slept(self) -> float:
        return sum(self.sleeps)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err

    def errors(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("::error::")]


def run(argv: list[str], env: dict[str, str], clock: FakeClock | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, env=env, out=out, err=err, clock=(clock or FakeClock()).clock())
    result = Result(code, out.getvalue(), err.getvalue())
    assert TOKEN not in result.output, "the pod's token was printed"
    assert "Traceback" not in result.output
    return result


def environment(
    tmp_path: Path, broker_url: str, *, run_id: str = RUN_ID, run_attempt: str = RUN_ATTEMPT, **changes: str | None
) -> dict[str, str]:
    """A job's environment on a base runner: the pod's broker variables and GitHub's run variables."""
    token_file = tmp_path / "broker-token"
    if not token_file.exists():
        token_file.write_text(TOKEN)
    env = {
        "RUNNER_BROKER_URL": broker_url,
        "RUNNER_BROKER_TOKEN_FILE": str(token_file),
        "GITHUB_RUN_ID": run_id,
        "GITHUB_RUN_ATTEMPT": run_attempt,
        "GITHUB_REPOSITORY": REPOSITORY,
    }
    env.update(changes)
    return {name: value for name, value in env.items() if value is not None}
