/* The backward pass of a stride-1 convolution with the samples across the vector lanes.
 *
 * For one group of channels and a block of LANES samples (lane l = sample l):
 *
 *   gx[c, i, j] = sum_o sum_{ki, kj valid} w[o, c, ki, kj] * dy[o, i + ph - ki*dh, j + pw - kj*dw]
 *
 * where (ki, kj) is valid when the dy position it reads lies inside dy. The valid taps
 * of a position are known in scalars, the same for every lane, so each is visited once:
 * no products with padding and no junk columns. The wide-layout kernel (direct_conv.c)
 * computes the same gradient as a full correlation over dy padded by (k - 1) on every
 * side, at LeNet's C3 (10x10 dy, 5x5 taps, 14x14 gx) about 1.7x the products needed.
 *
 * dy comes as [o][y][x][LANES] and gx is written as [c][i][j][LANES] (_conv transposes
 * both). A block of CB input channels x P neighbouring positions of a row is accumulated
 * in registers over every output channel and valid tap, the P positions sharing their
 * tap range (edges have ranges of their own, so they go in shorter blocks). Weights come
 * packed as wpk[c_block][o][ki][kj][CB], zero past cg; those channels are not stored.
 */
#include "batch_lanes.h"

#include <stddef.h>
#include <string.h>

#include "simd.h"

#if FASTCNN_X86_SIMD

#include "vec.h"

