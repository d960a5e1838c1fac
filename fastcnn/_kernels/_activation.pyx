"""Compiled element-wise activations, forward and backward: ReLU, tanh, sigmoid.

Design
------
Every function works on flat, C-contiguous buffers: the caller passes ``x.reshape(-1)``.
The array is cut into one contiguous block per thread; below ``MIN_PARALLEL`` elements
one thread does it all, since waking a team costs more than the work, unless the team is
still awake from the last kernel (``_openmp.team_size``). The loops are
simple enough for the C compiler to vectorize. float32 tanh and sigmoid (float32 and
float64) run on the branch-free, runtime-dispatched AVX-512/AVX2 versions in
``src/activation.c``, split over the threads and bit-identical on every instruction set (on
one thread tanh is about 1.4x slower than numpy's own float32 tanh on an AVX-512 CPU,
which needs the GIL and one thread). float64 tanh uses numpy's own (SIMD) tanh, on one
thread: libm's ``tanh`` is over ten times slower, too slow even split over threads.

The formulas are the numpy backend's, so both backends agree on special values: NaN
propagates through every forward; ReLU's gradient is a select (0 where the output is
<= 0, the incoming gradient elsewhere, as PyTorch); sigmoid is ``e / (1 + e)`` for
x < 0 and ``1 / (1 + e)`` otherwise, with ``e = exp(-|x|)``: it never overflows and
keeps its relative precision where the output is small.
"""

import numpy as np

from cython cimport floating
from cython.parallel cimport prange

from fastcnn._kernels._openmp cimport team_released, team_size

cdef extern from "src/activation.h":
    void fastcnn_tanhf_array(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void fastcnn_sigmoidf_array(const float* x, float* y, Py_ssize_t n) noexcept nogil
    void fastcnn_sigmoid_array(const double* x, double* y, Py_ssize_t n) noexcept nogil

cdef enum:
    MIN_PARALLEL = 1 << 15


cdef enum Op:
    RELU
    TANH
    SIGMOID

cdef void forward_block(Op op, const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    # float64 tanh never gets here (see the module docstring).
    cdef Py_ssize_t i
    if op == RELU:
        for i in range(n):
            # NaN > 0 is false; the second test keeps NaN, as np.maximum does.
            y[i] = x[i] if (x[i] > 0 or x[i] != x[i]) else 0
    elif floating is float:
        if op == TANH:
            fastcnn_tanhf_array(x, y, n)
        else:
            fastcnn_sigmoidf_array(x, y, n)
    elif op == SIGMOID:
        fastcnn_sigmoid_array(x, y, n)


cdef void backward_block(Op op, const floating* g, const floating* y, floating* gx,
                         Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if op == RELU:
        for i in range(n):
            gx[i] = 0 if y[i] <= 0 else g[i]
    elif op == TANH:
        for i in range(n):
            gx[i] = g[i] * (1 - y[i] * y[i])
    else:
        for i in range(n):
            gx[i] = g[i] * (y[i] * (1 - y[i]))


cdef void run(Op op, const floating* a, const floating* y, floating* out, Py_ssize_t n,
              int n_threads) noexcept nogil:
    # One contiguous block per thread. Forward when y is NULL (a is x), else backward (a
    # is grad_out, y the forward's output).
    cdef int threads = team_size(n, MIN_PARALLEL, n_threads)
    cdef Py_ssize_t block = (n + threads - 1) // threads, t, lo, hi
    for t in prange(threads, num_threads=threads, schedule="static"):
        lo = t * block
        hi = n if n < lo + block else lo + block
        if lo < hi:
            if y == NULL:
                forward_block(op, a + lo, out + lo, hi - lo)
            else:
                backward_block(op, a + lo, y + lo, out + lo, hi - lo)
    team_released(threads)


def relu_forward(const floating[::1] x, floating[::1] out, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    if x.shape[0]:
        with nogil:
            run(RELU, &x[0], NULL, &out[0], x.shape[0], n_threads)


def relu_backward(const floating[::1] grad_out, const floating[::1] y,
                  floating[::1] grad_x, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``grad_x``."""
    if y.shape[0]:
        with nogil:
            run(RELU, &grad_out[0], &y[0], &grad_x[0], y.shape[0], n_threads)


def tanh_forward(const floating[::1] x, floating[::1] out, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    if floating is double:
        np.tanh(x, out=np.asarray(out))
    elif x.shape[0]:
        with nogil:
            run(TANH, &x[0], NULL, &out[0], x.shape[0], n_threads)


def tanh_backward(const floating[::1] grad_out, const floating[::1] y,
                  floating[::1] grad_x, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``grad_x``."""
    if y.shape[0]:
        with nogil:
            run(TANH, &grad_out[0], &y[0], &grad_x[0], y.shape[0], n_threads)


def sigmoid_forward(const floating[::1] x, floating[::1] out, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    if x.shape[0]:
        with nogil:
            run(SIGMOID, &x[0], NULL, &out[0], x.shape[0], n_threads)


def sigmoid_backward(const floating[::1] grad_out, const floating[::1] y,
                     floating[::1] grad_x, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``grad_x``."""
    if y.shape[0]:
        with nogil:
            run(SIGMOID, &grad_out[0], &y[0], &grad_x[0], y.shape[0], n_threads)
