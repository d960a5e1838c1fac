/* Vectorizable float32 tanh, float32 and float64 sigmoid for _activation.pyx.
 *
 * One formula for every x, with no branch, so GCC vectorizes the loop; it is compiled
 * for AVX-512 and AVX2+FMA as well as the baseline and chosen at run time. Both reduce
 * to expm1 of a reduced argument, z = k ln 2 + r:
 *
 *   exp(z) = 2^k (1 + expm1(r)),  expm1(z) = 2^k expm1(r) + (2^k - 1)
 *
 * with k = round(z / ln 2), r = z - k ln 2 (ln 2 split in two parts so r is exact
 * enough) and expm1(r) = r + r^2 q(r), q the Taylor series whose first omitted term is
 * below 2e-8 relative for |r| <= ln(2)/2.
 *
 *   tanh(|x|) = e / (e + 2),  e = expm1(2|x|)
 *
 * expm1 keeps tiny x exact (tanh(x) = x there), where 1 - 2 / (exp(2x) + 1) would
 * cancel. |x| >= 9 is clamped (tanh(9) rounds to 1.0f), which keeps 2^k a normal number.
 *
 *   sigmoid(x) = e / (1 + e) for x < 0, 1 / (1 + e) for x >= 0,  e = exp(-|x|) in (0, 1]
 *
 * Nothing overflows and a small output (x < 0) keeps its relative precision, which
 * 0.5 * tanh(x / 2) + 0.5 loses. -|x| is clamped at -104, where
 * e rounds to 0; 2^k, down to 2^-150 there, is applied as two normal factors so the
 * subnormal outputs round once.
 *
 * Every multiply-add is an explicit fmaf, so the rounding is the same on every
 * instruction set (on the baseline fmaf is a libm call: slower, same bits) and at every
 * thread count. The result is within a few ulp of the correctly rounded value; NaN stays
 * NaN and the sign of zero is kept.
 */
#include "activation.h"

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

/* Returns expm1(r) and sets *k, for z = k ln 2 + r (see the top of the file). */
FASTCNN_NO_TRAPS static inline float fastcnn_expm1f_reduced(float z, float *k)
{
    /* k = round(z / ln 2): adding 1.5 * 2^23 rounds to an integer */
    float kk = fmaf(z, 1.44269504f, 12582912.0f) - 12582912.0f;
    float r = fmaf(kk, -0.693359375f, z); /* exact: the high part of ln 2 has 10 bits */
    r = fmaf(kk, 2.12194440e-4f, r);
    /* expm1(r) = r + r^2 q(r), q the Taylor series up to r^6 / 8! */
    float q = 1.0f / 40320.0f;
    q = fmaf(q, r, 1.0f / 5040.0f);
    q = fmaf(q, r, 1.0f / 720.0f);
    q = fmaf(q, r, 1.0f / 120.0f);
    q = fmaf(q, r, 1.0f / 24.0f);
    q = fmaf(q, r, 1.0f / 6.0f);
    q = fmaf(q, r, 0.5f);
    *k = kk;
    return fmaf(r * r, q, r);
}

