"""OpenMP queries, valid whether or not the extension was built with OpenMP."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCNN_OPENMP_ENABLED 1
    static int fastcnn_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FASTCNN_OPENMP_ENABLED 0
    static int fastcnn_max_threads(void) { return 1; }
    #endif
    #ifndef FASTCNN_DEBUG_BUILD
    #define FASTCNN_DEBUG_BUILD 0
    #endif
    #ifndef FASTCNN_BUILD_FLAGS
    #define FASTCNN_BUILD_FLAGS ""
    #endif
    #if defined(__clang__)
    #define FASTCNN_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define FASTCNN_COMPILER "gcc " __VERSION__
    #elif defined(_MSC_VER)
    #define FASTCNN_COMPILER "msvc"
    #else
    #define FASTCNN_COMPILER "unknown"
    #endif
    """
    int FASTCNN_OPENMP_ENABLED
    int FASTCNN_DEBUG_BUILD
    const char* FASTCNN_BUILD_FLAGS
    const char* FASTCNN_COMPILER
    int fastcnn_max_threads() noexcept nogil


def openmp_enabled() -> bool:
    """True if the kernels were compiled with OpenMP."""
    return bool(FASTCNN_OPENMP_ENABLED)


def max_threads() -> int:
    """OpenMP's default team size (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return fastcnn_max_threads()


def build_info() -> dict:
    """Compiler, flags and checks the extension was built with."""
    return {
        "compiler": FASTCNN_COMPILER.decode(),
        "flags": FASTCNN_BUILD_FLAGS.decode(),
        "openmp": bool(FASTCNN_OPENMP_ENABLED),
        "debug_checks": bool(FASTCNN_DEBUG_BUILD),
    }
