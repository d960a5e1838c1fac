/* float32 products of a dense layer's size on AVX-512, without BLAS.
 *
 *   C[i * ldc + j] = sum_k A(i, k) * B[k * ldb + j]    for i < m, j < n
 *
 * where A(i, k) = a[i * a_is + k * a_ks]: any strides, each element broadcast from
 * memory, so A needs no packing in either orientation; B is read in rows as it lies.
 * The three products of a dense layer are of this form: the input gradient (grad_out @
 * W) and the weight gradient (grad_out^T @ x) as they are, the forward pass (x @ W^T) with
 * W transposed per call where fastcnn_gemm_nt (below: W as it lies) would be slower.
 *
 * A block of 6 rows x 4 vectors of C stays in registers over all of k: 10 loads for 24
 * multiply-adds; the last columns take as many vectors as they need, the last one
 * masked, and rows past m repeat row m - 1 without being stored. OpenBLAS packs both
 * operands of every product (each thread all of the smaller one again when a product is
 * split); here nothing is copied but W^T (docs/performance.md, "dense layers").
 */
#include "small_gemm.h"

#include <stddef.h>

#include "simd.h"

#define FASTCNN_GEMM_ROWS 6
#define FASTCNN_GEMM_COLS 64 /* 4 vectors of 16 */

#if FASTCNN_X86_SIMD

#include <immintrin.h>

/* Rows [i0, i1) of C at columns [j0, j0 + 16 * NV), the last vector masked by `last`. */
#define FASTCNN_SMALL_GEMM_BLOCK(NAME, NV)                                                 \
    __attribute__((target("avx512f"))) static void NAME(                                   \
        ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, __mmask16 last, ptrdiff_t k,             \
        const float *a, ptrdiff_t a_is, ptrdiff_t a_ks, const float *b, ptrdiff_t ldb,     \
        float *c, ptrdiff_t ldc)                                                            \
    {                                                                                       \
        __mmask16 mask[NV];                                                                 \
        for (int v = 0; v < NV; v++) mask[v] = v == NV - 1 ? last : (__mmask16)0xFFFF;      \
        for (ptrdiff_t ib = i0; ib < i1; ib += FASTCNN_GEMM_ROWS) {                         \
            const float *ar[FASTCNN_GEMM_ROWS];                                             \
            __m512 acc[FASTCNN_GEMM_ROWS][NV];                                              \
            for (int r = 0; r < FASTCNN_GEMM_ROWS; r++) {                                   \
                ar[r] = a + (ib + r < i1 ? ib + r : i1 - 1) * a_is;                         \
                for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();               \
            }                                                                               \
            const float *bk = b + j0;                                                       \
            for (ptrdiff_t kk = 0; kk < k; kk++, bk += ldb) {                               \
                __m512 bv[NV];                                                              \
                for (int v = 0; v < NV; v++)                                                \
                    bv[v] = _mm512_maskz_loadu_ps(mask[v], bk + 16 * v);                    \
                for (int r = 0; r < FASTCNN_GEMM_ROWS; r++) {                               \
                    __m512 av = _mm512_set1_ps(ar[r][kk * a_ks]);                           \
                    for (int v = 0; v < NV; v++)                                            \
                        acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                  \
                }                                                                           \
            }                                                                               \
            for (int r = 0; r < FASTCNN_GEMM_ROWS && ib + r < i1; r++)                      \
                for (int v = 0; v < NV; v++)                                                \
                    _mm512_mask_storeu_ps(c + (ib + r) * ldc + j0 + 16 * v, mask[v],        \
                                          acc[r][v]);                                       \
        }                                                                                   \
    }

FASTCNN_SMALL_GEMM_BLOCK(fastcnn_small_gemm_4, 4)
FASTCNN_SMALL_GEMM_BLOCK(fastcnn_small_gemm_3, 3)
FASTCNN_SMALL_GEMM_BLOCK(fastcnn_small_gemm_2, 2)
FASTCNN_SMALL_GEMM_BLOCK(fastcnn_small_gemm_1, 1)


/* Columns [j0, j1) and rows [i0, i1) of C: 4 vectors at a time, then as many as the
 * columns left need (LeNet's 84 -> 10 layer: one, masked to 10 lanes). */
