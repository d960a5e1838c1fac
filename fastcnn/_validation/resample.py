"""The arguments of adaptive pooling and interpolation."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    pass

from fastcnn._validation.arrays import (
    MAX_BLAS_DIM,
    check_size,
    is_int,
    pair,
    short_repr,
)
from fastcnn._validation.scalars import check_bool

#: The interpolation modes of ``interpolate``.
INTERPOLATE_MODES = ("nearest", "bilinear")


def check_adaptive_size(output_size: object, name: str) -> tuple[int | None, int | None]:
    """Return an adaptive pool's ``output_size`` as an (H, W) pair; None keeps that size."""
    if output_size is None or is_int(output_size):
        values: tuple[object, object] = (output_size, output_size)
    elif isinstance(output_size, tuple | list) and len(output_size) == 2:
        values = (output_size[0], output_size[1])
    else:
        raise TypeError(
            f"{name}: output_size must be an int, None or a pair of them, "
            f"got {short_repr(output_size)}"
        )
    result: list[int | None] = []
    for value in values:
        if value is None:
            result.append(None)
        elif not is_int(value):
            raise TypeError(
                f"{name}: output_size must be an int, None or a pair of them, "
                f"got {short_repr(output_size)}"
            )
        elif not 1 <= int(value) <= MAX_BLAS_DIM:
            raise ValueError(
                f"{name}: output_size must be in [1, {MAX_BLAS_DIM}], got {output_size!r}"
            )
        else:
            result.append(int(value))
    return result[0], result[1]


def _check_plane(shape: tuple[int, ...], name: str) -> None:
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{name} needs an input of non-zero H and W, got shape {tuple(shape)}")


def check_adaptive(
    shape: tuple[int, ...], output_size: object, name: str
) -> tuple[int, int, int, int]:
    """Return the output shape (N, C, H_out, W_out) of an adaptive pool over ``shape``."""
    size_h, size_w = check_adaptive_size(output_size, name)
    _check_plane(shape, name)
    n, c, h, w = shape
    out_shape = (n, c, h if size_h is None else size_h, w if size_w is None else size_w)
    check_size(out_shape, f"{name} output")
    return out_shape


def adaptive_output_hw(
    sample_shape: tuple[int, ...], output_size: tuple[int | None, int | None]
) -> tuple[int, int]:
    """Return the (H_out, W_out) of an adaptive pool of a (C, H, W) sample."""
    h, w = sample_shape[-2:]
    return (h if output_size[0] is None else output_size[0]), (
        w if output_size[1] is None else output_size[1]
    )


def check_scale_factor(scale_factor: object, name: str) -> tuple[float, float]:
    """Return ``scale_factor`` (a number or a pair) as a pair of finite floats > 0."""
    values = scale_factor if isinstance(scale_factor, tuple | list) else (scale_factor,) * 2
    if len(values) != 2:
        raise TypeError(
            f"{name}: scale_factor must be a number or a pair, got {short_repr(scale_factor)}"
        )
    result = []
    for value in values:
        if isinstance(value, bool) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise TypeError(
                f"{name}: scale_factor must be a number or a pair, got {short_repr(scale_factor)}"
            )
        value = float(value)
        if not (0.0 < value and np.isfinite(value)):
            raise ValueError(
                f"{name}: scale_factor must be finite and > 0, got {short_repr(scale_factor)}"
            )
        result.append(value)
    return result[0], result[1]


def check_interpolate_mode(mode: object, align_corners: object, name: str) -> tuple[bool, bool]:
    """Return (bilinear, align_corners) for a mode name and its ``align_corners`` flag."""
    if mode not in INTERPOLATE_MODES:
        raise ValueError(f"{name}: mode must be one of {INTERPOLATE_MODES}, got {mode!r}")
    corners = False if align_corners is None else check_bool(align_corners, "align_corners")
    if corners and mode == "nearest":
        raise ValueError(f"{name}: align_corners=True needs mode='bilinear', not 'nearest'")
    return mode == "bilinear", corners


class InterpolateArgs(NamedTuple):
    """A validated interpolation: the output shape and what the kernels take."""

    out_shape: tuple[int, int, int, int]
    bilinear: bool
    align_corners: bool
    scale_h: float  # the scale_factor given (0.0 when the size was)
    scale_w: float


def check_interpolate(
    shape: tuple[int, ...],
    size: object,
    scale_factor: object,
    mode: object,
    align_corners: object,
    name: str = "interpolate",
) -> InterpolateArgs:
    """Validate an interpolation of an input of ``shape`` (N, C, H, W), as PyTorch's."""
    bilinear, corners = check_interpolate_mode(mode, align_corners, name)
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{name}: give exactly one of size and scale_factor")
    _check_plane(shape, name)
    n, c, h, w = shape
    if size is not None:
        out_h, out_w = pair(size, "size", 1)
        scales = (0.0, 0.0)
    else:
        scales = check_scale_factor(scale_factor, name)
        # PyTorch's rule: floor(size * scale), in double precision.
        out_h, out_w = int(np.floor(h * scales[0])), int(np.floor(w * scales[1]))
        if out_h < 1 or out_w < 1 or max(out_h, out_w) > MAX_BLAS_DIM:
            raise ValueError(
                f"{name}: scale_factor {short_repr(scale_factor)} gives an output of "
                f"{out_h}x{out_w} for input of shape {tuple(shape)}; it must be at least 1x1"
            )
    out_shape = (n, c, out_h, out_w)
    check_size(out_shape, f"{name} output")
    return InterpolateArgs(out_shape, bilinear, corners, *scales)
