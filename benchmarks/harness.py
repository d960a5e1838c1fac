"""Timing, checking and the machine: the measuring half of the benchmark suite.

Design
------
* :func:`measure` warms a callable up, then calls it with garbage collection disabled
  until the time budget is spent (at least ``min_repeats`` calls), keeping every sample;
  tables report the median.
* The implementations compared in one case are not timed one after the other but in
  alternating rounds (:func:`measure_interleaved`): this suite runs on shared machines
  whose speed drifts by up to 2x within seconds, and a ratio of two medians taken seconds
  apart measures the drift as much as the code. Each round gives every implementation a
  short block of the budget (reversing the order every other round, so no library is
  always the one that follows the same other); the median is that of all rounds' samples
  pooled. A block starts once the previous library's thread pool has stopped spinning
  (:func:`wait_for_quiet_threads`), so no library is timed against another's idle
  workers.
* Only the standard library and numpy are imported at module level; fastcnn, PyTorch and
  matplotlib are imported when used.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

IMPLS = ("fastcnn", "numpy", "loops", "torch")
IMPL_LABELS = {
    "fastcnn": "fastcnn (compiled)",
    "numpy": "fastcnn numpy backend",
    "loops": "textbook loops (scaled)",
    "torch": "PyTorch CPU",
}

OP_TOLERANCE = 1e-4  # max |out - oracle| / max |oracle|, float32 against a float64 oracle
MODEL_TOLERANCE = 1e-3  # float32 against float32 through a whole network
MAX_SAMPLES = 1000  # per implementation and case; keeps the JSON to a few MB
# Rounds of alternating blocks per case (each implementation gets budget / rounds seconds
# a round) and the untimed calls that open each block: switching library wakes one thread
# pool and leaves the previous one's workers spinning for a moment, and those calls
# absorb it.
INTERLEAVE_ROUNDS = 5
BLOCK_WARMUP_CALLS = 2
# The longest wait, before a block, for the previous library's idle workers to stop
# spinning (numpy's OpenBLAS keeps one spinning for ~0.12 s on the 2-core machine).
QUIET_TIMEOUT = 0.5
ENV_KEYS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "FASTCNN_BACKEND",
)  # fmt: skip


@dataclass
class Settings:
    """How one run measures: its thread count and budgets (set from the options)."""

    threads: int
    quick: bool
    budget: float  # seconds of timed calls per implementation and case
    warmup: float  # seconds of warm-up calls (at least one)
    min_repeats: int
    warmup_calls: int
    loops_budget: float
    import_runs: int
    memory_steps: int
    matmul_size: int
    verbose: bool


# ---------------------------------------------------------------------------------------
# Timing and checking


def warm_up(fn: Callable[[], object], seconds: float, min_calls: int) -> int:
    """Call ``fn`` ``min_calls`` times, and on for about ``seconds`` (up to 100 calls).

    Returns the number of calls made.
    """
    start = time.perf_counter()
    calls = 0
    while calls < min_calls or (time.perf_counter() - start < seconds and calls < 100):
        fn()
        calls += 1
    return calls


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage now, then keep the cyclic collector off until the block ends.

    A collection that starts inside a timed call would be charged to whichever
    implementation happened to allocate past the threshold.
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_calls(
    fn: Callable[[], object], budget: float, min_repeats: int, max_samples: int = MAX_SAMPLES
) -> list[float]:
    """Seconds taken by each of consecutive calls of ``fn``.

    Calls until ``budget`` seconds have passed and ``min_repeats`` calls were made, or
    until ``max_samples`` calls, whichever comes first.
    """
    samples: list[float] = []
    begin = time.perf_counter()
    while len(samples) < max_samples:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if len(samples) >= min_repeats and t1 - begin >= budget:
            break
    return samples


def running_threads() -> int | None:
    """Other threads of this process now on a CPU or runnable; None without ``/proc``."""
    me = threading.get_native_id()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    running = 0
    for tid in tids:
        if int(tid) == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read()
        except OSError:  # the thread has just exited
            continue
        # The state follows the command name, which is in parentheses and may hold any
        # character, so look for it after the last ')'.
        if fields[fields.rindex(")") + 2] == "R":
            running += 1
    return running


def wait_for_quiet_threads(timeout: float = QUIET_TIMEOUT) -> float:
    """Sleep until no other thread of this process runs (at most ``timeout`` s).

    A thread pool does not park its workers the moment a call returns: they spin first,
    on the same cores the next library's threads need. numpy's OpenBLAS spins one
    worker for ~0.12 s after a threaded product, longer than a timing block, and on the
    2-core machine fastcnn's or PyTorch's calls right after ran up to 2x slower. Waiting
    for the spinning to end times every library on a machine its predecessor has left.
    Returns the seconds waited.
    """
    begin = time.perf_counter()
    while running_threads() and time.perf_counter() - begin < timeout:
        time.sleep(0.001)
    return time.perf_counter() - begin


def timing(seconds: list[float], warmup_calls: int) -> dict[str, Any]:
    """The timing record of an implementation: median and every sample, in milliseconds."""
    ms = [1e3 * s for s in seconds]
    return {
        "median_ms": statistics.median(ms),
        "samples_ms": [float(f"{v:.5g}") for v in ms],
        "repeats": len(ms),
        "warmup_calls": warmup_calls,
    }


def measure(
    fn: Callable[[], object],
    budget: float,
    min_repeats: int,
    warmup: float = 0.0,
    warmup_calls: int = 1,
) -> dict[str, Any]:
    """Warm ``fn`` up, then time calls until ``budget`` seconds and ``min_repeats`` calls.

    Garbage collection is off while timing; every sample is kept (in milliseconds).
    """
    calls = warm_up(fn, warmup, warmup_calls)
    with gc_paused():
        samples = time_calls(fn, budget, min_repeats)
    return timing(samples, calls)


_K = TypeVar("_K", bound=Hashable)


def no_context(key: object) -> AbstractContextManager[None]:
    """The default ``contexts`` of :func:`measure_interleaved`: nothing to enter."""
    return contextlib.nullcontext()


class _Rounds:
    """The state of one :func:`measure_interleaved`: who is still timed, samples, calls.

    An implementation runs under ``contexts(key)``, entered afresh for its warm-up and for
    every block, since the implementations alternate. One that raises is recorded in
    ``failures`` and leaves the rounds; without a ``failures`` dict its exception
    propagates.
    """

    def __init__(self, fns, contexts, failures) -> None:
        self.live = dict(fns)
        self.samples: dict[Any, list[float]] = {key: [] for key in fns}
        self.calls: dict[Any, int] = dict.fromkeys(fns, 0)
        self.contexts = contexts
        self.failures = failures

    def run(self, key, body: Callable[[Callable[[], object]], int]) -> None:
        """``body(fn)`` under the implementation's context; it returns the untimed calls."""
        try:
            with self.contexts(key):
                self.calls[key] += body(self.live[key])
        except Exception as exc:
            if self.failures is None:
                raise
            self.failures[key] = exc
            del self.live[key]

    def block(self, key, seconds: float, repeats: int, cap: int, warmup_calls: int) -> None:
        """One block: wait for idle threads, ``warmup_calls`` untimed calls, then timed ones."""

        def body(fn: Callable[[], object]) -> int:
            wait_for_quiet_threads()
            for _ in range(warmup_calls):
                fn()
            self.samples[key] += time_calls(fn, seconds, repeats, cap)
            return warmup_calls

        self.run(key, body)


