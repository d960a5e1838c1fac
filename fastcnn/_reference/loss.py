"""The softmax cross-entropy and its gradient."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------
# Loss


def softmax_cross_entropy(
    logits: np.ndarray, y: np.ndarray, grad: np.ndarray, n_threads: int
) -> float:
    """Mean softmax cross-entropy of the rows; ``grad`` gets its gradient."""
    n = logits.shape[0]
    # A private copy, checked and used alike: numpy indexes without the GIL, so another
    # thread could change the caller's labels in between.
    y = np.array(y, dtype=np.intp)
    bad = np.count_nonzero((y < 0) | (y >= logits.shape[1]))
    if bad:
        raise ValueError(
            f"{bad} label(s) of y are not class indices in [0, {logits.shape[1]}): y changed "
            "while the loss read it (another thread wrote it)"
        )
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=grad)
    sum_exp = grad.sum(axis=1)
    # Per-sample loss: log(sum exp(shifted)) - shifted[y]; shifted[y] <= 0, log(sum) >= 0.
    loss = float(np.mean(np.log(sum_exp) - shifted[rows, y]))
    grad /= sum_exp[:, None]
    grad[rows, y] -= 1
    grad /= n
    return loss
