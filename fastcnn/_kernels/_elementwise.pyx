"""Compiled element-wise ops whose gradient needs the input, and the row softmax.

Leaky ReLU, GELU (exact and tanh), SiLU, forward and backward; softmax and log-softmax
over the last axis of an (M, C) array, forward and backward.

Design
------
As in ``_activation.pyx``: flat, C-contiguous buffers (the caller passes
``x.reshape(-1)``) cut into one contiguous block per thread, one thread below
``MIN_PARALLEL`` elements unless the team is still awake (``_openmp.team_size``). The
gradients take the forward's *input* ``x`` (GELU's and SiLU's outputs do not give it
back). Formulas are the numpy backend's, evaluated in the arrays' dtype with libm's float
or double functions (``erfcf``/``erfc``, ``expf``/``exp``). Both GELUs avoid the
cancellation of ``1 + erf`` and ``1 + tanh`` for negative x: the normal CDF is
``erfc(-x / sqrt(2)) / 2`` and the tanh form ``x * sigmoid(2 z)``, equal to
``x / 2 * (1 + tanh(z))``.

Leaky ReLU: the slope is rounded to the array's dtype first, as numpy rounds a Python
float, so both backends give the same bits. NaN fails ``x > 0``: it takes the slope
branch and stays NaN. SiLU's sigmoid is ``e / (1 + e)`` for x < 0, ``1 / (1 + e)``
else, ``e = exp(-|x|)``: nothing overflows.

Softmax: rows of the (M, C) array go to the threads in static blocks (the caller moves
any other axis last). Each row subtracts its maximum before ``exp``, so nothing
overflows and the largest term is exactly 1; the sums are accumulated in double. A NaN
in a row makes the whole row NaN, as numpy's ``max`` does.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport erfc, erfcf, exp, expf, log

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


# ---------------------------------------------------------------------------------------
# GELU and SiLU: the gradient takes the input x.

cdef enum Op:
    GELU
    GELU_TANH
    SILU

# sqrt(1/2), 1/sqrt(2*pi), sqrt(2/pi) and the cubic coefficient of GELU's tanh form.
cdef double SQRT_HALF = 0.70710678118654752440
cdef double INV_SQRT_2PI = 0.39894228040143267794
cdef double SQRT_2_PI = 0.79788456080286535588
cdef double GELU_CUBIC = 0.044715


cdef inline floating erfc_t(floating v) noexcept nogil:
    if floating is float:
        return erfcf(v)
    else:
        return erfc(v)


cdef inline floating exp_t(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating sigmoid_t(floating v) noexcept nogil:
    cdef floating e = exp_t(-v if v >= 0 else v)
    return e / (1 + e) if v < 0 else 1 / (1 + e)


cdef void unary_block(Op op, const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    cdef floating c_half = <floating> SQRT_HALF, c_pi = <floating> SQRT_2_PI
    cdef floating c_cubic = <floating> GELU_CUBIC
    for i in range(n):
        v = x[i]
        if op == GELU:
            # Phi(x) = erfc(-x / sqrt(2)) / 2: no cancellation, unlike (1 + erf) / 2, for x < 0.
            y[i] = (<floating> 0.5) * v * erfc_t(-v * c_half)
        elif op == GELU_TANH:
            # (1 + tanh(z)) / 2 = sigmoid(2 z): no cancellation where tanh(z) is near -1.
            y[i] = v * sigmoid_t(2 * c_pi * (v + c_cubic * v * v * v))
        else:
            y[i] = v * sigmoid_t(v)


cdef void unary_grad_block(Op op, const floating* g, const floating* x, floating* gx,
                           Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, t, s
    cdef floating c_half = <floating> SQRT_HALF, c_pi = <floating> SQRT_2_PI
    cdef floating c_cubic = <floating> GELU_CUBIC, c_pdf = <floating> INV_SQRT_2PI
    for i in range(n):
        v = x[i]
        if op == GELU:
            # Phi(x) + x * phi(x)
            t = (<floating> 0.5) * erfc_t(-v * c_half)
            gx[i] = g[i] * (t + v * c_pdf * exp_t((<floating> -0.5) * v * v))
        elif op == GELU_TANH:
            # s + x * 2 s (1 - s) * dz/dx, s = sigmoid(2 z) = (1 + tanh(z)) / 2
            s = sigmoid_t(2 * c_pi * (v + c_cubic * v * v * v))
            gx[i] = g[i] * (s + 2 * v * s * (1 - s) * c_pi * (1 + 3 * c_cubic * v * v))
        else:
            # s * (1 + x * (1 - s))
            s = sigmoid_t(v)
            gx[i] = g[i] * (s * (1 + v * (1 - s)))


cdef void run_unary(Op op, const floating* g, const floating* x, floating* out, Py_ssize_t n,
                    int n_threads) noexcept nogil:
    # Forward when g is NULL, else backward.
    cdef int threads = team_size(n, MIN_PARALLEL, n_threads)
    cdef Py_ssize_t block = (n + threads - 1) // threads, t, lo, hi
    for t in prange(threads, num_threads=threads, schedule="static"):
        lo = t * block
        hi = n if n < lo + block else lo + block
        if lo < hi:
            if g == NULL:
                unary_block(op, x + lo, out + lo, hi - lo)
            else:
                unary_grad_block(op, g + lo, x + lo, out + lo, hi - lo)
    team_released(threads)


def gelu_forward(const floating[::1] x, floating[::1] out, bint approximate_tanh,
                 int n_threads):
    """Write ``x * Phi(x)`` (or its tanh approximation) into ``out``."""
    cdef Op op = GELU_TANH if approximate_tanh else GELU
    if x.shape[0]:
        with nogil:
            run_unary(op, <const floating*> NULL, &x[0], &out[0], x.shape[0], n_threads)


def gelu_backward(const floating[::1] grad_out, const floating[::1] x, floating[::1] grad_x,
                  bint approximate_tanh, int n_threads):
    """Write ``grad_out * gelu'(x)`` into ``grad_x``."""
    cdef Op op = GELU_TANH if approximate_tanh else GELU
    if x.shape[0]:
        with nogil:
            run_unary(op, &grad_out[0], &x[0], &grad_x[0], x.shape[0], n_threads)