# The serpentine order (A B C, C B A, A B C, ...): a switch can cost the next
# implementation more than its warm-up calls absorb (numpy's OpenBLAS workers keep
# spinning for a while after the numpy backend's last product, and on a 2-core machine
# whichever library came right after it measured 10-20% slower). Repeating the order would
# put the same library after numpy every round; the serpentine order puts the first and
# the last each after the middle one in half the rounds, so with numpy in the middle
# fastcnn and PyTorch pay alike. With two implementations both orders are balanced;
# strict alternation (serpentine=False) switches twice as often.
def measure_interleaved(
    fns: Mapping[_K, Callable[[], object]],
    budget: float,
    min_repeats: int,
    warmup: float = 0.0,
    warmup_calls: int = 1,
    rounds: int = INTERLEAVE_ROUNDS,
    contexts: Callable[[_K], AbstractContextManager[Any]] = no_context,
    block_warmup_calls: int = BLOCK_WARMUP_CALLS,
    serpentine: bool = True,
    failures: dict[_K, Exception] | None = None,
) -> dict[_K, dict[str, Any]]:
    """Time several implementations in alternating rounds of short blocks.

    On a machine whose speed drifts over seconds, timing A for the whole budget and then B
    puts the drift into the ratio of their medians. Here every round gives each
    implementation, in turn, one block of ``budget / rounds`` seconds (at least
    ``max(1, min_repeats // rounds)`` calls), so each sees the same stretch of machine
    time; the samples of all rounds are pooled and their median reported.

    Parameters
    ----------
    fns : mapping of key to callable
        The zero-argument callables to time, in the order they take turns.
    budget, min_repeats : float, int
        Seconds of timed calls, and timed calls at least, per implementation, summed over
        the rounds.
    warmup, warmup_calls : float, int
        Initial warm-up of each implementation, once, before the first round: at least
        ``warmup_calls`` calls and about ``warmup`` seconds (as :func:`measure`).
    rounds : int
        Number of rounds. ``rounds=1`` with ``block_warmup_calls=0`` amounts to
        :func:`measure` of each implementation in turn.
    contexts : callable, optional
        ``contexts(key)`` returns the context manager an implementation runs under (its
        backend, its thread count).
    block_warmup_calls : int
        Untimed calls at the start of every block, after the switch from the previous
        implementation (whose thread pool may still be spinning on the cores).
    serpentine : bool
        Reverse the order every other round instead of repeating it (see above).
    failures : dict, optional
        When given, an implementation that raises is recorded here and left out of the
        remaining rounds and of the result; otherwise its exception propagates.

    Returns
    -------
    timings : dict of key to dict
        Per implementation: ``median_ms`` (of the pooled samples), ``samples_ms`` (every
        round's, in order), ``repeats``, ``warmup_calls`` (initial and per-block calls
        together) and ``rounds``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    state = _Rounds(fns, contexts, failures)
    repeats = max(1, min_repeats // rounds)
    cap = max(1, MAX_SAMPLES // rounds)  # the pooled samples stay within MAX_SAMPLES
    for key in list(state.live):
        state.run(key, lambda fn: warm_up(fn, warmup, warmup_calls))
    # One collection for the whole run of rounds: gc.collect() costs ~0.1 s once PyTorch
    # is imported, too much to pay before every short block.
    with gc_paused():
        for r in range(rounds):
            order = list(state.live)
            for key in reversed(order) if serpentine and r % 2 else order:
                state.block(key, budget / rounds, repeats, cap, block_warmup_calls)
    return {
        key: {**timing(state.samples[key], state.calls[key]), "rounds": rounds}
        for key in state.live
    }


def single_sample(ms: float) -> dict[str, Any]:
    """A timing made of one cold call (``--quick``): a smoke test, not a measurement."""
    return {"median_ms": ms, "samples_ms": [float(f"{ms:.5g}")], "repeats": 1, "warmup_calls": 0}


def max_rel_error(outputs, reference) -> float:
    """Largest ``max|out - ref| / max|ref|`` over paired arrays (inf on any mismatch)."""
    if len(outputs) != len(reference):
        return math.inf
    worst = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        out, ref = to_numpy(out), np.asarray(ref)
        if out.shape != ref.shape:
            return math.inf
        if ref.dtype.kind in "iu" or out.dtype.kind in "iu":
            if not np.array_equal(out, ref):
                return math.inf
            continue
        if ref.size == 0:
            continue
        scale = float(np.max(np.abs(ref))) or 1.0
        err = float(np.max(np.abs(out.astype(np.float64) - ref))) / scale
        if not math.isfinite(err):
            return math.inf
        worst = max(worst, err)
    return worst


def to_numpy(value) -> np.ndarray:
    """A numpy array of an output: a torch tensor, a scalar or an array."""
    if hasattr(value, "detach"):  # a torch tensor
        array: np.ndarray = value.detach().numpy()
        return array
    if np.isscalar(value):
        return np.asarray(value, dtype=np.float64)
    return np.asarray(value)


@contextlib.contextmanager
def impl_backend(impl: str) -> Iterator[None]:
    """Select fastcnn's backend for the two fastcnn implementations."""
    if impl in ("fastcnn", "numpy"):
        import fastcnn

        with fastcnn.use_backend("cython" if impl == "fastcnn" else "numpy"):
            yield
    else:
        yield


