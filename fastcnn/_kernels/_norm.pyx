"""Compiled batch normalization, forward and backward, over (N, C, L) arrays.

Design
------
Every statistic is per channel, so the channels are the unit of work: ``prange`` over C,
each thread walking the N planes of L contiguous values of its channels. A channel's sums
(mean, variance, and in backward the sums of ``g`` and ``g * xhat``) accumulate in double
whatever the dtype and are rounded to it where the numpy backend's are; every element is
then written in one more pass in the array's dtype, in the order of the numpy backend's
operations (``_reference.batch_norm_forward``), so the two backends agree to rounding.
Below ``MIN_PARALLEL`` elements one thread does it all, unless the team is still awake
from the last kernel (``_openmp.team_size``).
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

from fastcnn._kernels._openmp cimport team_released, team_size

cdef enum:
    MIN_PARALLEL = 1 << 15


cdef double channel_sum(const floating* g, Py_ssize_t n, Py_ssize_t stride,
                        Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef double total = 0
    for i in range(n):
        for j in range(size):
            total += g[i * stride + j]
    return total


cdef double channel_squares(const floating* x, Py_ssize_t n, Py_ssize_t stride,
                            Py_ssize_t size, floating mean) noexcept nogil:
    # The squared deviations from the mean (no cancellation), each deviation rounded as
    # the numpy backend's x - mean.
    cdef Py_ssize_t i, j
    cdef double deviation, squares = 0
    for i in range(n):
        for j in range(size):
            deviation = <floating> (x[i * stride + j] - mean)
            squares += deviation * deviation
    return squares


cdef void channel_affine(const floating* x, floating* y, Py_ssize_t n, Py_ssize_t stride,
                         Py_ssize_t size, floating scale, floating shift) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(n):
        for j in range(size):
            y[i * stride + j] = x[i * stride + j] * scale + shift


cdef void channel_normalize(const floating* x, floating* y, Py_ssize_t n, Py_ssize_t stride,
                            Py_ssize_t size, floating mean, floating inv_std, floating weight,
                            floating bias) noexcept nogil:
    cdef Py_ssize_t i, j
    for i in range(n):
        for j in range(size):
            y[i * stride + j] = ((x[i * stride + j] - mean) * inv_std) * weight + bias


def batch_norm_forward(const floating[:, :, ::1] x, const floating[::1] weight,
                       const floating[::1] bias, running_mean, running_var,
                       floating[:, :, ::1] out, floating[::1] mean, floating[::1] inv_std,
                       bint training, double momentum, double eps, int n_threads):
    """Normalize each channel with the batch's statistics (training) or the running ones."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], size = x.shape[2], k, count = n * size
    cdef Py_ssize_t stride = c * size  # from one sample's plane of a channel to the next
    # Eval mode only reads the running statistics (which may be read-only, say after
    # unpickling from a memory map); training writes those it is given (may be None).
    cdef const floating[::1] rm_in, rv_in
    cdef floating[::1] rm, rv
    cdef bint has_rm = running_mean is not None, has_rv = running_var is not None
    if training:
        if has_rm:
            rm = running_mean
        if has_rv:
            rv = running_var
    else:
        rm_in, rv_in = running_mean, running_var
    cdef floating scale, m, v, fcount = <floating> count
    cdef int threads = team_size(n * c * size, MIN_PARALLEL, n_threads)
    if threads > c:
        threads = <int> c
    with nogil:
        for k in prange(c, num_threads=threads, schedule="static"):
            if not training:
                mean[k] = rm_in[k]
                inv_std[k] = 1 / <floating> sqrt(<floating> (rv_in[k] + <floating> eps))
                scale = weight[k] * inv_std[k]
                if n * size:
                    channel_affine(&x[0, k, 0], &out[0, k, 0], n, stride, size, scale,
                                   bias[k] - rm_in[k] * weight[k] * inv_std[k])
                continue
            # Sums in double, rounded to the dtype where numpy's are: a float32 sum that
            # overflows is inf here too, as in the numpy backend (a diverging run's
            # running_var becomes inf rather than the loss NaN).
            m = <floating> channel_sum(&x[0, k, 0], n, stride, size) / fcount
            v = <floating> channel_squares(&x[0, k, 0], n, stride, size, m) / fcount
            mean[k] = m
            inv_std[k] = 1 / <floating> sqrt(<floating> (v + <floating> eps))
            channel_normalize(&x[0, k, 0], &out[0, k, 0], n, stride, size, m, inv_std[k],
                              weight[k], bias[k])
            if has_rm:
                rm[k] = rm[k] * <floating> (1 - momentum) + <floating> momentum * m
            if has_rv:
                rv[k] = (rv[k] * <floating> (1 - momentum)
                         + <floating> (momentum * count / (count - 1)) * v)
    team_released(threads)


cdef double channel_dot_xhat(const floating* g, const floating* x, Py_ssize_t n,
                             Py_ssize_t stride, Py_ssize_t size, floating mean,
                             floating inv_std) noexcept nogil:
    # sum(g * xhat), xhat = (x - mean) * inv_std rounded as the forward rounded it.
    cdef Py_ssize_t i, j, at
    cdef double total = 0
    for i in range(n):
        for j in range(size):
            at = i * stride + j
            total += g[at] * ((x[at] - mean) * inv_std)
    return total


cdef void channel_grad_x(const floating* g, const floating* x, floating* gx, Py_ssize_t n,
                         Py_ssize_t stride, Py_ssize_t size, floating mean, floating inv_std,
                         floating slope, floating offset, floating scale) noexcept nogil:
    # gx = (xhat * slope + g - offset) * scale: the numpy backend's order.
    cdef Py_ssize_t i, j, at
    for i in range(n):
        for j in range(size):
            at = i * stride + j
            gx[at] = (((x[at] - mean) * inv_std) * slope + g[at] - offset) * scale


def batch_norm_backward(const floating[:, :, ::1] grad_out, const floating[:, :, ::1] x,
                        const floating[::1] weight, const floating[::1] mean,
                        const floating[::1] inv_std, floating[:, :, ::1] grad_x,
                        floating[::1] grad_weight, floating[::1] grad_bias, bint training,
                        int n_threads):
    """Gradients of :func:`batch_norm_forward` from the statistics it used."""
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], size = x.shape[2], k, stride = c * size
    cdef floating count = <floating> (n * size), scale
    cdef int threads = team_size(n * c * size, MIN_PARALLEL, n_threads)
    if threads > c:
        threads = <int> c
    with nogil:
        for k in prange(c, num_threads=threads, schedule="static"):
            if n * size == 0:
                grad_weight[k] = 0
                grad_bias[k] = 0
                continue
            grad_bias[k] = <floating> channel_sum(&grad_out[0, k, 0], n, stride, size)
            grad_weight[k] = <floating> channel_dot_xhat(
                &grad_out[0, k, 0], &x[0, k, 0], n, stride, size, mean[k], inv_std[k])
            scale = weight[k] * inv_std[k]
            if training:
                channel_grad_x(&grad_out[0, k, 0], &x[0, k, 0], &grad_x[0, k, 0], n, stride, size,
                               mean[k], inv_std[k], -grad_weight[k] / count,
                               grad_bias[k] / count, scale)
            else:  # the statistics are constants: x plays no part (nor its NaN and inf)
                channel_affine(&grad_out[0, k, 0], &grad_x[0, k, 0], n, stride, size, scale, 0)
    team_released(threads)
