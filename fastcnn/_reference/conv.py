"""Convolution: the im2col matmul and its backward."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fastcnn._reference.windows import offset_slices, pad, span, windows

FloatArray = NDArray[np.floating]


# ---------------------------------------------------------------------------------------
# Convolution


def _im2col(
    x: FloatArray,
    weight_shape: tuple[int, ...],
    out_h: int,
    out_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    groups: int,
) -> FloatArray:
    """Return the im2col matrix per group, shape ``(groups, N*out_h*out_w, Cg*kH*kW)``."""
    N = x.shape[0]
    _, c_group, kH, kW = weight_shape
    span_h = span(out_h, kH, stride_h, dil_h)
    span_w = span(out_w, kW, stride_w, dil_w)
    xp = pad(x, pad_h, pad_w, span_h, span_w, 0.0)
    win = windows(xp, out_h, out_w, kH, kW, stride_h, stride_w, dil_h, dil_w)
    win = win.reshape(N, groups, c_group, out_h, out_w, kH, kW)
    # Rows are output pixels, columns are (channel, ki, kj) in the weight's own order.
    cols: FloatArray = win.transpose(1, 0, 3, 4, 2, 5, 6)
    return cols.reshape(groups, N * out_h * out_w, c_group * kH * kW)


def conv2d_forward(
    x: FloatArray,
    weight: FloatArray,
    bias: FloatArray | None,
    out: FloatArray,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    n_threads: int,
) -> None:
    """2-D cross-correlation with zero padding into ``out`` (PyTorch ``conv2d``)."""
    N, C_out, out_h, out_w = out.shape
    c_out_group = C_out // groups
    cols = _im2col(
        x, weight.shape, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups
    )
    w_mat = weight.reshape(groups, c_out_group, -1)
    res = np.matmul(cols, w_mat.transpose(0, 2, 1))  # (G, N*out_h*out_w, C_out/G)
    res = res.reshape(groups, N, out_h, out_w, c_out_group).transpose(1, 0, 4, 2, 3)
    out[...] = res.reshape(N, C_out, out_h, out_w)
    if bias is not None:
        out += bias[:, None, None]


def conv2d_backward(
    grad_out: FloatArray,
    x: FloatArray,
    weight: FloatArray,
    grad_x: FloatArray | None,
    grad_weight: FloatArray | None,
    grad_bias: FloatArray | None,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    n_threads: int,
) -> None:
    """Gradients of :func:`conv2d_forward`; a None buffer is skipped."""
    N, C_out, out_h, out_w = grad_out.shape
    _, c_group, kH, kW = weight.shape
    c_out_group = C_out // groups

    if grad_bias is not None:
        grad_bias[...] = grad_out.sum(axis=(0, 2, 3))
    if grad_x is None and grad_weight is None:
        return

    # Per group, rows of output pixels by the group's output channels: the layout of the
    # forward matmul result, so both gradients are again one batched matmul.
    g_mat = grad_out.reshape(N, groups, c_out_group, out_h, out_w).transpose(1, 0, 3, 4, 2)
    g_mat = g_mat.reshape(groups, N * out_h * out_w, c_out_group)

    if grad_weight is not None:
        cols = _im2col(
            x, weight.shape, out_h, out_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups
        )
        gw = np.matmul(g_mat.transpose(0, 2, 1), cols)  # (G, C_out/G, Cg*kH*kW)
        grad_weight[...] = gw.reshape(weight.shape)

    if grad_x is not None:
        w_mat = weight.reshape(groups, c_out_group, -1)
        d_cols = np.matmul(g_mat, w_mat)  # (G, N*out_h*out_w, Cg*kH*kW)
        # Back to the window layout (N, C_in, out_h, out_w, kH, kW) of the forward pass.
        d_win = d_cols.reshape(groups, N, out_h, out_w, c_group, kH, kW)
        d_win = d_win.transpose(1, 0, 4, 2, 3, 5, 6).reshape(x.shape[:2] + (out_h, out_w, kH, kW))
        H, W = x.shape[-2:]
        span_h = span(out_h, kH, stride_h, dil_h)
        span_w = span(out_w, kW, stride_w, dil_w)
        # Scatter into a padded buffer so taps that land in the padding need no clipping;
        # those cells are simply cropped away below.
        buf = np.zeros(
            x.shape[:2] + (max(H + 2 * pad_h, span_h), max(W + 2 * pad_w, span_w)),
            dtype=grad_x.dtype,
        )
        for i in range(kH):
            for j in range(kW):
                tap = offset_slices(i, j, out_h, out_w, stride_h, stride_w, dil_h, dil_w)
                buf[tap] += d_win[..., i, j]
        grad_x[...] = buf[:, :, pad_h : pad_h + H, pad_w : pad_w + W]
