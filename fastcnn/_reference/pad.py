"""Padding modes: gather an image through per-axis index maps, and scatter back."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]


def pad2d_forward(
    x: FloatArray, out: FloatArray, rows: NDArray[np.int64], cols: NDArray[np.int64],
    n_threads: int,
) -> None:  # fmt: skip
    """Write ``x[..., rows[i], cols[j]]`` into ``out[..., i, j]``; 0 where either is -1."""
    valid_r, valid_c = rows >= 0, cols >= 0
    out.fill(0)
    picked = x[:, :, rows[valid_r]][:, :, :, cols[valid_c]]
    out[:, :, np.flatnonzero(valid_r)[:, None], np.flatnonzero(valid_c)] = picked


def pad2d_backward(
    grad_out: FloatArray, grad_x: FloatArray, rows: NDArray[np.int64], cols: NDArray[np.int64],
    n_threads: int,
) -> None:  # fmt: skip
    """Overwrite grad_x with the sum of ``grad_out[..., i, j]`` at each ``(rows[i], cols[j])``."""
    valid_r, valid_c = rows >= 0, cols >= 0
    g = grad_out[:, :, valid_r][:, :, :, valid_c]
    by_row = np.zeros(grad_x.shape[:3] + (g.shape[3],), dtype=grad_x.dtype)
    # Scatter along one axis at a time, each moved to the front (views: writes land).
    np.add.at(by_row.transpose(2, 0, 1, 3), rows[valid_r], g.transpose(2, 0, 1, 3))
    grad_x.fill(0)
    np.add.at(grad_x.transpose(3, 0, 1, 2), cols[valid_c], by_row.transpose(3, 0, 1, 2))
