"""OpenMP queries, valid whether or not the extension was built with OpenMP, and the
team-size rule every kernel shares.

Design
------
Waking a sleeping OpenMP worker costs 25-60 us on a virtual machine, more than the whole
of a small op (a LeNet head's 84 -> 10 product, a tanh over 64 x 120 values). So small
work runs on one thread, unless the team is warm: a parallel region ended moments ago
and its workers are still spinning (libgomp lets them spin ~75 us here, see
``fastcnn._backend``). Then joining the team costs about a microsecond, and doing so keeps
the workers spinning through a run of small ops (a classifier head, the loss), so the
next large kernel finds them awake instead of paying the wake-up. ``team_size`` makes
that choice; every kernel calls ``team_released`` after each of its parallel regions.
Small work that would round differently when split (a matrix product, the loss) joins
a warm team but stays on its first thread, so results never depend on the timing.
"""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCNN_OPENMP_ENABLED 1
    static int fastcnn_max_threads(void) { return omp_get_max_threads(); }
    static double fastcnn_now(void) { return omp_get_wtime(); }
    #else
    #define FASTCNN_OPENMP_ENABLED 0
    static int fastcnn_max_threads(void) { return 1; }
    static double fastcnn_now(void) { return 0.0; }
    #endif
    /* Kernels may run in several Python threads at once: the time a team was last
       released is read and written atomically (relaxed; it only steers a heuristic). */
    static double fastcnn_released_at = -1e300;
    #if defined(__GNUC__) || defined(__clang__)
    static double fastcnn_load_released(void) {
        double t; __atomic_load(&fastcnn_released_at, &t, __ATOMIC_RELAXED); return t; }
    static void fastcnn_store_released(double t) {
        __atomic_store(&fastcnn_released_at, &t, __ATOMIC_RELAXED); }
    #else  /* MSVC: aligned 8-byte loads and stores are atomic on x86-64 and ARM64 */
    static double fastcnn_load_released(void) {
        return *(volatile double*) &fastcnn_released_at; }
    static void fastcnn_store_released(double t) {
        *(volatile double*) &fastcnn_released_at = t; }
    #endif
    /* Set once a parallel region of 2+ threads has run (in any thread): from then on a
       forked child must not start OpenMP threads (see fastcnn._threads). */
    static int fastcnn_team_started = 0;
    #if defined(__GNUC__) || defined(__clang__)
    static int fastcnn_load_team_started(void) {
        return __atomic_load_n(&fastcnn_team_started, __ATOMIC_RELAXED); }
    static void fastcnn_store_team_started(void) {
        __atomic_store_n(&fastcnn_team_started, 1, __ATOMIC_RELAXED); }
    #else
    static int fastcnn_load_team_started(void) {
        return *(volatile int*) &fastcnn_team_started; }
    static void fastcnn_store_team_started(void) {
        *(volatile int*) &fastcnn_team_started = 1; }
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
    double fastcnn_now() noexcept nogil
    double fastcnn_load_released() noexcept nogil
    void fastcnn_store_released(double t) noexcept nogil
    int fastcnn_load_team_started() noexcept nogil
    void fastcnn_store_team_started() noexcept nogil


# Seconds after a release during which the team counts as warm; 0 turns warm reuse off.
cdef double warm_window = 0.0


cdef int team_size(Py_ssize_t work, Py_ssize_t min_work, int n_threads) noexcept nogil:
    if n_threads <= 1:
        return 1
    if work >= min_work:
        return n_threads
    if warm_window > 0 and fastcnn_now() - fastcnn_load_released() < warm_window:
        return n_threads
    return 1


cdef void team_released(int threads) noexcept nogil:
    if threads > 1:
        # Every kernel calls this after each parallel region, in the thread that ran it:
        # the flag is set before that thread can fork, which is when a child would hang.
        if not fastcnn_load_team_started():
            fastcnn_store_team_started()
        if warm_window > 0:
            fastcnn_store_released(fastcnn_now())


def openmp_enabled() -> bool:
    """True if the kernels were compiled with OpenMP."""
    return bool(FASTCNN_OPENMP_ENABLED)


def max_threads() -> int:
    """OpenMP's default team size (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return fastcnn_max_threads()


def team_started() -> bool:
    """True once a kernel has run a parallel region on 2 or more threads."""
    return bool(fastcnn_load_team_started())


def build_info() -> dict:
    """Compiler, flags and checks the extension was built with."""
    return {
        "compiler": FASTCNN_COMPILER.decode(),
        "flags": FASTCNN_BUILD_FLAGS.decode(),
        "openmp": bool(FASTCNN_OPENMP_ENABLED),
        "debug_checks": bool(FASTCNN_DEBUG_BUILD),
    }


def team_size_for(Py_ssize_t work, Py_ssize_t min_work, int n_threads) -> int:
    """The team a kernel would take now for ``work`` units, given its ``min_work``."""
    return team_size(work, min_work, n_threads)


def set_warm_window(double seconds) -> None:
    """How long after a parallel region its team counts as warm (0: never)."""
    global warm_window
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    warm_window = seconds


def get_warm_window() -> float:
    """The window set by :func:`set_warm_window`, in seconds."""
    return warm_window
