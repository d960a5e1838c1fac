# The convolution planner: the geometry of a call and the one place that decides which
# kernel runs each job (forward pass, input gradient, weight gradient). Included by
# _conv.pyx.
#
# Every rule below compares counts of multiply-adds (or bytes) between kernels, with a
# margin the measurements set; each names its reason here, and the figures behind the
# margins are in docs/performance.md under the rule's name.

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


# At stride 1 the input gradient is itself a convolution: grad_out, padded by
# dilation*(k-1) - padding, correlated with the weights flipped in space and with
# input/output channels swapped (per group). So it runs on the direct kernel too.

cdef Geometry input_grad_geometry(const Geometry* g) except *:
    return make_geometry(
        g.c_out, g.h_out, g.w_out, g.c_in, g.kh, g.kw, g.h, g.w, 1, 1,
        g.dh * (g.kh - 1) - g.ph, g.dw * (g.kw - 1) - g.pw, g.dh, g.dw, g.groups)


cdef Geometry stride1_geometry(c_in, h, w, c_out, kh, kw, pad_h, pad_w, dil_h, dil_w,
                               groups) except *:
    return make_geometry(
        c_in, h, w, c_out, kh, kw, h + 2 * pad_h - dil_h * (kh - 1),
        w + 2 * pad_w - dil_w * (kw - 1), 1, 1, pad_h, pad_w, dil_h, dil_w, groups)


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


cdef enum:
    # chunk_channels: planes up to WHOLE_PLANE_BYTES go whole, larger ones in chunks
    WHOLE_PLANE_BYTES = 256 * 1024
    CHUNK_BYTES = 256 * 1024


