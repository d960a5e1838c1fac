/* Vectorizable float32 tanh for _activation.pyx.
 *
 * One formula for every x, with no branch, so GCC vectorizes the loop; it is compiled
 * for AVX-512 and AVX2+FMA as well as the baseline and chosen at run time:
 *
 *   tanh(|x|) = e / (e + 2),  e = expm1(2|x|) = 2^k expm1(r) + (2^k - 1)
 *
 * with k = round(2|x| / ln 2), r = 2|x| - k ln 2 (ln 2 split in two parts so r is exact
 * enough) and expm1(r) = r + r^2 q(r), q the Taylor series whose first omitted term is
 * below 2e-8 relative for |r| <= ln(2)/2. expm1 keeps tiny x exact (tanh(x) = x there),
 * where 1 - 2 / (exp(2x) + 1) would cancel. |x| >= 9 is clamped (tanh(9) rounds to 1.0f),
 * which keeps 2^k a normal number.
 *
 * Every multiply-add is an explicit fmaf, so the rounding is the same on every
 * instruction set (on the baseline fmaf is a libm call: slower, same bits) and at every
 * thread count. The result is within a few ulp of the correctly rounded value; NaN stays
 * NaN and the sign of zero is kept.
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
 * masks. No contraction beyond the explicit fmaf calls: the vector loop, its scalar
 * remainder and every instruction set then round alike, so results do not depend on
 * how the array is split over threads or on the CPU. */
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
    float z = a < 9.0f ? a + a : 18.0f; /* NaN too: it is put back at the end */
    /* k = round(z / ln 2): adding 1.5 * 2^23 rounds to an integer */
    float k = fmaf(z, 1.44269504f, 12582912.0f) - 12582912.0f;
    float r = fmaf(k, -0.693359375f, z); /* exact: the high part of ln 2 has 10 bits */
    r = fmaf(k, 2.12194440e-4f, r);
    /* expm1(r) = r + r^2 q(r), q the Taylor series up to r^6 / 8! */
    float q = 1.0f / 40320.0f;
    q = fmaf(q, r, 1.0f / 5040.0f);
    q = fmaf(q, r, 1.0f / 720.0f);
    q = fmaf(q, r, 1.0f / 120.0f);
    q = fmaf(q, r, 1.0f / 24.0f);
    q = fmaf(q, r, 1.0f / 6.0f);
    q = fmaf(q, r, 0.5f);
    float p = fmaf(r * r, q, r);
    /* expm1(z) = 2^k expm1(r) + (2^k - 1), then tanh(|x|) = expm1(z) / (expm1(z) + 2) */
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float em = fmaf(scale, p, scale - 1.0f);
    float y = copysignf(em / (em + 2.0f), x);
    return x != x ? x : y;
}

#define FASTCNN_TANHF_LOOP(NAME, ATTR)                                                      \
    FASTCNN_NO_TRAPS ATTR static void NAME(const float *x, float *y, ptrdiff_t n)                           \
    {                                                                                       \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = fastcnn_tanhf_one(x[i]);                  \
    }

FASTCNN_TANHF_LOOP(fastcnn_tanhf_base, )

#if FASTCNN_X86_SIMD
FASTCNN_TANHF_LOOP(fastcnn_tanhf_avx512, __attribute__((target("avx512f,fma"))))
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
