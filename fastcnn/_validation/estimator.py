"""``CNNClassifier``'s hyper-parameters and the image shape of its flat input rows."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    pass

from fastcnn._validation.arrays import is_int

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
