# Per-thread scratch and thread counts of the convolution kernels: how many samples a
# chunk holds, how many threads a call wakes, the scratch blocks (cache-line aligned,
# kept between calls by src/scratch.c) and the ordered sums of per-thread partials.
# Included by _conv.pyx.

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


cdef int batch_threads(Py_ssize_t n, int n_threads, const Geometry* g) noexcept:
    if n * g.c_out * g.p * g.k < MIN_PARALLEL_MACS:
        return 1
    return <int> (n if n < n_threads else n_threads)


cdef inline Py_ssize_t whole_lines(Py_ssize_t n) noexcept nogil:
    # n floats rounded up to whole 64-byte cache lines. Per-thread blocks and the buffers
    # in them start on a line (the kept scratch does), so that the kernels' vector loads
    # and stores of them do not straddle two lines (docs/performance.md, "cache lines").
    return (n + 15) // 16 * 16


cdef Py_ssize_t scratch_elements(Py_ssize_t threads, Py_ssize_t per_thread,
                                 Py_ssize_t itemsize) except -1:
    # threads * per_thread * itemsize must not wrap around before it reaches malloc.
    if per_thread > (PY_SSIZE_T_MAX // itemsize) // threads:
        raise MemoryError(f"conv2d: {threads} x {per_thread} scratch elements is too much")
    return max(1, threads * per_thread)


cdef void* take_scratch(Py_ssize_t threads, Py_ssize_t per_thread, Py_ssize_t itemsize,
                        str op, bint zeroed=False) except NULL:
    # threads x per_thread elements of per-thread scratch (src/scratch.c: the block kept
    # from the last call when it is free and large enough); fastcnn_scratch_give_back() it.
    cdef size_t n = scratch_elements(threads, per_thread, itemsize) * itemsize
    cdef void* p = fastcnn_scratch_take(n)
    if p == NULL:
        raise MemoryError(f"{op}: cannot allocate {threads} x {per_thread} scratch")
    if zeroed:
        memset(p, 0, n)
    return p


cdef inline void zero_block(float* scratch, Py_ssize_t b, Py_ssize_t per_thread,
                            Py_ssize_t n) noexcept nogil:
    # Block b of a per-thread scratch. The kernels zero their blocks in a prange over the
    # blocks inside their parallel region, so that each thread clears the block it will
    # use (static schedule), in parallel and into its own core's cache, not all on the
    # calling thread before the team starts (docs/performance.md, "scratch"). Every
    # block, not only the running threads' own: a team smaller than asked for (no
    # OpenMP, OMP_THREAD_LIMIT, a nested region) leaves some unused, and the partial
    # sums still add them up. n: the elements to clear from the start of the block.
    memset(scratch + b * per_thread, 0, n * sizeof(float))


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
