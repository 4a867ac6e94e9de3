/*
 * devmem.h - device memory for the GPU tests and benchmarks, as a user's
 * program gets it (cudaMalloc's part of the CUDA driver, loaded with
 * dlopen): jopt takes such pointers.  Device 0's primary context, the one
 * jopt and torch use.
 */
#ifndef TEST_DEVMEM_H
#define TEST_DEVMEM_H

#include <stddef.h>

/* 0 when device 0 is there; else -1 with the reason in why (256 bytes) */
int dm_open(char *why);
void *dm_alloc(size_t bytes);          /* NULL on failure */
void dm_free(void *p);
int dm_put(void *dev, const void *host, size_t bytes); /* 0 on success */
int dm_get(void *host, const void *dev, size_t bytes);
/* timing on a stream (NULL: the default one) */
void *dm_stream(void);
void *dm_event(void);
int dm_record(void *event, void *stream);
float dm_elapsed_ms(void *a, void *b);  /* waits for b */
int dm_copy_async(void *dst, const void *src, size_t bytes, void *stream);
int dm_sync(void *stream);

#endif
