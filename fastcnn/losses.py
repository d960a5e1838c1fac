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

import numpy as np

import fastcnn.functional as F
from fastcnn._validation import FLOAT_DTYPES, check_sample_weight

# model.py and estimator.py import this name; it lives in _validation now.

__all__ = ["LOSSES", "get_loss", "log_softmax", "mse", "softmax", "softmax_cross_entropy"]

LossFunction = Callable[..., tuple[float, np.ndarray]]


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log(softmax(logits))`` computed stably (log-sum-exp with the max subtracted).

    Float32 and float64 logits go through :func:`fastcnn.functional.log_softmax`.
    """
    logits = np.asarray(logits)
    if logits.dtype in FLOAT_DTYPES and logits.ndim:
        return F.log_softmax(logits, axis)
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
    if logits.dtype in FLOAT_DTYPES and logits.ndim:
        return F.softmax(logits, axis)  # the op, compiled where the backend is
    # exp of (logits - max) is in (0, 1]: nothing overflows, and the max term is exactly 1.
    e: np.ndarray = np.exp(logits - logits.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of integer labels, and its gradient w.r.t. the logits.

    :func:`fastcnn.functional.softmax_cross_entropy` under the loss's name: the row
    maximum is subtracted first, so logits of any finite magnitude are exact.

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
    return F.softmax_cross_entropy(logits, y, sample_weight)


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
    w = None if sample_weight is None else check_sample_weight(sample_weight, pred.shape[0])
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
