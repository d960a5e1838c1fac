"""The benchmark suite: ``python benchmarks/run.py`` or ``python -m fastcnn bench``.

Times, in one process and at one thread count, side by side:

* ``fastcnn``: the compiled backend (``fastcnn.use_backend("cython")``);
* ``numpy``: fastcnn's pure-numpy reference backend (``use_backend("numpy")``);
* ``loops``: textbook code, one Python loop iteration per output pixel as beginners write
  it, timed on a small batch (one sample) and scaled linearly to the case's batch size;
  always labelled "scaled";
* ``torch``: PyTorch CPU, when it imports (``--no-torch`` leaves it out).

Cases: conv2d and 2x2 pooling (max with indices, avg), forward and forward+backward, on
the shapes of issue 4; LeNet-5 training step (batch 64) and inference (batch 256) in
images/s; one MNIST-sized epoch of synthetic data; the float32 matrix-product GFLOP/s of
the machine as the compute-efficiency reference; peak memory of the training step and
convolution scratch in fresh interpreters; ``import fastcnn`` time. Then every target of
issue 4 is evaluated (PASS/FAIL with the measured ratio) and the results are written as
a printed table, ``latest.json`` (every sample), ``latest.md`` and ``latest.png``.

Design
------
* A case builds its inputs once and gives one zero-argument callable per implementation.
  Before anything is timed, each implementation's outputs are checked against an oracle
  (the numpy backend in float64 for single ops; for LeNet-5, float32 cross-checks of
  logits, loss and every parameter gradient). An implementation that disagrees is not
  timed: its cell reads WRONG and :func:`main` returns 1, so a fast but wrong kernel
  cannot post a number.
* :func:`_measure` warms a callable up, then calls it with garbage collection disabled
  until the time budget is spent (at least ``min_repeats`` calls), keeping every sample;
  tables report the median.
* The implementations compared in one case are not timed one after the other but in
  alternating rounds (:func:`_measure_interleaved`): this suite runs on shared machines
  whose speed drifts by up to 2x within seconds, and a ratio of two medians taken seconds
  apart measures the drift as much as the code. Each round gives every implementation a
  short block of the budget (reversing the order every other round, so no library is
  always the one that follows the same other); the median is that of all rounds' samples
  pooled. A block starts once the previous library's thread pool has stopped spinning
  (:func:`_wait_for_quiet_threads`), so no library is timed against another's idle
  workers.
* Memory is measured where it can be compared honestly: the peak RSS increase over a few
  training steps in a fresh interpreter per implementation (``python -m fastcnn._bench
  --memory-worker IMPL``; RSS also sees PyTorch's and the compiled kernels' own
  allocations), plus tracemalloc's peak for the numpy-side implementations.
* Only the standard library and numpy are imported at module level; PyTorch and
  matplotlib are imported when used.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fnmatch
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["main"]

IMPLS = ("fastcnn", "numpy", "loops", "torch")
IMPL_LABELS = {
    "fastcnn": "fastcnn (compiled)",
    "numpy": "fastcnn numpy backend",
    "loops": "textbook loops (scaled)",
    "torch": "PyTorch CPU",
}

OP_TOLERANCE = 1e-4  # max |out - oracle| / max |oracle|, float32 against a float64 oracle
MODEL_TOLERANCE = 1e-3  # float32 against float32 through a whole network
LENET_TRAIN_BATCH = 64
LENET_INFER_BATCH = 256
EPOCH_IMAGES = 60_000
LEARNING_RATE = 0.01
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
RESULT_PREFIX = "FASTCNN_BENCH_RESULT "
_ENV_KEYS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS", "FASTCNN_BACKEND",
)  # fmt: skip

# (name, N, C_in, C_out, H=W, k, padding): issue 4's convolution shapes.
CONV_SHAPES = (
    ("lenet_c1", 64, 1, 6, 32, 5, 0),
    ("lenet_c2", 64, 6, 16, 14, 5, 0),
    ("digits", 256, 1, 16, 8, 3, 1),
    ("mid", 32, 32, 64, 32, 3, 1),
    ("large", 16, 64, 64, 56, 3, 1),
)
# (N, C, H=W) for 2x2 stride-2 pooling.
POOL_SHAPES = ((64, 6, 28), (32, 64, 32), (16, 64, 56))

# Everything a run can measure, in order; ``--cases`` selects among these ids.
CASE_IDS = (
    *(f"conv_{name}" for name, *_ in CONV_SHAPES),
    *(f"{kind}pool_{n}x{c}x{hw}" for kind in ("max", "avg") for n, c, hw in POOL_SHAPES),
    "lenet5_train",
    "lenet5_infer",
    "lenet5_threads1",
    "lenet5_epoch",
    "lenet5_memory",
    "conv_scratch",
    "import",
)
QUICK_CASES = (
    "conv_lenet_c1", "conv_digits", "maxpool_64x6x28", "avgpool_64x6x28",
    "lenet5_train", "lenet5_infer", "lenet5_epoch", "lenet5_memory", "import",
)  # fmt: skip


@dataclass
class _Settings:
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


def _warm_up(fn: Callable[[], object], seconds: float, min_calls: int) -> int:
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
def _gc_paused() -> Iterator[None]:
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


def _time_calls(
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


def _running_threads() -> int | None:
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


def _wait_for_quiet_threads(timeout: float = QUIET_TIMEOUT) -> float:
    """Sleep until no other thread of this process runs (at most ``timeout`` s).

    A thread pool does not park its workers the moment a call returns: they spin first,
    on the same cores the next library's threads need. numpy's OpenBLAS spins one
    worker for ~0.12 s after a threaded product, longer than a timing block, and on the
    2-core machine fastcnn's or PyTorch's calls right after ran up to 2x slower. Waiting
    for the spinning to end times every library on a machine its predecessor has left.
    Returns the seconds waited.
    """
    begin = time.perf_counter()
    while _running_threads() and time.perf_counter() - begin < timeout:
        time.sleep(0.001)
    return time.perf_counter() - begin


def _timing(seconds: list[float], warmup_calls: int) -> dict[str, Any]:
    """The timing record of an implementation: median and every sample, in milliseconds."""
    ms = [1e3 * s for s in seconds]
    return {
        "median_ms": statistics.median(ms),
        "samples_ms": [float(f"{v:.5g}") for v in ms],
        "repeats": len(ms),
        "warmup_calls": warmup_calls,
    }


def _measure(
    fn: Callable[[], object],
    budget: float,
    min_repeats: int,
    warmup: float = 0.0,
    warmup_calls: int = 1,
) -> dict[str, Any]:
    """Warm ``fn`` up, then time calls until ``budget`` seconds and ``min_repeats`` calls.

    Garbage collection is off while timing; every sample is kept (in milliseconds).
    """
    calls = _warm_up(fn, warmup, warmup_calls)
    with _gc_paused():
        samples = _time_calls(fn, budget, min_repeats)
    return _timing(samples, calls)


_K = TypeVar("_K", bound=Hashable)


def _no_context(key: object) -> AbstractContextManager[None]:
    """The default ``contexts`` of :func:`_measure_interleaved`: nothing to enter."""
    return contextlib.nullcontext()


def _measure_interleaved(
    fns: Mapping[_K, Callable[[], object]],
    budget: float,
    min_repeats: int,
    warmup: float = 0.0,
    warmup_calls: int = 1,
    rounds: int = INTERLEAVE_ROUNDS,
    contexts: Callable[[_K], AbstractContextManager[Any]] = _no_context,
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
    budget : float
        Seconds of timed calls per implementation, summed over the rounds.
    min_repeats : int
        Timed calls per implementation, at least, summed over the rounds.
    warmup, warmup_calls : float, int
        Initial warm-up of each implementation, once, before the first round: at least
        ``warmup_calls`` calls and about ``warmup`` seconds (as :func:`_measure`).
    rounds : int
        Number of rounds. ``rounds=1`` with ``block_warmup_calls=0`` amounts to
        :func:`_measure` of each implementation in turn.
    contexts : callable, optional
        ``contexts(key)`` returns the context manager an implementation runs under (its
        backend, its thread count); it is entered afresh for the warm-up and for every
        block, since the implementations alternate.
    block_warmup_calls : int
        Untimed calls at the start of every block, after the switch from the previous
        implementation (whose thread pool may still be spinning on the cores).
    serpentine : bool
        Reverse the order every other round (A B C, C B A, A B C, ...) instead of
        repeating it (A B C, A B C, ...). A switch can cost the next implementation more
        than its warm-up calls absorb: numpy's OpenBLAS workers keep spinning for a while
        after the numpy backend's last product, and on the project's 2-core machine
        whichever library came right after it measured 10-20% slower. Repeating the
        order puts the same library after numpy every round; the serpentine order puts
        the first and the last each after the middle one in half the rounds (after
        themselves in the other half), so with numpy in the middle fastcnn and PyTorch
        pay alike. With two implementations both orders are balanced; strict
        alternation switches twice as often.
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
    block = budget / rounds
    repeats = max(1, min_repeats // rounds)
    cap = max(1, MAX_SAMPLES // rounds)  # the pooled samples stay within MAX_SAMPLES
    live = dict(fns)
    samples: dict[_K, list[float]] = {key: [] for key in fns}
    calls: dict[_K, int] = dict.fromkeys(fns, 0)

    def run(key: _K, body: Callable[[_K, Callable[[], object]], None]) -> None:
        """``body(key, fn)`` under the implementation's context; records a failure."""
        try:
            with contexts(key):
                body(key, live[key])
        except Exception as exc:
            if failures is None:
                raise
            failures[key] = exc
            del live[key]

    def warm(key: _K, fn: Callable[[], object]) -> None:
        calls[key] += _warm_up(fn, warmup, warmup_calls)

    def block_of_calls(key: _K, fn: Callable[[], object]) -> None:
        _wait_for_quiet_threads()
        for _ in range(block_warmup_calls):
            fn()
        calls[key] += block_warmup_calls
        samples[key] += _time_calls(fn, block, repeats, cap)

    for key in list(live):
        run(key, warm)
    # One collection for the whole run of rounds: gc.collect() costs ~0.1 s once PyTorch
    # is imported, too much to pay before every short block.
    with _gc_paused():
        for r in range(rounds):
            order = list(live)
            for key in reversed(order) if serpentine and r % 2 else order:
                run(key, block_of_calls)
    return {key: {**_timing(samples[key], calls[key]), "rounds": rounds} for key in live}