def interleave_note(settings: Settings) -> str:
    """How a case's implementations were timed, for its ``timing`` field."""
    block = settings.budget / INTERLEAVE_ROUNDS
    return (
        f"interleaved: {INTERLEAVE_ROUNDS} rounds of {block:.3g} s per implementation "
        "(textbook loops: one block)"
    )


def run_timing_note(settings: Settings) -> str:
    """How the whole run timed its implementations, for the report's header."""
    if settings.quick:
        return (
            "--quick: ops timed by their one checked call, LeNet-5 by one short block per "
            "implementation (a smoke test, not a measurement)"
        )
    block = settings.budget / INTERLEAVE_ROUNDS
    return (
        f"{INTERLEAVE_ROUNDS} alternating rounds per case (order reversed every other "
        f"round), {block:.3g} s per implementation a round, each block after the previous "
        f"library's workers stopped spinning and {BLOCK_WARMUP_CALLS} untimed calls; "
        "median of the pooled samples, so the machine's drift hits all alike; textbook "
        "loops: one block, scaled"
    )


def scale_to_batch(result: dict[str, Any], factor: float) -> None:
    """Scale a timing taken on a smaller batch linearly (every sample) to the case's batch."""
    result.update(scaled=True, scale_factor=factor)
    result["median_ms"] *= factor
    result["samples_ms"] = [float(f"{v * factor:.5g}") for v in result["samples_ms"]]


