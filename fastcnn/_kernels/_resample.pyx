"""Compiled adaptive pooling and interpolation (nearest, bilinear), forward and backward.

Design
------
Every (n, c) plane is independent, so each kernel runs one OpenMP ``prange`` over the
N*C planes. Both ops are separable: which input rows an output row reads depends only
on the sizes (and the scale factor), never on the data. Adaptive pooling computes its
bin edges inline (two integer divisions); interpolation builds one table per axis
(source indices, and for bilinear the two weights) before the parallel loop, shared
read-only by every thread. The backward passes scatter into a plane only the current
thread touches, so overlapping bins and repeated sources accumulate without atomics.

The rules (bin edges, source-index formulas, rounding) are those of the numpy backend,
``fastcnn/_reference/resample.py``, and the ``Backend`` protocol's docstrings.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, floor, floorf
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from fastcnn._kernels._openmp cimport team_released, team_size


cdef enum:
    # Below this many input elements a call runs on one thread, waking a team costs
    # more, unless the team is still awake (_openmp.team_size); as _pool.pyx.
    MIN_PARALLEL_ELEMENTS = 1 << 15


cdef inline Py_ssize_t bin_start(Py_ssize_t i, Py_ssize_t size, Py_ssize_t n_out) noexcept nogil:
    return (i * size) // n_out  # floor(i * size / n_out)


cdef inline Py_ssize_t bin_end(Py_ssize_t i, Py_ssize_t size, Py_ssize_t n_out) noexcept nogil:
    return ((i + 1) * size + n_out - 1) // n_out  # ceil((i + 1) * size / n_out)


cdef inline bint better(floating v, floating m) noexcept nogil:
    # max_pool2d's rule (_pool.pyx): strict '>' keeps the first of tied maxima, and
    # every NaN replaces the running max, so the last NaN of a bin wins.
    return v > m or v != v


# ---------------------------------------------------------------------------------------
# Adaptive pooling


cdef inline double run_sum(const floating* r, Py_ssize_t n) noexcept nogil:
    # Four independent sums: one running sum would wait on each add's latency, which
    # bounds a global pool's speed (its bin is a whole plane).
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        s0 += r[i]
        s1 += r[i + 1]
        s2 += r[i + 2]
        s3 += r[i + 3]
        i += 4
    while i < n:
        s0 += r[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef void avg_plane(const floating* x, floating* out, Py_ssize_t h, Py_ssize_t w,
                    Py_ssize_t h_out, Py_ssize_t w_out) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, h0, h1, w0, w1
    cdef double acc  # float32 sums too: a global pool adds a whole plane
    for oh in range(h_out):
        h0 = bin_start(oh, h, h_out)
        h1 = bin_end(oh, h, h_out)
        for ow in range(w_out):
            w0 = bin_start(ow, w, w_out)
            w1 = bin_end(ow, w, w_out)
            if w0 == 0 and w1 == w:  # whole rows: one contiguous run
                acc = run_sum(x + h0 * w, (h1 - h0) * w)
            else:
                acc = 0
                for ih in range(h0, h1):
                    acc = acc + run_sum(x + ih * w + w0, w1 - w0)
            out[oh * w_out + ow] = <floating> (acc / ((h1 - h0) * (w1 - w0)))


cdef void avg_plane_backward(const floating* grad_out, floating* grad_x, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1
    cdef floating share
    memset(grad_x, 0, h * w * sizeof(floating))
    for oh in range(h_out):
        h0 = bin_start(oh, h, h_out)
        h1 = bin_end(oh, h, h_out)
        for ow in range(w_out):
            w0 = bin_start(ow, w, w_out)
            w1 = bin_end(ow, w, w_out)
            share = grad_out[oh * w_out + ow] / <floating> ((h1 - h0) * (w1 - w0))
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    grad_x[ih * w + iw] += share


cdef void max_plane(const floating* x, floating* out, long long* idx, Py_ssize_t h,
                    Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1, best
    cdef floating v, m
    for oh in range(h_out):
        h0 = bin_start(oh, h, h_out)
        h1 = bin_end(oh, h, h_out)
        for ow in range(w_out):
            w0 = bin_start(ow, w, w_out)
            w1 = bin_end(ow, w, w_out)
            m = -INFINITY
            best = h0 * w + w0  # every bin holds at least one input
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    v = x[ih * w + iw]
                    if better(v, m):
                        m = v
                        best = ih * w + iw
            out[oh * w_out + ow] = x[best]  # the value read back keeps the sign of zero
            idx[oh * w_out + ow] = best


def adaptive_avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                                int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], p
    cdef Py_ssize_t h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t h_out = out.shape[2], w_out = out.shape[3]
    cdef int threads = team_size(planes * h * w, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            avg_plane(&x[0, 0, 0, 0] + p * h * w, &out[0, 0, 0, 0] + p * h_out * w_out,
                      h, w, h_out, w_out)
        team_released(threads)


def adaptive_avg_pool2d_backward(const floating[:, :, :, ::1] grad_out,
                                 floating[:, :, :, ::1] grad_x, int n_threads):
    """See fastcnn._backend.Backend: overwrites ``grad_x``."""
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1], p
    cdef Py_ssize_t h = grad_x.shape[2], w = grad_x.shape[3]
    cdef Py_ssize_t h_out = grad_out.shape[2], w_out = grad_out.shape[3]
    cdef int threads = team_size(planes * h * w, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            avg_plane_backward(&grad_out[0, 0, 0, 0] + p * h_out * w_out,
                               &grad_x[0, 0, 0, 0] + p * h * w, h, w, h_out, w_out)
        team_released(threads)


def adaptive_max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                                long long[:, :, :, ::1] indices, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out`` and ``indices``."""
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], p
    cdef Py_ssize_t h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t h_out = out.shape[2], w_out = out.shape[3]
    cdef int threads = team_size(planes * h * w, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            max_plane(&x[0, 0, 0, 0] + p * h * w, &out[0, 0, 0, 0] + p * h_out * w_out,
                      &indices[0, 0, 0, 0] + p * h_out * w_out, h, w, h_out, w_out)
        team_released(threads)


# ---------------------------------------------------------------------------------------
# Interpolation: one table per axis, then the planes


cdef void nearest_table(Py_ssize_t size, Py_ssize_t n_out, double scale,
                        Py_ssize_t* src) noexcept nogil:
    # PyTorch's nearest_idx: float32 arithmetic whatever the dtype; same size copies,
    # exact doubling halves, whatever the scale factor.
    cdef Py_ssize_t i, j
    cdef float s
    if n_out == size or n_out == 2 * size:
        for i in range(n_out):
            src[i] = i if n_out == size else i >> 1
        return
    s = <float> (1.0 / scale) if scale > 0 else <float> size / <float> n_out
    for i in range(n_out):
        j = <Py_ssize_t> floorf(<float> i * s)
        src[i] = j if j < size - 1 else size - 1


cdef void linear_table(Py_ssize_t size, Py_ssize_t n_out, double scale, bint align_corners,
                       Py_ssize_t* i0, Py_ssize_t* i1, floating* l0,
                       floating* l1) noexcept nogil:
    # PyTorch's bilinear source index and weights, in the arrays' dtype (its opmath).
    cdef Py_ssize_t i
    cdef double s64
    cdef floating s, src, frac
    if n_out == size:
        s64 = 1.0  # an axis that keeps its size is copied
    elif align_corners:
        s64 = (size - 1) / <double> (n_out - 1) if n_out > 1 else 0.0
    else:
        s64 = 1.0 / scale if scale > 0 else size / <double> n_out
    s = <floating> s64
    for i in range(n_out):
        if align_corners:
            src = s * <floating> i
        else:
            src = s * (<floating> i + <floating> 0.5) - <floating> 0.5
            if src < 0:
                src = 0
        i0[i] = <Py_ssize_t> floor(src)
        if i0[i] > size - 1:
            i0[i] = size - 1
        i1[i] = i0[i] + 1 if i0[i] < size - 1 else i0[i]
        frac = src - <floating> i0[i]
        frac = 0 if frac < 0 else (1 if frac > 1 else frac)
        l1[i] = frac
        l0[i] = 1 - frac


cdef void nearest_plane(const floating* x, floating* out, Py_ssize_t w, Py_ssize_t h_out,
                        Py_ssize_t w_out, const Py_ssize_t* src_h,
                        const Py_ssize_t* src_w) noexcept nogil:
    cdef Py_ssize_t oh, ow
    cdef const floating* row
    for oh in range(h_out):
        row = x + src_h[oh] * w
        for ow in range(w_out):
            out[oh * w_out + ow] = row[src_w[ow]]


cdef void nearest_plane_backward(const floating* grad_out, floating* grad_x, Py_ssize_t h,
                                 Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out,
                                 const Py_ssize_t* src_h,
                                 const Py_ssize_t* src_w) noexcept nogil:
    cdef Py_ssize_t oh, ow
    cdef floating* row
    memset(grad_x, 0, h * w * sizeof(floating))
    for oh in range(h_out):
        row = grad_x + src_h[oh] * w
        for ow in range(w_out):
            row[src_w[ow]] += grad_out[oh * w_out + ow]


cdef void linear_plane(const floating* x, floating* out, Py_ssize_t w, Py_ssize_t h_out,
                       Py_ssize_t w_out, const Py_ssize_t* h0, const Py_ssize_t* h1,
                       const floating* a0, const floating* a1, const Py_ssize_t* w0,
                       const Py_ssize_t* w1, const floating* b0,
                       const floating* b1) noexcept nogil:
    cdef Py_ssize_t oh, ow
    cdef const floating* r0
    cdef const floating* r1
    cdef floating top, bottom
    for oh in range(h_out):
        r0 = x + h0[oh] * w
        r1 = x + h1[oh] * w
        for ow in range(w_out):
            # along W first, then H (the protocol's order of operations)
            top = r0[w0[ow]] * b0[ow] + r0[w1[ow]] * b1[ow]
            bottom = r1[w0[ow]] * b0[ow] + r1[w1[ow]] * b1[ow]
            out[oh * w_out + ow] = top * a0[oh] + bottom * a1[oh]


cdef void linear_plane_backward(const floating* grad_out, floating* grad_x, Py_ssize_t h,
                                Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out,
                                const Py_ssize_t* h0, const Py_ssize_t* h1,
                                const floating* a0, const floating* a1,
                                const Py_ssize_t* w0, const Py_ssize_t* w1,
                                const floating* b0, const floating* b1) noexcept nogil:
    cdef Py_ssize_t oh, ow
    cdef floating* r0
    cdef floating* r1
    cdef floating g
    memset(grad_x, 0, h * w * sizeof(floating))
    for oh in range(h_out):
        r0 = grad_x + h0[oh] * w
        r1 = grad_x + h1[oh] * w
        for ow in range(w_out):
            g = grad_out[oh * w_out + ow]
            r0[w0[ow]] += g * (a0[oh] * b0[ow])
            r0[w1[ow]] += g * (a0[oh] * b1[ow])
            r1[w0[ow]] += g * (a1[oh] * b0[ow])
            r1[w1[ow]] += g * (a1[oh] * b1[ow])


cdef int resample(const floating* src, floating* dst, Py_ssize_t planes, Py_ssize_t h,
                  Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out, bint bilinear,
                  bint align_corners, double scale_h, double scale_w, bint backward,
                  int n_threads) noexcept nogil:
    # Forward reads src (N, C, h, w) into dst (N, C, h_out, w_out); backward reads the
    # gradient src (.., h_out, w_out) into dst (.., h, w). Returns -1 if out of memory.
    cdef Py_ssize_t p, n_tab = h_out + w_out
    cdef Py_ssize_t* idx = <Py_ssize_t*> malloc(2 * n_tab * sizeof(Py_ssize_t))
    cdef floating* lam = <floating*> malloc(2 * n_tab * sizeof(floating))
    cdef Py_ssize_t in_plane = h_out * w_out if backward else h * w
    cdef Py_ssize_t out_plane = h * w if backward else h_out * w_out
    cdef int threads
    if idx == NULL or lam == NULL:
        free(idx)
        free(lam)
        return -1
    # idx: [h0 | w0 | h1 | w1], lam: [a0 | b0 | a1 | b1]; nearest uses h0 and w0 only
    if bilinear:
        linear_table(h, h_out, scale_h, align_corners, idx, idx + n_tab, lam, lam + n_tab)
        linear_table(w, w_out, scale_w, align_corners, idx + h_out, idx + n_tab + h_out,
                     lam + h_out, lam + n_tab + h_out)
    else:
        nearest_table(h, h_out, scale_h, idx)
        nearest_table(w, w_out, scale_w, idx + h_out)
    threads = team_size(planes * (h * w + h_out * w_out), MIN_PARALLEL_ELEMENTS, n_threads)
    for p in prange(planes, num_threads=threads, schedule="static"):
        if bilinear and backward:
            linear_plane_backward(src + p * in_plane, dst + p * out_plane, h, w, h_out, w_out,
                                  idx, idx + n_tab, lam, lam + n_tab, idx + h_out,
                                  idx + n_tab + h_out, lam + h_out, lam + n_tab + h_out)
        elif bilinear:
            linear_plane(src + p * in_plane, dst + p * out_plane, w, h_out, w_out,
                         idx, idx + n_tab, lam, lam + n_tab, idx + h_out,
                         idx + n_tab + h_out, lam + h_out, lam + n_tab + h_out)
        elif backward:
            nearest_plane_backward(src + p * in_plane, dst + p * out_plane, h, w, h_out,
                                   w_out, idx, idx + h_out)
        else:
            nearest_plane(src + p * in_plane, dst + p * out_plane, w, h_out, w_out,
                          idx, idx + h_out)
    team_released(threads)
    free(idx)
    free(lam)
    return 0


def interpolate_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                        bint bilinear, bint align_corners, double scale_h, double scale_w,
                        int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    cdef int status
    with nogil:
        status = resample(&x[0, 0, 0, 0], &out[0, 0, 0, 0], x.shape[0] * x.shape[1],
                          x.shape[2], x.shape[3], out.shape[2], out.shape[3], bilinear,
                          align_corners, scale_h, scale_w, False, n_threads)
    if status:
        raise MemoryError("interpolate: no memory for the index tables")


def interpolate_backward(const floating[:, :, :, ::1] grad_out, floating[:, :, :, ::1] grad_x,
                         bint bilinear, bint align_corners, double scale_h, double scale_w,
                         int n_threads):
    """See fastcnn._backend.Backend: overwrites ``grad_x``."""
    cdef int status
    with nogil:
        status = resample(&grad_out[0, 0, 0, 0], &grad_x[0, 0, 0, 0],
                          grad_x.shape[0] * grad_x.shape[1], grad_x.shape[2],
                          grad_x.shape[3], grad_out.shape[2], grad_out.shape[3], bilinear,
                          align_corners, scale_h, scale_w, True, n_threads)
    if status:
        raise MemoryError("interpolate_backward: no memory for the index tables")
