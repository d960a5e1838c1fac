"""Element-wise activations and their backward."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    as_float_array,
    check_axis,
    check_finite_float,
    check_gelu_approximate,
    check_grad_out,
    check_same_shape,
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


# ---------------------------------------------------------------------------------------
# GELU and SiLU: the gradient takes the input x.


def _from_input(kernel: str, x: ArrayLike, *extra: bool) -> np.ndarray:
    x = as_float_array(x, "x")
    out = _buffers.empty(x.shape, dtype=x.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(x).reshape(-1), out.reshape(-1), *extra, _threads.get_num_threads()
    )
    return out


def _from_input_backward(
    kernel: str, grad_out: ArrayLike, x: ArrayLike, *extra: bool
) -> np.ndarray:
    x = as_float_array(x, "x")
    grad_out = check_same_shape(grad_out, x, "x")
    grad_x = _buffers.empty(x.shape, dtype=x.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(grad_out).reshape(-1), contiguous(x).reshape(-1), grad_x.reshape(-1), *extra,
        _threads.get_num_threads(),
    )  # fmt: skip
    return grad_x


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """Gaussian error linear unit, ``x * Phi(x)`` element-wise (PyTorch's ``gelu``).

    ``Phi`` is the standard normal CDF, ``(1 + erf(x / sqrt(2))) / 2``, evaluated as
    ``erfc(-x / sqrt(2)) / 2`` so that it keeps its relative precision for x < 0. With
    ``approximate='tanh'``: ``x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``,
    evaluated as the equal ``x * sigmoid(2 * sqrt(2 / pi) * (...))``, which keeps its
    relative precision for negative x where ``1 + tanh`` cancels. NaN propagates, and
    ``-inf`` gives NaN (``-inf * 0``), as in PyTorch.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64
    approximate : {'none', 'tanh'}, default 'none'

    Returns
    -------
    y : ndarray of the shape and dtype of x

    Shapes
    ------
    Any shape; the output has the input's.
    """
    return _from_input("gelu_forward", x, check_gelu_approximate(approximate))


def gelu_backward(grad_out: np.ndarray, x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """Gradient of :func:`gelu` from its input ``x``.

    ``grad_out * (Phi(x) + x * phi(x))`` (``phi`` the normal density), or the derivative
    of the tanh form with ``approximate='tanh'``.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of x
    x : ndarray, the input of :func:`gelu`
    approximate : {'none', 'tanh'}, default 'none'
        As given to :func:`gelu`.

    Returns
    -------
    grad_x : ndarray of the shape and dtype of x
    """
    tanh_form = check_gelu_approximate(approximate)
    return _from_input_backward("gelu_backward", grad_out, x, tanh_form)


def silu(x: np.ndarray) -> np.ndarray:
    """Sigmoid linear unit (swish), ``x * sigmoid(x)`` element-wise (PyTorch's ``silu``).

    The sigmoid is computed as in :func:`sigmoid`, so nothing overflows. NaN propagates.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of x

    Shapes
    ------
    Any shape; the output has the input's.
    """
    return _from_input("silu_forward", x)


def silu_backward(grad_out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient of :func:`silu` from its input: ``grad_out * s * (1 + x * (1 - s))``.

    ``s = sigmoid(x)``.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of x
    x : ndarray, the input of :func:`silu`

    Returns
    -------
    grad_x : ndarray of the shape and dtype of x
    """
    return _from_input_backward("silu_backward", grad_out, x)


# ---------------------------------------------------------------------------------------
# Softmax and log-softmax along one axis. The backends work on the rows of an (M, C)
# array: any other axis is moved last (a transposed copy) and moved back after.


def _rows(a: np.ndarray, axis: int) -> np.ndarray:
    """Return ``a`` with ``axis`` moved last, as a C-contiguous (M, C) array."""
    moved = np.moveaxis(a, axis, -1)
    return contiguous(moved).reshape(math.prod(moved.shape[:-1]), a.shape[axis])


def _unrows(rows: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Undo :func:`_rows`: return an array of ``shape``, C-contiguous."""
    moved = rows.reshape(*shape[:axis], *shape[axis + 1 :], shape[axis])
    return np.ascontiguousarray(np.moveaxis(moved, -1, axis))


def _softmax(x: ArrayLike, axis: int, log_out: bool) -> np.ndarray:
    x = as_float_array(x, "x")
    axis = check_axis(axis, x.ndim)
    rows = _rows(x, axis)
    out = _buffers.empty(rows.shape, dtype=x.dtype)
    _backend.current().softmax_forward(rows, out, log_out, _threads.get_num_threads())
    return _unrows(out, x.shape, axis)


def _softmax_backward(grad_out: ArrayLike, y: ArrayLike, axis: int, log_out: bool) -> np.ndarray:
    y = as_float_array(y, "y")
    axis = check_axis(axis, y.ndim)
    grad_out = check_same_shape(grad_out, y, "y")
    y_rows = _rows(y, axis)
    grad_x = _buffers.empty(y_rows.shape, dtype=y.dtype)
    _backend.current().softmax_backward(
        _rows(grad_out, axis), y_rows, grad_x, log_out, _threads.get_num_threads()
    )
    return _unrows(grad_x, y.shape, axis)


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax along ``axis``: ``exp(x) / sum(exp(x))`` (PyTorch's ``softmax(x, dim=axis)``).

    Numerically stable: the maximum along the axis is subtracted before ``exp``, so any
    finite input gives no overflow, and the sums are accumulated in float64. A NaN makes
    its whole slice NaN; a slice of only ``-inf`` gives NaN, as in PyTorch.

    Parameters
    ----------
    x : ndarray of at least 1 dimension, float32 or float64
    axis : int, default 1
        The class axis (channels of an (N, C, H, W) batch); negative counts from the end.

    Returns
    -------
    y : ndarray of the shape and dtype of x, summing to 1 along ``axis``

    Shapes
    ------
    Any shape, e.g. (N, C) or (N, C, H, W); the output has the input's. The compiled
    kernel works along the last axis: another axis costs a transposed copy each way.
    """
    return _softmax(x, axis, False)


def softmax_backward(grad_out: np.ndarray, y: np.ndarray, axis: int = 1) -> np.ndarray:
    """Gradient of :func:`softmax` from its output: ``y * (grad_out - sum(grad_out * y))``.

    The sum runs along ``axis``.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`softmax`
    axis : int, default 1
        As given to :func:`softmax`.

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _softmax_backward(grad_out, y, axis, False)


def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """``log(softmax(x))`` along ``axis``, as ``x - max - log(sum(exp(x - max)))``.

    PyTorch's ``log_softmax(x, dim=axis)``; stable for any finite input.

    Parameters
    ----------
    x : ndarray of at least 1 dimension, float32 or float64
    axis : int, default 1

    Returns
    -------
    y : ndarray of the shape and dtype of x

    Shapes
    ------
    Any shape; the output has the input's.
    """
    return _softmax(x, axis, True)


def log_softmax_backward(grad_out: np.ndarray, y: np.ndarray, axis: int = 1) -> np.ndarray:
    """Gradient of :func:`log_softmax` from its output: ``grad_out - exp(y) * sum(grad_out)``.

    The sum runs along ``axis``.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`log_softmax`
    axis : int, default 1
        As given to :func:`log_softmax`.

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _softmax_backward(grad_out, y, axis, True)