#define FASTCNN_IGRAD_BLOCK(NAME, TARGET, VEC, LANES, CB, P)                                \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *dy, ptrdiff_t o_step, ptrdiff_t ki_step, ptrdiff_t kj_step,           \
        ptrdiff_t n_o, ptrdiff_t n_ki, ptrdiff_t n_kj, const float *w, ptrdiff_t w_o_step,  \
        ptrdiff_t w_ki_step, float *gx, ptrdiff_t gx_c_step, ptrdiff_t n_c)                 \
    {                                                                                       \
        VEC acc[CB][P];                                                                     \
        for (int c = 0; c < CB; c++)                                                        \
            for (int p = 0; p < P; p++) acc[c][p] = (VEC){0};                               \
        for (ptrdiff_t o = 0; o < n_o; o++) {                                               \
            for (ptrdiff_t a = 0; a < n_ki; a++) {                                          \
                const float *src = dy + o * o_step + a * ki_step;                           \
                const float *wr = w + o * w_o_step + a * w_ki_step;                         \
                for (ptrdiff_t b = 0; b < n_kj; b++, src += kj_step, wr += CB) {            \
                    VEC yv[P];                                                              \
                    for (int p = 0; p < P; p++) memcpy(&yv[p], src + p * LANES, sizeof(VEC)); \
                    for (int c = 0; c < CB; c++) {                                          \
                        VEC b_ = FASTCNN_SPLAT(VEC, wr[c]);                                 \
                        for (int p = 0; p < P; p++) acc[c][p] += b_ * yv[p];                \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        for (int c = 0; c < CB; c++) {                                                      \
            if (c >= n_c) break;                                                            \
            for (int p = 0; p < P; p++)                                                     \
                memcpy(gx + c * gx_c_step + p * LANES, &acc[c][p], sizeof(VEC));           \
        }                                                                                   \
    }

#define FASTCNN_IGRAD_SET(SUFFIX, TARGET, VEC, LANES)                                       \
    FASTCNN_IGRAD_BLOCK(fastcnn_igrad_3_##SUFFIX, TARGET, VEC, LANES, 6, 3)                  \
    FASTCNN_IGRAD_BLOCK(fastcnn_igrad_2_##SUFFIX, TARGET, VEC, LANES, 6, 2)                  \
    FASTCNN_IGRAD_BLOCK(fastcnn_igrad_1_##SUFFIX, TARGET, VEC, LANES, 6, 1)

FASTCNN_IGRAD_SET(avx512, "avx512f", fastcnn_v16, 16)
FASTCNN_IGRAD_SET(avx2, "avx2,fma", fastcnn_v8, 8)

/* The weight gradient of the same convolution, for one group and block of samples:
 *
 *   dw[o][r] += sum_{y, x} dy[o, y, x] * xp[off[r] + (y * wp + x) * LANES]    (per lane)
 *
 * for o < cog_pad (a multiple of OB) and r < k_pad (a multiple of RB), where xp is the
 * block's zero-padded input as [c][hp][wp][LANES] and off[r] the offset of tap
 * (c, ki, kj) in it (in floats). The lanes hold one sample each until _conv sums them.
 * A block of OB output channels x RB taps stays in registers over every output
 * position: OB + RB loads for OB * RB multiply-adds. Padded channels of dy are zero and
 * padded taps repeat a valid offset; the caller drops their sums.
 */
#define FASTCNN_WGRAD_BATCH_KERNEL(NAME, TARGET, VEC, LANES, OB, RB)                        \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *dy, const float *xp, const ptrdiff_t *off, ptrdiff_t k_pad,           \
        ptrdiff_t cog_pad, ptrdiff_t h_out, ptrdiff_t w_out, ptrdiff_t wp, float *dw)      \
    {                                                                                       \
        ptrdiff_t p = h_out * w_out;                                                        \
        for (ptrdiff_t o0 = 0; o0 < cog_pad; o0 += OB) {                                    \
            for (ptrdiff_t r0 = 0; r0 < k_pad; r0 += RB) {                                  \
                VEC acc[OB][RB];                                                            \
                const float *xr[RB];                                                        \
                for (int b = 0; b < RB; b++) {                                              \
                    xr[b] = xp + off[r0 + b];                                               \
                    for (int a = 0; a < OB; a++) acc[a][b] = (VEC){0};                      \
                }                                                                           \
                for (ptrdiff_t y = 0; y < h_out; y++) {                                     \
                    const float *d = dy + (o0 * p + y * w_out) * LANES;                     \
                    ptrdiff_t row = y * wp * LANES;                                         \
                    for (ptrdiff_t x = 0; x < w_out; x++) {                                 \
                        VEC dv[OB];                                                         \
                        for (int a = 0; a < OB; a++)                                        \
                            memcpy(&dv[a], d + (a * p + x) * LANES, sizeof(VEC));           \
                        for (int b = 0; b < RB; b++) {                                      \
                            VEC xv;                                                         \
                            memcpy(&xv, xr[b] + row + x * LANES, sizeof(VEC));              \
                            for (int a = 0; a < OB; a++) acc[a][b] += dv[a] * xv;           \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
                for (int a = 0; a < OB; a++)                                                \
                    for (int b = 0; b < RB; b++) {                                          \
                        float *dst = dw + ((o0 + a) * k_pad + r0 + b) * LANES;              \
                        VEC cur;                                                            \
                        memcpy(&cur, dst, sizeof(VEC));                                     \
                        cur += acc[a][b];                                                   \
                        memcpy(dst, &cur, sizeof(VEC));                                     \
                    }                                                                       \
            }                                                                               \
        }                                                                                   \
    }

FASTCNN_WGRAD_BATCH_KERNEL(fastcnn_wgrad_batch_avx512, "avx512f", fastcnn_v16, 16, 4, 5)
FASTCNN_WGRAD_BATCH_KERNEL(fastcnn_wgrad_batch_avx2, "avx2,fma", fastcnn_v8, 8, 2, 5)

/* Output channels and taps per register block of the weight-gradient kernel. */
ptrdiff_t fastcnn_wgrad_batch_o_block(int level) { return level == 2 ? 4 : 2; }
ptrdiff_t fastcnn_wgrad_batch_r_block(int level) { (void)level; return 5; }

void fastcnn_wgrad_batch(int level, const float *dy, const float *xp,
                                const ptrdiff_t *off, ptrdiff_t k_pad, ptrdiff_t cog_pad,
                                ptrdiff_t h_out, ptrdiff_t w_out, ptrdiff_t wp, float *dw)
{
    if (level == 2)
        fastcnn_wgrad_batch_avx512(dy, xp, off, k_pad, cog_pad, h_out, w_out, wp, dw);
    else
        fastcnn_wgrad_batch_avx2(dy, xp, off, k_pad, cog_pad, h_out, w_out, wp, dw);
}

/* Samples per block (the vector width) and input channels per register block. */
ptrdiff_t fastcnn_igrad_lanes(int level) { return level == 2 ? 16 : 8; }
ptrdiff_t fastcnn_igrad_c_block(int level) { (void)level; return 6; }

/* The taps t in [0, k) whose position o + pad - t*d lies in [0, n_out): [*lo, *hi). */
static void fastcnn_igrad_taps(ptrdiff_t o, ptrdiff_t pad, ptrdiff_t d, ptrdiff_t k,
                               ptrdiff_t n_out, ptrdiff_t *lo, ptrdiff_t *hi)
{
    ptrdiff_t a = o + pad - n_out + 1; /* t*d >= a */
    ptrdiff_t b = o + pad;             /* t*d <= b */
    *lo = a <= 0 ? 0 : (a + d - 1) / d;
    *hi = b < 0 ? 0 : b / d + 1;
    if (*hi > k) *hi = k;
    if (*lo > *hi) *lo = *hi;
}

/* Multiply-adds (vectors) of one block of samples, for choosing this kernel. */
ptrdiff_t fastcnn_igrad_cost(int level, ptrdiff_t cg, ptrdiff_t cog, ptrdiff_t h,
                                    ptrdiff_t w, ptrdiff_t h_out, ptrdiff_t w_out,
                                    ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw,
                                    ptrdiff_t dh, ptrdiff_t dw)
{
    ptrdiff_t cb = fastcnn_igrad_c_block(level), rows = 0, cols = 0, lo, hi;
    for (ptrdiff_t i = 0; i < h; i++) {
        fastcnn_igrad_taps(i, ph, dh, kh, h_out, &lo, &hi);
        rows += hi - lo;
    }
    for (ptrdiff_t j = 0; j < w; j++) {
        fastcnn_igrad_taps(j, pw, dw, kw, w_out, &lo, &hi);
        cols += hi - lo;
    }
    return (cg + cb - 1) / cb * cb * cog * rows * cols;
}

/* gx (cg, h, w, LANES) of one group and block of samples from dy (cog, h_out, w_out,
 * LANES) and the weights packed as above. */
void fastcnn_igrad(int level, const float *dy, ptrdiff_t cog, ptrdiff_t h_out,
                          ptrdiff_t w_out, const float *wpk, ptrdiff_t cg, ptrdiff_t kh,
                          ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh,
                          ptrdiff_t dw, ptrdiff_t h, ptrdiff_t w, float *gx)
{
    ptrdiff_t L = fastcnn_igrad_lanes(level), cb = fastcnn_igrad_c_block(level);
    ptrdiff_t o_step = h_out * w_out * L, ki_step = -dh * w_out * L, kj_step = -dw * L;
    ptrdiff_t w_ki_step = kw * cb, w_o_step = kh * w_ki_step, gx_c_step = h * w * L;
    for (ptrdiff_t c0 = 0; c0 < cg; c0 += cb) {
        ptrdiff_t n_c = cg - c0 < cb ? cg - c0 : cb;
        const float *wb = wpk + c0 * cog * kh * kw;
        for (ptrdiff_t i = 0; i < h; i++) {
            ptrdiff_t ki_lo, ki_hi;
            fastcnn_igrad_taps(i, ph, dh, kh, h_out, &ki_lo, &ki_hi);
            for (ptrdiff_t j = 0; j < w;) {
                ptrdiff_t kj_lo, kj_hi, lo2, hi2, np = 1;
                fastcnn_igrad_taps(j, pw, dw, kw, w_out, &kj_lo, &kj_hi);
                while (np < 3 && j + np < w) {
                    fastcnn_igrad_taps(j + np, pw, dw, kw, w_out, &lo2, &hi2);
                    if (lo2 != kj_lo || hi2 != kj_hi) break;
                    np++;
                }
                float *dst = gx + ((c0 * h + i) * w + j) * L;
                if (ki_lo == ki_hi || kj_lo == kj_hi) {
                    /* no tap reaches dy: a zero gradient (possible with padding) */
                    for (ptrdiff_t c = 0; c < n_c; c++)
                        memset(dst + c * gx_c_step, 0, np * L * sizeof(float));
                    j += np;
                    continue;
                }
                const float *src = dy + ((i + ph - ki_lo * dh) * w_out + j + pw - kj_lo * dw) * L;
                const float *wr = wb + ki_lo * w_ki_step + kj_lo * cb;
#define FASTCNN_IGRAD_CALL(P, SUFFIX)                                                       \
                fastcnn_igrad_##P##_##SUFFIX(src, o_step, ki_step, kj_step, cog, ki_hi - ki_lo, \
                                             kj_hi - kj_lo, wr, w_o_step, w_ki_step, dst,    \
                                             gx_c_step, n_c)
                if (level == 2) {
                    if (np == 3) FASTCNN_IGRAD_CALL(3, avx512);
                    else if (np == 2) FASTCNN_IGRAD_CALL(2, avx512);
                    else FASTCNN_IGRAD_CALL(1, avx512);
                } else {
                    if (np == 3) FASTCNN_IGRAD_CALL(3, avx2);
                    else if (np == 2) FASTCNN_IGRAD_CALL(2, avx2);
                    else FASTCNN_IGRAD_CALL(1, avx2);
                }
#undef FASTCNN_IGRAD_CALL
                j += np;
            }
        }
    }
}

#else

ptrdiff_t fastcnn_igrad_lanes(int level) { (void)level; return 1; }
ptrdiff_t fastcnn_igrad_c_block(int level) { (void)level; return 1; }
ptrdiff_t fastcnn_igrad_cost(int level, ptrdiff_t cg, ptrdiff_t cog, ptrdiff_t h,
                                    ptrdiff_t w, ptrdiff_t h_out, ptrdiff_t w_out,
                                    ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw,
                                    ptrdiff_t dh, ptrdiff_t dw)
{
    (void)level; (void)cg; (void)cog; (void)h; (void)w; (void)h_out; (void)w_out;
    (void)kh; (void)kw; (void)ph; (void)pw; (void)dh; (void)dw;
    return 0;
}
ptrdiff_t fastcnn_wgrad_batch_o_block(int level) { (void)level; return 1; }
ptrdiff_t fastcnn_wgrad_batch_r_block(int level) { (void)level; return 1; }
void fastcnn_wgrad_batch(int level, const float *dy, const float *xp,
                                const ptrdiff_t *off, ptrdiff_t k_pad, ptrdiff_t cog_pad,
                                ptrdiff_t h_out, ptrdiff_t w_out, ptrdiff_t wp, float *dw)
{
    (void)level; (void)dy; (void)xp; (void)off; (void)k_pad; (void)cog_pad; (void)h_out;
    (void)w_out; (void)wp; (void)dw;
}
void fastcnn_igrad(int level, const float *dy, ptrdiff_t cog, ptrdiff_t h_out,
                          ptrdiff_t w_out, const float *wpk, ptrdiff_t cg, ptrdiff_t kh,
                          ptrdiff_t kw, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh,
                          ptrdiff_t dw, ptrdiff_t h, ptrdiff_t w, float *gx)
{
    (void)level; (void)dy; (void)cog; (void)h_out; (void)w_out; (void)wpk; (void)cg;
    (void)kh; (void)kw; (void)ph; (void)pw; (void)dh; (void)dw; (void)h; (void)w; (void)gx;
}

#endif
