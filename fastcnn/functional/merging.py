"""Merging ops of graph models: the sum of several arrays, concatenation and its backward.

The backward of :func:`add` is the gradient itself, passed to every input; that of
:func:`concatenate` cuts the gradient into the inputs' sizes
(:func:`concatenate_backward`).
"""

from __future__ import annotations

import math

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    as_float_array,
    check_concat_axis,
    check_merge_arrays,
    concat_shape,
    contiguous,
)


def _as_3d(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    # (outer, C, inner) around `axis`: concatenation on any axis is on axis 1 of this view.
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def add(*arrays: np.ndarray) -> np.ndarray:
    """Element-wise sum of two or more arrays of one shape and dtype.

    Parameters
    ----------
    *arrays : ndarray, float32 or float64
        At least two, of one shape (no broadcasting) and one dtype.

    Returns
    -------
    out : ndarray of that shape and dtype
        ``arrays[0] + arrays[1] + ...``, added left to right.

    Shapes
    ------
    Every input and the output: any one shape.
    """
    checked = check_merge_arrays(list(arrays), "add")
    shape = checked[0].shape
    for i, array in enumerate(checked[1:], 1):
        if array.shape != shape:
            raise ValueError(
                f"add needs arrays of one shape; arrays[{i}] has shape {array.shape}, "
                f"arrays[0] {shape}"
            )
    out = _buffers.empty(shape, dtype=checked[0].dtype)
    _backend.current().add_n(
        [contiguous(a).reshape(-1) for a in checked], out.reshape(-1), _threads.get_num_threads()
    )
    return out


def concatenate(arrays: list[np.ndarray] | tuple[np.ndarray, ...], axis: int = 1) -> np.ndarray:
    r"""Join two or more arrays along ``axis`` (by default the channels of NCHW).

    Parameters
    ----------
    arrays : list of ndarray, float32 or float64
        At least two, of one dtype, with equal sizes on every axis but ``axis``.
    axis : int, default 1
        May be negative, counted from the end.

    Returns
    -------
    out : ndarray
        As :func:`numpy.concatenate`; a new C-contiguous array.

    Shapes
    ------
    - Inputs: :math:`(N, C_i, ...)` for ``axis=1``
    - Output: :math:`(N, \sum_i C_i, ...)`
    """
    checked = check_merge_arrays(arrays, "concatenate")
    axis = check_concat_axis(axis, checked[0].ndim)
    shape = concat_shape([a.shape for a in checked], axis, "concatenate")
    out = _buffers.empty(shape, dtype=checked[0].dtype)
    _backend.current().concatenate(
        [contiguous(a).reshape(_as_3d(a.shape, axis)) for a in checked],
        out.reshape(_as_3d(shape, axis)),
        _threads.get_num_threads(),
    )
    return out


def concatenate_backward(
    grad_out: np.ndarray, sizes: list[int] | tuple[int, ...], axis: int = 1
) -> list[np.ndarray]:
    r"""Cut the gradient of :func:`concatenate` into the gradients of its inputs.

    Parameters
    ----------
    grad_out : ndarray, float32 or float64
        The gradient of the concatenation's output.
    sizes : list of int
        The size of each input along ``axis``; they sum to ``grad_out.shape[axis]``.
    axis : int, default 1

    Returns
    -------
    list of ndarray
        One new C-contiguous array per input, ``grad_out``'s slice of that input.

    Shapes
    ------
    - grad_out: :math:`(N, \sum_i C_i, ...)` for ``axis=1``
    - Each result: :math:`(N, C_i, ...)`
    """
    grad_out = as_float_array(grad_out, "grad_out")
    axis = check_concat_axis(axis, grad_out.ndim)
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes) or sum(sizes) != grad_out.shape[axis]:
        raise ValueError(
            f"sizes {sizes} must be non-negative and sum to grad_out.shape[{axis}] = "
            f"{grad_out.shape[axis]}"
        )
    shapes = [(*grad_out.shape[:axis], s, *grad_out.shape[axis + 1 :]) for s in sizes]
    outs = [_buffers.empty(shape, dtype=grad_out.dtype) for shape in shapes]
    _backend.current().split(
        contiguous(grad_out).reshape(_as_3d(grad_out.shape, axis)),
        [out.reshape(_as_3d(out.shape, axis)) for out in outs],
        _threads.get_num_threads(),
    )
    return outs


__all__ = ["add", "concatenate", "concatenate_backward"]
