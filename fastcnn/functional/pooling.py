"""Max and average pooling, and their backward."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    IntPair,
    PoolArgs,
    as_float_array,
    check_divisor,
    check_input_shape,
    check_max_pool_indices,
    check_pool,
    contiguous,
)

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------------
# Pooling


def max_pool2d(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D max pooling that also returns where each maximum came from.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf padding (never selected); at most half the kernel size.
    dilation : int or (int, int)
    ceil_mode : bool
        Round the output size up, keeping only windows that start inside the input or
        its left/top padding.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
    indices : int64 ndarray of shape (N, C, H_out, W_out)
        Flat index ``h * W + w`` of each maximum in its (H, W) input plane, as PyTorch's
        ``return_indices=True``. Ties go to the first maximum in row-major window order;
        a NaN in the window is selected (the last one, as PyTorch's CPU kernel), so NaN
        propagates.

    Shapes
    ------
    With ``k = kernel_size``, ``p = padding``, ``d = dilation``, ``s = stride``:
    ``H_out = floor((H + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0]) + 1``
    (``ceil`` instead of ``floor`` with ``ceil_mode``), and the same for ``W_out``.
    """
    x = as_float_array(x, "x", 4)
    pool = check_pool(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    out = _buffers.empty(pool.out_shape, dtype=x.dtype)
    indices = _buffers.empty(pool.out_shape, dtype=np.int64)
    if out.size:
        _backend.current().max_pool2d_forward(
            contiguous(x), out, indices, *pool.kernel, *pool.stride, *pool.pad,
            *pool.dilation, _threads.get_num_threads(),
        )  # fmt: skip
    return out, indices


def max_pool2d_backward(
    grad_out: np.ndarray, indices: np.ndarray, input_shape: tuple[int, int, int, int]
) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    indices : int64 ndarray of shape (N, C, H_out, W_out)
        The indices returned by :func:`max_pool2d`. One outside ``[0, H*W)`` raises
        ``ValueError``; the kernel checks each as it reads it, so an array another
        thread writes during the call can give wrong gradients or that error, never a
        write outside ``grad_x``.
    input_shape : (N, C, H, W)
        Shape of the pooled input.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
        ``grad_out`` routed to the selected positions, summed where windows overlap.
    """
    grad_out = as_float_array(grad_out, "grad_out", 4)
    shape = check_input_shape(input_shape)
    indices = check_max_pool_indices(indices, grad_out, shape)
    if grad_out.size == 0:
        return np.zeros(shape, dtype=grad_out.dtype)
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)  # the kernel zeroes each plane it fills
    # The kernel checks each index as it reads it, skips and counts those outside the
    # plane: a check here first could not see a change another thread makes in between.
    bad = _backend.current().max_pool2d_backward(
        contiguous(grad_out), indices, grad_x, _threads.get_num_threads(),
    )  # fmt: skip
    if bad:
        raise _indices_out_of_range(indices, bad, shape)
    return grad_x


def _indices_out_of_range(indices: np.ndarray, bad: int, shape: tuple[int, ...]) -> ValueError:
    """Return the error for ``bad`` indices outside the (H, W) plane of ``shape``."""
    plane = shape[2] * shape[3]
    expected = f"indices must lie in [0, H*W) = [0, {plane}) for input_shape {shape}"
    low, high = indices.min(), indices.max()
    if low < 0 or high >= plane:
        return ValueError(f"{expected}, got values in [{low}, {high}]")
    return ValueError(
        f"{expected}, but {bad} of them lay outside it during the call "
        "(changed by another thread?)"
    )


# kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad, divisor
_AvgArgs = tuple[int, int, int, int, int, int, bool, int]


def _check_avg(
    shape: tuple[int, ...],
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> tuple[PoolArgs, _AvgArgs]:
    pool = check_pool(shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    divisor = check_divisor(divisor_override)
    args = (*pool.kernel, *pool.stride, *pool.pad, bool(count_include_pad), divisor)
    return pool, args


def avg_pool2d(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """2-D average pooling (PyTorch's ``avg_pool2d``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit zero padding, at most half the kernel size.
    ceil_mode : bool
        Round the output size up (see :func:`max_pool2d`).
    count_include_pad : bool
        Divide by the window size including padded positions (but not positions past
        the padding, which ``ceil_mode`` windows can reach); otherwise by the number of
        input elements in the window.
    divisor_override : int or None
        If given, always divide by this.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out), computed as in :func:`max_pool2d`
        with dilation 1.
    """
    x = as_float_array(x, "x", 4)
    pool, args = _check_avg(
        x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    out = _buffers.empty(pool.out_shape, dtype=x.dtype)
    if out.size:
        _backend.current().avg_pool2d_forward(
            contiguous(x), out, *args, _threads.get_num_threads()
        )
    return out


def avg_pool2d_backward(
    grad_out: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    input_shape : (N, C, H, W)
        Shape of the pooled input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        Exactly as given to :func:`avg_pool2d`.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
    """
    grad_out = as_float_array(grad_out, "grad_out", 4)
    shape = check_input_shape(input_shape)
    pool, args = _check_avg(
        shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    if grad_out.shape != pool.out_shape:
        raise ValueError(
            f"grad_out must have the avg_pool2d output shape {pool.out_shape} for "
            f"input_shape {shape}, got {grad_out.shape}"
        )
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)
    if grad_out.size == 0:
        grad_x.fill(0)
        return grad_x
    _backend.current().avg_pool2d_backward(
        contiguous(grad_out), grad_x, *args, _threads.get_num_threads()
    )
    return grad_x
