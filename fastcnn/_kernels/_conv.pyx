"""Compiled 2-D convolution, forward and backward (NCHW, PyTorch semantics).

Design
------
Each sample is lowered to a matrix product: im2col copies the receptive fields of one
sample and one group into a (C_in/groups * kH * kW, H_out * W_out) column matrix, and one
BLAS GEMM with the (C_out/groups, C_in/groups * kH * kW) weight matrix yields that
sample's output plane block. A 1x1 convolution with stride 1 and no padding skips the
copy: the input plane already is the column matrix.

The batch loop runs under OpenMP ``prange``. Every thread owns its scratch (the column
matrix, the input-gradient columns, partial weight/bias gradients), allocated once per
call, so scratch grows with the thread count, never with the batch. The partial
gradients are summed after the parallel loop in a fixed order, so results do not depend
on scheduling. While threads run over the batch, BLAS is pinned to one thread (see
``fastcnn._backend.blas_threads``); a batch of one runs serially and lets BLAS use the
threads instead.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from fastcnn._kernels._blas cimport gemm
from fastcnn._threads import blas_threads

cdef extern from "limits.h":
    int INT_MAX


ctypedef struct Geometry:
    Py_ssize_t c_in, h, w            # input plane block of one sample
    Py_ssize_t c_out, groups
    Py_ssize_t cg, cog               # input / output channels per group
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    Py_ssize_t h_out, w_out
    Py_ssize_t k                     # rows of the column matrix: cg * kh * kw
    Py_ssize_t p                     # columns of the column matrix: h_out * w_out
    bint direct                      # 1x1, stride 1, no padding: no im2col needed


cdef inline void valid_range(Py_ssize_t n_out, Py_ssize_t stride, Py_ssize_t offset,
                             Py_ssize_t size, Py_ssize_t* lo,
                             Py_ssize_t* hi) noexcept nogil:
    # Output positions o in [lo, hi) read an in-bounds input: 0 <= o*stride + offset < size.
    cdef Py_ssize_t first = 0, last
    if offset < 0:
        first = (-offset + stride - 1) // stride
    if size - 1 - offset < 0:
        last = 0
    else:
        last = (size - 1 - offset) // stride + 1
    if last > n_out:
        last = n_out
    if first > last:
        first = last
    lo[0] = first
    hi[0] = last


cdef void im2col(const floating* x, const Geometry* g, floating* col) noexcept nogil:
    # x: (cg, h, w) of one sample and group -> col: (k, p), zeros where the field is padding.
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi
    cdef floating* dst
    cdef const floating* src
    for c in range(g.cg):
        for i in range(g.kh):
            for j in range(g.kw):
                dst = col + ((c * g.kh + i) * g.kw + j) * g.p
                valid_range(g.w_out, g.sw, j * g.dw - g.pw, g.w, &lo, &hi)
                for oh in range(g.h_out):
                    ih = oh * g.sh - g.ph + i * g.dh
                    if ih < 0 or ih >= g.h:
                        memset(dst, 0, g.w_out * sizeof(floating))
                    else:
                        src = x + (c * g.h + ih) * g.w + j * g.dw - g.pw
                        for ow in range(lo):
                            dst[ow] = 0
                        if g.sw == 1:
                            memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating))
                        else:
                            for ow in range(lo, hi):
                                dst[ow] = src[ow * g.sw]
                        for ow in range(hi, g.w_out):
                            dst[ow] = 0
                    dst += g.w_out


cdef void col2im_add(const floating* col, const Geometry* g, floating* x) noexcept nogil:
    # The adjoint of im2col: add every column entry back onto the input pixel it came from.
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi
    cdef const floating* src
    cdef floating* dst
    for c in range(g.cg):
        for i in range(g.kh):
            for j in range(g.kw):
                src = col + ((c * g.kh + i) * g.kw + j) * g.p
                valid_range(g.w_out, g.sw, j * g.dw - g.pw, g.w, &lo, &hi)
                for oh in range(g.h_out):
                    ih = oh * g.sh - g.ph + i * g.dh
                    if ih >= 0 and ih < g.h:
                        dst = x + (c * g.h + ih) * g.w + j * g.dw - g.pw
                        if g.sw == 1:
                            for ow in range(lo, hi):
                                dst[ow] += src[ow]
                        else:
                            for ow in range(lo, hi):
                                dst[ow * g.sw] += src[ow]
                    src += g.w_out


cdef void forward_sample(const floating* x, const floating* weight, const floating* bias,
                         floating* out, floating* col, const Geometry* g) noexcept nogil:
    cdef Py_ssize_t grp, co, q
    cdef const floating* columns
    cdef floating* row
    cdef floating b
    for grp in range(g.groups):
        if g.direct:
            columns = x + grp * g.cg * g.h * g.w
        else:
            im2col(x + grp * g.cg * g.h * g.w, g, col)
            columns = col
        gemm(False, False, <int> g.cog, <int> g.p, <int> g.k,
             1, weight + grp * g.cog * g.k, <int> g.k,
             columns, <int> g.p,
             0, out + grp * g.cog * g.p, <int> g.p)
    if bias != NULL:
        for co in range(g.c_out):
            row = out + co * g.p
            b = bias[co]
            for q in range(g.p):
                row[q] += b


cdef void backward_sample(const floating* grad_out, const floating* x,
                          const floating* weight, floating* grad_x,
                          floating* grad_weight, floating* grad_bias,
                          floating* col, floating* dcol, const Geometry* g) noexcept nogil:
    # grad_weight / grad_bias are this thread's partial sums (accumulated into);
    # grad_x is this sample's input gradient (overwritten).
    cdef Py_ssize_t grp, co, q
    cdef const floating* go
    cdef const floating* columns
    cdef const floating* x_grp
    cdef floating s
    if grad_x != NULL and not g.direct:
        memset(grad_x, 0, g.c_in * g.h * g.w * sizeof(floating))
    for grp in range(g.groups):
        go = grad_out + grp * g.cog * g.p
        x_grp = x + grp * g.cg * g.h * g.w
        if grad_weight != NULL:
            if g.direct:
                columns = x_grp
            else:
                im2col(x_grp, g, col)
                columns = col
            # dW_grp (cog, k) += dY_grp (cog, p) @ columns^T (p, k)
            gemm(False, True, <int> g.cog, <int> g.k, <int> g.p,
                 1, go, <int> g.p, columns, <int> g.p,
                 1, grad_weight + grp * g.cog * g.k, <int> g.k)
        if grad_x != NULL:
            # dcolumns (k, p) = W_grp^T (k, cog) @ dY_grp (cog, p)
            if g.direct:
                gemm(True, False, <int> g.k, <int> g.p, <int> g.cog,
                     1, weight + grp * g.cog * g.k, <int> g.k, go, <int> g.p,
                     0, grad_x + grp * g.cg * g.h * g.w, <int> g.p)
            else:
                gemm(True, False, <int> g.k, <int> g.p, <int> g.cog,
                     1, weight + grp * g.cog * g.k, <int> g.k, go, <int> g.p,
                     0, dcol, <int> g.p)
                col2im_add(dcol, g, grad_x + grp * g.cg * g.h * g.w)
    if grad_bias != NULL:
        for co in range(g.c_out):
            s = 0
            for q in range(g.p):
                s = s + grad_out[co * g.p + q]
            grad_bias[co] += s


cdef Geometry make_geometry(Py_ssize_t c_in, Py_ssize_t h, Py_ssize_t w,
                            Py_ssize_t c_out, Py_ssize_t kh, Py_ssize_t kw,
                            Py_ssize_t h_out, Py_ssize_t w_out,
                            Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                            Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t groups) except *:
    cdef Geometry g
    g.c_in, g.h, g.w = c_in, h, w
    g.c_out, g.groups = c_out, groups
    g.cg, g.cog = c_in // groups, c_out // groups
    g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw = kh, kw, sh, sw, ph, pw, dh, dw
    g.h_out, g.w_out = h_out, w_out
    g.k = g.cg * kh * kw
    g.p = h_out * w_out
    g.direct = kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
    if g.k > INT_MAX or g.p > INT_MAX or g.cog > INT_MAX or g.cg * h * w > INT_MAX:
        raise ValueError("convolution too large for 32-bit BLAS indices")
    return g


cdef int batch_threads(Py_ssize_t n, int n_threads):
    return <int> (n if n < n_threads else n_threads)


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   bias, floating[:, :, :, ::1] out,
                   Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h,
                   Py_ssize_t pad_w, Py_ssize_t dil_h, Py_ssize_t dil_w,
                   Py_ssize_t groups, int n_threads):
    """See BACKEND_API.md. Writes every element of ``out``."""
    cdef Py_ssize_t n_batch = x.shape[0], n
    cdef Geometry g = make_geometry(
        x.shape[1], x.shape[2], x.shape[3], weight.shape[0], weight.shape[2],
        weight.shape[3], out.shape[2], out.shape[3], stride_h, stride_w, pad_h, pad_w,
        dil_h, dil_w, groups)
    cdef const floating[::1] bias_view
    cdef const floating* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    cdef int threads = batch_threads(n_batch, n_threads)
    cdef Py_ssize_t per_thread = 0 if g.direct else g.k * g.p
    cdef floating* scratch = <floating*> malloc(max(1, threads * per_thread) * sizeof(floating))
    if scratch == NULL:
        raise MemoryError(f"conv2d: cannot allocate {threads} x {per_thread} scratch")
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    try:
        with blas_threads(1 if threads > 1 else n_threads):
            with nogil:
                for n in prange(n_batch, num_threads=threads, schedule="static"):
                    forward_sample(&x[0, 0, 0, 0] + n * x_stride, &weight[0, 0, 0, 0],
                                   bias_ptr, &out[0, 0, 0, 0] + n * out_stride,
                                   scratch + threadid() * per_thread, &g)
    finally:
        free(scratch)


def conv2d_backward(const floating[:, :, :, ::1] grad_out,
                    const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                    grad_x, grad_weight, grad_bias,
                    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h,
                    Py_ssize_t pad_w, Py_ssize_t dil_h, Py_ssize_t dil_w,
                    Py_ssize_t groups, int n_threads):
    """See BACKEND_API.md. Overwrites each gradient buffer that is not None."""
    cdef Py_ssize_t n_batch = x.shape[0], n, t, i
    cdef Geometry g = make_geometry(
        x.shape[1], x.shape[2], x.shape[3], weight.shape[0], weight.shape[2],
        weight.shape[3], grad_out.shape[2], grad_out.shape[3], stride_h, stride_w,
        pad_h, pad_w, dil_h, dil_w, groups)
    cdef floating[:, :, :, ::1] gx_view
    cdef floating[:, :, :, ::1] gw_view
    cdef floating[::1] gb_view
    cdef floating* gx_ptr = NULL
    cdef bint want_x = grad_x is not None
    cdef bint want_w = grad_weight is not None
    cdef bint want_b = grad_bias is not None
    if want_x:
        gx_view = grad_x
        gx_ptr = &gx_view[0, 0, 0, 0]
    if want_w:
        gw_view = grad_weight
    if want_b:
        gb_view = grad_bias

    cdef int threads = batch_threads(n_batch, n_threads)
    # Per-thread scratch: [col (k*p) | dcol (k*p) | weight partials | bias partials].
    cdef Py_ssize_t n_col = g.k * g.p if (want_w and not g.direct) else 0
    cdef Py_ssize_t n_dcol = g.k * g.p if (want_x and not g.direct) else 0
    cdef Py_ssize_t n_gw = g.c_out * g.k if want_w else 0
    cdef Py_ssize_t n_gb = g.c_out if want_b else 0
    cdef Py_ssize_t per_thread = n_col + n_dcol + n_gw + n_gb
    cdef floating* scratch = <floating*> calloc(max(1, threads * per_thread), sizeof(floating))
    if scratch == NULL:
        raise MemoryError(f"conv2d_backward: cannot allocate {threads} x {per_thread} scratch")
    cdef floating* base
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    try:
        with blas_threads(1 if threads > 1 else n_threads):
            with nogil:
                for n in prange(n_batch, num_threads=threads, schedule="static"):
                    base = scratch + threadid() * per_thread
                    backward_sample(
                        &grad_out[0, 0, 0, 0] + n * out_stride,
                        &x[0, 0, 0, 0] + n * x_stride, &weight[0, 0, 0, 0],
                        (gx_ptr + n * x_stride) if want_x else NULL,
                        (base + n_col + n_dcol) if want_w else NULL,
                        (base + n_col + n_dcol + n_gw) if want_b else NULL,
                        base, base + n_col, &g)
        # Sum the per-thread partials in thread order: deterministic for a thread count.
        with nogil:
            if want_w:
                memcpy(&gw_view[0, 0, 0, 0], scratch + n_col + n_dcol, n_gw * sizeof(floating))
                for t in range(1, threads):
                    base = scratch + t * per_thread + n_col + n_dcol
                    for i in range(n_gw):
                        (&gw_view[0, 0, 0, 0])[i] += base[i]
            if want_b:
                memcpy(&gb_view[0], scratch + n_col + n_dcol + n_gw, n_gb * sizeof(floating))
                for t in range(1, threads):
                    base = scratch + t * per_thread + n_col + n_dcol + n_gw
                    for i in range(n_gb):
                        gb_view[i] += base[i]
    finally:
        free(scratch)
