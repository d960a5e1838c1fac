# The register-blocked direct kernels (src/direct_conv.c) over one sample at a time:
# the forward pass, the input gradient (a stride-1 convolution with flipped weights) and
# the weight gradient, on the wide layout, a row vector at a time or with the output
# channels across the vector lanes, as plan_conv (_conv_plan.pxi) chose. Included by
# _conv.pyx.

ctypedef struct DirectPlan:
    # What every sample of one direct convolution shares: the weights packed per group
    # as [co_block][tap][co_in_block] (zero rows past cog) and each tap's offset in the
    # padded plane; and the sizes of the per-thread scratch forward_sample_direct uses.
    int level
    bint lanes                   # output channels across the vector lanes (KERNEL_LANES)
    bint rows                    # positions a row vector at a time (KERNEL_ROWS)
    Py_ssize_t cb, cog_pad, q_pad
    Py_ssize_t k_chunk           # taps per pass of the wide kernel: whole channels
    Py_ssize_t n_xp              # padded plane plus the slack the kernel reads past it
    # n_xp + the (cog_pad, q_pad) wide output block (none for rows, which writes the
    # output planes)
    Py_ssize_t per_thread
    Py_ssize_t n_vec             # rows: vectors per plane, rounded up to a block
    float* wpk
    Py_ssize_t* off
    # per block of positions, the taps of each channel to visit (src/direct_conv.c);
    # NULL: all of them
    Py_ssize_t* ranges
    Py_ssize_t* vx               # rows: each vector's offset in the padded plane
    Py_ssize_t* vo               # rows: and in the output plane


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


cdef int plan_direct(DirectPlan* plan, const float* weight, const Geometry* g,
                     ConvKernel kernel, bint skip_padding_rows) except -1:
    # Fills plan; on success the caller releases it with free_plan. skip_padding_rows:
    # leave out, per block of positions, the kernel rows that read only padding rows.
    # That skips products with zero, which changes nothing for finite weights: it is
    # asked for by the input gradient only, whose padding the numpy backend never
    # multiplies and which runs here only with finite weights (see "Special values"),
    # and takes the wide or the row-vector kernel only. kernel: KERNEL_WIDE, KERNEL_ROWS
    # or KERNEL_LANES, as plan_conv chose.
    cdef Py_ssize_t tb, grp, co, r, b, v, n_blocks, i_lo, i_hi, lanes, nv, oh0, oh1
    plan.level = fastcnn_direct_level()
    plan.lanes = kernel == KERNEL_LANES
    if plan.lanes:
        plan.cb = fastcnn_wgrad_t_lanes(plan.level)
        tb = fastcnn_direct_t_block(plan.level)
    else:
        plan.cb = fastcnn_direct_co_block(plan.level, g.cog)
        tb = fastcnn_direct_conv_t_block(plan.level, plan.cb, g.k)
    plan.rows = kernel == KERNEL_ROWS
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
    # One sample through the register-blocked direct kernel (src/direct_conv.c), group by
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


cdef int forward_direct(const float* x, const float* weight, const float* bias, float* out,
                        Py_ssize_t n_batch, int threads, const Geometry* g,
                        ConvKernel kernel, bint skip_padding_rows) except -1:
    # Samples in parallel through forward_sample_direct, each thread on its own scratch.
    cdef DirectPlan plan
    cdef Py_ssize_t n, b
    cdef float* scratch = NULL
    cdef float* base
    plan_direct(&plan, weight, g, kernel, skip_padding_rows)
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
                           Py_ssize_t n_batch, int n_threads, const Geometry* g,
                           ConvKernel kernel) except -1:
    # kernel: plan_conv's input_grad, KERNEL_WIDE or KERNEL_ROWS
    cdef Geometry t = input_grad_geometry(g)
    cdef float* flipped = flipped_weights(weight, g)
    try:
        forward_direct(grad_out, flipped, NULL, grad_x, n_batch,
                       batch_threads(n_batch, n_threads, &t), &t, kernel, True)
    finally:
        free(flipped)
    return 0


cdef int weight_grad_direct(const float* x, const float* grad_out, float* grad_weight,
                            float* grad_bias, Py_ssize_t n_batch, int n_threads,
                            const Geometry* g) except -1:
    # The weight gradient on the direct kernel: per thread, chunks of samples padded and
    # gathered into the wide layout, dot products accumulated in registers across the
    # chunk (src/direct_conv.c), per-thread partials summed in thread order at the end. The
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


cdef int weight_grad_lanes(const float* x, const float* grad_out, const float* weight,
                           float* grad_x, float* grad_weight, float* grad_bias,
                           Py_ssize_t n_batch, int n_threads, const Geometry* g,
                           ConvKernel x_kernel) except -1:
    # The weight gradient with output channels across the vector lanes (src/direct_conv.c):
    # per sample and group, the padded input plane and the output gradient transposed to
    # (position, channel); per-thread partials (taps x channels) summed in thread order.
    # The bias gradient (when grad_bias is not NULL) is summed from the rows transposed.
    # When grad_x is not NULL the sample's input gradient (input_grad_direct's
    # convolution) is computed first in the same parallel loop: one team wake-up for
    # the whole backward pass, and the sample's output gradient is still in cache;
    # x_kernel is plan_conv's kernel for it.
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
            plan_direct(&plan, flipped, &tg, x_kernel, True)
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
