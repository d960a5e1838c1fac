/* The backward pass of a stride-1 convolution with the samples across the vector lanes
 * (batch_lanes.c). level is fastcnn_direct_level() (direct_conv.h).
 */
#ifndef FASTCNN_BATCH_LANES_H
#define FASTCNN_BATCH_LANES_H

#include <stddef.h>

/* Output channels and taps per register block of the weight-gradient kernel */
ptrdiff_t fastcnn_wgrad_batch_o_block(int level);
ptrdiff_t fastcnn_wgrad_batch_r_block(int level);
void fastcnn_wgrad_batch(int level, const float *dy, const float *xp, const ptrdiff_t *off,
                         ptrdiff_t k_pad, ptrdiff_t cog_pad, ptrdiff_t h_out, ptrdiff_t w_out,
                         ptrdiff_t wp, float *dw);

/* Samples per block (the vector width), input channels per register block, and the
 * multiply-adds (vectors) of one block of samples, for choosing this kernel */
ptrdiff_t fastcnn_igrad_lanes(int level);
ptrdiff_t fastcnn_igrad_c_block(int level);
ptrdiff_t fastcnn_igrad_cost(int level, ptrdiff_t cg, ptrdiff_t cog, ptrdiff_t h, ptrdiff_t w,
                             ptrdiff_t h_out, ptrdiff_t w_out, ptrdiff_t kh, ptrdiff_t kw,
                             ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh, ptrdiff_t dw);
void fastcnn_igrad(int level, const float *dy, ptrdiff_t cog, ptrdiff_t h_out, ptrdiff_t w_out,
                   const float *wpk, ptrdiff_t cg, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t ph,
                   ptrdiff_t pw, ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t h, ptrdiff_t w,
                   float *gx);

#endif
