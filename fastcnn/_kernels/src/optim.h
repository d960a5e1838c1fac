/* Optimizer update loops, float32 and float64 (optim.c). */
#ifndef FASTCNN_OPTIM_H
#define FASTCNN_OPTIM_H

#include <stddef.h>

void fastcnn_sgd_f32(float *p, const float *g, float *buf, ptrdiff_t n, float lr, float m,
                     float wd, float lr_m, int decay, int momentum, int nesterov);
void fastcnn_sgd_f64(double *p, const double *g, double *buf, ptrdiff_t n, double lr,
                     double m, double wd, double lr_m, int decay, int momentum, int nesterov);
void fastcnn_adam_f32(float *p, const float *g, float *m, float *v, ptrdiff_t n, float b1,
                      float b2, float c1, float c2, float eps, float wd, float step,
                      float scale, int decay);
void fastcnn_adam_f64(double *p, const double *g, double *m, double *v, ptrdiff_t n,
                      double b1, double b2, double c1, double c2, double eps, double wd,
                      double step, double scale, int decay);

#endif
