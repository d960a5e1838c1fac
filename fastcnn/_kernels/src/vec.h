/* GCC/Clang vector types and the broadcast the direct and batch-lanes kernels share.
 *
 * Types and a macro, not functions: the kernels of direct_conv.c and batch_lanes.c
 * use them inside their innermost loops, which must compile to one vector instruction
 * each in every translation unit. Include only under FASTCNN_X86_SIMD.
 */
#ifndef FASTCNN_VEC_H
#define FASTCNN_VEC_H

typedef float fastcnn_v16 __attribute__((vector_size(64)));
typedef float fastcnn_v8 __attribute__((vector_size(32)));

/* A float in every lane. Written as x - 0 because that is exactly x for every float
 * (-0 and NaN included), so the compiler drops the subtraction and broadcasts straight
 * from memory; the tempting (VEC){0} + x is not x for x = -0, so it costs a scalar add
 * and a register broadcast per weight, which compete with the FMAs for the FP pipes
 * (measured: half the direct kernel's time on AVX2). Products and sums are unchanged:
 * the accumulators start at +0, so the sign of a zero weight never shows. */
#define FASTCNN_SPLAT(VEC, x) ((x) - (VEC){0})

#endif
