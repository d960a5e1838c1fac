"""Convolution: ``conv2d`` and its backward."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    ConvArgs,
    IntPair,
    as_float_array,
    check_bias,
    check_conv,
    contiguous,
    same_dtype,
)

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    pass


# ---------------------------------------------------------------------------------------
# Convolution


def _kernel_args(conv: ConvArgs) -> tuple[int, int, int, int, int, int, int]:
    return (*conv.stride, *conv.pad, *conv.dilation, conv.groups)


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
) -> np.ndarray:
    """2-D cross-correlation over a batch of multi-channel images (PyTorch's ``conv2d``).

    Parameters
    ----------
    x : ndarray of shape (N, C_in, H, W), float32 or float64
    weight : ndarray of shape (C_out, C_in // groups, kH, kW), same dtype as ``x``
    bias : ndarray of shape (C_out,) or None
    stride, dilation : int or (int, int)
    padding : int, (int, int), ``'valid'`` or ``'same'``
        Zero padding on both sides. ``'same'`` (stride 1 only) keeps H and W; when
        ``dilation * (k - 1)`` is odd the extra row/column goes at the bottom/right.
    groups : int
        Splits input and output channels into ``groups`` independent convolutions;
        ``groups == C_in`` is a depthwise convolution.

    Returns
    -------
    y : ndarray of shape (N, C_out, H_out, W_out)

    Shapes
    ------
    ``H_out = floor((H + 2 * padding[0] - dilation[0] * (kH - 1) - 1) / stride[0]) + 1``,
    and the same for ``W_out``.

    Examples
    --------
    >>> import numpy as np, fastcnn.functional as F
    >>> x = np.ones((1, 1, 4, 4), np.float32)
    >>> F.conv2d(x, np.ones((2, 1, 3, 3), np.float32), padding=1).shape
    (1, 2, 4, 4)
    """
    conv = check_conv(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        bias = check_bias(bias, conv.x, conv.out_shape[1], conv.weight)
    out = _buffers.empty(conv.out_shape, dtype=conv.x.dtype)
    if out.size == 0:
        return out
    _backend.current().conv2d_forward(
        conv.x, conv.weight, bias, out, *_kernel_args(conv), _threads.get_num_threads()
    )
    return out


def conv2d_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    stride: IntPair = 1,
    padding: IntPair | str = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    needs_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C_out, H_out, W_out)
        Gradient of the loss with respect to the output of ``conv2d(x, weight, ...)``.
    x, weight, stride, padding, dilation, groups
        Exactly as given to :func:`conv2d`.
    needs_input_grad : bool, default True
        When False, ``grad_x`` is not computed (returned as None): the first layer of a
        network never needs it, and skipping it saves about a third of the work.

    Returns
    -------
    grad_x : ndarray of shape (N, C_in, H, W), or None
    grad_weight : ndarray of shape (C_out, C_in // groups, kH, kW)
    grad_bias : ndarray of shape (C_out,)
    """
    conv = check_conv(x, weight, stride, padding, dilation, groups)
    grad_out = as_float_array(grad_out, "grad_out", 4)
    same_dtype(conv.x, grad_out, "x", "grad_out")
    if grad_out.shape != conv.out_shape:
        raise ValueError(
            f"grad_out must have the conv2d output shape {conv.out_shape} for x "
            f"{np.shape(x)} and weight {conv.weight.shape}, got {grad_out.shape}"
        )
    dtype = conv.x.dtype
    grad_x = _buffers.empty(conv.x.shape, dtype=dtype) if needs_input_grad else None
    grad_weight = _buffers.empty(conv.weight.shape, dtype=dtype)
    grad_bias = _buffers.empty(conv.out_shape[1], dtype=dtype)
    if grad_out.size == 0:
        _buffers.fill_zero(grad_x, grad_weight, grad_bias)
    else:
        _backend.current().conv2d_backward(
            contiguous(grad_out), conv.x, conv.weight, grad_x, grad_weight, grad_bias,
            *_kernel_args(conv), _threads.get_num_threads(),
        )  # fmt: skip
    if grad_x is not None and conv.extra != (0, 0):
        h, w = np.shape(x)[2:]
        grad_x = np.ascontiguousarray(grad_x[:, :, :h, :w])
    return grad_x, grad_weight, grad_bias