def _single_sample(ms: float) -> dict[str, Any]:
    """A timing made of one cold call (``--quick``): a smoke test, not a measurement."""
    return {"median_ms": ms, "samples_ms": [float(f"{ms:.5g}")], "repeats": 1, "warmup_calls": 0}


def _max_rel_error(outputs, reference) -> float:
    """Largest ``max|out - ref| / max|ref|`` over paired arrays (inf on any mismatch)."""
    if len(outputs) != len(reference):
        return math.inf
    worst = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        out, ref = _to_numpy(out), np.asarray(ref)
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


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        array: np.ndarray = value.detach().numpy()
        return array
    if np.isscalar(value):
        return np.asarray(value, dtype=np.float64)
    return np.asarray(value)


# ---------------------------------------------------------------------------------------
# Textbook loops: one Python iteration per output pixel, as beginners (and course notes)
# write them. Window sums are numpy calls; everything else is a plain loop.


def _loops_conv2d(x, w, b, stride=(1, 1), pad=(0, 0)):
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    h_out = (h + 2 * pad[0] - kh) // stride[0] + 1
    w_out = (wd + 2 * pad[1] - kw) // stride[1] + 1
    y = np.empty((n, c_out, h_out, w_out), dtype=x.dtype)
    for i in range(n):
        for f in range(c_out):
            for r in range(h_out):
                for c in range(w_out):
                    r0, c0 = r * stride[0], c * stride[1]
                    window = xp[i, :, r0 : r0 + kh, c0 : c0 + kw]
                    y[i, f, r, c] = np.sum(window * w[f]) + (0 if b is None else b[f])
    return y


def _loops_conv2d_backward(gy, x, w, stride=(1, 1), pad=(0, 0), needs_input_grad=True):
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    gb = np.zeros(c_out, dtype=w.dtype)
    for i in range(n):
        for f in range(c_out):
            for r in range(gy.shape[2]):
                for c in range(gy.shape[3]):
                    g = gy[i, f, r, c]
                    r0, c0 = r * stride[0], c * stride[1]
                    gw[f] += g * xp[i, :, r0 : r0 + kh, c0 : c0 + kw]
                    if needs_input_grad:
                        gxp[i, :, r0 : r0 + kh, c0 : c0 + kw] += g * w[f]
                    gb[f] += g
    gx = gxp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + wd].copy() if needs_input_grad else None
    return gx, gw, gb


