/* A numpy memory handler (NEP 49) that keeps freed output blocks for the next op.
 *
 * Rule: the arrays fastcnn's ops return are ordinary numpy arrays that own their memory;
 * only the memory comes back. numpy calls this handler's free when nothing can see an
 * array's data any more (the array and every view of it are gone, or a resize moved it),
 * and a block of at least FASTCNN_POOL_MIN_BYTES is then kept, FASTCNN_POOL_MAX_BYTES
 * in all, for a later request of the same rounded size.
 *
 * Reason: glibc serves large requests with a fresh mmap and unmaps them on free, so every
 * new output page-faults on first touch; a training step that allocates the same few
 * shapes over and over pays those faults in serial code. See fastcnn/_buffers.py.
 *
 * Every call comes with the GIL held: numpy allocates and frees array data only while it
 * holds it, and the handler is current only inside fastcnn._buffers.empty. The spin lock
 * guards the free list where that does not hold (a free-threaded build), and is never
 * contended otherwise.
 */
#include "output_pool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FASTCNN_POOL_ALIGN 64
#define FASTCNN_POOL_PAGE 4096
#define FASTCNN_POOL_SLOTS 64

size_t fastcnn_pool_min_bytes = 1 << 16;
size_t fastcnn_pool_max_bytes = (size_t)64 << 20;

static void *fastcnn_pool_ptr[FASTCNN_POOL_SLOTS];  /* free blocks, oldest first */
static size_t fastcnn_pool_size[FASTCNN_POOL_SLOTS];
static int fastcnn_pool_count = 0;
static size_t fastcnn_pool_bytes = 0;  /* bytes in free blocks */
static volatile char fastcnn_pool_busy = 0;

static void fastcnn_pool_lock(void) {
#if defined(__GNUC__) || defined(__clang__)
    while (__atomic_test_and_set(&fastcnn_pool_busy, __ATOMIC_ACQUIRE)) {}
#endif
}

static void fastcnn_pool_unlock(void) {
#if defined(__GNUC__) || defined(__clang__)
    __atomic_clear(&fastcnn_pool_busy, __ATOMIC_RELEASE);
#endif
}

/* Each block starts with a header just before the 64-byte aligned data: the pointer
   malloc returned and the usable size, so free and realloc need not trust a caller's
   size. */
typedef struct { void *raw; size_t size; } fastcnn_pool_header;

static fastcnn_pool_header *fastcnn_pool_header_of(void *data) {
    return (fastcnn_pool_header *)data - 1;
}

static size_t fastcnn_pool_rounded(size_t size) {
    if (size < fastcnn_pool_min_bytes) return size ? size : 1;
    return (size + FASTCNN_POOL_PAGE - 1) / FASTCNN_POOL_PAGE * FASTCNN_POOL_PAGE;
}

static void *fastcnn_pool_new_block(size_t size) {
    size_t extra = sizeof(fastcnn_pool_header) + FASTCNN_POOL_ALIGN;
    if (size > SIZE_MAX - extra) return NULL;
    char *raw = (char *)malloc(size + extra);
    if (raw == NULL) return NULL;
    uintptr_t at = (uintptr_t)(raw + sizeof(fastcnn_pool_header));
    char *data = (char *)((at + FASTCNN_POOL_ALIGN - 1) & ~(uintptr_t)(FASTCNN_POOL_ALIGN - 1));
    fastcnn_pool_header_of(data)->raw = raw;
    fastcnn_pool_header_of(data)->size = size;
    return data;
}

static void fastcnn_pool_remove(int i) {  /* lock held */
    fastcnn_pool_bytes -= fastcnn_pool_size[i];
    fastcnn_pool_count--;
    memmove(fastcnn_pool_ptr + i, fastcnn_pool_ptr + i + 1,
            (size_t)(fastcnn_pool_count - i) * sizeof(void *));
    memmove(fastcnn_pool_size + i, fastcnn_pool_size + i + 1,
            (size_t)(fastcnn_pool_count - i) * sizeof(size_t));
}

/* A kept block of exactly `size` bytes (the newest, whose pages are likeliest in cache),
   or NULL. */
static void *fastcnn_pool_take(size_t size) {
    void *data = NULL;
    fastcnn_pool_lock();
    for (int i = fastcnn_pool_count - 1; i >= 0; i--) {
        if (fastcnn_pool_size[i] == size) {
            data = fastcnn_pool_ptr[i];
            fastcnn_pool_remove(i);
            break;
        }
    }
    fastcnn_pool_unlock();
    return data;
}

static void *fastcnn_pool_malloc(void *ctx, size_t size) {
    (void)ctx;
    size = fastcnn_pool_rounded(size);
    void *data = size >= fastcnn_pool_min_bytes ? fastcnn_pool_take(size) : NULL;
    return data ? data : fastcnn_pool_new_block(size);
}

static void *fastcnn_pool_calloc(void *ctx, size_t nelem, size_t elsize) {
    if (elsize && nelem > SIZE_MAX / elsize) return NULL;
    void *data = fastcnn_pool_malloc(ctx, nelem * elsize);
    if (data) memset(data, 0, nelem * elsize);
    return data;
}

/* Keep the block if it is large enough and fits, dropping the oldest kept blocks to
   make room; else give it back to the system. */
static void fastcnn_pool_free(void *ctx, void *data, size_t size) {
    (void)ctx; (void)size;  /* numpy's size is the request's; the header knows the block's */
    if (data == NULL) return;
    size_t have = fastcnn_pool_header_of(data)->size;
    void *drop = fastcnn_pool_header_of(data)->raw;
    if (have >= fastcnn_pool_min_bytes && have <= fastcnn_pool_max_bytes) {
        fastcnn_pool_lock();
        while (fastcnn_pool_count == FASTCNN_POOL_SLOTS
               || fastcnn_pool_bytes + have > fastcnn_pool_max_bytes) {
            free(fastcnn_pool_header_of(fastcnn_pool_ptr[0])->raw);
            fastcnn_pool_remove(0);
        }
        fastcnn_pool_ptr[fastcnn_pool_count] = data;
        fastcnn_pool_size[fastcnn_pool_count] = have;
        fastcnn_pool_count++;
        fastcnn_pool_bytes += have;
        fastcnn_pool_unlock();
        drop = NULL;
    }
    free(drop);
}

static void *fastcnn_pool_realloc(void *ctx, void *data, size_t size) {
    if (data == NULL) return fastcnn_pool_malloc(ctx, size);
    size_t have = fastcnn_pool_header_of(data)->size;
    if (fastcnn_pool_rounded(size) == have) return data;
    void *moved = fastcnn_pool_malloc(ctx, size);
    if (moved == NULL) return NULL;  /* numpy keeps `data` and raises MemoryError */
    memcpy(moved, data, have < size ? have : size);
    fastcnn_pool_free(ctx, data, have);
    return moved;
}

/* Give every kept block back to the system. */
void fastcnn_pool_release(void) {
    fastcnn_pool_lock();
    while (fastcnn_pool_count > 0) {
        free(fastcnn_pool_header_of(fastcnn_pool_ptr[fastcnn_pool_count - 1])->raw);
        fastcnn_pool_remove(fastcnn_pool_count - 1);
    }
    fastcnn_pool_unlock();
}

size_t fastcnn_pool_kept_bytes(void) { return fastcnn_pool_bytes; }

PyDataMem_Handler fastcnn_pool_handler = {
    "fastcnn_output_pool",
    1,
    {NULL, fastcnn_pool_malloc, fastcnn_pool_calloc, fastcnn_pool_realloc, fastcnn_pool_free},
};
