/* Optimizer update loops for _optim.pyx, float32 and float64, compiled for AVX-512,
 * AVX2 and the baseline and chosen at run time (simd.c).
 *
 * _optim is compiled with -ffp-contract=off, so no instruction set fuses a multiply and
 * an add: every level rounds exactly as the numpy backend, which does one operation per
 * ufunc call. sqrt and division are correctly rounded everywhere.
 */
#include "optim.h"

#include <math.h>
#include <stddef.h>

#include "simd.h"

/* SGD over n elements. momentum: 0 none, 1 first step (buf = d), 2 later steps. The
 * branches test loop invariants; GCC compiles one vector loop per combination. */
#define FASTCNN_SGD_LOOP(NAME, T, ATTR)                                                     \
    ATTR static void NAME(T *p, const T *g, T *buf, ptrdiff_t n, T lr, T m, T wd, T lr_m,   \
                          int decay, int momentum, int nesterov)                           \
    {                                                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                 \
            T d = decay ? p[i] * wd + g[i] : g[i];                                          \
            if (momentum == 0) {                                                            \
                p[i] = p[i] - d * lr;                                                       \
                continue;                                                                   \
            }                                                                               \
            T b = momentum == 1 ? d : buf[i] * m + d;                                       \
            buf[i] = b;                                                                     \
            p[i] = nesterov ? (p[i] - d * lr) - b * lr_m : p[i] - b * lr;                   \
        }                                                                                   \
    }

/* Adam over n elements: scale is sqrt(1 - beta2**t), step is lr / (1 - beta1**t). */
#define FASTCNN_ADAM_LOOP(NAME, T, SQRT, ATTR)                                              \
    ATTR static void NAME(T *p, const T *grad, T *m, T *v, ptrdiff_t n, T b1, T b2, T c1,   \
                          T c2, T eps, T wd, T step, T scale, int decay)                    \
    {                                                                                       \
        for (ptrdiff_t i = 0; i < n; i++) {                                                 \
            T g = decay ? p[i] * wd + grad[i] : grad[i];                                    \
            T mi = m[i] * b1 + g * c1;                                                      \
            T vi = v[i] * b2 + (g * g) * c2;                                                \
            m[i] = mi;                                                                      \
            v[i] = vi;                                                                      \
            p[i] = p[i] - (mi / (SQRT(vi) / scale + eps)) * step;                           \
        }                                                                                   \
    }

#define FASTCNN_OPTIM_LOOPS(SUFFIX, ATTR)                                                   \
    FASTCNN_SGD_LOOP(fastcnn_sgd_f32_##SUFFIX, float, ATTR)                                 \
    FASTCNN_SGD_LOOP(fastcnn_sgd_f64_##SUFFIX, double, ATTR)                                \
    FASTCNN_ADAM_LOOP(fastcnn_adam_f32_##SUFFIX, float, sqrtf, ATTR)                        \
    FASTCNN_ADAM_LOOP(fastcnn_adam_f64_##SUFFIX, double, sqrt, ATTR)

FASTCNN_OPTIM_LOOPS(base, )
#if FASTCNN_X86_SIMD
FASTCNN_OPTIM_LOOPS(avx512, __attribute__((target("avx512f"))))
FASTCNN_OPTIM_LOOPS(avx2, __attribute__((target("avx2,fma"))))
#define FASTCNN_OPTIM_DISPATCH(NAME, ARGS)                                                 \
    do {                                                                                    \
        int level = fastcnn_simd_level();                                                   \
        if (level == 2) NAME##_avx512 ARGS;                                                 \
        else if (level == 1) NAME##_avx2 ARGS;                                              \
        else NAME##_base ARGS;                                                              \
    } while (0)
#else
#define FASTCNN_OPTIM_DISPATCH(NAME, ARGS) NAME##_base ARGS
#endif

void fastcnn_sgd_f32(float *p, const float *g, float *buf, ptrdiff_t n, float lr,
                            float m, float wd, float lr_m, int decay, int momentum,
                            int nesterov)
{
    FASTCNN_OPTIM_DISPATCH(fastcnn_sgd_f32, (p, g, buf, n, lr, m, wd, lr_m, decay, momentum, nesterov));
}

void fastcnn_sgd_f64(double *p, const double *g, double *buf, ptrdiff_t n, double lr,
                            double m, double wd, double lr_m, int decay, int momentum,
                            int nesterov)
{
    FASTCNN_OPTIM_DISPATCH(fastcnn_sgd_f64, (p, g, buf, n, lr, m, wd, lr_m, decay, momentum, nesterov));
}

void fastcnn_adam_f32(float *p, const float *g, float *m, float *v, ptrdiff_t n,
                             float b1, float b2, float c1, float c2, float eps, float wd,
                             float step, float scale, int decay)
{
    FASTCNN_OPTIM_DISPATCH(fastcnn_adam_f32, (p, g, m, v, n, b1, b2, c1, c2, eps, wd, step, scale, decay));
}

void fastcnn_adam_f64(double *p, const double *g, double *m, double *v, ptrdiff_t n,
                             double b1, double b2, double c1, double c2, double eps, double wd,
                             double step, double scale, int decay)
{
    FASTCNN_OPTIM_DISPATCH(fastcnn_adam_f64, (p, g, m, v, n, b1, b2, c1, c2, eps, wd, step, scale, decay));
}
