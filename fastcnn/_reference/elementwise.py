"""Element-wise activations over flat, C-contiguous buffers."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------
# Element-wise activations (flat, C-contiguous buffers)


def relu_forward(x: np.ndarray, out: np.ndarray, n_threads: int) -> None:
    """``out = max(x, 0)``; NaN propagates."""
    np.maximum(x, 0, out=out)


def relu_backward(grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int) -> None:
    """``grad_x = 0 where y <= 0, else grad_out`` (a select, so NaN stops at inactive units)."""
    np.copyto(grad_x, np.where(y <= 0, 0, grad_out))


def tanh_forward(x: np.ndarray, out: np.ndarray, n_threads: int) -> None:
    """``out = tanh(x)``."""
    np.tanh(x, out=out)


def tanh_backward(grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int) -> None:
    """``grad_x = grad_out * (1 - y**2)`` with ``y = tanh(x)``."""
    np.multiply(grad_out, 1 - y * y, out=grad_x)


def sigmoid_forward(x: np.ndarray, out: np.ndarray, n_threads: int) -> None:
    """``out = 1 / (1 + exp(-x))``, as ``e / (1 + e)`` for x < 0, ``1 / (1 + e)`` else."""
    # e = exp(-|x|) is in (0, 1]: nothing overflows, and each step rounds once, so a small
    # output keeps its relative precision (0.5 * tanh(x / 2) + 0.5 cancels for x < 0).
    negative = x < 0
    np.abs(x, out=out)
    np.negative(out, out=out)
    np.exp(out, out=out)
    numerator = np.where(negative, out, 1)
    out += 1
    np.divide(numerator, out, out=out)


def sigmoid_backward(
    grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, n_threads: int
) -> None:
    """``grad_x = grad_out * y * (1 - y)`` with ``y = sigmoid(x)``."""
    np.multiply(grad_out, y * (1 - y), out=grad_x)


def leaky_relu_forward(
    x: np.ndarray, out: np.ndarray, negative_slope: float, n_threads: int
) -> None:
    """``out = x where x > 0, else negative_slope * x``; NaN propagates."""
    np.copyto(out, np.where(x > 0, x, x * x.dtype.type(negative_slope)))


def leaky_relu_backward(
    grad_out: np.ndarray, x: np.ndarray, grad_x: np.ndarray, negative_slope: float, n_threads: int
) -> None:
    """``grad_x = grad_out where x > 0, else negative_slope * grad_out``."""
    slope = grad_out.dtype.type(negative_slope)
    np.copyto(grad_x, np.where(x > 0, grad_out, grad_out * slope))


# ---------------------------------------------------------------------------------------
# GELU and SiLU: the gradient takes the input x.

_SQRT_HALF = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_SQRT_2_PI = 0.79788456080286535588
_GELU_CUBIC = 0.044715


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    """``erfc(-x / sqrt(2)) / 2``: unlike ``(1 + erf) / 2``, no cancellation for x < 0."""
    from scipy.special import erfc  # imported on first use: keeps the backend's import light

    t = x.dtype.type
    result: np.ndarray = t(0.5) * erfc(-x * t(_SQRT_HALF))
    return result


def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """``e / (1 + e)`` for x < 0, ``1 / (1 + e)`` else, ``e = exp(-|x|)``."""
    e = np.exp(-np.abs(x))
    result: np.ndarray = np.where(x < 0, e, 1) / (1 + e)
    return result


def _gelu_tanh_gate(x: np.ndarray) -> np.ndarray:
    """``(1 + tanh(z)) / 2`` as ``sigmoid(2 z)``: no cancellation where tanh(z) is near -1."""
    t = x.dtype.type
    return _stable_sigmoid(t(2 * _SQRT_2_PI) * (x + t(_GELU_CUBIC) * x * x * x))


def gelu_forward(x: np.ndarray, out: np.ndarray, approximate_tanh: bool, n_threads: int) -> None:
    """``out = x * Phi(x)``, or ``x / 2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x**3)))``."""
    if approximate_tanh:
        np.multiply(x, _gelu_tanh_gate(x), out=out)
    else:
        np.multiply(x, _normal_cdf(x), out=out)


def gelu_backward(
    grad_out: np.ndarray, x: np.ndarray, grad_x: np.ndarray, approximate_tanh: bool, n_threads: int
) -> None:
    """``grad_x = grad_out * (Phi(x) + x * phi(x))``, or the tanh form's derivative."""
    t = x.dtype.type
    if approximate_tanh:
        s = _gelu_tanh_gate(x)
        slope = t(_SQRT_2_PI) * (1 + 3 * t(_GELU_CUBIC) * x * x)
        np.multiply(grad_out, s + 2 * x * s * (1 - s) * slope, out=grad_x)
    else:
        cdf = _normal_cdf(x)
        pdf = t(_INV_SQRT_2PI) * np.exp(t(-0.5) * x * x)
        np.multiply(grad_out, cdf + x * pdf, out=grad_x)


def silu_forward(x: np.ndarray, out: np.ndarray, n_threads: int) -> None:
    """``out = x * sigmoid(x)``, the sigmoid computed without overflow."""
    np.multiply(x, _stable_sigmoid(x), out=out)


def silu_backward(grad_out: np.ndarray, x: np.ndarray, grad_x: np.ndarray, n_threads: int) -> None:
    """``grad_x = grad_out * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``."""
    s = _stable_sigmoid(x)
    np.multiply(grad_out, s * (1 + x * (1 - s)), out=grad_x)


# ---------------------------------------------------------------------------------------
# Softmax and log-softmax over the rows of an (M, C) array.


def softmax_forward(x: np.ndarray, out: np.ndarray, log_out: bool, n_threads: int) -> None:
    """Row softmax (log-softmax) of ``x``, the row maximum subtracted first."""
    if x.size == 0:
        return
    shifted = x - x.max(axis=1, keepdims=True)  # a NaN in a row makes the whole row NaN
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True, dtype=np.float64)
    if log_out:
        np.subtract(shifted, np.log(total).astype(x.dtype), out=out)
    else:
        np.multiply(e, (1.0 / total).astype(x.dtype), out=out)


def softmax_backward(
    grad_out: np.ndarray, y: np.ndarray, grad_x: np.ndarray, log_out: bool, n_threads: int
) -> None:
    """``y * (g - sum(g * y))`` per row, or ``g - exp(y) * sum(g)`` for the log-softmax."""
    if y.size == 0:
        return
    if log_out:
        total = grad_out.sum(axis=1, keepdims=True, dtype=np.float64).astype(y.dtype)
        np.subtract(grad_out, np.exp(y) * total, out=grad_x)
    else:
        dot = (grad_out.astype(np.float64) * y).sum(axis=1, keepdims=True).astype(y.dtype)
        np.multiply(y, grad_out - dot, out=grad_x)
