/* One block of convolution scratch kept from call to call (scratch.c).
 *
 * Each extension module that compiles scratch.c has its own kept block.
 */
#ifndef FASTCNN_SCRATCH_H
#define FASTCNN_SCRATCH_H

#include <stddef.h>

/* n bytes, 64-byte aligned (NULL when out of memory); give them back with
 * fastcnn_scratch_give_back. */
void *fastcnn_scratch_take(size_t n);
void fastcnn_scratch_give_back(void *p);
/* Free the kept block unless a call holds it; the bytes kept afterwards. */
size_t fastcnn_scratch_release(void);
/* Bytes kept between calls. */
size_t fastcnn_scratch_kept(void);

#endif
