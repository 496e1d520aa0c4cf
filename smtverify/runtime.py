"""Process-level settings for the numeric hot loops."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext


def one_blas_thread() -> AbstractContextManager:
    """Small products lose more to BLAS thread hand-offs than they gain, badly so on shared cores
    (measured here: 4096x50x50 products 15x slower with two OpenBLAS threads on a loaded 2-core machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(1, "blas")
