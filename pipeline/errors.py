"""The one base of every error a user can fix (a config key, an input file, missing weights,
an unreachable tracking server): its message says what is wrong and where. Stage entry points
print it as one line prefixed with the stage's name, instead of a traceback; anything else is
a bug and keeps its traceback."""

import signal
import threading
from collections.abc import Callable


class PipelineError(Exception):
    """A user-facing problem whose message names the key, file or service at fault."""


def sigterm_raises() -> Callable[[], object]:
    """Make SIGTERM (`kill`, `timeout`, a scheduler's preemption) raise SystemExit(143), as
    Ctrl-C raises KeyboardInterrupt, so `finally` blocks run: a staging folder is deleted, the
    workers end, an MLflow run ends KILLED. Returns the undo function; a no-op off the main
    thread, where Python cannot install a handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)
