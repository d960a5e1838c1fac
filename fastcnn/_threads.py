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
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

_num_threads: int | None = None
_forked_after_team = False  # in a child forked after a team ran: see _after_fork_in_child

# The most threads fastcnn runs. Any count is accepted by OpenMP, but libgomp keeps one
# record per new thread on the calling thread's stack and then starts every thread:
# 10**6 overflowed the stack and crashed the first kernel, and long
# before that a count exhausts the process or memory limits. No real use runs more than
# a few threads per core (more only slow the kernels down), so the limit, 8 per logical
# CPU and at least 256, is never hit on purpose yet small enough to start: 256 threads
# take about 25 kB of stack and start in well under a second. OMP_THREAD_LIMIT is not
# part of it: libgomp itself caps every team at that limit, so a larger request is safe.
MAX_THREADS = max(256, 8 * (os.cpu_count() or 1))


@cache
def _openmp() -> types.ModuleType | None:
    """Return the compiled OpenMP helpers, or None without the extension."""
    try:
        from fastcnn._kernels import _openmp as module
    except ImportError:
        return None
    return module


# A cap on the default count for the current thread or task only (limit_default_threads):
# a context variable, so that tasks in other threads of the process are not affected.
_default_cap: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "fastcnn_default_cap", default=None
)


@cache  # the OpenMP runtime reads OMP_NUM_THREADS once, at start-up, and so do we
def _initial_max_threads() -> int:
    # omp_get_max_threads honours OMP_NUM_THREADS (and is 1 without OpenMP).
    module = _openmp()
    assert module is not None, "called only where the extension imported"
    return int(module.max_threads())


@cache
def _default_num_threads() -> int:
    if _openmp() is None:
        # Without the extension no OpenMP runtime says what OMP_NUM_THREADS asks for.
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        n = int(env) if env.isdigit() else os.cpu_count() or 1
    else:
        n = _initial_max_threads()
    if n > MAX_THREADS:
        warnings.warn(
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} asks for more threads "
            f"than fastcnn runs, so its kernels use {MAX_THREADS} threads "
            "(fastcnn.set_num_threads changes this)",
            RuntimeWarning,
            stacklevel=3,
        )
        return MAX_THREADS
    return max(1, n)


def get_num_threads() -> int:
    """Return the number of threads the compiled kernels use.

    The count set by :func:`set_num_threads` (or by ``threadpoolctl.threadpool_limits``,
    which governs fastcnn as one of the process's OpenMP libraries), else
    ``OMP_NUM_THREADS`` or all cores (capped, inside ``limit_default_threads``, for the
    calling thread or task); 1 in a process forked after the kernels had run on several
    (see :func:`set_num_threads`).
    """
    if _num_threads is not None:
        return _num_threads
    cap = _default_cap.get()
    return _default_num_threads() if cap is None else min(_default_num_threads(), cap)


@contextlib.contextmanager
def limit_default_threads(n: int) -> Iterator[None]:
    """Cap the default thread count at ``n`` within the body, in this thread or task only.

    A count set with :func:`set_num_threads` is the user's and is kept. For work that
    shares the cores with siblings, e.g. a task in a dask worker (see estimator).
    """
    token = _default_cap.set(max(1, int(n)))
    try:
        yield
    finally:
        _default_cap.reset(token)


def set_num_threads(n: int | None) -> None:
    """Set the number of threads the compiled kernels use.

    The count is process-wide: it applies to the kernels of every Python thread.

    In a process forked (``os.fork``, a ``multiprocessing`` pool with the ``'fork'``
    start method) after the compiled kernels had run on several threads, the kernels run
    on one thread: OpenMP cannot start threads in such a child (it would wait for the
    parent's, forever). There ``None`` and 1 are accepted and larger counts raise a
    RuntimeError; start such workers with the ``'spawn'`` or ``'forkserver'`` method to
    use several threads in each.

    Parameters
    ----------
    n : int or None
        A thread count from 1 to ``fastcnn._threads.MAX_THREADS`` (8 per logical CPU,
        at least 256), or None to return to the default (``OMP_NUM_THREADS`` when set,
        else the number of cores; 1 in a forked child as above).

    Raises
    ------
    TypeError
        If ``n`` is neither an int nor None.
    ValueError
        If ``n`` is below 1 or above the limit.
    RuntimeError
        If ``n`` is above 1 in a forked child as above.
    """
    global _num_threads
    if n is not None:
        n = _checked_count(n)
    if _forked_after_team and (n is None or n > 1):
        if n is not None:
            raise RuntimeError(
                f"cannot run fastcnn's kernels on {n} threads in a process forked after "
                "they had run on several threads: OpenMP's threads do not survive a fork "
                "and a team would wait for them forever, so this process runs them on 1 "
                "thread. To use threads in worker processes, start them with the 'spawn' "
                "or 'forkserver' method (multiprocessing.get_context('forkserver'))"
            )
        n = 1
    _num_threads = n