def add_speedups(entry: dict[str, Any]) -> None:
    """``speedup[impl]`` = impl's time / fastcnn's time (> 1 means fastcnn is faster)."""
    impls = entry["impls"]
    fast = impls.get("fastcnn", {})
    entry["speedup"] = {}
    if fast.get("status") != "ok":
        return
    for impl, result in impls.items():
        if impl != "fastcnn" and result.get("status") == "ok":
            entry["speedup"][impl] = result["median_ms"] / fast["median_ms"]


# ---------------------------------------------------------------------------------------
# Threads and machine information


@contextlib.contextmanager
def blas_limits(n: int) -> Iterator[None]:
    """Every BLAS library limited to ``n`` threads (when threadpoolctl is installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def fastcnn_threads(n: int) -> Iterator[None]:
    """Fastcnn's own thread count set to ``n`` (BLAS and PyTorch untouched), then restored."""
    import fastcnn

    saved = fastcnn.get_num_threads()
    fastcnn.set_num_threads(n)
    try:
        yield
    finally:
        fastcnn.set_num_threads(saved)


@contextlib.contextmanager
def limit_threads(n: int, torch) -> Iterator[None]:
    """fastcnn, BLAS (threadpoolctl) and PyTorch all limited to ``n`` threads."""
    saved_torch = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with fastcnn_threads(n), blas_limits(n):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(saved_torch)


def cpu_info() -> dict[str, Any]:
    """CPU model, cores, SIMD flags and memory, from ``/proc`` where there is one."""
    info: dict[str, Any] = {"model": platform.processor() or platform.machine()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    cores = set()
    physical = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            info["model"] = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores.add((physical, core))
        elif key == "flags" and "simd" not in info:
            flags = set(value.split())
            wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile")
            info["simd"] = [f for f in wanted if f in flags]
    info["logical_cpus"] = os.cpu_count()
    if cores:
        info["physical_cores"] = len(cores)
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def fastcnn_config() -> dict[str, Any]:
    """What ``fastcnn.show_config()`` prints, as a dict for the JSON.

    The one private call of the suite: fastcnn has no public dict of its configuration.
    """
    from fastcnn import _info

    config: dict[str, Any] = _info.config()
    return config


def machine_info(torch, threads: int) -> dict[str, Any]:
    """The machine, the versions, the thread pools and the environment of this run."""
    import scipy

    import fastcnn

    versions = {
        "python": platform.python_version(), "numpy": np.__version__,
        "scipy": scipy.__version__, "fastcnn": fastcnn.__version__,
        "torch": torch.__version__ if torch is not None else None,
    }  # fmt: skip
    for name in ("threadpoolctl", "matplotlib"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    info: dict[str, Any] = {
        "cpu": cpu_info(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "threads": threads,
        "versions": versions,
        # A stale install shadows a checkout: say which fastcnn was measured.
        "fastcnn_path": os.path.dirname(fastcnn.__file__),
        "env": {key: os.environ[key] for key in ENV_KEYS if key in os.environ},
        "fastcnn_config": fastcnn_config(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: lib.get(k) for k in ("user_api", "internal_api", "version", "architecture",
                                     "threading_layer", "num_threads", "filepath")}
            for lib in threadpool_info()
        ]  # fmt: skip
    except ImportError:
        info["threadpools"] = []
    if torch is not None:
        info["torch"] = {
            "num_threads": torch.get_num_threads(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "mkl": bool(torch.backends.mkl.is_available()),
        }
    return info


# ---------------------------------------------------------------------------------------
# The state of one run


class Context:
    """What one run shares: settings, selected cases, torch, results so far, errors."""

    def __init__(self, settings: Settings, selected: set[str], torch, unavailable) -> None:
        self.settings = settings
        self.selected = selected
        self.torch = torch
        self.unavailable: dict[str, str] = unavailable
        self.results: dict[str, Any] = {}
        self.errors: list[str] = []
        self.single_thread = False
        self._start = time.perf_counter()

    def progress(self, message: str) -> None:
        """Print ``message`` with the seconds since the start, unless ``--quiet``."""
        if self.settings.verbose:
            elapsed = time.perf_counter() - self._start
            print(f"[{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)
