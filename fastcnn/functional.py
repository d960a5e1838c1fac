"""Stateless convolution, pooling, fully connected and activation ops: the one API every
layer calls.

Each op validates its arguments once, resolves defaults (``stride=None``, ``'same'``
padding, ``ceil_mode``), allocates its outputs and hands plain ints and C-contiguous
arrays to the active backend (compiled Cython kernels or the numpy reference; see
:func:`fastcnn.set_backend`). Layout is NCHW, weights are ``(C_out, C_in // groups, kH, kW)``
and the semantics are PyTorch's, so results compare directly with ``torch.nn.functional``.

Every op returns new C-contiguous arrays of the input's dtype (float32 or float64).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    MAX_BLAS_DIM,
    as_float_array,
    check_size,
    contiguous,
    conv_output_size,
    conv_padding,
    is_int,
    pair,
    pool_output_size,
    same_dtype,
    short_repr,
)

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "linear",
    "linear_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
]

IntPair = int | tuple[int, int]


# ---------------------------------------------------------------------------------------
# Convolution


class _Conv(NamedTuple):
    """A validated convolution: the (possibly extra-padded) input and every size."""

    x: np.ndarray  # contiguous; padded at bottom/right when 'same' needs it
    weight: np.ndarray
    stride: tuple[int, int]
    pad: tuple[int, int]  # symmetric part handled by the kernel
    dilation: tuple[int, int]
    groups: int
    out_shape: tuple[int, int, int, int]
    extra: tuple[int, int]  # bottom/right rows/columns padded here, cropped from grad_x


def _check_conv(
    x: ArrayLike,
    weight: ArrayLike,
    stride: IntPair,
    padding: IntPair | str,
    dilation: IntPair,
    groups: int,
) -> _Conv:
    x = as_float_array(x, "x", 4)
    weight = as_float_array(weight, "weight", 4)
    same_dtype(x, weight, "x", "weight")
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {short_repr(groups)}")
    groups = int(groups)
    if c_in < 1 or c_out < 1 or kh < 1 or kw < 1:
        raise ValueError(
            f"x {x.shape} and weight {weight.shape} need at least one channel and a "
            "non-empty kernel"
        )
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"groups={groups} must divide both the input channels ({c_in}, x {x.shape}) "
            f"and the output channels ({c_out}, weight {weight.shape})"
        )
    if c_per_group * groups != c_in:
        raise ValueError(
            f"weight {weight.shape} expects {c_per_group * groups} input channels "
            f"({c_per_group} per group x {groups} groups) but x {x.shape} has {c_in}"
        )
    stride = pair(stride, "stride", 1)
    dilation = pair(dilation, "dilation", 1)
    (top, bottom), (left, right) = conv_padding(padding, (kh, kw), dilation, stride)
    extent_h, extent_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if extent_h > h + top + bottom or extent_w > w + left + right:
        raise ValueError(
            f"kernel of extent ({extent_h}, {extent_w}) (weight {weight.shape}, dilation "
            f"{dilation}) is larger than the padded input ({h + top + bottom}, "
            f"{w + left + right}) (x {x.shape}, padding {padding!r})"
        )
    extra = (bottom - top, right - left)
    h_out = conv_output_size(h + extra[0], kh, stride[0], top, dilation[0])
    w_out = conv_output_size(w + extra[1], kw, stride[1], left, dilation[1])
    out_shape = (n, c_out, h_out, w_out)
    check_size(out_shape, "conv2d output")
    # BLAS takes 32-bit sizes: the lowered matrices must fit, whichever backend runs.
    for what, size in (
        ("kernel taps per group (C_in/groups * kH * kW)", c_per_group * kh * kw),
        ("output plane (H_out * W_out)", h_out * w_out),
        ("input block per group (C_in/groups * H * W)", c_per_group * h * w),
    ):
        if size > MAX_BLAS_DIM:
            raise ValueError(
                f"conv2d too large: {what} = {size} exceeds {MAX_BLAS_DIM} "
                f"(x {x.shape}, weight {weight.shape}, output {out_shape})"
            )
    x = contiguous(x)
    if extra != (0, 0):
        x = np.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    return _Conv(x, contiguous(weight), stride, (top, left), dilation, groups, out_shape, extra)


def _zero(*gradients: np.ndarray | None) -> None:
    """An empty batch contributes nothing: its gradients are zero, not uninitialized."""
    for gradient in gradients:
        if gradient is not None:
            gradient.fill(0)


def _kernel_args(conv: _Conv) -> tuple[int, int, int, int, int, int, int]:
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
    conv = _check_conv(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        bias = as_float_array(bias, "bias", 1)
        same_dtype(conv.x, bias, "x", "bias")
        if bias.shape[0] != conv.out_shape[1]:
            raise ValueError(
                f"bias must have shape ({conv.out_shape[1]},) to match weight "
                f"{conv.weight.shape}, got {bias.shape}"
            )
        bias = contiguous(bias)
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
    conv = _check_conv(x, weight, stride, padding, dilation, groups)
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
        _zero(grad_x, grad_weight, grad_bias)
    else:
        _backend.current().conv2d_backward(
            contiguous(grad_out), conv.x, conv.weight, grad_x, grad_weight, grad_bias,
            *_kernel_args(conv), _threads.get_num_threads(),
        )  # fmt: skip
    if grad_x is not None and conv.extra != (0, 0):
        h, w = np.shape(x)[2:]
        grad_x = np.ascontiguousarray(grad_x[:, :, :h, :w])
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------
# Fully connected


def _check_linear(x: ArrayLike, weight: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = as_float_array(x, "x", 2)
    weight = as_float_array(weight, "weight", 2)
    same_dtype(x, weight, "x", "weight")
    if weight.shape[1] != x.shape[1] or weight.shape[0] < 1:
        raise ValueError(
            f"weight {weight.shape} must be (out_features, in_features) with in_features "
            f"= {x.shape[1]} to match x {x.shape}"
        )
    return contiguous(x), contiguous(weight)


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Fully connected layer, ``x @ weight.T + bias`` (PyTorch's ``linear``).

    The compiled backend runs it as single-threaded BLAS products, split over OpenMP
    threads only when large (2M multiply-adds and more): the small products of a CNN's
    classifier head are faster that way than through a threaded BLAS. A split product
    rounds a little differently, so results can differ in the last bits between thread
    counts, never between runs at one thread count.

    Parameters
    ----------
    x : ndarray of shape (N, in_features), float32 or float64
    weight : ndarray of shape (out_features, in_features), same dtype
    bias : ndarray of shape (out_features,) or None

    Returns
    -------
    y : ndarray of shape (N, out_features)
    """
    x, weight = _check_linear(x, weight)
    if bias is not None:
        bias = as_float_array(bias, "bias", 1)
        same_dtype(x, bias, "x", "bias")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(
                f"bias must have shape ({weight.shape[0]},) to match weight {weight.shape}, "
                f"got {bias.shape}"
            )
        bias = contiguous(bias)
    out = _buffers.empty((x.shape[0], weight.shape[0]), dtype=x.dtype)
    if out.size:
        _backend.current().linear_forward(x, weight, bias, out, _threads.get_num_threads())
    return out


