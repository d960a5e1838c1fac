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
