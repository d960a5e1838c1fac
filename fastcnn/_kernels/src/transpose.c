/* A float32 matrix transposed through registers, with optional row sums.
 *
 * Shared by the kernels that turn a layout around before their products: the
 * convolutions' (position, channel) and (position, sample) layouts and the dense layer's
 * transposed weights.
 */
#include "transpose.h"

#include <stddef.h>

#include "simd.h"

#if FASTCNN_X86_SIMD

#include <immintrin.h>

/* dst[t * ldd + c] = src[c * lds + t] for c < rows, t < cols: the output gradient of one
 * sample turned to (position, channel) for the lanes weight-gradient kernel; and, when
 * sums is not NULL, sums[c] += the sum of row c, added up exactly as _conv's row_sum
 * does (eight lane partials over the whole groups of eight, the rest, then the
 * partials), so the bits do not depend on which kernel ran. Tiles of 8 x 8 are
 * transposed in registers: a scalar loop stored one channel at a time at a stride of
 * cog_pad floats and took about 3 cycles a value (perf on `digits`: 16% of the
 * backward pass). Summing the rows here instead of in a second pass over them saves
 * about 5% of that backward pass (perf). Every lanes kernel level has AVX2. */
#define FASTCNN_ROW_TAIL(ROW, N, N8, PARTS, SUMS, C)                                        \
    do {                                                                                    \
        float total_ = 0;                                                                   \
        for (ptrdiff_t t_ = (N8); t_ < (N); t_++) total_ += (ROW)[t_];                      \
        for (int l_ = 0; l_ < 8; l_++) total_ += (PARTS)[l_];                               \
        (SUMS)[C] += total_;                                                                \
    } while (0)

__attribute__((target("avx2"))) void fastcnn_transpose(
    const float *src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols, float *dst,
    ptrdiff_t ldd, float *sums)
{
    ptrdiff_t c0 = 0, cols8 = cols - cols % 8;
    for (; c0 + 8 <= rows; c0 += 8) {
        __m256 part[8];
        for (int i = 0; i < 8; i++) part[i] = _mm256_setzero_ps();
        for (ptrdiff_t t0 = 0; t0 < cols8; t0 += 8) {
            __m256 r[8], u[8], v[8];
            for (int i = 0; i < 8; i++) {
                r[i] = _mm256_loadu_ps(src + (c0 + i) * lds + t0);
                part[i] = _mm256_add_ps(part[i], r[i]);
            }
            for (int i = 0; i < 8; i += 2) {
                u[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                u[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                v[i] = _mm256_shuffle_ps(u[i], u[i + 2], 0x44);
                v[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], 0xEE);
                v[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0x44);
                v[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
            }
            for (int i = 0; i < 4; i++) {
                _mm256_storeu_ps(dst + (t0 + i) * ldd + c0, _mm256_permute2f128_ps(v[i], v[i + 4], 0x20));
                _mm256_storeu_ps(dst + (t0 + i + 4) * ldd + c0, _mm256_permute2f128_ps(v[i], v[i + 4], 0x31));
            }
        }
        for (ptrdiff_t t = cols8; t < cols; t++)
            for (int i = 0; i < 8; i++) dst[t * ldd + c0 + i] = src[(c0 + i) * lds + t];
        if (sums != NULL)
            for (int i = 0; i < 8; i++) {
                float lanes[8];
                _mm256_storeu_ps(lanes, part[i]);
                FASTCNN_ROW_TAIL(src + (c0 + i) * lds, cols, cols8, lanes, sums, c0 + i);
            }
    }
    for (; c0 < rows; c0++) {
        const float *row = src + c0 * lds;
        float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (ptrdiff_t t = 0; t < cols; t++) dst[t * ldd + c0] = row[t];
        if (sums == NULL) continue;
        for (ptrdiff_t t0 = 0; t0 < cols8; t0 += 8)
            for (int l = 0; l < 8; l++) lanes[l] += row[t0 + l];
        FASTCNN_ROW_TAIL(row, cols, cols8, lanes, sums, c0);
    }
}

#else

void fastcnn_transpose(const float *src, ptrdiff_t lds, ptrdiff_t rows,
                              ptrdiff_t cols, float *dst, ptrdiff_t ldd, float *sums)
{
    (void)src; (void)lds; (void)rows; (void)cols; (void)dst; (void)ldd;
    (void)sums;
}

#endif
