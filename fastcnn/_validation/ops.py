"""The arguments of each op: convolution, dense, pooling, loss, batch norm, optimizer steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

from fastcnn._validation.arrays import (
    FLOAT_DTYPES,
    MAX_BLAS_DIM,
    IntPair,
    as_float_array,
    check_size,
    contiguous,
    conv2d_output_hw,
    conv_padding,
    is_int,
    pair,
    pool2d_output_hw,
    same_dtype,
    short_repr,
)
from fastcnn._validation.scalars import check_bool

# ---------------------------------------------------------------------------------------
# Convolution and fully connected


class ConvArgs(NamedTuple):
    """A validated convolution: the (possibly extra-padded) input and every size."""

    x: np.ndarray  # contiguous; padded at bottom/right when 'same' needs it
    weight: np.ndarray
    stride: tuple[int, int]
    pad: tuple[int, int]  # symmetric part handled by the kernel
    dilation: tuple[int, int]
    groups: int
    out_shape: tuple[int, int, int, int]
    extra: tuple[int, int]  # bottom/right rows/columns padded here, cropped from grad_x


def _check_channels(x: np.ndarray, weight: np.ndarray, groups: object) -> int:
    """Return ``groups`` as an int that splits the channels of x and weight evenly."""
    c_in, (c_out, c_per_group, kh, kw) = x.shape[1], weight.shape
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
    return groups


def _check_blas_sizes(x: np.ndarray, weight: np.ndarray, out_shape: tuple[int, ...]) -> None:
    """BLAS takes 32-bit sizes: the lowered matrices must fit, whichever backend runs."""
    c_per_group, kh, kw = weight.shape[1:]
    h, w = x.shape[2:]
    for what, size in (
        ("kernel taps per group (C_in/groups * kH * kW)", c_per_group * kh * kw),
        ("output plane (H_out * W_out)", out_shape[2] * out_shape[3]),
        ("input block per group (C_in/groups * H * W)", c_per_group * h * w),
    ):
        if size > MAX_BLAS_DIM:
            raise ValueError(
                f"conv2d too large: {what} = {size} exceeds {MAX_BLAS_DIM} "
                f"(x {x.shape}, weight {weight.shape}, output {out_shape})"
            )


def check_conv(
    x: ArrayLike,
    weight: ArrayLike,
    stride: IntPair,
    padding: IntPair | str,
    dilation: IntPair,
    groups: int,
) -> ConvArgs:
    """Validate a conv2d call; pad the input at the bottom/right when ``'same'`` needs it."""
    x = as_float_array(x, "x", 4)
    weight = as_float_array(weight, "weight", 4)
    same_dtype(x, weight, "x", "weight")
    groups = _check_channels(x, weight, groups)
    n, _, h, w = x.shape
    kernel = (weight.shape[2], weight.shape[3])
    stride = pair(stride, "stride", 1)
    dilation = pair(dilation, "dilation", 1)
    pads = conv_padding(padding, kernel, dilation, stride)
    (top, bottom), (left, right) = pads
    extent_h, extent_w = dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1
    if extent_h > h + top + bottom or extent_w > w + left + right:
        raise ValueError(
            f"kernel of extent ({extent_h}, {extent_w}) (weight {weight.shape}, dilation "
            f"{dilation}) is larger than the padded input ({h + top + bottom}, "
            f"{w + left + right}) (x {x.shape}, padding {padding!r})"
        )
    out_shape = (n, weight.shape[0], *conv2d_output_hw((h, w), kernel, stride, pads, dilation))
    check_size(out_shape, "conv2d output")
    _check_blas_sizes(x, weight, out_shape)
    extra = (bottom - top, right - left)
    x = contiguous(x)
    if extra != (0, 0):
        x = np.pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    return ConvArgs(
        x, contiguous(weight), stride, (top, left), dilation, groups, out_shape, extra
    )  # fmt: skip


def check_bias(bias: ArrayLike, x: np.ndarray, size: int, weight: np.ndarray) -> np.ndarray:
    """Return a C-contiguous (size,) bias of the dtype of ``x``."""
    bias = as_float_array(bias, "bias", 1)
    same_dtype(x, bias, "x", "bias")
    if bias.shape[0] != size:
        raise ValueError(
            f"bias must have shape ({size},) to match weight {weight.shape}, got {bias.shape}"
        )
    return contiguous(bias)


def check_linear(x: ArrayLike, weight: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate a linear call: x (N, in_features), weight (out_features, in_features)."""
    x = as_float_array(x, "x", 2)
    weight = as_float_array(weight, "weight", 2)
    same_dtype(x, weight, "x", "weight")
    if weight.shape[1] != x.shape[1] or weight.shape[0] < 1:
        raise ValueError(
            f"weight {weight.shape} must be (out_features, in_features) with in_features "
            f"= {x.shape[1]} to match x {x.shape}"
        )
    return contiguous(x), contiguous(weight)


