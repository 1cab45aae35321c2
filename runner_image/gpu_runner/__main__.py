"""`python3 -m gpu_runner ...`, as the `gpu-runner` launcher runs it."""

import sys

from gpu_runner.cli import main

sys.exit(main())