cdef Py_ssize_t chunk_channels(const Geometry* g) noexcept nogil:
    # Input channels per pass of the wide kernel. A plane of up to WHOLE_PLANE_BYTES is
    # taken whole (one pass: LeNet's). A larger one goes in chunks of CHUNK_BYTES, which
    # stay in cache while every block of output channels reads them, the rest of L2
    # holding the partial sums that stream past (docs/performance.md, "channel chunks").
    cdef Py_ssize_t per_channel = g.hp * g.wp * sizeof(float)
    if per_channel == 0 or g.cg * per_channel <= WHOLE_PLANE_BYTES:
        return g.cg
    return max(1, min(g.cg, CHUNK_BYTES // per_channel))


cdef bint direct_pays(const Geometry* g) noexcept nogil:
    # The direct kernel fills blocks of output channels: with very few of them (2 in a
    # block of 6) most of each block would be padding. One channel has its own kernel.
    cdef int level = fastcnn_direct_level()
    return g.wide and level > 0 and 2 * g.cog >= fastcnn_direct_co_block(level, g.cog)


cdef bint lanes_forward_pays(const Geometry* g) noexcept nogil:
    # The wide kernel computes the junk columns of every padded row (kw - 1 of every wp:
    # 29% on LeNet's C3) and pads cog to its channel block; the lanes kernel computes only
    # real outputs but pads cog to the vector width. Taken when it saves a quarter, and
    # when there are taps enough (32) to amortize each block's set-up and stores (see
    # docs/performance.md, "lanes forward").
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_wgrad_t_lanes(level), cb, tb
    if not (g.wide and g.dw == 1 and g.k >= 32 and fastcnn_lanes_fwd_has(level, g.kw)):
        return False
    cb = fastcnn_direct_co_block(level, g.cog)
    tb = fastcnn_direct_t_block(level)
    return (4 * ((g.cog + lanes - 1) // lanes * lanes) * g.p
            < 3 * ((g.cog + cb - 1) // cb * cb) * ((g.q + tb - 1) // tb * tb))


cdef bint rows_pay(const Geometry* g, Py_ssize_t cb, Py_ssize_t tb) noexcept nogil:
    # The row-vector kernel (src/direct_conv.c) needs output rows of whole vectors; it is
    # taken where it computes no more positions than the wide kernel, whose junk columns
    # it skips, and it saves the wide block's copy into the output (docs/performance.md,
    # "rows").
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


cdef int batch_input_grad_pays(const Geometry* g, Py_ssize_t n_batch) except -1:
    # The input gradient with the samples across the vector lanes (src/batch_lanes.c) visits
    # only the taps that reach the output gradient; the wide-layout kernel correlates
    # the output gradient padded by k - 1 on every side, skipping kernel rows per block
    # of positions only. Taken when it saves a quarter of the multiply-adds (the
    # transposes in and out, and the shorter blocks at the edges, cost the rest), with a
    # partial block of samples counted whole. On LeNet's C3 (64 samples, 10x10 output
    # gradient, 5x5 taps) it needs 0.58 of the wide kernel's multiply-adds
    # (docs/performance.md, "batch across the lanes").
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


cdef bint lanes_wgrad_pays(const Geometry* g) noexcept nogil:
    # Multiply-adds by register block: the lanes kernel pads the output channels to the
    # vector width but visits only real outputs; the wide-layout kernel pads channels to 4
    # and taps to 6 but also visits the junk columns (kw - 1 of every wp on LeNet's C3:
    # 37%). The lanes kernel must save a fifth to be chosen, except where it takes four
    # vectors of channels at a time (AVX-512, channels a multiple of 64): there it reads
    # a quarter as much per multiply-add as the wide kernel, which is bound by L2 on
    # such layers (docs/performance.md, "lanes weight gradient").
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


cdef ConvKernel weight_grad_kernel(const Geometry* g) noexcept nogil:
    # The float32 weight-gradient kernel for g. With few taps (3x3 on one channel) the
    # wide kernel's padded tap blocks waste more than it saves (BLAS does those better),
    # but the lanes kernel, blocking them by 9, still pays (docs/performance.md,
    # "weight gradient with few taps").
    if not direct_pays(g):
        return KERNEL_BLAS
    if lanes_wgrad_pays(g):
        return KERNEL_LANES
    if g.k >= 4 * fastcnn_wgrad_tap_block(fastcnn_direct_level()):
        return KERNEL_WIDE
    return KERNEL_BLAS


cdef enum ConvKernel:
    KERNEL_NONE = 0   # the job was not asked for
    KERNEL_BLAS       # im2col (or the wide layout) + one GEMM per chunk (_conv_im2col.pxi)
    KERNEL_WIDE       # direct kernel over the wide layout (src/direct_conv.c)
    KERNEL_ROWS       # direct kernel, positions a row vector at a time (src/direct_conv.c)
    KERNEL_LANES      # output channels across the vector lanes (src/direct_conv.c)
    KERNEL_BATCH      # samples across the vector lanes, all three gradients (src/batch_lanes.c)


ctypedef struct ConvPlan:
    # The float32 kernel of each job of one call; float64 always takes BLAS. The run-time
    # checks of "Special values" (_conv.pyx) may still send a direct input or weight
    # gradient to BLAS.
    ConvKernel forward
    ConvKernel input_grad
    ConvKernel weight_grad


cdef ConvPlan plan_conv(const Geometry* g, Py_ssize_t n_batch, bint forward,
                        bint input_grad, bint weight_grad) except *:
    # The kernels of the asked jobs (KERNEL_NONE for the others) for n_batch samples.
    cdef ConvPlan plan
    cdef Geometry t
    plan.forward = plan.input_grad = plan.weight_grad = KERNEL_NONE
    if forward:
        if not direct_pays(g):
            plan.forward = KERNEL_BLAS
        elif lanes_forward_pays(g):
            plan.forward = KERNEL_LANES
        elif direct_rows_pay(g):
            plan.forward = KERNEL_ROWS
        else:
            plan.forward = KERNEL_WIDE
    if input_grad:
        if not direct_input_grad_pays(g):
            plan.input_grad = KERNEL_BLAS
        elif batch_input_grad_pays(g, n_batch):
            plan.input_grad = KERNEL_BATCH
        else:
            t = input_grad_geometry(g)
            plan.input_grad = KERNEL_ROWS if direct_rows_pay(&t) else KERNEL_WIDE
    if weight_grad:
        if plan.input_grad == KERNEL_BATCH:
            # it transposes the output gradient once for both gradients
            plan.weight_grad = KERNEL_BATCH
        else:
            plan.weight_grad = weight_grad_kernel(g)
    return plan
