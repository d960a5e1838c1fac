"""Loss functions: each returns the mean loss over the batch and its gradient.

A loss here is a plain function ``loss(output, target) -> (value, grad_output)``: the
scalar that training reports and the gradient that starts ``Sequential.backward``. The
gradient has the dtype of ``output``, so a float32 model stays float32.

Both losses take an optional ``sample_weight`` (one non-negative weight per sample): each
sample's loss is multiplied by its weight and the sum is divided by the batch size N, as
Keras weights a batch. ``Sequential.fit`` divides the weights by their mean over the
training set first, so the epoch loss is scikit-learn's weighted average and an integer
weight acts as repeating the sample.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from fastcnn import _backend, _threads
from fastcnn._validation import FLOAT_DTYPES

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["LOSSES", "get_loss", "log_softmax", "mse", "softmax", "softmax_cross_entropy"]

LossFunction = Callable[..., tuple[float, np.ndarray]]


def _check_logits(logits: ArrayLike, name: str = "logits") -> np.ndarray:
    logits = np.asarray(logits)
    if logits.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array, got dtype {logits.dtype}")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, n_classes), got {logits.shape}")
    return logits


def _check_sample_weight(sample_weight: ArrayLike, n: int) -> np.ndarray:
    """Validate per-sample weights: shape (n,), real, finite, non-negative; as float64."""
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


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(softmax(logits))`` computed stably (log-sum-exp with the max subtracted)."""
    logits = np.asarray(logits)
    shifted: np.ndarray = logits - logits.max(axis=axis, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Class probabilities from logits, stable for any finite logits (no overflow).

    Parameters
    ----------
    logits : ndarray, float
    axis : int, default -1
        The class axis.

    Returns
    -------
    probabilities : ndarray of the shape and dtype of ``logits``, summing to 1 along ``axis``.
    """
    logits = np.asarray(logits)
    # exp of (logits - max) is in (0, 1]: nothing overflows, and the max term is exactly 1.
    e: np.ndarray = np.exp(logits - logits.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of integer labels, and its gradient w.r.t. the logits.

    ``loss = mean_i( logsumexp(logits[i]) - logits[i, y[i]] )``, computed with the row
    maximum subtracted first, so logits of any finite magnitude (e.g. 1e4) are exact
    where a naive ``log(softmax)`` would overflow to inf/NaN.

    Parameters
    ----------
    logits : ndarray of shape (N, n_classes), float32 or float64
        Raw, unnormalized scores.
    y : ndarray of shape (N,), integer
        Class indices in ``[0, n_classes)``.
    sample_weight : ndarray of shape (N,), optional
        Non-negative weight of each sample's loss: ``loss = sum_i(w[i] * loss_i) / N``.

    Returns
    -------
    loss : float
    grad_logits : ndarray of shape (N, n_classes), dtype of ``logits``
        ``w[:, None] * (softmax(logits) - one_hot(y)) / N`` (``w = 1`` without weights).
    """
    logits = _check_logits(logits)
    y = np.asarray(y)
    n, n_classes = logits.shape
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) to match logits {logits.shape}, got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if n == 0:
        raise ValueError("cannot compute a loss over an empty batch (N == 0)")
    low, high = y.min(), y.max()
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"y must hold class indices in [0, {n_classes}) for logits {logits.shape}, "
            f"got values in [{low}, {high}]"
        )
    w = None if sample_weight is None else _check_sample_weight(sample_weight, n)
    grad = np.empty(logits.shape, logits.dtype)
    if logits.dtype in FLOAT_DTYPES:
        backend = _backend.current()
        logits = np.ascontiguousarray(logits)
        y = np.ascontiguousarray(y, dtype=np.intp)
    else:  # float16: the compiled loss takes float32 and float64
        backend = _backend._reference_module()
    loss = backend.softmax_cross_entropy(logits, y, grad, _threads.get_num_threads())
    if w is None:
        return loss, grad
    # The kernel gives the unweighted gradient; each row scales by its weight. The value
    # needs each sample's own loss, -log_softmax at its label (stable, see log_softmax).
    row_losses = -log_softmax(logits.astype(np.float64, copy=False), axis=1)[np.arange(n), y]
    grad *= w[:, None].astype(grad.dtype)
    return float(np.dot(w, row_losses)) / n, grad


def mse(
    pred: np.ndarray, target: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Mean squared error over every element, and its gradient w.r.t. ``pred``.

    Parameters
    ----------
    pred : ndarray, float32 or float64
    target : ndarray of the same shape
    sample_weight : ndarray of shape (N,), optional
        Non-negative weight of each sample (each row along the first axis).

    Returns
    -------
    loss : float
        ``mean((pred - target) ** 2)``, each sample's squared errors multiplied by its
        weight.
    grad_pred : ndarray of the shape and dtype of ``pred``
        ``2 * w[i] * (pred - target) / pred.size`` (``w = 1`` without weights).
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.dtype.kind != "f":
        raise TypeError(f"pred must be a float array, got dtype {pred.dtype}")
    if target.shape != pred.shape:
        raise ValueError(f"target must have the shape of pred {pred.shape}, got {target.shape}")
    if pred.size == 0:
        raise ValueError("cannot compute a loss over an empty batch")
    w = None if sample_weight is None else _check_sample_weight(sample_weight, pred.shape[0])
    diff = pred - target.astype(pred.dtype, copy=False)
    if w is None:
        loss = float(np.vdot(diff, diff)) / diff.size
        diff *= 2.0 / diff.size
        return loss, diff
    squares = (diff.astype(np.float64) ** 2).reshape(pred.shape[0], -1).sum(axis=1)
    loss = float(np.dot(w, squares)) / diff.size
    diff *= (2.0 * w / diff.size).astype(diff.dtype).reshape(-1, *([1] * (diff.ndim - 1)))
    return loss, diff


LOSSES: dict[str, LossFunction] = {
    "cross_entropy": softmax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mse,
}


def get_loss(loss: str | LossFunction) -> LossFunction:
    """Resolve a loss name (``'cross_entropy'``, ``'mse'``) or pass a callable through."""
    if callable(loss):
        return loss
    try:
        return LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(
            f"loss must be one of {sorted(LOSSES)} or a callable, got {loss!r}"
        ) from None
