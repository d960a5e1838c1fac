/* Register-blocked direct convolution, float32, for the stride-1 "wide" layout of _conv.pyx.
 *
 * out[co * ldo + t] = sum_r w[co, r] * xp[off[r] + t]   for co < cog_pad, t < q_pad
 *
 * The taps r run channel by channel, taps_c per channel. With ranges != NULL, block b of
 * positions (t0 = b * TB) visits only taps [ranges[2b], ranges[2b+1]) of each channel:
 * the caller leaves out kernel rows that read only zero padding rows for that block.
 *
 * The taps are visited k_chunk at a time (a multiple of taps_c: whole channels), each
 * chunk over every block of outputs before the next, so that the input channels one chunk
 * reads stay in cache while every block of output channels is computed from them (a
 * 64-channel 56x56 plane is larger than a core's L2). Between chunks the partial sums
 * are stored and loaded back: the same additions in the same order, so the same bits.
 *
 * xp is one sample's zero-padded input plane block and off[r] the offset of kernel tap r
 * in it, so this is a matrix product whose right-hand rows are read in place: no im2col
 * copy and no BLAS packing, which dominate when the channel counts are small (LeNet).
 * A block of CB output channels x TB positions is accumulated in vector registers over
 * all taps. Weights come packed as wpk[co_block][r][CB] (zero rows pad cog to cog_pad);
 * q_pad is a multiple of TB and the caller provides readable slack past each row.
 *
 * The zero padding, the junk columns of the wide layout (t % wp >= w_out) and the
 * positions past q take part in the products like data. Their sums are dropped, except
 * where they meet a zero: padding in the forward pass (as in the numpy backend), the
 * input gradient's padded output gradient and the weight gradient's zero output
 * gradient at junk positions. 0 * inf is NaN, so _conv runs these two only on finite
 * weights and x ("Special values" in _conv.pyx).
 *
 * Code is generated for AVX-512 and AVX2+FMA with GCC/Clang vector extensions and
 * chosen at run time; elsewhere fastcnn_direct_level() is 0 and _conv uses im2col + BLAS.
 */
#include "direct_conv.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"
#include "transpose.h"

#if FASTCNN_X86_SIMD

#include <immintrin.h>

#include "vec.h"

