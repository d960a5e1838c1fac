"""Recycled output arrays for the ops in :mod:`fastcnn.functional`.

Why: glibc serves every large request (here from about 1 MB: LeNet-5's first activation
at batch 64) with a fresh ``mmap`` and unmaps it on ``free``, so each new output array
page-faults on first touch. In a training step that allocates the same few shapes over
and over, those faults cost more than the arithmetic of the layers that cause them
(measured: a conv and a tanh on a 64x6x28x28 batch took 1.2 ms together, 0.27 ms with
the memory kept), and they are serial work that a second thread cannot share.

How: :func:`empty` keeps a reference to the large arrays it hands out, a few per shape
and dtype, and hands one out again only when that reference is the last one left: no
array, view or other object outside this module can still see it (views keep their
base alive, so they count). A recycled array is then indistinguishable from a new one,
except that its memory is already mapped. :func:`empty_cache` (``fastcnn.empty_cache``)
lets go of them all.
"""

from __future__ import annotations

import math
import sys
import sysconfig
import threading

import numpy as np

# Small arrays come from malloc's heap without page faults; recycling them gains nothing.
MIN_BYTES = 1 << 16
MAX_PER_KEY = 8
MAX_TOTAL_BYTES = 64 << 20

# sys.getrefcount is not exact on a free-threaded build: recycle nothing there.
_ENABLED = not sysconfig.get_config_var("Py_GIL_DISABLED")
_lock = threading.Lock()
_kept: dict[tuple, list[np.ndarray]] = {}
_kept_bytes = 0


def _count_in_loop() -> int:
    # What getrefcount reports, in the loop of empty(), for an array only the list holds.
    # Measured rather than assumed: whether a loop variable or getrefcount's argument
    # holds a reference of its own differs between Python versions.
    arrays = [np.empty(0)]
    for array in arrays:
        return sys.getrefcount(array)
    raise AssertionError  # unreachable


def _count_indexed() -> int:
    # The same for the indexed access of _drop_unused.
    arrays = [np.empty(0)]
    return sys.getrefcount(arrays[0])


_FREE_IN_LOOP = _count_in_loop()
_FREE_INDEXED = _count_indexed()


def empty(shape: int | tuple[int, ...], dtype) -> np.ndarray:
    """A C-contiguous array like ``np.empty(shape, dtype)``; contents are undefined."""
    global _kept_bytes
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES or not _ENABLED:
        return np.empty(shape, dtype)
    key = (shape, dtype)
    with _lock:
        arrays = _kept.setdefault(key, [])
        for array in arrays:
            if sys.getrefcount(array) == _FREE_IN_LOOP:
                return array
        array = np.empty(shape, dtype)
        if len(arrays) < MAX_PER_KEY and nbytes <= MAX_TOTAL_BYTES:
            if _kept_bytes + nbytes > MAX_TOTAL_BYTES:
                _drop_unused(_kept_bytes + nbytes - MAX_TOTAL_BYTES)
            if _kept_bytes + nbytes <= MAX_TOTAL_BYTES:
                arrays.append(array)
                _kept_bytes += nbytes
        return array


def _drop_unused(nbytes: int) -> None:
    """Forget kept arrays no one else holds, oldest shapes first, until ``nbytes`` are
    freed or none is left. Called with the lock held."""
    global _kept_bytes
    for key in list(_kept):
        arrays = _kept[key]
        i = 0
        while i < len(arrays) and nbytes > 0:
            if sys.getrefcount(arrays[i]) == _FREE_INDEXED:
                size = arrays.pop(i).nbytes
                _kept_bytes -= size
                nbytes -= size
            else:
                i += 1
        if not arrays:
            del _kept[key]
        if nbytes <= 0:
            return


def empty_cache() -> None:
    """Release the output arrays fastcnn keeps for reuse.

    fastcnn's ops recycle their large output arrays (at most 64 MB in all) once nothing
    else refers to them, and the compiled convolutions and dense layers keep their
    largest scratch block (at most 64 MB each) for the next call, which saves the page
    faults of fresh memory in every training step. This lets go of all of them: memory
    that no array of yours still uses goes back to the system.
    """
    global _kept_bytes
    with _lock:
        _kept.clear()
        _kept_bytes = 0
    for name in ("fastcnn._kernels._conv", "fastcnn._kernels._linear"):
        kernels = sys.modules.get(name)  # never imported: nothing kept
        if kernels is not None:
            kernels._release_scratch()


def kept_bytes() -> int:
    """Bytes of the arrays currently kept for reuse (in use or not)."""
    return _kept_bytes
