"""Batch normalization over (N, C, L) arrays, per channel."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------
# Batch normalization over (N, C, L) arrays, per channel


def batch_norm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, running_mean: np.ndarray | None,
    running_var: np.ndarray | None, out: np.ndarray, mean: np.ndarray, inv_std: np.ndarray,
    training: bool, momentum: float, eps: float, n_threads: int,
) -> None:  # fmt: skip
    """Normalize each channel with the batch's statistics (training) or the running ones."""
    if not training:
        assert running_mean is not None and running_var is not None
        mean[...] = running_mean
        inv_std[...] = 1.0 / np.sqrt(running_var + x.dtype.type(eps))
        np.multiply(x, (weight * inv_std)[:, None], out=out)
        out += (bias - running_mean * weight * inv_std)[:, None]
        return
    count = x.shape[0] * x.shape[2]
    mean[...] = x.mean(axis=(0, 2))
    xhat = x - mean[:, None]
    var = np.einsum("ncl,ncl->c", xhat, xhat) / x.dtype.type(count)  # biased, to normalize
    inv_std[...] = 1.0 / np.sqrt(var + x.dtype.type(eps))
    xhat *= inv_std[:, None]
    np.multiply(xhat, weight[:, None], out=out)
    out += bias[:, None]
    m = momentum  # a Python float, rounded as numpy rounds it in each in-place update
    if running_mean is not None:
        running_mean *= 1 - m
        running_mean += m * mean
    if running_var is not None:
        running_var *= 1 - m
        running_var += (m * count / (count - 1)) * var


def batch_norm_backward(
    grad_out: np.ndarray, x: np.ndarray, weight: np.ndarray, mean: np.ndarray,
    inv_std: np.ndarray, grad_x: np.ndarray, grad_weight: np.ndarray, grad_bias: np.ndarray,
    training: bool, n_threads: int,
) -> None:  # fmt: skip
    """Gradients of :func:`batch_norm_forward` from the statistics it used."""
    xhat = x - mean[:, None]
    xhat *= inv_std[:, None]
    np.sum(grad_out, axis=(0, 2), out=grad_bias)
    np.einsum("ncl,ncl->c", grad_out, xhat, out=grad_weight)
    scale = (weight * inv_std)[:, None]
    if not training:  # the statistics are constants: a per-channel affine map
        np.multiply(grad_out, scale, out=grad_x)
        return
    # dx = weight * inv_std * (g - mean(g) - xhat * mean(g * xhat)), per channel.
    count = x.dtype.type(x.shape[0] * x.shape[2])
    np.multiply(xhat, (-grad_weight / count)[:, None], out=grad_x)
    grad_x += grad_out
    grad_x -= (grad_bias / count)[:, None]
    grad_x *= scale
