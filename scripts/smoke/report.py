"""What the smoke test prints: one line per check, a hint under each FAIL and WARN, a summary."""

from __future__ import annotations

import re
from typing import TextIO

MAX_QUOTED = 300


def one_line(text: str) -> str:
    """Tool output as one short line, for a reason quoted in a check's line."""
    return re.sub(r"\s+", " ", text).strip()[:MAX_QUOTED]


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failures: list[str] = []

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def passed(self, check: str, detail: str) -> None:
        self._line(f"PASS  {check}: {detail}")

    def failed(self, check: str, detail: str, hint: str) -> None:
        self._line(f"FAIL  {check}: {detail}")
        self._line(f"      hint: {hint}")
        self.failures.append(check)

    def warned(self, check: str, detail: str, hint: str) -> None:
        """Worth knowing, never a failure."""
        self._line(f"WARN  {check}: {detail}")
        self._line(f"      hint: {hint}")

    def skipped(self, check: str, detail: str) -> None:
        self._line(f"SKIP  {check}: {detail}")

    def say(self, text: str = "") -> None:
        """Anything else: what it waits for, the tables."""
        self._line(text)

    def summary(self) -> int:
        """The last line, and the exit status: 0 when nothing failed."""
        if self.failures:
            self._line(f"\n{len(self.failures)} check(s) failed: {', '.join(self.failures)}")
            return 1
        self._line("\nAll checks passed.")
        return 0
