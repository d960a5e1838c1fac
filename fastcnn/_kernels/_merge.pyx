"""Compiled merging ops of graph models: the sum of several arrays, concatenation, split.

Design
------
Memory-bound passes over C-contiguous buffers, so the work is to touch each element
once per pass and spread the passes over the threads. ``add_n`` writes ``a0 + a1`` into
``out`` and then adds each further array in place, left to right (the numpy backend's
order, so both give the same bits); each pass is cut into one contiguous block per
thread, one thread below ``MIN_PARALLEL`` elements unless the team is still awake
(``_openmp.team_size``), as in ``_elementwise.pyx``. ``concatenate`` and ``split`` see
every array as ``(outer, C_i, inner)``: input ``i`` is, in each outer row, one
contiguous run of ``C_i * inner`` elements at a fixed offset of the output's row, so a
row is one ``memcpy`` and the rows go across the threads. The Python side loops over
the inputs only (a handful), never over samples or elements.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy

from fastcnn._kernels._openmp cimport team_released, team_size

cdef enum:
    MIN_PARALLEL = 1 << 15


cdef void add_block(const floating* a, const floating* b, floating* out,
                    Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = a[i] + b[i]


cdef void add_pass(const floating* a, const floating* b, floating* out, Py_ssize_t n,
                   int n_threads) noexcept nogil:
    cdef int threads = team_size(n, MIN_PARALLEL, n_threads)
    cdef Py_ssize_t block = (n + threads - 1) // threads, t, lo, hi
    for t in prange(threads, num_threads=threads, schedule="static"):
        lo = t * block
        hi = n if n < lo + block else lo + block
        if lo < hi:
            add_block(a + lo, b + lo, out + lo, hi - lo)
    team_released(threads)


def add_n(list arrays, floating[::1] out, int n_threads):
    """Write the sum of the flat ``arrays`` (two or more), left to right, into ``out``."""
    cdef const floating[::1] a = arrays[0]
    cdef const floating[::1] b = arrays[1]
    cdef Py_ssize_t n = out.shape[0], k
    if n == 0:
        return
    with nogil:
        add_pass(&a[0], &b[0], &out[0], n, n_threads)
    for k in range(2, len(arrays)):
        b = arrays[k]
        with nogil:
            add_pass(&out[0], &b[0], &out[0], n, n_threads)


cdef void copy_rows(const floating* src, Py_ssize_t src_row, floating* dst,
                    Py_ssize_t dst_row, Py_ssize_t run, Py_ssize_t rows,
                    int n_threads) noexcept nogil:
    # Row r: run elements from src + r * src_row to dst + r * dst_row.
    cdef int threads = team_size(rows * run, MIN_PARALLEL, n_threads)
    cdef Py_ssize_t r
    for r in prange(rows, num_threads=threads, schedule="static"):
        memcpy(dst + r * dst_row, src + r * src_row, run * sizeof(floating))
    team_released(threads)


def concatenate(list arrays, floating[:, :, ::1] out, int n_threads):
    """Write the 3-D ``arrays`` (outer, C_i, inner) one after another on axis 1 into out."""
    cdef const floating[:, :, ::1] src
    cdef Py_ssize_t rows = out.shape[0], inner = out.shape[2]
    cdef Py_ssize_t out_row = out.shape[1] * inner, offset = 0, run
    for array in arrays:
        src = array
        run = src.shape[1] * inner
        if rows and run:
            with nogil:
                copy_rows(&src[0, 0, 0], run, &out[0, 0, 0] + offset, out_row, run, rows,
                          n_threads)
        offset += run


def split(const floating[:, :, ::1] grad, list outs, int n_threads):
    """Cut the 3-D ``grad`` on axis 1 into ``outs`` (outer, C_i, inner), in order."""
    cdef floating[:, :, ::1] dst
    cdef Py_ssize_t rows = grad.shape[0], inner = grad.shape[2]
    cdef Py_ssize_t grad_row = grad.shape[1] * inner, offset = 0, run
    for array in outs:
        dst = array
        run = dst.shape[1] * inner
        if rows and run:
            with nogil:
                copy_rows(&grad[0, 0, 0] + offset, grad_row, &dst[0, 0, 0], run, run, rows,
                          n_threads)
        offset += run
