"""Pure-numpy reference backend.

This module implements the backend contract, :class:`fastcnn._backend.Backend` (which
gives each function's rule), with the signatures of the compiled kernels. It has two jobs:

* it is the correctness oracle the compiled kernels are tested against, so every
  function is written to be obviously right before it is fast;
* it is the fallback used when the compiled extension is not available.

Design
------
Every op is expressed over *windows*: the (padded) input is viewed, without copying,
as an array of shape ``(N, C, H_out, W_out, kH, kW)`` with
``numpy.lib.stride_tricks.sliding_window_view``, then stride and dilation are plain
slices of that view. Convolution is one batched matmul over groups on the im2col
matrix built from those windows; backward passes scatter back with a loop over the
``kH * kW`` kernel offsets, each a vectorized strided slice add. There are no Python
loops over batch elements or pixels.

As for the compiled backend, the caller validates every argument and allocates every
output; functions here only overwrite the output buffers they are given (the optimizer
updates and the batch-norm running statistics update their arrays in place). Arithmetic
is done in the dtype of the inputs. ``n_threads`` is accepted and ignored.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "linear_forward",
    "linear_backward",
    "sgd_update",
    "adam_update",
    "softmax_cross_entropy",
    "relu_forward",
    "relu_backward",
    "tanh_forward",
    "tanh_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "leaky_relu_forward",
    "leaky_relu_backward",
    "batch_norm_forward",
    "batch_norm_backward",
]

FloatArray = NDArray[np.floating]
IndexArray = NDArray[np.int64]


# ---------------------------------------------------------------------------------------
# Window helpers


def _span(out_size: int, kernel: int, stride: int, dilation: int) -> int:
    """Extent of the padded input touched by ``out_size`` windows."""
    return (out_size - 1) * stride + dilation * (kernel - 1) + 1


def _pad(
    x: FloatArray,
    pad_h: int,
    pad_w: int,
    span_h: int,
    span_w: int,
    value: float,
) -> FloatArray:
    """Pad the last two axes by ``pad`` before and enough after to cover ``span``.

    The trailing pad is at least ``pad`` and grows further when ceil_mode windows
    run past the padded edge, so that every window has a full-size view; the extra
    cells hold ``value`` like the rest of the padding.
    """
    H, W = x.shape[-2:]
    after_h = max(pad_h, span_h - H - pad_h)
    after_w = max(pad_w, span_w - W - pad_w)
    if pad_h == pad_w == after_h == after_w == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(pad_h, after_h), (pad_w, after_w)]
    return np.pad(x, widths, mode="constant", constant_values=value)


def _windows(
    xp: FloatArray,
    out_h: int,
    out_w: int,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    dil_h: int,
    dil_w: int,
) -> FloatArray:
    """Read-only view of shape ``(N, C, out_h, out_w, kernel_h, kernel_w)`` over ``xp``.

    Element ``[n, c, oh, ow, i, j]`` is ``xp[n, c, oh*stride_h + i*dil_h,
    ow*stride_w + j*dil_w]``, with ``xp`` already padded.
    """
    # A dilated kernel covers this extent; stepping through it by `dil` keeps its taps.
    ext_h = dil_h * (kernel_h - 1) + 1
    ext_w = dil_w * (kernel_w - 1) + 1
    view = sliding_window_view(xp, (ext_h, ext_w), axis=(-2, -1))
    return view[
        :,
        :,
        : (out_h - 1) * stride_h + 1 : stride_h,
        : (out_w - 1) * stride_w + 1 : stride_w,
        ::dil_h,
        ::dil_w,
    ]


def _offset_slices(
    i: int,
    j: int,
    out_h: int,
    out_w: int,
    stride_h: int,
    stride_w: int,
    dil_h: int,
    dil_w: int,
) -> tuple[slice, slice, slice, slice]:
    """Index into a padded buffer: the cells kernel tap ``(i, j)`` visits, one per output.

    The result has shape ``(..., out_h, out_w)`` and hits distinct cells, so ``+=`` on
    it is a safe scatter-add for one tap.
    """
    h = i * dil_h
    w = j * dil_w
    return (
        slice(None),
        slice(None),
        slice(h, h + (out_h - 1) * stride_h + 1, stride_h),
        slice(w, w + (out_w - 1) * stride_w + 1, stride_w),
    )


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
    span_h = _span(out_h, kH, stride_h, dil_h)
    span_w = _span(out_w, kW, stride_w, dil_w)
    xp = _pad(x, pad_h, pad_w, span_h, span_w, 0.0)
    win = _windows(xp, out_h, out_w, kH, kW, stride_h, stride_w, dil_h, dil_w)
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
        span_h = _span(out_h, kH, stride_h, dil_h)
        span_w = _span(out_w, kW, stride_w, dil_w)
        # Scatter into a padded buffer so taps that land in the padding need no clipping;
        # those cells are simply cropped away below.
        buf = np.zeros(
            x.shape[:2] + (max(H + 2 * pad_h, span_h), max(W + 2 * pad_w, span_w)),
            dtype=grad_x.dtype,
        )
        for i in range(kH):
            for j in range(kW):
                tap = _offset_slices(i, j, out_h, out_w, stride_h, stride_w, dil_h, dil_w)
                buf[tap] += d_win[..., i, j]
        grad_x[...] = buf[:, :, pad_h : pad_h + H, pad_w : pad_w + W]


# ---------------------------------------------------------------------------------------
# Max pooling


def _in_bounds_taps(
    out_size: int, kernel: int, stride: int, pad: int, dil: int, size: int
) -> NDArray[np.bool_]:
    """Boolean ``(out_size, kernel)``: does tap ``i`` of window ``o`` fall inside the input."""
    pos = np.arange(out_size)[:, None] * stride - pad + np.arange(kernel)[None, :] * dil
    return (pos >= 0) & (pos < size)


def max_pool2d_forward(
    x: FloatArray,
    out: FloatArray,
    indices: IndexArray,
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    n_threads: int,
) -> None:
    """2-D max pooling with argmax indices (ties: first maximum; NaN: the last NaN)."""
    N, C, H, W = x.shape
    out_h, out_w = out.shape[-2:]
    span_h = _span(out_h, kernel_h, stride_h, dil_h)
    span_w = _span(out_w, kernel_w, stride_w, dil_w)
    xp = _pad(x, pad_h, pad_w, span_h, span_w, -np.inf)
    win = _windows(xp, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w)
    win = win.reshape(N, C, out_h, out_w, kernel_h * kernel_w)

    # np.argmax returns the first maximum: the scan rule, except that a -inf padding cell
    # ahead of in-bounds -inf values would tie and win. That can only happen when the
    # maximum is -inf, and then the rule picks the first in-bounds tap, so that case is
    # patched below. np.argmax also returns the first NaN, where the rule wants the last
    # (padding is never NaN): patched below too.
    tap = np.argmax(win, axis=-1)
    out[...] = np.take_along_axis(win, tap[..., None], axis=-1)[..., 0]
    has_nan = np.isnan(out)
    if has_nan.any():
        last_nan = win.shape[-1] - 1 - np.argmax(np.isnan(win[..., ::-1]), axis=-1)
        tap = np.where(has_nan, last_nan, tap)

    valid = (
        _in_bounds_taps(out_h, kernel_h, stride_h, pad_h, dil_h, H)[:, None, :, None]
        & _in_bounds_taps(out_w, kernel_w, stride_w, pad_w, dil_w, W)[None, :, None, :]
    ).reshape(out_h, out_w, kernel_h * kernel_w)
    first_valid = np.argmax(valid, axis=-1)  # (out_h, out_w)
    tap = np.where(out == -np.inf, first_valid, tap)

    ti, tj = np.divmod(tap, kernel_w)
    h = np.arange(out_h)[:, None] * stride_h - pad_h + ti * dil_h
    w = np.arange(out_w)[None, :] * stride_w - pad_w + tj * dil_w
    flat = h * W + w
    empty = ~valid.any(axis=-1)
    if empty.any():
        flat = np.where(empty, -1, flat)
    indices[...] = flat


def max_pool2d_backward(
    grad_out: FloatArray,
    indices: IndexArray,
    grad_x: FloatArray,
    n_threads: int,
) -> int:
    """Route each gradient to its argmax; return how many indices were out of range."""
    N, C, H, W = grad_x.shape
    # One private copy, checked and used alike: another thread may write the caller's
    # array meanwhile (numpy releases the GIL in its loops).
    indices = np.array(indices, dtype=np.int64)
    grad_x[...] = 0
    keep = ((indices >= 0) & (indices < H * W)).reshape(-1)
    plane = np.arange(N * C, dtype=np.int64).reshape(N, C, 1, 1) * (H * W)
    target = (plane + indices).reshape(-1)
    values = grad_out.reshape(-1)
    bad: int = keep.size - int(np.count_nonzero(keep))
    if bad:
        target = target[keep]
        values = values[keep]
    # np.add.at (unlike fancy-index +=) accumulates repeated targets.
    np.add.at(grad_x.reshape(-1), target, values)
    return bad


# ---------------------------------------------------------------------------------------
# Average pooling


def _avg_extents(
    out_size: int, kernel: int, stride: int, pad: int, size: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per-window lengths along one axis: (counting padding, in-bounds only)."""
    start = np.arange(out_size) * stride - pad
    # A ceil_mode window may run past the padded edge; that part never counts.
    stop = np.minimum(start + kernel, size + pad)
    with_pad = stop - start
    in_bounds = np.minimum(stop, size) - np.maximum(start, 0)
    return with_pad, in_bounds


