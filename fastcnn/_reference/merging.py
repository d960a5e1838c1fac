"""Merging ops: the element-wise sum of several arrays, concatenation and its split.

The caller views every array as ``(outer, C_i, inner)`` around the concatenation axis,
so one rule covers any axis: the arrays are joined (or the gradient is cut) along axis 1.
"""

from __future__ import annotations

import numpy as np


def add_n(arrays: list[np.ndarray], out: np.ndarray, n_threads: int, /) -> None:
    """Write the sum of ``arrays`` (two or more, one shape), left to right, into out."""
    np.add(arrays[0], arrays[1], out=out)
    for array in arrays[2:]:
        np.add(out, array, out=out)


def concatenate(arrays: list[np.ndarray], out: np.ndarray, n_threads: int, /) -> None:
    """Write the 3-D ``arrays`` (outer, C_i, inner), one after another on axis 1, into out."""
    np.concatenate(arrays, axis=1, out=out)


def split(grad: np.ndarray, outs: list[np.ndarray], n_threads: int, /) -> None:
    """Cut the 3-D ``grad`` along axis 1 into ``outs`` (outer, C_i, inner), in order."""
    lo = 0
    for out in outs:
        hi = lo + out.shape[1]
        out[...] = grad[:, lo:hi]
        lo = hi
