"""Lines for a GitHub Actions log: workflow commands escaped, untrusted text kept on one line.

The runner reads `::error::`, `::warning::` and `::notice::` at the start of a line of
a step's output. Text from elsewhere (the broker, Kubernetes events, GitHub) is folded
onto one line, so it can never start a line, and so never a workflow command, of its own.
"""

from __future__ import annotations

from typing import TextIO


def one_line(text: object, limit: int = 500) -> str:
    """`text` on one line (whitespace runs folded), cut to `limit` characters."""
    folded = " ".join(str(text).split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


def escape_data(text: str) -> str:
    """A workflow command's message, as the runner unescapes it."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


class Log:
    """Where a command writes what the job's log shows."""

    def __init__(self, out: TextIO, prefix: str = "gpu-runner") -> None:
        self.out = out
        self.prefix = prefix

    def line(self, text: str) -> None:
        self._write(f"{self.prefix}: {one_line(text, 2000)}")

    def detail(self, text: str) -> None:
        """An indented line under the one before (events, hints)."""
        self._write(f"  {one_line(text, 2000)}")

    def notice(self, text: str) -> None:
        self._write(f"::notice::{escape_data(one_line(text, 2000))}")

    def warning(self, text: str) -> None:
        self._write(f"::warning::{escape_data(one_line(text, 2000))}")

    def error(self, text: str) -> None:
        self._write(f"::error::{escape_data(one_line(text, 4000))}")

    def _write(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