/* 2^k for an integer k in [-126, 127], built from its bits. */
FASTCNN_NO_TRAPS static inline float fastcnn_pow2f(int32_t k)
{
    int32_t bits = (k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale;
}

FASTCNN_NO_TRAPS static inline float fastcnn_tanhf_one(float x)
{
    float a = fabsf(x);
    float z = a < 9.0f ? a + a : 18.0f; /* NaN too: it is put back at the end */
    float k;
    float p = fastcnn_expm1f_reduced(z, &k);
    /* expm1(z) = 2^k expm1(r) + (2^k - 1), then tanh(|x|) = expm1(z) / (expm1(z) + 2) */
    float scale = fastcnn_pow2f((int32_t)k);
    float em = fmaf(scale, p, scale - 1.0f);
    float y = copysignf(em / (em + 2.0f), x);
    return x != x ? x : y;
}

FASTCNN_NO_TRAPS static inline float fastcnn_sigmoidf_one(float x)
{
    float a = fabsf(x);
    float z = a < 104.0f ? -a : -104.0f; /* NaN too: it is put back at the end */
    float k;
    float p = fastcnn_expm1f_reduced(z, &k);
    /* e = 2^k (1 + expm1(r)), k in [-150, 0], as 2^k1 * 2^k2 with both in [-75, 0] */
    int32_t k1 = (int32_t)k / 2;
    float s1 = fastcnn_pow2f(k1);
    float e = fmaf(s1, p, s1) * fastcnn_pow2f((int32_t)k - k1);
    float y = (x < 0.0f ? e : 1.0f) / (1.0f + e);
    return x != x ? x : y;
}

/* float64 sigmoid, the same formula on a double exp: z = -|x| = k ln 2 + r as above
 * (fdlibm's two-part ln 2, its high part exact times any k here), expm1(r) Taylor up
 * to r^13 / 13! (the first omitted term is below 6e-18 relative). -|x| is clamped at
 * -746, where e rounds to 0; 2^k, down to 2^-1077, is applied as two normal factors. */
FASTCNN_NO_TRAPS static inline double fastcnn_pow2(int32_t k) /* k in [-1022, 1023] */
{
    int64_t bits = (int64_t)(k + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return scale;
}

FASTCNN_NO_TRAPS static inline double fastcnn_sigmoid_one(double x)
{
    double a = fabs(x);
    double z = a < 746.0 ? -a : -746.0; /* NaN too: it is put back at the end */
    /* k = round(z / ln 2): adding 1.5 * 2^52 rounds to an integer */
    double k = fma(z, 1.4426950408889634, 6755399441055744.0) - 6755399441055744.0;
    double r = fma(k, -6.93147180369123816490e-01, z);
    r = fma(k, -1.90821492927058770002e-10, r);
    double q = 1.0 / 6227020800.0;
    q = fma(q, r, 1.0 / 479001600);
    q = fma(q, r, 1.0 / 39916800);
    q = fma(q, r, 1.0 / 3628800);
    q = fma(q, r, 1.0 / 362880);
    q = fma(q, r, 1.0 / 40320);
    q = fma(q, r, 1.0 / 5040);
    q = fma(q, r, 1.0 / 720);
    q = fma(q, r, 1.0 / 120);
    q = fma(q, r, 1.0 / 24);
    q = fma(q, r, 1.0 / 6);
    q = fma(q, r, 0.5);
    double p = fma(r * r, q, r); /* expm1(r) */
    int32_t k1 = (int32_t)k / 2;
    double s1 = fastcnn_pow2(k1);
    double e = fma(s1, p, s1) * fastcnn_pow2((int32_t)k - k1);
    double y = (x < 0.0 ? e : 1.0) / (1.0 + e);
    return x != x ? x : y;
}

#define FASTCNN_LOOP(NAME, T, ONE, ATTR)                                                    \
    FASTCNN_NO_TRAPS ATTR static void NAME(const T *x, T *y, ptrdiff_t n)                   \
    {                                                                                       \
        for (ptrdiff_t i = 0; i < n; i++) y[i] = ONE(x[i]);                                 \
    }

/* NAME##_array(x, y, n): y[i] = ONE(x[i]) on the widest instruction set the CPU has. */
#if FASTCNN_X86_SIMD
#define FASTCNN_ARRAY(NAME, T, ONE)                                                         \
    FASTCNN_LOOP(NAME##_base, T, ONE, )                                                     \
    FASTCNN_LOOP(NAME##_avx512, T, ONE, __attribute__((target("avx512f,fma"))))             \
    FASTCNN_LOOP(NAME##_avx2, T, ONE, __attribute__((target("avx2,fma"))))                  \
    void NAME##_array(const T *x, T *y, ptrdiff_t n)                                        \
    {                                                                                       \
        int level = fastcnn_simd_level();                                                   \
        if (level == 2) NAME##_avx512(x, y, n);                                             \
        else if (level == 1) NAME##_avx2(x, y, n);                                          \
        else NAME##_base(x, y, n);                                                          \
    }
#else
#define FASTCNN_ARRAY(NAME, T, ONE)                                                         \
    FASTCNN_LOOP(NAME##_base, T, ONE, )                                                     \
    void NAME##_array(const T *x, T *y, ptrdiff_t n)                                        \
    {                                                                                       \
        NAME##_base(x, y, n);                                                               \
    }
#endif

FASTCNN_ARRAY(fastcnn_tanhf, float, fastcnn_tanhf_one)
FASTCNN_ARRAY(fastcnn_sigmoidf, float, fastcnn_sigmoidf_one)
FASTCNN_ARRAY(fastcnn_sigmoid, double, fastcnn_sigmoid_one)
