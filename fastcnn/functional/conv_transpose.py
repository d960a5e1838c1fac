"""Transposed convolution: ``conv_transpose2d`` and its backward.

A transposed convolution is the adjoint of :func:`~fastcnn.functional.conv2d`, so it runs
on the backend's convolution kernels with the roles of the arrays swapped. Take the conv2d
whose input has the transposed output's shape (N, C_out, H_out, W_out) and whose weight is
this op's weight, read as (C_out_conv = C_in, C_in_conv // groups = C_out // groups, kH,
kW): then

* the transposed forward is that conv's input gradient, with ``x`` as its output gradient;
* the transposed input gradient is that conv's forward, applied to ``grad_out``;
* the transposed weight gradient is that conv's weight gradient, with ``grad_out`` as its
  input and ``x`` as its output gradient.

``output_padding`` only extends H_out; where it reaches a whole stride (possible when it is
smaller than the dilation but not the stride) the conv has one more output row or column
than ``x``, which is zero-extended (forward, weight gradient) or cropped (input gradient).
"""

from __future__ import annotations

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    ConvTransposeArgs,
    IntPair,
    check_bias,
    check_conv_transpose,
    check_grad_out,
)


def _kernel_args(ct: ConvTransposeArgs) -> tuple[int, int, int, int, int, int, int]:
    return (*ct.stride, *ct.pad, *ct.dilation, ct.groups)


def _as_conv_grad(ct: ConvTransposeArgs) -> np.ndarray:
    """Return ``x`` zero-extended to the adjoint conv's output plane."""
    h, w = ct.x.shape[2:]
    if ct.conv_hw == (h, w):
        return ct.x
    return np.pad(ct.x, ((0, 0), (0, 0), (0, ct.conv_hw[0] - h), (0, ct.conv_hw[1] - w)))


def conv_transpose2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """2-D transposed convolution (PyTorch's ``conv_transpose2d``).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), float32 or float64
    weight : ndarray of shape (C_in, C_out // groups, kH, kW), same dtype as ``x``
    bias : ndarray of shape (C_out,) or None
    stride, dilation : int or (int, int)
    padding : int or (int, int)
        Rows and columns cropped from each side of the full transposed output (the
        padding of the convolution this op is the adjoint of).
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right; each smaller than the stride or the
        dilation of its dimension.
    groups : int
        Splits the channels into ``groups`` independent transposed convolutions.

    Returns
    -------
    y : ndarray of shape (N, C_out, H_out, W_out)

    Shapes
    ------
    ``H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kH - 1) +
    output_padding[0] + 1``, and the same for ``W_out``.

    Examples
    --------
    >>> import numpy as np, fastcnn.functional as F
    >>> x = np.ones((1, 2, 4, 4), np.float32)
    >>> F.conv_transpose2d(x, np.ones((2, 3, 3, 3), np.float32), stride=2, padding=1,
    ...                    output_padding=1).shape
    (1, 3, 8, 8)
    """
    ct = check_conv_transpose(x, weight, stride, padding, output_padding, dilation, groups)
    if bias is not None:
        bias = check_bias(bias, ct.x, ct.out_shape[1], ct.weight)
    out = _buffers.empty(ct.out_shape, dtype=ct.x.dtype)
    if out.size == 0:
        return out
    # The adjoint conv's input is never read for an input gradient alone; zeros (pages
    # the system maps lazily) keep it harmless all the same.
    unused = np.zeros(ct.out_shape, dtype=ct.x.dtype)
    _backend.current().conv2d_backward(
        _as_conv_grad(ct), unused, ct.weight, out, None, None, *_kernel_args(ct),
        _threads.get_num_threads(),
    )  # fmt: skip
    if bias is not None:
        out += bias[:, None, None]
    return out


def conv_transpose2d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: IntPair = 1,
    padding: IntPair = 0,
    output_padding: IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    needs_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv_transpose2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C_out, H_out, W_out)
        Gradient of the loss with respect to the output of ``conv_transpose2d``.
    x, weight, stride, padding, output_padding, dilation, groups
        Exactly as given to :func:`conv_transpose2d`.
    needs_input_grad : bool, default True
        When False, ``grad_x`` is not computed (returned as None).

    Returns
    -------
    grad_x : ndarray of shape (N, C_in, H, W), or None
    grad_weight : ndarray of shape (C_in, C_out // groups, kH, kW)
    grad_bias : ndarray of shape (C_out,)
    """
    ct = check_conv_transpose(x, weight, stride, padding, output_padding, dilation, groups)
    grad_out = check_grad_out(grad_out, ct.x, ct.out_shape)
    dtype = ct.x.dtype
    n, c_in, h, w = ct.x.shape
    grad_weight = _buffers.empty(ct.weight.shape, dtype=dtype)
    grad_bias = np.ascontiguousarray(grad_out.sum(axis=(0, 2, 3), dtype=dtype))
    grad_x = None
    if needs_input_grad:
        grad_x = _buffers.empty((n, c_in, *ct.conv_hw), dtype=dtype)
    if n == 0:
        _buffers.fill_zero(grad_x, grad_weight)
        return grad_x, grad_weight, grad_bias
    backend, threads = _backend.current(), _threads.get_num_threads()
    if grad_x is not None:
        backend.conv2d_forward(grad_out, ct.weight, None, grad_x, *_kernel_args(ct), threads)
        if ct.conv_hw != (h, w):
            grad_x = np.ascontiguousarray(grad_x[:, :, :h, :w])
    backend.conv2d_backward(
        _as_conv_grad(ct), grad_out, ct.weight, None, grad_weight, None, *_kernel_args(ct),
        threads,
    )  # fmt: skip
    return grad_x, grad_weight, grad_bias
