"""The optimizer updates: every parameter array of a model in one call, in place."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------
# Optimizer updates (every parameter array of a model in one call, in place)


def sgd_update(
    params: list[np.ndarray], grads: list[np.ndarray],
    momentum_buffers: list[np.ndarray] | None, lr: float, momentum: float,
    weight_decay: float, nesterov: bool, first: bool, n_threads: int,
) -> None:  # fmt: skip
    """SGD as ``torch.optim.SGD`` (dampening 0), one parameter array at a time."""
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        d = grad
        if weight_decay:
            d = param * weight_decay
            d += grad
        if momentum:
            buf = momentum_buffers[i]  # type: ignore[index]
            if first:
                buf[...] = d
            else:
                buf *= momentum
                buf += d
            if nesterov:
                param -= d * lr
                param -= buf * (lr * momentum)
                continue
            d = buf
        param -= d * lr


def adam_update(
    params: list[np.ndarray], grads: list[np.ndarray], exp_avgs: list[np.ndarray],
    exp_avg_sqs: list[np.ndarray], beta1: float, beta2: float, eps: float,
    weight_decay: float, step_size: float, denom_scale: float, n_threads: int,
) -> None:  # fmt: skip
    """Adam as ``torch.optim.Adam`` (L2 weight decay), one parameter array at a time."""
    for param, grad, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        g = grad
        if weight_decay:
            g = param * weight_decay
            g += grad
        m *= beta1
        m += g * (1 - beta1)
        v *= beta2
        v += (g * g) * (1 - beta2)
        denom = np.sqrt(v)
        denom /= denom_scale
        denom += eps
        param -= (m / denom) * step_size
