"""Adaptive pooling and interpolation (resizing), and their backward."""

from __future__ import annotations

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    InterpolateArgs,
    as_float_array,
    check_adaptive,
    check_input_shape,
    check_interpolate,
    contiguous,
)
from fastcnn.functional.pooling import max_pool2d_backward

OutputSize = int | None | tuple[int | None, int | None]
ScaleFactor = float | tuple[float, float]

# ---------------------------------------------------------------------------------------
# Adaptive pooling


def _check_grad_shape(grad_out: np.ndarray, expected: tuple[int, ...], name: str) -> None:
    if grad_out.shape != expected:
        raise ValueError(
            f"grad_out must have the {name} output shape {expected}, got {grad_out.shape}"
        )


def adaptive_avg_pool2d(x: np.ndarray, output_size: OutputSize) -> np.ndarray:
    """2-D adaptive average pooling (PyTorch's ``adaptive_avg_pool2d``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
        H and W at least 1.
    output_size : int, None or (int or None, int or None)
        ``(H_out, W_out)``; None keeps that input size.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
        The mean of each bin. Output row ``i`` averages input rows
        ``floor(i * H / H_out)`` to ``ceil((i + 1) * H / H_out)`` (exclusive), columns
        alike: bins cover the input, and overlap when ``H_out`` does not divide ``H``.

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out), any output size (also larger than
    the input).
    """
    x = as_float_array(x, "x", 4)
    out_shape = check_adaptive(x.shape, output_size, "adaptive_avg_pool2d")
    out = _buffers.empty(out_shape, dtype=x.dtype)
    if out.size:
        _backend.current().adaptive_avg_pool2d_forward(
            contiguous(x), out, _threads.get_num_threads()
        )
    return out


