#!/usr/bin/env python3
"""Checks, after `pulumi up`, that the runners work end to end: `--help` says how.

Run it from the project folder with the project's virtualenv (it needs PyYAML):
    GITHUB_TOKEN="$(gh auth token)" .venv/bin/python scripts/smoke_test.py
"""

import sys
from pathlib import Path

# The project folder: for runner_contract, and for this folder as the `scripts` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.smoke.main import cli  # noqa: E402 - after the path is set

if __name__ == "__main__":
    cli()
