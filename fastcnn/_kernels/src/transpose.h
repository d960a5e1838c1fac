/* A float32 matrix transposed through registers, with optional row sums (transpose.c). */
#ifndef FASTCNN_TRANSPOSE_H
#define FASTCNN_TRANSPOSE_H

#include <stddef.h>

/* dst[t * ldd + c] = src[c * lds + t] for c < rows, t < cols; when sums is not NULL,
 * sums[c] += the sum of row c, added up as _conv's row_sum does. Needs AVX2 (every level
 * of the kernels that call it has it); a no-op without FASTCNN_X86_SIMD. */
void fastcnn_transpose(const float *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols,
                       float *dst, ptrdiff_t ldd, float *sums);

#endif
