"""Scalar arguments: numbers, flags, positive ints, dtypes and random generators."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import DTypeLike

from fastcnn._validation.arrays import FLOAT_DTYPES, RngLike, short_repr

# ---------------------------------------------------------------------------------------
# Scalars and constructor arguments


def check_number(value: object, name: str, *, low: float = 0.0, high: float = math.inf) -> float:
    """Return a real number in ``[low, high)`` as a float."""
    if type(value) is float and low <= value < high:  # the common case, fast (per step)
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {value!r}")
    value = float(value)
    if not (low <= value < high) or math.isnan(value):
        raise ValueError(f"{name} must be in [{low}, {high}), got {value!r}")
    return value


def check_float(
    value: object, name: str, low: float, high: float, *, high_open: bool = False
) -> float:
    """Return a real number in ``[low, high]`` (``[low, high)`` if ``high_open``) as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {value!r}")
    value = float(value)
    bad = not (low <= value <= high) or (high_open and value == high)
    if bad:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")
    return value


def check_finite_float(value: object, name: str) -> float:
    """Return a finite real number as a float."""
    value = check_float(value, name, -math.inf, math.inf)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def check_bool(value: object, name: str) -> bool:
    """Return a Python or numpy bool as a bool."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {short_repr(value)}")
    return bool(value)


def check_int(value: object, name: str, minimum: int) -> int:
    """Return ``value`` as an int, refusing bools, non-integers and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_positive_int(value: object, name: str) -> int:
    """Return an integer >= 1 as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_dtype(dtype: DTypeLike) -> np.dtype:
    """float32 or float64, as a numpy dtype."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


def check_rng(rng: RngLike) -> np.random.Generator:
    """None -> fresh entropy; int -> seeded Generator; a Generator is used (and advanced)."""
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")
