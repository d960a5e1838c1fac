"""Compiled element-wise ops with a parameter: leaky ReLU, forward and backward.

Design
------
As in ``_activation.pyx``: flat, C-contiguous buffers (the caller passes
``x.reshape(-1)``) cut into one contiguous block per thread, one thread below
``MIN_PARALLEL`` elements unless the team is still awake (``_openmp.team_size``). The
slope is rounded to the array's dtype first, as numpy rounds a Python float, so both
backends give the same bits. NaN fails ``x > 0``: it takes the slope branch and stays NaN.
"""

from cython cimport floating
from cython.parallel cimport prange

from fastcnn._kernels._openmp cimport team_released, team_size

cdef enum:
    MIN_PARALLEL = 1 << 15


cdef void leaky_block(const floating* a, const floating* x, floating* out, Py_ssize_t n,
                      floating slope) noexcept nogil:
    # out = a where x > 0, else a * slope (forward: a is x; backward: a is grad_out).
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = a[i] if x[i] > 0 else a[i] * slope


cdef void run(const floating* a, const floating* x, floating* out, Py_ssize_t n,
              floating slope, int n_threads) noexcept nogil:
    cdef int threads = team_size(n, MIN_PARALLEL, n_threads)
    cdef Py_ssize_t block = (n + threads - 1) // threads, t, lo, hi
    for t in prange(threads, num_threads=threads, schedule="static"):
        lo = t * block
        hi = n if n < lo + block else lo + block
        if lo < hi:
            leaky_block(a + lo, x + lo, out + lo, hi - lo, slope)
    team_released(threads)


def leaky_relu_forward(const floating[::1] x, floating[::1] out, double negative_slope,
                       int n_threads):
    """Write ``x`` where ``x > 0``, else ``negative_slope * x``, into ``out``."""
    if x.shape[0]:
        with nogil:
            run(&x[0], &x[0], &out[0], x.shape[0], <floating> negative_slope, n_threads)


def leaky_relu_backward(const floating[::1] grad_out, const floating[::1] x,
                        floating[::1] grad_x, double negative_slope, int n_threads):
    """Write ``grad_out`` where ``x > 0``, else ``negative_slope * grad_out``, into ``grad_x``."""
    if x.shape[0]:
        with nogil:
            run(&grad_out[0], &x[0], &grad_x[0], x.shape[0], <floating> negative_slope,
                n_threads)
