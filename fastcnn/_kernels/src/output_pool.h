/* A numpy memory handler (NEP 49) that keeps freed output blocks for the next op
 * (output_pool.c).
 */
#ifndef FASTCNN_OUTPUT_POOL_H
#define FASTCNN_OUTPUT_POOL_H

#include <Python.h>
#include <numpy/ndarraytypes.h>
#include <stddef.h>

extern PyDataMem_Handler fastcnn_pool_handler;
/* Blocks smaller than min are never kept; at most max bytes are kept in all. */
extern size_t fastcnn_pool_min_bytes;
extern size_t fastcnn_pool_max_bytes;
/* Give every kept block back to the system. */
void fastcnn_pool_release(void);
/* Bytes in kept blocks. */
size_t fastcnn_pool_kept_bytes(void);

#endif