def _avg_divisor(
    axis_h: tuple[int, int, int, int, int],
    axis_w: tuple[int, int, int, int, int],
    count_include_pad: bool,
    divisor_override: int,
    dtype: np.dtype,
) -> FloatArray:
    """Per-window divisors, shape ``(out_h, out_w)``, following PyTorch's rule.

    ``axis_h`` and ``axis_w`` are ``(out_size, kernel, stride, pad, input_size)``.
    """
    if divisor_override:
        return np.full((axis_h[0], axis_w[0]), divisor_override, dtype=dtype)
    # Window extents are separable, so each divisor is a product of per-axis lengths.
    with_pad_h, in_bounds_h = _avg_extents(*axis_h)
    with_pad_w, in_bounds_w = _avg_extents(*axis_w)
    if count_include_pad:
        div = np.outer(with_pad_h, with_pad_w)
    else:
        div = np.outer(in_bounds_h, in_bounds_w)
    return div.astype(dtype)


def avg_pool2d_forward(
    x: FloatArray, out: FloatArray, kernel_h: int, kernel_w: int, stride_h: int,
    stride_w: int, pad_h: int, pad_w: int, count_include_pad: bool, divisor_override: int,
    n_threads: int,
) -> None:  # fmt: skip
    """2-D average pooling with PyTorch's divisor rules."""
    H, W = x.shape[-2:]
    out_h, out_w = out.shape[-2:]
    span_h = _span(out_h, kernel_h, stride_h, 1)
    span_w = _span(out_w, kernel_w, stride_w, 1)
    # Zero padding adds nothing to a sum, so only the divisor needs to know about it.
    xp = _pad(x, pad_h, pad_w, span_h, span_w, 0.0)
    win = _windows(xp, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, 1, 1)
    divisor = _avg_divisor(
        (out_h, kernel_h, stride_h, pad_h, H),
        (out_w, kernel_w, stride_w, pad_w, W),
        count_include_pad,
        divisor_override,
        x.dtype,
    )
    out[...] = win.sum(axis=(-2, -1)) / divisor