def check_grad_out(grad_out: ArrayLike, x: np.ndarray, expected: tuple[int, ...]) -> np.ndarray:
    """Return a C-contiguous gradient of the dtype of ``x`` and the shape ``expected``."""
    grad_out = as_float_array(grad_out, "grad_out", len(expected))
    same_dtype(x, grad_out, "x", "grad_out")
    if grad_out.shape != expected:
        raise ValueError(f"grad_out must have shape {expected}, got {grad_out.shape}")
    return contiguous(grad_out)


# ---------------------------------------------------------------------------------------
# Pooling


class PoolArgs(NamedTuple):
    """A validated pooling window and the output shape it gives."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    out_shape: tuple[int, int, int, int]


def pool_window(
    kernel_size: IntPair, stride: IntPair | None, padding: IntPair, name: str
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Return (kernel, stride, padding) pairs; stride defaults to the kernel."""
    kernel = pair(kernel_size, "kernel_size", 1)
    stride = kernel if stride is None else pair(stride, "stride", 1)
    pad = pair(padding, "padding", 0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(
            f"padding {padding!r} must be at most half the kernel size {kernel} in {name}"
        )
    return kernel, stride, pad


def check_input_shape(input_shape: object) -> tuple[int, int, int, int]:
    """Return an (N, C, H, W) tuple of non-negative ints."""
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


def windows_touch_input(
    size: int, kernel: int, stride: int, pad: int, dilation: int, n_out: int
) -> bool:
    """Tell whether every window has at least one tap inside the input.

    Always so without dilation, since padding is at most half the kernel, unless the
    input is empty (H or W == 0), when every window is padding only.
    """
    if dilation == 1 and size > 0:
        return True
    taps = np.arange(n_out)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    return bool(((taps >= 0) & (taps < size)).any(axis=1).all())


def check_pool(
    shape: tuple[int, ...],
    kernel_size: IntPair,
    stride: IntPair | None,
    padding: IntPair,
    dilation: IntPair,
    ceil_mode: bool,
    name: str,
) -> PoolArgs:
    """Validate a pooling call over an input of ``shape`` (N, C, H, W)."""
    kernel, stride, pad = pool_window(kernel_size, stride, padding, name)
    dilation = pair(dilation, "dilation", 1)
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    n, c, h, w = shape
    h_out, w_out = pool2d_output_hw((h, w), kernel, stride, pad, dilation, ceil_mode)
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"{name}: input of shape {tuple(shape)} is too small for kernel_size {kernel}, "
            f"dilation {dilation} and padding {pad} (output would be {h_out}x{w_out})"
        )
    for axis, size, n_out in ((0, h, h_out), (1, w, w_out)):
        if not windows_touch_input(
            size, kernel[axis], stride[axis], pad[axis], dilation[axis], n_out
        ):
            raise ValueError(
                f"{name}: with dilation {dilation} and padding {pad}, some pooling windows "
                f"over the input of shape {tuple(shape)} contain only padding"
            )
    out_shape = (n, c, h_out, w_out)
    check_size(out_shape, f"{name} output")
    return PoolArgs(kernel, stride, pad, dilation, out_shape)


def check_divisor(divisor_override: object) -> int:
    """Return avg_pool2d's ``divisor_override`` (a positive int, or None as 0)."""
    if divisor_override is None:
        return 0
    if isinstance(divisor_override, bool) or not isinstance(divisor_override, int | np.integer):
        raise TypeError(
            f"divisor_override must be a positive int or None, got {short_repr(divisor_override)}"
        )
    if not 1 <= divisor_override <= MAX_BLAS_DIM:
        raise ValueError(
            f"divisor_override must be a positive int or None, got {divisor_override} "
            f"(at most {MAX_BLAS_DIM})"
        )
    return int(divisor_override)