def adaptive_avg_pool2d_backward(
    grad_out: np.ndarray, input_shape: tuple[int, int, int, int], output_size: OutputSize
) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    input_shape : (N, C, H, W)
        Shape of the pooled input.
    output_size : int, None or (int or None, int or None)
        As given to :func:`adaptive_avg_pool2d`.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
        Each ``grad_out`` divided by its bin's size, added over its bin; summed where
        bins overlap.
    """
    grad_out = as_float_array(grad_out, "grad_out", 4)
    shape = check_input_shape(input_shape)
    out_shape = check_adaptive(shape, output_size, "adaptive_avg_pool2d")
    _check_grad_shape(grad_out, out_shape, "adaptive_avg_pool2d")
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)
    if grad_out.size == 0:
        grad_x.fill(0)
        return grad_x
    _backend.current().adaptive_avg_pool2d_backward(
        contiguous(grad_out), grad_x, _threads.get_num_threads()
    )
    return grad_x


def adaptive_max_pool2d(x: np.ndarray, output_size: OutputSize) -> tuple[np.ndarray, np.ndarray]:
    """2-D adaptive max pooling that also returns where each maximum came from.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
        H and W at least 1.
    output_size : int, None or (int or None, int or None)
        ``(H_out, W_out)``; None keeps that input size.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
        The maximum of each bin (bins as in :func:`adaptive_avg_pool2d`).
    indices : int64 ndarray of shape (N, C, H_out, W_out)
        Flat index ``h * W + w`` of each maximum in its (H, W) plane, as PyTorch's.
        Ties and NaN as in :func:`max_pool2d`: the first maximum in row-major order;
        a NaN is selected (the last one), so NaN propagates.

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out).
    """
    x = as_float_array(x, "x", 4)
    out_shape = check_adaptive(x.shape, output_size, "adaptive_max_pool2d")
    out = _buffers.empty(out_shape, dtype=x.dtype)
    indices = _buffers.empty(out_shape, dtype=np.int64)
    if out.size:
        _backend.current().adaptive_max_pool2d_forward(
            contiguous(x), out, indices, _threads.get_num_threads()
        )
    return out, indices


def adaptive_max_pool2d_backward(
    grad_out: np.ndarray, indices: np.ndarray, input_shape: tuple[int, int, int, int]
) -> np.ndarray:
    """Gradient of :func:`adaptive_max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    indices : int64 ndarray of shape (N, C, H_out, W_out)
        The indices returned by :func:`adaptive_max_pool2d`; one outside ``[0, H*W)``
        raises ``ValueError`` (as in :func:`max_pool2d_backward`).
    input_shape : (N, C, H, W)
        Shape of the pooled input.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
        ``grad_out`` routed to the selected positions, summed where bins overlap.
    """
    # The same scatter as max pooling: indices are positions in the input plane.
    return max_pool2d_backward(grad_out, indices, input_shape)


# ---------------------------------------------------------------------------------------
# Interpolation


def interpolate(
    x: np.ndarray,
    size: int | tuple[int, int] | None = None,
    scale_factor: ScaleFactor | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> np.ndarray:
    """Resize the (H, W) planes of x, as PyTorch's ``interpolate`` on 4-D input.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
        H and W at least 1.
    size : int, (int, int) or None
        The output's (H_out, W_out). Give exactly one of ``size`` and ``scale_factor``.
    scale_factor : float, (float, float) or None
        ``H_out = floor(H * scale_factor[0])`` (W alike), which must be at least 1. The
        source positions then use ``1 / scale_factor``, not ``H / H_out``, as PyTorch
        does (``recompute_scale_factor=False``).
    mode : {'nearest', 'bilinear'}
        ``'nearest'``: output ``i`` copies input ``min(floor(i * s), H - 1)``, with
        ``s = 1 / scale_factor`` or ``H / H_out``, computed in float32 as PyTorch
        does. ``'bilinear'``: a weighted sum of the 2x2 inputs around the source
        position ``s * (i + 0.5) - 0.5`` (clamped at 0), or ``i * (H - 1) / (H_out - 1)``
        with ``align_corners``. An axis whose size does not change is copied.
    align_corners : bool or None
        Bilinear only: align the centres of the corner pixels (None means False;
        True with ``'nearest'`` raises ValueError, PyTorch's rule, though False is
        accepted there).

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out), ``H_out`` = ``size[0]`` or
    ``floor(H * scale_factor[0])``, and the same for ``W_out``.
    """
    x = as_float_array(x, "x", 4)
    args = check_interpolate(x.shape, size, scale_factor, mode, align_corners)
    out = _buffers.empty(args.out_shape, dtype=x.dtype)
    if out.size:
        _backend.current().interpolate_forward(
            contiguous(x), out, *_kernel_args(args), _threads.get_num_threads()
        )
    return out


def _kernel_args(args: InterpolateArgs) -> tuple[bool, bool, float, float]:
    return args.bilinear, args.align_corners, args.scale_h, args.scale_w


def interpolate_backward(
    grad_out: np.ndarray,
    input_shape: tuple[int, int, int, int],
    size: int | tuple[int, int] | None = None,
    scale_factor: ScaleFactor | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
) -> np.ndarray:
    """Gradient of :func:`interpolate` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    input_shape : (N, C, H, W)
        Shape of the resized input.
    size, scale_factor, mode, align_corners
        Exactly as given to :func:`interpolate`.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
        Each ``grad_out`` times its weight, added to each input it was read from;
        summed where inputs are read more than once.
    """
    grad_out = as_float_array(grad_out, "grad_out", 4)
    shape = check_input_shape(input_shape)
    args = check_interpolate(shape, size, scale_factor, mode, align_corners)
    _check_grad_shape(grad_out, args.out_shape, "interpolate")
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)
    if grad_out.size == 0:
        grad_x.fill(0)
        return grad_x
    _backend.current().interpolate_backward(
        contiguous(grad_out), grad_x, *_kernel_args(args), _threads.get_num_threads()
    )
    return grad_x
