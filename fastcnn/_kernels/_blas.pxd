# Row-major GEMM over scipy's BLAS (float and double), through function pointers fetched
# from scipy.linalg.cython_blas on first use: importing scipy.linalg costs ~0.2 s, which
# `import fastcnn` should not pay.
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from cython cimport floating

ctypedef void (*sgemm_t)(char* transa, char* transb, int* m, int* n, int* k,
                         float* alpha, float* a, int* lda, float* b, int* ldb,
                         float* beta, float* c, int* ldc) noexcept nogil
ctypedef void (*dgemm_t)(char* transa, char* transb, int* m, int* n, int* k,
                         double* alpha, double* a, int* lda, double* b, int* ldb,
                         double* beta, double* c, int* ldc) noexcept nogil

cdef struct Blas:
    sgemm_t sgemm
    dgemm_t dgemm


cdef inline void* _capi_pointer(object capi, str name) except NULL:
    capsule = capi[name]
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


cdef inline int load_blas(Blas* blas) except -1:
    # Each kernel module keeps its own Blas and fills it before its first product.
    if blas.sgemm == NULL:
        from scipy.linalg import cython_blas
        blas.dgemm = <dgemm_t> _capi_pointer(cython_blas.__pyx_capi__, "dgemm")
        blas.sgemm = <sgemm_t> _capi_pointer(cython_blas.__pyx_capi__, "sgemm")
    return 0


cdef inline void gemm(const Blas* blas, bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    # C (m x n) = alpha * op(A) @ op(B) + beta * C, every matrix row-major with the
    # given leading dimension. BLAS is column-major, and a row-major matrix read as
    # column-major is its transpose, so we ask BLAS for C^T = op(B)^T @ op(A)^T.
    cdef char flag_b = b'T' if trans_b else b'N'
    cdef char flag_a = b'T' if trans_a else b'N'
    if floating is float:
        blas.sgemm(&flag_b, &flag_a, &n, &m, &k, &alpha, <float*> b, &ldb,
                   <float*> a, &lda, &beta, c, &ldc)
    else:
        blas.dgemm(&flag_b, &flag_a, &n, &m, &k, &alpha, <double*> b, &ldb,
                   <double*> a, &lda, &beta, c, &ldc)
