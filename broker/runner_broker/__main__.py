"""`python3 -m runner_broker`: read the configuration, serve until SIGTERM or SIGINT, sweep once more, exit.

Exit status: 0 after a signal; 1 when an address cannot be listened on; 2 for a missing or
bad variable (each is named on stderr).
"""

from __future__ import annotations

import os
import signal
import sys

from runner_broker.config import ConfigError, load_config
from runner_broker.logs import log
from runner_broker.service import Service

EXIT_CONFIG = 2
EXIT_LISTEN = 1
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def main() -> int:
    try:
        config = load_config(dict(os.environ))
    except ConfigError as error:
        for problem in error.problems:
            print(f"broker: configuration: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    # Blocked here, and so in every thread started from now on: the signals wait for `sigwait` below. (A
    # handler would run only once the main thread next ran Python code, and a blocked wait may never wake.)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        service = Service(config)
    except OSError as error:
        log(
            "cannot listen",
            address=f"{config.listen} or {config.health_listen}",
            reason=error.strerror or type(error).__name__,
        )
        return EXIT_LISTEN
    service.start()
    received = signal.sigwait(STOP_SIGNALS)
    log("signal", name=signal.Signals(received).name)
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
