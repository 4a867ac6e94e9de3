/*
 * cudadrv.h - the few calls of the CUDA driver API that jopt needs, loaded
 * at run time with dlopen("libcuda.so.1"): no CUDA toolkit is needed to
 * build jopt, and a machine without a GPU gets a clear error, never a
 * crash.  Private to the runtime (and its tests).
 *
 * Every call makes the device's primary context current on the calling
 * thread first: the context the CUDA runtime (and torch) use, so pointers
 * from cudaMalloc and torch CUDA tensors are valid here.  Calls that fail
 * return a jopt status with the driver's words in `err` (CG_ERRLEN bytes):
 * "CUDA: cuMemAlloc (1024 bytes): CUDA_ERROR_OUT_OF_MEMORY (2): out of
 * memory".
 */
#ifndef RT_CUDADRV_H
#define RT_CUDADRV_H

#include <stddef.h>
#include <stdint.h>

#include "cg.h"

typedef uint64_t rt_cuptr;                /* CUdeviceptr */
typedef struct rt_cuda rt_cuda;           /* one device, its primary context */
typedef struct rt_cumod rt_cumod;         /* a loaded module */
typedef struct rt_custream_ *rt_custream; /* CUstream; NULL: the legacy default */
typedef struct rt_cufn_ *rt_cufn;         /* CUfunction */
typedef struct rt_cuevent_ *rt_cuevent;   /* CUevent */

/* The number of CUDA devices: 0, with the reason in err, when there is no
 * driver (libcuda.so.1 not found) or no device. */
int rt_cuda_devices(char *err);

/* Opens device `ordinal`: retains its primary context. */
int rt_cuda_open(int ordinal, rt_cuda **out, char *err);
void rt_cuda_close(rt_cuda *c); /* NULL is a no-op */
const char *rt_cuda_name(const rt_cuda *c);   /* "NVIDIA H200" */
int rt_cuda_cc(const rt_cuda *c);             /* compute capability: 90 */
int rt_cuda_sms(const rt_cuda *c);            /* multiprocessors */
int rt_cuda_driver_version(const rt_cuda *c); /* 13000 for CUDA 13.0 */

int rt_cuda_alloc(rt_cuda *c, size_t bytes, rt_cuptr *out, char *err);
void rt_cuda_free(rt_cuda *c, rt_cuptr p); /* 0 is a no-op */
/* page-locked host memory, for copies that return before they are done */
int rt_cuda_host_alloc(rt_cuda *c, size_t bytes, void **out, char *err);
void rt_cuda_host_free(rt_cuda *c, void *p); /* NULL is a no-op */
/* Whether p is memory of this device (allocated by cuMemAlloc, cudaMalloc,
 * torch, or managed): 1, else 0 */
int rt_cuda_is_device_ptr(rt_cuda *c, const void *p);

/* Copies ordered on stream s.  From host memory: pinned memory must stay
 * unchanged until the copy has run; pageable memory may make the call
 * wait.  To host memory: returns when the copy is done. */
int rt_cuda_htod(rt_cuda *c, rt_cuptr dst, const void *src, size_t bytes,
                 rt_custream s, char *err);
int rt_cuda_dtoh(rt_cuda *c, void *dst, rt_cuptr src, size_t bytes,
                 rt_custream s, char *err);
int rt_cuda_dtod(rt_cuda *c, rt_cuptr dst, rt_cuptr src, size_t bytes,
                 rt_custream s, char *err);
/* n 32-bit words of `value` at dst, ordered on s */
int rt_cuda_memset32(rt_cuda *c, rt_cuptr dst, uint32_t value, size_t n,
                     rt_custream s, char *err);

/* Loads PTX (the driver compiles it for the device); the JIT's error log
 * is in err on failure. */
int rt_cuda_load(rt_cuda *c, const char *ptx, rt_cumod **out, char *err);
void rt_cuda_unload(rt_cumod *m); /* NULL is a no-op */
int rt_cuda_fn(rt_cumod *m, const char *name, rt_cufn *out, char *err);
/* registers per thread, static shared memory and local (spill) memory */
void rt_cuda_fn_info(rt_cuda *c, rt_cufn f, int *regs, int *smem, int *local);
/* cuLaunchKernel on a 1-D grid; args as cuLaunchKernel's kernelParams */
int rt_cuda_launch(rt_cuda *c, rt_cufn f, unsigned grid, unsigned block,
                   rt_custream s, void **args, char *err);

int rt_cuda_stream_new(rt_cuda *c, rt_custream *out, char *err);
void rt_cuda_stream_free(rt_cuda *c, rt_custream s);
int rt_cuda_sync(rt_cuda *c, rt_custream s, char *err);

/* events: `timing` 0 for the cheap kind that only orders */
int rt_cuda_event_new(rt_cuda *c, int timing, rt_cuevent *out, char *err);
void rt_cuda_event_free(rt_cuda *c, rt_cuevent e);
int rt_cuda_record(rt_cuda *c, rt_cuevent e, rt_custream s, char *err);
int rt_cuda_event_sync(rt_cuda *c, rt_cuevent e, char *err);
/* work enqueued on s from now on waits for e */
int rt_cuda_wait_event(rt_cuda *c, rt_custream s, rt_cuevent e, char *err);
/* milliseconds between two recorded events (waits for the second) */
int rt_cuda_elapsed(rt_cuda *c, rt_cuevent a, rt_cuevent b, float *ms,
                    char *err);

#endif /* RT_CUDADRV_H */
