"""Windows over the padded input: the views convolution and pooling are written over."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]


# ---------------------------------------------------------------------------------------
# Window helpers


def span(out_size: int, kernel: int, stride: int, dilation: int) -> int:
    """Extent of the padded input touched by ``out_size`` windows."""
    return (out_size - 1) * stride + dilation * (kernel - 1) + 1


def pad(
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


def windows(
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


def offset_slices(
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