def _loops_max_pool2d(x, k=(2, 2), s=(2, 2)):
    n, ch, h, wd = x.shape
    h_out, w_out = (h - k[0]) // s[0] + 1, (wd - k[1]) // s[1] + 1
    y = np.empty((n, ch, h_out, w_out), dtype=x.dtype)
    idx = np.empty((n, ch, h_out, w_out), dtype=np.int64)
    for i in range(n):
        for c in range(ch):
            for r in range(h_out):
                for q in range(w_out):
                    r0, q0 = r * s[0], q * s[1]
                    window = x[i, c, r0 : r0 + k[0], q0 : q0 + k[1]]
                    j = int(np.argmax(window))
                    y[i, c, r, q] = window.flat[j]
                    idx[i, c, r, q] = (r0 + j // k[1]) * wd + q0 + j % k[1]
    return y, idx


def _loops_max_pool2d_backward(gy, idx, shape):
    gx = np.zeros(shape, dtype=gy.dtype)
    wd = shape[3]
    for i in range(gy.shape[0]):
        for c in range(gy.shape[1]):
            for r in range(gy.shape[2]):
                for q in range(gy.shape[3]):
                    j = idx[i, c, r, q]
                    gx[i, c, j // wd, j % wd] += gy[i, c, r, q]
    return gx


def _loops_avg_pool2d(x, k=(2, 2), s=(2, 2)):
    n, ch, h, wd = x.shape
    h_out, w_out = (h - k[0]) // s[0] + 1, (wd - k[1]) // s[1] + 1
    y = np.empty((n, ch, h_out, w_out), dtype=x.dtype)
    for i in range(n):
        for c in range(ch):
            for r in range(h_out):
                for q in range(w_out):
                    r0, q0 = r * s[0], q * s[1]
                    y[i, c, r, q] = np.mean(x[i, c, r0 : r0 + k[0], q0 : q0 + k[1]])
    return y


def _loops_avg_pool2d_backward(gy, shape, k=(2, 2), s=(2, 2)):
    gx = np.zeros(shape, dtype=gy.dtype)
    area = k[0] * k[1]
    for i in range(gy.shape[0]):
        for c in range(gy.shape[1]):
            for r in range(gy.shape[2]):
                for q in range(gy.shape[3]):
                    r0, q0 = r * s[0], q * s[1]
                    gx[i, c, r0 : r0 + k[0], q0 : q0 + k[1]] += gy[i, c, r, q] / area
    return gx


# ---------------------------------------------------------------------------------------
# Single-op cases: conv2d and pooling


class _OpCase:
    """A single op on fixed inputs, in forward ('fwd') and forward+backward ('fwd+bwd')."""

    id: str
    group: str
    label: str
    shape: str
    batch: int
    flops_fwd: float | None = None
    passes = ("fwd", "fwd+bwd")
    loops_batch = 1
    _oracle: dict[int, tuple[Any, ...]]  # batch -> oracle outputs, filled by oracle()

    def make(self, impl: str, pass_: str, batch: int, torch) -> Callable[[], tuple[Any, ...]]:
        raise NotImplementedError

    def oracle(self, pass_: str, batch: int) -> tuple[Any, ...]:
        """float64 outputs of the numpy reference backend for the first ``batch`` samples."""
        raise NotImplementedError

    def flops(self, pass_: str) -> float | None:
        if self.flops_fwd is None:
            return None
        # Backward computes both the input and the weight gradient: twice the forward.
        return self.flops_fwd * (1 if pass_ == "fwd" else 3)


class _ConvCase(_OpCase):
    group = "conv"

    def __init__(self, name, n, c_in, c_out, hw, k, pad, rng: np.random.Generator) -> None:
        self.id, self.label, self.batch = f"conv_{name}", name, n
        self.shape = f"N={n} {c_in}->{c_out} {hw}x{hw} k{k}" + (f" pad{pad}" if pad else "")
        self.pad = pad
        h_out = hw + 2 * pad - k + 1
        self.flops_fwd = 2.0 * n * c_out * h_out * h_out * c_in * k * k
        self.x = rng.standard_normal((n, c_in, hw, hw), dtype=np.float32)
        scale = 1.0 / math.sqrt(c_in * k * k)
        self.w = (rng.standard_normal((c_out, c_in, k, k)) * scale).astype(np.float32)
        self.b = (0.1 * rng.standard_normal(c_out)).astype(np.float32)
        self.gy = rng.standard_normal((n, c_out, h_out, h_out), dtype=np.float32)
        self._oracle = {}

    def make(self, impl, pass_, batch, torch):
        x, w, b, gy, p = self.x[:batch], self.w, self.b, self.gy[:batch], self.pad
        if impl in ("fastcnn", "numpy"):
            from fastcnn import functional as F

            if pass_ == "fwd":
                return lambda: (F.conv2d(x, w, b, padding=p),)

            def fastcnn_fwd_bwd():
                y = F.conv2d(x, w, b, padding=p)
                return (y, *F.conv2d_backward(gy, x, w, padding=p))

            return fastcnn_fwd_bwd
        if impl == "loops":
            if pass_ == "fwd":
                return lambda: (_loops_conv2d(x, w, b, pad=(p, p)),)

            def loops_fwd_bwd():
                y = _loops_conv2d(x, w, b, pad=(p, p))
                return (y, *_loops_conv2d_backward(gy, x, w, pad=(p, p)))

            return loops_fwd_bwd
        tx, tw, tb, tgy = (torch.from_numpy(a) for a in (x, w, b, gy))
        conv, conv_backward = torch.nn.functional.conv2d, torch.ops.aten.convolution_backward
        if pass_ == "fwd":

            def torch_fwd():
                with torch.no_grad():
                    return (conv(tx, tw, tb, padding=p),)

            return torch_fwd

        def torch_fwd_bwd():
            with torch.no_grad():
                y = conv(tx, tw, tb, padding=p)
                grads = conv_backward(
                    tgy, tx, tw, [tw.shape[0]], [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                    [True, True, True],
                )  # fmt: skip
            return (y, *grads)

        return torch_fwd_bwd

    def oracle(self, pass_, batch):
        if batch not in self._oracle:
            import fastcnn
            from fastcnn import functional as F

            x, w = self.x[:batch].astype(np.float64), self.w.astype(np.float64)
            b, gy = self.b.astype(np.float64), self.gy[:batch].astype(np.float64)
            with fastcnn.use_backend("numpy"):
                y = F.conv2d(x, w, b, padding=self.pad)
                self._oracle[batch] = (y, *F.conv2d_backward(gy, x, w, padding=self.pad))
        out = self._oracle[batch]
        return out[:1] if pass_ == "fwd" else out


class _PoolCase(_OpCase):
    group = "pool"

    def __init__(self, kind: str, n: int, c: int, hw: int, rng: np.random.Generator) -> None:
        self.kind = kind
        self.id, self.label, self.batch = f"{kind}pool_{n}x{c}x{hw}", f"{kind}pool", n
        self.shape = f"N={n} C={c} {hw}x{hw} k2 s2"
        self.x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
        self.gy = rng.standard_normal((n, c, hw // 2, hw // 2), dtype=np.float32)
        self._oracle = {}

    def make(self, impl, pass_, batch, torch):
        x, gy, shape = self.x[:batch], self.gy[:batch], self.x[:batch].shape
        if impl in ("fastcnn", "numpy"):
            from fastcnn import functional as F

            if self.kind == "max":
                if pass_ == "fwd":
                    return lambda: F.max_pool2d(x, 2)

                def fastcnn_max():
                    y, idx = F.max_pool2d(x, 2)
                    return y, idx, F.max_pool2d_backward(gy, idx, shape)

                return fastcnn_max
            if pass_ == "fwd":
                return lambda: (F.avg_pool2d(x, 2),)
            return lambda: (F.avg_pool2d(x, 2), F.avg_pool2d_backward(gy, shape, 2))
        if impl == "loops":
            if self.kind == "max":
                if pass_ == "fwd":
                    return lambda: _loops_max_pool2d(x)

                def loops_max():
                    y, idx = _loops_max_pool2d(x)
                    return y, idx, _loops_max_pool2d_backward(gy, idx, shape)

                return loops_max
            if pass_ == "fwd":
                return lambda: (_loops_avg_pool2d(x),)
            return lambda: (_loops_avg_pool2d(x), _loops_avg_pool2d_backward(gy, shape))
        tx, tgy = torch.from_numpy(x), torch.from_numpy(gy)
        tF, aten = torch.nn.functional, torch.ops.aten
        if self.kind == "max":

            def torch_max():
                with torch.no_grad():
                    y, idx = tF.max_pool2d(tx, 2, 2, return_indices=True)
                    if pass_ == "fwd":
                        return y, idx
                    gx = aten.max_pool2d_with_indices_backward(
                        tgy, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, idx
                    )
                return y, idx, gx

            return torch_max

        def torch_avg():
            with torch.no_grad():
                y = tF.avg_pool2d(tx, 2, 2)
                if pass_ == "fwd":
                    return (y,)
                return y, aten.avg_pool2d_backward(
                    tgy, tx, [2, 2], [2, 2], [0, 0], False, True, None
                )

        return torch_avg

    def oracle(self, pass_, batch):
        if batch not in self._oracle:
            import fastcnn
            from fastcnn import functional as F

            x, gy = self.x[:batch].astype(np.float64), self.gy[:batch].astype(np.float64)
            with fastcnn.use_backend("numpy"):
                if self.kind == "max":
                    y, idx = F.max_pool2d(x, 2)
                    out: tuple[np.ndarray, ...] = (y, idx, F.max_pool2d_backward(gy, idx, x.shape))
                else:
                    out = (F.avg_pool2d(x, 2), F.avg_pool2d_backward(gy, x.shape, 2))
            self._oracle[batch] = out
        out = self._oracle[batch]
        if pass_ == "fwd":
            return out[:2] if self.kind == "max" else out[:1]
        return out


def _op_cases(selected: set[str], rng: np.random.Generator) -> list[_OpCase]:
    cases: list[_OpCase] = []
    for name, n, c_in, c_out, hw, k, pad in CONV_SHAPES:
        if f"conv_{name}" in selected:
            cases.append(_ConvCase(name, n, c_in, c_out, hw, k, pad, rng=rng))
    for kind in ("max", "avg"):
        for n, c, hw in POOL_SHAPES:
            if f"{kind}pool_{n}x{c}x{hw}" in selected:
                cases.append(_PoolCase(kind, n, c, hw, rng))
    return cases


@contextlib.contextmanager
def _impl_backend(impl: str) -> Iterator[None]:
    """Select fastcnn's backend for the two fastcnn implementations."""
    if impl in ("fastcnn", "numpy"):
        import fastcnn

        with fastcnn.use_backend("cython" if impl == "fastcnn" else "numpy"):
            yield
    else:
        yield


def _interleave_note(settings: _Settings) -> str:
    """How a case's implementations were timed, for its ``timing`` field."""
    block = settings.budget / INTERLEAVE_ROUNDS
    return (
        f"interleaved: {INTERLEAVE_ROUNDS} rounds of {block:.3g} s per implementation "
        "(textbook loops: one block)"
    )


def _run_timing_note(settings: _Settings) -> str:
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


def _run_op_case(case: _OpCase, pass_: str, ctx: _Context) -> dict[str, Any]:
    """Check, then time, every implementation of one op case and pass."""
    settings = ctx.settings
    flops = case.flops(pass_)
    entry: dict[str, Any] = {
        "case": case.id, "group": case.group, "label": case.label, "pass": pass_,
        "shape": case.shape, "batch": case.batch, "unit": "ms", "flops": flops,
        "reference": "numpy backend, float64",
        "timing": (
            "one checked call per implementation (--quick)" if settings.quick
            else _interleave_note(settings)
        ),
        "impls": {},
    }  # fmt: skip
    outcome: dict[str, dict[str, Any]] = {}
    fns: dict[str, Callable[[], object]] = {}
    checked: dict[str, tuple[float, float]] = {}  # impl: (max relative error, first call ms)
    batches = {impl: case.loops_batch if impl == "loops" else case.batch for impl in IMPLS}

    def raised(impl: str, exc: Exception) -> None:
        outcome[impl] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        ctx.errors.append(f"{case.id} {pass_}: {IMPL_LABELS[impl]} raised {exc!r}")

    # Every implementation is checked before any is timed: the rounds alternate between
    # the implementations, so only the ones that passed may take part.
    for impl in IMPLS:
        skip = ctx.unavailable.get(impl)
        if skip:
            outcome[impl] = {"status": "skipped", "reason": skip}
            continue
        try:
            fn = case.make(impl, pass_, batches[impl], ctx.torch)
            with _impl_backend(impl):
                t0 = time.perf_counter()
                outputs = fn()
                first_ms = 1e3 * (time.perf_counter() - t0)
                err = _max_rel_error(outputs, case.oracle(pass_, batches[impl]))
                del outputs
        except Exception as exc:  # one failing implementation must not stop the suite
            raised(impl, exc)
            continue
        if err > OP_TOLERANCE:
            outcome[impl] = {"status": "wrong", "max_rel_error": err}
            ctx.errors.append(
                f"{case.id} {pass_}: {IMPL_LABELS[impl]} disagrees with the float64 "
                f"oracle (max relative error {err:.3g} > {OP_TOLERANCE:g}); not timed"
            )
            continue
        fns[impl], checked[impl] = fn, (err, first_ms)

    timings: dict[str, dict[str, Any]] = {}
    failures: dict[str, Exception] = {}
    if settings.quick:  # smoke test: the checked call is the one sample
        timings = {impl: _single_sample(checked[impl][1]) for impl in fns}
    else:
        if "loops" in fns:  # seconds per call: one block on its own, scaled below
            try:
                with _impl_backend("loops"):
                    timings["loops"] = _measure(
                        fns["loops"], settings.loops_budget, 1, warmup_calls=0
                    )
            except Exception as exc:
                failures["loops"] = exc
        compared = {impl: fn for impl, fn in fns.items() if impl != "loops"}
        timings |= _measure_interleaved(
            compared, settings.budget, settings.min_repeats, settings.warmup,
            settings.warmup_calls, contexts=_impl_backend, failures=failures,
        )  # fmt: skip
    for impl in fns:
        if impl in failures:
            raised(impl, failures[impl])
            continue
        batch = batches[impl]
        result = {"status": "ok", "max_rel_error": checked[impl][0], **timings[impl]}
        result["measured_batch"] = batch
        if batch != case.batch:  # scale every sample linearly to the case's batch
            factor = case.batch / batch
            result["scaled"] = True
            result["scale_factor"] = factor
            result["median_ms"] *= factor
            result["samples_ms"] = [float(f"{v * factor:.5g}") for v in result["samples_ms"]]
        if flops:
            result["gflops"] = flops / (result["median_ms"] * 1e6)
        outcome[impl] = result
    entry["impls"] = {impl: outcome[impl] for impl in IMPLS}  # in table order
    _add_speedups(entry)
    ref = ctx.results.get("matmul", {}).get("reference_gflops")
    fast = entry["impls"].get("fastcnn", {})
    if ref and fast.get("gflops"):
        entry["pct_of_matmul"] = 100.0 * fast["gflops"] / ref
    return entry


def _add_speedups(entry: dict[str, Any]) -> None:
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
# Matrix-product reference


def _bench_matmul(settings: _Settings) -> dict[str, Any]:
    """float32 GEMM GFLOP/s of numpy's and scipy's BLAS; the better one is the reference."""
    n = settings.matmul_size
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    out: dict[str, Any] = {"size": n, "flops": flops}
    numpy_timing = _measure(lambda: np.matmul(a, b, out=c), settings.budget, 3, settings.warmup)
    out["numpy"] = {**numpy_timing, "gflops": flops / (numpy_timing["median_ms"] * 1e6)}
    try:
        from scipy.linalg.blas import sgemm

        # b.T and a.T are Fortran-ordered views: sgemm computes (a @ b).T without copies.
        scipy_timing = _measure(lambda: sgemm(1.0, b.T, a.T), settings.budget, 3, settings.warmup)
        if _max_rel_error([sgemm(1.0, b.T, a.T).T], [np.matmul(a, b)]) > 1e-4:
            raise ArithmeticError("scipy sgemm disagrees with numpy matmul")
        out["scipy"] = {**scipy_timing, "gflops": flops / (scipy_timing["median_ms"] * 1e6)}
    except Exception as exc:
        out["scipy"] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    best = max(
        (src for src in ("numpy", "scipy") if "gflops" in out[src]),
        key=lambda src: out[src]["gflops"],
    )
    out["reference"] = f"{best} float32 matmul {n}x{n}"
    out["reference_gflops"] = out[best]["gflops"]
    return out


# ---------------------------------------------------------------------------------------
# LeNet-5: fastcnn's model, its PyTorch twin and its textbook-loops twin


def _fastcnn_lenet() -> tuple[Any, str]:
    """Fastcnn's LeNet-5 for 28x28 input (falls back to the same stack built from layers)."""
    try:
        from fastcnn.models import lenet5

        try:
            model, source = lenet5(input_size=28, random_state=0), "lenet5(random_state=0)"
        except TypeError:  # an older signature
            model, source = lenet5(), "lenet5()"
        if model.output_shape((1, 28, 28)) != (10,):  # pragma: no cover - defensive
            raise ValueError(f"lenet5() does not map (1, 28, 28) to (10,): {model!r}")
        return model, f"fastcnn.models.{source}"
    except (ImportError, AttributeError):
        from fastcnn.layers import AvgPool2D, Conv2D, Dense, Flatten, Tanh
        from fastcnn.model import Sequential

        model = Sequential(
            Conv2D(1, 6, 5, padding=2, rng=0), Tanh(), AvgPool2D(2),
            Conv2D(6, 16, 5, rng=1), Tanh(), AvgPool2D(2), Flatten(),
            Dense(400, 120, rng=2), Tanh(), Dense(120, 84, rng=3), Tanh(), Dense(84, 10, rng=4),
        )  # fmt: skip
        return model, "LeNet-5 built by the benchmark (fastcnn.models.lenet5 not available)"


def _torch_twin(model, torch):
    """An ``nn.Sequential`` with the same layers and a copy of the same weights."""
    nn = torch.nn
    modules = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            module = nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, layer.dilation, layer.groups, bias=layer.use_bias,
            )  # fmt: skip
        elif kind == "Dense":
            module = nn.Linear(layer.in_features, layer.out_features, bias=layer.use_bias)
        elif kind == "AvgPool2D":
            module = nn.AvgPool2d(
                layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                layer.count_include_pad, layer.divisor_override,
            )  # fmt: skip
        elif kind == "MaxPool2D":
            module = nn.MaxPool2d(
                layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                ceil_mode=layer.ceil_mode,
            )  # fmt: skip
        elif kind in ("Tanh", "ReLU", "Sigmoid", "Flatten"):
            module = getattr(nn, kind)()
        elif kind == "LeakyReLU":
            module = nn.LeakyReLU(layer.negative_slope)
        elif kind == "Dropout":
            module = nn.Dropout(layer.p)
        else:
            raise NotImplementedError(f"no PyTorch twin for layer {layer!r}")
        modules.append(module)
    twin = nn.Sequential(*modules)
    with torch.no_grad():
        for layer, module in zip(model.layers, modules, strict=True):
            for name, value in layer.params.items():
                getattr(module, name).copy_(torch.from_numpy(value))
    return twin


class _LoopsNet:
    """The same network as a beginner writes it: loops per output pixel, numpy for dense."""

    def __init__(self, model) -> None:
        self.layers: list[tuple[Any, ...]] = []
        for layer in model.layers:
            kind = type(layer).__name__
            params = {name: value.copy() for name, value in layer.params.items()}
            if kind == "Conv2D":
                if layer.groups != 1 or layer.dilation != (1, 1) or isinstance(layer.padding, str):
                    raise NotImplementedError(f"textbook loops support plain convs, not {layer!r}")
            elif kind in ("AvgPool2D", "MaxPool2D"):
                if layer.padding != (0, 0) or layer.ceil_mode:
                    raise NotImplementedError(f"textbook loops support plain pools, not {layer!r}")
            elif kind not in ("Dense", "Tanh", "ReLU", "Flatten"):
                raise NotImplementedError(f"no textbook-loops version of {layer!r}")
            self.layers.append((kind, layer, params, {}))

    def forward(self, x: np.ndarray) -> np.ndarray:
        for kind, layer, p, cache in self.layers:
            cache["x"] = x
            if kind == "Conv2D":
                x = _loops_conv2d(x, p["weight"], p.get("bias"), layer.stride, layer.padding)
            elif kind == "MaxPool2D":
                x, cache["idx"] = _loops_max_pool2d(x, layer.kernel_size, layer.stride)
            elif kind == "AvgPool2D":
                x = _loops_avg_pool2d(x, layer.kernel_size, layer.stride)
            elif kind == "Tanh":
                x = np.tanh(x)
            elif kind == "ReLU":
                x = np.maximum(x, 0)
            elif kind == "Flatten":
                x = x.reshape(x.shape[0], -1)
            else:  # Dense
                x = x @ p["weight"].T + (p["bias"] if "bias" in p else 0)
            cache["y"] = x
        return x

    def backward(self, g: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            kind, layer, p, cache = self.layers[i]
            x = cache["x"]
            if kind == "Conv2D":
                g, gw, gb = _loops_conv2d_backward(
                    g, x, p["weight"], layer.stride, layer.padding, needs_input_grad=i > 0
                )
                grads[i] = {"weight": gw, "bias": gb}
            elif kind == "MaxPool2D":
                g = _loops_max_pool2d_backward(g, cache["idx"], x.shape)
            elif kind == "AvgPool2D":
                g = _loops_avg_pool2d_backward(g, x.shape, layer.kernel_size, layer.stride)
            elif kind == "Tanh":
                g = g * (1 - cache["y"] ** 2)
            elif kind == "ReLU":
                g = g * (x > 0)
            elif kind == "Flatten":
                g = g.reshape(x.shape)
            else:
                grads[i] = {"weight": g.T @ x, "bias": g.sum(axis=0)}
                g = g @ p["weight"]
        return grads

    def train_step(
        self, x: np.ndarray, y: np.ndarray, lr: float
    ) -> tuple[float, dict[int, dict[str, np.ndarray]]]:
        logits = self.forward(x)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss = float(-np.mean(np.log(p[rows, y])))
        p[rows, y] -= 1
        grads = self.backward(p / len(y))
        for i, layer_grads in grads.items():
            for name, g in layer_grads.items():
                if name in self.layers[i][2]:
                    self.layers[i][2][name] -= lr * g
        return loss, grads


def _lenet_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic MNIST-shaped data: pixels in [0, 1), labels 0-9."""
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def _fastcnn_train_step(model, x, y) -> Callable[[], float]:
    from fastcnn.losses import softmax_cross_entropy
    from fastcnn.optim import SGD

    params = model.parameters()
    optimizer = SGD(lr=LEARNING_RATE)
    optimizer.bind(params)

    def step() -> float:
        out = model.forward(x, training=True)
        loss, grad = softmax_cross_entropy(out, y)
        model.backward(grad, input_grad=False)
        optimizer.step(params)
        return loss

    return step


def _torch_train_step(twin, torch, x, y) -> Callable[[], Any]:
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.SGD(twin.parameters(), lr=LEARNING_RATE)
    cross_entropy = torch.nn.functional.cross_entropy

    def step() -> Any:  # the loss, a torch tensor
        optimizer.zero_grad()
        loss = cross_entropy(twin(tx), ty)
        loss.backward()
        optimizer.step()
        return loss

    return step


def _check_lenet(model, twin, loops, torch, x, y, x_infer, ctx: _Context) -> dict[str, float]:
    """Check logits, loss and every gradient of each implementation; returns the errors."""
    import fastcnn
    from fastcnn.losses import softmax_cross_entropy

    def fastcnn_outputs(xb, yb, backend):
        with fastcnn.use_backend(backend):
            logits = model.forward(xb, training=True)
            loss, grad = softmax_cross_entropy(logits, yb)
            model.backward(grad, input_grad=False)
            grads = [g.copy() for _, g in model.parameters()]
            return [logits, loss, *grads, model.forward(x_infer)]

    reference = fastcnn_outputs(x, y, "numpy")
    errors: dict[str, float] = {}
    if "fastcnn" not in ctx.unavailable:
        errors["fastcnn"] = _max_rel_error(fastcnn_outputs(x, y, "cython"), reference)
    errors["numpy"] = 0.0  # the reference for this check
    if twin is not None:
        twin.zero_grad()
        logits = twin(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        loss.backward()
        with torch.no_grad():
            infer = twin(torch.from_numpy(x_infer))
        outputs = [logits, loss, *(p.grad for p in twin.parameters()), infer]
        errors["torch"] = _max_rel_error(outputs, reference)
    if loops is not None:
        small = fastcnn_outputs(x[:1], y[:1], "numpy")
        logits = loops.forward(x[:1])
        loss, grads = loops.train_step(x[:1], y[:1], lr=0.0)
        flat = [
            g for i in sorted(grads) for name, g in grads[i].items() if name in loops.layers[i][2]
        ]
        outputs = [logits, loss, *flat, loops.forward(x_infer[:1])]
        errors["loops"] = _max_rel_error(outputs, [*small[:-1], reference[-1][:1]])
    return errors


def _run_lenet(ctx: _Context) -> list[dict[str, Any]]:
    """LeNet-5 training step (batch 64) and inference (batch 256), every implementation."""
    settings, torch = ctx.settings, ctx.torch
    rng = np.random.default_rng(2)
    model, source = _fastcnn_lenet()
    x, y = _lenet_data(rng, LENET_TRAIN_BATCH)
    x_infer, _ = _lenet_data(rng, LENET_INFER_BATCH)
    ctx.results["lenet5_model"] = {"source": source, "layers": [repr(layer) for layer in model]}
    twins: dict[str, Any] = {}
    reasons = dict(ctx.unavailable)
    for impl, build in (
        ("torch", lambda: _torch_twin(model, torch)),
        ("loops", lambda: _LoopsNet(model)),
    ):
        if impl in reasons:
            continue
        try:
            twins[impl] = build()
        except NotImplementedError as exc:
            reasons[impl] = str(exc)
    errors = _check_lenet(model, twins.get("torch"), twins.get("loops"), torch, x, y, x_infer, ctx)
    train_fns: dict[str, Callable[[], object]] = {}
    infer_fns: dict[str, Callable[[], object]] = {}
    if "fastcnn" not in reasons:
        train_fns["fastcnn"] = _fastcnn_train_step(model, x, y)
        infer_fns["fastcnn"] = lambda: model.forward(x_infer)
    if "numpy" not in reasons:
        train_fns["numpy"] = _fastcnn_train_step(model, x, y)
        infer_fns["numpy"] = lambda: model.forward(x_infer)
    if "loops" in twins:
        loops = twins["loops"]
        train_fns["loops"] = lambda: loops.train_step(x[:1], y[:1], LEARNING_RATE)
        infer_fns["loops"] = lambda: loops.forward(x_infer[:1])
    if "torch" in twins:
        twin = twins["torch"]
        train_fns["torch"] = _torch_train_step(twin, torch, x, y)

        def torch_infer():
            with torch.inference_mode():
                return twin(torch.from_numpy(x_infer))

        infer_fns["torch"] = torch_infer
    entries = []
    for case, pass_, batch, fns in (
        ("lenet5_train", f"train b{LENET_TRAIN_BATCH}", LENET_TRAIN_BATCH, train_fns),
        ("lenet5_infer", f"infer b{LENET_INFER_BATCH}", LENET_INFER_BATCH, infer_fns),
    ):
        if case not in ctx.selected:
            continue
        entry: dict[str, Any] = {
            "case": case, "group": "model", "label": "lenet5", "pass": pass_,
            "shape": "LeNet-5, 1x28x28 input", "batch": batch, "unit": "ms",
            "reference": "numpy backend (float32 cross-check of logits, loss, all grads)",
            "timing": (
                f"one block of {settings.budget:.3g} s per implementation (--quick)"
                if settings.quick else _interleave_note(settings)
            ),
            "impls": {},
        }  # fmt: skip
        ctx.progress(f"lenet5 {pass_}")
        outcome: dict[str, dict[str, Any]] = {}
        timed: dict[str, Callable[[], object]] = {}
        for impl in IMPLS:
            if impl in reasons or impl not in fns:
                reason = reasons.get(impl, "not available")
                outcome[impl] = {"status": "skipped", "reason": reason}
                continue
            err = errors.get(impl, math.inf)
            if err > MODEL_TOLERANCE:
                outcome[impl] = {"status": "wrong", "max_rel_error": err}
                ctx.errors.append(
                    f"{case}: {IMPL_LABELS[impl]} disagrees with the reference "
                    f"(max relative error {err:.3g} > {MODEL_TOLERANCE:g}); not timed"
                )
                continue
            timed[impl] = fns[impl]
        timings: dict[str, dict[str, Any]] = {}
        loops_step = timed.pop("loops", None)
        if loops_step is not None:  # seconds per call: one block on its own, scaled below
            with _impl_backend("loops"):
                timings["loops"] = _measure(loops_step, settings.loops_budget, 1, warmup_calls=0)
        # --quick keeps one short block per implementation (a smoke test, not a measurement).
        rounds = 1 if settings.quick else INTERLEAVE_ROUNDS
        block_warmup = 0 if settings.quick else BLOCK_WARMUP_CALLS
        timings |= _measure_interleaved(
            timed, settings.budget, settings.min_repeats, settings.warmup,
            settings.warmup_calls, rounds=rounds, contexts=_impl_backend,
            block_warmup_calls=block_warmup,
        )  # fmt: skip
        for impl, timing in timings.items():
            measured_batch = 1 if impl == "loops" else batch
            result = {"status": "ok", "max_rel_error": errors[impl], **timing}
            result["measured_batch"] = measured_batch
            if measured_batch != batch:
                factor = batch / measured_batch
                result.update(scaled=True, scale_factor=factor)
                result["median_ms"] *= factor
                result["samples_ms"] = [float(f"{v * factor:.5g}") for v in result["samples_ms"]]
            result["images_per_s"] = batch / (result["median_ms"] / 1e3)
            outcome[impl] = result
        entry["impls"] = {impl: outcome[impl] for impl in IMPLS}  # in table order
        _add_speedups(entry)
        entries.append(entry)
    if "lenet5_threads1" in ctx.selected and ctx.single_thread and settings.threads > 1:
        ctx.progress("lenet5 train at 1 thread")
        entries.append(_lenet_one_thread(ctx, train_fns, reasons, errors))
    return entries


def _lenet_one_thread(ctx: _Context, train_fns, reasons, errors) -> dict[str, Any]:
    """The training step again with every library limited to one thread."""
    settings = ctx.settings
    entry: dict[str, Any] = {
        "case": "lenet5_threads1", "group": "model", "label": "lenet5",
        "pass": f"train b{LENET_TRAIN_BATCH} @1 thread", "shape": "LeNet-5, 1x28x28 input",
        "batch": LENET_TRAIN_BATCH, "unit": "ms", "threads": 1, "impls": {},
    }  # fmt: skip
    with _threads(1, ctx.torch):
        for impl in ("fastcnn", "numpy", "torch"):
            if impl in reasons or impl not in train_fns or errors.get(impl, 0) > MODEL_TOLERANCE:
                entry["impls"][impl] = {"status": "skipped", "reason": reasons.get(impl, "")}
                continue
            with _impl_backend(impl):
                if impl == "fastcnn":
                    timing, entry["scaling"] = _interleaved_scaling(ctx, train_fns[impl])
                else:
                    timing = _measure(
                        train_fns[impl], settings.budget, settings.min_repeats,
                        settings.warmup, settings.warmup_calls,
                    )  # fmt: skip
            timing["images_per_s"] = LENET_TRAIN_BATCH / (timing["median_ms"] / 1e3)
            entry["impls"][impl] = {"status": "ok", **timing}
    entry["impls"]["loops"] = {"status": "skipped", "reason": "single-threaded anyway"}
    _add_speedups(entry)
    return entry


SCALING_ROUNDS = 8


@contextlib.contextmanager
def _fastcnn_threads(n: int) -> Iterator[None]:
    """Fastcnn's own thread count set to ``n`` (BLAS and PyTorch untouched), then restored."""
    import fastcnn
    from fastcnn import _threads as fastcnn_threads

    saved = fastcnn_threads._num_threads
    fastcnn.set_num_threads(n)
    try:
        yield
    finally:
        fastcnn.set_num_threads(saved)


def _interleaved_scaling(ctx: _Context, step: Callable[[], object]):
    """Fastcnn's training step at 1 thread and at ``--threads``, in alternating blocks.

    A shared machine drifts over seconds; two medians taken seconds apart can differ by
    more than the thread count changes them. Alternating short blocks gives both counts
    the same conditions. Only fastcnn's count changes between blocks: its kernels pin
    BLAS to one thread anyway, and switching the BLAS libraries' and PyTorch's pools
    every block would wake their workers, which then spin on the second core. Returns
    the one-thread timing and the scaling record.
    """
    settings = ctx.settings
    # N threads, then 1, then N again, ...: strictly alternating blocks, no initial warm-up
    # (the blocks' own calls are the warm-up).
    timings = _measure_interleaved(
        {settings.threads: step, 1: step}, settings.budget, settings.min_repeats,
        warmup=0.0, warmup_calls=0, rounds=SCALING_ROUNDS, contexts=_fastcnn_threads,
        block_warmup_calls=max(2, settings.warmup_calls), serpentine=False,
    )  # fmt: skip
    one = timings[1]
    many = timings[settings.threads]["median_ms"]
    block = settings.budget / SCALING_ROUNDS
    scaling = {
        "threads": settings.threads, "rounds": SCALING_ROUNDS,
        "median_ms_1_thread": one["median_ms"], "median_ms_n_threads": many,
        "speedup": one["median_ms"] / many,
        "method": f"{SCALING_ROUNDS} alternating blocks of {block:.3g} s per thread count",
    }  # fmt: skip
    return one, scaling


def _run_epoch(ctx: _Context, train_entry: dict[str, Any] | None) -> dict[str, Any]:
    """One epoch of 60,000 synthetic images at batch 64: run (fastcnn, torch) or extrapolate."""
    import fastcnn

    settings, torch = ctx.settings, ctx.torch
    entry: dict[str, Any] = {
        "case": "lenet5_epoch", "group": "epoch", "label": "lenet5",
        "pass": f"epoch {EPOCH_IMAGES // 1000}k b{LENET_TRAIN_BATCH}",
        "shape": f"{EPOCH_IMAGES} synthetic 1x28x28 images", "batch": LENET_TRAIN_BATCH,
        "unit": "s", "impls": {},
    }  # fmt: skip
    train_impls = (train_entry or {}).get("impls", {})
    X = Y = None
    for impl in IMPLS:
        measured = train_impls.get(impl, {})
        predicted = (
            EPOCH_IMAGES / measured["images_per_s"] if measured.get("status") == "ok" else None
        )
        run = (
            not settings.quick
            and impl in ("fastcnn", "torch")
            and impl not in ctx.unavailable
            and predicted is not None
            and predicted <= 90
        )
        if not run:
            if predicted is None:
                entry["impls"][impl] = {"status": "skipped", "reason": "no training-step timing"}
            else:
                entry["impls"][impl] = {
                    "status": "ok", "seconds": predicted, "extrapolated": True,
                    "note": "60,000 / measured training-step images/s",
                }  # fmt: skip
            continue
        ctx.progress(f"lenet5 epoch ({IMPL_LABELS[impl]})")
        if X is None:
            X, Y = _lenet_data(np.random.default_rng(3), EPOCH_IMAGES)
        gc.collect()
        if impl == "fastcnn":
            from fastcnn.optim import SGD

            model, _ = _fastcnn_lenet()
            with fastcnn.use_backend("cython"):
                start = time.perf_counter()
                model.fit(
                    X, Y, epochs=1, batch_size=LENET_TRAIN_BATCH, optimizer=SGD(lr=LEARNING_RATE),
                    shuffle=True, random_state=0, verbose=0,
                )  # fmt: skip
                seconds = time.perf_counter() - start
            how = "Sequential.fit(epochs=1, batch_size=64, SGD, shuffle=True, verbose=0)"
        else:
            twin = _torch_twin(_fastcnn_lenet()[0], torch)
            tX, tY = torch.from_numpy(X), torch.from_numpy(Y)
            optimizer = torch.optim.SGD(twin.parameters(), lr=LEARNING_RATE)
            start = time.perf_counter()
            order = torch.randperm(EPOCH_IMAGES, generator=torch.Generator().manual_seed(0))
            for lo in range(0, EPOCH_IMAGES, LENET_TRAIN_BATCH):
                idx = order[lo : lo + LENET_TRAIN_BATCH]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(twin(tX[idx]), tY[idx])
                loss.backward()
                optimizer.step()
            seconds = time.perf_counter() - start
            how = "shuffled index batches, zero_grad/forward/cross_entropy/backward/step"
        entry["impls"][impl] = {
            "status": "ok", "seconds": seconds, "extrapolated": False, "how": how,
            "images_per_s": EPOCH_IMAGES / seconds,
        }  # fmt: skip
    fast = entry["impls"].get("fastcnn", {})
    entry["speedup"] = {
        impl: r["seconds"] / fast["seconds"]
        for impl, r in entry["impls"].items()
        if impl != "fastcnn" and r.get("status") == "ok" and fast.get("status") == "ok"
    }
    return entry


# ---------------------------------------------------------------------------------------
# Fresh-interpreter measurements: memory and import time


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _memory_worker(kind: str, threads: int, steps: int) -> dict[str, Any]:
    """Run inside a fresh interpreter: peak RSS (and tracemalloc) of one workload."""
    import fastcnn

    fastcnn.set_num_threads(threads)
    torch: Any = None
    if kind == "torch":
        import torch as torch_module

        torch = torch_module
        torch.set_num_threads(threads)
    with _blas_limits(threads):
        if kind.startswith("conv:"):
            return _conv_scratch_worker(int(kind.split(":")[1]))
        model, _ = _fastcnn_lenet()
        x, y = _lenet_data(np.random.default_rng(4), LENET_TRAIN_BATCH)
        if kind == "torch":
            step = _torch_train_step(_torch_twin(model, torch), torch, x, y)
        else:
            fastcnn.set_backend("cython" if kind == "fastcnn" else "numpy")
            step = _fastcnn_train_step(model, x, y)
        # The first step also pays each library's one-time set-up (fastcnn loads scipy's
        # BLAS and starts its thread team there, PyTorch its allocator pools): recorded
        # apart, as the cold step, so the steady-state figure is the step's own memory.
        gc.collect()
        cold_baseline = _proc_status_kb("VmRSS")
        resettable = _reset_peak_rss()
        step()
        cold_peak = _proc_status_kb("VmHWM")
        gc.collect()
        baseline = _proc_status_kb("VmRSS")
        resettable = _reset_peak_rss() and resettable
        for _ in range(steps):
            step()
        peak = _proc_status_kb("VmHWM")
        result: dict[str, Any] = {"kind": kind, "steps": steps}
        if (  # None where /proc is absent
            baseline is not None
            and peak is not None
            and cold_baseline is not None
            and cold_peak is not None
        ):
            result.update(
                baseline_rss_mb=baseline / 1024,
                peak_rss_mb=peak / 1024,
                rss_delta_mb=(peak - baseline) / 1024,
                cold_step_rss_delta_mb=(cold_peak - cold_baseline) / 1024,
                peak_reset=resettable,
            )
        if kind != "torch":
            import tracemalloc

            gc.collect()
            tracemalloc.start()
            for _ in range(min(3, steps)):
                step()
            current, peak_traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            result["tracemalloc_peak_mb"] = peak_traced / 2**20
        return result


def _conv_scratch_worker(n: int) -> dict[str, Any]:
    """Peak RSS of one ``large`` conv forward+backward beyond its inputs and outputs."""
    from fastcnn import functional as F

    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, 64, 56, 56), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((n, 64, 56, 56), dtype=np.float32)
    F.conv2d(x[:1], w, padding=1)  # start the thread pool before the baseline
    gc.collect()
    baseline = _proc_status_kb("VmRSS")
    resettable = _reset_peak_rss()
    y = F.conv2d(x, w, padding=1)
    grads = F.conv2d_backward(gy, x, w, padding=1)
    peak = _proc_status_kb("VmHWM")
    outputs = (y.nbytes + sum(g.nbytes for g in grads if g is not None)) / 2**20
    if baseline is None or peak is None:
        return {"kind": f"conv:{n}", "status": "unavailable"}
    delta = (peak - baseline) / 1024
    return {
        "kind": f"conv:{n}", "batch": n, "rss_delta_mb": delta, "outputs_mb": outputs,
        "scratch_mb": delta - outputs, "peak_reset": resettable,
    }  # fmt: skip


def _subprocess_env() -> dict[str, str]:
    """The parent's environment, with the directory this fastcnn came from on the path."""
    import fastcnn

    env = dict(os.environ)
    root = str(Path(fastcnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _run_worker(kind: str, threads: int, steps: int) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "fastcnn._bench", "--memory-worker", kind,
        "--threads", str(threads), "--memory-steps", str(steps),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=_subprocess_env(), cwd=tempfile.gettempdir(),
        timeout=600,
    )  # fmt: skip
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {"status": "ok", **json.loads(line[len(RESULT_PREFIX) :])}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"status": "error", "reason": f"exit {proc.returncode}: {' | '.join(tail)}"}


def _run_memory(ctx: _Context) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "case": "lenet5_memory", "group": "memory", "label": "lenet5",
        "pass": f"train b{LENET_TRAIN_BATCH} peak memory",
        "method": (
            "in a fresh interpreter per implementation, after one warm-up step (the cold "
            "step, one-time library set-up included, is reported apart): peak RSS (VmHWM, "
            f"reset after the warm-up) during {ctx.settings.memory_steps} training steps "
            "minus RSS before them; tracemalloc peak over up to 3 further steps for the "
            "numpy-side implementations"
        ),
        "impls": {},
    }  # fmt: skip
    for impl in ("fastcnn", "numpy", "torch"):
        if impl in ctx.unavailable:
            entry["impls"][impl] = {"status": "skipped", "reason": ctx.unavailable[impl]}
            continue
        if impl != "fastcnn" and ctx.settings.quick:  # each costs a fresh import
            entry["impls"][impl] = {"status": "skipped", "reason": "--quick"}
            continue
        ctx.progress(f"lenet5 memory ({IMPL_LABELS[impl]}, fresh interpreter)")
        entry["impls"][impl] = _run_worker(impl, ctx.settings.threads, ctx.settings.memory_steps)
    entry["impls"]["loops"] = {"status": "skipped", "reason": "not measured"}
    return entry


def _run_conv_scratch(ctx: _Context) -> dict[str, Any]:
    ctx.progress("conv scratch memory at N=16 and N=64 (fresh interpreters)")
    runs = {str(n): _run_worker(f"conv:{n}", ctx.settings.threads, 1) for n in (16, 64)}
    return {
        "case": "conv_scratch", "group": "memory", "label": "conv large",
        "pass": "fwd+bwd scratch",
        "method": (
            "compiled backend, conv 'large' (64->64, 56x56, k3 pad1) forward+backward: peak "
            "RSS increase minus the bytes of the outputs and gradients, at N=16 and N=64"
        ),
        "runs": runs,
    }  # fmt: skip


def _run_import(ctx: _Context) -> dict[str, Any]:
    """Median wall time of ``python -c "import fastcnn"`` minus that of ``python -c pass``."""
    env, cwd = _subprocess_env(), tempfile.gettempdir()

    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
        return time.perf_counter() - start

    ctx.progress(f"import fastcnn ({ctx.settings.import_runs} fresh interpreters)")
    wall("import fastcnn")  # compiles any stale .pyc, warms the file cache
    imports, bases = [], []
    for _ in range(ctx.settings.import_runs):
        imports.append(wall("import fastcnn"))
        bases.append(wall("pass"))
    seconds = statistics.median(imports) - statistics.median(bases)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fastcnn"],
        env=env, cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    return {
        "case": "import", "group": "import", "seconds": seconds,
        "import_samples_s": imports, "baseline_samples_s": bases,
        "heaviest_imports_s": _heaviest_imports(proc.stderr),
    }  # fmt: skip


def _heaviest_imports(importtime: str, top: int = 6) -> dict[str, float]:
    """Modules that fastcnn's own modules import directly, by cumulative seconds.

    Parses ``python -X importtime`` output, where a module's line follows those of the
    modules it imported, indented one level deeper.
    """
    entries = []
    for line in importtime.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            entries.append((depth, name.strip(), int(parts[1]) / 1e6))
    heaviest = []
    ancestors: list[str] = []
    for depth, name, seconds in reversed(entries):  # parents come before children here
        del ancestors[depth:]
        parent = ancestors[-1] if ancestors else None
        ours = parent is not None and (parent == "fastcnn" or parent.startswith("fastcnn."))
        if ours and not name.startswith("fastcnn"):
            heaviest.append((seconds, name))
        ancestors.append(name)
    heaviest.sort(reverse=True)
    return {name: round(seconds, 4) for seconds, name in heaviest[:top]}


# ---------------------------------------------------------------------------------------
# Threads and machine information


@contextlib.contextmanager
def _blas_limits(n: int) -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def _threads(n: int, torch) -> Iterator[None]:
    """fastcnn, BLAS (threadpoolctl) and PyTorch all limited to ``n`` threads."""
    import fastcnn
    from fastcnn import _threads as fastcnn_threads

    saved = fastcnn_threads._num_threads
    saved_torch = torch.get_num_threads() if torch is not None else None
    fastcnn.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with _blas_limits(n):
            yield
    finally:
        fastcnn.set_num_threads(saved)
        if torch is not None:
            torch.set_num_threads(saved_torch)


def _cpu_info() -> dict[str, Any]:
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


def _machine_info(torch, threads: int) -> dict[str, Any]:
    import scipy

    import fastcnn
    from fastcnn import _info

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
        "cpu": _cpu_info(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "threads": threads,
        "versions": versions,
        # A stale install shadows a checkout: say which fastcnn was measured.
        "fastcnn_path": os.path.dirname(fastcnn.__file__),
        "env": {key: os.environ[key] for key in _ENV_KEYS if key in os.environ},
        "fastcnn_config": _info.config(),
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
# Targets (issue 4)


def _find(results: dict[str, Any], case: str, pass_: str | None = None) -> dict[str, Any] | None:
    for entry in results.get("results", []):
        if entry.get("case") == case and (pass_ is None or entry.get("pass") == pass_):
            found: dict[str, Any] = entry
            return found
    return None


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate each target of issue 4 on a results dict: PASS, FAIL or SKIP with a ratio."""
    targets: list[dict[str, Any]] = []

    def add(name, required, measured, unit="x", higher_is_better=True, note=""):
        if measured is None:
            status = "SKIP"
        elif higher_is_better:
            status = "PASS" if measured >= required else "FAIL"
        else:
            status = "PASS" if measured <= required else "FAIL"
        targets.append({
            "target": name, "required": required, "measured": measured, "unit": unit,
            "higher_is_better": higher_is_better, "status": status, "note": note,
        })  # fmt: skip

    def speedup(case, pass_, other, required, name):
        entry = _find(results, case, pass_)
        if entry is None:
            return add(name, required, None, note="not run")
        fast = entry["impls"].get("fastcnn", {}).get("status")
        if fast == "wrong":
            return add(name, required, 0.0, note="fastcnn's results are wrong")
        ratio = entry.get("speedup", {}).get(other)
        note = (
            ""
            if ratio is not None
            else f"{other}: "
            + entry["impls"]
            .get(other, {})
            .get("reason", entry["impls"].get(other, {}).get("status", "not run"))
        )
        add(name, required, ratio, note=note)

    train, infer = f"train b{LENET_TRAIN_BATCH}", f"infer b{LENET_INFER_BATCH}"
    speedup("lenet5_train", train, "torch", 2.0, "LeNet-5 training step b64 vs PyTorch")
    speedup("lenet5_infer", infer, "torch", 2.0, "LeNet-5 inference b256 vs PyTorch")
    for name in ("lenet_c1", "lenet_c2", "digits"):
        speedup(f"conv_{name}", "fwd+bwd", "torch", 2.0, f"conv {name} fwd+bwd vs PyTorch")
    for name in ("mid", "large"):
        speedup(f"conv_{name}", "fwd+bwd", "torch", 1.0, f"conv {name} fwd+bwd vs PyTorch")
    large = _find(results, "conv_large", "fwd+bwd")
    add(
        "conv large fwd+bwd, % of matmul GFLOP/s", 70.0,
        None if large is None else large.get("pct_of_matmul"), unit="%",
        note=f"matmul reference: {results.get('matmul', {}).get('reference', 'not measured')}",
    )  # fmt: skip
    for kind in ("max", "avg"):
        for n, c, hw in POOL_SHAPES:
            case = f"{kind}pool_{n}x{c}x{hw}"
            speedup(case, "fwd+bwd", "torch", 3.0, f"{case} fwd+bwd vs PyTorch")
    speedup("lenet5_train", train, "numpy", 5.0, "LeNet-5 training step: compiled vs numpy")

    memory = _find(results, "lenet5_memory") or {"impls": {}}
    fast_mb = memory["impls"].get("fastcnn", {}).get("rss_delta_mb")
    torch_mb = memory["impls"].get("torch", {}).get("rss_delta_mb")
    ratio = torch_mb / fast_mb if fast_mb and torch_mb is not None and fast_mb > 0 else None
    if fast_mb is not None and torch_mb is not None and fast_mb <= 0:
        ratio = math.inf
    add(
        "LeNet-5 training-step peak memory: PyTorch / fastcnn (RSS)", 1.0, ratio,
        note="" if ratio is None else f"fastcnn {fast_mb:.1f} MB, PyTorch {torch_mb:.1f} MB",
    )  # fmt: skip
    scratch = _find(results, "conv_scratch")
    if scratch is not None and all(r.get("status") == "ok" for r in scratch["runs"].values()):
        small, big = scratch["runs"]["16"]["scratch_mb"], scratch["runs"]["64"]["scratch_mb"]
        # Per-batch scratch would grow by ~4x from N=16 to N=64; allow noise, not growth.
        bounded = big <= 1.5 * max(small, 0.0) + 16.0
        add(
            "conv scratch bounded per thread (large, N=16 -> N=64)", 1.0,
            1.0 if bounded else 0.0, unit="bool",
            note=f"scratch {small:.1f} MB at N=16, {big:.1f} MB at N=64",
        )  # fmt: skip
    else:
        add("conv scratch bounded per thread (large, N=16 -> N=64)", 1.0, None, unit="bool")
    imported = _find(results, "import")
    add(
        "import fastcnn, fresh interpreter (median)", 0.3,
        None if imported is None else imported["seconds"], unit="s", higher_is_better=False,
    )  # fmt: skip
    one = _find(results, "lenet5_threads1")
    scaling = (one or {}).get("scaling")
    threads = results.get("settings", {}).get("threads")
    add(
        f"LeNet-5 training step: {threads} threads vs 1 thread", 1.6,
        None if scaling is None else scaling["speedup"],
        note=("run with --single-thread-too (and --threads >= 2)" if one is None
              else "interleaved: " + scaling["method"] if scaling else ""),
    )  # fmt: skip
    return targets


# ---------------------------------------------------------------------------------------
# Reporting: text table, markdown, JSON, chart


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return f"{value:,.0f}"


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def _cell(
    result: dict[str, Any], key: str = "median_ms", fmt: Callable[[Any], str] = _fmt_ms
) -> str:
    status = result.get("status")
    if status == "ok":
        text = fmt(result.get(key))
        return text + ("*" if result.get("scaled") or result.get("extrapolated") else "")
    return {"wrong": "WRONG", "error": "ERROR"}.get(str(status), "-")


def _tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report as (title, header, rows) tables, shared by the text and markdown output."""
    tables = []
    entries = results["results"]
    ops = [e for e in entries if e["group"] in ("conv", "pool")]
    if ops:
        header = [
            "case", "pass", "fastcnn ms", "numpy ms", "loops ms*", "torch ms",
            "vs numpy", "vs loops", "vs torch", "GFLOP/s", "% matmul",
        ]  # fmt: skip
        rows = []
        for e in ops:
            impls, speed = e["impls"], e.get("speedup", {})
            fast = impls.get("fastcnn", {})
            pct = e.get("pct_of_matmul")
            rows.append([
                f"conv {e.get('label')}" if e["group"] == "conv" else e["case"], e["pass"],
                *(_cell(impls.get(i, {})) for i in IMPLS),
                *(_fmt_ratio(speed.get(i)) for i in ("numpy", "loops", "torch")),
                f"{fast['gflops']:.1f}" if fast.get("gflops") else "-",
                f"{pct:.0f}%" if pct is not None else "-",
            ])  # fmt: skip
        tables.append(("Ops (median ms per call; vs X = X's time / fastcnn's)", header, rows))
    model = [e for e in entries if e["group"] in ("model", "epoch")]
    if model:
        header = [
            "LeNet-5", "fastcnn", "numpy", "loops*", "torch", "vs numpy", "vs loops", "vs torch",
        ]  # fmt: skip
        rows = []
        for e in model:
            key, fmt = ("seconds", _fmt_s) if e["group"] == "epoch" else ("images_per_s", _fmt_ips)
            unit = "s" if e["group"] == "epoch" else "img/s"
            speed = e.get("speedup", {})
            rows.append([
                f"{e['pass']} ({unit})", *(_cell(e["impls"].get(i, {}), key, fmt) for i in IMPLS),
                *(_fmt_ratio(speed.get(i)) for i in ("numpy", "loops", "torch")),
            ])  # fmt: skip
        tables.append(("LeNet-5 (images/s, or seconds per epoch)", header, rows))
    memory = _find(results, "lenet5_memory")
    if memory is not None:
        rows = []
        for impl in ("fastcnn", "numpy", "torch"):
            r = memory["impls"].get(impl, {})
            rows.append([
                IMPL_LABELS[impl],
                f"{r['rss_delta_mb']:.1f}" if "rss_delta_mb" in r else r.get("status", "-"),
                f"{r['cold_step_rss_delta_mb']:.1f}" if "cold_step_rss_delta_mb" in r else "-",
                f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-",
                f"{r['tracemalloc_peak_mb']:.1f}" if "tracemalloc_peak_mb" in r else "-",
            ])  # fmt: skip
        header = [
            "implementation", "RSS delta MB", "first step MB", "peak RSS MB", "tracemalloc MB",
        ]  # fmt: skip
        tables.append(("LeNet-5 training-step memory (fresh interpreter each)", header, rows))
    targets = results.get("targets", [])
    if targets:
        rows = []
        for t in targets:
            measured, unit = t["measured"], t["unit"]
            if measured is None:
                text = "-"
            elif unit == "x":
                text = _fmt_ratio(measured)
            elif unit == "%":
                text = f"{measured:.1f}%"
            elif unit == "s":
                text = f"{measured:.3f} s"
            else:
                text = "yes" if measured else "no"
            op = ">=" if t["higher_is_better"] else "<="
            required = {"x": f"{t['required']:g}x", "%": f"{t['required']:g}%",
                        "s": f"{t['required']:g} s", "bool": "yes"}[unit]  # fmt: skip
            rows.append([t["target"], text, f"{op} {required}", t["status"], t["note"]])
        header = ["target", "measured", "required", "status", "note"]
        tables.append(("Targets (issue 4)", header, rows))
    return tables


def _fmt_ips(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _header_lines(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    cpu, v = m["cpu"], m["versions"]
    blas = ", ".join(
        f"{t['internal_api']} {t['version']} ({t.get('architecture') or '?'})"
        for t in m.get("threadpools", [])
        if t.get("user_api") == "blas"
    )
    env = " ".join(f"{k}={val}" for k, val in m["env"].items()) or "none"
    mm = results.get("matmul", {})
    timing = results["settings"].get("timing")  # absent from results older than the rounds
    lines = [
        f"fastcnn benchmark, {results['created']}",
        f"machine: {cpu.get('model')}, {cpu.get('physical_cores', '?')} cores / "
        f"{cpu.get('logical_cpus')} logical CPUs, {cpu.get('memory_gb', '?')} GB; "
        f"{m['platform']}",
        f"threads: {results['settings']['threads']} (fastcnn, BLAS via threadpoolctl, torch)",
        *([f"timing: {timing}"] if timing else []),
        f"versions: python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, "
        f"fastcnn {v['fastcnn']} ({m.get('fastcnn_path', '?')}), "
        f"torch {v['torch'] or 'not used'}",
        f"BLAS: {blas or 'unknown'}; env: {env}",
    ]
    if mm.get("reference_gflops"):
        lines.append(
            f"matmul reference: {mm['reference_gflops']:.1f} GFLOP/s ({mm['reference']}; "
            f"numpy {mm.get('numpy', {}).get('gflops', math.nan):.1f}, scipy "
            f"{mm.get('scipy', {}).get('gflops', math.nan):.1f})"
        )
    imported = _find(results, "import")
    if imported is not None:
        heavy = ", ".join(
            f"{k} {s:.2f}s" for k, s in imported.get("heaviest_imports_s", {}).items()
        )
        lines.append(
            f"import fastcnn: {imported['seconds']:.3f} s (heaviest imports it makes: {heavy})"
        )
    scratch = _find(results, "conv_scratch")
    if scratch is not None:
        parts = [
            f"N={n}: {r['scratch_mb']:.1f} MB" if r.get("status") == "ok" else f"N={n}: error"
            for n, r in scratch["runs"].items()
        ]
        lines.append("conv large fwd+bwd scratch beyond outputs: " + ", ".join(parts))
    load = m.get("load_average_at_start")
    if load and load[0] > 0.5 * (cpu.get("usable_cpus") or cpu.get("logical_cpus") or 1):
        lines.append(
            f"WARNING: load average {load[0]:.1f} at start, "
            f"{(m.get('load_average_at_end') or [math.nan])[0]:.1f} at end, on "
            f"{cpu.get('usable_cpus') or cpu.get('logical_cpus')} CPUs: other processes "
            "competed for the CPUs, so these timings are unreliable"
        )
    if {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"} & set(m["env"]):
        lines.append(
            "note: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set (recorded above, left as they "
            "are); they can slow numpy's own OpenBLAS (numpy backend, Dense layers, matmul)"
        )
    lines.append(f"command: {results['command']}")
    return lines


_FOOTNOTE = (
    "* loops: textbook per-output-pixel Python loops timed on 1 sample and scaled linearly "
    "to the batch; epoch values marked * are extrapolated from the training step. "
    "WRONG: disagreed with the oracle, not timed."
)


def _left_columns(header: list[str]) -> set[int]:
    """Text columns (left-aligned); numbers are right-aligned."""
    return {0} | {i for i, name in enumerate(header) if name in ("pass", "status", "note")}


def format_text(results: dict[str, Any]) -> str:
    """The printed report: header, tables and targets as aligned plain text."""
    out = [*_header_lines(results), ""]
    for title, header, rows in _tables(results):
        left = _left_columns(header)
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        out.append(title)
        for k, row in enumerate([header, *rows]):
            cells = [
                str(c).ljust(widths[i]) if i in left else str(c).rjust(widths[i])
                for i, c in enumerate(row)
            ]  # fmt: skip
            out.append("  ".join(cells).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    out.append(_FOOTNOTE)
    counts = {
        s: sum(t["status"] == s for t in results.get("targets", []))
        for s in ("PASS", "FAIL", "SKIP")
    }
    out.append(
        f"targets: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP; "
        f"wall time {results['wall_time_s']:.1f} s"
    )
    for error in results.get("errors", []):
        out.append(f"ERROR: {error}")
    return "\n".join(out) + "\n"


def format_markdown(results: dict[str, Any]) -> str:
    """The same report as markdown, for the README."""
    lines = [f"### {_header_lines(results)[0]}", ""]
    lines += [f"- {line}" for line in _header_lines(results)[1:-1]]
    lines += [f"- command: `{results['command']}`", ""]
    for title, header, rows in _tables(results):
        lines += [f"**{title}**", ""]
        lines.append("| " + " | ".join(header) + " |")
        left = _left_columns(header)
        lines.append(
            "|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|"
        )
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
        lines.append("")
    lines.append(_FOOTNOTE.replace("*", "\\*", 1))
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Write the chart of :func:`fastcnn.plotting.plot_benchmark` to ``path``.

    Returns the path written, or None when matplotlib is not installed or no conv, pool
    or model case was timed.
    """
    from fastcnn import plotting

    if not plotting._chart_entries(results):
        return None
    try:
        plotting.plot_benchmark(results, path=path, dpi=120)
    except ImportError:
        return None
    return Path(path)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# Driver


class _Context:
    """What one run shares: settings, selected cases, torch, results so far, errors."""

    def __init__(self, settings: _Settings, selected: set[str], torch, unavailable) -> None:
        self.settings = settings
        self.selected = selected
        self.torch = torch
        self.unavailable: dict[str, str] = unavailable
        self.results: dict[str, Any] = {}
        self.errors: list[str] = []
        self.single_thread = False
        self._start = time.perf_counter()

    def progress(self, message: str) -> None:
        if self.settings.verbose:
            elapsed = time.perf_counter() - self._start
            print(f"[{elapsed:6.1f} s] {message}", file=sys.stderr, flush=True)


def _select(patterns: str | None, quick: bool) -> set[str]:
    if not patterns:
        return set(QUICK_CASES if quick else CASE_IDS)
    selected = set()
    for token in (t.strip() for t in patterns.split(",")):
        if not token:
            continue
        if any(ch in token for ch in "*?["):
            matched = {c for c in CASE_IDS if fnmatch.fnmatch(c, token)}
        else:
            matched = {c for c in CASE_IDS if token in c}
        if not matched:
            raise ValueError(
                f"--cases: {token!r} matches no case; the cases are: {', '.join(CASE_IDS)}"
            )
        selected |= matched
    return selected


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastcnn bench",
        description=(
            "Time fastcnn's compiled backend against its numpy backend, textbook loops and "
            "PyTorch CPU (when installed) at one thread count; check every result first; "
            "evaluate the targets of issue 4; write latest.json, latest.md and latest.png."
        ),
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastcnn, BLAS and torch (default: "
                        "fastcnn.get_num_threads())")  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="tiny budgets and a subset of cases (for smoke tests)"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated substrings or globs of case ids (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--impls", default=None,
                        help="comma-separated implementations to time, among "
                        f"{', '.join(IMPLS)} (default: all available)")  # fmt: skip
    parser.add_argument(
        "--out",
        default=os.path.join("benchmarks", "results"),
        help="directory for latest.json/.md/.png (default: %(default)s)",
    )
    parser.add_argument(
        "--plot",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write latest.png (default: when matplotlib imports)",
    )
    parser.add_argument("--single-thread-too", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="repeat the LeNet-5 training step at 1 thread to report the "
                        "scaling (default: on, except with --quick)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per implementation and case "
                        "(default 0.5, --quick 0.02)")  # fmt: skip
    parser.add_argument(
        "--fail-on-target", action="store_true", help="exit with status 2 when a target FAILs"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(
    argv: list[str] | None = None, *, default_out: str | None = None, command: str | None = None
) -> int:
    """Run the benchmark suite; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``); see ``--help``.
    default_out : str, optional
        Output directory when ``--out`` is not given (``benchmarks/run.py`` passes its own
        ``results/`` folder); otherwise ``benchmarks/results`` under the current directory.
    command : str, optional
        How the suite was invoked, for the report (default ``python -m fastcnn bench``).

    Returns
    -------
    status : int
        0 when every implementation's results were right (targets are reported, not
        enforced, unless ``--fail-on-target``); 1 when an implementation was wrong or
        raised; 2 for bad arguments, or a failed target with ``--fail-on-target``.
    """
    parser = _parser()
    if default_out is not None:
        parser.set_defaults(out=default_out)
    args = parser.parse_args(argv)
    import fastcnn

    threads = args.threads if args.threads is not None else fastcnn.get_num_threads()
    if threads < 1:
        parser.error(f"--threads must be >= 1, got {threads}")
    if args.memory_worker:
        result = _memory_worker(args.memory_worker, threads, args.memory_steps or 10)
        print(RESULT_PREFIX + json.dumps(_json_safe(result)), flush=True)
        return 0
    if args.list:
        print("\n".join(CASE_IDS))
        return 0
    try:
        selected = _select(args.cases, args.quick)
    except ValueError as exc:
        print(f"fastcnn bench: error: {exc}", file=sys.stderr)
        return 2
    quick = args.quick
    settings = _Settings(
        threads=threads,
        quick=quick,
        budget=args.budget if args.budget is not None else (0.02 if quick else 0.5),
        warmup=0.005 if quick else 0.1,
        min_repeats=1 if quick else 3,
        warmup_calls=0 if quick else 1,
        loops_budget=0.0 if quick else 1.0,
        import_runs=3 if quick else 7,
        memory_steps=2 if quick else 10,
        matmul_size=512 if quick else 2048,
        verbose=not args.quiet,
    )
    unavailable: dict[str, str] = {}
    if args.impls:
        wanted = {i.strip() for i in args.impls.split(",") if i.strip()}
        unknown = wanted - set(IMPLS)
        if unknown:
            print(
                f"fastcnn bench: error: --impls: unknown {sorted(unknown)}; choose among "
                f"{', '.join(IMPLS)}",
                file=sys.stderr,
            )
            return 2
        unavailable.update({i: "left out by --impls" for i in IMPLS if i not in wanted})
    if "cython" not in fastcnn.available_backends():
        unavailable["fastcnn"] = f"compiled backend unavailable: {fastcnn.backend_import_error()}"
    torch: Any = None
    if args.no_torch:
        unavailable["torch"] = "--no-torch"
    elif "torch" not in unavailable:
        try:
            import torch as torch_module

            torch = torch_module
        except ImportError as exc:
            unavailable["torch"] = f"not installed ({exc})"
    ctx = _Context(settings, selected, torch, unavailable)
    ctx.single_thread = args.single_thread_too if args.single_thread_too is not None else not quick
    start = time.perf_counter()
    results = ctx.results
    results["schema"] = 1
    results["created"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    results["command"] = " ".join(
        [
            command or "python -m fastcnn bench",
            shlex.join(argv if argv is not None else sys.argv[1:]),
        ]
    ).strip()
    results["settings"] = {
        "threads": threads, "quick": quick, "budget_s": settings.budget,
        "min_repeats": settings.min_repeats, "cases": sorted(selected),
        "single_thread_too": ctx.single_thread, "op_tolerance": OP_TOLERANCE,
        "model_tolerance": MODEL_TOLERANCE, "implementations": IMPL_LABELS,
        "unavailable": unavailable, "interleave_rounds": INTERLEAVE_ROUNDS,
        "timing": _run_timing_note(settings),
    }  # fmt: skip
    results["results"] = []
    with _threads(threads, torch):
        results["machine"] = _machine_info(torch, threads)
        ctx.progress(f"matmul reference ({settings.matmul_size}x{settings.matmul_size} float32)")
        results["matmul"] = _bench_matmul(settings)
        rng = np.random.default_rng(0)
        for case in _op_cases(selected, rng):
            for pass_ in case.passes:
                ctx.progress(f"{case.id} {pass_} ({case.shape})")
                results["results"].append(_run_op_case(case, pass_, ctx))
            case._oracle.clear()
        if selected & {"lenet5_train", "lenet5_infer", "lenet5_threads1", "lenet5_epoch"}:
            try:
                results["results"] += _run_lenet(ctx)
            except Exception as exc:
                ctx.errors.append(f"LeNet-5 benchmark raised {type(exc).__name__}: {exc}")
        if "lenet5_epoch" in selected:
            train = _find(results, "lenet5_train")
            try:
                results["results"].append(_run_epoch(ctx, train))
            except Exception as exc:
                ctx.errors.append(f"LeNet-5 epoch raised {type(exc).__name__}: {exc}")
    for case_id, run in (
        ("lenet5_memory", _run_memory),
        ("conv_scratch", _run_conv_scratch),
        ("import", _run_import),
    ):
        if case_id not in selected or (case_id == "conv_scratch" and "fastcnn" in unavailable):
            continue
        try:
            results["results"].append(run(ctx))
        except (OSError, subprocess.SubprocessError) as exc:
            ctx.errors.append(f"{case_id} raised {type(exc).__name__}: {exc}")
    for entry in results["results"]:
        for impl, r in entry.get("impls", {}).items():
            if r.get("status") == "error":
                ctx.errors.append(f"{entry['case']}: {IMPL_LABELS[impl]}: {r.get('reason')}")
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = evaluate_targets(results)
    results["errors"] = ctx.errors
    results["wall_time_s"] = time.perf_counter() - start

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    want_plot = args.plot
    if want_plot is None:
        want_plot = True
    png = None
    if want_plot:
        png = plot(results, out_dir / "latest.png")
        if png is None and args.plot:
            print("fastcnn bench: matplotlib is not installed; no chart", file=sys.stderr)
    results["files"] = {
        "json": str(out_dir / "latest.json"), "markdown": str(out_dir / "latest.md"),
        "chart": None if png is None else str(png),
    }  # fmt: skip
    text = format_text(results)
    _write_atomic(out_dir / "latest.json", json.dumps(_json_safe(results), indent=1) + "\n")
    _write_atomic(out_dir / "latest.md", format_markdown(results))
    print(text, end="")
    print(f"wrote {', '.join(p for p in results['files'].values() if p)}")
    if ctx.errors:
        return 1
    if args.fail_on_target and any(t["status"] == "FAIL" for t in results["targets"]):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
