"""Which backend runs the ops, and how many threads it may use.

Two backends implement the same functions (the :class:`Backend` protocol): the compiled
Cython kernels and the pure-numpy reference in ``_reference.py``. The compiled one is the
default whenever it imports; otherwise fastcnn falls back to numpy and warns once.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Iterator
from typing import Protocol

import numpy as np

BACKENDS = ("cython", "numpy")


class Backend(Protocol):
    """The backend contract: the kernels a backend provides, and the rule each follows.

    ``fastcnn._reference`` (a module, the numpy oracle) and the compiled kernels'
    namespace both satisfy it, and mypy checks both against it (end of this module).
    :mod:`fastcnn.functional` validates every argument, resolves defaults and output
    sizes and allocates every output buffer, then calls a backend with:

    * arrays that are C-contiguous, all float32 or all float64 (indices: int64, labels:
      intp);
    * plain Python ints for every size, stride, padding and dilation;
    * ``n_threads``: an int >= 1 (the numpy backend ignores it).

    A backend never allocates its outputs and never validates; it overwrites every
    element of every output buffer it is given (no accumulation into what was there).
    The exceptions update their arrays in place: the optimizer steps (parameters and
    their state) and batch norm's running statistics. Parameters are positional-only:
    callers pass them in order, and the two backends may name them differently.
    """

    # fmt: off
    def conv2d_forward(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, out: np.ndarray,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
        groups: int, n_threads: int, /,
    ) -> None:
        """Cross-correlate x (N, C_in, H, W) with weight (C_out, C_in // groups, kH, kW).

        Zero padding, PyTorch semantics; bias (C_out,) or None; out (N, C_out, H_out,
        W_out) with ``H_out = (H + 2*pad_h - dil_h*(kH-1) - 1) // stride_h + 1`` >= 1.
        """
    def conv2d_backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray,
        grad_x: np.ndarray | None, grad_weight: np.ndarray | None, grad_bias: np.ndarray | None,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
        groups: int, n_threads: int, /,
    ) -> None:
        """Overwrite each gradient buffer (shape of x, of weight, (C_out,)); skip a None."""
    def max_pool2d_forward(
        self, x: np.ndarray, out: np.ndarray, indices: np.ndarray, kernel_h: int, kernel_w: int,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
        n_threads: int, /,
    ) -> None:
        """Max-pool x (N, C, H, W) into out; indices (int64) get ``h * W + w`` of each max.

        Window tap (i, j) of output (oh, ow) sits at ``h = oh*stride_h - pad_h + i*dil_h``
        (w alike); padding is never selected. Scanning the in-bounds taps in row-major
        order from the first, the running max is replaced when ``v > max`` or ``v`` is NaN
        (PyTorch's CPU rule): ties go to the first maximum, the last NaN wins. The caller
        refuses geometries with a window made only of padding.
        """
    def max_pool2d_backward(
        self, grad_out: np.ndarray, indices: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> int:
        """Zero grad_x, add each grad_out at its index; return how many were out of range.

        Overlapping windows accumulate. Each index is read once and checked there (the
        caller's array may change in another thread): one outside ``[0, H*W)`` writes
        nothing and is counted.
        """
    def avg_pool2d_forward(
        self, x: np.ndarray, out: np.ndarray, kernel_h: int, kernel_w: int, stride_h: int,
        stride_w: int, pad_h: int, pad_w: int, count_include_pad: bool, divisor_override: int,
        n_threads: int, /,
    ) -> None:
        """Average-pool x into out with PyTorch's divisor (``divisor_override`` 0: none).

        ``h0 = oh*stride_h - pad_h``, ``h1 = min(h0 + kernel_h, H + pad_h)`` (w alike);
        ``pool_size = (h1 - h0) * (w1 - w0)``; then h0, h1 are clipped to [0, H] and
        ``out = sum(x[h0:h1, w0:w1]) / divisor``, the divisor being ``divisor_override``,
        else ``pool_size`` with ``count_include_pad``, else the clipped window's size.
        """
    def avg_pool2d_backward(
        self, grad_out: np.ndarray, grad_x: np.ndarray, kernel_h: int, kernel_w: int,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, count_include_pad: bool,
        divisor_override: int, n_threads: int, /,
    ) -> None:
        """Spread each grad_out as grad / divisor over its clipped window (forward's rule)."""
    def linear_forward(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, out: np.ndarray,
        n_threads: int, /,
    ) -> None:
        """Write ``x @ weight.T + bias`` (x (N, in), weight (out, in)) into out (N, out)."""
    def linear_backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray,
        grad_x: np.ndarray | None, grad_weight: np.ndarray | None, grad_bias: np.ndarray | None,
        n_threads: int, /,
    ) -> None:
        """Overwrite each gradient buffer of :meth:`linear_forward`; skip a None."""
    def relu_forward(self, x: np.ndarray, out: np.ndarray, n_threads: int, /) -> None:
        """Write ``max(x, 0)`` (1-D, the caller flattens) into out; NaN propagates."""
    def relu_backward(
        self, grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None:
        """Write 0 where the output ``y <= 0``, else grad_out (a select) into grad_x."""
    def tanh_forward(self, x: np.ndarray, out: np.ndarray, n_threads: int, /) -> None:
        """Write ``tanh(x)`` (1-D) into out."""
    def tanh_backward(
        self, grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None:
        """Write ``grad_out * (1 - y*y)`` into grad_x, y the forward's output."""
    def sigmoid_forward(self, x: np.ndarray, out: np.ndarray, n_threads: int, /) -> None:
        """Write ``e / (1 + e)`` for x < 0, else ``1 / (1 + e)``, ``e = exp(-|x|)``, into out.

        No overflow, and a few ulp of relative error over the whole range.
        """
    def sigmoid_backward(
        self, grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None:
        """Write ``grad_out * (y * (1 - y))`` into grad_x, y the forward's output."""
    def leaky_relu_forward(
        self, x: np.ndarray, out: np.ndarray, negative_slope: float, n_threads: int, /
    ) -> None:
        """Write x where ``x > 0``, else ``x * negative_slope`` (1-D) into out.

        The slope is rounded to the arrays' dtype first; NaN takes the slope branch.
        """
    def leaky_relu_backward(
        self, grad_out: np.ndarray, x: np.ndarray, grad_x: np.ndarray, negative_slope: float,
        n_threads: int, /,
    ) -> None:
        """Write grad_out where the input ``x > 0``, else ``grad_out * negative_slope``."""
    def batch_norm_forward(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
        running_mean: np.ndarray | None, running_var: np.ndarray | None, out: np.ndarray,
        mean: np.ndarray, inv_std: np.ndarray, training: bool, momentum: float, eps: float,
        n_threads: int, /,
    ) -> None:
        """Normalize each channel of x (N, C, L) into out; write the statistics used.

        Training: the batch mean and biased variance ``var`` of each channel;
        ``inv_std = 1 / sqrt(var + eps)``; ``out = (x - mean) * inv_std * weight + bias``;
        each running statistic given (not None) is updated in place as
        ``(1 - momentum) * running + momentum * batch``, the variance unbiased
        (``var * L' / (L' - 1)``, ``L' = N * L`` >= 2). Eval: mean and inv_std come
        from the running statistics (both given), ``out = x * scale + shift``.
        """
    def batch_norm_backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, mean: np.ndarray,
        inv_std: np.ndarray, grad_x: np.ndarray, grad_weight: np.ndarray,
        grad_bias: np.ndarray, training: bool, n_threads: int, /,
    ) -> None:
        """Overwrite the gradients of :meth:`batch_norm_forward`, given its mean and inv_std.

        ``xhat = (x - mean) * inv_std``; ``grad_bias = sum(g)``, ``grad_weight =
        sum(g * xhat)`` per channel; ``grad_x = weight * inv_std * (g - grad_bias / L' -
        xhat * grad_weight / L')`` in training, ``weight * inv_std * g`` in eval.
        """
    def sgd_update(
        self, params: list[np.ndarray], grads: list[np.ndarray],
        momentum_buffers: list[np.ndarray] | None, lr: float, momentum: float,
        weight_decay: float, nesterov: bool, first: bool, n_threads: int, /,
    ) -> None:
        """Update each param in place as ``torch.optim.SGD`` with dampening 0.

        ``d = grad + weight_decay * param``; ``buf = d`` (first) or ``momentum * buf + d``
        (buffers updated in place; None when momentum is 0); ``param -= lr * d + lr *
        momentum * buf`` (nesterov), ``lr * buf`` (momentum) or ``lr * d``. Scalars are
        rounded to the arrays' dtype as numpy rounds Python floats, and the operations run
        in the order written, so both backends agree bit for bit.
        """
    def adam_update(
        self, params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
        exp_avg_sqs: list[np.ndarray], beta1: float, beta2: float, eps: float,
        weight_decay: float, step_size: float, denom_scale: float, n_threads: int, /,
    ) -> None:
        """Update every array in place as ``torch.optim.Adam`` (L2 decay, not AdamW).

        ``g = grad + weight_decay * param``; ``m = beta1 * m + (1 - beta1) * g``;
        ``v = beta2 * v + (1 - beta2) * g * g``; ``param -= step_size * m / (sqrt(v) /
        denom_scale + eps)``, with ``step_size = lr / (1 - beta1**t)`` and ``denom_scale
        = sqrt(1 - beta2**t)`` from the caller; bit for bit as :meth:`sgd_update`.
        """
    def softmax_cross_entropy(
        self, logits: np.ndarray, y: np.ndarray, grad: np.ndarray, n_threads: int, /
    ) -> float:
        """Return the mean over rows of ``log(sum(exp(s))) - s[y]``, s = logits - row max.

        logits (N, C), N >= 1; y (N,) intp labels, each read once and checked there
        (another thread may write them): one outside [0, C) raises ValueError. grad (N, C)
        gets ``(softmax(logits) - one_hot(y)) / N``. A row with a NaN gives NaN.
        """
    # GELU, SiLU and softmax
    def gelu_forward(
        self, x: np.ndarray, out: np.ndarray, approximate_tanh: bool, n_threads: int, /
    ) -> None:
        """Write ``x / 2 * (1 + erf(x / sqrt(2)))``, as ``x / 2 * erfc(-x / sqrt(2))``, into out.

        With approximate_tanh: ``x / 2 * (1 + tanh(z))``, ``z = sqrt(2 / pi) * (x + 0.044715
        * x**3)``, computed as ``x * sigmoid(2 z)`` (no cancellation for negative x).
        """
    def gelu_backward(
        self, grad_out: np.ndarray, x: np.ndarray, grad_x: np.ndarray, approximate_tanh: bool,
        n_threads: int, /,
    ) -> None:
        """Write ``grad_out * gelu'(x)`` into grad_x, x the forward's input."""
    def silu_forward(self, x: np.ndarray, out: np.ndarray, n_threads: int, /) -> None:
        """Write ``x * sigmoid(x)`` (1-D, the sigmoid as in sigmoid_forward) into out."""
    def silu_backward(
        self, grad_out: np.ndarray, x: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None:
        """Write ``grad_out * s * (1 + x * (1 - s))``, ``s = sigmoid(x)``, into grad_x."""
    def softmax_forward(
        self, x: np.ndarray, out: np.ndarray, log_out: bool, n_threads: int, /
    ) -> None:
        """Write the softmax of each row of x (M, C) into out; log-softmax with log_out.

        ``s = x - max(row)``; ``out = exp(s) / sum(exp(s))`` or ``s - log(sum(exp(s)))``,
        the sum accumulated in double. A NaN in a row makes the row NaN. M or C may be 0.
        """
    def softmax_backward(
        self, grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, log_out: bool,
        n_threads: int, /,
    ) -> None:
        """Write ``y * (g - sum(g * y))`` per row (log_out: ``g - exp(y) * sum(g)``)."""
    # -- resampling: adaptive pooling and interpolation ---------------------------------
    def adaptive_avg_pool2d_forward(
        self, x: np.ndarray, out: np.ndarray, n_threads: int, /
    ) -> None:
        """Write the mean of each adaptive bin of x (N, C, H, W) into out (N, C, oh, ow).

        Bin ``i`` of an axis spans ``[floor(i * H / oh), ceil((i + 1) * H / oh))`` (W
        alike); the divisor is the bin's size.
        """
    def adaptive_avg_pool2d_backward(
        self, grad_out: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None:
        """Spread each grad_out / bin size over its bin; overlapping bins accumulate."""
    def adaptive_max_pool2d_forward(
        self, x: np.ndarray, out: np.ndarray, indices: np.ndarray, n_threads: int, /
    ) -> None:
        """Write each adaptive bin's max and its ``h * W + w`` (max_pool2d_forward's scan rule)."""
    def interpolate_forward(
        self, x: np.ndarray, out: np.ndarray, bilinear: bool, align_corners: bool,
        scale_h: float, scale_w: float, n_threads: int, /,
    ) -> None:
        """Resize x into out, nearest or bilinear, with PyTorch's source indices.

        ``scale_h`` is the scale factor given (0.0: none, ``H / oh`` is used instead).
        Nearest: ``min(floor(i * s), H - 1)`` in float32, ``s = 1 / scale_h`` or
        ``H / oh`` (``i`` if ``oh == H``, ``i // 2`` if ``oh == 2 * H``). Bilinear, in
        the arrays' dtype: ``src = s * i`` (align_corners, ``s = (H - 1) / (oh - 1)``,
        0 if ``oh == 1``) else ``max(s * (i + 0.5) - 0.5, 0)``; ``s = 1`` if
        ``oh == H``; ``i0 = min(floor(src), H - 1)``, ``i1 = i0 + (i0 < H - 1)``,
        ``l1 = clip(src - i0, 0, 1)``, ``l0 = 1 - l1``; W alike;
        ``out = l0h * (l0w * x00 + l1w * x01) + l1h * (l0w * x10 + l1w * x11)``.
        """
    def interpolate_backward(
        self, grad_out: np.ndarray, grad_x: np.ndarray, bilinear: bool, align_corners: bool,
        scale_h: float, scale_w: float, n_threads: int, /,
    ) -> None:
        """Zero grad_x and add each grad_out times its weight to each of its sources."""
    # -- padding modes (conv_transpose2d needs none: it runs on the conv2d kernels) --
    def pad2d_forward(
        self, x: np.ndarray, out: np.ndarray, rows: np.ndarray, cols: np.ndarray,
        n_threads: int, /,
    ) -> None:
        """Write ``x[n, c, rows[i], cols[j]]`` into ``out[n, c, i, j]``, 0 where either is -1.

        rows (H_out,) and cols (W_out,) are int64 maps the caller builds for the mode,
        each entry -1 or a valid index of x's H (rows) or W (cols); out has N * C planes.
        """
    def pad2d_backward(
        self, grad_out: np.ndarray, grad_x: np.ndarray, rows: np.ndarray, cols: np.ndarray,
        n_threads: int, /,
    ) -> None:
        """Overwrite grad_x with the adjoint of :meth:`pad2d_forward` (sums, not copies)."""
    # -- merging (graph models: Add, Concatenate) --
    def add_n(self, arrays: list[np.ndarray], out: np.ndarray, n_threads: int, /) -> None:
        """Write the sum of ``arrays`` (two or more, out's shape), added left to right."""
    def concatenate(self, arrays: list[np.ndarray], out: np.ndarray, n_threads: int, /) -> None:
        """Write the 3-D ``arrays`` (outer, C_i, inner) one after another on axis 1 into out."""
    def split(self, grad: np.ndarray, outs: list[np.ndarray], n_threads: int, /) -> None:
        """Cut the 3-D ``grad`` on axis 1 into ``outs`` (outer, C_i, inner), in order."""
    # fmt: on


class FastCNNWarning(UserWarning):
    """Warning category for fastcnn (e.g. the compiled extension failed to import)."""


# How long after a parallel region the compiled kernels treat its workers as still
# spinning, so that small ops may join the team (see _kernels/_openmp.pyx). About half of
# the ~75 us that GOMP_SPINCOUNT=5000 spins here, leaving room for slower spins.
WARM_TEAM_WINDOW_S = 40e-6


@contextlib.contextmanager
def _short_openmp_spin() -> Iterator[bool]:
    """Let the OpenMP runtime loaded with the kernels spin only briefly before sleeping.

    Idle OpenMP workers spin, by default for up to ~300,000 iterations, waiting for the
    next parallel region. Between two kernels a program often runs numpy code whose own
    BLAS threads need those cores: on 2 cores a conv + matmul + tanh loop ran 20x slower
    with spinning workers than with sleeping ones. Sleeping at once (a passive wait
    policy) costs a wake-up per kernel instead, and on a virtual machine waking an idle
    core is slow. 1,000 iterations last ~15 us on a 2026 Xeon VM, shorter than the gaps
    between a LeNet step's kernels, and the 2-thread step took 3.4 ms (4.3 ms at 1
    thread); 5,000 (~75 us) took 2.7 ms and still left the cores to BLAS soon enough.
    So unless the user chose a policy, libgomp reads GOMP_SPINCOUNT=5000 when it
    initialises (as the extension loads); the variable is removed again at once. Yields
    whether fastcnn set the spin, and so knows how long idle workers stay awake.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        yield False
        return
    os.environ["GOMP_SPINCOUNT"] = "5000"
    try:
        yield True
    finally:
        del os.environ["GOMP_SPINCOUNT"]


def _import_compiled() -> tuple[Backend | None, str | None]:
    try:
        with _short_openmp_spin() as spin_known:
            from fastcnn._kernels import (
                _activation,
                _conv,
                _elementwise,
                _linear,
                _loss,
                _merge,
                _norm,
                _openmp,
                _optim,
                _pad,
                _pool,
                _resample,
            )
        # Under a spin the user chose (a passive policy, say) workers may sleep at once:
        # small ops then stay on one thread.
        warm = spin_known and _openmp.openmp_enabled()
        _openmp.set_warm_window(WARM_TEAM_WINDOW_S if warm else 0.0)
    except Exception as exc:  # any failure (missing .so, ABI mismatch) means: fall back
        return None, f"{type(exc).__name__}: {exc}"

    class Compiled:
        """The compiled kernels, gathered from their modules (typed by their stubs)."""

        name = "cython"
        openmp = _openmp
        conv2d_forward = staticmethod(_conv.conv2d_forward)
        conv2d_backward = staticmethod(_conv.conv2d_backward)
        linear_forward = staticmethod(_linear.linear_forward)
        linear_backward = staticmethod(_linear.linear_backward)
        max_pool2d_forward = staticmethod(_pool.max_pool2d_forward)
        max_pool2d_backward = staticmethod(_pool.max_pool2d_backward)
        avg_pool2d_forward = staticmethod(_pool.avg_pool2d_forward)
        avg_pool2d_backward = staticmethod(_pool.avg_pool2d_backward)
        relu_forward = staticmethod(_activation.relu_forward)
        relu_backward = staticmethod(_activation.relu_backward)
        tanh_forward = staticmethod(_activation.tanh_forward)
        tanh_backward = staticmethod(_activation.tanh_backward)
        sigmoid_forward = staticmethod(_activation.sigmoid_forward)
        sigmoid_backward = staticmethod(_activation.sigmoid_backward)
        leaky_relu_forward = staticmethod(_elementwise.leaky_relu_forward)
        leaky_relu_backward = staticmethod(_elementwise.leaky_relu_backward)
        batch_norm_forward = staticmethod(_norm.batch_norm_forward)
        batch_norm_backward = staticmethod(_norm.batch_norm_backward)
        sgd_update = staticmethod(_optim.sgd_update)
        adam_update = staticmethod(_optim.adam_update)
        softmax_cross_entropy = staticmethod(_loss.softmax_cross_entropy)
        # GELU, SiLU and softmax
        gelu_forward = staticmethod(_elementwise.gelu_forward)
        gelu_backward = staticmethod(_elementwise.gelu_backward)
        silu_forward = staticmethod(_elementwise.silu_forward)
        silu_backward = staticmethod(_elementwise.silu_backward)
        softmax_forward = staticmethod(_elementwise.softmax_forward)
        softmax_backward = staticmethod(_elementwise.softmax_backward)
        # resampling: adaptive pooling and interpolation
        adaptive_avg_pool2d_forward = staticmethod(_resample.adaptive_avg_pool2d_forward)
        adaptive_avg_pool2d_backward = staticmethod(_resample.adaptive_avg_pool2d_backward)
        adaptive_max_pool2d_forward = staticmethod(_resample.adaptive_max_pool2d_forward)
        interpolate_forward = staticmethod(_resample.interpolate_forward)
        interpolate_backward = staticmethod(_resample.interpolate_backward)
        # padding modes
        pad2d_forward = staticmethod(_pad.pad2d_forward)
        pad2d_backward = staticmethod(_pad.pad2d_backward)
        # merging
        add_n = staticmethod(_merge.add_n)
        concatenate = staticmethod(_merge.concatenate)
        split = staticmethod(_merge.split)

    # mypy checks this assignment: a missing kernel or a signature that disagrees with
    # the Backend protocol (the stubs give the compiled signatures) is a type error.
    compiled: Backend = Compiled()
    return compiled, None


_compiled, _compiled_error = _import_compiled()
_reference: Backend | None = None  # imported on first use: keeps `import fastcnn` light


def reference_module() -> Backend:
    """Return the numpy backend (the oracle), importing it on first use."""
    global _reference
    if _reference is None:
        from fastcnn import _reference as ref

        _reference = ref  # mypy checks the module against the Backend protocol here
    return _reference


_reference_module = reference_module  # the name the tests use


def _initial_backend() -> str:
    requested = os.environ.get("FASTCNN_BACKEND", "").strip().lower()
    if requested and requested not in BACKENDS:
        raise ValueError(
            f"FASTCNN_BACKEND must be one of {BACKENDS}, got {os.environ['FASTCNN_BACKEND']!r}"
        )
    if requested == "cython" and _compiled is None:
        raise ImportError(
            "FASTCNN_BACKEND=cython was requested but the compiled extension "
            f"could not be imported ({_compiled_error})"
        )
    if requested:
        return requested
    if _compiled is None:
        warnings.warn(
            "fastcnn's compiled extension could not be imported, so the (much slower) "
            f"numpy backend is used. Reason: {_compiled_error}. {_remedy()}",
            FastCNNWarning,
            stacklevel=3,
        )
        return "numpy"
    return "cython"


def _source_tree() -> str | None:
    """Return the checkout this fastcnn was imported from, if its kernels are not built.

    Python started in the checkout's root finds the sources before the install.
    """
    package = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package)
    kernels = os.listdir(os.path.join(package, "_kernels"))
    has_sources = any(name.endswith(".pyx") for name in kernels)
    built = any(name.endswith((".so", ".pyd")) for name in kernels)
    if has_sources and not built and os.path.isfile(os.path.join(root, "setup.py")):
        return root
    return None


def _remedy() -> str:
    root = _source_tree()
    if root is not None:
        return (
            f"This fastcnn is the source tree in {root}, whose kernels are not built: run "
            "Python from another directory to use the installed fastcnn, or build this "
            "tree in place with `pip install -e .`."
        )
    return "Reinstall fastcnn (pip install --force-reinstall fastcnn) to get the compiled kernels."


# The selection has two levels. ``_default`` is the process's (FASTCNN_BACKEND, then
# set_backend). ``_scoped`` is a context variable that use_backend sets: every thread, and
# every asyncio task, has its own value, so a block changes only its own thread or task.
# Unset (None) means the process default.
_default = _initial_backend()
_scoped: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastcnn_backend", default=None
)


def available_backends() -> tuple[str, ...]:
    """Names of the backends that can be selected on this installation."""
    return BACKENDS if _compiled is not None else ("numpy",)


def backend_import_error() -> str | None:
    """Why the compiled extension failed to import, or None if it imported."""
    return _compiled_error


def get_backend() -> str:
    """Return the backend that runs ops in the calling thread or task (cython or numpy).

    That is the backend of the innermost :func:`use_backend` block the caller is in, or
    else the process default (:func:`set_backend`, ``FASTCNN_BACKEND``).
    """
    return _scoped.get() or _default


def _checked(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name.lower() == "cython" and _compiled is None:
        raise ImportError(f"the compiled backend is not available: {_compiled_error}")
    return name.lower()


def set_backend(name: str) -> None:
    """Select the process's default backend.

    Every thread that is not inside a :func:`use_backend` block uses it.

    Called inside a ``use_backend`` block, it also switches that block, for the rest of
    it, so the caller always runs on the backend it just set; when the block exits, its
    thread returns to what it had before the block: an enclosing block's backend, else
    the new default. Blocks in other threads or tasks keep their own backend.

    Parameters
    ----------
    name : {'cython', 'numpy'}
        ``'cython'`` needs the compiled extension; ``'numpy'`` is always available.
    """
    global _default
    name = _checked(name)
    _default = name  # one reference store: atomic, no lock needed
    if _scoped.get() is not None:
        _scoped.set(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Run the calling thread's (or asyncio task's) ops on ``name`` inside the block.

    On exit the thread gets its previous backend back.

    The selection is a :mod:`contextvars` variable, so the block affects only its own
    thread or task: other threads keep the process default (:func:`set_backend`) or
    their own blocks, however blocks in different threads interleave. A thread started
    inside the block, such as a ``ThreadPoolExecutor`` worker, starts with the process
    default too; to run a pool's tasks on the block's backend, enter ``use_backend``
    inside each task, or submit them through ``contextvars.copy_context().run``.

    Parameters
    ----------
    name : {'cython', 'numpy'}
        The backend for the block; errors as in :func:`set_backend`.

    Yields
    ------
    str
        The backend's name, lower-cased.

    Examples
    --------
    >>> import fastcnn
    >>> with fastcnn.use_backend("numpy"):
    ...     fastcnn.get_backend()
    'numpy'
    """
    name = _checked(name)
    token = _scoped.set(name)
    try:
        yield name
    finally:
        try:
            _scoped.reset(token)
        except ValueError:  # exited in another context (a generator resumed elsewhere)
            _scoped.set(None if token.old_value is token.MISSING else token.old_value)


def current() -> Backend:
    """Return the kernels of the calling thread's backend."""
    # On every op's path: one ContextVar.get (~30 ns), no lock.
    if (_scoped.get() or _default) == "cython":
        assert _compiled is not None  # _checked and _initial_backend allow "cython" only then
        return _compiled
    return reference_module()
