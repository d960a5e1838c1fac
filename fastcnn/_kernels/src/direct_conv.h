/* Register-blocked direct convolution kernels, float32, stride 1 (direct_conv.c).
 *
 * The level argument is fastcnn_direct_level(): 2 AVX-512, 1 AVX2 + FMA, 0 none (the
 * caller then uses im2col + BLAS, and the block sizes below are 1). The *_block, *_lanes
 * and *_taps functions give the register blocks the kernels were compiled for, which the
 * caller pads its operands to.
 */
#ifndef FASTCNN_DIRECT_CONV_H
#define FASTCNN_DIRECT_CONV_H

#include <stddef.h>

int fastcnn_direct_level(void);

/* The wide layout: out[co * ldo + t] = sum_r w[co, r] * xp[off[r] + t] (see direct_conv.c) */
ptrdiff_t fastcnn_direct_co_block(int level, ptrdiff_t cog);
ptrdiff_t fastcnn_direct_t_block(int level);
ptrdiff_t fastcnn_direct_conv_t_block(int level, ptrdiff_t cb, ptrdiff_t k);
void fastcnn_direct_conv(int level, ptrdiff_t cb, const float *xp, const ptrdiff_t *off,
                         ptrdiff_t k, ptrdiff_t taps_c, ptrdiff_t k_chunk,
                         const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog_pad,
                         float *out, ptrdiff_t ldo, ptrdiff_t q_pad);
/* The same, positions a row vector at a time, straight into the output planes */
void fastcnn_direct_rows(int level, ptrdiff_t cb, const float *xp, const ptrdiff_t *off,
                         ptrdiff_t k, ptrdiff_t taps_c, ptrdiff_t k_chunk,
                         const ptrdiff_t *ranges, const float *wpk, ptrdiff_t cog,
                         ptrdiff_t cog_pad, const ptrdiff_t *vx, const ptrdiff_t *vo,
                         ptrdiff_t n_vec, const float *bias, float *out, ptrdiff_t ldo);

/* The forward pass with the output channels across the vector lanes */
int fastcnn_lanes_fwd_has(int level, ptrdiff_t kw);
void fastcnn_lanes_fwd_row(int level, ptrdiff_t kw, const float *x0, ptrdiff_t plane,
                           ptrdiff_t row, ptrdiff_t cg, ptrdiff_t kh, const float *w,
                           ptrdiff_t k, ptrdiff_t cog_pad, float *out, ptrdiff_t ld,
                           ptrdiff_t w_out);

/* The weight gradient with the output channels across the vector lanes */
ptrdiff_t fastcnn_wgrad_t_lanes(int level);
int fastcnn_wgrad_t_quads(int level, ptrdiff_t cog_pad);
ptrdiff_t fastcnn_wgrad_t_taps(int level, ptrdiff_t cog_pad, ptrdiff_t k);
void fastcnn_wgrad_t(int level, const float *x, const ptrdiff_t *off, ptrdiff_t k_pad,
                     const float *dyt, const ptrdiff_t *pos, ptrdiff_t n_pos,
                     ptrdiff_t cog_pad, float *dwt);

/* The weight gradient over the wide layout */
ptrdiff_t fastcnn_wgrad_co_block(int level);
ptrdiff_t fastcnn_wgrad_tap_block(int level);
void fastcnn_wgrad(int level, const float *xp, ptrdiff_t xp_stride, const ptrdiff_t *off,
                   ptrdiff_t k_pad, const float *dy, ptrdiff_t dy_stride, ptrdiff_t cog_pad,
                   ptrdiff_t q_pad, ptrdiff_t ns, float *dw);

#endif