#define FASTCNN_DIRECT_KERNEL(NAME, TARGET, VEC, LANES, NV, CB)                            \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *xp, const ptrdiff_t *off, ptrdiff_t k, ptrdiff_t taps_c,              \
        ptrdiff_t k_chunk, const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog_pad,   \
        float *out, ptrdiff_t ldo, ptrdiff_t q_pad)                                         \
    {                                                                                       \
        for (ptrdiff_t k0 = 0; k0 < k; k0 += k_chunk) {                                     \
            ptrdiff_t k1 = k0 + k_chunk < k ? k0 + k_chunk : k;                             \
            for (ptrdiff_t co0 = 0; co0 < cog_pad; co0 += CB) {                             \
                const float *wb = wpk + co0 * k;                                            \
                for (ptrdiff_t t0 = 0, b = 0; t0 < q_pad; t0 += LANES * NV, b++) {          \
                    ptrdiff_t lo = ranges ? ranges[2 * b] : 0;                              \
                    ptrdiff_t hi = ranges ? ranges[2 * b + 1] : taps_c;                     \
                    VEC acc[CB][NV];                                                        \
                    for (int c = 0; c < CB; c++)                                            \
                        for (int v = 0; v < NV; v++) {                                      \
                            if (k0 == 0) acc[c][v] = (VEC){0};                              \
                            else memcpy(&acc[c][v], out + (co0 + c) * ldo + t0 + v * LANES, sizeof(VEC)); \
                        }                                                                   \
                    for (ptrdiff_t c0 = k0; c0 < k1; c0 += taps_c) {                        \
                        for (ptrdiff_t r = c0 + lo; r < c0 + hi; r++) {                     \
                            const float *src = xp + off[r] + t0;                            \
                            const float *wr = wb + r * CB;                                  \
                            VEC xv[NV];                                                     \
                            for (int v = 0; v < NV; v++) memcpy(&xv[v], src + v * LANES, sizeof(VEC)); \
                            for (int c = 0; c < CB; c++) {                                  \
                                VEC b_ = FASTCNN_SPLAT(VEC, wr[c]);                                  \
                                for (int v = 0; v < NV; v++) acc[c][v] += b_ * xv[v];       \
                            }                                                               \
                        }                                                                   \
                    }                                                                       \
                    for (int c = 0; c < CB; c++)                                            \
                        for (int v = 0; v < NV; v++)                                        \
                            memcpy(out + (co0 + c) * ldo + t0 + v * LANES, &acc[c][v], sizeof(VEC)); \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

FASTCNN_DIRECT_KERNEL(fastcnn_direct_avx512, "avx512f", fastcnn_v16, 16, 2, 8)
FASTCNN_DIRECT_KERNEL(fastcnn_direct_avx512_nv3, "avx512f", fastcnn_v16, 16, 3, 8)
FASTCNN_DIRECT_KERNEL(fastcnn_direct_avx512_cb6, "avx512f", fastcnn_v16, 16, 2, 6)
FASTCNN_DIRECT_KERNEL(fastcnn_direct_avx2, "avx2,fma", fastcnn_v8, 8, 2, 6)

/* The same products with the positions taken a whole vector at a time from the rows of
 * the output, for layers whose output rows are a whole number of vectors long (AVX-512:
 * 32 wide, as `mid`; AVX2: 8, 16, ...). Vector v of the sample reads from xp + vx[v] and
 * stores to out + vo[v]: a block takes NV of them, from one row or from two. So no
 * junk column of the wide layout is computed (`mid`: 1104 positions a channel become
 * 1024 + 32 of padding), and the sums go straight into the output planes (ldo apart,
 * with the bias added), not through a wide block copied out afterwards. Only channels
 * under cog are stored; past it are the zero weight rows that pad cog to CB. The taps
 * are visited in the same order, k_chunk at a time, the partial sums going through out
 * between chunks, so the results are the wide kernel's to the bit. n_vec is a multiple
 * of NV (the caller repeats the last vector: computed twice, stored twice, the same).
 * The wide layout could run on this kernel too (vx[v] = vo[v] = v * LANES), but reading
 * the positions from tables made it slower there (docs/performance.md, "rows"), so the
 * two are kept apart.
 */
#define FASTCNN_DIRECT_ROWS_KERNEL(NAME, TARGET, VEC, LANES, NV, CB)                       \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *xp, const ptrdiff_t *off, ptrdiff_t k, ptrdiff_t taps_c,              \
        ptrdiff_t k_chunk, const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog,       \
        ptrdiff_t cog_pad, const ptrdiff_t *vx, const ptrdiff_t *vo, ptrdiff_t n_vec,       \
        const float *bias, float *out, ptrdiff_t ldo)                                       \
    {                                                                                       \
        for (ptrdiff_t k0 = 0; k0 < k; k0 += k_chunk) {                                     \
            ptrdiff_t k1 = k0 + k_chunk < k ? k0 + k_chunk : k;                             \
            for (ptrdiff_t co0 = 0; co0 < cog_pad; co0 += CB) {                             \
                const float *wb = wpk + co0 * k;                                            \
                int n_c = cog - co0 < CB ? (int)(cog - co0) : CB;                           \
                for (ptrdiff_t v0 = 0, b = 0; v0 < n_vec; v0 += NV, b++) {                  \
                    ptrdiff_t lo = ranges ? ranges[2 * b] : 0;                              \
                    ptrdiff_t hi = ranges ? ranges[2 * b + 1] : taps_c;                     \
                    const float *src[NV];                                                   \
                    VEC acc[CB][NV];                                                        \
                    for (int v = 0; v < NV; v++) src[v] = xp + vx[v0 + v];                  \
                    for (int c = 0; c < CB; c++)                                            \
                        for (int v = 0; v < NV; v++) {                                      \
                            if (k0 == 0 || c >= n_c) acc[c][v] = (VEC){0};                  \
                            else memcpy(&acc[c][v], out + (co0 + c) * ldo + vo[v0 + v], sizeof(VEC)); \
                        }                                                                   \
                    for (ptrdiff_t c0 = k0; c0 < k1; c0 += taps_c) {                        \
                        for (ptrdiff_t r = c0 + lo; r < c0 + hi; r++) {                     \
                            const float *wr = wb + r * CB;                                  \
                            VEC xv[NV];                                                     \
                            for (int v = 0; v < NV; v++) memcpy(&xv[v], src[v] + off[r], sizeof(VEC)); \
                            for (int c = 0; c < CB; c++) {                                  \
                                VEC b_ = FASTCNN_SPLAT(VEC, wr[c]);                         \
                                for (int v = 0; v < NV; v++) acc[c][v] += b_ * xv[v];       \
                            }                                                               \
                        }                                                                   \
                    }                                                                       \
                    for (int c = 0; c < n_c; c++) {                                         \
                        /* the wide path's copy-out adds the bias, or 0, to every sum */    \
                        VEC add = FASTCNN_SPLAT(VEC, k1 == k && bias ? bias[co0 + c] : 0.0f); \
                        for (int v = 0; v < NV; v++) {                                      \
                            VEC sum = k1 == k ? acc[c][v] + add : acc[c][v];                \
                            memcpy(out + (co0 + c) * ldo + vo[v0 + v], &sum, sizeof(VEC));  \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

FASTCNN_DIRECT_ROWS_KERNEL(fastcnn_rows_avx512, "avx512f", fastcnn_v16, 16, 2, 8)
FASTCNN_DIRECT_ROWS_KERNEL(fastcnn_rows_avx512_nv3, "avx512f", fastcnn_v16, 16, 3, 8)
FASTCNN_DIRECT_ROWS_KERNEL(fastcnn_rows_avx512_cb6, "avx512f", fastcnn_v16, 16, 2, 6)
FASTCNN_DIRECT_ROWS_KERNEL(fastcnn_rows_avx2, "avx2,fma", fastcnn_v8, 8, 2, 6)

/* The same for a single output channel (cog_pad == 1: the input gradient of a layer with
 * one input channel, such as a network's first). With CB = 1 the NV accumulators of a
 * block would each wait on the last multiply-add (4 cycles) at every tap, so even and
 * odd taps go to two sets, added when the block is stored: 2 NV chains in flight. */
#define FASTCNN_DIRECT_KERNEL_1(NAME, TARGET, VEC, LANES, NV)                              \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *xp, const ptrdiff_t *off, ptrdiff_t k, ptrdiff_t taps_c,              \
        ptrdiff_t k_chunk, const ptrdiff_t *ranges, const float *w, float *out,             \
        ptrdiff_t q_pad)                                                                    \
    {                                                                                       \
        for (ptrdiff_t k0 = 0; k0 < k; k0 += k_chunk) {                                     \
            ptrdiff_t k1 = k0 + k_chunk < k ? k0 + k_chunk : k;                             \
            for (ptrdiff_t t0 = 0, b = 0; t0 < q_pad; t0 += LANES * NV, b++) {              \
                ptrdiff_t lo = ranges ? ranges[2 * b] : 0;                                  \
                ptrdiff_t hi = ranges ? ranges[2 * b + 1] : taps_c;                         \
                VEC even[NV], odd[NV];                                                      \
                for (int v = 0; v < NV; v++) {                                              \
                    odd[v] = (VEC){0};                                                      \
                    if (k0 == 0) even[v] = (VEC){0};                                        \
                    else memcpy(&even[v], out + t0 + v * LANES, sizeof(VEC));               \
                }                                                                           \
                for (ptrdiff_t c0 = k0; c0 < k1; c0 += taps_c) {                            \
                    ptrdiff_t r = c0 + lo;                                                  \
                    for (; r + 1 < c0 + hi; r += 2) {                                       \
                        VEC we = FASTCNN_SPLAT(VEC, w[r]), wo = FASTCNN_SPLAT(VEC, w[r + 1]); \
                        for (int v = 0; v < NV; v++) {                                      \
                            VEC xe, xo;                                                     \
                            memcpy(&xe, xp + off[r] + t0 + v * LANES, sizeof(VEC));         \
                            memcpy(&xo, xp + off[r + 1] + t0 + v * LANES, sizeof(VEC));     \
                            even[v] += we * xe;                                             \
                            odd[v] += wo * xo;                                              \
                        }                                                                   \
                    }                                                                       \
                    if (r < c0 + hi) {                                                      \
                        VEC we = FASTCNN_SPLAT(VEC, w[r]);                                  \
                        for (int v = 0; v < NV; v++) {                                      \
                            VEC xe;                                                         \
                            memcpy(&xe, xp + off[r] + t0 + v * LANES, sizeof(VEC));         \
                            even[v] += we * xe;                                             \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
                for (int v = 0; v < NV; v++) {                                              \
                    VEC sum = even[v] + odd[v];                                             \
                    memcpy(out + t0 + v * LANES, &sum, sizeof(VEC));                        \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

FASTCNN_DIRECT_KERNEL_1(fastcnn_direct_avx512_cb1, "avx512f", fastcnn_v16, 16, 2)
FASTCNN_DIRECT_KERNEL_1(fastcnn_direct_avx2_cb1, "avx2,fma", fastcnn_v8, 8, 2)


/* Weight gradient in the same layout, summed over ns samples:
 *   dw[co * k_pad + r] += sum_s sum_t dy[s * dy_stride + co * q_pad + t] * xp[s * xp_stride + off[r] + t]
 * for co < cog_pad (a multiple of CB) and r < k_pad (a multiple of RB; padded taps repeat a
 * valid offset and are discarded by the caller). dy is zero in the junk columns and past
 * q, so they add nothing while x is finite (_conv scans it first: 0 * inf is NaN). A
 * CB x RB block of dot products stays in registers across all samples.
 */
#define FASTCNN_DIRECT_WGRAD_KERNEL(NAME, TARGET, VEC, LANES, CB, RB)                       \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *xp, ptrdiff_t xp_stride, const ptrdiff_t *off, ptrdiff_t k_pad,       \
        const float *dy, ptrdiff_t dy_stride, ptrdiff_t cog_pad, ptrdiff_t q_pad,           \
        ptrdiff_t ns, float *dw)                                                            \
    {                                                                                       \
        for (ptrdiff_t co0 = 0; co0 < cog_pad; co0 += CB) {                                 \
            for (ptrdiff_t r0 = 0; r0 < k_pad; r0 += RB) {                                  \
                VEC acc[CB][RB];                                                            \
                for (int c = 0; c < CB; c++)                                                \
                    for (int q = 0; q < RB; q++) acc[c][q] = (VEC){0};                      \
                for (ptrdiff_t s = 0; s < ns; s++) {                                        \
                    const float *d = dy + s * dy_stride + co0 * q_pad;                      \
                    const float *x = xp + s * xp_stride;                                    \
                    for (ptrdiff_t t = 0; t < q_pad; t += LANES) {                          \
                        VEC dv[CB];                                                         \
                        /* unrolled: as a loop, GCC 12 copies through the stack in halves */ \
                        _Pragma("GCC unroll 8")                                             \
                        for (int c = 0; c < CB; c++) memcpy(&dv[c], d + c * q_pad + t, sizeof(VEC)); \
                        for (int q = 0; q < RB; q++) {                                      \
                            VEC xv;                                                         \
                            memcpy(&xv, x + off[r0 + q] + t, sizeof(VEC));                  \
                            for (int c = 0; c < CB; c++) acc[c][q] += dv[c] * xv;          \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
                for (int c = 0; c < CB; c++)                                                \
                    for (int q = 0; q < RB; q++) {                                          \
                        float sum = 0;                                                      \
                        for (int l = 0; l < LANES; l++) sum += acc[c][q][l];                \
                        dw[(co0 + c) * k_pad + r0 + q] += sum;                              \
                    }                                                                       \
            }                                                                               \
        }                                                                                   \
    }

FASTCNN_DIRECT_WGRAD_KERNEL(fastcnn_wgrad_avx512, "avx512f", fastcnn_v16, 16, 4, 6)
FASTCNN_DIRECT_WGRAD_KERNEL(fastcnn_wgrad_avx2, "avx2,fma", fastcnn_v8, 8, 3, 4)

/* Weight gradient with the output channels across the vector lanes, for one sample:
 *   dwt[r * cog_pad + co] += sum_t dyt[t * cog_pad + co] * x[off[r] + pos[t]]
 * for r < k_pad (a multiple of RB), co_start <= co < cog_pad (co_start and cog_pad
 * multiples of LANES), t < n_pos.
 * dyt is the sample's output gradient transposed to (position, channel) and x its padded
 * input plane block; every x value is broadcast from memory, so the positions need not
 * be contiguous: only real outputs are visited (no junk columns of the wide layout), at
 * any stride. A block of RB taps x NB vectors of channels is accumulated in registers, so
 * one broadcast feeds NB multiply-adds and one load of dyt feeds RB (AVX-512, 64
 * channels: 10 loads for 24 FMAs; one vector alone: 9 for 8, load-bound). The positions
 * are taken a tile at a time, every block over the tile before the next tile, so the
 * tile of dyt (about 24 KB) stays in L1 while every tap block reads it; without tiles a
 * 56x56 plane's dyt (800 KB at 64 channels) came from L2 once per tap block. The partial
 * sums go through dwt between tiles: the same additions in the same order, so the same
 * bits with any tile size. The taps' offsets are held in locals so they need not be
 * reloaded per position.
 */
#define FASTCNN_WGRAD_T_TILE_BYTES 24576

#define FASTCNN_WGRAD_T_KERNEL(NAME, TARGET, VEC, LANES, NB, RB)                            \
    __attribute__((target(TARGET))) static ptrdiff_t NAME(                                 \
        const float *x, const ptrdiff_t *off, ptrdiff_t k_pad, const float *dyt,           \
        const ptrdiff_t *pos, ptrdiff_t n_pos, ptrdiff_t cog_pad, ptrdiff_t co_start,      \
        float *dwt)                                                                         \
    {                                                                                       \
        ptrdiff_t tile = FASTCNN_WGRAD_T_TILE_BYTES / (ptrdiff_t)sizeof(float) / cog_pad;  \
        ptrdiff_t co_end = co_start + (cog_pad - co_start) / (NB * LANES) * (NB * LANES);  \
        if (tile < 16) tile = 16;                                                           \
        for (ptrdiff_t t0 = 0; t0 < n_pos; t0 += tile) {                                    \
            ptrdiff_t t1 = t0 + tile < n_pos ? t0 + tile : n_pos;                           \
            for (ptrdiff_t co0 = co_start; co0 < co_end; co0 += NB * LANES) {              \
                for (ptrdiff_t r0 = 0; r0 < k_pad; r0 += RB) {                              \
                    VEC acc[RB][NB];                                                        \
                    ptrdiff_t o[RB];                                                        \
                    for (int q = 0; q < RB; q++) {                                          \
                        for (int b = 0; b < NB; b++)                                        \
                            memcpy(&acc[q][b], dwt + (r0 + q) * cog_pad + co0 + b * LANES, \
                                   sizeof(VEC));                                            \
                        o[q] = off[r0 + q];                                                 \
                    }                                                                       \
                    for (ptrdiff_t t = t0; t < t1; t++) {                                   \
                        VEC d[NB];                                                          \
                        for (int b = 0; b < NB; b++)                                        \
                            memcpy(&d[b], dyt + t * cog_pad + co0 + b * LANES, sizeof(VEC)); \
                        const float *xt = x + pos[t];                                       \
                        for (int q = 0; q < RB; q++) {                                      \
                            VEC xb = FASTCNN_SPLAT(VEC, xt[o[q]]);                          \
                            for (int b = 0; b < NB; b++) acc[q][b] += d[b] * xb;           \
                        }                                                                   \
                    }                                                                       \
                    for (int q = 0; q < RB; q++)                                            \
                        for (int b = 0; b < NB; b++)                                        \
                            memcpy(dwt + (r0 + q) * cog_pad + co0 + b * LANES, &acc[q][b], \
                                   sizeof(VEC));                                            \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        return co_end;                                                                      \
    }

FASTCNN_WGRAD_T_KERNEL(fastcnn_wgrad_t4_avx512, "avx512f", fastcnn_v16, 16, 4, 6)
FASTCNN_WGRAD_T_KERNEL(fastcnn_wgrad_t2_avx512, "avx512f", fastcnn_v16, 16, 2, 8)
FASTCNN_WGRAD_T_KERNEL(fastcnn_wgrad_t_avx512, "avx512f", fastcnn_v16, 16, 1, 8)
FASTCNN_WGRAD_T_KERNEL(fastcnn_wgrad_t2_9_avx512, "avx512f", fastcnn_v16, 16, 2, 9)
FASTCNN_WGRAD_T_KERNEL(fastcnn_wgrad_t_9_avx512, "avx512f", fastcnn_v16, 16, 1, 9)
FASTCNN_WGRAD_T_KERNEL(fastcnn_wgrad_t2_avx2, "avx2,fma", fastcnn_v8, 8, 2, 6)
FASTCNN_WGRAD_T_KERNEL(fastcnn_wgrad_t_avx2, "avx2,fma", fastcnn_v8, 8, 1, 6)

/* Lanes (output channels per vector) and taps per block of the kernels above. AVX-512
 * takes blocks of four vectors (and 6 taps) when they cover the channels exactly, else
 * blocks of 8 taps or of 9, whichever pads k less (3x3 and 5x5 kernels on one channel:
 * 9 and 25 taps, padded to 9 and 27 instead of 16 and 32; 8 on a tie). Padded to its
 * block, k gives the same block again, so k_pad alone tells which kernel to run. */
ptrdiff_t fastcnn_wgrad_t_lanes(int level) { return level == 2 ? 16 : 8; }
int fastcnn_wgrad_t_quads(int level, ptrdiff_t cog_pad)
{
    return level == 2 && cog_pad % 64 == 0;
}
ptrdiff_t fastcnn_wgrad_t_taps(int level, ptrdiff_t cog_pad, ptrdiff_t k)
{
    if (level != 2) return 6;
    if (fastcnn_wgrad_t_quads(level, cog_pad)) return 6;
    return (k + 8) / 9 * 9 < (k + 7) / 8 * 8 ? 9 : 8;
}

/* Each kernel takes the channel blocks it covers whole and returns where it stopped:
 * pairs of vectors, then a last odd one alone (AVX-512: all in fours where they fit). */
void fastcnn_wgrad_t(int level, const float *x, const ptrdiff_t *off, ptrdiff_t k_pad,
                            const float *dyt, const ptrdiff_t *pos, ptrdiff_t n_pos,
                            ptrdiff_t cog_pad, float *dwt)
{
    ptrdiff_t co = 0;
    if (level == 2) {
        if (fastcnn_wgrad_t_quads(level, cog_pad)) {
            fastcnn_wgrad_t4_avx512(x, off, k_pad, dyt, pos, n_pos, cog_pad, 0, dwt);
            return;
        }
        if (fastcnn_wgrad_t_taps(level, cog_pad, k_pad) == 9) {
            co = fastcnn_wgrad_t2_9_avx512(x, off, k_pad, dyt, pos, n_pos, cog_pad, 0, dwt);
            if (co < cog_pad)
                fastcnn_wgrad_t_9_avx512(x, off, k_pad, dyt, pos, n_pos, cog_pad, co, dwt);
            return;
        }
        co = fastcnn_wgrad_t2_avx512(x, off, k_pad, dyt, pos, n_pos, cog_pad, 0, dwt);
        if (co < cog_pad) fastcnn_wgrad_t_avx512(x, off, k_pad, dyt, pos, n_pos, cog_pad, co, dwt);
        return;
    }
    co = fastcnn_wgrad_t2_avx2(x, off, k_pad, dyt, pos, n_pos, cog_pad, 0, dwt);
    if (co < cog_pad) fastcnn_wgrad_t_avx2(x, off, k_pad, dyt, pos, n_pos, cog_pad, co, dwt);
}

/* Forward pass with the output channels across the vector lanes, for stride 1 and
 * dilation 1 along the width: P consecutive positions of one output row,
 *   out[q * ld + co] = sum over (c, i, j) of w[((c * kh + i) * KW + j) * LANES + co]
 *                                            * x0[c * plane + i * row + q + j]
 * for q < P and co < LANES (one block of output channels). For each (c, i) the P + KW - 1
 * inputs the KW taps read are broadcast once each and used for up to KW products, so a
 * multiply-add needs under half a load; and only real outputs are computed, none of the
 * junk columns of the wide layout. The taps are summed in the same order as the wide
 * kernel, so the results are the same. (The broadcasts sit in an array: selecting the
 * product inside the unrolled loops instead was miscompiled by GCC 12 at -O3 with
 * AVX-512.)
 */
#define FASTCNN_LANES_FWD_KERNEL(NAME, TARGET, VEC, LANES, KW, P)                           \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *x0, ptrdiff_t plane, ptrdiff_t row, ptrdiff_t cg, ptrdiff_t kh,        \
        const float *w, float *out, ptrdiff_t ld)                                           \
    {                                                                                       \
        VEC acc[P];                                                                         \
        for (int q = 0; q < P; q++) acc[q] = (VEC){0};                                      \
        for (ptrdiff_t c = 0; c < cg; c++) {                                                \
            for (ptrdiff_t i = 0; i < kh; i++) {                                            \
                const float *X = x0 + c * plane + i * row;                                  \
                const float *wr = w + (c * kh + i) * KW * LANES;                            \
                VEC XB[P + KW - 1];                                                         \
                for (int m = 0; m < P + KW - 1; m++) XB[m] = FASTCNN_SPLAT(VEC, X[m]);               \
                for (int j = 0; j < KW; j++) {                                              \
                    VEC wv;                                                                 \
                    memcpy(&wv, wr + j * LANES, sizeof(VEC));                               \
                    for (int q = 0; q < P; q++) acc[q] += wv * XB[q + j];                   \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        for (int q = 0; q < P; q++) memcpy(out + q * ld, &acc[q], sizeof(VEC));             \
    }

#define FASTCNN_LANES_FWD_SET(SUFFIX, TARGET, VEC, LANES, KW)                               \
    FASTCNN_LANES_FWD_KERNEL(fastcnn_lanes_fwd##KW##_10_##SUFFIX, TARGET, VEC, LANES, KW, 10) \
    FASTCNN_LANES_FWD_KERNEL(fastcnn_lanes_fwd##KW##_8_##SUFFIX, TARGET, VEC, LANES, KW, 8)   \
    FASTCNN_LANES_FWD_KERNEL(fastcnn_lanes_fwd##KW##_4_##SUFFIX, TARGET, VEC, LANES, KW, 4)   \
    FASTCNN_LANES_FWD_KERNEL(fastcnn_lanes_fwd##KW##_1_##SUFFIX, TARGET, VEC, LANES, KW, 1)

FASTCNN_LANES_FWD_SET(avx512, "avx512f", fastcnn_v16, 16, 3)
FASTCNN_LANES_FWD_SET(avx512, "avx512f", fastcnn_v16, 16, 5)
FASTCNN_LANES_FWD_SET(avx2, "avx2,fma", fastcnn_v8, 8, 3)
FASTCNN_LANES_FWD_SET(avx2, "avx2,fma", fastcnn_v8, 8, 5)

/* The same for AVX2, where 16 registers cannot hold both the accumulators and the
 * broadcasts above: each input is broadcast from memory right where it is used, and NB
 * blocks of LANES output channels share it. FMA latency is 4 cycles at 2 per cycle, so a
 * block needs 8 independent accumulators to keep both units busy: with NB = 2, P = 4 to
 * 6 positions give 8 to 12 (P = 4 on one block gave 4 and ran at half speed). The taps
 * are summed in the same order as in the kernels above, so the results are the same.
 * The NB blocks' weights start wstride apart.
 */
#define FASTCNN_LANES_FWD_STREAM_KERNEL(NAME, TARGET, VEC, LANES, KW, NB, P)                \
    __attribute__((target(TARGET))) static void NAME(                                      \
        const float *x0, ptrdiff_t plane, ptrdiff_t row, ptrdiff_t cg, ptrdiff_t kh,        \
        const float *w, ptrdiff_t wstride, float *out, ptrdiff_t ld)                        \
    {                                                                                       \
        VEC acc[P][NB];                                                                     \
        for (int q = 0; q < P; q++)                                                         \
            for (int b = 0; b < NB; b++) acc[q][b] = (VEC){0};                              \
        for (ptrdiff_t c = 0; c < cg; c++) {                                                \
            for (ptrdiff_t i = 0; i < kh; i++) {                                            \
                const float *X = x0 + c * plane + i * row;                                  \
                const float *wr = w + (c * kh + i) * KW * LANES;                            \
                for (int j = 0; j < KW; j++) {                                              \
                    VEC wv[NB];                                                             \
                    for (int b = 0; b < NB; b++)                                            \
                        memcpy(&wv[b], wr + b * wstride + j * LANES, sizeof(VEC));          \
                    for (int q = 0; q < P; q++) {                                           \
                        VEC xb = FASTCNN_SPLAT(VEC, X[q + j]);                                       \
                        for (int b = 0; b < NB; b++) acc[q][b] += wv[b] * xb;               \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        for (int q = 0; q < P; q++)                                                         \
            for (int b = 0; b < NB; b++)                                                    \
                memcpy(out + q * ld + b * LANES, &acc[q][b], sizeof(VEC));                  \
    }

#define FASTCNN_LANES_FWD_STREAM_SET(KW, NB)                                                \
    FASTCNN_LANES_FWD_STREAM_KERNEL(fastcnn_lanes_fwd##KW##_nb##NB##_6_avx2, "avx2,fma", fastcnn_v8, 8, KW, NB, 6) \
    FASTCNN_LANES_FWD_STREAM_KERNEL(fastcnn_lanes_fwd##KW##_nb##NB##_5_avx2, "avx2,fma", fastcnn_v8, 8, KW, NB, 5) \
    FASTCNN_LANES_FWD_STREAM_KERNEL(fastcnn_lanes_fwd##KW##_nb##NB##_4_avx2, "avx2,fma", fastcnn_v8, 8, KW, NB, 4) \
    FASTCNN_LANES_FWD_STREAM_KERNEL(fastcnn_lanes_fwd##KW##_nb##NB##_3_avx2, "avx2,fma", fastcnn_v8, 8, KW, NB, 3) \
    FASTCNN_LANES_FWD_STREAM_KERNEL(fastcnn_lanes_fwd##KW##_nb##NB##_2_avx2, "avx2,fma", fastcnn_v8, 8, KW, NB, 2) \
    FASTCNN_LANES_FWD_STREAM_KERNEL(fastcnn_lanes_fwd##KW##_nb##NB##_1_avx2, "avx2,fma", fastcnn_v8, 8, KW, NB, 1)

FASTCNN_LANES_FWD_STREAM_SET(3, 2)
FASTCNN_LANES_FWD_STREAM_SET(5, 2)

/* Whether the kernels above exist for this kernel width, and the positions per block
 * they take first on a row of n left. On AVX2 with two channel blocks: rows of up to 6 in
 * one block, rows of 7 to 11 in two near-equal ones (LeNet's C3 rows of 10: 5 + 5), else
 * blocks of 6. AVX2 with one block has registers for 4 at most. */
int fastcnn_lanes_fwd_has(int level, ptrdiff_t kw) { return level > 0 && (kw == 3 || kw == 5); }
static ptrdiff_t fastcnn_lanes_fwd_block(int level, ptrdiff_t nb, ptrdiff_t n)
{
    if (level == 1 && nb == 2) return n <= 6 ? n : (n < 12 ? (n + 1) / 2 : 6);
    if (level == 1) return n >= 4 ? 4 : 1;
    if (n % 10 == 0) return 10; /* LeNet's C3 rows; 28 = 8 + 10 + 10 */
    return n >= 8 ? 8 : (n >= 4 ? 4 : 1);
}

/* One row of w_out positions for every block of LANES output channels (cog_pad of them;
 * block b's weights start b * LANES * k past w), in blocks of the sizes above. x0 points
 * at the row's first input (channel 0, kernel row 0). AVX2 takes the channel blocks two
 * at a time while two are left. */
void fastcnn_lanes_fwd_row(int level, ptrdiff_t kw, const float *x0, ptrdiff_t plane,
                                  ptrdiff_t row, ptrdiff_t cg, ptrdiff_t kh, const float *w,
                                  ptrdiff_t k, ptrdiff_t cog_pad, float *out, ptrdiff_t ld,
                                  ptrdiff_t w_out)
{
    ptrdiff_t lanes = fastcnn_wgrad_t_lanes(level);
    for (ptrdiff_t co0 = 0; co0 < cog_pad;) {
        ptrdiff_t nb = (level == 1 && cog_pad - co0 >= 2 * lanes) ? 2 : 1;
        const float *wb = w + co0 * k;
        float *ob = out + co0;
        for (ptrdiff_t t = 0; t < w_out;) {
            ptrdiff_t p = fastcnn_lanes_fwd_block(level, nb, w_out - t);
#define FASTCNN_LANES_CALL(SUFFIX, KW, P)                                                   \
            fastcnn_lanes_fwd##KW##_##P##_##SUFFIX(x0 + t, plane, row, cg, kh, wb, ob + t * ld, ld)
#define FASTCNN_LANES_STREAM_CALL(KW, P)                                                    \
            fastcnn_lanes_fwd##KW##_nb2_##P##_avx2(x0 + t, plane, row, cg, kh, wb, lanes * k, ob + t * ld, ld)
#define FASTCNN_LANES_STREAM_SWITCH(KW)                                                     \
            switch (p) {                                                                    \
            case 6: FASTCNN_LANES_STREAM_CALL(KW, 6); break;                                \
            case 5: FASTCNN_LANES_STREAM_CALL(KW, 5); break;                                \
            case 4: FASTCNN_LANES_STREAM_CALL(KW, 4); break;                                \
            case 3: FASTCNN_LANES_STREAM_CALL(KW, 3); break;                                \
            case 2: FASTCNN_LANES_STREAM_CALL(KW, 2); break;                                \
            default: FASTCNN_LANES_STREAM_CALL(KW, 1); break;                               \
            }
            if (level == 2 && kw == 3) {
                if (p == 10) FASTCNN_LANES_CALL(avx512, 3, 10);
                else if (p == 8) FASTCNN_LANES_CALL(avx512, 3, 8);
                else if (p == 4) FASTCNN_LANES_CALL(avx512, 3, 4);
                else FASTCNN_LANES_CALL(avx512, 3, 1);
            } else if (level == 2) {
                if (p == 10) FASTCNN_LANES_CALL(avx512, 5, 10);
                else if (p == 8) FASTCNN_LANES_CALL(avx512, 5, 8);
                else if (p == 4) FASTCNN_LANES_CALL(avx512, 5, 4);
                else FASTCNN_LANES_CALL(avx512, 5, 1);
            } else if (nb == 2 && kw == 3) {
                FASTCNN_LANES_STREAM_SWITCH(3)
            } else if (nb == 2) {
                FASTCNN_LANES_STREAM_SWITCH(5)
            } else if (kw == 3) {
                if (p == 4) FASTCNN_LANES_CALL(avx2, 3, 4);
                else FASTCNN_LANES_CALL(avx2, 3, 1);
            } else {
                if (p == 4) FASTCNN_LANES_CALL(avx2, 5, 4);
                else FASTCNN_LANES_CALL(avx2, 5, 1);
            }
#undef FASTCNN_LANES_STREAM_SWITCH
#undef FASTCNN_LANES_STREAM_CALL
#undef FASTCNN_LANES_CALL
            t += p;
        }
        co0 += nb * lanes;
    }
}

/* 2: AVX-512, 1: AVX2+FMA, 0: none (use im2col + BLAS). Set FASTCNN_DIRECT=0 in the
 * environment to force 0 (benchmarks compare both paths that way). */
int fastcnn_direct_level(void)
{
    static int level = -1;
    if (level < 0) {
        const char *env = getenv("FASTCNN_DIRECT");
        /* every thread computes the same value: the race is benign */
        level = (env == NULL || env[0] != '0') ? fastcnn_simd_level() : 0;
    }
    return level;
}

/* Output channels per register block. AVX-512 has blocks of 8 and of 6 and takes the
 * one that pads cog least (LeNet's 6 channels would waste a quarter of a block of 8).
 * A single channel has a kernel of its own. */
ptrdiff_t fastcnn_direct_co_block(int level, ptrdiff_t cog)
{
    if (cog == 1) return 1;
    if (level != 2) return 6;
    return (cog + 5) / 6 * 6 < (cog + 7) / 8 * 8 ? 6 : 8;
}
ptrdiff_t fastcnn_direct_t_block(int level) { return level == 2 ? 32 : 16; }
/* With many taps (k, every input channel's), a block of 8 channels x 3 vectors of
 * positions: 24 accumulators, 11 loads for 24 multiply-adds where 8 x 2 needs 10 for 16
 * (docs/performance.md, "three-vector blocks"). Layers with fewer taps (LeNet's,
 * `digits`) keep the 8 x 2 block they were tuned with. */
#define FASTCNN_DIRECT_NV3_MIN_TAPS 64
/* Positions per block of the kernel fastcnn_direct_conv runs for (level, cb, k): q_pad
 * and the ranges of a plan are in these blocks. */
ptrdiff_t fastcnn_direct_conv_t_block(int level, ptrdiff_t cb, ptrdiff_t k)
{
    if (level == 2 && cb == 8 && k >= FASTCNN_DIRECT_NV3_MIN_TAPS) return 48;
    return fastcnn_direct_t_block(level);
}
/* Weight-gradient blocks: output channels x taps; positions advance one vector at a time
 * and q_pad (a multiple of the forward t block) is a multiple of the vector length. */
ptrdiff_t fastcnn_wgrad_co_block(int level) { return level == 2 ? 4 : 3; }
ptrdiff_t fastcnn_wgrad_tap_block(int level) { return level == 2 ? 6 : 4; }

void fastcnn_wgrad(int level, const float *xp, ptrdiff_t xp_stride, const ptrdiff_t *off,
                          ptrdiff_t k_pad, const float *dy, ptrdiff_t dy_stride,
                          ptrdiff_t cog_pad, ptrdiff_t q_pad, ptrdiff_t ns, float *dw)
{
    if (level == 2) fastcnn_wgrad_avx512(xp, xp_stride, off, k_pad, dy, dy_stride, cog_pad, q_pad, ns, dw);
    else fastcnn_wgrad_avx2(xp, xp_stride, off, k_pad, dy, dy_stride, cog_pad, q_pad, ns, dw);
}

/* cb: the block fastcnn_direct_co_block chose, which wpk was packed for. */
void fastcnn_direct_conv(int level, ptrdiff_t cb, const float *xp, const ptrdiff_t *off,
                                ptrdiff_t k, ptrdiff_t taps_c, ptrdiff_t k_chunk,
                                const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog_pad,
                                float *out, ptrdiff_t ldo, ptrdiff_t q_pad)
{
    if (cb == 1 && level == 2)
        fastcnn_direct_avx512_cb1(xp, off, k, taps_c, k_chunk, ranges, wpk, out, q_pad);
    else if (cb == 1)
        fastcnn_direct_avx2_cb1(xp, off, k, taps_c, k_chunk, ranges, wpk, out, q_pad);
    else if (level == 2 && cb == 8 && k >= FASTCNN_DIRECT_NV3_MIN_TAPS)
        fastcnn_direct_avx512_nv3(xp, off, k, taps_c, k_chunk, ranges, wpk, cog_pad, out, ldo,
                                  q_pad);
    else if (level == 2 && cb == 8)
        fastcnn_direct_avx512(xp, off, k, taps_c, k_chunk, ranges, wpk, cog_pad, out, ldo, q_pad);
    else if (level == 2)
        fastcnn_direct_avx512_cb6(xp, off, k, taps_c, k_chunk, ranges, wpk, cog_pad, out, ldo, q_pad);
    else fastcnn_direct_avx2(xp, off, k, taps_c, k_chunk, ranges, wpk, cog_pad, out, ldo, q_pad);
}


/* The row-vector form of fastcnn_direct_conv (same cb and k rule), for cb > 1. */
void fastcnn_direct_rows(int level, ptrdiff_t cb, const float *xp, const ptrdiff_t *off,
                                ptrdiff_t k, ptrdiff_t taps_c, ptrdiff_t k_chunk,
                                const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog,
                                ptrdiff_t cog_pad, const ptrdiff_t *vx, const ptrdiff_t *vo,
                                ptrdiff_t n_vec, const float *bias, float *out, ptrdiff_t ldo)
{
    if (level == 2 && cb == 8 && k >= FASTCNN_DIRECT_NV3_MIN_TAPS)
        fastcnn_rows_avx512_nv3(xp, off, k, taps_c, k_chunk, ranges, wpk, cog, cog_pad, vx, vo,
                                n_vec, bias, out, ldo);
    else if (level == 2 && cb == 8)
        fastcnn_rows_avx512(xp, off, k, taps_c, k_chunk, ranges, wpk, cog, cog_pad, vx, vo,
                            n_vec, bias, out, ldo);
    else if (level == 2)
        fastcnn_rows_avx512_cb6(xp, off, k, taps_c, k_chunk, ranges, wpk, cog, cog_pad, vx, vo,
                                n_vec, bias, out, ldo);
    else fastcnn_rows_avx2(xp, off, k, taps_c, k_chunk, ranges, wpk, cog, cog_pad, vx, vo, n_vec,
                           bias, out, ldo);
}

#else

int fastcnn_direct_level(void) { return 0; }
ptrdiff_t fastcnn_wgrad_co_block(int level) { (void)level; return 1; }
ptrdiff_t fastcnn_wgrad_tap_block(int level) { (void)level; return 1; }
void fastcnn_wgrad(int level, const float *xp, ptrdiff_t xp_stride, const ptrdiff_t *off,
                          ptrdiff_t k_pad, const float *dy, ptrdiff_t dy_stride,
                          ptrdiff_t cog_pad, ptrdiff_t q_pad, ptrdiff_t ns, float *dw)
{
    (void)level; (void)xp; (void)xp_stride; (void)off; (void)k_pad; (void)dy;
    (void)dy_stride; (void)cog_pad; (void)q_pad; (void)ns; (void)dw;
}
ptrdiff_t fastcnn_direct_co_block(int level, ptrdiff_t cog) { (void)level; (void)cog; return 1; }
ptrdiff_t fastcnn_wgrad_t_lanes(int level) { (void)level; return 1; }
ptrdiff_t fastcnn_wgrad_t_taps(int level, ptrdiff_t cog_pad, ptrdiff_t k)
{
    (void)level; (void)cog_pad; (void)k; return 1;
}
int fastcnn_wgrad_t_quads(int level, ptrdiff_t cog_pad)
{
    (void)level; (void)cog_pad; return 0;
}
void fastcnn_wgrad_t(int level, const float *x, const ptrdiff_t *off, ptrdiff_t k_pad,
                            const float *dyt, const ptrdiff_t *pos, ptrdiff_t n_pos,
                            ptrdiff_t cog_pad, float *dwt)
{
    (void)level; (void)x; (void)off; (void)k_pad; (void)dyt; (void)pos; (void)n_pos;
    (void)cog_pad; (void)dwt;
}
ptrdiff_t fastcnn_direct_t_block(int level) { (void)level; return 1; }
ptrdiff_t fastcnn_direct_conv_t_block(int level, ptrdiff_t cb, ptrdiff_t k)
{
    (void)level; (void)cb; (void)k; return 1;
}
int fastcnn_lanes_fwd_has(int level, ptrdiff_t kw) { (void)level; (void)kw; return 0; }
void fastcnn_lanes_fwd_row(int level, ptrdiff_t kw, const float *x0, ptrdiff_t plane,
                                  ptrdiff_t row, ptrdiff_t cg, ptrdiff_t kh, const float *w,
                                  ptrdiff_t k, ptrdiff_t cog_pad, float *out, ptrdiff_t ld,
                                  ptrdiff_t w_out)
{
    (void)level; (void)kw; (void)x0; (void)plane; (void)row; (void)cg; (void)kh; (void)w;
    (void)k; (void)cog_pad; (void)out; (void)ld; (void)w_out;
}
void fastcnn_direct_conv(int level, ptrdiff_t cb, const float *xp, const ptrdiff_t *off,
                                ptrdiff_t k, ptrdiff_t taps_c, ptrdiff_t k_chunk,
                                const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog_pad,
                                float *out, ptrdiff_t ldo, ptrdiff_t q_pad)
{
    (void)level; (void)cb; (void)xp; (void)off; (void)k; (void)taps_c; (void)k_chunk; (void)ranges;
    (void)wpk; (void)cog_pad; (void)out; (void)ldo; (void)q_pad;
}

void fastcnn_direct_rows(int level, ptrdiff_t cb, const float *xp, const ptrdiff_t *off,
                                ptrdiff_t k, ptrdiff_t taps_c, ptrdiff_t k_chunk,
                                const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog,
                                ptrdiff_t cog_pad, const ptrdiff_t *vx, const ptrdiff_t *vo,
                                ptrdiff_t n_vec, const float *bias, float *out, ptrdiff_t ldo)
{
    (void)level; (void)cb; (void)xp; (void)off; (void)k; (void)taps_c; (void)k_chunk;
    (void)ranges; (void)wpk; (void)cog; (void)cog_pad; (void)vx; (void)vo; (void)n_vec;
    (void)bias; (void)out; (void)ldo;
}

#endif
