"""Compiled 2-D max and average pooling, forward and backward (NCHW, PyTorch semantics).

Design
------
Every (n, c) plane is independent, so the kernels run one OpenMP ``prange`` over the
N*C planes and make a single pass over each: max pooling writes each output and its
argmax index together, and the backward passes scatter into a plane that only the
current thread touches, so overlapping windows accumulate without atomics.

The max-pool backward reads the caller's index array without the GIL, after the
caller last looked at it, so it checks each index itself as it reads it (one compare)
and counts, rather than writes, those outside the plane.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.string cimport memset

from fastcnn._kernels._openmp cimport team_released, team_size


cdef extern from *:
    """
    /* One read of an index the caller may change at any time: the bound check and the
       write use the same value (a plain read may legally be repeated by the compiler). */
    static inline long long fastcnn_read_index(const long long *p)
    {
        return *(const volatile long long *)p;
    }
    """
    long long read_index "fastcnn_read_index"(const long long* p) noexcept nogil


cdef enum:
    # Below this many input elements a call runs on one thread, waking a team costs
    # more, unless the team is still awake (_openmp.team_size).
    MIN_PARALLEL_ELEMENTS = 1 << 15


cdef inline Py_ssize_t min_ssize(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline Py_ssize_t max_ssize(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a > b else b


cdef inline bint better(floating v, floating m) noexcept nogil:
    # PyTorch's CPU rule, (v > max) || isnan(v): strict '>' keeps the first of tied
    # maxima, and every NaN replaces the running max, so the last NaN of a window wins.
    return v > m or v != v


cdef inline floating larger(floating a, floating b) noexcept nogil:
    return a if a > b else b  # the pattern compilers turn into a branch-free max


cdef void max_plane_2x2(const floating* x, floating* out, long long* idx,
                        Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out) noexcept nogil:
    # The common 2x2, stride 2, unpadded case, every window inside the plane. Which of
    # four random values wins is a coin toss that a branch predictor loses half the time,
    # so the maximum is found branch-free and then located by equality, first match in
    # row-major order (the same tie rule). Windows holding a NaN, rare, pick the last NaN
    # (better()'s rule); the value is read back from the chosen position, which keeps the
    # sign of zero.
    cdef Py_ssize_t oh, ow, best, is_a, is_b, is_c
    cdef const floating* r0
    cdef const floating* r1
    cdef floating a, b, c, d, m
    for oh in range(h_out):
        r0 = x + 2 * oh * w
        r1 = r0 + w
        for ow in range(w_out):
            a = r0[2 * ow]
            b = r0[2 * ow + 1]
            c = r1[2 * ow]
            d = r1[2 * ow + 1]
            if (a != a) | (b != b) | (c != c) | (d != d):
                best = w + 1 if d != d else (w if c != c else (1 if b != b else 0))
            else:
                m = larger(larger(a, b), larger(c, d))
                # first of a, b, c, d equal to m, in arithmetic rather than branches
                is_a = a == m
                is_b = b == m
                is_c = c == m
                best = (1 - is_a) * (is_b + (1 - is_b) * (w + 1 - is_c))
            out[oh * w_out + ow] = r0[2 * ow + best]
            idx[oh * w_out + ow] = 2 * oh * w + 2 * ow + best


cdef void max_plane(const floating* x, floating* out, long long* idx,
                    Py_ssize_t h, Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out,
                    Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                    Py_ssize_t dw) noexcept nogil:
    cdef Py_ssize_t oh, ow, i, j, ih, iw, best
    cdef floating v, m
    if (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and dh == 1 and dw == 1 and 2 * h_out <= h and 2 * w_out <= w):
        max_plane_2x2(x, out, idx, w, h_out, w_out)
        return
    for oh in range(h_out):
        for ow in range(w_out):
            m = -INFINITY
            best = -1
            for i in range(kh):
                ih = oh * sh - ph + i * dh
                if ih < 0 or ih >= h:
                    continue
                for j in range(kw):
                    iw = ow * sw - pw + j * dw
                    if iw < 0 or iw >= w:
                        continue
                    v = x[ih * w + iw]
                    if best < 0 or better(v, m):
                        m = v
                        best = ih * w + iw
            out[oh * w_out + ow] = m
            idx[oh * w_out + ow] = best


cdef void avg_window(Py_ssize_t o, Py_ssize_t stride, Py_ssize_t pad, Py_ssize_t k,
                     Py_ssize_t size, Py_ssize_t* start, Py_ssize_t* end,
                     Py_ssize_t* span) noexcept nogil:
    # PyTorch's window: clip to the padded extent for the divisor, then to the input.
    cdef Py_ssize_t s = o * stride - pad
    cdef Py_ssize_t e = min_ssize(s + k, size + pad)
    span[0] = e - s
    start[0] = max_ssize(s, 0)
    end[0] = min_ssize(e, size)


cdef void avg_plane(const floating* x, floating* out, Py_ssize_t h, Py_ssize_t w,
                    Py_ssize_t h_out, Py_ssize_t w_out, Py_ssize_t kh, Py_ssize_t kw,
                    Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                    bint count_include_pad, Py_ssize_t divisor_override) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1, span_h, span_w, divisor
    cdef floating acc
    cdef const floating* r0
    if (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and 2 * h_out <= h and 2 * w_out <= w):
        # The common 2x2, stride 2, unpadded case: every window is whole, divisor 4.
        # Multiplying by 1/4 rounds exactly as dividing by 4, and vectorizes.
        divisor = divisor_override if divisor_override else 4
        for oh in range(h_out):
            r0 = x + 2 * oh * w
            if divisor == 4:
                for ow in range(w_out):
                    out[oh * w_out + ow] = (
                        (r0[2 * ow] + r0[2 * ow + 1]) + (r0[w + 2 * ow] + r0[w + 2 * ow + 1])
                    ) * <floating> 0.25
            else:
                for ow in range(w_out):
                    out[oh * w_out + ow] = (
                        (r0[2 * ow] + r0[2 * ow + 1]) + (r0[w + 2 * ow] + r0[w + 2 * ow + 1])
                    ) / divisor
        return
    for oh in range(h_out):
        avg_window(oh, sh, ph, kh, h, &h0, &h1, &span_h)
        for ow in range(w_out):
            avg_window(ow, sw, pw, kw, w, &w0, &w1, &span_w)
            if divisor_override:
                divisor = divisor_override
            elif count_include_pad:
                divisor = span_h * span_w
            else:
                divisor = (h1 - h0) * (w1 - w0)
            acc = 0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    acc = acc + x[ih * w + iw]
            out[oh * w_out + ow] = acc / divisor


cdef void avg_plane_backward(const floating* grad_out, floating* grad_x,
                             Py_ssize_t h, Py_ssize_t w, Py_ssize_t h_out,
                             Py_ssize_t w_out, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                             bint count_include_pad,
                             Py_ssize_t divisor_override) noexcept nogil:
    cdef Py_ssize_t oh, ow, ih, iw, h0, h1, w0, w1, span_h, span_w, divisor
    cdef floating share
    cdef floating* r0
    if (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and 2 * h_out <= h and 2 * w_out <= w):
        # 2x2 windows that tile the plane: each input gets one share, no accumulation;
        # only an odd last row or column is left for the memset. share * 1/4 rounds
        # exactly as share / 4.
        if 2 * h_out != h or 2 * w_out != w:
            memset(grad_x, 0, h * w * sizeof(floating))
        divisor = divisor_override if divisor_override else 4
        for oh in range(h_out):
            r0 = grad_x + 2 * oh * w
            for ow in range(w_out):
                if divisor == 4:
                    share = grad_out[oh * w_out + ow] * <floating> 0.25
                else:
                    share = grad_out[oh * w_out + ow] / divisor
                r0[2 * ow] = share
                r0[2 * ow + 1] = share
                r0[w + 2 * ow] = share
                r0[w + 2 * ow + 1] = share
        return
    memset(grad_x, 0, h * w * sizeof(floating))
    for oh in range(h_out):
        avg_window(oh, sh, ph, kh, h, &h0, &h1, &span_h)
        for ow in range(w_out):
            avg_window(ow, sw, pw, kw, w, &w0, &w1, &span_w)
            if divisor_override:
                divisor = divisor_override
            elif count_include_pad:
                divisor = span_h * span_w
            else:
                divisor = (h1 - h0) * (w1 - w0)
            share = grad_out[oh * w_out + ow] / divisor
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    grad_x[ih * w + iw] += share


def max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       long long[:, :, :, ::1] indices,
                       Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_h, Py_ssize_t pad_w,
                       Py_ssize_t dil_h, Py_ssize_t dil_w, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out`` and ``indices``."""
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], p
    cdef Py_ssize_t h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t h_out = out.shape[2], w_out = out.shape[3]
    cdef int threads = team_size(planes * h * w, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            max_plane(&x[0, 0, 0, 0] + p * h * w, &out[0, 0, 0, 0] + p * h_out * w_out,
                      &indices[0, 0, 0, 0] + p * h_out * w_out, h, w, h_out, w_out,
                      kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w)
        team_released(threads)


cdef Py_ssize_t max_plane_backward(const floating* go, const long long* idx, floating* gx,
                                   Py_ssize_t n_out, Py_ssize_t plane) noexcept nogil:
    # Returns how many indices lay outside [0, plane); those are skipped. Compared as
    # unsigned, a negative index is a huge one: one compare covers both ends.
    cdef Py_ssize_t o, bad = 0
    cdef long long i
    memset(gx, 0, plane * sizeof(floating))
    for o in range(n_out):
        i = read_index(idx + o)
        if <unsigned long long> i < <unsigned long long> plane:
            gx[i] += go[o]
        else:
            bad += 1
    return bad


def max_pool2d_backward(const floating[:, :, :, ::1] grad_out,
                        const long long[:, :, :, ::1] indices,
                        floating[:, :, :, ::1] grad_x, int n_threads):
    """See fastcnn._backend.Backend: overwrites ``grad_x``; returns how many indices lay outside
    [0, H*W) (skipped)."""
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1], p, bad = 0
    cdef Py_ssize_t plane = grad_x.shape[2] * grad_x.shape[3]
    cdef Py_ssize_t n_out = grad_out.shape[2] * grad_out.shape[3]
    if planes == 0 or plane == 0:  # nothing to write: every index is outside the plane
        return planes * n_out
    if n_out == 0:
        grad_x[...] = 0
        return 0
    cdef int threads = team_size(planes * plane, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            bad += max_plane_backward(&grad_out[0, 0, 0, 0] + p * n_out,
                                      &indices[0, 0, 0, 0] + p * n_out,
                                      &grad_x[0, 0, 0, 0] + p * plane, n_out, plane)
        team_released(threads)
    return bad


def avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out,
                       Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                       Py_ssize_t stride_h, Py_ssize_t stride_w,
                       Py_ssize_t pad_h, Py_ssize_t pad_w,
                       bint count_include_pad, Py_ssize_t divisor_override, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], p
    cdef Py_ssize_t h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t h_out = out.shape[2], w_out = out.shape[3]
    cdef int threads = team_size(planes * h * w, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            avg_plane(&x[0, 0, 0, 0] + p * h * w, &out[0, 0, 0, 0] + p * h_out * w_out,
                      h, w, h_out, w_out, kernel_h, kernel_w, stride_h, stride_w,
                      pad_h, pad_w, count_include_pad, divisor_override)
        team_released(threads)


def avg_pool2d_backward(const floating[:, :, :, ::1] grad_out,
                        floating[:, :, :, ::1] grad_x,
                        Py_ssize_t kernel_h, Py_ssize_t kernel_w,
                        Py_ssize_t stride_h, Py_ssize_t stride_w,
                        Py_ssize_t pad_h, Py_ssize_t pad_w,
                        bint count_include_pad, Py_ssize_t divisor_override, int n_threads):
    """See fastcnn._backend.Backend: overwrites ``grad_x``."""
    cdef Py_ssize_t planes = grad_x.shape[0] * grad_x.shape[1], p
    cdef Py_ssize_t h = grad_x.shape[2], w = grad_x.shape[3]
    cdef Py_ssize_t h_out = grad_out.shape[2], w_out = grad_out.shape[3]
    cdef int threads = team_size(planes * h * w, MIN_PARALLEL_ELEMENTS, n_threads)
    with nogil:
        for p in prange(planes, num_threads=threads, schedule="static"):
            avg_plane_backward(&grad_out[0, 0, 0, 0] + p * h_out * w_out,
                               &grad_x[0, 0, 0, 0] + p * h * w, h, w, h_out, w_out,
                               kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                               count_include_pad, divisor_override)
        team_released(threads)