def _checked_count(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be a positive int or None, got {type(n).__name__}")
    n = int(n)  # the same value: numbers.Integral declares no comparisons with int
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > MAX_THREADS:
        raise ValueError(
            f"n must be <= {MAX_THREADS} (8 threads per logical CPU, at least 256: more "
            f"cannot all be started and only slow the kernels down), got {n}"
        )
    return int(n)


# BLAS threads. OpenMP threads that each call a multi-threaded BLAS would oversubscribe the
# cores, so while a kernel runs it pins the BLAS it calls to one thread; the previous
# setting is restored when the last concurrent kernel call leaves.

_blas_lock = threading.Lock()
_blas_depth = 0
_blas_saved: list[int] = []
# threadpoolctl's LibController objects (threadpoolctl is untyped: Any).
_blas_controllers: list[Any] | None = None
_blas_knobs: list[_ControllerKnob | _OpenBLASKnob] | None = None


def _blas_libraries() -> list[Any]:
    """Threadpoolctl controllers for the BLAS that scipy's ``cython_blas`` (our GEMM) uses.

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

    def __init__(self, lib: Any) -> None:
        self.lib = lib

    def get(self) -> int:
        n: int = self.lib.num_threads
        return n

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

    def __init__(self, get: Callable[[], int], set_: Callable[[int], None]) -> None:
        self.get, self.set = get, set_

    @classmethod
    def of(cls, lib: Any) -> _OpenBLASKnob | None:
        # OpenMP-threaded OpenBLAS keeps per-thread limits, which only the controller's
        # omp_* route honours; other BLAS have other entry points.
        if (
            getattr(lib, "internal_api", None) != "openblas"
            or getattr(lib, "threading_layer", None) != "pthreads"
        ):
            return None
        # A ctypes.CDLL, or None (indexing it raises the TypeError caught below).
        dynlib: Any = getattr(lib, "dynlib", None)
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


def _blas_knobs_once() -> list[_ControllerKnob | _OpenBLASKnob]:
    global _blas_knobs
    if _blas_knobs is None:
        _blas_knobs = [_OpenBLASKnob.of(lib) or _ControllerKnob(lib) for lib in _blas_libraries()]
    return _blas_knobs


class blas_threads:
    """Limit every BLAS the kernels call to ``n`` threads within the body (a context manager).

    The previous counts come back when the last concurrent user leaves.
    """

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

    def __exit__(self, *exc_info: object) -> None:
        global _blas_depth
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0:
                for knob, saved in zip(_blas_knobs_once(), _blas_saved, strict=True):
                    if knob.get() != saved:
                        knob.set(saved)


# Fork. libgomp keeps, per thread that started a team, a pool of worker threads that it
# reuses for the next team; a forked child inherits the forking thread's pool but none of
# its threads, and its first team of 2+ threads waits for them forever (libgomp does not
# support fork). A team of one thread never touches the pool, so a
# child of a process that ran a team runs every kernel on one thread (each passes
# get_num_threads() to its parallel regions) and refuses more (set_num_threads). A child
# of a process that never ran a team has no pool to inherit and is left alone.
#
# The BLAS pinning state must be whole in the child: the lock is held across the fork, so
# no other thread is half-way through a change, and the child gets a fresh lock. Kernels
# of other threads that had BLAS pinned do not exist in the child: their pin is undone.


def _before_fork() -> None:
    _blas_lock.acquire()


def _after_fork_in_parent() -> None:
    _blas_lock.release()


def _after_fork_in_child() -> None:
    global _blas_lock, _blas_depth, _num_threads, _forked_after_team
    _blas_lock = threading.Lock()
    openmp = sys.modules.get("fastcnn._kernels._openmp")  # never imported: no team ran
    if openmp is not None and openmp.openmp_enabled() and openmp.team_started():
        _forked_after_team = True
        _num_threads = 1
    if _blas_depth:
        _blas_depth = 0
        for knob, saved in zip(_blas_knobs or [], _blas_saved, strict=False):
            if knob.get() != saved:
                knob.set(saved)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# threadpoolctl. The kernels pass an explicit team size to every parallel region, so the
# omp_set_num_threads that threadpoolctl calls on the OpenMP runtime does not reach them
# (and torch.set_num_threads, which calls it too when torch shares that runtime, must not
# either). So fastcnn registers a controller of its own: threadpool_info() lists it, and
# threadpool_limits(n), with user_api "openmp" or none (scikit-learn's and joblib's use),
# sets fastcnn's count for the block and restores it after, as it does BLAS's.


def _register_threadpoolctl_controller() -> None:
    try:
        import threadpoolctl
    except ImportError:  # a declared dependency; without it there is nothing to govern us
        return
    kernels = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_kernels")

    class FastCNNController(threadpoolctl.LibController):  # type: ignore[misc]
        """fastcnn's OpenMP team, found as its ``_openmp`` extension module."""

        user_api = "openmp"
        internal_api = "fastcnn"
        filename_prefixes = ("_openmp.cp", "_openmp.pypy")

        def set_additional_attributes(self) -> None:
            # Another package's module of the same name is not ours: leave it alone.
            here = os.path.realpath(os.path.dirname(self.filepath or ""))
            self.is_fastcnn = here == os.path.realpath(kernels)

        def get_num_threads(self) -> int | None:
            return get_num_threads() if self.is_fastcnn else None

        def set_num_threads(self, num_threads: int) -> None:
            # threadpoolctl sets a count on entering a block and the one it found on
            # leaving it; the default count goes back as "no count set".
            if self.is_fastcnn and not _forked_after_team:
                n = min(max(1, int(num_threads)), MAX_THREADS)
                set_num_threads(None if n == _default_num_threads() else n)

        def get_version(self) -> str | None:
            from fastcnn import __version__

            return __version__

    register = getattr(threadpoolctl, "register", None)  # threadpoolctl >= 3.2
    if register is not None:
        register(FastCNNController)


_register_threadpoolctl_controller()
