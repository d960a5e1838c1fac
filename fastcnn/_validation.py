"""Argument checks and output-size arithmetic shared by the ops.

Everything here runs once per call, before any kernel: a kernel only ever sees
C-contiguous float32/float64 arrays and plain, already-checked ints.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, TypeGuard

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

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


# --- estimator parameters ---
# CNNClassifier's hyper-parameters, checked in fit as scikit-learn's conventions ask
# (``__init__`` stores them untouched), and the shape its flat input rows take.


def _int_param(params: dict[str, object], name: str, low: int) -> None:
    value = params[name]
    if not is_int(value) or int(value) < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _real_param(
    params: dict[str, object], name: str, low: float, high: float, low_open: bool, high_open: bool
) -> None:
    value = params[name]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        x = float(value)  # type: ignore[arg-type]  # a numbers.Real
        ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a float in {interval}, got {value!r}")


def _choice_param(params: dict[str, object], name: str, options: tuple[object, ...]) -> None:
    if params[name] not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {params[name]!r}")


_ESTIMATOR_REALS = {  # name: (low, high, low_open, high_open)
    "learning_rate_init": (0.0, math.inf, True, True),
    "momentum": (0.0, 1.0, False, True),
    "alpha": (0.0, math.inf, False, True),
    "tol": (0.0, math.inf, False, True),
    "validation_fraction": (0.0, 1.0, True, True),
}
_ESTIMATOR_CHOICES: dict[str, tuple[object, ...]] = {
    "optimizer": ("adam", "sgd"),
    "learning_rate": ("cosine", "constant"),
    "dtype": ("float32", "float64", np.float32, np.float64),
    "data_format": ("channels_first", "channels_last"),
}


def check_estimator_params(params: dict[str, object], backends: tuple[str, ...]) -> None:
    """Check CNNClassifier's parameters (``get_params()``), but its ``architecture``.

    ``backends`` are the available backend names. Raises ValueError naming the first
    parameter that is out of its range, as scikit-learn's estimators do.
    """
    for name, low in (("max_iter", 1), ("batch_size", 1), ("n_iter_no_change", 1)):
        _int_param(params, name, low)
    for name, bounds in _ESTIMATOR_REALS.items():
        _real_param(params, name, *bounds)
    for name, options in _ESTIMATOR_CHOICES.items():
        _choice_param(params, name, options)
    if params["rescale"] is not None:
        _real_param(params, "rescale", 0.0, math.inf, True, True)
    cw = params["class_weight"]
    if not (cw is None or (isinstance(cw, str) and cw == "balanced") or isinstance(cw, dict)):
        raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {cw!r}")
    for name in ("early_stopping", "shuffle", "warm_start"):
        if not isinstance(params[name], bool | np.bool_):
            raise ValueError(f"{name} must be a bool, got {params[name]!r}")
    if params["verbose"] not in (0, 1, 2):  # True == 1 and False == 0 are accepted too
        raise ValueError(f"verbose must be 0, 1 or 2, got {params['verbose']!r}")
    if params["backend"] is not None and params["backend"] not in backends:
        raise ValueError(f"backend must be None or one of {backends}, got {params['backend']!r}")
    shape = params["image_shape"]
    if shape is not None and (
        not isinstance(shape, tuple | list)
        or len(shape) not in (2, 3)
        or not all(is_int(s) and int(s) >= 1 for s in shape)
    ):
        raise ValueError(
            f"image_shape must be None, (H, W) or (C, H, W) of positive ints, got {shape!r}"
        )


def image_shape_of(
    n_features: int,
    image_shape: tuple[int, ...] | list[int] | None,
    data_format: str = "channels_first",
) -> tuple[int, int, int]:
    """Return the shape (C, H, W) that one flat row of ``n_features`` values takes.

    A 3-tuple ``image_shape`` is in ``data_format`` order, (C, H, W) or (H, W, C); None
    gives a square (1, s, s) when ``n_features == s * s``, else a strip (1, 1, n).
    """
    if image_shape is not None:
        if len(image_shape) == 2:
            shape = (1, image_shape[0], image_shape[1])
        elif data_format == "channels_last":
            shape = (image_shape[2], image_shape[0], image_shape[1])
        else:
            shape = (image_shape[0], image_shape[1], image_shape[2])
        if int(np.prod(shape)) != n_features:
            raise ValueError(
                f"image_shape={tuple(image_shape)} holds {int(np.prod(shape))} values, but X "
                f"has {n_features} features per sample"
            )
        return shape
    side = int(round(np.sqrt(n_features)))
    if side * side == n_features:
        return (1, side, side)
    return (1, 1, n_features)
