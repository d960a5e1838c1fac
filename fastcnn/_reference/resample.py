"""Adaptive pooling and interpolation (nearest, bilinear), and their backward.

Both are separable: each output row reads a set of input rows fixed by the sizes
alone, and each output column a set of columns. So each axis gets a small table (an
adaptive pool's bins, an interpolation's source indices and weights), and every op is
a gather of the input over the two tables, its backward an ``np.add.at`` scatter over
the same tables, which accumulates where bins or sources repeat.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]
IndexArray = NDArray[np.int64]


# ---------------------------------------------------------------------------------------
# Adaptive pooling


def _bins(size: int, out: int) -> tuple[IndexArray, NDArray[np.bool_], IndexArray]:
    """PyTorch's adaptive bins along one axis, as a padded table of taps.

    Bin ``i`` is ``[floor(i * size / out), ceil((i + 1) * size / out))``. Returns the
    ``(out, K)`` input index of each tap (``K`` the longest bin; taps past a bin's end
    repeat its start), which taps are real, and each bin's length.
    """
    i = np.arange(out, dtype=np.int64)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    length = end - start
    taps = np.arange(int(length.max()), dtype=np.int64)
    real = taps[None, :] < length[:, None]
    index = np.where(real, start[:, None] + taps[None, :], start[:, None])
    return index, real, length


def _gather_bins(
    x: FloatArray, out_h: int, out_w: int, fill: float
) -> tuple[FloatArray, tuple[IndexArray, IndexArray], NDArray[np.bool_], IndexArray]:
    """Return every bin of x as ``(N, C, out_h, out_w, Kh * Kw)``, ``fill`` past its end.

    Also the tap tables (for a scatter), which taps are real, and the bin sizes.
    """
    idx_h, real_h, len_h = _bins(x.shape[2], out_h)
    idx_w, real_w, len_w = _bins(x.shape[3], out_w)
    rows = idx_h[:, None, :, None]  # (out_h, 1, Kh, 1)
    cols = idx_w[None, :, None, :]  # (1, out_w, 1, Kw)
    real = real_h[:, None, :, None] & real_w[None, :, None, :]
    win = np.where(real, x[:, :, rows, cols], x.dtype.type(fill))
    shape = x.shape[:2] + (out_h, out_w, -1)
    return win.reshape(shape), (rows, cols), real, np.outer(len_h, len_w)


def adaptive_avg_pool2d_forward(x: FloatArray, out: FloatArray, n_threads: int) -> None:
    """Write the mean of each adaptive bin of x into out."""
    out_h, out_w = out.shape[2:]
    win, _, _, count = _gather_bins(x, out_h, out_w, 0.0)
    out[...] = win.sum(axis=-1) / count.astype(x.dtype)


def _scatter_add(
    grad_x: FloatArray, rows: IndexArray, cols: IndexArray, values: FloatArray
) -> None:
    """Zero grad_x, then add ``values`` (N, C, *taps) at ``grad_x[:, :, rows, cols]``.

    ``rows`` and ``cols`` broadcast to the taps' shape. ``np.add.at`` (unlike a fancy
    index ``+=``) adds every repeat of a position.
    """
    n, c, h, w = grad_x.shape
    grad_x[...] = 0
    flat = np.broadcast_to(rows * w + cols, values.shape[2:])
    # Positions on the first axis, the planes last: one scatter for every plane.
    planes_last = np.moveaxis(values.reshape(n * c, *flat.shape), 0, -1)
    np.add.at(grad_x.reshape(n * c, h * w).T, flat, planes_last)


def adaptive_avg_pool2d_backward(grad_out: FloatArray, grad_x: FloatArray, n_threads: int) -> None:
    """Spread each grad_out over its bin, divided by the bin's size; overlaps add up."""
    out_h, out_w = grad_out.shape[2:]
    idx_h, real_h, len_h = _bins(grad_x.shape[2], out_h)
    idx_w, real_w, len_w = _bins(grad_x.shape[3], out_w)
    share = grad_out / np.outer(len_h, len_w).astype(grad_x.dtype)
    real = real_h[:, None, :, None] & real_w[None, :, None, :]
    values = np.where(real, share[:, :, :, :, None, None], grad_x.dtype.type(0))
    _scatter_add(grad_x, idx_h[:, None, :, None], idx_w[None, :, None, :], values)


def adaptive_max_pool2d_forward(
    x: FloatArray, out: FloatArray, indices: IndexArray, n_threads: int
) -> None:
    """Max of each adaptive bin and its flat ``h * W + w`` (max_pool2d's scan rule)."""
    out_h, out_w = out.shape[2:]
    win, (rows, cols), _, _ = _gather_bins(x, out_h, out_w, -np.inf)
    # np.argmax gives the first maximum, the scan rule's tie winner; taps past a bin's
    # end hold -inf and follow a real one, and the first tap is always real, so they
    # never win. The rule wants the last NaN where np.argmax finds the first.
    tap = np.argmax(win, axis=-1)
    nan = np.isnan(win)
    has_nan = nan.any(axis=-1)
    if has_nan.any():
        last_nan = win.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
        tap = np.where(has_nan, last_nan, tap)
    out[...] = np.take_along_axis(win, tap[..., None], axis=-1)[..., 0]
    idx_h, idx_w = rows[:, 0, :, 0], cols[0, :, 0, :]  # (out_h, Kh), (out_w, Kw)
    tap_h, tap_w = np.divmod(tap, idx_w.shape[1])
    h = idx_h[np.arange(out_h)[:, None], tap_h]
    w = idx_w[np.arange(out_w)[None, :], tap_w]
    indices[...] = h * x.shape[3] + w


