"""The fully connected op and its backward."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------
# Fully connected


def linear_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, out: np.ndarray, n_threads: int
) -> None:
    """``out = x @ weight.T + bias``; x (N, in), weight (out, in), out (N, out)."""
    np.matmul(x, weight.T, out=out)
    if bias is not None:
        out += bias


def linear_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    grad_x: np.ndarray | None,
    grad_weight: np.ndarray | None,
    grad_bias: np.ndarray | None,
    n_threads: int,
) -> None:
    """Gradients of :func:`linear_forward`; a None buffer is skipped."""
    if grad_x is not None:
        np.matmul(grad_out, weight, out=grad_x)
    if grad_weight is not None:
        np.matmul(grad_out.T, x, out=grad_weight)
    if grad_bias is not None:
        np.sum(grad_out, axis=0, out=grad_bias)