static void fastcnn_small_gemm_block(ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1,
                                     ptrdiff_t k, const float *a, ptrdiff_t a_is,
                                     ptrdiff_t a_ks, const float *b, ptrdiff_t ldb, float *c,
                                     ptrdiff_t ldc)
{
    for (ptrdiff_t jb = j0; jb < j1; jb += FASTCNN_GEMM_COLS) {
        ptrdiff_t left = j1 - jb > FASTCNN_GEMM_COLS ? FASTCNN_GEMM_COLS : j1 - jb;
        ptrdiff_t nv = (left + 15) / 16, tail = left - 16 * (nv - 1);
        __mmask16 last = tail >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << tail) - 1);
#define FASTCNN_SMALL_GEMM_CALL(NV)                                                         \
        fastcnn_small_gemm_##NV(i0, i1, jb, last, k, a, a_is, a_ks, b, ldb, c, ldc)
        if (nv == 4) FASTCNN_SMALL_GEMM_CALL(4);
        else if (nv == 3) FASTCNN_SMALL_GEMM_CALL(3);
        else if (nv == 2) FASTCNN_SMALL_GEMM_CALL(2);
        else FASTCNN_SMALL_GEMM_CALL(1);
#undef FASTCNN_SMALL_GEMM_CALL
    }
}


/* 16 vectors summed across their lanes, all at once: lane 4 j + t of the result is the
 * sum of v[4 t + j]. Four rounds of shuffles and adds, each halving the lanes that hold
 * a vector's partial sums (16 -> 8 -> 4 -> 2 -> 1): 45 instructions, where 16 separate
 * reductions take about 8 each. */
__attribute__((target("avx512f"))) static inline __m512 fastcnn_sum_lanes16(const __m512 *v)
{
    __m512 w[8], x[4], y[2];
    for (int m = 0; m < 8; m++) /* quarters 0-1: v[2m]'s partials, 2-3: v[2m + 1]'s */
        w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], 0xEE));
    for (int p = 0; p < 4; p++) /* quarter j: v[4p + j]'s */
        x[p] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0x88),
                             _mm512_shuffle_f32x4(w[2 * p], w[2 * p + 1], 0xDD));
    for (int h = 0; h < 2; h++) /* quarter j, lanes 0-1: v[8h + j]'s, 2-3: v[8h + 4 + j]'s */
        y[h] = _mm512_add_ps(_mm512_shuffle_ps(x[2 * h], x[2 * h + 1], 0x44),
                             _mm512_shuffle_ps(x[2 * h], x[2 * h + 1], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD));
}

/* The forward pass's product with W as it lies, both operands' rows along k:
 *
 *   C[i * ldc + j] = sum_k a[i * lda + k] * b[j * ldb + k]   for i0 <= i < i1, j0 <= j < j1
 *
 * A block of 4 rows of a x 4 rows of b keeps 16 vectors of partial sums over k (lane l
 * sums the k = l mod 16, whatever the addresses, so the rounding never depends on where
 * the arrays lie; the tail is masked), 8 loads for 16 multiply-adds, then sums them
 * across their lanes together (fastcnn_sum_lanes16) into C's 4 x 4 block. Rows past i1
 * or j1 repeat the last and are not stored. The per-call transpose of W this spares was
 * a third of LeNet's 400 -> 120 forward inside a training step (docs/performance.md,
 * "dense layers").
 */
