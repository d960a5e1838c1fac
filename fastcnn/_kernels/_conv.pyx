"""Compiled 2-D convolution, forward and backward (NCHW, PyTorch semantics).

Design
------
Convolution is lowered to matrix products. im2col copies the receptive fields of a chunk
of consecutive samples (one group at a time) into a column matrix of shape
(C_in/groups * kH * kW, samples * H_out * W_out), and one BLAS GEMM with the
(C_out/groups, C_in/groups * kH * kW) weight matrix yields the chunk's outputs. Chunks
hold enough samples to give BLAS about a thousand columns (small images would otherwise
mean many tiny, overhead-bound GEMMs) but never more than a bounded amount of scratch.
A 1x1 convolution with stride 1 and no padding needs no im2col for a single sample: the
input plane already is the column matrix.

At stride 1 the "wide" layout computes outputs over the padded width, so each kernel tap's
row of the column matrix is one contiguous slice of the zero-padded input plane (junk
columns are dropped on copy-out). For float32 on CPUs with AVX2 or AVX-512 the same
layout feeds register-blocked direct kernels (direct_conv.h) that read the taps in place,
with no im2col copy and no BLAS packing: the forward pass, the input gradient (a stride-1
convolution with flipped, transposed weights) and the weight gradient, each where the
channel counts make it pay. Where the junk columns of the wide layout cost more than
padding the output channels to a vector, the forward pass and the weight gradient put
the output channels across the vector lanes instead and visit only real outputs ("lanes"
kernels); the weight gradient also does where the channels fill blocks of four AVX-512
vectors, which read less memory per multiply-add than the wide kernel. Where each output
row is a whole number of vectors long, the forward pass and the input gradient take the
positions a row vector at a time ("rows"): no junk columns, and the sums go straight into
the output planes. Everything else takes im2col + BLAS.

The chunk loop runs under OpenMP ``prange``. Every thread owns its scratch (the column
matrix, gathered output gradients, the input-gradient columns, partial weight/bias
gradients), allocated once per call, so scratch grows with the thread count and the
chunk size, never with the batch. The partial gradients are summed after the parallel
loop in a fixed order, so results do not depend on scheduling.

Special values
--------------
A product reaches an output exactly when the numpy backend (fastcnn/_reference.py) forms
it, so NaN and infinities land where they land there and in PyTorch: the forward pass and
the weight gradient multiply the zero padding of x like any pixel (0 * inf is NaN there
too), the input gradient sums only the (output, tap) pairs that read a pixel of x, and
the spare parts of the kernels' own layouts (junk columns, channels, taps, positions and
samples padded to a block) never reach an output. Dropping a padded block's results is
enough where the products are all that is wrong; where a kernel adds zeros times an
operand into kept sums (the wide layout's junk columns, grad_out's padding in the direct
input gradient), that is exact only for finite operands: the BLAS wide path clears or
skips its junk columns; conv2d_backward scans the weights before the direct input
gradient (fastcnn_all_finite_f32, simd.h: a pass over memory, not over the
multiply-adds), the wide weight-gradient kernel scans its partial sums afterwards (a
junk product is 0 or NaN, so finite partials are exact), and such a call goes to BLAS. tests/test_numerics.py holds the cases, on
every kernel the planner picks.

All parallelism comes from OpenMP: BLAS is pinned to one thread while a kernel runs
(``fastcnn._threads.blas_threads``). The products here are small or skinny, and letting
a threaded BLAS split them (alone, or inside OpenMP threads) was measured to be several
times slower on a 2-core machine, not faster.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from fastcnn._kernels._blas cimport Blas, gemm, load_blas
from fastcnn._kernels._openmp cimport team_released
from fastcnn._threads import blas_threads

cdef extern from "limits.h":
    int INT_MAX

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX

cdef Blas BLAS  # filled by load_blas() before the first product

cdef extern from "direct_conv.h":
    int fastcnn_direct_level() noexcept nogil
    Py_ssize_t fastcnn_direct_co_block(int level, Py_ssize_t cog) noexcept nogil
    Py_ssize_t fastcnn_direct_t_block(int level) noexcept nogil
    Py_ssize_t fastcnn_direct_conv_t_block(int level, Py_ssize_t cb, Py_ssize_t k) noexcept nogil
    void fastcnn_direct_conv(int level, Py_ssize_t cb, const float* xp, const Py_ssize_t* off,
                             Py_ssize_t k, Py_ssize_t taps_c, Py_ssize_t k_chunk,
                             const Py_ssize_t* ranges,
                             const float* wpk, Py_ssize_t cog_pad, float* out,
                             Py_ssize_t ldo, Py_ssize_t q_pad) noexcept nogil
    void fastcnn_direct_rows(int level, Py_ssize_t cb, const float* xp, const Py_ssize_t* off,
                             Py_ssize_t k, Py_ssize_t taps_c, Py_ssize_t k_chunk,
                             const Py_ssize_t* ranges, const float* wpk, Py_ssize_t cog,
                             Py_ssize_t cog_pad, const Py_ssize_t* vx, const Py_ssize_t* vo,
                             Py_ssize_t n_vec, const float* bias, float* out,
                             Py_ssize_t ldo) noexcept nogil
    Py_ssize_t fastcnn_wgrad_t_lanes(int level) noexcept nogil
    int fastcnn_lanes_fwd_has(int level, Py_ssize_t kw) noexcept nogil
    void fastcnn_lanes_fwd_row(int level, Py_ssize_t kw, const float* x0, Py_ssize_t plane,
                               Py_ssize_t row, Py_ssize_t cg, Py_ssize_t kh, const float* w,
                               Py_ssize_t k, Py_ssize_t cog_pad, float* out, Py_ssize_t ld,
                               Py_ssize_t w_out) noexcept nogil
    Py_ssize_t fastcnn_wgrad_t_taps(int level, Py_ssize_t cog_pad, Py_ssize_t k) noexcept nogil
    bint fastcnn_wgrad_t_quads(int level, Py_ssize_t cog_pad) noexcept nogil
    void fastcnn_wgrad_t(int level, const float* x, const Py_ssize_t* off, Py_ssize_t k_pad,
                         const float* dyt, const Py_ssize_t* pos, Py_ssize_t n_pos,
                         Py_ssize_t cog_pad, float* dwt) noexcept nogil
    void fastcnn_transpose(const float* src, Py_ssize_t lds, Py_ssize_t rows,
                           Py_ssize_t cols, float* dst, Py_ssize_t ldd,
                           float* sums) noexcept nogil
    Py_ssize_t fastcnn_wgrad_co_block(int level) noexcept nogil
    Py_ssize_t fastcnn_wgrad_tap_block(int level) noexcept nogil
    void fastcnn_wgrad(int level, const float* xp, Py_ssize_t xp_stride, const Py_ssize_t* off,
                       Py_ssize_t k_pad, const float* dy, Py_ssize_t dy_stride,
                       Py_ssize_t cog_pad, Py_ssize_t q_pad, Py_ssize_t ns,
                       float* dw) noexcept nogil

cdef extern from "simd.h":
    bint fastcnn_all_finite_f32(const float* p, Py_ssize_t n) noexcept nogil

cdef extern from "scratch.h":
    void* fastcnn_scratch_take(size_t n) noexcept nogil
    void fastcnn_scratch_give_back(void* p) noexcept nogil
    size_t fastcnn_scratch_release() noexcept nogil
    size_t fastcnn_scratch_kept() noexcept nogil

cdef extern from "batch_lanes.h":
    Py_ssize_t fastcnn_igrad_lanes(int level) noexcept nogil
    Py_ssize_t fastcnn_igrad_c_block(int level) noexcept nogil
    Py_ssize_t fastcnn_igrad_cost(int level, Py_ssize_t cg, Py_ssize_t cog, Py_ssize_t h,
                                  Py_ssize_t w, Py_ssize_t h_out, Py_ssize_t w_out,
                                  Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                                  Py_ssize_t dh, Py_ssize_t dw) noexcept nogil
    Py_ssize_t fastcnn_wgrad_batch_o_block(int level) noexcept nogil
    Py_ssize_t fastcnn_wgrad_batch_r_block(int level) noexcept nogil
    void fastcnn_wgrad_batch(int level, const float* dy, const float* xp,
                             const Py_ssize_t* off, Py_ssize_t k_pad, Py_ssize_t cog_pad,
                             Py_ssize_t h_out, Py_ssize_t w_out, Py_ssize_t wp,
                             float* dw) noexcept nogil
    void fastcnn_igrad(int level, const float* dy, Py_ssize_t cog, Py_ssize_t h_out,
                       Py_ssize_t w_out, const float* wpk, Py_ssize_t cg, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                       Py_ssize_t dw, Py_ssize_t h, Py_ssize_t w, float* gx) noexcept nogil


ctypedef struct Geometry:
    Py_ssize_t c_in, h, w            # input plane block of one sample
    Py_ssize_t c_out, groups
    Py_ssize_t cg, cog               # input / output channels per group
    Py_ssize_t kh, kw, sh, sw, ph, pw, dh, dw
    Py_ssize_t h_out, w_out
    Py_ssize_t k                     # rows of the column matrix: cg * kh * kw
    Py_ssize_t p                     # columns of the column matrix: h_out * w_out
    bint direct                      # 1x1, stride 1, no padding: no im2col needed
    bint wide                        # stride 1: use the wide (padded-row) layout below
    Py_ssize_t hp, wp                # padded input plane
    Py_ssize_t q                     # wide columns per sample: h_out * wp
    Py_ssize_t plane                 # padded plane block incl. slack: cg*hp*wp + slack


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


cdef void im2col(const floating* x, const Geometry* g, floating* col,
                 Py_ssize_t ld) noexcept nogil:
    # x: (cg, h, w) of one sample and group -> col: (k, p) block with row stride ld,
    # zeros where the receptive field lies in the padding.
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi
    cdef floating* dst
    cdef const floating* src
    for c in range(g.cg):
        for i in range(g.kh):
            for j in range(g.kw):
                dst = col + ((c * g.kh + i) * g.kw + j) * ld
                valid_range(g.w_out, g.sw, j * g.dw - g.pw, g.w, &lo, &hi)
                for oh in range(g.h_out):
                    ih = oh * g.sh - g.ph + i * g.dh
                    if ih < 0 or ih >= g.h:
                        for ow in range(g.w_out):
                            dst[ow] = 0
                    else:
                        src = x + (c * g.h + ih) * g.w + j * g.dw - g.pw
                        for ow in range(lo):
                            dst[ow] = 0
                        if g.sw == 1:
                            # a plain loop beats memcpy on these short rows
                            for ow in range(lo, hi):
                                dst[ow] = src[ow]
                        else:
                            for ow in range(lo, hi):
                                dst[ow] = src[ow * g.sw]
                        for ow in range(hi, g.w_out):
                            dst[ow] = 0
                    dst += g.w_out


cdef void col2im_add(const floating* col, Py_ssize_t ld, const Geometry* g,
                     floating* x) noexcept nogil:
    # The adjoint of im2col: add every column entry back onto the input pixel it came from.
    cdef Py_ssize_t c, i, j, oh, ow, ih, lo, hi
    cdef const floating* src
    cdef floating* dst
    for c in range(g.cg):
        for i in range(g.kh):
            for j in range(g.kw):
                src = col + ((c * g.kh + i) * g.kw + j) * ld
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


cdef void pad_plane(const floating* x, const Geometry* g, floating* xp) noexcept nogil:
    # x (cg, h, w) of one sample and group -> xp (cg, hp, wp) zero-padded, plus zero slack.
    # Only the padding is written with zeros: clearing the whole block first wrote every
    # element twice (mid: 143 KB per sample for the input, 287 KB for the padded output
    # gradient of its input gradient).
    cdef Py_ssize_t c, ih, j, right = g.wp - g.pw - g.w
    cdef floating* row
    for c in range(g.cg):
        row = xp + c * g.hp * g.wp
        memset(row, 0, g.ph * g.wp * sizeof(floating))
        row += g.ph * g.wp
        for ih in range(g.h):
            for j in range(g.pw):
                row[j] = 0
            memcpy(row + g.pw, x + (c * g.h + ih) * g.w, g.w * sizeof(floating))
            for j in range(right):
                row[g.pw + g.w + j] = 0
            row += g.wp
        memset(row, 0, (g.hp - g.ph - g.h) * g.wp * sizeof(floating))
    memset(xp + g.cg * g.hp * g.wp, 0, (g.plane - g.cg * g.hp * g.wp) * sizeof(floating))


cdef void im2col_wide(const floating* xp, const Geometry* g, floating* col,
                      Py_ssize_t ld) noexcept nogil:
    # Stride-1 im2col on the padded plane, computing outputs over the full padded width:
    # column oh*wp + ow of tap (c, i, j) reads xp[c, oh + i*dh, ow + j*dw], so each tap's
    # row is ONE contiguous slice of xp. Columns with ow >= w_out are junk (they wrap into
    # the next row) and are dropped when results are copied out.
    cdef Py_ssize_t c, i, j
    cdef floating* dst = col
    for c in range(g.cg):
        for i in range(g.kh):
            for j in range(g.kw):
                memcpy(dst, xp + (c * g.hp + i * g.dh) * g.wp + j * g.dw, g.q * sizeof(floating))
                dst += ld


cdef void col2im_wide_add(const floating* dcol, Py_ssize_t ld, const Geometry* g,
                          floating* dxp) noexcept nogil:
    # Adjoint of im2col_wide, over the real columns only: a junk column of dcol is the
    # weights times a zero gradient, NaN where a weight is infinite, and it would land
    # on a real pixel of the next row (see "Special values" above).
    cdef Py_ssize_t c, i, j, oh, ow
    cdef floating* dst
    cdef const floating* src
    for c in range(g.cg):
        for i in range(g.kh):
            for j in range(g.kw):
                dst = dxp + (c * g.hp + i * g.dh) * g.wp + j * g.dw
                src = dcol + ((c * g.kh + i) * g.kw + j) * ld
                for oh in range(g.h_out):
                    for ow in range(g.w_out):
                        dst[ow] += src[ow]
                    dst += g.wp
                    src += g.wp


cdef void zero_junk_columns(floating* col, Py_ssize_t ld, const Geometry* g) noexcept nogil:
    # Clear the junk columns of one sample's im2col_wide block (k rows, ld apart). They
    # hold real pixels of the next row, which the weight gradient would multiply by the
    # junk columns' zero output gradient: NaN where such a pixel is not finite.
    cdef Py_ssize_t r, oh, ow
    cdef floating* row
    if g.wp == g.w_out:
        return
    for r in range(g.k):
        row = col + r * ld
        for oh in range(g.h_out):
            for ow in range(g.w_out, g.wp):
                row[ow] = 0
            row += g.wp


cdef void forward_chunk_wide(const floating* x, const floating* weight,
                             const floating* bias, floating* out, Py_ssize_t ns,
                             floating* col, floating* tmp, floating* xp,
                             const Geometry* g) noexcept nogil:
    cdef Py_ssize_t grp, s, co, oh, ow, ld = ns * g.q
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    cdef const floating* src
    cdef floating* dst
    cdef floating b
    for grp in range(g.groups):
        for s in range(ns):
            pad_plane(x + s * x_stride + grp * g.cg * g.h * g.w, g, xp)
            im2col_wide(xp, g, col + s * g.q, ld)
        gemm(&BLAS, False, False, <int> g.cog, <int> ld, <int> g.k,
             1, weight + grp * g.cog * g.k, <int> g.k, col, <int> ld, 0, tmp, <int> ld)
        for s in range(ns):
            for co in range(g.cog):
                b = bias[grp * g.cog + co] if bias != NULL else 0
                src = tmp + co * ld + s * g.q
                dst = out + s * out_stride + (grp * g.cog + co) * g.p
                for oh in range(g.h_out):
                    for ow in range(g.w_out):
                        dst[ow] = src[ow] + b
                    src += g.wp
                    dst += g.w_out


cdef void gather_wide(const floating* grad_out, floating* dy, Py_ssize_t ld,
                      const Geometry* g) noexcept nogil:
    # One sample's output gradient (cog rows of one group) into the wide layout, zero in
    # the junk columns. Zero times a pixel is not nothing when the pixel is infinite or
    # NaN: the BLAS path clears the junk columns of x too (zero_junk_columns), the
    # direct kernel runs only on finite x (see "Special values" above).
    cdef Py_ssize_t co, oh, ow
    cdef const floating* src
    cdef floating* dst
    for co in range(g.cog):
        src = grad_out + co * g.p
        dst = dy + co * ld
        for oh in range(g.h_out):
            for ow in range(g.w_out):
                dst[ow] = src[ow]
            for ow in range(g.w_out, g.wp):
                dst[ow] = 0
            src += g.w_out
            dst += g.wp


cdef void backward_chunk_wide(const floating* grad_out, const floating* x,
                              const floating* weight, floating* grad_x,
                              floating* grad_weight, Py_ssize_t ns,
                              floating* col, floating* dy, floating* dcol, floating* xp,
                              const Geometry* g) noexcept nogil:
    # Wide-layout backward (see im2col_wide); the bias gradient is summed by the caller.
    cdef Py_ssize_t grp, s, c, ih, ld = ns * g.q
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    for grp in range(g.groups):
        for s in range(ns):
            gather_wide(grad_out + s * out_stride + grp * g.cog * g.p, dy + s * g.q, ld, g)
        if grad_weight != NULL:
            for s in range(ns):
                pad_plane(x + s * x_stride + grp * g.cg * g.h * g.w, g, xp)
                im2col_wide(xp, g, col + s * g.q, ld)
                zero_junk_columns(col + s * g.q, ld, g)
            gemm(&BLAS, False, True, <int> g.cog, <int> g.k, <int> ld,
                 1, dy, <int> ld, col, <int> ld,
                 1, grad_weight + grp * g.cog * g.k, <int> g.k)
        if grad_x != NULL:
            gemm(&BLAS, True, False, <int> g.k, <int> ld, <int> g.cog,
                 1, weight + grp * g.cog * g.k, <int> g.k, dy, <int> ld, 0, dcol, <int> ld)
            for s in range(ns):
                memset(xp, 0, g.plane * sizeof(floating))
                col2im_wide_add(dcol + s * g.q, ld, g, xp)
                for c in range(g.cg):
                    for ih in range(g.h):
                        memcpy(grad_x + s * x_stride + ((grp * g.cg + c) * g.h + ih) * g.w,
                               xp + (c * g.hp + ih + g.ph) * g.wp + g.pw,
                               g.w * sizeof(floating))


cdef floating row_sum(const floating* src, Py_ssize_t n) noexcept nogil:
    # Eight independent partial sums: a single running sum is one long dependency chain
    # that the compiler may not reorder (or vectorize) without -ffast-math.
    cdef floating part[8]
    cdef Py_ssize_t t, lane, n8 = n - n % 8
    cdef floating total = 0
    for lane in range(8):
        part[lane] = 0
    for t in range(0, n8, 8):
        for lane in range(8):
            part[lane] += src[t + lane]
    for t in range(n8, n):
        total += src[t]
    for lane in range(8):
        total += part[lane]
    return total


cdef void add_bias_grad(const floating* grad_out, floating* grad_bias, Py_ssize_t ns,
                        const Geometry* g) noexcept nogil:
    cdef Py_ssize_t s, co
    for s in range(ns):
        for co in range(g.c_out):
            grad_bias[co] += row_sum(grad_out + (s * g.c_out + co) * g.p, g.p)


ctypedef struct DirectPlan:
    # What every sample of one direct convolution shares: the weights packed per group
    # as [co_block][tap][co_in_block] (zero rows past cog) and each tap's offset in the
    # padded plane; and the sizes of the per-thread scratch forward_sample_direct uses.
    int level
    bint lanes                   # output channels across the vector lanes (see below)
    bint rows                    # positions a row vector at a time (rows_pay)
    Py_ssize_t cb, cog_pad, q_pad
    Py_ssize_t k_chunk           # taps per pass of the wide kernel: whole channels
    Py_ssize_t n_xp              # padded plane plus the slack the kernel reads past it
    Py_ssize_t per_thread        # n_xp + the (cog_pad, q_pad) wide output block (none
                                 # for rows, which writes the output planes)
    Py_ssize_t n_vec             # rows: vectors per plane, rounded up to a block
    float* wpk
    Py_ssize_t* off
    Py_ssize_t* ranges           # per block of positions, the taps of each channel to
                                 # visit (direct_conv.h); NULL: all of them
    Py_ssize_t* vx               # rows: each vector's offset in the padded plane
    Py_ssize_t* vo               # rows: and in the output plane


cdef enum:
    WHOLE_PLANE_BYTES = 256 * 1024
    CHUNK_BYTES = 256 * 1024


cdef bint lanes_forward_pays(const Geometry* g) noexcept nogil:
    # The wide kernel computes the junk columns of every padded row (kw - 1 of every wp:
    # 29% on LeNet's C3) and pads cog to its channel block; the lanes kernel computes only
    # real outputs but pads cog to the vector width. Taken when it saves a quarter, and
    # when there are taps enough (32) to amortize each block's set-up and stores: with
    # the 9 of a one-channel 3x3 kernel it was 27% slower.
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_wgrad_t_lanes(level), cb, tb
    if not (g.wide and g.dw == 1 and g.k >= 32 and fastcnn_lanes_fwd_has(level, g.kw)):
        return False
    cb = fastcnn_direct_co_block(level, g.cog)
    tb = fastcnn_direct_t_block(level)
    return (4 * ((g.cog + lanes - 1) // lanes * lanes) * g.p
            < 3 * ((g.cog + cb - 1) // cb * cb) * ((g.q + tb - 1) // tb * tb))


cdef Py_ssize_t chunk_channels(const Geometry* g) noexcept nogil:
    # Input channels per pass of the wide kernel. A plane of up to WHOLE_PLANE_BYTES is
    # taken whole (one pass: LeNet's, and the 148 KB of 32 channels of 34x34, where two
    # passes were 3% slower). A larger one goes in chunks of CHUNK_BYTES, which stay in
    # cache while every block of output channels reads them, the rest of L2 holding
    # the partial sums that stream past (64 channels of 58x58, 861 KB: 6% faster in
    # chunks of 96 KB than whole on a machine with 512 KB of L2 per core; on the one of
    # 2026-12-04, with 2 MB, chunks of 256 KB took `large` forward 14.0-14.2 -> 13.7 ms, its
    # input gradient 13.9-14.2 -> 13.6-13.7 ms, against 14.5 ms whole, at 2 threads).
    cdef Py_ssize_t per_channel = g.hp * g.wp * sizeof(float)
    if per_channel == 0 or g.cg * per_channel <= WHOLE_PLANE_BYTES:
        return g.cg
    return max(1, min(g.cg, CHUNK_BYTES // per_channel))


cdef bint rows_pay(const Geometry* g, Py_ssize_t cb, Py_ssize_t tb) noexcept nogil:
    # The row-vector kernel (direct_conv.h) needs output rows of whole vectors; it is
    # taken where it computes no more positions than the wide kernel, whose junk columns
    # it skips, and it saves the wide block's copy into the output. `mid` (rows of 32,
    # 34 wide padded) at 2 threads, medians of 5 alternating runs (2026-12-05): forward
    # 4.23 -> 4.06 ms, backward 9.36 -> 9.20 ms (its input gradient takes it too). On
    # AVX2 (forced on the same machine) rows of 8 qualify: `digits` forward 0.094 ->
    # 0.072 ms, `large` 21.9 -> 20.8 ms, `mid` 6.80 -> 6.31 ms.
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_wgrad_t_lanes(level), nv = tb // lanes
    if level == 0 or cb == 1 or g.w_out % lanes != 0 or g.p == 0:
        return False
    return ((g.p // lanes + nv - 1) // nv * nv) * lanes <= (g.q + tb - 1) // tb * tb


cdef bint direct_rows_pay(const Geometry* g) noexcept nogil:
    # rows_pay for the channel and position blocks plan_direct takes without lanes
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t cb = fastcnn_direct_co_block(level, g.cog)
    return rows_pay(g, cb, fastcnn_direct_conv_t_block(level, cb, g.k))


cdef void block_kernel_rows(const Geometry* g, Py_ssize_t oh0, Py_ssize_t oh1,
                            Py_ssize_t* i_lo, Py_ssize_t* i_hi) noexcept nogil:
    # A block of positions covers output rows oh0..oh1 (oh1 past the last row: junk
    # positions); kernel row i reads padded rows oh + i*dh, which hold data in
    # [ph, ph + h). The kernel rows that reach data for some row of the block:
    # i_lo..i_hi (empty when i_hi < i_lo).
    oh1 = min(oh1, g.h_out - 1)
    i_lo[0] = max(0, (g.ph - oh1 + g.dh - 1) // g.dh) if oh0 < g.h_out else 0
    i_hi[0] = min(g.kh - 1, (g.ph + g.h - 1 - oh0) // g.dh) if oh0 < g.h_out else -1
    if i_hi[0] < i_lo[0]:
        i_lo[0], i_hi[0] = 0, -1


cdef int plan_direct(DirectPlan* plan, const float* weight, const Geometry* g,
                     bint skip_padding_rows) except -1:
    # Fills plan; on success the caller releases it with free_plan. skip_padding_rows:
    # leave out, per block of positions, the kernel rows that read only padding rows.
    # That skips products with zero, which changes nothing for finite weights: it is
    # asked for by the input gradient only, whose padding the numpy backend never
    # multiplies and which runs here only with finite weights (see "Special values"),
    # and it keeps the wide or the row-vector kernel (rows_pay decides). Otherwise the
    # lanes kernel is used where it pays.
    cdef Py_ssize_t tb, grp, co, r, b, v, n_blocks, i_lo, i_hi, lanes, nv, oh0, oh1
    plan.level = fastcnn_direct_level()
    plan.lanes = not skip_padding_rows and lanes_forward_pays(g)
    if plan.lanes:
        plan.cb = fastcnn_wgrad_t_lanes(plan.level)
        tb = fastcnn_direct_t_block(plan.level)
    else:
        plan.cb = fastcnn_direct_co_block(plan.level, g.cog)
        tb = fastcnn_direct_conv_t_block(plan.level, plan.cb, g.k)
    plan.rows = not plan.lanes and rows_pay(g, plan.cb, tb)
    lanes = fastcnn_wgrad_t_lanes(plan.level)
    nv = tb // lanes
    plan.cog_pad = (g.cog + plan.cb - 1) // plan.cb * plan.cb
    plan.q_pad = (g.q + tb - 1) // tb * tb
    plan.n_vec = (g.p // lanes + nv - 1) // nv * nv if plan.rows else 0
    plan.n_xp = whole_lines(g.plane + tb)  # reads run up to tb past the last valid column
    plan.k_chunk = chunk_channels(g) * g.kh * g.kw
    plan.per_thread = plan.n_xp + (0 if plan.rows else plan.cog_pad * plan.q_pad)
    n_blocks = plan.n_vec // nv if plan.rows else plan.q_pad // tb
    plan.wpk = <float*> calloc(g.groups * plan.cog_pad * g.k, sizeof(float))
    plan.off = <Py_ssize_t*> malloc(g.k * sizeof(Py_ssize_t))
    plan.ranges = NULL
    plan.vx = NULL
    plan.vo = NULL
    if skip_padding_rows:
        plan.ranges = <Py_ssize_t*> malloc(2 * n_blocks * sizeof(Py_ssize_t))
    if plan.rows:
        plan.vx = <Py_ssize_t*> malloc(plan.n_vec * sizeof(Py_ssize_t))
        plan.vo = <Py_ssize_t*> malloc(plan.n_vec * sizeof(Py_ssize_t))
    if (plan.wpk == NULL or plan.off == NULL or (skip_padding_rows and plan.ranges == NULL)
            or (plan.rows and (plan.vx == NULL or plan.vo == NULL))):
        free_plan(plan)
        raise MemoryError("conv2d: cannot allocate the packed weights")
    if plan.rows:
        # vectors in row order; the block-filling ones past the last repeat it
        for v in range(plan.n_vec):
            r = min(v, g.p // lanes - 1) * lanes  # the vector's first output position
            plan.vx[v] = r // g.w_out * g.wp + r % g.w_out
            plan.vo[v] = r
    if skip_padding_rows:
        for b in range(n_blocks):
            if plan.rows:
                oh0 = plan.vo[b * nv] // g.w_out
                oh1 = plan.vo[b * nv + nv - 1] // g.w_out
            else:
                oh0 = b * tb // g.wp
                oh1 = (b * tb + tb - 1) // g.wp
            block_kernel_rows(g, oh0, oh1, &i_lo, &i_hi)
            plan.ranges[2 * b] = i_lo * g.kw
            plan.ranges[2 * b + 1] = (i_hi + 1) * g.kw
    for grp in range(g.groups):
        for co in range(g.cog):
            for r in range(g.k):
                plan.wpk[grp * plan.cog_pad * g.k + (co // plan.cb) * plan.cb * g.k
                         + r * plan.cb + co % plan.cb] = weight[(grp * g.cog + co) * g.k + r]
    tap_offsets(g, plan.off, g.k)
    return 0


cdef void free_plan(DirectPlan* plan) noexcept nogil:
    free(plan.wpk)
    free(plan.off)
    free(plan.ranges)
    free(plan.vx)
    free(plan.vo)
    plan.wpk = NULL
    plan.off = NULL
    plan.ranges = NULL
    plan.vx = NULL
    plan.vo = NULL


cdef void forward_sample_direct(const float* x, const DirectPlan* plan, const float* bias,
                                float* out, float* scratch, const Geometry* g) noexcept nogil:
    # One sample through the register-blocked direct kernel (direct_conv.h), group by
    # group: pad the group's input planes, convolve into the wide layout, copy the valid
    # columns out with the bias. scratch: plan.per_thread elements.
    cdef Py_ssize_t grp, co, oh, ow, t
    cdef float* xp = scratch
    cdef float* tmp = scratch + plan.n_xp
    cdef const float* src
    cdef float* dst
    cdef float b
    for grp in range(g.groups):
        pad_plane(x + grp * g.cg * g.h * g.w, g, xp)
        if plan.lanes:
            # tmp is (position, cog_pad): one row of positions per call, every channel block
            for oh in range(g.h_out):
                fastcnn_lanes_fwd_row(
                    plan.level, g.kw, xp + oh * g.wp, g.hp * g.wp, g.dh * g.wp, g.cg,
                    g.kh, plan.wpk + grp * plan.cog_pad * g.k, g.k, plan.cog_pad,
                    tmp + oh * g.w_out * plan.cog_pad, plan.cog_pad, g.w_out)
            for co in range(g.cog):
                b = bias[grp * g.cog + co] if bias != NULL else 0
                dst = out + (grp * g.cog + co) * g.p
                for t in range(g.p):
                    dst[t] = tmp[t * plan.cog_pad + co] + b
            continue
        if plan.rows:
            fastcnn_direct_rows(plan.level, plan.cb, xp, plan.off, g.k, g.kh * g.kw,
                                plan.k_chunk, plan.ranges, plan.wpk + grp * plan.cog_pad * g.k,
                                g.cog, plan.cog_pad, plan.vx, plan.vo, plan.n_vec,
                                (bias + grp * g.cog) if bias != NULL else NULL,
                                out + grp * g.cog * g.p, g.p)
            continue
        fastcnn_direct_conv(plan.level, plan.cb, xp, plan.off, g.k, g.kh * g.kw,
                            plan.k_chunk, plan.ranges, plan.wpk + grp * plan.cog_pad * g.k,
                            plan.cog_pad, tmp, plan.q_pad, plan.q_pad)
        for co in range(g.cog):
            b = bias[grp * g.cog + co] if bias != NULL else 0
            src = tmp + co * plan.q_pad
            dst = out + (grp * g.cog + co) * g.p
            for oh in range(g.h_out):
                for ow in range(g.w_out):
                    dst[ow] = src[ow] + b
                src += g.wp
                dst += g.w_out


cdef void forward_chunk(const floating* x, const floating* weight, const floating* bias,
                        floating* out, Py_ssize_t ns, floating* col, floating* tmp,
                        const Geometry* g) noexcept nogil:
    # ns consecutive samples: their column blocks sit side by side in col (k, ns*p), so
    # one GEMM per group covers the whole chunk. With ns == 1 the product lands in out
    # directly; otherwise in tmp (cog, ns*p), copied out (with the bias) per sample.
    cdef Py_ssize_t grp, s, co, q, ld = ns * g.p
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    cdef const floating* columns
    cdef const floating* src
    cdef floating* dst
    cdef floating b
    for grp in range(g.groups):
        if g.direct and ns == 1:
            columns = x + grp * g.cg * g.h * g.w
        else:
            for s in range(ns):
                if g.direct:
                    for co in range(g.cg):  # reusing co as the input-channel counter
                        src = x + s * x_stride + (grp * g.cg + co) * g.p
                        dst = col + co * ld + s * g.p
                        for q in range(g.p):
                            dst[q] = src[q]
                else:
                    im2col(x + s * x_stride + grp * g.cg * g.h * g.w, g, col + s * g.p, ld)
            columns = col
        if ns == 1:
            gemm(&BLAS, False, False, <int> g.cog, <int> g.p, <int> g.k,
                 1, weight + grp * g.cog * g.k, <int> g.k, columns, <int> g.p,
                 0, out + grp * g.cog * g.p, <int> g.p)
        else:
            gemm(&BLAS, False, False, <int> g.cog, <int> ld, <int> g.k,
                 1, weight + grp * g.cog * g.k, <int> g.k, columns, <int> ld,
                 0, tmp, <int> ld)
            for s in range(ns):
                for co in range(g.cog):
                    src = tmp + co * ld + s * g.p
                    dst = out + s * out_stride + (grp * g.cog + co) * g.p
                    b = bias[grp * g.cog + co] if bias != NULL else 0
                    for q in range(g.p):
                        dst[q] = src[q] + b
    if ns == 1 and bias != NULL:
        for co in range(g.c_out):
            dst = out + co * g.p
            b = bias[co]
            for q in range(g.p):
                dst[q] += b


cdef void backward_chunk(const floating* grad_out, const floating* x,
                         const floating* weight, floating* grad_x,
                         floating* grad_weight, floating* grad_bias, Py_ssize_t ns,
                         floating* col, floating* dy, floating* dcol,
                         const Geometry* g) noexcept nogil:
    # ns consecutive samples. grad_weight / grad_bias are this thread's partial sums
    # (accumulated into); grad_x is the chunk's input gradient (overwritten).
    # col (k, ns*p): the chunk's columns; dy (cog, ns*p): its output gradient gathered
    # group by group; dcol (k, ns*p): the column gradient before col2im.
    cdef Py_ssize_t grp, s, co, q, ld = ns * g.p
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    cdef const floating* go
    cdef const floating* columns
    cdef const floating* src
    cdef floating* dst
    if grad_x != NULL and not g.direct:
        memset(grad_x, 0, ns * x_stride * sizeof(floating))
    for grp in range(g.groups):
        if ns == 1:
            go = grad_out + grp * g.cog * g.p
        else:
            for s in range(ns):
                for co in range(g.cog):
                    src = grad_out + s * out_stride + (grp * g.cog + co) * g.p
                    dst = dy + co * ld + s * g.p
                    for q in range(g.p):
                        dst[q] = src[q]
            go = dy
        if grad_weight != NULL:
            if g.direct and ns == 1:
                columns = x + grp * g.cg * g.h * g.w
            else:
                for s in range(ns):
                    if g.direct:
                        for co in range(g.cg):
                            src = x + s * x_stride + (grp * g.cg + co) * g.p
                            dst = col + co * ld + s * g.p
                            for q in range(g.p):
                                dst[q] = src[q]
                    else:
                        im2col(x + s * x_stride + grp * g.cg * g.h * g.w, g,
                               col + s * g.p, ld)
                columns = col
            # dW_grp (cog, k) += dY_grp (cog, ns*p) @ columns^T (ns*p, k)
            gemm(&BLAS, False, True, <int> g.cog, <int> g.k, <int> ld,
                 1, go, <int> ld, columns, <int> ld,
                 1, grad_weight + grp * g.cog * g.k, <int> g.k)
        if grad_x != NULL:
            if g.direct and ns == 1:
                gemm(&BLAS, True, False, <int> g.k, <int> g.p, <int> g.cog,
                     1, weight + grp * g.cog * g.k, <int> g.k, go, <int> g.p,
                     0, grad_x + grp * g.cg * g.h * g.w, <int> g.p)
            else:
                # dcolumns (k, ns*p) = W_grp^T (k, cog) @ dY_grp (cog, ns*p)
                gemm(&BLAS, True, False, <int> g.k, <int> ld, <int> g.cog,
                     1, weight + grp * g.cog * g.k, <int> g.k, go, <int> ld,
                     0, dcol, <int> ld)
                for s in range(ns):
                    if g.direct:
                        for co in range(g.cg):
                            src = dcol + co * ld + s * g.p
                            dst = grad_x + s * x_stride + (grp * g.cg + co) * g.p
                            for q in range(g.p):
                                dst[q] = src[q]
                    else:
                        col2im_add(dcol + s * g.p, ld, g,
                                   grad_x + s * x_stride + grp * g.cg * g.h * g.w)
    if grad_bias != NULL:
        add_bias_grad(grad_out, grad_bias, ns, g)


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
    g.hp = h + 2 * ph
    if sw == 1 and w_out == w + 2 * pw - dw * (kw - 1):
        # Padded rows share their horizontal padding: the pw zeros that open row r+1
        # also close row r, because no tap reaches further right than pw past the data
        # (w_out - 1 + dw*(kw-1) = w + 2pw - 1 < wp + pw). Rows of w + pw (w_out where
        # that is wider) leave fewer junk columns in the wide layout: none in the input
        # gradient's full correlation (pw = kw - 1: 196 positions per plane instead of
        # 252 on LeNet's C3), 1 of 9 instead of 2 of 10 on `digits`.
        g.wp = max(w + pw, w_out)
    else:
        g.wp = w + 2 * pw
    # The wide layout computes (and buffers) the whole padded plane: worth it only when
    # that is not much larger than the output, which huge padding or dilation break.
    g.wide = (sh == 1 and sw == 1 and not g.direct
              and g.hp <= 2 * h_out + 16 and g.wp <= 2 * w_out + 16
              and h_out * g.wp <= INT_MAX)
    g.q = h_out * g.wp if g.wide else g.p
    # Wide rows of the last taps run (kw-1)*dw elements past the padded block.
    g.plane = g.cg * g.hp * g.wp + (kw - 1) * dw
    if g.k > INT_MAX or g.q > INT_MAX or g.cog > INT_MAX or g.cg * h * w > INT_MAX:
        raise ValueError(
            f"convolution too large for BLAS's 32-bit sizes: {g.k} x {g.q} column matrix "
            f"for {c_in} input channels of {h}x{w}"
        )
    return g


# Columns per GEMM worth aiming for, and the most scratch one chunk may take (elements).
cdef enum:
    TARGET_COLUMNS = 1024
    MAX_CHUNK_ELEMENTS = 1 << 20


cdef Py_ssize_t chunk_size(Py_ssize_t n, int threads, const Geometry* g) noexcept:
    # Samples per GEMM: enough columns to keep BLAS efficient, bounded scratch, and at
    # least one chunk per thread.
    cdef Py_ssize_t nb = (TARGET_COLUMNS + g.q - 1) // g.q
    cdef Py_ssize_t per_thread = (n + threads - 1) // threads
    cdef Py_ssize_t rows = g.k if g.k > g.cog else g.cog
    if nb > per_thread:
        nb = per_thread
    while nb > 1 and nb * g.q * rows > MAX_CHUNK_ELEMENTS:
        nb -= 1
    return nb if nb > 0 else 1


cdef enum:
    # Below this many multiply-adds a call runs on one thread: waking a team costs more.
    MIN_PARALLEL_MACS = 1 << 21


cdef inline Py_ssize_t whole_lines(Py_ssize_t n) noexcept nogil:
    # n floats rounded up to whole 64-byte cache lines. Per-thread blocks and the buffers
    # in them start on a line (the kept scratch does), so that the kernels' vector loads
    # and stores of them do not straddle two lines. Before, the second thread's block of
    # LeNet C1's weight gradient started 8 bytes into a line, and the step's C1 backward
    # took 195-203 us at 2 threads against 326-340 at 1; now 176-184. At 2 threads,
    # medians of 5 alternating runs (2026-12-05): `mid` backward 9.25 -> 8.73 ms (the
    # transposed output gradient of its weight gradient started 8 bytes into a line),
    # `large` 27.2 -> 26.0 ms, `digits` forward 0.073 -> 0.066 ms.
    return (n + 15) // 16 * 16


cdef Py_ssize_t scratch_elements(Py_ssize_t threads, Py_ssize_t per_thread,
                                 Py_ssize_t itemsize) except -1:
    # threads * per_thread * itemsize must not wrap around before it reaches malloc.
    if per_thread > (PY_SSIZE_T_MAX // itemsize) // threads:
        raise MemoryError(f"conv2d: {threads} x {per_thread} scratch elements is too much")
    return max(1, threads * per_thread)


cdef void* take_scratch(Py_ssize_t threads, Py_ssize_t per_thread, Py_ssize_t itemsize,
                        str op, bint zeroed=False) except NULL:
    # threads x per_thread elements of per-thread scratch (scratch.h: the block kept
    # from the last call when it is free and large enough); fastcnn_scratch_give_back() it.
    cdef size_t n = scratch_elements(threads, per_thread, itemsize) * itemsize
    cdef void* p = fastcnn_scratch_take(n)
    if p == NULL:
        raise MemoryError(f"{op}: cannot allocate {threads} x {per_thread} scratch")
    if zeroed:
        memset(p, 0, n)
    return p


def _release_scratch() -> int:
    """Free the convolution scratch kept between calls (unless a call is using it);
    return the bytes still kept."""
    return fastcnn_scratch_release()


def _kept_scratch_bytes() -> int:
    """Bytes of convolution scratch kept between calls."""
    return fastcnn_scratch_kept()


cdef inline void zero_block(float* scratch, Py_ssize_t b, Py_ssize_t per_thread,
                            Py_ssize_t n) noexcept nogil:
    # Block b of a per-thread scratch. The kernels zero their blocks in a prange over the
    # blocks inside their parallel region, so that each thread clears the block it will
    # use (static schedule), in parallel and into its own core's cache: calloc zeroed
    # them all on the calling thread before the team started (LeNet C1's weight
    # gradient: 460 KB at 2 threads, 237 -> 208 us inside the training step). Every
    # block, not only the running threads' own: a team smaller than asked for (no
    # OpenMP, OMP_THREAD_LIMIT, a nested region) leaves some unused, and the partial
    # sums still add them up. n: the elements to clear from the start of the block.
    memset(scratch + b * per_thread, 0, n * sizeof(float))


cdef int batch_threads(Py_ssize_t n, int n_threads, const Geometry* g) noexcept:
    if n * g.c_out * g.p * g.k < MIN_PARALLEL_MACS:
        return 1
    return <int> (n if n < n_threads else n_threads)


cdef bint direct_pays(const Geometry* g) noexcept nogil:
    # The direct kernel fills blocks of output channels: with very few of them (2 in a
    # block of 6) most of each block would be padding. One channel has its own kernel.
    cdef int level = fastcnn_direct_level()
    return g.wide and level > 0 and 2 * g.cog >= fastcnn_direct_co_block(level, g.cog)


cdef void sum_weight_partials(const float* partial, Py_ssize_t co_stride,
                              Py_ssize_t r_stride, Py_ssize_t grp_stride,
                              Py_ssize_t per_thread, int threads, float* grad_weight,
                              const Geometry* g) noexcept nogil:
    # grad_weight (c_out, k) = the per-thread partial weight gradients summed in thread
    # order (deterministic for a thread count); thread t's partial sits per_thread past
    # thread t-1's, laid out with the given strides per group, channel and tap.
    cdef Py_ssize_t grp, co, r, t
    cdef const float* dw
    cdef float* dst
    for grp in range(g.groups):
        for co in range(g.cog):
            for r in range(g.k):
                dw = partial + grp * grp_stride + co * co_stride + r * r_stride
                dst = grad_weight + (grp * g.cog + co) * g.k + r
                dst[0] = dw[0]
                for t in range(1, threads):
                    dst[0] += dw[t * per_thread]


cdef void sum_partials(const floating* partial, Py_ssize_t per_thread, int threads,
                       floating* out, Py_ssize_t n) noexcept nogil:
    # out[:n] = the per-thread partials (thread t's n values start t * per_thread past
    # thread 0's) summed in thread order: deterministic for a thread count.
    cdef Py_ssize_t i, t
    for i in range(n):
        out[i] = partial[i]
        for t in range(1, threads):
            out[i] += partial[t * per_thread + i]


cdef void tap_offsets(const Geometry* g, Py_ssize_t* off, Py_ssize_t k_pad) noexcept nogil:
    # Offset of each kernel tap (c, i, j) in the padded plane block of one group; taps
    # past k (padding a block) repeat the last, so they read valid memory (their results
    # are dropped).
    cdef Py_ssize_t c, i, j, r
    for c in range(g.cg):
        for i in range(g.kh):
            for j in range(g.kw):
                off[(c * g.kh + i) * g.kw + j] = (c * g.hp + i * g.dh) * g.wp + j * g.dw
    for r in range(g.k, k_pad):
        off[r] = off[g.k - 1]


cdef int forward_direct(const float* x, const float* weight, const float* bias, float* out,
                       Py_ssize_t n_batch, int threads, const Geometry* g,
                       bint skip_padding_rows) except -1:
    # Samples in parallel through forward_sample_direct, each thread on its own scratch.
    cdef DirectPlan plan
    cdef Py_ssize_t n, b
    cdef float* scratch = NULL
    cdef float* base
    plan_direct(&plan, weight, g, skip_padding_rows)
    try:
        scratch = <float*> take_scratch(threads, plan.per_thread, sizeof(float), "conv2d")
        with nogil:
            with parallel(num_threads=threads):
                # Zeroed: the kernel reads the slack past the padded plane.
                for b in prange(threads, schedule="static"):
                    zero_block(scratch, b, plan.per_thread, plan.per_thread)
                base = scratch + threadid() * plan.per_thread
                for n in prange(n_batch, schedule="static"):
                    forward_sample_direct(x + n * g.c_in * g.h * g.w, &plan, bias,
                                          out + n * g.c_out * g.p, base, g)
            team_released(threads)
    finally:
        free_plan(&plan)
        fastcnn_scratch_give_back(scratch)
    return 0


# At stride 1 the input gradient is itself a convolution: grad_out, padded by
# dilation*(k-1) - padding, correlated with the weights flipped in space and with
# input/output channels swapped (per group). So it runs on the direct kernel too.

cdef Geometry input_grad_geometry(const Geometry* g) except *:
    return make_geometry(
        g.c_out, g.h_out, g.w_out, g.c_in, g.kh, g.kw, g.h, g.w, 1, 1,
        g.dh * (g.kh - 1) - g.ph, g.dw * (g.kw - 1) - g.pw, g.dh, g.dw, g.groups)


cdef float* flipped_weights(const float* weight, const Geometry* g) except NULL:
    # The (c_in, cog, kh, kw) weights of the input-gradient convolution; free() them.
    cdef Py_ssize_t grp, c, co, i, j
    cdef float* flipped = <float*> malloc(g.c_in * g.cog * g.kh * g.kw * sizeof(float))
    if flipped == NULL:
        raise MemoryError("conv2d_backward: cannot allocate the flipped weights")
    for grp in range(g.groups):
        for c in range(g.cg):
            for co in range(g.cog):
                for i in range(g.kh):
                    for j in range(g.kw):
                        flipped[(((grp * g.cg + c) * g.cog + co) * g.kh + i) * g.kw + j] = (
                            weight[(((grp * g.cog + co) * g.cg + c) * g.kh
                                    + g.kh - 1 - i) * g.kw + g.kw - 1 - j])
    return flipped


cdef int input_grad_direct(const float* grad_out, const float* weight, float* grad_x,
                           Py_ssize_t n_batch, int n_threads, const Geometry* g) except -1:
    cdef Geometry t = input_grad_geometry(g)
    cdef float* flipped = flipped_weights(weight, g)
    try:
        forward_direct(grad_out, flipped, NULL, grad_x, n_batch,
                       batch_threads(n_batch, n_threads, &t), &t, True)
    finally:
        free(flipped)
    return 0


cdef bint direct_input_grad_pays(const Geometry* g) noexcept nogil:
    # The input gradient as a direct convolution (input_grad_geometry), as for
    # direct_pays; padding past dilation * (k - 1) would need a negative one.
    cdef int level = fastcnn_direct_level()
    return (g.wide and level > 0 and 2 * g.cg >= fastcnn_direct_co_block(level, g.cg)
            and g.ph <= g.dh * (g.kh - 1) and g.pw <= g.dw * (g.kw - 1))


cdef enum:
    # Most per-thread scratch (bytes) the samples-across-lanes backward pass may take
    # (the L2 of a core of the machine measured): LeNet C3 takes 406 KB.
    BATCH_LANES_SCRATCH_BYTES = 2 << 20


ctypedef struct BatchLayout:
    # Per-thread scratch of backward_batch, in floats: [weight-gradient lanes | bias
    # partials | one block of samples' output gradient | input gradient | padded input],
    # the last three transposed to (position, sample).
    Py_ssize_t n_dw, off_dy, n_dy, off_gx, off_xp, n_xp, per_thread


cdef BatchLayout batch_layout(const Geometry* g, bint weight, bint bias) noexcept nogil:
    # weight, bias: whether the weight and bias gradients are wanted (the input gradient
    # always has its place, as the scratch bound assumes every gradient).
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_igrad_lanes(level), ob = fastcnn_wgrad_batch_o_block(level)
    cdef Py_ssize_t rb = fastcnn_wgrad_batch_r_block(level)
    cdef Py_ssize_t cog_pad = (g.cog + ob - 1) // ob * ob, k_pad = (g.k + rb - 1) // rb * rb
    cdef BatchLayout lay
    lay.n_dw = g.groups * cog_pad * k_pad * lanes if weight else 0
    lay.off_dy = whole_lines(lay.n_dw + (g.c_out if bias else 0))
    lay.n_dy = cog_pad * g.p * lanes
    lay.off_gx = lay.off_dy + lay.n_dy
    lay.off_xp = lay.off_gx + g.cg * g.h * g.w * lanes
    lay.n_xp = g.cg * g.hp * (g.w + 2 * g.pw) * lanes if weight else 0
    lay.per_thread = lay.off_xp + lay.n_xp
    return lay


cdef int batch_input_grad_pays(const Geometry* g, Py_ssize_t n_batch) except -1:
    # The input gradient with the samples across the vector lanes (batch_lanes.h) visits
    # only the taps that reach the output gradient; the wide-layout kernel correlates
    # the output gradient padded by k - 1 on every side, skipping kernel rows per block
    # of positions only. Taken when it saves a quarter of the multiply-adds (the
    # transposes in and out, and the shorter blocks at the edges, cost the rest), with a
    # partial block of samples counted whole. On LeNet's C3 (64 samples, 10x10 output
    # gradient, 5x5 taps) it needs 0.58 of the wide kernel's multiply-adds.
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_igrad_lanes(level), cb, tb, b, i_lo, i_hi, taps = 0
    cdef Geometry t
    if level == 0 or g.sh != 1 or g.sw != 1 or n_batch == 0:
        return False
    if batch_layout(g, True, True).per_thread * sizeof(float) > BATCH_LANES_SCRATCH_BYTES:
        return False
    t = input_grad_geometry(g)
    cb = fastcnn_direct_co_block(level, t.cog)
    tb = fastcnn_direct_conv_t_block(level, cb, t.k)
    for b in range((t.q + tb - 1) // tb):
        block_kernel_rows(&t, b * tb // t.wp, (b * tb + tb - 1) // t.wp, &i_lo, &i_hi)
        taps += (i_hi - i_lo + 1) * t.kw
    # vectors of multiply-adds, times the lanes: per sample for the wide kernel (where
    # the row-vector kernel would run instead, it is counted as the wide one: an
    # overestimate by its junk columns, which may send such a shape across the lanes)
    cdef Py_ssize_t wide = n_batch * taps * t.cg * ((t.cog + cb - 1) // cb * cb) * tb
    cdef Py_ssize_t batch = (n_batch + lanes - 1) // lanes * lanes * fastcnn_igrad_cost(
        level, g.cg, g.cog, g.h, g.w, g.h_out, g.w_out, g.kh, g.kw, g.ph, g.pw, g.dh, g.dw)
    return 4 * batch < 3 * wide


cdef int backward_batch(const float* grad_out, const float* x, const float* weight,
                        float* grad_x, float* grad_weight, float* grad_bias,
                        Py_ssize_t n_batch, int n_threads, const Geometry* g) except -1:
    # The backward pass with the samples across the vector lanes (batch_lanes.h), blocks
    # of `lanes` samples in parallel. Per block and group: the output gradient transposed
    # to (position, sample) once for both kernels; the input gradient computed and
    # transposed back into grad_x; the zero-padded input transposed likewise and the
    # weight gradient accumulated per lane into per-thread partials, summed over lanes
    # and then threads in order at the end. grad_weight and grad_bias may be NULL.
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_igrad_lanes(level), cb = fastcnn_igrad_c_block(level)
    cdef Py_ssize_t ob = fastcnn_wgrad_batch_o_block(level), rb = fastcnn_wgrad_batch_r_block(level)
    cdef Py_ssize_t cg_pad = (g.cg + cb - 1) // cb * cb, taps = g.kh * g.kw
    cdef Py_ssize_t cog_pad = (g.cog + ob - 1) // ob * ob, k_pad = (g.k + rb - 1) // rb * rb
    cdef Py_ssize_t wpb = g.w + 2 * g.pw, n_x = g.cg * g.h * g.w
    cdef Py_ssize_t n_w = cg_pad * g.cog * taps  # packed weights per group
    cdef BatchLayout lay = batch_layout(g, grad_weight != NULL, grad_bias != NULL)
    cdef Py_ssize_t per_thread = lay.per_thread
    cdef Py_ssize_t n_blocks = (n_batch + lanes - 1) // lanes
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    cdef Py_ssize_t grp, c, o, r, i, j, t, l, blk, b, n0, ns
    cdef int threads = batch_threads(n_batch, n_threads, g)
    if threads > n_blocks:
        threads = <int> n_blocks
    cdef float* wpk = <float*> calloc(g.groups * n_w, sizeof(float))
    cdef Py_ssize_t* off = <Py_ssize_t*> malloc(k_pad * sizeof(Py_ssize_t))
    cdef float* scratch = NULL
    cdef float* base
    cdef float* dyb
    cdef const float* src
    cdef float total
    try:
        if wpk == NULL or off == NULL:
            raise MemoryError("conv2d_backward: cannot allocate the packed weights")
        scratch = <float*> take_scratch(threads, per_thread, sizeof(float), "conv2d_backward")
        # [group][channel block][o][tap][channel in block]
        for grp in range(g.groups):
            for c in range(g.cg):
                for o in range(g.cog):
                    for r in range(taps):
                        wpk[grp * n_w + (((c // cb) * g.cog + o) * taps + r) * cb + c % cb] = (
                            weight[((grp * g.cog + o) * g.cg + c) * taps + r])
        # tap (c, ki, kj) in the padded (c, hp, wpb, lanes) block; padded taps repeat the last
        for c in range(g.cg):
            for i in range(g.kh):
                for j in range(g.kw):
                    off[(c * g.kh + i) * g.kw + j] = ((c * g.hp + i * g.dh) * wpb + j * g.dw) * lanes
        for r in range(g.k, k_pad):
            off[r] = off[g.k - 1]
        with nogil:
            with parallel(num_threads=threads):
                # Every thread's partial sums zeroed, used or not (see zero_block).
                for b in prange(threads, schedule="static"):
                    zero_block(scratch, b, per_thread, lay.off_dy)
                base = scratch + threadid() * per_thread
                dyb = base + lay.off_dy
                for blk in prange(n_blocks, schedule="static"):
                    n0 = blk * lanes
                    ns = min(lanes, n_batch - n0)
                    # Lanes past the batch, dy's padded channels and x's padding: zeros
                    # (stale values could be infinite, and 0 * inf is NaN).
                    if ns < lanes:
                        memset(dyb, 0, lay.n_dy * sizeof(float))
                    else:
                        memset(dyb + g.cog * g.p * lanes, 0,
                               (cog_pad - g.cog) * g.p * lanes * sizeof(float))
                    if lay.n_xp > 0 and (ns < lanes or g.ph > 0 or g.pw > 0):
                        memset(base + lay.off_xp, 0, lay.n_xp * sizeof(float))
                    if grad_bias != NULL:
                        add_bias_grad(grad_out + n0 * out_stride, base + lay.n_dw, ns, g)
                    for grp in range(g.groups):
                        fastcnn_transpose(grad_out + n0 * out_stride + grp * g.cog * g.p,
                                          out_stride, ns, g.cog * g.p, dyb, lanes, NULL)
                        if grad_x != NULL:
                            fastcnn_igrad(level, dyb, g.cog, g.h_out, g.w_out, wpk + grp * n_w,
                                          g.cg, g.kh, g.kw, g.ph, g.pw, g.dh, g.dw, g.h, g.w,
                                          base + lay.off_gx)
                            fastcnn_transpose(base + lay.off_gx, lanes, n_x, ns,
                                              grad_x + n0 * x_stride + grp * n_x, x_stride,
                                              NULL)
                        if grad_weight == NULL:
                            continue
                        if g.ph == 0 and g.pw == 0:
                            fastcnn_transpose(x + n0 * x_stride + grp * n_x, x_stride, ns,
                                              n_x, base + lay.off_xp, lanes, NULL)
                        else:
                            for i in range(g.cg * g.h):  # row i % h of channel i // h
                                fastcnn_transpose(
                                    x + n0 * x_stride + grp * n_x + i * g.w, x_stride, ns, g.w,
                                    base + lay.off_xp + (((i // g.h) * g.hp + i % g.h + g.ph) * wpb
                                                     + g.pw) * lanes, lanes, NULL)
                        fastcnn_wgrad_batch(level, dyb, base + lay.off_xp, off, k_pad, cog_pad,
                                            g.h_out, g.w_out, wpb,
                                            base + grp * cog_pad * k_pad * lanes)
            team_released(threads)
            # The lanes of each thread's partials in order, then the threads in order.
            if grad_weight != NULL:
                for grp in range(g.groups):
                    for o in range(g.cog):
                        for r in range(g.k):
                            total = 0
                            for t in range(threads):
                                src = (scratch + t * per_thread
                                       + ((grp * cog_pad + o) * k_pad + r) * lanes)
                                for l in range(lanes):
                                    total = total + src[l]
                            grad_weight[(grp * g.cog + o) * g.k + r] = total
            if grad_bias != NULL:
                sum_partials(scratch + lay.n_dw, per_thread, threads, grad_bias, g.c_out)
    finally:
        free(wpk)
        free(off)
        fastcnn_scratch_give_back(scratch)
    return 0


cdef int weight_grad_direct(const float* x, const float* grad_out, float* grad_weight,
                            float* grad_bias, Py_ssize_t n_batch, int n_threads,
                            const Geometry* g) except -1:
    # The weight gradient on the direct kernel: per thread, chunks of samples padded and
    # gathered into the wide layout, dot products accumulated in registers across the
    # chunk (direct_conv.h), per-thread partials summed in thread order at the end. The
    # bias gradient (when grad_bias is not NULL) is summed from the rows being gathered.
    # Returns 1, with neither gradient written, where x is not finite: the kernel's junk
    # positions multiply pixels by a zero gradient (see "Special values"). Each sample's
    # planes are scanned right after they are padded, in the team and in cache.
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t cb = fastcnn_wgrad_co_block(level), rb = fastcnn_wgrad_tap_block(level)
    cdef Py_ssize_t tb = fastcnn_direct_t_block(level)
    cdef Py_ssize_t cog_pad = (g.cog + cb - 1) // cb * cb, k_pad = (g.k + rb - 1) // rb * rb
    cdef Py_ssize_t q_pad = (g.q + tb - 1) // tb * tb
    cdef Py_ssize_t xp_stride = whole_lines(g.plane + tb), dy_stride = cog_pad * q_pad
    cdef int threads = batch_threads(n_batch, n_threads, g)
    cdef Py_ssize_t per_thread_samples = (n_batch + threads - 1) // threads
    cdef Py_ssize_t ns = (1 << 16) // (xp_stride + dy_stride)  # samples whose scratch fits L2
    if ns > per_thread_samples:
        ns = per_thread_samples
    if ns < 1:
        ns = 1
    # Every thread gets the same number of chunks, and the chunks split the batch evenly
    # (sizes differ by one at most): chunks of ns samples each left the last thread short
    # (`lenet_c1`: 35 and 29 samples of 64, chunks of 7).
    cdef Py_ssize_t n_chunks = threads * ((per_thread_samples + ns - 1) // ns)
    if n_chunks > n_batch:
        n_chunks = n_batch
    ns = (n_batch + n_chunks - 1) // n_chunks  # the largest chunk, for the scratch layout
    cdef Py_ssize_t n_dw = g.groups * cog_pad * k_pad
    cdef Py_ssize_t off_gb = ns * (xp_stride + dy_stride) + n_dw
    cdef Py_ssize_t per_thread = whole_lines(off_gb + g.c_out)
    cdef Py_ssize_t b, c, n0, m, grp, smp, co, r, t
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    cdef Py_ssize_t* off = <Py_ssize_t*> malloc(k_pad * sizeof(Py_ssize_t))
    cdef float* scratch = NULL
    cdef float* base
    try:
        if off == NULL:
            raise MemoryError("conv2d_backward: cannot allocate the tap offsets")
        scratch = <float*> take_scratch(threads, per_thread, sizeof(float), "conv2d_backward")
        tap_offsets(g, off, k_pad)
        with nogil:
            with parallel(num_threads=threads):
                # Zeroed: the kernel reads the slack past each plane and the padded
                # channels and positions of dy, which nothing else writes, and sums into
                # the partials.
                for b in prange(threads, schedule="static"):
                    zero_block(scratch, b, per_thread, per_thread)
                base = scratch + threadid() * per_thread
                for c in prange(n_chunks, schedule="static"):
                    n0 = c * n_batch // n_chunks
                    m = (c + 1) * n_batch // n_chunks - n0
                    for grp in range(g.groups):
                        for smp in range(m):
                            pad_plane(x + (n0 + smp) * x_stride + grp * g.cg * g.h * g.w, g,
                                      base + smp * xp_stride)
                            gather_wide(grad_out + (n0 + smp) * out_stride + grp * g.cog * g.p,
                                        base + ns * xp_stride + smp * dy_stride, q_pad, g)
                        fastcnn_wgrad(level, base, xp_stride, off, k_pad,
                                      base + ns * xp_stride, dy_stride, cog_pad, q_pad, m,
                                      base + ns * (xp_stride + dy_stride) + grp * cog_pad * k_pad)
                    if grad_bias != NULL:
                        add_bias_grad(grad_out + n0 * out_stride, base + off_gb, m, g)
            team_released(threads)
            # A junk column's zero gradient times a pixel adds 0, or NaN where the pixel
            # is not finite: partials without NaN or inf are exact, and a call with one
            # is done again on BLAS, which is (see "Special values" above). Checking the
            # partials, not x, costs a pass over the weight gradient, not over the batch.
            for t in range(threads):
                if not fastcnn_all_finite_f32(scratch + t * per_thread
                                              + ns * (xp_stride + dy_stride), n_dw):
                    return 1
            sum_weight_partials(scratch + ns * (xp_stride + dy_stride), k_pad, 1,
                                cog_pad * k_pad, per_thread, threads, grad_weight, g)
            if grad_bias != NULL:
                sum_partials(scratch + off_gb, per_thread, threads, grad_bias, g.c_out)
    finally:
        free(off)
        fastcnn_scratch_give_back(scratch)
    return 0


cdef bint lanes_wgrad_pays(const Geometry* g) noexcept nogil:
    # Multiply-adds by register block: the lanes kernel pads the output channels to the
    # vector width but visits only real outputs; the wide-layout kernel pads channels to 4
    # and taps to 6 but also visits the junk columns (kw - 1 of every wp on LeNet's C3:
    # 37%). The lanes kernel must save a fifth to be chosen, except where it takes four
    # vectors of channels at a time (AVX-512, channels a multiple of 64): there it reads
    # a quarter as much per multiply-add as the wide kernel, which is bound by L2 on
    # such layers, and was 20% faster on `large` and 5% on `mid` with about the same
    # count (weight gradient alone, the two kernels interleaved, 2026-12-03).
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_wgrad_t_lanes(level)
    cdef Py_ssize_t cog_pad = (g.cog + lanes - 1) // lanes * lanes
    cdef Py_ssize_t rb = fastcnn_wgrad_t_taps(level, cog_pad, g.k)
    cdef Py_ssize_t cb = fastcnn_wgrad_co_block(level), wrb = fastcnn_wgrad_tap_block(level)
    cdef Py_ssize_t tb = fastcnn_direct_t_block(level)
    cdef Py_ssize_t lanes_cost = cog_pad * ((g.k + rb - 1) // rb * rb) * g.p
    cdef Py_ssize_t wide_cost = (((g.cog + cb - 1) // cb * cb) * ((g.k + wrb - 1) // wrb * wrb)
                                 * ((g.q + tb - 1) // tb * tb))
    if fastcnn_wgrad_t_quads(level, cog_pad):
        return lanes_cost <= wide_cost
    return 5 * lanes_cost < 4 * wide_cost


cdef enum WeightGradKernel:
    WGRAD_BLAS = 0
    WGRAD_WIDE = 1
    WGRAD_LANES = 2


cdef WeightGradKernel weight_grad_kernel(const Geometry* g) noexcept nogil:
    # The float32 weight-gradient kernel for g. With few taps (3x3 on one channel) the
    # wide kernel's padded tap blocks waste more than it saves (BLAS does those better),
    # but the lanes kernel, blocking them by 9, still pays: with it and the one-channel
    # input gradient on the direct kernel, `digits`' backward pass took 0.57 ms instead
    # of 0.77 on one thread (medians of 5 alternating runs, 2026-12-03).
    if not direct_pays(g):
        return WGRAD_BLAS
    if lanes_wgrad_pays(g):
        return WGRAD_LANES
    if g.k >= 4 * fastcnn_wgrad_tap_block(fastcnn_direct_level()):
        return WGRAD_WIDE
    return WGRAD_BLAS


cdef int weight_grad_lanes(const float* x, const float* grad_out, const float* weight,
                           float* grad_x, float* grad_weight, float* grad_bias,
                           Py_ssize_t n_batch, int n_threads, const Geometry* g) except -1:
    # The weight gradient with output channels across the vector lanes (direct_conv.h):
    # per sample and group, the padded input plane and the output gradient transposed to
    # (position, channel); per-thread partials (taps x channels) summed in thread order.
    # The bias gradient (when grad_bias is not NULL) is summed from the rows transposed.
    # When grad_x is not NULL the sample's input gradient (input_grad_direct's
    # convolution) is computed first in the same parallel loop: one team wake-up for
    # the whole backward pass, and the sample's output gradient is still in cache.
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_wgrad_t_lanes(level)
    cdef Py_ssize_t cog_pad = (g.cog + lanes - 1) // lanes * lanes
    cdef Py_ssize_t rb = fastcnn_wgrad_t_taps(level, cog_pad, g.k)
    cdef Py_ssize_t k_pad = (g.k + rb - 1) // rb * rb
    cdef Py_ssize_t n_x = whole_lines(g.plane)
    cdef Py_ssize_t n_dyt = g.p * cog_pad, n_dw = g.groups * k_pad * cog_pad
    cdef Py_ssize_t off_gb = n_x + n_dyt + n_dw, off_gx = whole_lines(off_gb + g.c_out)
    cdef Py_ssize_t per_thread = off_gx
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    cdef int threads = batch_threads(n_batch, n_threads, g)
    cdef Py_ssize_t b, n, grp, oh, ow
    cdef Geometry tg
    cdef DirectPlan plan
    plan.wpk = NULL
    plan.off = NULL
    plan.ranges = NULL
    plan.vx = NULL
    plan.vo = NULL
    cdef float* flipped = NULL
    cdef Py_ssize_t* off = NULL
    cdef Py_ssize_t* pos = NULL
    cdef float* scratch = NULL
    cdef float* base
    cdef float* dyt
    try:
        if grad_x != NULL:
            tg = input_grad_geometry(g)
            flipped = flipped_weights(weight, g)
            plan_direct(&plan, flipped, &tg, True)
            per_thread += plan.per_thread
        off = <Py_ssize_t*> malloc(k_pad * sizeof(Py_ssize_t))
        pos = <Py_ssize_t*> malloc(max(g.p, 1) * sizeof(Py_ssize_t))
        if off == NULL or pos == NULL:
            raise MemoryError("conv2d_backward: cannot allocate the tap offsets")
        scratch = <float*> take_scratch(threads, per_thread, sizeof(float), "conv2d_backward")
        tap_offsets(g, off, k_pad)
        for oh in range(g.h_out):
            for ow in range(g.w_out):
                pos[oh * g.w_out + ow] = oh * g.sh * g.wp + ow * g.sw
        with nogil:
            with parallel(num_threads=threads):
                # Zeroed: the channels past cog of the transposed gradient are never
                # written, and the partials are summed into.
                for b in prange(threads, schedule="static"):
                    zero_block(scratch, b, per_thread, per_thread)
                base = scratch + threadid() * per_thread
                for n in prange(n_batch, schedule="static"):
                    if grad_x != NULL:
                        forward_sample_direct(grad_out + n * out_stride, &plan, NULL,
                                              grad_x + n * x_stride, base + off_gx, &tg)
                    dyt = base + n_x
                    for grp in range(g.groups):
                        pad_plane(x + n * x_stride + grp * g.cg * g.h * g.w, g, base)
                        fastcnn_transpose(grad_out + n * out_stride + grp * g.cog * g.p,
                                          g.p, g.cog, g.p, dyt, cog_pad,
                                          (base + off_gb + grp * g.cog)
                                          if grad_bias != NULL else NULL)
                        fastcnn_wgrad_t(level, base, off, k_pad, dyt, pos, g.p, cog_pad,
                                        dyt + n_dyt + grp * k_pad * cog_pad)
            team_released(threads)
            sum_weight_partials(scratch + n_x + n_dyt, 1, cog_pad, k_pad * cog_pad,
                                per_thread, threads, grad_weight, g)
            if grad_bias != NULL:
                sum_partials(scratch + off_gb, per_thread, threads, grad_bias, g.c_out)
    finally:
        free_plan(&plan)
        free(flipped)
        free(off)
        free(pos)
        fastcnn_scratch_give_back(scratch)
    return 0


cdef Geometry stride1_geometry(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h, dil_w,
                               groups) except *:
    return make_geometry(
        c_in, h, w, c_out, kh, kw, h + 2 * pad_h - dil_h * (kh - 1),
        w + 2 * pad_w - dil_w * (kw - 1), 1, 1, pad_h, pad_w, dil_h, dil_w, groups)


def _forward_path(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h, dil_w, groups) -> str:
    """The kernel a stride-1 float32 forward pass of this shape takes (for tests):
    'lanes' (output channels across the vector lanes), 'rows' (positions a row vector at
    a time), 'wide' or 'blas'."""
    cdef Geometry g = stride1_geometry(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h,
                                       dil_w, groups)
    if not direct_pays(&g):
        return "blas"
    if lanes_forward_pays(&g):
        return "lanes"
    return "rows" if direct_rows_pay(&g) else "wide"


def _weight_grad_path(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h, dil_w,
                      groups) -> str:
    """The kernel a stride-1 float32 weight gradient of this shape takes (for tests):
    'lanes', 'wide' (the wide-layout direct kernel) or 'blas'."""
    cdef Geometry g = stride1_geometry(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h,
                                       dil_w, groups)
    return ("blas", "wide", "lanes")[weight_grad_kernel(&g)]


def _input_grad_path(n_batch, c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h, dil_w,
                     groups) -> str:
    """The kernel a stride-1 float32 input gradient of this shape and batch takes (for
    tests): 'batch' (the samples across the vector lanes, which then computes the
    weight and bias gradients too), 'rows' (the forward pass's row-vector kernel),
    'wide' or 'blas'."""
    cdef Geometry g = stride1_geometry(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h,
                                       dil_w, groups)
    if not direct_input_grad_pays(&g):
        return "blas"
    if batch_input_grad_pays(&g, n_batch):
        return "batch"
    cdef Geometry t = input_grad_geometry(&g)
    return "rows" if direct_rows_pay(&t) else "wide"


def direct_simd() -> str:
    """Instruction set of the direct float32 kernels in use: 'avx512', 'avx2' or 'none'."""
    return {2: "avx512", 1: "avx2"}.get(fastcnn_direct_level(), "none")


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   bias, floating[:, :, :, ::1] out,
                   Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h,
                   Py_ssize_t pad_w, Py_ssize_t dil_h, Py_ssize_t dil_w,
                   Py_ssize_t groups, int n_threads):
    """See BACKEND_API.md. Writes every element of ``out``."""
    load_blas(&BLAS)
    cdef Py_ssize_t n_batch = x.shape[0], c, n0, ns
    cdef Geometry g = make_geometry(
        x.shape[1], x.shape[2], x.shape[3], weight.shape[0], weight.shape[2],
        weight.shape[3], out.shape[2], out.shape[3], stride_h, stride_w, pad_h, pad_w,
        dil_h, dil_w, groups)
    cdef const floating[::1] bias_view
    cdef const floating* bias_ptr = NULL
    if bias is not None:
        bias_view = bias
        bias_ptr = &bias_view[0]
    # An empty image (H or W == 0) can still have a padded output; it is never read.
    cdef const floating* x_ptr = &x[0, 0, 0, 0] if g.h * g.w > 0 else NULL
    cdef int threads = batch_threads(n_batch, n_threads, &g)
    if floating is float:
        if direct_pays(&g):
            forward_direct(x_ptr, &weight[0, 0, 0, 0], bias_ptr, &out[0, 0, 0, 0],
                           n_batch, threads, &g, False)
            return
    cdef Py_ssize_t nb = chunk_size(n_batch, threads, &g)
    cdef Py_ssize_t n_chunks = (n_batch + nb - 1) // nb
    cdef Py_ssize_t n_col = whole_lines(g.k * g.q * nb)
    cdef Py_ssize_t n_tmp = whole_lines(g.cog * g.q * nb) if (nb > 1 or g.wide) else 0
    cdef Py_ssize_t per_thread = n_col + n_tmp + (whole_lines(g.plane) if g.wide else 0)
    cdef floating* scratch = <floating*> take_scratch(threads, per_thread, sizeof(floating),
                                                      "conv2d")
    cdef floating* base
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    try:
        with blas_threads(1):
            with nogil:
                for c in prange(n_chunks, num_threads=threads, schedule="static"):
                    n0 = c * nb
                    ns = n_batch - n0 if n_batch - n0 < nb else nb
                    base = scratch + threadid() * per_thread
                    if g.wide:
                        forward_chunk_wide(
                            x_ptr + n0 * x_stride, &weight[0, 0, 0, 0], bias_ptr,
                            &out[0, 0, 0, 0] + n0 * out_stride, ns,
                            base, base + n_col, base + n_col + n_tmp, &g)
                    else:
                        forward_chunk(
                            x_ptr + n0 * x_stride, &weight[0, 0, 0, 0], bias_ptr,
                            &out[0, 0, 0, 0] + n0 * out_stride, ns, base, base + n_col, &g)
                team_released(threads)
    finally:
        fastcnn_scratch_give_back(scratch)


def conv2d_backward(const floating[:, :, :, ::1] grad_out,
                    const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                    grad_x, grad_weight, grad_bias,
                    Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h,
                    Py_ssize_t pad_w, Py_ssize_t dil_h, Py_ssize_t dil_w,
                    Py_ssize_t groups, int n_threads):
    """See BACKEND_API.md. Overwrites each gradient buffer that is not None."""
    load_blas(&BLAS)
    cdef Py_ssize_t n_batch = x.shape[0], c, n0, ns
    cdef Geometry g = make_geometry(
        x.shape[1], x.shape[2], x.shape[3], weight.shape[0], weight.shape[2],
        weight.shape[3], grad_out.shape[2], grad_out.shape[3], stride_h, stride_w,
        pad_h, pad_w, dil_h, dil_w, groups)
    cdef floating[:, :, :, ::1] gx_view
    cdef floating[:, :, :, ::1] gw_view
    cdef floating[::1] gb_view
    cdef floating* gx_ptr = NULL
    cdef floating* gb_ptr = NULL
    cdef bint direct_x, direct_w
    cdef WeightGradKernel w_kernel
    cdef bint want_x = grad_x is not None
    cdef bint want_w = grad_weight is not None
    cdef bint want_b = grad_bias is not None
    # An empty image (H or W == 0) can still have a padded output; it is never read.
    cdef const floating* x_ptr = &x[0, 0, 0, 0] if g.h * g.w > 0 else NULL
    if want_x:
        gx_view = grad_x
        gx_ptr = &gx_view[0, 0, 0, 0] if g.h * g.w > 0 else NULL
    if want_w:
        gw_view = grad_weight
    if want_b:
        gb_view = grad_bias
    if floating is float:
        direct_x = want_x and direct_input_grad_pays(&g)
        gb_ptr = &gb_view[0] if want_b else NULL
        if direct_x and batch_input_grad_pays(&g, n_batch):
            # with the weight and bias gradients, which share its transposed dy
            backward_batch(&grad_out[0, 0, 0, 0], x_ptr, &weight[0, 0, 0, 0], gx_ptr,
                           &gw_view[0, 0, 0, 0] if want_w else NULL, gb_ptr, n_batch,
                           n_threads, &g)
            return
        # The direct input gradient multiplies grad_out's zero padding by the weights,
        # and the wide weight gradient the junk positions' zero gradient by pixels of x:
        # exact only where those are finite, so BLAS takes the calls where they are not
        # (the wide weight gradient checks its own sums; see "Special values" above).
        if direct_x and not fastcnn_all_finite_f32(&weight[0, 0, 0, 0], weight.size):
            direct_x = False
        w_kernel = weight_grad_kernel(&g) if want_w else WGRAD_BLAS
        direct_w = w_kernel != WGRAD_BLAS
        if w_kernel == WGRAD_LANES:
            weight_grad_lanes(x_ptr, &grad_out[0, 0, 0, 0], &weight[0, 0, 0, 0],
                              gx_ptr if direct_x else NULL, &gw_view[0, 0, 0, 0], gb_ptr,
                              n_batch, n_threads, &g)
        else:
            if direct_x:
                input_grad_direct(&grad_out[0, 0, 0, 0], &weight[0, 0, 0, 0], gx_ptr,
                                  n_batch, n_threads, &g)
            if direct_w:
                direct_w = not weight_grad_direct(x_ptr, &grad_out[0, 0, 0, 0],
                                                  &gw_view[0, 0, 0, 0], gb_ptr, n_batch,
                                                  n_threads, &g)
        # done; what follows computes the remaining gradients
        want_x = want_x and not direct_x
        if direct_w:
            want_w = want_b = False
        if not (want_x or want_w or want_b):
            return

    cdef int threads = batch_threads(n_batch, n_threads, &g)
    cdef Py_ssize_t nb = chunk_size(n_batch, threads, &g)
    cdef Py_ssize_t n_chunks = (n_batch + nb - 1) // nb
    # Per-thread scratch: [col | dy | dcol | padded plane | weight partials | bias partials].
    cdef Py_ssize_t n_col = whole_lines(g.k * g.q * nb) if want_w else 0
    cdef Py_ssize_t n_dy = whole_lines(g.cog * g.q * nb) if (nb > 1 or g.wide) else 0
    cdef Py_ssize_t n_dcol = whole_lines(g.k * g.q * nb) if want_x else 0
    cdef Py_ssize_t n_xp = whole_lines(g.plane) if g.wide else 0
    cdef Py_ssize_t n_gw = g.c_out * g.k if want_w else 0
    cdef Py_ssize_t n_gb = g.c_out if want_b else 0
    cdef Py_ssize_t off_gw = n_col + n_dy + n_dcol + n_xp, off_gb = off_gw + whole_lines(n_gw)
    cdef Py_ssize_t per_thread = whole_lines(off_gb + n_gb)
    cdef floating* scratch = <floating*> take_scratch(threads, per_thread, sizeof(floating),
                                                      "conv2d_backward", True)
    cdef floating* base
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    try:
        with blas_threads(1):
            with nogil:
                for c in prange(n_chunks, num_threads=threads, schedule="static"):
                    n0 = c * nb
                    ns = n_batch - n0 if n_batch - n0 < nb else nb
                    base = scratch + threadid() * per_thread
                    if g.wide:
                        backward_chunk_wide(
                            &grad_out[0, 0, 0, 0] + n0 * out_stride,
                            x_ptr + n0 * x_stride, &weight[0, 0, 0, 0],
                            (gx_ptr + n0 * x_stride) if want_x else NULL,
                            (base + off_gw) if want_w else NULL, ns, base, base + n_col,
                            base + n_col + n_dy, base + n_col + n_dy + n_dcol, &g)
                        if want_b:
                            add_bias_grad(&grad_out[0, 0, 0, 0] + n0 * out_stride,
                                          base + off_gb, ns, &g)
                    else:
                        backward_chunk(
                            &grad_out[0, 0, 0, 0] + n0 * out_stride,
                            x_ptr + n0 * x_stride, &weight[0, 0, 0, 0],
                            (gx_ptr + n0 * x_stride) if want_x else NULL,
                            (base + off_gw) if want_w else NULL,
                            (base + off_gb) if want_b else NULL,
                            ns, base, base + n_col, base + n_col + n_dy, &g)
                team_released(threads)
        with nogil:
            if want_w:
                sum_partials(scratch + off_gw, per_thread, threads, &gw_view[0, 0, 0, 0], n_gw)
            if want_b:
                sum_partials(scratch + off_gb, per_thread, threads, &gb_view[0], n_gb)
    finally:
        fastcnn_scratch_give_back(scratch)
