"""Arrays, dtypes, int pairs and the output-size formulas of convolution and pooling."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, TypeGuard

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike


IntPair = int | tuple[int, int]
RngLike = int | np.random.Generator | None

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Kernels index with Py_ssize_t and BLAS with 32-bit ints: keep every buffer and every
# matrix dimension handed to BLAS below these bounds.
MAX_ELEMENTS = 2**62
MAX_BLAS_DIM = 2**31 - 1


def as_float_array(value: ArrayLike, name: str, ndim: int | None = None) -> np.ndarray:
    """Return ``value`` as an ndarray of float32/float64, checking its rank."""
    array = np.asarray(value)
    if array.dtype.kind == "f" and not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))  # e.g. big-endian data from a file
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {array.dtype}"
            + (
                " (convert integer images with .astype(np.float32))"
                if array.dtype.kind in "uib"
                else ""
            )
        )
    if ndim is not None and array.ndim != ndim:
        layout = {4: "(N, C, H, W)", 1: "(C_out,)"}.get(ndim, f"{ndim}-D")
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {array.shape}")
    return array


def same_dtype(reference: np.ndarray, other: np.ndarray, ref_name: str, other_name: str) -> None:
    """Refuse ``other`` unless it has the dtype of ``reference``."""
    if other.dtype != reference.dtype:
        raise TypeError(
            f"{other_name} has dtype {other.dtype} but {ref_name} has dtype {reference.dtype}; "
            "they must match (cast one with .astype)"
        )


def contiguous(array: np.ndarray) -> np.ndarray:
    """C-contiguous view or copy; the kernels assume unit strides."""
    return np.ascontiguousarray(array)


def short_repr(value: object, limit: int = 80) -> str:
    """``repr`` for error messages: an array by its shape and dtype, anything long cut."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: object) -> TypeGuard[numbers.Integral]:
    """Whether ``value`` is an integer (a bool is not)."""
    if type(value) is int:  # the common case, without the ABC machinery (3x faster)
        return True
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """Normalize an int or an (h, w) pair of ints, each >= ``minimum``."""
    if type(value) is tuple and len(value) == 2:  # what layers pass: checked fast
        h, w = value
        if type(h) is int and type(w) is int and minimum <= h <= MAX_BLAS_DIM:
            if minimum <= w <= MAX_BLAS_DIM:
                return value
    if is_int(value):
        values = (int(value), int(value))
    elif isinstance(value, tuple | list) and len(value) == 2 and all(map(is_int, value)):
        values = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {short_repr(value)}")
    if min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if max(values) > MAX_BLAS_DIM:
        raise ValueError(f"{name} must be at most {MAX_BLAS_DIM}, got {value!r}")
    return values


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """PyTorch's floor((size + 2*pad - dilation*(kernel-1) - 1) / stride) + 1."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(
    size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool
) -> int:
    """Pooling output size, PyTorch's rule (0 or less means the input is too small).

    With ``ceil_mode`` the division rounds up, but the last window must start inside the
    input or its left padding, so it never lies entirely in the right padding.
    """
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1  # floor division, as div_rtn
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def conv_padding(
    padding: object, kernel: tuple[int, int], dilation: tuple[int, int], stride: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve ``'valid'``, ``'same'``, an int or a pair to ((top, bottom), (left, right)).

    Explicit padding is symmetric. ``'same'`` puts the odd extra row/column at the bottom
    and right when dilation*(kernel-1) is odd, as PyTorch does.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' requires stride 1, got stride={stride}")
            totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return tuple((t // 2, t - t // 2) for t in totals)  # type: ignore[return-value]
        raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    ph, pw = pair(padding, "padding", 0)
    return ((ph, ph), (pw, pw))


def check_size(shape: tuple[int, ...], what: str) -> None:
    """Refuse outputs whose element count would overflow index arithmetic."""
    count = math.prod(shape)
    if count >= MAX_ELEMENTS:
        raise ValueError(f"{what} of shape {shape} has {count} elements, too many to index")


def conv2d_output_hw(
    hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Return (H_out, W_out) of a convolution padded ((top, bottom), (left, right)).

    Asymmetric ``'same'`` padding counts the extra bottom row and right column as input.
    """
    (top, bottom), (left, right) = pads
    h_out = conv_output_size(hw[0] + bottom - top, kernel[0], stride[0], top, dilation[0])
    w_out = conv_output_size(hw[1] + right - left, kernel[1], stride[1], left, dilation[1])
    return h_out, w_out


def pool2d_output_hw(
    hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool,
) -> tuple[int, int]:
    """Return (H_out, W_out) of a pooling window (see :func:`pool_output_size`)."""
    return (
        pool_output_size(hw[0], kernel[0], stride[0], pad[0], dilation[0], ceil_mode),
        pool_output_size(hw[1], kernel[1], stride[1], pad[1], dilation[1], ceil_mode),
    )
