"""Thread counts: fastcnn's own OpenMP team size, and BLAS pinned while kernels run.

Kept apart from ``_backend`` because the compiled kernels import ``blas_threads`` while
``_backend`` is still importing them.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import numbers
import os
import threading
import warnings
from collections.abc import Iterator
from functools import cache

_num_threads: int | None = None
# A cap on the default count for the current thread or task only (limit_default_threads):
# a context variable, so that tasks in other threads of the process are not affected.
_default_cap: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "fastcnn_default_cap", default=None
)


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
        cap = _default_cap.get()
        default = _default_num_threads()
        return default if cap is None else min(default, cap)
    return _num_threads


@contextlib.contextmanager
def limit_default_threads(n: int) -> Iterator[None]:
    """Within the body, in this thread or task only, cap the default thread count at
    ``n``; a count set with :func:`set_num_threads` is the user's and is kept. For work
    that shares the cores with siblings, e.g. a task in a dask worker (see estimator)."""
    token = _default_cap.set(max(1, int(n)))
    try:
        yield
    finally:
        _default_cap.reset(token)


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
_blas_saved: list[int] = []
_blas_controllers: list | None = None
_blas_knobs: list | None = None


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


class _ControllerKnob:
    """A BLAS's thread count through its threadpoolctl controller (any BLAS)."""

    def __init__(self, lib) -> None:
        self.lib = lib

    def get(self) -> int:
        return self.lib.num_threads

    def set(self, n: int) -> None:
        # threadpoolctl 3.8 lets only one Python thread (the first to set it) change a
        # process-wide OpenBLAS pool and silently ignores every other thread. A kernel may
        # run in any thread, and fastcnn serialises its own changes under _blas_lock, so
        # it takes control before each change; without that, a kernel in a worker thread
        # left BLAS unpinned (each OpenMP thread then starts BLAS threads) or never
        # restored it.
        clear = getattr(type(self.lib), "clear_controlling_thread", None)
        if clear is not None:
            clear(force=True)
        self.lib.set_num_threads(n)


class _OpenBLASKnob:
    """An OpenBLAS on its own (pthreads) pool, through its C functions directly.

    Kernels pin BLAS on every call (six dense-layer calls in a LeNet-5 step). Through
    threadpoolctl's Python a pin and restore cost about 10 us, more than a small layer's
    product; through ctypes, with the lock, about 3 us.
    """

    def __init__(self, get, set_) -> None:
        self.get, self.set = get, set_

    @classmethod
    def of(cls, lib) -> _OpenBLASKnob | None:
        # OpenMP-threaded OpenBLAS keeps per-thread limits, which only the controller's
        # omp_* route honours; other BLAS have other entry points.
        if (
            getattr(lib, "internal_api", None) != "openblas"
            or getattr(lib, "threading_layer", None) != "pthreads"
        ):
            return None
        dynlib = getattr(lib, "dynlib", None)
        for prefix in ("", "scipy_"):  # the names threadpoolctl 3.8 looks for
            for suffix in ("", "64_", "_64"):
                try:  # indexing makes new function objects, not threadpoolctl's cached ones
                    get = dynlib[f"{prefix}openblas_get_num_threads{suffix}"]
                    set_ = dynlib[f"{prefix}openblas_set_num_threads{suffix}"]
                except (AttributeError, TypeError):
                    continue
                get.argtypes, get.restype = [], ctypes.c_int
                set_.argtypes, set_.restype = [ctypes.c_int], None
                return cls(get, set_)
        return None


def _blas_knobs_once() -> list:
    global _blas_knobs
    if _blas_knobs is None:
        _blas_knobs = [_OpenBLASKnob.of(lib) or _ControllerKnob(lib) for lib in _blas_libraries()]
    return _blas_knobs


class blas_threads:
    """Context manager: run the body with every BLAS the kernels call limited to ``n``
    threads, and restore the previous counts when the last concurrent user leaves."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        global _blas_depth, _blas_saved
        with _blas_lock:
            knobs = _blas_knobs_once()  # under the lock: every caller shares one set
            counts = [knob.get() for knob in knobs]
            if _blas_depth == 0:
                _blas_saved = counts
            _blas_depth += 1
            for knob, count in zip(knobs, counts, strict=True):
                if count != self.n:
                    knob.set(self.n)

    def __exit__(self, *exc_info) -> None:
        global _blas_depth
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for knob, saved in zip(_blas_knobs_once(), _blas_saved, strict=True):
                    if knob.get() != saved:
                        knob.set(saved)
