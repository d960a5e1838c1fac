"""The single-op cases of the benchmark suite: conv2d and pooling, and the matmul reference.

A case builds its inputs once and gives one zero-argument callable per implementation.
Before anything is timed, each implementation's outputs are checked against an oracle
(the numpy backend in float64). An implementation that disagrees is not timed: its cell
reads WRONG and the run exits with status 1, so a fast but wrong kernel cannot post a
number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import loops
from benchmarks.harness import (
    IMPL_LABELS,
    IMPLS,
    OP_TOLERANCE,
    Context,
    Settings,
    add_speedups,
    impl_backend,
    interleave_note,
    max_rel_error,
    measure,
    measure_interleaved,
    scale_to_batch,
    single_sample,
)

# (name, N, C_in, C_out, H=W, k, padding): LeNet-5's two convolutions, the digits model's
# first, and a 3x3 convolution at a middle and a large size.
CONV_SHAPES = (
    ("lenet_c1", 64, 1, 6, 32, 5, 0),
    ("lenet_c2", 64, 6, 16, 14, 5, 0),
    ("digits", 256, 1, 16, 8, 3, 1),
    ("mid", 32, 32, 64, 32, 3, 1),
    ("large", 16, 64, 64, 56, 3, 1),
)
# (N, C, H=W) for 2x2 stride-2 pooling.
POOL_SHAPES = ((64, 6, 28), (32, 64, 32), (16, 64, 56))


# ---------------------------------------------------------------------------------------
# Single-op cases: conv2d and pooling


class OpCase:
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
        """The callable that runs ``impl`` on the first ``batch`` samples."""
        raise NotImplementedError

    def oracle(self, pass_: str, batch: int) -> tuple[Any, ...]:
        """float64 outputs of the numpy reference backend for the first ``batch`` samples."""
        raise NotImplementedError

    def forget_oracle(self) -> None:
        """Let the cached oracle outputs go (the case is done)."""
        self._oracle.clear()

    def flops(self, pass_: str) -> float | None:
        """Floating-point operations of one call of ``pass_`` (None for pooling)."""
        if self.flops_fwd is None:
            return None
        # Backward computes both the input and the weight gradient: twice the forward.
        return self.flops_fwd * (1 if pass_ == "fwd" else 3)


class ConvCase(OpCase):
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
                return lambda: (loops.conv2d(x, w, b, pad=(p, p)),)

            def loops_fwd_bwd():
                y = loops.conv2d(x, w, b, pad=(p, p))
                return (y, *loops.conv2d_backward(gy, x, w, pad=(p, p)))

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


class PoolCase(OpCase):
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
                    return lambda: loops.max_pool2d(x)

                def loops_max():
                    y, idx = loops.max_pool2d(x)
                    return y, idx, loops.max_pool2d_backward(gy, idx, shape)

                return loops_max
            if pass_ == "fwd":
                return lambda: (loops.avg_pool2d(x),)
            return lambda: (loops.avg_pool2d(x), loops.avg_pool2d_backward(gy, shape))
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


def op_cases(selected: set[str], rng: np.random.Generator) -> list[OpCase]:
    """The selected conv and pooling cases, their inputs drawn from ``rng``."""
    cases: list[OpCase] = []
    for name, n, c_in, c_out, hw, k, pad in CONV_SHAPES:
        if f"conv_{name}" in selected:
            cases.append(ConvCase(name, n, c_in, c_out, hw, k, pad, rng=rng))
    for kind in ("max", "avg"):
        for n, c, hw in POOL_SHAPES:
            if f"{kind}pool_{n}x{c}x{hw}" in selected:
                cases.append(PoolCase(kind, n, c, hw, rng))
    return cases


def run_op_case(case: OpCase, pass_: str, ctx: Context) -> dict[str, Any]:
    """Check, then time, every implementation of one op case and pass."""
    settings = ctx.settings
    flops = case.flops(pass_)
    entry: dict[str, Any] = {
        "case": case.id, "group": case.group, "label": case.label, "pass": pass_,
        "shape": case.shape, "batch": case.batch, "unit": "ms", "flops": flops,
        "reference": "numpy backend, float64",
        "timing": (
            "one checked call per implementation (--quick)" if settings.quick
            else interleave_note(settings)
        ),
        "impls": {},
    }  # fmt: skip
    run = _OpRun(case, pass_, ctx)
    # Every implementation is checked before any is timed: the rounds alternate between
    # the implementations, so only the ones that passed may take part.
    for impl in IMPLS:
        run.check(impl)
    timings, failures = run.time()
    for impl in run.fns:
        if impl in failures:
            run.raised(impl, failures[impl])
            continue
        batch = run.batches[impl]
        result = {"status": "ok", "max_rel_error": run.checked[impl][0], **timings[impl]}
        result["measured_batch"] = batch
        if batch != case.batch:
            scale_to_batch(result, case.batch / batch)
        if flops:
            result["gflops"] = flops / (result["median_ms"] * 1e6)
        run.outcome[impl] = result
    entry["impls"] = {impl: run.outcome[impl] for impl in IMPLS}  # in table order
    add_speedups(entry)
    ref = ctx.results.get("matmul", {}).get("reference_gflops")
    fast = entry["impls"].get("fastcnn", {})
    if ref and fast.get("gflops"):
        entry["pct_of_matmul"] = 100.0 * fast["gflops"] / ref
    return entry


class _OpRun:
    """One op case and pass on its way through :func:`run_op_case`: check, then time."""

    def __init__(self, case: OpCase, pass_: str, ctx: Context) -> None:
        self.case, self.pass_, self.ctx = case, pass_, ctx
        self.outcome: dict[str, dict[str, Any]] = {}
        self.fns: dict[str, Callable[[], object]] = {}
        self.checked: dict[str, tuple[float, float]] = {}  # impl: (max rel. error, first ms)
        self.batches = {i: case.loops_batch if i == "loops" else case.batch for i in IMPLS}

    def raised(self, impl: str, exc: Exception) -> None:
        """Record an implementation that raised: one failure must not stop the suite."""
        self.outcome[impl] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        self.ctx.errors.append(f"{self.case.id} {self.pass_}: {IMPL_LABELS[impl]} raised {exc!r}")

    def check(self, impl: str) -> None:
        """Call ``impl`` once and compare it with the oracle; keep it when it agrees."""
        skip = self.ctx.unavailable.get(impl)
        if skip:
            self.outcome[impl] = {"status": "skipped", "reason": skip}
            return
        try:
            fn = self.case.make(impl, self.pass_, self.batches[impl], self.ctx.torch)
            with impl_backend(impl):
                t0 = time.perf_counter()
                outputs = fn()
                first_ms = 1e3 * (time.perf_counter() - t0)
                err = max_rel_error(outputs, self.case.oracle(self.pass_, self.batches[impl]))
                del outputs
        except Exception as exc:
            self.raised(impl, exc)
            return
        if err > OP_TOLERANCE:
            self.outcome[impl] = {"status": "wrong", "max_rel_error": err}
            self.ctx.errors.append(
                f"{self.case.id} {self.pass_}: {IMPL_LABELS[impl]} disagrees with the float64 "
                f"oracle (max relative error {err:.3g} > {OP_TOLERANCE:g}); not timed"
            )
            return
        self.fns[impl], self.checked[impl] = fn, (err, first_ms)

    def time(self) -> tuple[dict[str, dict[str, Any]], dict[str, Exception]]:
        """Time the implementations that passed; returns the timings and the failures."""
        settings = self.ctx.settings
        timings: dict[str, dict[str, Any]] = {}
        failures: dict[str, Exception] = {}
        if settings.quick:  # smoke test: the checked call is the one sample
            return {impl: single_sample(self.checked[impl][1]) for impl in self.fns}, failures
        if "loops" in self.fns:  # seconds per call: one block on its own, scaled later
            try:
                with impl_backend("loops"):
                    timings["loops"] = measure(
                        self.fns["loops"], settings.loops_budget, 1, warmup_calls=0
                    )
            except Exception as exc:
                failures["loops"] = exc
        compared = {impl: fn for impl, fn in self.fns.items() if impl != "loops"}
        timings |= measure_interleaved(
            compared, settings.budget, settings.min_repeats, settings.warmup,
            settings.warmup_calls, contexts=impl_backend, failures=failures,
        )  # fmt: skip
        return timings, failures


def bench_matmul(settings: Settings) -> dict[str, Any]:
    """float32 GEMM GFLOP/s of numpy's and scipy's BLAS; the better one is the reference."""
    n = settings.matmul_size
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    flops = 2.0 * n**3
    out: dict[str, Any] = {"size": n, "flops": flops}
    numpy_timing = measure(lambda: np.matmul(a, b, out=c), settings.budget, 3, settings.warmup)
    out["numpy"] = {**numpy_timing, "gflops": flops / (numpy_timing["median_ms"] * 1e6)}
    try:
        from scipy.linalg.blas import sgemm

        # b.T and a.T are Fortran-ordered views: sgemm computes (a @ b).T without copies.
        scipy_timing = measure(lambda: sgemm(1.0, b.T, a.T), settings.budget, 3, settings.warmup)
        if max_rel_error([sgemm(1.0, b.T, a.T).T], [np.matmul(a, b)]) > 1e-4:
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
