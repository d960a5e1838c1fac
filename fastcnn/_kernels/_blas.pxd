# Row-major GEMM over scipy's BLAS, for float and double.
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    # C (m x n) = alpha * op(A) @ op(B) + beta * C, every matrix row-major with the
    # given leading dimension. BLAS is column-major, and a row-major matrix read as
    # column-major is its transpose, so we ask BLAS for C^T = op(B)^T @ op(A)^T.
    cdef char flag_b = b'T' if trans_b else b'N'
    cdef char flag_a = b'T' if trans_a else b'N'
    if floating is float:
        sgemm(&flag_b, &flag_a, &n, &m, &k, &alpha, <float*> b, &ldb,
              <float*> a, &lda, &beta, c, &ldc)
    else:
        dgemm(&flag_b, &flag_a, &n, &m, &k, &alpha, <double*> b, &ldb,
              <double*> a, &lda, &beta, c, &ldc)
