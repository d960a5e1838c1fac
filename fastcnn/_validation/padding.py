"""The arguments of the transposed convolution and of the padding modes."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fastcnn._validation.arrays import (
    MAX_BLAS_DIM,
    IntPair,
    as_float_array,
    check_size,
    contiguous,
    is_int,
    pair,
    same_dtype,
    short_repr,
)

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike


class ConvTransposeArgs(NamedTuple):
    """A validated transposed convolution: its arrays, geometry and the adjoint conv's."""

    x: np.ndarray  # contiguous
    weight: np.ndarray  # contiguous, (C_in, C_out // groups, kH, kW)
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_shape: tuple[int, int, int, int]
    # Output plane of the conv2d whose input has out_shape: (H, W) plus one row/column
    # per whole stride that output_padding adds (possible when it is only < dilation).
    conv_hw: tuple[int, int]


def conv_transpose2d_output_hw(
    hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    output_padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Return (H_out, W_out) of a transposed convolution (PyTorch's formula).

    ``H_out = (H - 1) * stride - 2 * pad + dilation * (kH - 1) + output_padding + 1``.
    """
    h_out, w_out = (
        (hw[a] - 1) * stride[a] - 2 * pad[a] + dilation[a] * (kernel[a] - 1)
        + output_padding[a] + 1
        for a in (0, 1)
    )  # fmt: skip
    return h_out, w_out


def check_conv_transpose(
    x: ArrayLike,
    weight: ArrayLike,
    stride: IntPair,
    padding: IntPair,
    output_padding: IntPair,
    dilation: IntPair,
    groups: int,
) -> ConvTransposeArgs:
    """Validate a conv_transpose2d call (PyTorch's rules) and size its output."""
    x = as_float_array(x, "x", 4)
    weight = as_float_array(weight, "weight", 4)
    same_dtype(x, weight, "x", "weight")
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {short_repr(groups)}")
    groups = int(groups)
    n, c_in, h, w = x.shape
    if weight.shape[0] != c_in or min(weight.shape) < 1 or c_in % groups:
        raise ValueError(
            f"weight {weight.shape} must be (C_in, C_out // groups, kH, kW) with C_in = "
            f"{c_in} (x {x.shape}) divisible by groups={groups}, and no empty axis"
        )
    if h < 1 or w < 1:
        raise ValueError(f"x must have a non-empty image, got shape {x.shape}")
    kernel = (weight.shape[2], weight.shape[3])
    stride = pair(stride, "stride", 1)
    pad = pair(padding, "padding", 0)
    out_pad = pair(output_padding, "output_padding", 0)
    dilation = pair(dilation, "dilation", 1)
    for a in (0, 1):
        if out_pad[a] >= stride[a] and out_pad[a] >= dilation[a]:
            raise ValueError(
                f"output_padding {out_pad} must be smaller than either the stride {stride} "
                f"or the dilation {dilation} in each dimension"
            )
    hw = conv_transpose2d_output_hw((h, w), kernel, stride, pad, out_pad, dilation)
    if hw[0] < 1 or hw[1] < 1:
        raise ValueError(
            f"conv_transpose2d output would be {hw[0]}x{hw[1]} for x {x.shape}, weight "
            f"{weight.shape}, stride {stride}, padding {pad}, output_padding {out_pad} "
            f"and dilation {dilation}: padding is too large"
        )
    out_shape = (n, weight.shape[1] * groups, hw[0], hw[1])
    check_size(out_shape, "conv_transpose2d output")
    conv_hw = (h + out_pad[0] // stride[0], w + out_pad[1] // stride[1])
    for what, size in (
        ("kernel taps per group (C_out/groups * kH * kW)", weight[0].size),
        ("input plane (H * W)", conv_hw[0] * conv_hw[1]),
        ("output block per group (C_out/groups * H_out * W_out)", weight.shape[1] * hw[0] * hw[1]),
    ):
        if size > MAX_BLAS_DIM:
            raise ValueError(
                f"conv_transpose2d too large: {what} = {size} exceeds {MAX_BLAS_DIM} "
                f"(x {x.shape}, weight {weight.shape}, output {out_shape})"
            )
    return ConvTransposeArgs(
        contiguous(x), contiguous(weight), stride, pad, dilation, groups, out_shape, conv_hw
    )


PAD_MODES = ("zeros", "reflect", "replicate", "circular")


def check_pad_mode(mode: object) -> str:
    """Return a padding mode, one of :data:`PAD_MODES`."""
    if not isinstance(mode, str) or mode not in PAD_MODES:
        raise ValueError(f"padding mode must be one of {PAD_MODES}, got {short_repr(mode)}")
    return mode


def check_pads(pads: object, shape: tuple[int, ...], mode: str) -> tuple[int, int, int, int]:
    """Return ``(left, right, top, bottom)`` non-negative ints that ``mode`` can pad."""
    if not isinstance(pads, tuple | list) or len(pads) != 4 or not all(is_int(p) for p in pads):
        raise TypeError(f"pads must be 4 ints (left, right, top, bottom), got {short_repr(pads)}")
    left, right, top, bottom = (int(p) for p in pads)
    if min(left, right, top, bottom) < 0:
        raise ValueError(f"pads must be non-negative, got {tuple(pads)}")
    h, w = shape[2], shape[3]
    for size, before, after, axis in ((h, top, bottom, "height"), (w, left, right, "width")):
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"reflect padding needs pads smaller than the input {axis} {size}, "
                f"got {before} and {after} (input {tuple(shape)})"
            )
        if mode == "circular" and max(before, after) > size:
            raise ValueError(
                f"circular padding needs pads at most the input {axis} {size}, got "
                f"{before} and {after} (input {tuple(shape)})"
            )
        if mode == "replicate" and size < 1 and before + after > 0:
            raise ValueError(
                f"replicate padding needs a non-empty input {axis}, got {tuple(shape)}"
            )
    return left, right, top, bottom