__attribute__((target("avx512f"))) void fastcnn_gemm_nt(
    ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1, ptrdiff_t k, const float *a,
    ptrdiff_t lda, const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc)
{
    ptrdiff_t k16 = k / 16 * 16;
    __mmask16 tail = (__mmask16)((1u << (k - k16)) - 1);
    for (ptrdiff_t ib = i0; ib < i1; ib += 4) {
        const float *ar[4];
        for (int r = 0; r < 4; r++) ar[r] = a + (ib + r < i1 ? ib + r : i1 - 1) * lda;
        for (ptrdiff_t jb = j0; jb < j1; jb += 4) {
            const float *br[4];
            __m512 acc[16], av[4], bv[4];
            for (int s = 0; s < 4; s++) br[s] = b + (jb + s < j1 ? jb + s : j1 - 1) * ldb;
            for (int q = 0; q < 16; q++) acc[q] = _mm512_setzero_ps();
            /* (r, s) sums into acc[4 s + r], so that it lands in lane 4 r + s */
            for (ptrdiff_t kk = 0; kk < k16; kk += 16) {
                for (int r = 0; r < 4; r++) av[r] = _mm512_loadu_ps(ar[r] + kk);
                for (int s = 0; s < 4; s++) bv[s] = _mm512_loadu_ps(br[s] + kk);
                for (int r = 0; r < 4; r++)
                    for (int s = 0; s < 4; s++)
                        acc[4 * s + r] = _mm512_fmadd_ps(av[r], bv[s], acc[4 * s + r]);
            }
            if (k16 < k) {
                for (int r = 0; r < 4; r++) av[r] = _mm512_maskz_loadu_ps(tail, ar[r] + k16);
                for (int s = 0; s < 4; s++) bv[s] = _mm512_maskz_loadu_ps(tail, br[s] + k16);
                for (int r = 0; r < 4; r++)
                    for (int s = 0; s < 4; s++)
                        acc[4 * s + r] = _mm512_fmadd_ps(av[r], bv[s], acc[4 * s + r]);
            }
            __m512 sums = fastcnn_sum_lanes16(acc);
            unsigned cols = (unsigned)(j1 - jb < 4 ? (1u << (j1 - jb)) - 1 : 0xF);
            for (int r = 0; r < 4 && ib + r < i1; r++) /* row r: lanes 4r..4r+3, moved down */
                _mm512_mask_storeu_ps(c + (ib + r) * ldc + jb, (__mmask16)cols,
                                      _mm512_maskz_compress_ps((__mmask16)(0xF << (4 * r)), sums));
        }
    }
}

int fastcnn_small_gemm_has(void) { return fastcnn_simd_level() == 2; }

#else

static void fastcnn_small_gemm_block(ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1,
                                     ptrdiff_t k, const float *a, ptrdiff_t a_is,
                                     ptrdiff_t a_ks, const float *b, ptrdiff_t ldb, float *c,
                                     ptrdiff_t ldc)
{
    (void)i0; (void)i1; (void)j0; (void)j1; (void)k; (void)a; (void)a_is; (void)a_ks;
    (void)b; (void)ldb; (void)c; (void)ldc;
}

void fastcnn_gemm_nt(ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1, ptrdiff_t k,
                            const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb,
                            float *c, ptrdiff_t ldc)
{
    (void)i0; (void)i1; (void)j0; (void)j1; (void)k; (void)a; (void)lda; (void)b; (void)ldb;
    (void)c; (void)ldc;
}

int fastcnn_small_gemm_has(void) { return 0; }

#endif

/* The columns [*j0, *j1) of C that part `part` of `parts` computes: whole blocks of
 * columns when there are enough of them for every part (returns 1), else 0 (the parts
 * then split the rows). */
static int fastcnn_small_gemm_cols(ptrdiff_t n, int part, int parts, ptrdiff_t *j0,
                                   ptrdiff_t *j1)
{
    ptrdiff_t col_blocks = (n + FASTCNN_GEMM_COLS - 1) / FASTCNN_GEMM_COLS;
    if (col_blocks < parts) return 0;
    *j0 = col_blocks * part / parts * FASTCNN_GEMM_COLS;
    *j1 = col_blocks * (part + 1) / parts * FASTCNN_GEMM_COLS;
    if (*j1 > n) *j1 = n;
    return 1;
}

/* Part `part` of `parts` of C: whole blocks of columns when there are enough of them for
 * every part, else rows (in multiples of the register block where possible). */
void fastcnn_small_gemm(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a,
                               ptrdiff_t a_is, ptrdiff_t a_ks, const float *b, ptrdiff_t ldb,
                               float *c, ptrdiff_t ldc, int part, int parts)
{
    ptrdiff_t j0, j1;
    if (fastcnn_small_gemm_cols(n, part, parts, &j0, &j1)) {
        if (j0 < j1) fastcnn_small_gemm_block(0, m, j0, j1, k, a, a_is, a_ks, b, ldb, c, ldc);
    } else {
        ptrdiff_t row_blocks = (m + FASTCNN_GEMM_ROWS - 1) / FASTCNN_GEMM_ROWS;
        ptrdiff_t i0 = row_blocks * part / parts * FASTCNN_GEMM_ROWS;
        ptrdiff_t i1 = row_blocks * (part + 1) / parts * FASTCNN_GEMM_ROWS;
        if (i1 > m) i1 = m;
        if (i0 < i1) fastcnn_small_gemm_block(i0, i1, 0, n, k, a, a_is, a_ks, b, ldb, c, ldc);
    }
}
