"""Compiled fully connected layer, forward and backward: y = x @ W^T + b.

Design
------
One BLAS GEMM per block of rows. BLAS runs single-threaded; when the product is large
enough to be worth a thread team, OpenMP splits it into independent row blocks (rows of
x for the forward and input-gradient products, rows of W for the weight gradient), so no
reduction across threads is needed. Small products, like the dense layers of LeNet at
batch 64, run on one thread: they take tens of microseconds, less than waking a team.
"""

from cython cimport floating
from cython.parallel cimport prange

from fastcnn._kernels._blas cimport Blas, gemm, load_blas
from fastcnn._threads import blas_threads

cdef Blas BLAS

cdef enum:
    MIN_PARALLEL_MACS = 1 << 22


cdef int team_size(Py_ssize_t macs, Py_ssize_t rows, int n_threads) noexcept:
    if macs < MIN_PARALLEL_MACS or rows < 2:
        return 1
    return <int> (rows if rows < n_threads else n_threads)


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight, bias,
                   floating[:, ::1] out, int n_threads):
    """See BACKEND_API.md. Writes every element of ``out``."""
    load_blas(&BLAS)
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = weight.shape[0]
    cdef int threads = team_size(n * n_in * n_out, n, n_threads)
    cdef Py_ssize_t block = (n + threads - 1) // threads, t, r0, rows, i, j
    cdef const floating[::1] bias_view
    cdef floating* row
    with blas_threads(1):
        with nogil:
            for t in prange(threads, num_threads=threads, schedule="static"):
                r0 = t * block
                rows = n - r0 if n - r0 < block else block
                if rows > 0:
                    gemm(&BLAS, False, True, <int> rows, <int> n_out, <int> n_in,
                         1, &x[r0, 0], <int> n_in, &weight[0, 0], <int> n_in,
                         0, &out[r0, 0], <int> n_out)
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
    cdef Py_ssize_t n = x.shape[0], n_in = x.shape[1], n_out = weight.shape[0]
    cdef Py_ssize_t t, r0, rows, block, i, j
    cdef int threads
    cdef floating[:, ::1] gx
    cdef floating[:, ::1] gw
    cdef floating[::1] gb
    with blas_threads(1):
        if grad_x is not None:
            gx = grad_x
            threads = team_size(n * n_in * n_out, n, n_threads)
            block = (n + threads - 1) // threads
            with nogil:
                # grad_x (n, in) = grad_out (n, out) @ W (out, in), by blocks of rows
                for t in prange(threads, num_threads=threads, schedule="static"):
                    r0 = t * block
                    rows = n - r0 if n - r0 < block else block
                    if rows > 0:
                        gemm(&BLAS, False, False, <int> rows, <int> n_in, <int> n_out,
                             1, &grad_out[r0, 0], <int> n_out, &weight[0, 0], <int> n_in,
                             0, &gx[r0, 0], <int> n_in)
        if grad_weight is not None:
            gw = grad_weight
            threads = team_size(n * n_in * n_out, n_out, n_threads)
            block = (n_out + threads - 1) // threads
            with nogil:
                # grad_W (out, in) = grad_out^T (out, n) @ x (n, in), by blocks of W's rows
                for t in prange(threads, num_threads=threads, schedule="static"):
                    r0 = t * block
                    rows = n_out - r0 if n_out - r0 < block else block
                    if rows > 0:
                        gemm(&BLAS, True, False, <int> rows, <int> n_in, <int> n,
                             1, &grad_out[0, r0], <int> n_out, &x[0, 0], <int> n_in,
                             0, &gw[r0, 0], <int> n_in)
    if grad_bias is not None:
        gb = grad_bias
        with nogil:
            for j in range(n_out):
                gb[j] = 0
            for i in range(n):
                for j in range(n_out):
                    gb[j] += grad_out[i, j]