def check_max_pool_indices(
    indices: ArrayLike, grad_out: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Return max_pool2d's indices (integers of the shape of ``grad_out``) as int64."""
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got dtype {indices.dtype}")
    if indices.shape != grad_out.shape:
        raise ValueError(
            f"indices must have the shape of grad_out {grad_out.shape}, got {indices.shape}"
        )
    if grad_out.shape[:2] != shape[:2]:
        raise ValueError(f"grad_out {grad_out.shape} and input_shape {shape} disagree on (N, C)")
    return contiguous(indices.astype(np.int64, copy=False))


# ---------------------------------------------------------------------------------------
# Losses


def check_logits(logits: ArrayLike, name: str = "logits") -> np.ndarray:
    """Return a float (N, n_classes) array, n_classes >= 1."""
    logits = np.asarray(logits)
    if logits.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {logits.dtype}")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, n_classes), got {logits.shape}")
    return logits


def check_labels(labels: ArrayLike, logits: np.ndarray) -> np.ndarray:
    """Return class indices in ``[0, n_classes)``, one per row of logits, as intp."""
    labels = np.asarray(labels)
    n, n_classes = logits.shape
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"labels must have shape ({n},) to match logits {logits.shape}, got {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must hold integer class indices, got dtype {labels.dtype}")
    if n == 0:
        raise ValueError("cannot compute a loss over an empty batch (N == 0)")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"labels must hold class indices in [0, {n_classes}) for logits {logits.shape}, "
            f"got values in [{low}, {high}]"
        )
    return np.ascontiguousarray(labels, dtype=np.intp)


def check_sample_weight(sample_weight: ArrayLike, n: int) -> np.ndarray:
    """Return per-sample weights: shape (n,), real, finite, non-negative; as float64."""
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), one per sample, got {w.shape}")
    w = w.astype(np.float64, copy=False)
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight must be finite, got NaN or infinity")
    if np.any(w < 0):
        raise ValueError(f"sample_weight must be non-negative, got a minimum of {w.min()}")
    return w


# ---------------------------------------------------------------------------------------
# Normalization


def check_channel_vector(
    value: ArrayLike | None, name: str, x: np.ndarray, writeable: bool = False
) -> np.ndarray | None:
    """Return None or a (C,) array of the dtype of ``x`` (C = ``x.shape[1]``)."""
    if value is None:
        return None
    if writeable and not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array (updated in place), got {short_repr(value)}"
        )
    array = as_float_array(value, name, 1)
    same_dtype(x, array, "x", name)
    if array.shape != (x.shape[1],):
        raise ValueError(
            f"{name} must have shape ({x.shape[1]},), one per channel of x {x.shape}, "
            f"got {array.shape}"
        )
    if writeable and not array.flags.writeable:
        raise ValueError(f"{name} is read-only; it must be updated in place")
    return array


def check_batch_input(x: ArrayLike, training: bool) -> np.ndarray:
    """Return an (N, C, ...) float array with C >= 1 as a C-contiguous (N, C, L) one."""
    x = as_float_array(x, "x")
    if x.ndim < 2 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (N, C, ...) with C >= 1, got {x.shape}")
    count = x.size // x.shape[1]
    if training and count < 2:
        raise ValueError(
            f"batch_norm needs more than one value per channel in training mode, got x of "
            f"shape {x.shape}"
        )
    return contiguous(x).reshape(x.shape[0], x.shape[1], -1)


# ---------------------------------------------------------------------------------------
# Optimizer steps


def check_step_lists(params: object, grads: object, **state: object) -> bool:
    """Check param and grad lists (and the state lists' lengths); tell if all are flat.

    ``state`` maps each state list's name to the list; :func:`check_state_arrays` checks
    its arrays.
    """
    if type(params) is not list or type(grads) is not list:
        raise TypeError(
            f"params and grads must be lists of arrays, got {type(params).__name__} and "
            f"{type(grads).__name__}"
        )
    n = len(params)
    for name, values in (("grads", grads), *state.items()):
        if type(values) is not list or len(values) != n:
            raise ValueError(
                f"{name} must be a list of {n} arrays, one per param, got {values!r:.80}"
            )
    flat = True
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if type(p) is not np.ndarray or type(g) is not np.ndarray:
            raise TypeError(f"params[{i}] and grads[{i}] must be numpy arrays")
        if p.dtype not in FLOAT_DTYPES or g.shape != p.shape or g.dtype != p.dtype:
            raise ValueError(
                f"grads[{i}] must have the shape and float dtype of params[{i}]; "
                f"params[{i}] {p.shape} {p.dtype}, grads[{i}] {g.shape} {g.dtype}"
            )
        flags = p.flags
        if not flags.writeable:
            raise ValueError(f"params[{i}] is read-only; it must be updated in place")
        flat = flat and flags.c_contiguous and g.flags.c_contiguous
    return flat


