"""Compiled optimizer updates: every parameter array of a model in one call.

Design
------
An update is a handful of multiply-adds per weight. In numpy it takes 2 to 12 ufunc
calls per parameter array, and for a small CNN those calls, not the arithmetic, are the
cost: LeNet-5's 10 arrays took 20 us with SGD and about 100 us with Adam, all of it
serial, between the last kernel of one training step and the first of the next. A
stretch that long also lets the OpenMP workers fall asleep, so the next step's first
convolution paid for waking them. Here one call makes one pass over each array, in the
vector loops of src/optim.c (AVX-512, AVX2 or baseline, chosen at run time).

The arithmetic is the numpy backend's, operation for operation (scalars rounded to the
array's dtype the way numpy rounds Python floats; this module is compiled without
floating-point contraction), so both backends give the same bits on every CPU.

Arrays come in as lists; every one is checked (ndarray, dtype, size, C-contiguous,
writeable) before any is written, so a bad list is a ValueError that changes nothing.
Arrays of 2**15 elements and more are split over the OpenMP team.
"""

cimport numpy as cnp
from cython.parallel cimport prange
from libc.stdlib cimport free, malloc

from fastcnn._kernels._openmp cimport team_released

cnp.import_array()

cdef enum:
    MIN_PARALLEL = 1 << 15

cdef double EMPTY  # an empty array's pointer (NULL would read as an error): never read


cdef void* data_of(object array, int typenum, Py_ssize_t size, bint writeable,
                   str name, Py_ssize_t i) except NULL:
    # The checked data pointer of array i of the list called name (the message is only
    # formatted on failure: this runs for every array of every step).
    if (isinstance(array, cnp.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray> array) == typenum
            and cnp.PyArray_SIZE(<cnp.ndarray> array) == size
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> array)
            and (not writeable or cnp.PyArray_ISWRITEABLE(<cnp.ndarray> array))):
        return cnp.PyArray_DATA(<cnp.ndarray> array) if size else <void*> &EMPTY
    what = f"{name}[{i}]"
    if not isinstance(array, cnp.ndarray):
        raise ValueError(f"{what} must be a numpy array, got {type(array).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray> array
    if cnp.PyArray_TYPE(a) != typenum:
        raise ValueError(f"{what} has dtype {a.dtype}, expected that of its parameter")
    if cnp.PyArray_SIZE(a) != size:
        raise ValueError(f"{what} has {cnp.PyArray_SIZE(a)} elements, its parameter {size}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{what} must be C-contiguous")
    raise ValueError(f"{what} is read-only")


cdef int dtype_of(object param, Py_ssize_t i) except -1:
    if not isinstance(param, cnp.ndarray):
        raise ValueError(f"params[{i}] must be a numpy array, got {type(param).__name__}")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray> param)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise ValueError(f"params[{i}] must be float32 or float64, got {param.dtype}")
    return typenum


cdef struct Arrays:
    # One parameter array and its companions, checked: pointers, size and dtype.
    int typenum
    Py_ssize_t n
    void* p
    void* g
    void* a          # momentum buffer, or Adam's first moment
    void* b          # Adam's second moment


cdef extern from "src/optim.h":
    void fastcnn_sgd_f32(float* p, const float* g, float* buf, Py_ssize_t n, float lr,
                         float m, float wd, float lr_m, int decay, int momentum,
                         int nesterov) noexcept nogil
    void fastcnn_sgd_f64(double* p, const double* g, double* buf, Py_ssize_t n, double lr,
                         double m, double wd, double lr_m, int decay, int momentum,
                         int nesterov) noexcept nogil
    void fastcnn_adam_f32(float* p, const float* g, float* m, float* v, Py_ssize_t n,
                          float b1, float b2, float c1, float c2, float eps, float wd,
                          float step, float scale, int decay) noexcept nogil
    void fastcnn_adam_f64(double* p, const double* g, double* m, double* v, Py_ssize_t n,
                          double b1, double b2, double c1, double c2, double eps, double wd,
                          double step, double scale, int decay) noexcept nogil


ctypedef struct Sgd:
    double lr, momentum, weight_decay
    bint nesterov, first


ctypedef struct Adam:
    double beta1, beta2, eps, weight_decay, step_size, denom_scale


cdef void sgd_block(const Arrays* a, Py_ssize_t lo, Py_ssize_t hi,
                    const Sgd* h) noexcept nogil:
    # Elements [lo, hi) of one array. Scalars are rounded to the dtype first, as numpy
    # rounds a Python float operand; lr * momentum is formed in double, as in Python.
    cdef int momentum = 0 if h.momentum == 0 else (1 if h.first else 2)
    if a.typenum == cnp.NPY_FLOAT32:
        fastcnn_sgd_f32(<float*> a.p + lo, <const float*> a.g + lo,
                        (<float*> a.a + lo) if momentum else NULL, hi - lo,
                        <float> h.lr, <float> h.momentum, <float> h.weight_decay,
                        <float> (h.lr * h.momentum), h.weight_decay != 0, momentum,
                        h.nesterov)
    else:
        fastcnn_sgd_f64(<double*> a.p + lo, <const double*> a.g + lo,
                        (<double*> a.a + lo) if momentum else NULL, hi - lo,
                        h.lr, h.momentum, h.weight_decay, h.lr * h.momentum,
                        h.weight_decay != 0, momentum, h.nesterov)


