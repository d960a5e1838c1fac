/* float32 products of a dense layer's size on AVX-512, without BLAS (small_gemm.c). */
#ifndef FASTCNN_SMALL_GEMM_H
#define FASTCNN_SMALL_GEMM_H

#include <stddef.h>

/* Whether the kernels run on this CPU (AVX-512); the functions below are no-ops where
 * they do not. */
int fastcnn_small_gemm_has(void);
/* Part `part` of `parts` of C[i * ldc + j] = sum_k a[i * a_is + k * a_ks] * b[k * ldb + j],
 * i < m, j < n */
void fastcnn_small_gemm(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *a, ptrdiff_t a_is,
                        ptrdiff_t a_ks, const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                        int part, int parts);
/* C[i, j] = sum_k a[i * lda + k] * b[j * ldb + k] for i in [i0, i1), j in [j0, j1) */
void fastcnn_gemm_nt(ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t j0, ptrdiff_t j1, ptrdiff_t k,
                     const float *a, ptrdiff_t lda, const float *b, ptrdiff_t ldb, float *c,
                     ptrdiff_t ldc);

#endif
