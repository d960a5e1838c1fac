/* The vector instruction set the kernels' hand-dispatched loops may use on this CPU.
 *
 * 2: AVX-512F, 1: AVX2 + FMA, 0: neither (or not an x86-64 GCC/Clang build), detected
 * once. Headers compile a loop for each level with target attributes and pick one with
 * this at run time, so a wheel built for baseline x86-64 still runs wide vectors.
 */
#ifndef FASTCNN_SIMD_H
#define FASTCNN_SIMD_H

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTCNN_NO_SIMD)
#define FASTCNN_X86_SIMD 1
static int fastcnn_simd_level(void)
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
#define FASTCNN_X86_SIMD 0
static int fastcnn_simd_level(void) { return 0; }
#endif

#endif