def avg_pool2d_backward(
    grad_out: FloatArray, grad_x: FloatArray, kernel_h: int, kernel_w: int, stride_h: int,
    stride_w: int, pad_h: int, pad_w: int, count_include_pad: bool, divisor_override: int,
    n_threads: int,
) -> None:  # fmt: skip
    """Gradient of :func:`avg_pool2d_forward`, accumulating where windows overlap."""
    H, W = grad_x.shape[-2:]
    out_h, out_w = grad_out.shape[-2:]
    divisor = _avg_divisor(
        (out_h, kernel_h, stride_h, pad_h, H),
        (out_w, kernel_w, stride_w, pad_w, W),
        count_include_pad,
        divisor_override,
        grad_x.dtype,
    )
    share = grad_out / divisor
    span_h = _span(out_h, kernel_h, stride_h, 1)
    span_w = _span(out_w, kernel_w, stride_w, 1)
    # Scatter into a padded buffer, then crop: what lands in padding is dropped, which
    # is exactly clipping each window to the input.
    buf = np.zeros(
        grad_x.shape[:2] + (max(H + 2 * pad_h, span_h), max(W + 2 * pad_w, span_w)),
        dtype=grad_x.dtype,
    )
    for i in range(kernel_h):
        for j in range(kernel_w):
            buf[_offset_slices(i, j, out_h, out_w, stride_h, stride_w, 1, 1)] += share
    grad_x[...] = buf[:, :, pad_h : pad_h + H, pad_w : pad_w + W]


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
# Batch normalization over (N, C, L) arrays, per channel


