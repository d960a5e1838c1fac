/* The vector instruction set of this CPU, and the finiteness scan (simd.c).
 *
 * FASTCNN_X86_SIMD is 1 where the .c files compile a loop per instruction set with
 * target attributes (x86-64 GCC/Clang, unless FASTCNN_NO_SIMD is defined) and pick one
 * at run time with fastcnn_simd_level(); elsewhere only the portable loops exist.
 */
#ifndef FASTCNN_SIMD_H
#define FASTCNN_SIMD_H

#include <stddef.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTCNN_NO_SIMD)
#define FASTCNN_X86_SIMD 1
#else
#define FASTCNN_X86_SIMD 0
#endif

/* 2: AVX-512F, 1: AVX2 + FMA, 0: neither (or no x86-64 GCC/Clang build); detected once. */
int fastcnn_simd_level(void);

/* Whether the n floats at p are all finite: no NaN and no infinity. */
int fastcnn_all_finite_f32(const float *p, ptrdiff_t n);

#endif
