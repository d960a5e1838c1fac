"""Element-wise activations and their backward."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    as_float_array,
    check_finite_float,
    check_grad_out,
    contiguous,
    same_dtype,
)

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike


# ---------------------------------------------------------------------------------------
# Activations


def _activation(kernel: str, x: ArrayLike) -> np.ndarray:
    x = as_float_array(x, "x")
    out = _buffers.empty(x.shape, dtype=x.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(x).reshape(-1), out.reshape(-1), _threads.get_num_threads()
    )
    return out


def _activation_backward(kernel: str, grad_out: ArrayLike, y: ArrayLike) -> np.ndarray:
    y = as_float_array(y, "y")
    grad_out = as_float_array(grad_out, "grad_out")
    same_dtype(y, grad_out, "y", "grad_out")
    if grad_out.shape != y.shape:
        raise ValueError(f"grad_out must have the shape of y {y.shape}, got {grad_out.shape}")
    grad_x = _buffers.empty(y.shape, dtype=y.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(grad_out).reshape(-1), contiguous(y).reshape(-1), grad_x.reshape(-1),
        _threads.get_num_threads(),
    )  # fmt: skip
    return grad_x


def relu(x: np.ndarray) -> np.ndarray:
    """Rectified linear unit, ``max(x, 0)`` element-wise; NaN propagates.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    return _activation("relu_forward", x)


def relu_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`relu` from its output ``y``.

    0 where ``y <= 0`` and ``grad_out`` elsewhere: a select, as in PyTorch, so a NaN
    gradient stops at an inactive unit and passes where the output itself is NaN. The
    gradient at 0 is taken as 0.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`relu`

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _activation_backward("relu_backward", grad_out, y)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent element-wise.

    The compiled backend computes float32 with a vectorized kernel accurate to a few
    units in the last place (numpy's ``tanh`` is the reference); float64 with numpy.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    return _activation("tanh_forward", x)


def tanh_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`tanh` from its output: ``grad_out * (1 - y**2)``.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`tanh`

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _activation_backward("tanh_backward", grad_out, y)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))`` element-wise.

    Computed as ``e / (1 + e)`` for ``x < 0`` and ``1 / (1 + e)`` otherwise, with
    ``e = exp(-|x|)``: it never overflows and is accurate to a few units in the last
    place over the whole range, small outputs (large negative x) included.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    return _activation("sigmoid_forward", x)


def sigmoid_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`sigmoid` from its output: ``grad_out * y * (1 - y)``.

    Accurate to a few units in the last place where ``y <= 1/2`` (``x <= 0``). Where
    ``y`` rounds to 1 (``x`` above about 17 in float32, 37 in float64) the gradient is
    0, as in PyTorch, which computes it from the output in the same way.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`sigmoid`

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _activation_backward("sigmoid_backward", grad_out, y)


def _activation_with(kernel: str, x: ArrayLike, slope: float) -> np.ndarray:
    x = as_float_array(x, "x")
    out = _buffers.empty(x.shape, dtype=x.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(x).reshape(-1), out.reshape(-1), slope, _threads.get_num_threads()
    )
    return out


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """Leaky rectifier: ``x`` where ``x > 0``, ``negative_slope * x`` elsewhere.

    NaN propagates. ``negative_slope`` is rounded to the dtype of ``x`` first, as PyTorch's
    ``leaky_relu`` does.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64
    negative_slope : float, default 0.01
        Finite; may be negative or zero.

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    slope = check_finite_float(negative_slope, "negative_slope")
    return _activation_with("leaky_relu_forward", x, slope)


def leaky_relu_backward(
    grad_out: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """Gradient of :func:`leaky_relu` from its input ``x``.

    ``grad_out`` where ``x > 0``, ``negative_slope * grad_out`` elsewhere (at 0 and NaN too,
    as in PyTorch). The input, not the output: with ``negative_slope <= 0`` the output's
    sign does not tell the branch.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of x
    x : ndarray, the input of :func:`leaky_relu`
    negative_slope : float, default 0.01

    Returns
    -------
    grad_x : ndarray of the shape and dtype of x
    """
    slope = check_finite_float(negative_slope, "negative_slope")
    x = as_float_array(x, "x")
    grad_out = check_grad_out(grad_out, x, x.shape)
    grad_x = _buffers.empty(x.shape, dtype=x.dtype)
    _backend.current().leaky_relu_backward(
        grad_out.reshape(-1), contiguous(x).reshape(-1), grad_x.reshape(-1), slope,
        _threads.get_num_threads(),
    )  # fmt: skip
    return grad_x
