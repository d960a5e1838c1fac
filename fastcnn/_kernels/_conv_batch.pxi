# The backward pass with the samples across the vector lanes (src/batch_lanes.c): the
# input, weight and bias gradients of a block of samples at once, where plan_conv
# (_conv_plan.pxi) finds it visits fewer taps than the direct kernels. Included by
# _conv.pyx.

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


cdef int backward_batch(const float* grad_out, const float* x, const float* weight,
                        float* grad_x, float* grad_weight, float* grad_bias,
                        Py_ssize_t n_batch, int n_threads, const Geometry* g) except -1:
    # The backward pass with the samples across the vector lanes (src/batch_lanes.c), blocks
    # of `lanes` samples in parallel. Per block and group: the output gradient transposed
    # to (position, sample) once for both kernels; the input gradient computed and
    # transposed back into grad_x; the zero-padded input transposed likewise and the
    # weight gradient accumulated per lane into per-thread partials, summed over lanes
    # and then threads in order at the end. grad_weight and grad_bias may be NULL.
    cdef int level = fastcnn_direct_level()
    cdef Py_ssize_t lanes = fastcnn_igrad_lanes(level), cb = fastcnn_igrad_c_block(level)
    cdef Py_ssize_t ob = fastcnn_wgrad_batch_o_block(level)
    cdef Py_ssize_t rb = fastcnn_wgrad_batch_r_block(level)
    cdef Py_ssize_t cg_pad = (g.cg + cb - 1) // cb * cb, taps = g.kh * g.kw
    cdef Py_ssize_t cog_pad = (g.cog + ob - 1) // ob * ob, k_pad = (g.k + rb - 1) // rb * rb
    cdef Py_ssize_t wpb = g.w + 2 * g.pw, n_x = g.cg * g.h * g.w
    cdef Py_ssize_t n_w = cg_pad * g.cog * taps  # packed weights per group
    cdef BatchLayout lay = batch_layout(g, grad_weight != NULL, grad_bias != NULL)
    cdef Py_ssize_t per_thread = lay.per_thread
    cdef Py_ssize_t n_blocks = (n_batch + lanes - 1) // lanes
    cdef Py_ssize_t x_stride = g.c_in * g.h * g.w, out_stride = g.c_out * g.p
    cdef Py_ssize_t grp, c, o, r, i, j, t, lane, blk, b, n0, ns
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
                    off[(c * g.kh + i) * g.kw + j] = (
                        ((c * g.hp + i * g.dh) * wpb + j * g.dw) * lanes)
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
                                    base + lay.off_xp
                                    + (((i // g.h) * g.hp + i % g.h + g.ph) * wpb + g.pw) * lanes,
                                    lanes, NULL)
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
                                for lane in range(lanes):
                                    total = total + src[lane]
                            grad_weight[(grp * g.cog + o) * g.k + r] = total
            if grad_bias != NULL:
                sum_partials(scratch + lay.n_dw, per_thread, threads, grad_bias, g.c_out)
    finally:
        free(wpk)
        free(off)
        fastcnn_scratch_give_back(scratch)
    return 0
