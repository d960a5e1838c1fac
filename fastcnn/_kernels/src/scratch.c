/* One block of convolution scratch kept from call to call.
 *
 * Each convolution call needs per-thread scratch for the length of the call (hundreds
 * of KB for LeNet, MB for large layers). Freshly malloc'd, a block of that size comes
 * from mmap, or from a heap that grows in the second training step and then stays, so
 * either every call page-faults it in again or the second step allocates memory the
 * first did not. The largest block asked for (up to FASTCNN_KEEP_SCRATCH_MAX) is kept
 * instead and lent to the next call. A call that finds it lent out (another Python
 * thread inside a kernel) gets a block of its own, freed when it gives it back. The
 * flag is taken with an atomic exchange, so this holds without the GIL too.
 */
#include "scratch.h"

#include <stddef.h>
#include <stdlib.h>

#define FASTCNN_KEEP_SCRATCH_MAX ((size_t)64 << 20)

/* Cache-line aligned: the kernels' 64-byte vector loads from a block at 16 mod 64 (what
 * malloc gives a large block) each span two lines (docs/performance.md, "cache lines"). */
#ifdef _MSC_VER
#include <intrin.h>
#include <malloc.h>
static void *fastcnn_aligned_alloc(size_t n) { return _aligned_malloc(n > 0 ? n : 1, 64); }
static void fastcnn_aligned_free(void *p) { _aligned_free(p); }
static long fastcnn_flag_take(volatile long *flag) { return _InterlockedExchange(flag, 1); }
static void fastcnn_flag_clear(volatile long *flag) { _InterlockedExchange(flag, 0); }
#else
static void *fastcnn_aligned_alloc(size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, 64, n > 0 ? n : 1) == 0 ? p : NULL;
}
static void fastcnn_aligned_free(void *p) { free(p); }
static long fastcnn_flag_take(volatile long *flag)
{
    return __atomic_exchange_n(flag, 1, __ATOMIC_ACQUIRE);
}
static void fastcnn_flag_clear(volatile long *flag) { __atomic_store_n(flag, 0, __ATOMIC_RELEASE); }
#endif

static void *fastcnn_kept_scratch = NULL;
static size_t fastcnn_kept_bytes = 0;
static volatile long fastcnn_kept_lent = 0;

/* n bytes (NULL when out of memory); give them back with fastcnn_scratch_give_back. */
void *fastcnn_scratch_take(size_t n)
{
    if (n <= FASTCNN_KEEP_SCRATCH_MAX && !fastcnn_flag_take(&fastcnn_kept_lent)) {
        if (fastcnn_kept_bytes < n) {
            fastcnn_aligned_free(fastcnn_kept_scratch);
            fastcnn_kept_scratch = fastcnn_aligned_alloc(n);
            fastcnn_kept_bytes = fastcnn_kept_scratch != NULL ? n : 0;
        }
        if (fastcnn_kept_scratch != NULL) return fastcnn_kept_scratch;
        fastcnn_flag_clear(&fastcnn_kept_lent);
    }
    return fastcnn_aligned_alloc(n);
}

void fastcnn_scratch_give_back(void *p)
{
    /* p can equal the kept block only if this call holds it: a block of its own is
     * still allocated, so no other call's kept block can have its address. */
    if (p != NULL && p == fastcnn_kept_scratch) fastcnn_flag_clear(&fastcnn_kept_lent);
    else fastcnn_aligned_free(p);
}

/* Free the kept block unless a call holds it; the bytes kept afterwards. */
size_t fastcnn_scratch_release(void)
{
    if (!fastcnn_flag_take(&fastcnn_kept_lent)) {
        fastcnn_aligned_free(fastcnn_kept_scratch);
        fastcnn_kept_scratch = NULL;
        fastcnn_kept_bytes = 0;
        fastcnn_flag_clear(&fastcnn_kept_lent);
    }
    return fastcnn_kept_bytes;
}

size_t fastcnn_scratch_kept(void) { return fastcnn_kept_bytes; }
