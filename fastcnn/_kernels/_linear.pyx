"""Compiled fully connected layer, forward and backward: y = x @ W^T + b.

Design
------
float32 on AVX-512 CPUs runs on src/small_gemm.c's kernel, which broadcasts one operand
from memory in any orientation and reads the other in rows as it lies: nothing is packed
but, on one thread, W^T for the forward pass. Inside a LeNet-5 step it beats OpenBLAS on
LeNet's layers, whose BLAS code and buffers go cold between steps (docs/performance.md,
"dense layers"). Elsewhere, and for float64, each thread runs one BLAS GEMM, BLAS itself
single-threaded.

A product worth a thread team is sliced. The forward pass on src/small_gemm.c then reads W
as it lies (gemm_nt: dot products along the rows of x and W, summed across the lanes at
the end), each thread its share of W's rows, rather than each thread transposing all of
W (one W^T shared between the threads was slower on two threads than on one). On one
thread W is transposed first and x broadcast: gemm_nt's loads do not fall on cache lines
unless x and W lie alike, and the transpose then costs less than the split loads. With
BLAS the output is cut along its longer side, so each thread packs only a slice of the
larger operand and repeats the packing of the smaller one (for LeNet's 400 -> 120 layer
at batch 64, slices of W's 120 rows rather than of the batch). In the backward pass the
input and weight gradients are two products of the same size, so the team splits into
two halves, one per product, and needs no reduction across threads.

Products under 2M multiply-adds (LeNet's 120 -> 84 and 84 -> 10 layers at batch 64) are
never sliced: split over 2 threads, 120 -> 84's backward took twice as long, since it
paid for waking the second core. They join the team only while it is still awake from
the last kernel (``_openmp.team_size``), each product whole on one thread, so they round
exactly as on one thread whatever the timing: the forward product on the first thread
(the others only stay awake), and in the backward pass the input and weight gradients
side by side. A classifier head then keeps the workers spinning until the next large
kernel instead of letting them fall asleep.
"""

from cython cimport floating
from cython.parallel cimport prange

from fastcnn._kernels._blas cimport Blas, gemm, load_blas
from fastcnn._kernels._openmp cimport team_released, team_size
from fastcnn._threads import blas_threads

cdef extern from "src/small_gemm.h":
    int fastcnn_small_gemm_has() noexcept nogil
    void fastcnn_small_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const float* a,
                            Py_ssize_t a_is, Py_ssize_t a_ks, const float* b, Py_ssize_t ldb,
                            float* c, Py_ssize_t ldc, int part, int parts) noexcept nogil
    void fastcnn_gemm_nt(Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1,
                         Py_ssize_t k, const float* a, Py_ssize_t lda, const float* b,
                         Py_ssize_t ldb, float* c, Py_ssize_t ldc) noexcept nogil

cdef extern from "src/transpose.h":
    void fastcnn_transpose(const float* src, Py_ssize_t lds, Py_ssize_t rows,
                           Py_ssize_t cols, float* dst, Py_ssize_t ldd,
                           float* sums) noexcept nogil

cdef extern from "src/scratch.h":
    void* fastcnn_scratch_take(size_t n) noexcept nogil
    void fastcnn_scratch_give_back(void* p) noexcept nogil
    size_t fastcnn_scratch_release() noexcept nogil

cdef Blas BLAS

cdef enum:
    MIN_PARALLEL_MACS = 1 << 21


cdef void gemm_slice(bint trans_a, bint trans_b, int m, int p, int k,
                     const floating* a, int lda, const floating* b, int ldb,
                     floating* c, int ldc, int part, int parts) noexcept nogil:
    # C (m x p) = op(A) @ op(B), row-major, restricted to slice `part` of `parts` of C
    # along its longer side. A row slice re-reads all of B, a column slice all of A.
    cdef int length = m if m >= p else p
    cdef int size = (length + parts - 1) // parts
    cdef int start = part * size
    cdef int count = length - start if length - start < size else size
    if count <= 0:
        return
    if m >= p:  # rows of C: rows of op(A)
        a = a + start if trans_a else a + <Py_ssize_t> start * lda
        gemm(&BLAS, trans_a, trans_b, count, p, k, 1, a, lda, b, ldb, 0,
             c + <Py_ssize_t> start * ldc, ldc)
    else:  # columns of C: columns of op(B)
        b = b + <Py_ssize_t> start * ldb if trans_b else b + start
        gemm(&BLAS, trans_a, trans_b, m, count, k, 1, a, lda, b, ldb, 0, c + start, ldc)


