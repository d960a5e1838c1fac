"""Thread counts: fastcnn's own OpenMP team size, and BLAS pinned while kernels run.

Kept apart from ``_backend`` because the compiled kernels import ``blas_threads`` while
``_backend`` is still importing them.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import threading
import warnings
from collections.abc import Iterator
from functools import cache

_num_threads: int | None = None


@cache  # the OpenMP runtime reads OMP_NUM_THREADS once, at start-up, and so do we
def _default_num_threads() -> int:
    try:
        from fastcnn._kernels import _openmp
    except ImportError:
        pass
    else:
        # omp_get_max_threads honours OMP_NUM_THREADS (and is 1 without OpenMP).
        return max(1, int(_openmp.max_threads()))
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.split(",")[0].strip().isdigit():
        return max(1, int(env.split(",")[0]))
    return os.cpu_count() or 1


def get_num_threads() -> int:
    """Number of threads the compiled kernels use (default: ``OMP_NUM_THREADS`` or all cores)."""
    if _num_threads is None:
        return _default_num_threads()
    return _num_threads


def set_num_threads(n: int | None) -> None:
    """Set the number of threads the compiled kernels use.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to return to the default
        (``OMP_NUM_THREADS`` when set, else the number of cores).
    """
    global _num_threads
    if n is None:
        _num_threads = None
        return
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be a positive int or None, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _num_threads = int(n)


# BLAS threads. OpenMP threads that each call a multi-threaded BLAS would oversubscribe the
# cores, so while a kernel runs it pins the BLAS it calls to one thread; the previous
# setting is restored when the last concurrent kernel call leaves.

_blas_lock = threading.Lock()
_blas_depth = 0
_blas_saved: list | None = None
_blas_controllers: list | None = None


def _blas_libraries() -> list:
    """threadpoolctl controllers for the BLAS that scipy's ``cython_blas`` (our GEMM) uses.

    numpy usually bundles a BLAS of its own; leaving that one alone keeps its thread pool
    warm for the user's (and the dense layers') matrix products. Where no BLAS can be told
    apart as scipy's (a shared system BLAS), every BLAS is controlled.
    """
    global _blas_controllers
    if _blas_controllers is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (make sure it is loaded)
            from threadpoolctl import ThreadpoolController

            libs = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception as exc:  # threadpoolctl missing or unable to inspect: say so
            warnings.warn(
                "fastcnn cannot limit BLAS to one thread inside its kernels "
                f"({type(exc).__name__}: {exc}), so each OpenMP thread may start a team of "
                "BLAS threads and oversubscribe the cores; install threadpoolctl (a "
                "dependency of fastcnn) or set OPENBLAS_NUM_THREADS=1",
                RuntimeWarning,
                stacklevel=2,
            )
            libs = []
        scipy_libs = [
            lib for lib in libs if "scipy" in os.path.dirname(lib.filepath or "").lower()
        ]
        _blas_controllers = scipy_libs or libs
    return _blas_controllers


def _set_threads(lib, n: int) -> None:
    """Set one BLAS library's thread count from whichever thread runs the kernel.

    threadpoolctl 3.8 lets only one Python thread (the first to set it) change a
    process-wide OpenBLAS pool and silently ignores every other thread. A kernel may run
    in any thread, and fastcnn serialises its own changes under ``_blas_lock``, so it
    takes control before each change; without that, a kernel in a worker thread left BLAS
    unpinned (each OpenMP thread then starts BLAS threads) or never restored it.
    """
    clear = getattr(type(lib), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    lib.set_num_threads(n)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the body with every loaded BLAS limited to ``n`` threads."""
    global _blas_depth, _blas_saved
    with _blas_lock:
        libs = _blas_libraries()  # under the lock: every caller shares one set of controllers
        if _blas_depth == 0:
            _blas_saved = [lib.num_threads for lib in libs]
        _blas_depth += 1
        for lib in libs:
            if lib.num_threads != n:
                _set_threads(lib, n)
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for lib, saved in zip(libs, _blas_saved or [], strict=True):
                    _set_threads(lib, saved)