def check_state_arrays(
    values: list[Any], name: str, params: list[np.ndarray], allow_none: bool = False
) -> bool:
    """Check state arrays against their params (None allowed if asked); tell if all are flat."""
    flat = True
    for i, (v, p) in enumerate(zip(values, params, strict=True)):
        if v is None and allow_none:
            continue
        if type(v) is not np.ndarray or v.shape != p.shape or v.dtype != p.dtype:
            raise ValueError(f"{name}[{i}] must be an array of the shape and dtype of params[{i}]")
        flat = flat and v.flags.c_contiguous
    return flat


def check_param_pairs(params_and_grads: Iterable[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``(param, grad)`` pairs of writeable float arrays of one shape and dtype."""
    pairs = []
    for i, item in enumerate(params_and_grads):
        try:
            param, grad = item
        except (TypeError, ValueError):
            raise TypeError(
                f"parameters must be (param, grad) pairs as returned by "
                f"model.parameters(); item {i} is {type(item).__name__}"
            ) from None
        if not (isinstance(param, np.ndarray) and isinstance(grad, np.ndarray)):
            raise TypeError(f"parameter {i}: param and grad must be numpy arrays")
        if param.dtype.kind != "f" or grad.shape != param.shape or grad.dtype != param.dtype:
            raise ValueError(
                f"parameter {i}: grad must be a float array of the param's shape and "
                f"dtype; param {param.shape} {param.dtype}, grad {grad.shape} {grad.dtype}"
            )
        if not param.flags.writeable:
            raise ValueError(f"parameter {i} is read-only; it must be updated in place")
        pairs.append((param, grad))
    return pairs


# ---------------------------------------------------------------------------------------
# Merging: add, concatenate (graph models)


def check_merge_arrays(arrays: Any, op: str) -> list[np.ndarray]:
    """Return ``arrays`` (a sequence of two or more) as float arrays of one dtype and rank."""
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, list | tuple):
        raise TypeError(f"{op} expects a list of arrays, got {type(arrays).__name__}")
    if len(arrays) < 2:
        raise ValueError(f"{op} needs at least 2 arrays, got {len(arrays)}")
    checked = [as_float_array(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    first = checked[0]
    for i, array in enumerate(checked[1:], 1):
        if array.dtype != first.dtype:
            raise TypeError(
                f"{op}: arrays[{i}] has dtype {array.dtype} but arrays[0] has dtype "
                f"{first.dtype}; they must match (cast one with .astype)"
            )
        if array.ndim != first.ndim:
            raise ValueError(
                f"{op}: arrays[{i}] has {array.ndim} dimensions but arrays[0] has "
                f"{first.ndim}; got shapes {[a.shape for a in checked]}"
            )
    return checked


def check_concat_axis(axis: Any, ndim: int) -> int:
    """Return ``axis`` as a non-negative axis of an ``ndim``-d array (not the batch axis)."""
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise TypeError(f"axis must be an int, got {axis!r}")
    value = int(axis)
    if not -ndim <= value < ndim:
        raise ValueError(f"axis {value} is out of range for arrays of {ndim} dimensions")
    return value % ndim


def concat_shape(shapes: list[tuple[int, ...]], axis: int, what: str) -> tuple[int, ...]:
    """Return the shape of the concatenation of ``shapes`` on ``axis``, or say why not.

    ``what`` names the caller in the message (an op or a layer).
    """
    first = shapes[0]
    for i, shape in enumerate(shapes[1:], 1):
        if len(shape) != len(first) or any(
            a != b for d, (a, b) in enumerate(zip(shape, first, strict=True)) if d != axis
        ):
            raise ValueError(
                f"{what} needs inputs of one shape but for axis {axis}; input {i} has shape "
                f"{shape}, input 0 {first} (all: {shapes})"
            )
    return (*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1 :])
