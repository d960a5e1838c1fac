"""The arguments of GELU, softmax and the ops that take an axis."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastcnn._validation.arrays import (
    as_float_array,
    is_int,
    same_dtype,
    short_repr,
)

GELU_APPROXIMATIONS = ("none", "tanh")

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def check_gelu_approximate(approximate: object) -> bool:
    """Return True for GELU's ``'tanh'`` approximation, False for ``'none'`` (exact)."""
    if not isinstance(approximate, str) or approximate not in GELU_APPROXIMATIONS:
        raise ValueError(
            f"approximate must be one of {GELU_APPROXIMATIONS}, got {short_repr(approximate)}"
        )
    return approximate == "tanh"


def check_axis(axis: object, ndim: int) -> int:
    """Return ``axis`` of an ``ndim``-D array as an int in ``[0, ndim)`` (negative counts back)."""
    if not is_int(axis):
        raise TypeError(f"axis must be an int, got {short_repr(axis)}")
    value = int(axis)
    if not -ndim <= value < ndim:
        raise ValueError(f"axis {value} is out of range for an array of {ndim} dimensions")
    return value % ndim


def check_same_shape(grad_out: ArrayLike, y: np.ndarray, y_name: str) -> np.ndarray:
    """Return ``grad_out`` as a float array of the shape and dtype of ``y``."""
    grad = as_float_array(grad_out, "grad_out")
    same_dtype(y, grad, y_name, "grad_out")
    if grad.shape != y.shape:
        raise ValueError(f"grad_out must have the shape of {y_name} {y.shape}, got {grad.shape}")
    return grad
