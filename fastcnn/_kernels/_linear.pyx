"""Compiled fully connected layer, forward and backward: y = x @ W^T + b.

Design
------
One BLAS GEMM per thread, BLAS itself single-threaded. A product worth a thread team is
cut into slices of its output along the output's longer side, so each thread packs only
a slice of the larger operand and repeats the packing of the smaller one (for LeNet's
400 -> 120 layer at batch 64, slices of W's 120 rows rather than of the batch). In the
backward pass the input and weight gradients are two products of the same size, so the
team splits into two halves, one per product, and needs no reduction across threads.
Products under 2M multiply-adds (LeNet's 120 -> 84 and 84 -> 10 layers at batch 64) are
never sliced: split over 2 threads, 120 -> 84's backward took twice as long, since it
paid for waking the second core. They join the team only while it is still awake from
the last kernel (``_openmp.team_size``), each product whole on one thread, so they round
exactly as on one thread whatever the timing: the forward product on the first thread
(the others only stay awake), and in the backward pass the input and weight gradients
side by side. A classifier head then keeps the workers spinning until the next large
kernel instead of letting them fall asleep.
"""

from cython cimport floating
from cython.parallel cimport prange

from fastcnn._kernels._blas cimport Blas, gemm, load_blas
from fastcnn._kernels._openmp cimport team_released, team_size
from fastcnn._threads import blas_threads

cdef Blas BLAS

cdef enum:
    MIN_PARALLEL_MACS = 1 << 21


cdef void gemm_slice(bint trans_a, bint trans_b, int m, int p, int k,
                     const floating* a, int lda, const floating* b, int ldb,
                     floating* c, int ldc, int part, int parts) noexcept nogil:
    # C (m x p) = op(A) @ op(B), row-major, restricted to slice `part` of `parts` of C
    # along its longer side. A row slice re-reads all of B, a column slice all of A.
    cdef int length = m if m >= p else p
    cdef int size = (length + parts - 1) // parts
    cdef int start = part * size
    cdef int count = length - start if length - start < size else size
    if count <= 0:
        return
    if m >= p:  # rows of C: rows of op(A)
        a = a + start if trans_a else a + <Py_ssize_t> start * lda
        gemm(&BLAS, trans_a, trans_b, count, p, k, 1, a, lda, b, ldb, 0,
             c + <Py_ssize_t> start * ldc, ldc)
    else:  # columns of C: columns of op(B)
        b = b + <Py_ssize_t> start * ldb if trans_b else b + start
        gemm(&BLAS, trans_a, trans_b, m, count, k, 1, a, lda, b, ldb, 0, c + start, ldc)


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight, bias,
                   floating[:, ::1] out, int n_threads):
    """See BACKEND_API.md. Writes every element of ``out``."""
    load_blas(&BLAS)
    cdef int n = x.shape[0], n_in = x.shape[1], n_out = weight.shape[0]
    cdef Py_ssize_t macs = <Py_ssize_t> n * n_in * n_out
    cdef int threads = team_size(macs, MIN_PARALLEL_MACS, n_threads)
    cdef int parts = threads if macs >= MIN_PARALLEL_MACS else 1  # small: never sliced
    cdef int t
    cdef Py_ssize_t i, j
    cdef const floating[::1] bias_view
    cdef floating* row
    with blas_threads(1):
        with nogil:
            for t in prange(threads, num_threads=threads, schedule="static"):
                if t < parts:
                    gemm_slice(False, True, n, n_out, n_in, &x[0, 0], n_in,
                               &weight[0, 0], n_in, &out[0, 0], n_out, t, parts)
            team_released(threads)
    if bias is not None:
        bias_view = bias
        with nogil:
            for i in range(n):
                row = &out[i, 0]
                for j in range(n_out):
                    row[j] += bias_view[j]


def linear_backward(const floating[:, ::1] grad_out, const floating[:, ::1] x,
                    const floating[:, ::1] weight, grad_x, grad_weight, grad_bias,
                    int n_threads):
    """See BACKEND_API.md. Overwrites each gradient buffer that is not None."""
    load_blas(&BLAS)
    cdef int n = x.shape[0], n_in = x.shape[1], n_out = weight.shape[0]
    cdef Py_ssize_t macs = <Py_ssize_t> n * n_in * n_out
    cdef int threads = team_size(macs, MIN_PARALLEL_MACS, n_threads)
    cdef int parts_x, parts_w, t
    cdef Py_ssize_t i, j
    cdef const floating* g = &grad_out[0, 0]
    cdef const floating* w = &weight[0, 0]
    cdef const floating* xp = &x[0, 0]
    cdef floating* gx = NULL
    cdef floating* gw = NULL
    cdef floating[:, ::1] view
    cdef floating[::1] gb
    if grad_x is not None:
        view = grad_x
        gx = &view[0, 0]
    if grad_weight is not None:
        view = grad_weight
        gw = &view[0, 0]
    if macs < MIN_PARALLEL_MACS:  # each product whole, side by side on a warm team
        parts_x = 1 if gx != NULL else 0
        parts_w = 1 if gw != NULL else 0
    elif gx != NULL and gw != NULL and threads > 1:
        parts_x = threads // 2  # the two products are the same size: half the team on each
        parts_w = threads - parts_x
    else:  # each product over the whole team (on one thread: one after the other)
        parts_x = threads if gx != NULL else 0
        parts_w = threads if gw != NULL else 0
    with blas_threads(1):
        with nogil:
            for t in prange(parts_x + parts_w, num_threads=threads, schedule="static"):
                if t < parts_x:
                    # grad_x (n, in) = grad_out (n, out) @ W (out, in)
                    gemm_slice(False, False, n, n_in, n_out, g, n_out, w, n_in,
                               gx, n_in, t, parts_x)
                else:
                    # grad_W (out, in) = grad_out^T (out, n) @ x (n, in)
                    gemm_slice(True, False, n_out, n_in, n, g, n_out, xp, n_in,
                               gw, n_in, t - parts_x, parts_w)
            team_released(threads)
    if grad_bias is not None:
        gb = grad_bias
        with nogil:
            for j in range(n_out):
                gb[j] = 0
            for i in range(n):
                for j in range(n_out):
                    gb[j] += grad_out[i, j]