def _release_scratch() -> int:
    """Free the transposed-weight scratch kept between calls (unless a call is using
    it); return the bytes still kept."""
    return fastcnn_scratch_release()


cdef void forward_part(const float* x, const float* w, float* out, int n, int n_in,
                       int n_out, int t, int parts) noexcept nogil:
    # Part t of parts of out = x @ W^T on src/small_gemm.c's kernel for W as it lies: the
    # columns of out (rows of W) in blocks of 4 when W is the larger operand (each thread
    # then reads its share of W and all of x), else the rows. LeNet's 400 -> 120 layer
    # at batch 64: W 48,000 values, x 25,600.
    cdef Py_ssize_t blocks, lo, hi
    if <Py_ssize_t> n_out * n_in >= <Py_ssize_t> n * n_in:
        blocks = (n_out + 3) // 4
        lo = min(blocks * t // parts * 4, n_out)
        hi = min(blocks * (t + 1) // parts * 4, n_out)
        if lo < hi:
            fastcnn_gemm_nt(0, n, lo, hi, n_in, x, n_in, w, n_in, out, n_out)
    else:
        blocks = (n + 3) // 4
        lo = min(blocks * t // parts * 4, n)
        hi = min(blocks * (t + 1) // parts * 4, n)
        if lo < hi:
            fastcnn_gemm_nt(lo, hi, 0, n_out, n_in, x, n_in, w, n_in, out, n_out)


cdef void forward_transposed(const float* x, const float* w, float* wt, Py_ssize_t ldt,
                             float* out, int n, int n_in, int n_out) noexcept nogil:
    # out = x @ W^T with W transposed into wt (n_in, ldt) first: x is broadcast from
    # memory and wt read in aligned rows, whatever the alignment of x and W.
    fastcnn_transpose(w, n_in, n_out, n_in, wt, ldt, NULL)
    fastcnn_small_gemm(n, n_out, n_in, x, n_in, 1, wt, ldt, out, n_out, 0, 1)


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight, bias,
                   floating[:, ::1] out, int n_threads):
    """See fastcnn._backend.Backend: writes every element of ``out``."""
    cdef int n = x.shape[0], n_in = x.shape[1], n_out = weight.shape[0]
    cdef Py_ssize_t macs = <Py_ssize_t> n * n_in * n_out
    cdef int threads = team_size(macs, MIN_PARALLEL_MACS, n_threads)
    cdef int parts = threads if macs >= MIN_PARALLEL_MACS else 1  # small: never sliced
    cdef int t
    # rows of W^T on cache lines, not a power of two apart (4K aliasing in the transpose)
    cdef Py_ssize_t ldt = (n_out + 15) // 16 * 16
    if ldt % 128 == 0:
        ldt += 16
    cdef float* wt
    if floating is float:
        if fastcnn_small_gemm_has() and n > 0 and n_out > 0:
            if parts == 1:
                wt = <float*> fastcnn_scratch_take(max(<size_t> n_in * ldt, 1) * sizeof(float))
                if wt == NULL:
                    raise MemoryError(f"linear: cannot allocate {n_in} x {ldt} scratch")
                try:
                    with nogil:  # a warm team is joined, to keep it awake (see above)
                        for t in prange(threads, num_threads=threads, schedule="static"):
                            if t == 0:
                                forward_transposed(&x[0, 0], &weight[0, 0], wt, ldt,
                                                   &out[0, 0], n, n_in, n_out)
                        team_released(threads)
                finally:
                    fastcnn_scratch_give_back(wt)
            else:
                with nogil:
                    for t in prange(threads, num_threads=threads, schedule="static"):
                        if t < parts:
                            forward_part(&x[0, 0], &weight[0, 0], &out[0, 0], n, n_in,
                                         n_out, t, parts)
                    team_released(threads)
            add_bias(out, bias)
            return
    load_blas(&BLAS)
    with blas_threads(1):
        with nogil:
            for t in prange(threads, num_threads=threads, schedule="static"):
                if t < parts:
                    gemm_slice(False, True, n, n_out, n_in, &x[0, 0], n_in,
                               &weight[0, 0], n_in, &out[0, 0], n_out, t, parts)
            team_released(threads)
    add_bias(out, bias)


cdef void add_bias(floating[:, ::1] out, bias) except *:
    cdef Py_ssize_t i, j
    cdef const floating[::1] bias_view
    cdef floating* row
    if bias is not None:
        bias_view = bias
        with nogil:
            for i in range(out.shape[0]):
                row = &out[i, 0]
                for j in range(out.shape[1]):
                    row[j] += bias_view[j]


def linear_backward(const floating[:, ::1] grad_out, const floating[:, ::1] x,
                    const floating[:, ::1] weight, grad_x, grad_weight, grad_bias,
                    int n_threads):
    """See fastcnn._backend.Backend: overwrites each gradient buffer that is not None."""
    cdef int n = x.shape[0], n_in = x.shape[1], n_out = weight.shape[0]
    cdef Py_ssize_t macs = <Py_ssize_t> n * n_in * n_out
    cdef int threads = team_size(macs, MIN_PARALLEL_MACS, n_threads)
    cdef int parts_x, parts_w, t
    cdef const floating* g = &grad_out[0, 0]
    cdef const floating* w = &weight[0, 0]
    cdef const floating* xp = &x[0, 0]
    cdef floating* gx = NULL
    cdef floating* gw = NULL
    cdef floating[:, ::1] view
    if grad_x is not None:
        view = grad_x
        gx = &view[0, 0]
    if grad_weight is not None:
        view = grad_weight
        gw = &view[0, 0]
    if macs < MIN_PARALLEL_MACS:  # each product whole, side by side on a warm team
        parts_x = 1 if gx != NULL else 0
        parts_w = 1 if gw != NULL else 0
    elif gx != NULL and gw != NULL and threads > 1:
        parts_x = threads // 2  # the two products are the same size: half the team on each
        parts_w = threads - parts_x
    else:  # each product over the whole team (on one thread: one after the other)
        parts_x = threads if gx != NULL else 0
        parts_w = threads if gw != NULL else 0
    if floating is float:
        if fastcnn_small_gemm_has():
            with nogil:
                for t in prange(parts_x + parts_w, num_threads=threads, schedule="static"):
                    if t < parts_x:
                        fastcnn_small_gemm(n, n_in, n_out, g, n_out, 1, w, n_in, gx, n_in,
                                           t, parts_x)
                    else:  # grad_out^T: A(o, i) = grad_out[i, o]
                        fastcnn_small_gemm(n_out, n_in, n, g, 1, n_out, xp, n_in, gw, n_in,
                                           t - parts_x, parts_w)
                team_released(threads)
            add_bias_grad(grad_out, grad_bias)
            return
    load_blas(&BLAS)
    with blas_threads(1):
        with nogil:
            for t in prange(parts_x + parts_w, num_threads=threads, schedule="static"):
                if t < parts_x:
                    # grad_x (n, in) = grad_out (n, out) @ W (out, in)
                    gemm_slice(False, False, n, n_in, n_out, g, n_out, w, n_in,
                               gx, n_in, t, parts_x)
                else:
                    # grad_W (out, in) = grad_out^T (out, n) @ x (n, in)
                    gemm_slice(True, False, n_out, n_in, n, g, n_out, xp, n_in,
                               gw, n_in, t - parts_x, parts_w)
            team_released(threads)
    add_bias_grad(grad_out, grad_bias)


cdef void add_bias_grad(const floating[:, ::1] grad_out, grad_bias) except *:
    cdef Py_ssize_t i, j
    cdef floating[::1] gb
    if grad_bias is not None:
        gb = grad_bias
        with nogil:
            for j in range(grad_out.shape[1]):
                gb[j] = 0
            for i in range(grad_out.shape[0]):
                for j in range(grad_out.shape[1]):
                    gb[j] += grad_out[i, j]
