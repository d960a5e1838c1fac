"""Compiled 2-D padding with a mode (zeros, reflect, replicate, circular), both ways.

Design
------
Every mode is a gather through two index maps that the caller builds once per call:
``rows[i]`` is the input row that output row ``i`` copies and ``cols[j]`` the input
column, -1 where the output is zero padding. So one kernel serves every mode, and the
mode's arithmetic lives in one place (``fastcnn.functional.padding``). The maps come from
fastcnn itself, never from a user, and hold only -1 or in-range indices.

Every (n, c) plane is independent: one OpenMP ``prange`` over the N*C planes. Backward
zeroes the input-gradient plane and adds each output gradient at its source, so pixels
that several outputs copy (reflect, replicate, circular) accumulate; the plane belongs
to one thread, so no atomics.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastcnn._kernels._openmp cimport team_released, team_size

cdef enum:
    # Below this many output elements a call runs on one thread (see _openmp.team_size).
    MIN_PARALLEL_ELEMENTS = 1 << 15


cdef void gather_plane(const floating* x, floating* out, const long long* rows,
                       const long long* cols, Py_ssize_t w, Py_ssize_t h_out,
                       Py_ssize_t w_out) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef const floating* src
    for i in range(h_out):
        if rows[i] < 0:
            memset(out + i * w_out, 0, w_out * sizeof(floating))
            continue
        src = x + rows[i] * w
        for j in range(w_out):
            out[i * w_out + j] = src[cols[j]] if cols[j] >= 0 else 0


cdef void scatter_plane(const floating* go, floating* gx, const long long* rows,
                        const long long* cols, Py_ssize_t h, Py_ssize_t w,
                        Py_ssize_t h_out, Py_ssize_t w_out) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating* dst
    memset(gx, 0, h * w * sizeof(floating))
    for i in range(h_out):
        if rows[i] < 0:
            continue
        dst = gx + rows[i] * w
        for j in range(w_out):
            if cols[j] >= 0:
                dst[cols[j]] += go[i * w_out + j]


def pad2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                  const long long[::1] rows, const long long[::1] cols, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    cdef Py_ssize_t planes = out.shape[0] * out.shape[1], p
    cdef Py_ssize_t h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t h_out = out.shape[2], w_out = out.shape[3]
    if planes * h_out * w_out == 0:
        return
    cdef const floating* x_ptr = &x[0, 0, 0, 0] if h * w > 0 else NULL
    cdef floating* out_ptr = &out[0, 0, 0, 0]
    cdef const long long* rows_ptr = &rows[0]
    cdef const long long* cols_ptr = &cols[0]
    cdef int threads = team_size(planes * h_out * w_out, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            gather_plane(x_ptr + p * h * w, out_ptr + p * h_out * w_out, rows_ptr, cols_ptr,
                         w, h_out, w_out)
        team_released(threads)


def pad2d_backward(const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_x,
                   const long long[::1] rows, const long long[::1] cols, int n_threads):
    """See fastcnn._backend.Backend: overwrites every element of ``grad_x``."""
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1], p
    cdef Py_ssize_t h = grad_x.shape[2], w = grad_x.shape[3]
    cdef Py_ssize_t h_out = grad_out.shape[2], w_out = grad_out.shape[3]
    if planes * h * w == 0:
        return
    if h_out * w_out == 0:  # nothing copies any pixel
        grad_x[:, :, :, :] = 0
        return
    cdef const floating* go_ptr = &grad_out[0, 0, 0, 0]
    cdef floating* gx_ptr = &grad_x[0, 0, 0, 0]
    cdef const long long* rows_ptr = &rows[0]
    cdef const long long* cols_ptr = &cols[0]
    cdef int threads = team_size(planes * h_out * w_out, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            scatter_plane(go_ptr + p * h_out * w_out, gx_ptr + p * h * w, rows_ptr, cols_ptr,
                          h, w, h_out, w_out)
        team_released(threads)