cdef void adam_block(const Arrays* a, Py_ssize_t lo, Py_ssize_t hi,
                     const Adam* h) noexcept nogil:
    if a.typenum == cnp.NPY_FLOAT32:
        fastcnn_adam_f32(<float*> a.p + lo, <const float*> a.g + lo, <float*> a.a + lo,
                         <float*> a.b + lo, hi - lo, <float> h.beta1, <float> h.beta2,
                         <float> (1 - h.beta1), <float> (1 - h.beta2), <float> h.eps,
                         <float> h.weight_decay, <float> h.step_size,
                         <float> h.denom_scale, h.weight_decay != 0)
    else:
        fastcnn_adam_f64(<double*> a.p + lo, <const double*> a.g + lo, <double*> a.a + lo,
                         <double*> a.b + lo, hi - lo, h.beta1, h.beta2, 1 - h.beta1,
                         1 - h.beta2, h.eps, h.weight_decay, h.step_size, h.denom_scale,
                         h.weight_decay != 0)


cdef void run(const Arrays* arrays, Py_ssize_t count, const Sgd* sgd, const Adam* adam,
              int n_threads) noexcept nogil:
    # Small arrays on this thread; each large one cut into one block per thread.
    cdef Py_ssize_t i, t, lo, hi, block
    cdef int threads
    for i in range(count):
        # Small arrays stay serial even with the team awake: a parallel region for each
        # would cost more in fork and join than splitting its update saves.
        threads = 1 if arrays[i].n < MIN_PARALLEL else n_threads
        if threads == 1:
            if sgd != NULL:
                sgd_block(&arrays[i], 0, arrays[i].n, sgd)
            else:
                adam_block(&arrays[i], 0, arrays[i].n, adam)
            continue
        block = (arrays[i].n + threads - 1) // threads
        for t in prange(threads, num_threads=threads, schedule="static"):
            lo = t * block
            hi = arrays[i].n if arrays[i].n < lo + block else lo + block
            if lo < hi:
                if sgd != NULL:
                    sgd_block(&arrays[i], lo, hi, sgd)
                else:
                    adam_block(&arrays[i], lo, hi, adam)
        team_released(threads)


cdef Arrays* check_all(list params, list grads, list first, str first_name, list second,
                       str second_name) except NULL:
    # Every array checked before any is written: a bad list changes nothing. The caller
    # frees the result.
    cdef Py_ssize_t i, count = len(params)
    cdef Arrays* arrays = <Arrays*> malloc(max(count, 1) * sizeof(Arrays))
    if arrays == NULL:
        raise MemoryError()
    try:
        for i in range(count):
            arrays[i].typenum = dtype_of(params[i], i)
            arrays[i].n = cnp.PyArray_SIZE(<cnp.ndarray> params[i])
            arrays[i].p = data_of(params[i], arrays[i].typenum, arrays[i].n, True,
                                  "params", i)
            arrays[i].g = data_of(grads[i], arrays[i].typenum, arrays[i].n, False,
                                  "grads", i)
            arrays[i].a = arrays[i].b = NULL
            if first is not None:
                arrays[i].a = data_of(first[i], arrays[i].typenum, arrays[i].n, True,
                                      first_name, i)
            if second is not None:
                arrays[i].b = data_of(second[i], arrays[i].typenum, arrays[i].n, True,
                                      second_name, i)
    except BaseException:
        free(arrays)
        raise
    return arrays


def sgd_update(list params, list grads, momentum_buffers, double lr, double momentum,
               double weight_decay, bint nesterov, bint first, int n_threads):
    """See fastcnn._backend.Backend: updates every param (and buffer) in place."""
    cdef Py_ssize_t count = len(params)
    if len(grads) != count:
        raise ValueError(f"{count} params but {len(grads)} grads")
    if momentum != 0 and (momentum_buffers is None or len(momentum_buffers) != count):
        raise ValueError(f"momentum needs {count} momentum_buffers")
    cdef Sgd h = Sgd(lr, momentum, weight_decay, nesterov, first)
    cdef Arrays* arrays = check_all(params, grads, momentum_buffers if momentum != 0 else None,
                                    "momentum_buffers", None, "")
    try:
        with nogil:
            run(arrays, count, &h, NULL, n_threads)
    finally:
        free(arrays)


def adam_update(list params, list grads, list exp_avgs, list exp_avg_sqs, double beta1,
                double beta2, double eps, double weight_decay, double step_size,
                double denom_scale, int n_threads):
    """See fastcnn._backend.Backend: updates every param and both moments in place."""
    cdef Py_ssize_t count = len(params)
    if len(grads) != count or len(exp_avgs) != count or len(exp_avg_sqs) != count:
        raise ValueError(
            f"{count} params but {len(grads)} grads, {len(exp_avgs)} exp_avgs and "
            f"{len(exp_avg_sqs)} exp_avg_sqs"
        )
    cdef Adam h = Adam(beta1, beta2, eps, weight_decay, step_size, denom_scale)
    cdef Arrays* arrays = check_all(params, grads, exp_avgs, "exp_avgs", exp_avg_sqs,
                                    "exp_avg_sqs")
    try:
        with nogil:
            run(arrays, count, NULL, &h, n_threads)
    finally:
        free(arrays)