def linear_backward(
    grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, needs_input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Gradients of :func:`linear` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray of shape (N, out_features)
    x, weight
        As given to :func:`linear`.
    needs_input_grad : bool, default True
        When False, ``grad_x`` is not computed (returned as None).

    Returns
    -------
    grad_x : ndarray of shape (N, in_features), or None
    grad_weight : ndarray of shape (out_features, in_features)
    grad_bias : ndarray of shape (out_features,)
    """
    x, weight = _check_linear(x, weight)
    grad_out = as_float_array(grad_out, "grad_out", 2)
    same_dtype(x, grad_out, "x", "grad_out")
    expected = (x.shape[0], weight.shape[0])
    if grad_out.shape != expected:
        raise ValueError(f"grad_out must have shape {expected}, got {grad_out.shape}")
    dtype = x.dtype
    grad_x = _buffers.empty(x.shape, dtype=dtype) if needs_input_grad else None
    grad_weight = _buffers.empty(weight.shape, dtype=dtype)
    grad_bias = _buffers.empty(weight.shape[0], dtype=dtype)
    if grad_out.size == 0:
        _zero(grad_x, grad_weight, grad_bias)
    else:
        _backend.current().linear_backward(
            contiguous(grad_out), x, weight, grad_x, grad_weight, grad_bias,
            _threads.get_num_threads(),
        )  # fmt: skip
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------
# Pooling


class _Pool(NamedTuple):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    out_shape: tuple[int, int, int, int]


def _check_input_shape(input_shape: object) -> tuple[int, int, int, int]:
    if not isinstance(input_shape, tuple | list | np.ndarray) or not all(
        is_int(s) for s in input_shape
    ):
        raise TypeError(
            f"input_shape must be a tuple (N, C, H, W), got {short_repr(input_shape)}; "
            "every entry must be an int (pass x.shape, not x)"
        )
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) < 0:
        raise ValueError(
            f"input_shape must be 4 non-negative sizes (N, C, H, W), got {short_repr(input_shape)}"
        )
    return shape


def _check_pool(
    shape: tuple[int, ...],
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    dilation: IntPair,
    ceil_mode: bool,
    name: str,
) -> _Pool:
    kernel = pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else pair(stride, "stride", 1)
    pad = pair(padding, "padding", 0)
    dilation = pair(dilation, "dilation", 1)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(
            f"padding {padding!r} must be at most half the kernel size {kernel} in {name}"
        )
    if not isinstance(ceil_mode, bool | np.bool_):
        raise TypeError(f"ceil_mode must be a bool, got {short_repr(ceil_mode)}")
    n, c, h, w = shape
    h_out = pool_output_size(h, kernel[0], stride[0], pad[0], dilation[0], bool(ceil_mode))
    w_out = pool_output_size(w, kernel[1], stride[1], pad[1], dilation[1], bool(ceil_mode))
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"{name}: input of shape {tuple(shape)} is too small for kernel_size {kernel}, "
            f"dilation {dilation} and padding {pad} (output would be {h_out}x{w_out})"
        )
    for axis, size, n_out in ((0, h, h_out), (1, w, w_out)):
        if not _windows_touch_input(
            size, kernel[axis], stride[axis], pad[axis], dilation[axis], n_out
        ):
            raise ValueError(
                f"{name}: with dilation {dilation} and padding {pad}, some pooling windows "
                f"over the input of shape {tuple(shape)} contain only padding"
            )
    out_shape = (n, c, h_out, w_out)
    check_size(out_shape, f"{name} output")
    return _Pool(kernel, stride, pad, dilation, out_shape)


def _windows_touch_input(
    size: int, kernel: int, stride: int, pad: int, dilation: int, n_out: int
) -> bool:
    """True if every window has at least one tap inside the input.

    Always so without dilation, since padding is at most half the kernel, unless the
    input is empty (H or W == 0), when every window is padding only.
    """
    if dilation == 1 and size > 0:
        return True
    taps = np.arange(n_out)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    return bool(((taps >= 0) & (taps < size)).any(axis=1).all())


def max_pool2d(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """2-D max pooling that also returns where each maximum came from.

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf padding (never selected); at most half the kernel size.
    dilation : int or (int, int)
    ceil_mode : bool
        Round the output size up, keeping only windows that start inside the input or
        its left/top padding.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out)
    indices : int64 ndarray of shape (N, C, H_out, W_out)
        Flat index ``h * W + w`` of each maximum in its (H, W) input plane, as PyTorch's
        ``return_indices=True``. Ties go to the first maximum in row-major window order;
        a NaN in the window is selected (the last one, as PyTorch's CPU kernel), so NaN
        propagates.

    Shapes
    ------
    With ``k = kernel_size``, ``p = padding``, ``d = dilation``, ``s = stride``:
    ``H_out = floor((H + 2 * p[0] - d[0] * (k[0] - 1) - 1) / s[0]) + 1``
    (``ceil`` instead of ``floor`` with ``ceil_mode``), and the same for ``W_out``.
    """
    x = as_float_array(x, "x", 4)
    pool = _check_pool(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    out = _buffers.empty(pool.out_shape, dtype=x.dtype)
    indices = _buffers.empty(pool.out_shape, dtype=np.int64)
    if out.size:
        _backend.current().max_pool2d_forward(
            contiguous(x), out, indices, *pool.kernel, *pool.stride, *pool.pad,
            *pool.dilation, _threads.get_num_threads(),
        )  # fmt: skip
    return out, indices


def max_pool2d_backward(
    grad_out: np.ndarray, indices: np.ndarray, input_shape: tuple[int, int, int, int]
) -> np.ndarray:
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    indices : int64 ndarray of shape (N, C, H_out, W_out)
        The indices returned by :func:`max_pool2d`. One outside ``[0, H*W)`` raises
        ``ValueError``; the kernel checks each as it reads it, so an array another
        thread writes during the call can give wrong gradients or that error, never a
        write outside ``grad_x``.
    input_shape : (N, C, H, W)
        Shape of the pooled input.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
        ``grad_out`` routed to the selected positions, summed where windows overlap.
    """
    grad_out = as_float_array(grad_out, "grad_out", 4)
    shape = _check_input_shape(input_shape)
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got dtype {indices.dtype}")
    if indices.shape != grad_out.shape:
        raise ValueError(
            f"indices must have the shape of grad_out {grad_out.shape}, got {indices.shape}"
        )
    if grad_out.shape[:2] != shape[:2]:
        raise ValueError(f"grad_out {grad_out.shape} and input_shape {shape} disagree on (N, C)")
    if grad_out.size == 0:
        return np.zeros(shape, dtype=grad_out.dtype)
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)  # the kernel zeroes each plane it fills
    # The kernel checks each index as it reads it, skips and counts those outside the
    # plane: a check here first could not see a change another thread makes in between.
    bad = _backend.current().max_pool2d_backward(
        contiguous(grad_out), contiguous(indices.astype(np.int64, copy=False)), grad_x,
        _threads.get_num_threads(),
    )  # fmt: skip
    if bad:
        raise _indices_out_of_range(indices, bad, shape)
    return grad_x