def batch_norm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, running_mean: np.ndarray | None,
    running_var: np.ndarray | None, out: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
    training: bool, momentum: float, eps: float, n_threads: int,
) -> None:  # fmt: skip
    """Normalize each channel with the batch's statistics (training) or the running ones."""
    if not training:
        assert running_mean is not None and running_var is not None
        mean[...] = running_mean
        inv_std[...] = 1.0 / np.sqrt(running_var + x.dtype.type(eps))
        np.multiply(x, (weight * inv_std)[:, None], out=out)
        out += (bias - running_mean * weight * inv_std)[:, None]
        return
    count = x.shape[0] * x.shape[2]
    mean[...] = x.mean(axis=(0, 2))
    xhat = x - mean[:, None]
    var = np.einsum("ncl,ncl->c", xhat, xhat) / x.dtype.type(count)  # biased, to normalize
    inv_std[...] = 1.0 / np.sqrt(var + x.dtype.type(eps))
    xhat *= inv_std[:, None]
    np.multiply(xhat, weight[:, None], out=out)
    out += bias[:, None]
    m = momentum  # a Python float, rounded as numpy rounds it in each in-place update
    if running_mean is not None:
        running_mean *= 1 - m
        running_mean += m * mean
    if running_var is not None:
        running_var *= 1 - m
        running_var += (m * count / (count - 1)) * var


def batch_norm_backward(
    grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, mean: np.ndarray,
    inv_std: np.ndarray, grad_x: np.ndarray, grad_weight: np.ndarray, grad_bias: np.ndarray,
    training: bool, n_threads: int,
) -> None:  # fmt: skip
    """Gradients of :func:`batch_norm_forward` from the statistics it used."""
    xhat = x - mean[:, None]
    xhat *= inv_std[:, None]
    np.sum(grad_out, axis=(0, 2), out=grad_bias)
    np.einsum("ncl,ncl->c", grad_out, xhat, out=grad_weight)
    scale = (weight * inv_std)[:, None]
    if not training:  # the statistics are constants: a per-channel affine map
        np.multiply(grad_out, scale, out=grad_x)
        return
    # dx = weight * inv_std * (g - mean(g) - xhat * mean(g * xhat)), per channel.
    count = x.dtype.type(x.shape[0] * x.shape[2])
    np.multiply(xhat, (-grad_weight / count)[:, None], out=grad_x)
    grad_x += grad_out
    grad_x -= (grad_bias / count)[:, None]
    grad_x *= scale


# ---------------------------------------------------------------------------------------
# Optimizer updates (every parameter array of a model in one call, in place)


def sgd_update(
    params: list[np.ndarray], grads: list[np.ndarray],
    momentum_buffers: list[np.ndarray] | None, lr: float, momentum: float,
    weight_decay: float, nesterov: bool, first: bool, n_threads: int,
) -> None:  # fmt: skip
    """SGD as ``torch.optim.SGD`` (dampening 0), one parameter array at a time."""
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        d = grad
        if weight_decay:
            d = param * weight_decay
            d += grad
        if momentum:
            buf = momentum_buffers[i]  # type: ignore[index]
            if first:
                buf[...] = d
            else:
                buf *= momentum
                buf += d
            if nesterov:
                param -= d * lr
                param -= buf * (lr * momentum)
                continue
            d = buf
        param -= d * lr


def adam_update(
    params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
    exp_avg_sqs: list[np.ndarray], beta1: float, beta2: float, eps: float,
    weight_decay: float, step_size: float, denom_scale: float, n_threads: int,
) -> None:  # fmt: skip
    """Adam as ``torch.optim.Adam`` (L2 weight decay), one parameter array at a time."""
    for param, grad, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        g = grad
        if weight_decay:
            g = param * weight_decay
            g += grad
        m *= beta1
        m += g * (1 - beta1)
        v *= beta2
        v += (g * g) * (1 - beta2)
        denom = np.sqrt(v)
        denom /= denom_scale
        denom += eps
        param -= (m / denom) * step_size


# ---------------------------------------------------------------------------------------
# Loss


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, grad: np.ndarray, n_threads: int
) -> float:
    """Mean softmax cross-entropy of the rows; ``grad`` gets its gradient."""
    n = logits.shape[0]
    # A private copy, checked and used alike: numpy indexes without the GIL, so another
    # thread could change the caller's labels in between.
    y = np.array(y, dtype=np.intp)
    bad = np.count_nonzero((y < 0) | (y >= logits.shape[1]))
    if bad:
        raise ValueError(
            f"{bad} label(s) of y are not class indices in [0, {logits.shape[1]}): y changed "
            "while the loss read it (another thread wrote it)"
        )
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=grad)
    sum_exp = grad.sum(axis=1)
    # Per-sample loss: log(sum exp(shifted)) - shifted[y]; shifted[y] <= 0, log(sum) >= 0.
    loss = float(np.mean(np.log(sum_exp) - shifted[rows, y]))
    grad /= sum_exp[:, None]
    grad[rows, y] -= 1
    grad /= n
    return loss
