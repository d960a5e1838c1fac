"""Stateless ops: the one API every layer, loss and optimizer calls.

Convolution, pooling, fully connected, activations, normalization, dropout, the loss and
the optimizer steps.

Each op validates its arguments once (:mod:`fastcnn._validation`), resolves defaults
(``stride=None``, ``'same'`` padding, ``ceil_mode``), allocates its outputs and hands plain
ints and C-contiguous arrays to the active backend (compiled Cython kernels or the numpy
reference; see :func:`fastcnn.set_backend`). Layout is NCHW, weights are ``(C_out,
C_in // groups, kH, kW)`` and the semantics are PyTorch's, so results compare directly
with ``torch.nn.functional``.

Every op returns new C-contiguous arrays of the input's dtype (float32 or float64), with
two exceptions that update state in place, as PyTorch's do: the optimizer steps
(:func:`sgd_step`, :func:`adam_step`) and :func:`batch_norm`'s running statistics. The
ops that keep training state (dropout, batch norm, the loss, the optimizer steps) are
written in ``_functional_training.py``, to keep each module short; they are part of this
API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._functional_training import (
    adam_step,
    batch_norm,
    batch_norm_backward,
    dropout,
    dropout_backward,
    sgd_step,
    softmax_cross_entropy,
)
from fastcnn._validation import (
    ConvArgs,
    PoolArgs,
    as_float_array,
    check_bias,
    check_conv,
    check_divisor,
    check_finite_float,
    check_grad_out,
    check_input_shape,
    check_linear,
    check_max_pool_indices,
    check_pool,
    contiguous,
    same_dtype,
)
from fastcnn._validation import IntPair as IntPair
from fastcnn._validation import RngLike as RngLike

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "adam_step",
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm",
    "batch_norm_backward",
    "conv2d",
    "conv2d_backward",
    "dropout",
    "dropout_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "sgd_step",
    "sigmoid",
    "sigmoid_backward",
    "softmax_cross_entropy",
    "tanh",
    "tanh_backward",
]


# ---------------------------------------------------------------------------------------
# Convolution


def _zero(*gradients: np.ndarray | None) -> None:
    """Zero the gradients of an empty batch (it contributes nothing)."""
    for gradient in gradients:
        if gradient is not None:
            gradient.fill(0)


def _kernel_args(conv: ConvArgs) -> tuple[int, int, int, int, int, int, int]:
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
    conv = check_conv(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        bias = check_bias(bias, conv.x, conv.out_shape[1], conv.weight)
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
    conv = check_conv(x, weight, stride, padding, dilation, groups)
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
    x, weight = check_linear(x, weight)
    if bias is not None:
        bias = check_bias(bias, x, weight.shape[0], weight)
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
    x, weight = check_linear(x, weight)
    grad_out = check_grad_out(grad_out, x, (x.shape[0], weight.shape[0]))
    dtype = x.dtype
    grad_x = _buffers.empty(x.shape, dtype=dtype) if needs_input_grad else None
    grad_weight = _buffers.empty(weight.shape, dtype=dtype)
    grad_bias = _buffers.empty(weight.shape[0], dtype=dtype)
    if grad_out.size == 0:
        _zero(grad_x, grad_weight, grad_bias)
    else:
        _backend.current().linear_backward(
            grad_out, x, weight, grad_x, grad_weight, grad_bias, _threads.get_num_threads(),
        )  # fmt: skip
    return grad_x, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------
# Pooling


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
    pool = check_pool(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
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
    shape = check_input_shape(input_shape)
    indices = check_max_pool_indices(indices, grad_out, shape)
    if grad_out.size == 0:
        return np.zeros(shape, dtype=grad_out.dtype)
    grad_x = _buffers.empty(shape, dtype=grad_out.dtype)  # the kernel zeroes each plane it fills
    # The kernel checks each index as it reads it, skips and counts those outside the
    # plane: a check here first could not see a change another thread makes in between.
    bad = _backend.current().max_pool2d_backward(
        contiguous(grad_out), indices, grad_x, _threads.get_num_threads(),
    )  # fmt: skip
    if bad:
        raise _indices_out_of_range(indices, bad, shape)
    return grad_x


def _indices_out_of_range(indices: np.ndarray, bad: int, shape: tuple[int, ...]) -> ValueError:
    """Return the error for ``bad`` indices outside the (H, W) plane of ``shape``."""
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
) -> tuple[PoolArgs, _AvgArgs]:
    pool = check_pool(shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    divisor = check_divisor(divisor_override)
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
    shape = check_input_shape(input_shape)
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


def _activation_with(kernel: str, x: ArrayLike, slope: float) -> np.ndarray:
    x = as_float_array(x, "x")
    out = _buffers.empty(x.shape, dtype=x.dtype)
    getattr(_backend.current(), kernel)(
        contiguous(x).reshape(-1), out.reshape(-1), slope, _threads.get_num_threads()
    )
    return out


def leaky_relu(x: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    """Leaky rectifier: ``x`` where ``x > 0``, ``negative_slope * x`` elsewhere.

    NaN propagates. ``negative_slope`` is rounded to the dtype of ``x`` first, as PyTorch's
    ``leaky_relu`` does.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64
    negative_slope : float, default 0.01
        Finite; may be negative or zero.

    Returns
    -------
    y : ndarray of the shape and dtype of x
    """
    slope = check_finite_float(negative_slope, "negative_slope")
    return _activation_with("leaky_relu_forward", x, slope)


def leaky_relu_backward(
    grad_out: np.ndarray, x: np.ndarray, negative_slope: float = 0.01
) -> np.ndarray:
    """Gradient of :func:`leaky_relu` from its input ``x``.

    ``grad_out`` where ``x > 0``, ``negative_slope * grad_out`` elsewhere (at 0 and NaN too,
    as in PyTorch). The input, not the output: with ``negative_slope <= 0`` the output's
    sign does not tell the branch.

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of x
    x : ndarray, the input of :func:`leaky_relu`
    negative_slope : float, default 0.01

    Returns
    -------
    grad_x : ndarray of the shape and dtype of x
    """
    slope = check_finite_float(negative_slope, "negative_slope")
    x = as_float_array(x, "x")
    grad_out = check_grad_out(grad_out, x, x.shape)
    grad_x = _buffers.empty(x.shape, dtype=x.dtype)
    _backend.current().leaky_relu_backward(
        grad_out.reshape(-1), contiguous(x).reshape(-1), grad_x.reshape(-1), slope,
        _threads.get_num_threads(),
    )  # fmt: skip
    return grad_x