def _indices_out_of_range(indices: np.ndarray, bad: int, shape: tuple[int, ...]) -> ValueError:
    """The error for ``bad`` indices outside the (H, W) plane of ``shape``."""
    plane = shape[2] * shape[3]
    expected = f"indices must lie in [0, H*W) = [0, {plane}) for input_shape {shape}"
    low, high = indices.min(), indices.max()
    if low < 0 or high >= plane:
        return ValueError(f"{expected}, got values in [{low}, {high}]")
    return ValueError(
        f"{expected}, but {bad} of them lay outside it during the call "
        "(changed by another thread?)"
    )


# kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, count_include_pad, divisor
_AvgArgs = tuple[int, int, int, int, int, int, bool, int]


def _check_avg(
    shape: tuple[int, ...],
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
) -> tuple[_Pool, _AvgArgs]:
    pool = _check_pool(shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    if divisor_override is None:
        divisor = 0
    elif isinstance(divisor_override, bool) or not isinstance(divisor_override, int | np.integer):
        raise TypeError(
            f"divisor_override must be a positive int or None, got {short_repr(divisor_override)}"
        )
    elif not 1 <= divisor_override <= MAX_BLAS_DIM:
        raise ValueError(
            f"divisor_override must be a positive int or None, got {divisor_override} "
            f"(at most {MAX_BLAS_DIM})"
        )
    else:
        divisor = int(divisor_override)
    args = (*pool.kernel, *pool.stride, *pool.pad, bool(count_include_pad), divisor)
    return pool, args


def avg_pool2d(
    x: np.ndarray,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """2-D average pooling (PyTorch's ``avg_pool2d``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int, (int, int) or None
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit zero padding, at most half the kernel size.
    ceil_mode : bool
        Round the output size up (see :func:`max_pool2d`).
    count_include_pad : bool
        Divide by the window size including padded positions (but not positions past
        the padding, which ``ceil_mode`` windows can reach); otherwise by the number of
        input elements in the window.
    divisor_override : int or None
        If given, always divide by this.

    Returns
    -------
    y : ndarray of shape (N, C, H_out, W_out), computed as in :func:`max_pool2d`
        with dilation 1.
    """
    x = as_float_array(x, "x", 4)
    pool, args = _check_avg(
        x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    out = _buffers.empty(pool.out_shape, dtype=x.dtype)
    if out.size:
        _backend.current().avg_pool2d_forward(
            contiguous(x), out, *args, _threads.get_num_threads()
        )
    return out


def avg_pool2d_backward(
    grad_out: np.ndarray,
    input_shape: tuple[int, int, int, int],
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray of shape (N, C, H_out, W_out)
    input_shape : (N, C, H, W)
        Shape of the pooled input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        Exactly as given to :func:`avg_pool2d`.

    Returns
    -------
    grad_x : ndarray of shape ``input_shape``
    """
    grad_out = as_float_array(grad_out, "grad_out", 4)
    shape = _check_input_shape(input_shape)
    pool, args = _check_avg(
        shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    )
    if grad_out.shape != pool.out_shape:
        raise ValueError(
            f"grad_out must have the avg_pool2d output shape {pool.out_shape} for "
            f"input_shape {shape}, got {grad_out.shape}"
        )
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)
    if grad_out.size == 0:
        grad_x.fill(0)
        return grad_x
    _backend.current().avg_pool2d_backward(
        contiguous(grad_out), grad_x, *args, _threads.get_num_threads()
    )
    return grad_x


# ---------------------------------------------------------------------------------------
# Activations


def _activation(kernel: str, x: ArrayLike) -> np.ndarray:
    x = as_float_array(x, "x")
    out = _buffers.empty(x.shape, dtype=x.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(x).reshape(-1), out.reshape(-1), _threads.get_num_threads()
    )
    return out


def _activation_backward(kernel: str, grad_out: ArrayLike, y: ArrayLike) -> np.ndarray:
    y = as_float_array(y, "y")
    grad_out = as_float_array(grad_out, "grad_out")
    same_dtype(y, grad_out, "y", "grad_out")
    if grad_out.shape != y.shape:
        raise ValueError(f"grad_out must have the shape of y {y.shape}, got {grad_out.shape}")
    grad_x = _buffers.empty(y.shape, dtype=y.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(grad_out).reshape(-1), contiguous(y).reshape(-1), grad_x.reshape(-1),
        _threads.get_num_threads(),
    )  # fmt: skip
    return grad_x


def relu(x: np.ndarray) -> np.ndarray:
    """Rectified linear unit, ``max(x, 0)`` element-wise; NaN propagates.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    return _activation("relu_forward", x)


def relu_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`relu` from its output ``y``.

    0 where ``y <= 0`` and ``grad_out`` elsewhere: a select, as in PyTorch, so a NaN
    gradient stops at an inactive unit and passes where the output itself is NaN. The
    gradient at 0 is taken as 0.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`relu`

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _activation_backward("relu_backward", grad_out, y)


def tanh(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent element-wise.

    The compiled backend computes float32 with a vectorized kernel accurate to a few
    units in the last place (numpy's ``tanh`` is the reference); float64 with numpy.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    return _activation("tanh_forward", x)


def tanh_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`tanh` from its output: ``grad_out * (1 - y**2)``.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`tanh`

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _activation_backward("tanh_backward", grad_out, y)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))`` element-wise.

    Computed as ``e / (1 + e)`` for ``x < 0`` and ``1 / (1 + e)`` otherwise, with
    ``e = exp(-|x|)``: it never overflows and is accurate to a few units in the last
    place over the whole range, small outputs (large negative x) included.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    return _activation("sigmoid_forward", x)


def sigmoid_backward(grad_out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of :func:`sigmoid` from its output: ``grad_out * y * (1 - y)``.

    Accurate to a few units in the last place where ``y <= 1/2`` (``x <= 0``). Where
    ``y`` rounds to 1 (``x`` above about 17 in float32, 37 in float64) the gradient is
    0, as in PyTorch, which computes it from the output in the same way.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of y
    y : ndarray, the output of :func:`sigmoid`

    Returns
    -------
    grad_x : ndarray of the shape and dtype of y
    """
    return _activation_backward("sigmoid_backward", grad_out, y)
