/* Vectorizable float32 tanh for _activation.pyx.
 *
 * numpy's float32 tanh runs at about 1.3 ns per element here, which made the activations
 * of LeNet's first layer cost more than its convolution. This version is branch-free
 * (both halves are computed and one is selected), so GCC vectorizes the loop, and it is
 * compiled for AVX-512 and AVX2+FMA as well as the baseline and chosen at run time.
 *
 *   |x| < 0.5   odd Taylor series of tanh up to x^17: the last term left out is below
 *               1e-8 relative, under half an ulp of float32.
 *   |x| >= 0.5  (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.37, so the subtraction does
 *               not cancel. exp is 2^k * p(r) with k = round(z / ln 2), r = z - k ln 2
 *               (ln 2 split in two parts so r is exact enough) and p the degree-7 Taylor
 *               polynomial, whose truncation error is below 5e-9 for |r| <= ln(2)/2.
 *   |x| >= 9    1 (tanh(9) rounds to 1.0f); clamping keeps 2^k a normal number.
 *
 * The result is within a few ulp of the correctly rounded value, the same on every
 * instruction set; NaN stays NaN and the sign of zero is kept.
 */
#ifndef FASTCNN_ACTIVATION_H
#define FASTCNN_ACTIVATION_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "simd.h"

/* Floating-point exception flags are never read here; without no-trapping-math GCC will
 * not compute both halves of a select, and the loop stays scalar except with AVX-512
 * masks. No FMA contraction: the vector loop, its scalar remainder and every instruction
 * set then round alike, so results do not depend on how the array is split over threads
 * or on the CPU. */
#if defined(__GNUC__) && !defined(__clang__)
#define FASTCNN_NO_TRAPS __attribute__((optimize("no-trapping-math", "fp-contract=off")))
#elif defined(__clang__)
#define FASTCNN_NO_TRAPS
#pragma STDC FP_CONTRACT OFF
#else
#define FASTCNN_NO_TRAPS
#endif

FASTCNN_NO_TRAPS static inline float fastcnn_tanhf_one(float x)
{
    float a = fabsf(x);
    /* small |x|: x + x z P(z), z = x^2 */
    float z = a * a;
    float p = 6404582.0f / 10854718875.0f;
    p = p * z - 929569.0f / 638512875.0f;
    p = p * z + 21844.0f / 6081075.0f;
    p = p * z - 1382.0f / 155925.0f;
    p = p * z + 62.0f / 2835.0f;
    p = p * z - 17.0f / 315.0f;
    p = p * z + 2.0f / 15.0f;
    p = p * z - 1.0f / 3.0f;
    float small = a + a * z * p;
    /* large |x|: from exp(-2|x|) */
    float c = a < 9.0f ? a : 9.0f;
    float t = -2.0f * c;
    float k = t * 1.44269504f + 12582912.0f; /* adding 1.5 * 2^23 rounds to an integer */
    k -= 12582912.0f;
    float r = t - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float e = 1.0f / 5040.0f;
    e = e * r + 1.0f / 720.0f;
    e = e * r + 1.0f / 120.0f;
    e = e * r + 1.0f / 24.0f;
    e = e * r + 1.0f / 6.0f;
    e = e * r + 0.5f;
    e = e * r + 1.0f;
    e = e * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    e *= scale;
    float large = (1.0f - e) / (1.0f + e);
    float y = a < 0.5f ? small : large;
    y = copysignf(y, x);
    return x != x ? x : y;
}

#define FASTCNN_TANHF_LOOP(NAME, ATTR)                                                      \
    FASTCNN_NO_TRAPS ATTR static void NAME(const float *x, float *y, ptrdiff_t n)                           \
    {                                                                                       \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = fastcnn_tanhf_one(x[i]);                  \
    }

FASTCNN_TANHF_LOOP(fastcnn_tanhf_base, )

#if FASTCNN_X86_SIMD
FASTCNN_TANHF_LOOP(fastcnn_tanhf_avx512, __attribute__((target("avx512f"))))
FASTCNN_TANHF_LOOP(fastcnn_tanhf_avx2, __attribute__((target("avx2,fma"))))

static void fastcnn_tanhf_array(const float *x, float *y, ptrdiff_t n)
{
    int level = fastcnn_simd_level();
    if (level == 2) fastcnn_tanhf_avx512(x, y, n);
    else if (level == 1) fastcnn_tanhf_avx2(x, y, n);
    else fastcnn_tanhf_base(x, y, n);
}
#else
static void fastcnn_tanhf_array(const float *x, float *y, ptrdiff_t n)
{
    fastcnn_tanhf_base(x, y, n);
}
#endif

#endif
