"""Which backend runs the ops, and how many threads it may use.

Two backends implement the same functions (see ``_kernels/BACKEND_API.md``): the compiled
Cython kernels and the pure-numpy reference in ``_reference.py``. The compiled one is the
default whenever it imports; otherwise fastcnn falls back to numpy and warns once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import types
import warnings
from collections.abc import Iterator

BACKENDS = ("cython", "numpy")


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


def _import_compiled() -> tuple[types.SimpleNamespace | None, str | None]:
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
    return namespace, None


_compiled, _compiled_error = _import_compiled()
_reference = None  # imported on first use: keeps `import fastcnn` light


def _reference_module():
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
            f"numpy backend is used. Reason: {_compiled_error}. "
            "Reinstall fastcnn (pip install --force-reinstall fastcnn) to get the "
            "compiled kernels.",
            FastCNNWarning,
            stacklevel=3,
        )
        return "numpy"
    return "cython"


_active = _initial_backend()
_lock = threading.Lock()


def available_backends() -> tuple[str, ...]:
    """Names of the backends that can be selected on this installation."""
    return BACKENDS if _compiled is not None else ("numpy",)


def backend_import_error() -> str | None:
    """Why the compiled extension failed to import, or None if it imported."""
    return _compiled_error


def get_backend() -> str:
    """Name of the active backend: ``'cython'`` or ``'numpy'``."""
    return _active


def set_backend(name: str) -> None:
    """Select the backend used by every op from now on.

    Parameters
    ----------
    name : {'cython', 'numpy'}
        ``'cython'`` needs the compiled extension; ``'numpy'`` is always available.
    """
    global _active
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    name = name.lower()
    if name == "cython" and _compiled is None:
        raise ImportError(f"the compiled backend is not available: {_compiled_error}")
    with _lock:
        _active = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Context manager that selects a backend and restores the previous one on exit.

    Examples
    --------
    >>> import fastcnn
    >>> with fastcnn.use_backend("numpy"):
    ...     fastcnn.get_backend()
    'numpy'
    """
    previous = get_backend()
    set_backend(name)
    try:
        yield name.lower()
    finally:
        set_backend(previous)


def current():
    """The module-like object implementing the active backend's kernels."""
    if _active == "cython":
        return _compiled
    return _reference_module()
