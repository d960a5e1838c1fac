"""The samples and targets given to a model's fit, train_step, evaluate and predict.

For any model with ``output_shape(sample_shape)`` and ``dtype``: the checks read only
those, so any kind of model is checked as a ``Sequential`` is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def check_X(
    model: Any, X: ArrayLike, name: str = "X", convert: bool = True
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate a batch of samples.

    Returns the batch (as the model dtype if ``convert``) and the output shape of
    one sample.
    """
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim < 2:
        raise ValueError(
            f"{name} must be a batch of samples of shape (n_samples, ...), got shape "
            f"{X.shape}{_one_sample_hint(model, X.shape, name)}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} has 0 samples, shape {X.shape}")
    if convert:
        X = X.astype(model.dtype, copy=False)
    if X.dtype.kind == "f" and X.size and not (np.isfinite(X.min()) and np.isfinite(X.max())):
        raise ValueError(f"{name} contains NaN or infinity (in the model dtype {model.dtype})")
    try:
        out_shape = model.output_shape(X.shape[1:])
    except ValueError as exc:
        raise ValueError(
            f"{name} of shape {X.shape} does not fit the model: "
            f"{exc}{_one_sample_hint(model, X.shape, name)}"
        ) from None
    return X, out_shape


def _one_sample_hint(model: Any, shape: tuple[int, ...], name: str) -> str:
    """Advise on a single sample given without its batch axis (``model.predict(X[0])``).

    The advice is given when ``shape`` itself is a shape the model accepts per sample.
    """
    try:
        model.output_shape(tuple(shape))
    except ValueError:
        return ""
    return (
        f"; {name} looks like one sample of shape {tuple(shape)}: add the batch axis, "
        f"e.g. {name}[None] (or {name}[np.newaxis]), to pass a batch of one"
    )


def check_y(
    model: Any,
    y: ArrayLike,
    n: int,
    out_shape: tuple[int, ...],
    classification: bool,
    name: str = "y",
) -> np.ndarray:
    """Validate the targets of ``n`` samples against one output of shape ``out_shape``.

    Class indices (as intp) for a classification loss; otherwise targets of the output's
    shape in the model dtype.
    """
    y = np.asarray(y)
    if not classification:
        if y.shape != (n, *out_shape):
            raise ValueError(
                f"{name} must have shape {(n, *out_shape)} (the model's output), got {y.shape}"
            )
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {y.dtype}")
        y = y.astype(model.dtype, copy=False)
        if y.size and not (np.isfinite(y.min()) and np.isfinite(y.max())):
            raise ValueError(f"{name} contains NaN or infinity (in the model dtype {model.dtype})")
        return y
    if len(out_shape) != 1:
        raise ValueError(
            f"cross-entropy needs the model to output (n_classes,) logits per sample, "
            f"but it outputs {out_shape}; end the model with Flatten() and Dense()"
        )
    if y.ndim == 2 and y.shape[1] == 1:
        raise ValueError(f"{name} must be 1-D of shape ({n},), got {y.shape}; use y.ravel()")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match the samples, got {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{name} must hold integer class indices, got non-integer floats")
    elif y.dtype.kind not in "biu":
        raise TypeError(
            f"{name} must hold integer class indices 0..n_classes-1, got dtype {y.dtype}; "
            "encode other labels with sklearn.preprocessing.LabelEncoder, or use "
            "fastcnn.CNNClassifier, which accepts any labels"
        )
    n_classes = out_shape[0]
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"{name} must hold class indices in [0, {n_classes}) for a model with "
            f"{n_classes} outputs, got values in [{y.min()}, {y.max()}]"
        )
    return y.astype(np.intp, copy=False)
