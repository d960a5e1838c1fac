"""Padding with a mode: ``pad2d`` and its backward (PyTorch's ``F.pad`` on H and W)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    as_float_array,
    check_grad_out,
    check_input_shape,
    check_pad_mode,
    check_pads,
    contiguous,
)


def source_index(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Return the input index each padded position copies along one axis (-1: zero).

    ``reflect`` mirrors about the edge pixel without repeating it, ``replicate`` repeats
    the edge pixel, ``circular`` wraps around and ``zeros`` gives -1 outside the input.
    """
    src = np.arange(-before, size + after, dtype=np.int64)
    if mode == "zeros":
        src[(src < 0) | (src >= size)] = -1
    elif mode == "reflect":  # pads < size: one reflection reaches the input
        src = np.abs(src)
        src = np.where(src >= size, 2 * (size - 1) - src, src)
    elif mode == "replicate":
        src = np.clip(src, 0, size - 1)
    else:  # circular; pads <= size
        src = np.mod(src, size) if size else src
    return np.ascontiguousarray(src, dtype=np.int64)


def _maps(
    shape: tuple[int, ...], pads: Sequence[int], mode: str
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    mode = check_pad_mode(mode)
    left, right, top, bottom = check_pads(pads, shape, mode)
    n, c, h, w = shape
    out_shape = (n, c, h + top + bottom, w + left + right)
    rows = source_index(h, top, bottom, mode)
    cols = source_index(w, left, right, mode)
    return out_shape, rows, cols


def pad2d(x: np.ndarray, pads: Sequence[int], mode: str = "zeros") -> np.ndarray:
    """Pad the last two axes of a batch of images, with a padding mode.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    pads : (left, right, top, bottom)
        Non-negative ints, in :func:`torch.nn.functional.pad`'s order for the last two
        axes.
    mode : {'zeros', 'reflect', 'replicate', 'circular'}
        ``'zeros'`` pads with 0; ``'reflect'`` mirrors about the edge pixel (pads must be
        smaller than the size); ``'replicate'`` repeats the edge pixel; ``'circular'``
        wraps around (pads at most the size).

    Returns
    -------
    y : ndarray of shape (N, C, H + top + bottom, W + left + right)

    Shapes
    ------
    ``H_out = H + top + bottom``, ``W_out = W + left + right``.

    Examples
    --------
    >>> import numpy as np, fastcnn.functional as F
    >>> x = np.arange(3.0).reshape(1, 1, 1, 3)
    >>> F.pad2d(x, (2, 1, 0, 0), "reflect")[0, 0, 0].tolist()
    [2.0, 1.0, 0.0, 1.0, 2.0, 1.0]
    """
    x = contiguous(as_float_array(x, "x", 4))
    out_shape, rows, cols = _maps(x.shape, pads, mode)
    out = _buffers.empty(out_shape, dtype=x.dtype)
    if out.size:
        _backend.current().pad2d_forward(x, out, rows, cols, _threads.get_num_threads())
    return out


def pad2d_backward(
    grad_out: np.ndarray, input_shape: tuple[int, ...], pads: Sequence[int], mode: str = "zeros"
) -> np.ndarray:
    """Gradient of :func:`pad2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
        Gradient of the loss with respect to ``pad2d(x, pads, mode)``.
    input_shape : (N, C, H, W)
        The shape of ``x``.
    pads, mode
        Exactly as given to :func:`pad2d`.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
        Each input pixel gets the sum of the gradients of every output that copies it.
    """
    shape = check_input_shape(input_shape)
    grad_out = as_float_array(grad_out, "grad_out", 4)
    out_shape, rows, cols = _maps(shape, pads, mode)
    grad_out = check_grad_out(grad_out, grad_out, out_shape)
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)
    if grad_out.size == 0:
        grad_x.fill(0)
    elif grad_x.size:
        _backend.current().pad2d_backward(grad_out, grad_x, rows, cols, _threads.get_num_threads())
    return grad_x
