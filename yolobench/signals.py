"""SIGTERM (a timeout, systemd, docker stop, a CI cancel) handled like Ctrl-C, so a stopped sweep
cleans up the same way: its variant in flight is discarded and left to be redone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGTERM (a timeout, systemd, docker stop, a CI cancel) handled like Ctrl-C: clean up, then stop."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