# ---------------------------------------------------------------------------------------
# Interpolation


def _scale(in_size: int, out_size: int, scale: float, align_corners: bool) -> float:
    """PyTorch's source-index scale (area_pixel_compute_scale), in double."""
    if align_corners:
        return (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    return 1.0 / scale if scale > 0 else in_size / out_size


def nearest_sources(in_size: int, out_size: int, scale: float) -> IndexArray:
    """Source index of each output along one axis, as PyTorch's nearest mode.

    ``min(floor(i * s), in_size - 1)`` computed in float32 (as PyTorch does for every
    dtype), ``s = 1 / scale`` if a scale factor was given, else ``in_size / out_size``;
    same sizes copy and exact doubling halves the index, whatever the scale.
    """
    i = np.arange(out_size, dtype=np.int64)
    if out_size == in_size:
        return i
    if out_size == 2 * in_size:
        return i >> 1
    if scale > 0:
        s = np.float32(1.0 / scale)
    else:
        s = np.float32(in_size) / np.float32(out_size)
    src: IndexArray = np.floor(i.astype(np.float32) * s).astype(np.int64)
    return np.minimum(src, in_size - 1, out=src)


def linear_sources(
    in_size: int, out_size: int, scale: float, align_corners: bool, dtype: np.dtype
) -> tuple[IndexArray, IndexArray, FloatArray, FloatArray]:
    """Return the two source indices and weights of each output along one axis (bilinear).

    In ``dtype``: ``src = s * i`` (align_corners) or ``max(s * (i + 0.5) - 0.5, 0)``,
    ``i0 = min(floor(src), in_size - 1)``, ``i1 = i0 + 1`` unless ``i0`` is the last,
    ``l1 = clip(src - i0, 0, 1)``, ``l0 = 1 - l1`` (PyTorch's rule). An axis whose size
    does not change is copied, whatever the scale factor (``s = 1``), as PyTorch does.
    """
    t = np.dtype(dtype).type
    s = t(1 if in_size == out_size else _scale(in_size, out_size, scale, align_corners))
    i = np.arange(out_size).astype(dtype)
    if align_corners:
        src = s * i
    else:
        src = np.maximum(s * (i + t(0.5)) - t(0.5), t(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1)
    l1 = np.clip(src - i0.astype(dtype), t(0), t(1))
    return i0, i1, t(1) - l1, l1


def _taps(
    shape: tuple[int, ...], out_h: int, out_w: int, bilinear: bool, align_corners: bool,
    scale_h: float, scale_w: float, dtype: np.dtype,
) -> list[tuple[IndexArray, IndexArray, FloatArray | None]]:  # fmt: skip
    """Return the (rows, cols, weight) of each tap of the interpolation, broadcastable."""
    h, w = shape[2:]
    if not bilinear:
        rows = nearest_sources(h, out_h, scale_h)[:, None]
        cols = nearest_sources(w, out_w, scale_w)[None, :]
        return [(rows, cols, None)]
    h0, h1, a0, a1 = linear_sources(h, out_h, scale_h, align_corners, dtype)
    w0, w1, b0, b1 = linear_sources(w, out_w, scale_w, align_corners, dtype)
    return [
        (rh[:, None], cw[None, :], wh[:, None] * ww[None, :])
        for rh, wh in ((h0, a0), (h1, a1))
        for cw, ww in ((w0, b0), (w1, b1))
    ]


def interpolate_forward(
    x: FloatArray, out: FloatArray, bilinear: bool, align_corners: bool, scale_h: float,
    scale_w: float, n_threads: int,
) -> None:  # fmt: skip
    """Resize x into out (nearest or bilinear, PyTorch's source indices)."""
    if not bilinear:
        ((rows, cols, _),) = _taps(x.shape, out.shape[2], out.shape[3], False, False,
                                   scale_h, scale_w, x.dtype)  # fmt: skip
        out[...] = x[:, :, rows, cols]
        return
    h0, h1, a0, a1 = linear_sources(x.shape[2], out.shape[2], scale_h, align_corners, x.dtype)
    w0, w1, b0, b1 = linear_sources(x.shape[3], out.shape[3], scale_w, align_corners, x.dtype)
    # Along W first, then H: out = a0 * (b0 * x00 + b1 * x01) + a1 * (b0 * x10 + b1 * x11).
    top = x[:, :, h0, :]
    bottom = x[:, :, h1, :]
    top = top[..., w0] * b0 + top[..., w1] * b1
    bottom = bottom[..., w0] * b0 + bottom[..., w1] * b1
    out[...] = top * a0[:, None] + bottom * a1[:, None]


def interpolate_backward(
    grad_out: FloatArray, grad_x: FloatArray, bilinear: bool, align_corners: bool,
    scale_h: float, scale_w: float, n_threads: int,
) -> None:  # fmt: skip
    """Scatter grad_out back to the sources of each output, weighted; repeats add up."""
    taps = _taps(grad_x.shape, grad_out.shape[2], grad_out.shape[3], bilinear,
                 align_corners, scale_h, scale_w, grad_x.dtype)  # fmt: skip
    # All taps in one scatter, the taps on a last axis (one for nearest, four bilinear).
    rows = np.stack([np.broadcast_to(r, grad_out.shape[2:]) for r, _, _ in taps], axis=-1)
    cols = np.stack([np.broadcast_to(c, grad_out.shape[2:]) for _, c, _ in taps], axis=-1)
    weights = [grad_out if wt is None else grad_out * wt for _, _, wt in taps]
    _scatter_add(grad_x, rows, cols, np.stack(weights, axis=-1))
