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
layout feeds register-blocked direct kernels (src/direct_conv.c) that read the taps in place,
with no im2col copy and no BLAS packing: the forward pass, the input gradient (a stride-1
convolution with flipped, transposed weights) and the weight gradient, each where the
channel counts make it pay. Where the junk columns of the wide layout cost more than
padding the output channels to a vector, the forward pass and the weight gradient put
the output channels across the vector lanes instead and visit only real outputs ("lanes"
kernels); the weight gradient also does where the channels fill blocks of four AVX-512
vectors, which read less memory per multiply-add than the wide kernel. Where each output
row is a whole number of vectors long, the forward pass and the input gradient take the
positions a row vector at a time ("rows"): no junk columns, and the sums go straight into
the output planes. Everything else takes im2col + BLAS. plan_conv (_conv_plan.pxi)
makes these choices, and only it.

Files: _conv_plan.pxi (geometry and the planner), _conv_scratch.pxi (per-thread scratch
and thread counts), _conv_im2col.pxi (im2col + BLAS, the wide layout),
_conv_direct.pxi and _conv_batch.pxi (the direct and samples-across-lanes kernels'
drivers; their arithmetic is in src/*.c), and here the entry points.

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
gradient (fastcnn_all_finite_f32, src/simd.c: a pass over memory, not over the
multiply-adds), the wide weight-gradient kernel scans its partial sums afterwards (a
junk product is 0 or NaN, so finite partials are exact), and such a call goes to BLAS.
tests/test_numerics.py holds the cases, on every kernel the planner picks.

All parallelism comes from OpenMP: BLAS is pinned to one thread while a kernel runs
(``fastcnn._threads.blas_threads``). The products here are small or skinny, and letting
a threaded BLAS split them (alone, or inside OpenMP threads) was several times slower
(docs/performance.md, "threads").
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

cdef extern from "src/direct_conv.h":
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
    Py_ssize_t fastcnn_wgrad_co_block(int level) noexcept nogil
    Py_ssize_t fastcnn_wgrad_tap_block(int level) noexcept nogil
    void fastcnn_wgrad(int level, const float* xp, Py_ssize_t xp_stride, const Py_ssize_t* off,
                       Py_ssize_t k_pad, const float* dy, Py_ssize_t dy_stride,
                       Py_ssize_t cog_pad, Py_ssize_t q_pad, Py_ssize_t ns,
                       float* dw) noexcept nogil

cdef extern from "src/transpose.h":
    void fastcnn_transpose(const float* src, Py_ssize_t lds, Py_ssize_t rows,
                           Py_ssize_t cols, float* dst, Py_ssize_t ldd,
                           float* sums) noexcept nogil

cdef extern from "src/simd.h":
    bint fastcnn_all_finite_f32(const float* p, Py_ssize_t n) noexcept nogil

cdef extern from "src/scratch.h":
    void* fastcnn_scratch_take(size_t n) noexcept nogil
    void fastcnn_scratch_give_back(void* p) noexcept nogil
    size_t fastcnn_scratch_release() noexcept nogil
    size_t fastcnn_scratch_kept() noexcept nogil

cdef extern from "src/batch_lanes.h":
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


include "_conv_plan.pxi"
include "_conv_scratch.pxi"
include "_conv_im2col.pxi"
include "_conv_direct.pxi"
include "_conv_batch.pxi"


def _release_scratch() -> int:
    """Free the convolution scratch kept between calls (unless a call is using it);
    return the bytes still kept."""
    return fastcnn_scratch_release()


def _kept_scratch_bytes() -> int:
    """Bytes of convolution scratch kept between calls."""
    return fastcnn_scratch_kept()


_KERNEL_NAMES = {KERNEL_NONE: "none", KERNEL_BLAS: "blas", KERNEL_WIDE: "wide",
                 KERNEL_ROWS: "rows", KERNEL_LANES: "lanes", KERNEL_BATCH: "batch"}


def _plan(n_batch, c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h, dil_w, groups,
          needs_input_grad=True) -> dict:
    """The kernels plan_conv picks for a stride-1 float32 call of this shape (for tests).

    A dict with the kernel of each job, "forward", "input_grad" and "weight_grad": 'blas'
    (im2col + BLAS), 'wide' (the direct kernel over the wide layout), 'rows' (positions a
    row vector at a time), 'lanes' (output channels across the vector lanes), 'batch'
    (samples across the vector lanes, which computes the weight gradient with the input
    gradient), or 'none' (the input gradient when ``needs_input_grad`` is false).
    """
    cdef Geometry g = stride1_geometry(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h,
                                       dil_w, groups)
    cdef ConvPlan plan = plan_conv(&g, n_batch, True, needs_input_grad, True)
    return {"forward": _KERNEL_NAMES[plan.forward],
            "input_grad": _KERNEL_NAMES[plan.input_grad],
            "weight_grad": _KERNEL_NAMES[plan.weight_grad]}


def direct_simd() -> str:
    """Instruction set of the direct float32 kernels in use: 'avx512', 'avx2' or 'none'."""
    return {2: "avx512", 1: "avx2"}.get(fastcnn_direct_level(), "none")


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] weight,
                   bias, floating[:, :, :, ::1] out,
                   Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_h,
                   Py_ssize_t pad_w, Py_ssize_t dil_h, Py_ssize_t dil_w,
                   Py_ssize_t groups, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
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
    cdef ConvPlan plan
    if floating is float:
        plan = plan_conv(&g, n_batch, True, False, False)
        if plan.forward != KERNEL_BLAS:
            forward_direct(x_ptr, &weight[0, 0, 0, 0], bias_ptr, &out[0, 0, 0, 0],
                           n_batch, threads, &g, plan.forward, False)
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
    """See fastcnn._backend.Backend: overwrites each gradient buffer that is not None."""
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
    cdef ConvPlan plan
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
        plan = plan_conv(&g, n_batch, False, want_x, want_w)
        gb_ptr = &gb_view[0] if want_b else NULL
        if plan.input_grad == KERNEL_BATCH:
            # with the weight and bias gradients, which share its transposed dy
            backward_batch(&grad_out[0, 0, 0, 0], x_ptr, &weight[0, 0, 0, 0], gx_ptr,
                           &gw_view[0, 0, 0, 0] if want_w else NULL, gb_ptr, n_batch,
                           n_threads, &g)
            return
        # The direct input gradient multiplies grad_out's zero padding by the weights,
        # and the wide weight gradient the junk positions' zero gradient by pixels of x:
        # exact only where those are finite, so BLAS takes the calls where they are not
        # (the wide weight gradient checks its own sums; see "Special values" above).
        direct_x = plan.input_grad == KERNEL_WIDE or plan.input_grad == KERNEL_ROWS
        if direct_x and not fastcnn_all_finite_f32(&weight[0, 0, 0, 0], weight.size):
            direct_x = False
        direct_w = plan.weight_grad == KERNEL_WIDE or plan.weight_grad == KERNEL_LANES
        if plan.weight_grad == KERNEL_LANES:
            weight_grad_lanes(x_ptr, &grad_out[0, 0, 0, 0], &weight[0, 0, 0, 0],
                              gx_ptr if direct_x else NULL, &gw_view[0, 0, 0, 0], gb_ptr,
                              n_batch, n_threads, &g, plan.input_grad)
        else:
            if direct_x:
                input_grad_direct(&grad_out[0, 0, 0, 0], &weight[0, 0, 0, 0], gx_ptr,
                                  n_batch, n_threads, &g, plan.input_grad)
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
