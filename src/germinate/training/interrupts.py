"""Ctrl-C and SIGTERM: a request to stop at the next safe point, honoured by every long loop."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def graceful_interrupts(request_stop: Callable[[], bool], warn: Callable[[str], None]) -> Iterator[None]:
    """While inside, Ctrl-C or SIGTERM call `request_stop()` (which returns whether a stop had
    already been asked for); a second Ctrl-C stops at once. Outside the main thread (a notebook
    worker, a server) signals cannot be caught, so nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if request_stop() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        warn("stopping at the next safe point (checkpointing)...")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
