"""Compiled softmax cross-entropy: the loss and its gradient in one pass over the logits.

Design
------
The loss sits between the forward and the backward pass, on one thread; when the OpenMP
team is still awake from the forward pass (``_openmp.team_size``), that thread runs it
inside a team region, which keeps the workers spinning into the backward pass instead
of leaving its first large kernel to wake them. In numpy it is
a dozen small array operations; at LeNet-5's batch of 64 x 10 logits those cost about
20 us warm and twice that right after the forward pass, when numpy's code has left the
caches. Here each row is done in registers: its maximum (NaN if any entry is NaN, as
numpy's), the exponentials of the shifted logits (libm's exp/expf), their sum, the row's
loss log(sum) - shifted[y], and the gradient (softmax - one_hot) / N. The same IEEE
operations as the numpy backend, so NaN and infinities come out where they do there;
the loss is averaged in double.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, log, logf

from fastcnn._kernels._openmp cimport team_released, team_size


cdef double row_loss(const floating* x, Py_ssize_t label, floating* grad, Py_ssize_t c,
                     floating n) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating m = x[0], total = 0, e, shifted
    for j in range(1, c):
        if x[j] > m or x[j] != x[j]:
            m = x[j]
            if m != m:
                break
    for j in range(c):
        shifted = x[j] - m
        e = expf(shifted) if floating is float else exp(shifted)
        grad[j] = e
        total += e
    for j in range(c):
        grad[j] = grad[j] / total
    grad[label] -= 1
    for j in range(c):
        grad[j] = grad[j] / n
    shifted = x[label] - m
    return <double> ((logf(total) if floating is float else log(total)) - shifted)


cdef extern from *:
    """
    /* One read of a label the caller may change at any time: the bound check and the
       indexing use the same value (a plain read may legally be repeated). */
    static inline Py_ssize_t fastcnn_read_label(const Py_ssize_t *p)
    {
        return *(const volatile Py_ssize_t *)p;
    }
    """
    Py_ssize_t read_label "fastcnn_read_label"(const Py_ssize_t* p) noexcept nogil


cdef double all_rows(const floating* x, const Py_ssize_t* y, floating* grad, Py_ssize_t n,
                     Py_ssize_t c, Py_ssize_t* bad) noexcept nogil:
    """The summed loss of the rows; a row whose label is out of range (changed by another
    thread since the caller's check) is skipped and counted in ``bad``."""
    cdef Py_ssize_t i, label
    cdef double total = 0
    for i in range(n):
        label = read_label(&y[i])
        if <size_t> label >= <size_t> c:  # negative labels wrap to huge ones
            bad[0] += 1
            continue
        total += row_loss(x + i * c, label, grad + i * c, c, <floating> n)
    return total


def softmax_cross_entropy(const floating[:, ::1] logits, const Py_ssize_t[::1] y,
                          floating[:, ::1] grad, int n_threads) -> float:
    """See fastcnn._backend.Backend: overwrites ``grad``; returns the mean loss."""
    cdef Py_ssize_t i, n = logits.shape[0], c = logits.shape[1]
    cdef double total = 0
    if y.shape[0] != n or grad.shape[0] != n or grad.shape[1] != c or c == 0:
        raise ValueError(
            f"logits {(n, c)}, y ({y.shape[0]},) and grad {(grad.shape[0], grad.shape[1])} "
            "do not match"
        )
    for i in range(n):
        if y[i] < 0 or y[i] >= c:
            raise ValueError(f"y[{i}] = {y[i]} is not a class index in [0, {c})")
    if n == 0:
        return float("nan")
    cdef double* result = &total
    cdef Py_ssize_t bad = 0
    cdef int t, threads = team_size(0, 1, n_threads)  # no work to split: 1 unless warm
    with nogil:
        if threads == 1:
            total = all_rows(&logits[0, 0], &y[0], &grad[0, 0], n, c, &bad)
        else:
            for t in prange(threads, num_threads=threads, schedule="static"):
                if t == 0:  # through a pointer: a variable set in a prange is lastprivate
                    result[0] = all_rows(&logits[0, 0], &y[0], &grad[0, 0], n, c, &bad)
            team_released(threads)
    if bad:
        raise ValueError(
            f"{bad} label(s) of y are not class indices in [0, {c}): y changed while the "
            "loss read it (another thread wrote it)"
        )
    return total / n
