"""One log line per decision, on stderr: a UTC timestamp, the event, then key=value pairs.

Values are names, reasons and statuses, never a credential: callers pass nothing else,
and an unexpected exception is logged by its class and line only (`log_unexpected`).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime

_lock = threading.Lock()
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:@,+-]+")


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


writer: Callable[[str], None] = _stderr
"""Where lines go; tests in the same process replace it to read them."""


def log(event: str, **fields: object) -> None:
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    pairs = [f"{key}={_value(value)}" for key, value in fields.items() if value is not None]
    line = " ".join([stamp, event, *pairs])
    with _lock:
        writer(line)


def _value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(item) for item in value)
    text = str(value)
    return text if _PLAIN_VALUE.fullmatch(text) else json.dumps(text)


def log_unexpected(where: str, error: BaseException) -> None:
    """A bug: its class and line only, since an unexpected exception's text is not vetted for secrets."""
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    location = f"{frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno}" if frame else "?"
    log("error", where=where, reason=f"{type(error).__name__} at {location}")
