# im2col + BLAS, every dtype and shape: the column matrix of a chunk of samples (or, at
# stride 1, the wide layout over padded rows), one GEMM per group, and the copy back
# (see "Design" in _conv.pyx). Included by _conv.pyx.

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
