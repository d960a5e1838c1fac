"""Output arrays for the ops in :mod:`fastcnn.functional`, on memory kept for reuse.

Why: glibc serves every large request (here from about 1 MB: LeNet-5's first activation
at batch 64) with a fresh ``mmap`` and unmaps it on ``free``, so each new output array
page-faults on first touch. In a training step that allocates the same few shapes over
and over, those faults cost more than the arithmetic of the layers that cause them, and
they are serial work that a second thread cannot share.

How: :func:`empty` returns a new array every time, one that owns its memory like any
``np.empty`` result, so a caller may keep, reshape, resize or retype it at will. Only the
memory is reused: the compiled extension's allocator (``_kernels/src/output_pool.c``) keeps
the blocks numpy frees, which happens once no array or view can see them any more, and
gives one back for the next request of the same size. :func:`empty_cache`
(``fastcnn.empty_cache``) lets go of them all. Without the compiled extension, ``empty``
is ``np.empty``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import DTypeLike

try:
    from fastcnn._kernels import _memory
except ImportError:  # no compiled extension: plain numpy arrays
    # mypy types the name by the import (a module); without the extension it is None.
    _memory = None  # type: ignore[assignment]


def empty(shape: int | tuple[int, ...], dtype: DTypeLike) -> np.ndarray:
    """Return a new C-contiguous array like ``np.empty(shape, dtype)`` (contents undefined)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if _memory is None:
        return np.empty(shape, dtype)
    return _memory.empty(shape, dtype)


def empty_cache() -> None:
    """Release the memory fastcnn keeps for reuse.

    fastcnn's ops take their large output arrays from memory freed by earlier outputs
    (at most 64 MB of it is kept), and the compiled convolutions and dense layers keep
    their largest scratch block (at most 64 MB each) for the next call, which saves the
    page faults of fresh memory in every training step. This lets go of all of it: the
    arrays you hold are unaffected, and the rest of that memory goes back to the system.
    """
    if _memory is not None:
        _memory.release()
    for name in ("fastcnn._kernels._conv", "fastcnn._kernels._linear"):
        kernels = sys.modules.get(name)  # never imported: nothing kept
        if kernels is not None:
            kernels._release_scratch()


def kept_bytes() -> int:
    """Bytes of freed output memory currently kept for reuse."""
    return 0 if _memory is None else _memory.kept_bytes()


def fill_zero(*arrays: np.ndarray | None) -> None:
    """Zero each array given (None skipped): the gradients of an empty batch."""
    for array in arrays:
        if array is not None:
            array.fill(0)
