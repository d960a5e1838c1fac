"""The fully connected op: ``linear`` and its backward."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    check_bias,
    check_grad_out,
    check_linear,
)

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------------
# Fully connected


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Fully connected layer, ``x @ weight.T + bias`` (PyTorch's ``linear``).

    The compiled backend runs it as single-threaded BLAS products, split over OpenMP
    threads only when large (2M multiply-adds and more): the small products of a CNN's
    classifier head are faster that way than through a threaded BLAS. A split product
    rounds a little differently, so results can differ in the last bits between thread
    counts, never between runs at one thread count.

    Parameters
    ----------
    x : ndarray of shape (N, in_features), float32 or float64
    weight : ndarray of shape (out_features, in_features), same dtype
    bias : ndarray of shape (out_features,) or None

    Returns
    -------
    y : ndarray of shape (N, out_features)
    """
    x, weight = check_linear(x, weight)
    if bias is not None:
        bias = check_bias(bias, x, weight.shape[0], weight)
    out = _buffers.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    if out.size:
        _backend.current().linear_forward(x, weight, bias, out, _threads.get_num_threads())
    return out


def linear_backward(
    grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, needs_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`linear` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray of shape (N, out_features)
    x, weight
        As given to :func:`linear`.
    needs_input_grad : bool, default True
        When False, ``grad_x`` is not computed (returned as None).

    Returns
    -------
    grad_x : ndarray of shape (N, in_features), or None
    grad_weight : ndarray of shape (out_features, in_features)
    grad_bias : ndarray of shape (out_features,)
    """
    x, weight = check_linear(x, weight)
    grad_out = check_grad_out(grad_out, x, (x.shape[0], weight.shape[0]))
    dtype = x.dtype
    grad_x = _buffers.empty(x.shape, dtype=dtype) if needs_input_grad else None
    grad_weight = _buffers.empty(weight.shape, dtype=dtype)
    grad_bias = _buffers.empty(weight.shape[0], dtype=dtype)
    if grad_out.size == 0:
        _buffers.fill_zero(grad_x, grad_weight, grad_bias)
    else:
        _backend.current().linear_backward(
            grad_out, x, weight, grad_x, grad_weight, grad_bias, _threads.get_num_threads(),
        )  # fmt: skip
    return grad_x, grad_weight, grad_bias
