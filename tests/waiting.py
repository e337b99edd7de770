"""Waiting for an event, never for a time: the one way the suite waits.

A test that needs Ray or MLflow to reach a state polls for that state with a bounded timeout and fails with a message
that names the event, instead of sleeping a fixed time or reading a state before it settles (a race: on a busy
machine the state arrives later, and the suite fails by chance)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2,
             detail: Callable[[], str] | None = None) -> T:
    """Call ``condition`` until it returns a truthy value (returned), at most ``timeout`` seconds.

    On time-out: AssertionError naming ``what`` (the awaited event) and, when given, ``detail()`` (e.g. a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)