def silu_forward(const floating[::1] x, floating[::1] out, int n_threads):
    """Write ``x * sigmoid(x)`` into ``out``."""
    if x.shape[0]:
        with nogil:
            run_unary(SILU, <const floating*> NULL, &x[0], &out[0], x.shape[0], n_threads)


def silu_backward(const floating[::1] grad_out, const floating[::1] x, floating[::1] grad_x,
                  int n_threads):
    """Write ``grad_out * s * (1 + x * (1 - s))``, ``s = sigmoid(x)``, into ``grad_x``."""
    if x.shape[0]:
        with nogil:
            run_unary(SILU, &grad_out[0], &x[0], &grad_x[0], x.shape[0], n_threads)


# ---------------------------------------------------------------------------------------
# Softmax and log-softmax over the rows of an (M, C) array.

cdef void softmax_row(const floating* x, floating* y, Py_ssize_t c, bint log_out) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating m = x[0], e
    cdef double total = 0
    for j in range(1, c):
        if x[j] > m or x[j] != x[j]:  # a NaN, once taken, is kept: the row becomes NaN
            if m == m:
                m = x[j]
    if log_out:
        for j in range(c):
            total += exp_t(x[j] - m)
        e = <floating> log(total)
        for j in range(c):
            y[j] = (x[j] - m) - e
    else:
        for j in range(c):
            e = exp_t(x[j] - m)
            y[j] = e
            total += e
        e = <floating> (1.0 / total)
        for j in range(c):
            y[j] = y[j] * e


cdef void softmax_grad_row(const floating* g, const floating* y, floating* gx, Py_ssize_t c,
                           bint log_out) noexcept nogil:
    cdef Py_ssize_t j
    cdef double total = 0
    cdef floating s
    if log_out:
        # grad_x = g - exp(y) * sum(g)
        for j in range(c):
            total += g[j]
        s = <floating> total
        for j in range(c):
            gx[j] = g[j] - exp_t(y[j]) * s
    else:
        # grad_x = y * (g - sum(g * y))
        for j in range(c):
            total += <double> g[j] * y[j]
        s = <floating> total
        for j in range(c):
            gx[j] = y[j] * (g[j] - s)


cdef void run_rows(const floating* g, const floating* x, floating* out, Py_ssize_t m,
                   Py_ssize_t c, bint log_out, int n_threads) noexcept nogil:
    # Forward when g is NULL (x is the input), else backward (x is the forward's output).
    cdef int threads = team_size(m * c, MIN_PARALLEL, n_threads)
    cdef Py_ssize_t block = (m + threads - 1) // threads, t, lo, hi, i
    for t in prange(threads, num_threads=threads, schedule="static"):
        lo = t * block
        hi = m if m < lo + block else lo + block
        for i in range(lo, hi):
            if g == NULL:
                softmax_row(x + i * c, out + i * c, c, log_out)
            else:
                softmax_grad_row(g + i * c, x + i * c, out + i * c, c, log_out)
    team_released(threads)


def softmax_forward(const floating[:, ::1] x, floating[:, ::1] out, bint log_out,
                    int n_threads):
    """Write the softmax (or log-softmax) of each row of ``x`` into ``out``."""
    if x.shape[0] and x.shape[1]:
        with nogil:
            run_rows(<const floating*> NULL, &x[0, 0], &out[0, 0], x.shape[0], x.shape[1],
                     log_out, n_threads)


def softmax_backward(const floating[:, ::1] grad_out, const floating[:, ::1] y,
                     floating[:, ::1] grad_x, bint log_out, int n_threads):
    """Write the gradient of each row's softmax (log-softmax), given its output ``y``."""
    if y.shape[0] and y.shape[1]:
        with nogil:
            run_rows(&grad_out[0, 0], &y[0, 0], &grad_x[0, 0], y.shape[0], y.shape[1],
                     log_out, n_threads)
