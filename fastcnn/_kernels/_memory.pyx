"""Output arrays whose memory is reused once numpy has freed it.

Design
------
numpy lets an extension choose the allocator of the arrays it creates (NEP 49, a
``PyDataMem_Handler`` set in a context variable). ``empty`` makes its array under the
handler of ``src/output_pool.c`` and puts the previous handler back at once, so only the
arrays fastcnn's ops return use it. Each is a new, ordinary array that owns its memory:
resize, reshape in place, dtype assignment, weakrefs and pickling behave as for any
``np.empty`` result. numpy hands the memory to the handler's free when nothing can see it
any more, and the handler keeps large blocks for the next request of the same size: no
array object is ever handed out twice, and a block is reused only when no array or view
of its old contents is left.
"""

cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef extern from "src/output_pool.h":
    cnp.PyDataMem_Handler fastcnn_pool_handler
    size_t fastcnn_pool_min_bytes
    size_t fastcnn_pool_max_bytes
    void fastcnn_pool_release() nogil
    size_t fastcnn_pool_kept_bytes() nogil

from cpython.pycapsule cimport PyCapsule_New

cdef object _handler = PyCapsule_New(<void*>&fastcnn_pool_handler, "mem_handler", NULL)


def empty(tuple shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, its memory taken from (and later given back to) the pool.

    Arrays too small for the pool to keep come from numpy's own allocator, which serves
    them from the heap without page faults (and skips switching handlers).
    """
    cdef size_t nbytes = cnp.dtype(dtype).itemsize
    for n in shape:
        nbytes *= <size_t>n
    if nbytes < fastcnn_pool_min_bytes:
        return np.empty(shape, dtype)
    previous = cnp.PyDataMem_SetHandler(_handler)
    try:
        return np.empty(shape, dtype)
    finally:
        cnp.PyDataMem_SetHandler(previous)


def release() -> None:
    """Give every kept block back to the system."""
    fastcnn_pool_release()


def kept_bytes() -> int:
    """Bytes in kept blocks that no array uses."""
    return fastcnn_pool_kept_bytes()


def min_bytes() -> int:
    """The smallest block the pool keeps; smaller ones go straight back to the system."""
    return fastcnn_pool_min_bytes


def max_bytes() -> int:
    """The most bytes of free blocks the pool keeps."""
    return fastcnn_pool_max_bytes


def set_limits(size_t min_bytes, size_t max_bytes) -> None:
    """Keep blocks of at least ``min_bytes``, at most ``max_bytes`` in all (for tests)."""
    global fastcnn_pool_min_bytes, fastcnn_pool_max_bytes
    fastcnn_pool_release()
    fastcnn_pool_min_bytes = min_bytes
    fastcnn_pool_max_bytes = max_bytes
