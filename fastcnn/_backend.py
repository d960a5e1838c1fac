"""Which backend runs the ops, and how many threads it may use.

Two backends implement the same functions (see ``_kernels/BACKEND_API.md``): the compiled
Cython kernels and the pure-numpy reference in ``_reference.py``. The compiled one is the
default whenever it imports; otherwise fastcnn falls back to numpy and warns once.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import types
import warnings
from collections.abc import Iterator
from typing import Protocol, cast

import numpy as np

BACKENDS = ("cython", "numpy")


class Backend(Protocol):
    """The kernels a backend provides (``_kernels/BACKEND_API.md`` gives the contract).

    ``fastcnn._reference`` (a module) and the compiled kernels' namespace both satisfy it.
    Parameters are positional-only: callers pass them in order, and the two backends may
    name them differently.
    """

    # fmt: off
    def conv2d_forward(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, out: np.ndarray,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
        groups: int, n_threads: int, /,
    ) -> None: ...
    def conv2d_backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray,
        grad_x: np.ndarray | None, grad_weight: np.ndarray | None, grad_bias: np.ndarray | None,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
        groups: int, n_threads: int, /,
    ) -> None: ...
    def max_pool2d_forward(
        self, x: np.ndarray, out: np.ndarray, indices: np.ndarray, kernel_h: int, kernel_w: int,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
        n_threads: int, /,
    ) -> None: ...
    def max_pool2d_backward(
        self, grad_out: np.ndarray, indices: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> int: ...
    def avg_pool2d_forward(
        self, x: np.ndarray, out: np.ndarray, kernel_h: int, kernel_w: int, stride_h: int,
        stride_w: int, pad_h: int, pad_w: int, count_include_pad: bool, divisor_override: int,
        n_threads: int, /,
    ) -> None: ...
    def avg_pool2d_backward(
        self, grad_out: np.ndarray, grad_x: np.ndarray, kernel_h: int, kernel_w: int,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, count_include_pad: bool,
        divisor_override: int, n_threads: int, /,
    ) -> None: ...
    def linear_forward(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, out: np.ndarray,
        n_threads: int, /,
    ) -> None: ...
    def linear_backward(
        self, grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray,
        grad_x: np.ndarray | None, grad_weight: np.ndarray | None, grad_bias: np.ndarray | None,
        n_threads: int, /,
    ) -> None: ...
    def relu_forward(self, x: np.ndarray, out: np.ndarray, n_threads: int, /) -> None: ...
    def relu_backward(
        self, grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None: ...
    def tanh_forward(self, x: np.ndarray, out: np.ndarray, n_threads: int, /) -> None: ...
    def tanh_backward(
        self, grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None: ...
    def sigmoid_forward(self, x: np.ndarray, out: np.ndarray, n_threads: int, /) -> None: ...
    def sigmoid_backward(
        self, grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int, /
    ) -> None: ...
    def sgd_update(
        self, params: list[np.ndarray], grads: list[np.ndarray],
        momentum_buffers: list[np.ndarray] | None, lr: float, momentum: float,
        weight_decay: float, nesterov: bool, first: bool, n_threads: int, /,
    ) -> None: ...
    def adam_update(
        self, params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
        exp_avg_sqs: list[np.ndarray], beta1: float, beta2: float, eps: float,
        weight_decay: float, step_size: float, denom_scale: float, n_threads: int, /,
    ) -> None: ...
    def softmax_cross_entropy(
        self, logits: np.ndarray, y: np.ndarray, grad: np.ndarray, n_threads: int, /
    ) -> float: ...
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
            from fastcnn._kernels import _activation, _conv, _linear, _loss, _openmp, _optim, _pool
        # Under a spin the user chose (a passive policy, say) workers may sleep at once:
        # small ops then stay on one thread.
        warm = spin_known and _openmp.openmp_enabled()
        _openmp.set_warm_window(WARM_TEAM_WINDOW_S if warm else 0.0)
    except Exception as exc:  # any failure (missing .so, ABI mismatch) means: fall back
        return None, f"{type(exc).__name__}: {exc}"
    namespace = types.SimpleNamespace(
        name="cython",
        conv2d_forward=_conv.conv2d_forward,
        conv2d_backward=_conv.conv2d_backward,
        linear_forward=_linear.linear_forward,
        linear_backward=_linear.linear_backward,
        max_pool2d_forward=_pool.max_pool2d_forward,
        max_pool2d_backward=_pool.max_pool2d_backward,
        avg_pool2d_forward=_pool.avg_pool2d_forward,
        avg_pool2d_backward=_pool.avg_pool2d_backward,
        relu_forward=_activation.relu_forward,
        relu_backward=_activation.relu_backward,
        tanh_forward=_activation.tanh_forward,
        tanh_backward=_activation.tanh_backward,
        sigmoid_forward=_activation.sigmoid_forward,
        sigmoid_backward=_activation.sigmoid_backward,
        sgd_update=_optim.sgd_update,
        adam_update=_optim.adam_update,
        softmax_cross_entropy=_loss.softmax_cross_entropy,
        openmp=_openmp,
    )
    # A SimpleNamespace's attributes are not known statically: the stubs of the modules
    # it is built from are (each of those functions matches its Backend method).
    return cast(Backend, namespace), None


_compiled, _compiled_error = _import_compiled()
_reference: Backend | None = None  # imported on first use: keeps `import fastcnn` light


def _reference_module() -> Backend:
    global _reference
    if _reference is None:
        from fastcnn import _reference as ref

        _reference = ref
    return _reference


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
    """The checkout this fastcnn was imported from, if it is one whose kernels are not
    built (Python started in the checkout's root finds the sources before the install).
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
    """Name of the backend that runs ops in the calling thread (or task): ``'cython'`` or
    ``'numpy'``.

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
    """Select the process's default backend, used by every thread that is not inside a
    :func:`use_backend` block.

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
    """Context manager: run the ops of the calling thread (or asyncio task) on ``name``
    inside the block, and restore its previous backend on exit.

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
    """The module-like object implementing the calling thread's backend's kernels."""
    # On every op's path: one ContextVar.get (~30 ns), no lock.
    if (_scoped.get() or _default) == "cython":
        assert _compiled is not None  # _checked and _initial_backend allow "cython" only then
        return _compiled
    return _reference_module()
