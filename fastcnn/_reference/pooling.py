"""Max and average pooling, and their backward."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fastcnn._reference.windows import offset_slices, pad, span, windows

FloatArray = NDArray[np.floating]
IndexArray = NDArray[np.int64]


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
    span_h = span(out_h, kernel_h, stride_h, dil_h)
    span_w = span(out_w, kernel_w, stride_w, dil_w)
    xp = pad(x, pad_h, pad_w, span_h, span_w, -np.inf)
    win = windows(xp, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w)
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
    span_h = span(out_h, kernel_h, stride_h, 1)
    span_w = span(out_w, kernel_w, stride_w, 1)
    # Zero padding adds nothing to a sum, so only the divisor needs to know about it.
    xp = pad(x, pad_h, pad_w, span_h, span_w, 0.0)
    win = windows(xp, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, 1, 1)
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
    span_h = span(out_h, kernel_h, stride_h, 1)
    span_w = span(out_w, kernel_w, stride_w, 1)
    # Scatter into a padded buffer, then crop: what lands in padding is dropped, which
    # is exactly clipping each window to the input.
    buf = np.zeros(
        grad_x.shape[:2] + (max(H + 2 * pad_h, span_h), max(W + 2 * pad_w, span_w)),
        dtype=grad_x.dtype,
    )
    for i in range(kernel_h):
        for j in range(kernel_w):
            buf[offset_slices(i, j, out_h, out_w, stride_h, stride_w, 1, 1)] += share
    grad_x[...] = buf[:, :, pad_h : pad_h + H, pad_w : pad_w + W]
