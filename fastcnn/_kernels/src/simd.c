/* The vector instruction set the kernels' hand-dispatched loops may use on this CPU.
 *
 * 2: AVX-512F, 1: AVX2 + FMA, 0: neither (or not an x86-64 GCC/Clang build), detected
 * once. The kernels' .c files compile a loop for each level with target attributes and
 * pick one with this at run time, so a wheel built for baseline x86-64 still runs wide
 * vectors.
 */
#include "simd.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if FASTCNN_X86_SIMD
int fastcnn_simd_level(void)
{
    static int level = -1; /* every thread computes the same value: the race is benign */
    if (level < 0) {
        __builtin_cpu_init();
        level = __builtin_cpu_supports("avx512f") ? 2
              : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
    }
    return level;
}
#else
int fastcnn_simd_level(void) { return 0; }
#endif

/* Whether n floats are all finite: no NaN and no infinity.
 *
 * Rule: _conv's direct kernels and wide layout multiply zero padding and junk columns
 * into sums that reach an output, which is exact only while the other factor is finite
 * (0 * inf is NaN); _conv scans the operands that would meet them and sends a call
 * with a non-finite one to a kernel that forms only the numpy backend's products (see
 * "Special values" in _conv.pyx). The scan reads the bits (an exponent of all ones):
 * memory speed, an O(memory) pass before O(flops) work, and no floating-point compare
 * that a fast-math build could assume away.
 */
#define FASTCNN_ALL_FINITE_BODY                                                             \
    {                                                                                       \
        /* |bits| + the exponent's lowest bit reaches the sign bit exactly when the         \
         * exponent is all ones: three integer operations a vector, OR-ed up */             \
        uint32_t acc = 0;                                                                   \
        for (ptrdiff_t i = 0; i < n; i++) {                                                 \
            uint32_t u;                                                                     \
            memcpy(&u, p + i, sizeof u);                                                    \
            acc |= (u & 0x7fffffffu) + 0x00800000u;                                         \
        }                                                                                   \
        return (acc & 0x80000000u) == 0;                                                    \
    }
#if FASTCNN_X86_SIMD
__attribute__((target("avx512f"))) static inline int fastcnn_all_finite_f32_avx512(
    const float *p, ptrdiff_t n) FASTCNN_ALL_FINITE_BODY
__attribute__((target("avx2"))) static inline int fastcnn_all_finite_f32_avx2(
    const float *p, ptrdiff_t n) FASTCNN_ALL_FINITE_BODY
#endif
static inline int fastcnn_all_finite_f32_base(const float *p, ptrdiff_t n)
    FASTCNN_ALL_FINITE_BODY
int fastcnn_all_finite_f32(const float *p, ptrdiff_t n)
{
#if FASTCNN_X86_SIMD
    int level = fastcnn_simd_level();
    if (level == 2) return fastcnn_all_finite_f32_avx512(p, n);
    if (level == 1) return fastcnn_all_finite_f32_avx2(p, n);
#endif
    return fastcnn_all_finite_f32_base(p, n);
}
#undef FASTCNN_ALL_FINITE_BODY
