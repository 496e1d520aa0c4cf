"""A watchdog for Z3 queries: Z3 does not always poll its own timeout in arithmetic, so a query given
`seconds` is interrupted from another thread a little after them.

Z3 is imported only when a watchdog is started, so that importing this module stays cheap for the
engines that load Z3 lazily.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

# How long after its own timeout a Z3 query is interrupted.
GRACE_SECONDS = 0.5


@contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    """Interrupt Z3 (its main context) `seconds` + GRACE_SECONDS after entering, unless the block has
    ended by then."""
    import z3

    timer = threading.Timer(seconds + GRACE_SECONDS, z3.main_ctx().interrupt)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
