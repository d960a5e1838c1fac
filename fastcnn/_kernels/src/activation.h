/* Vectorizable float32 tanh, float32 and float64 sigmoid (activation.c). */
#ifndef FASTCNN_ACTIVATION_H
#define FASTCNN_ACTIVATION_H

#include <stddef.h>

/* y[i] = f(x[i]) for i < n, on the widest instruction set the CPU has */
void fastcnn_tanhf_array(const float *x, float *y, ptrdiff_t n);
void fastcnn_sigmoidf_array(const float *x, float *y, ptrdiff_t n);
void fastcnn_sigmoid_array(const double *x, double *y, ptrdiff_t n);

#endif
