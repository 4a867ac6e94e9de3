/*
 * devmem.c - device memory through the CUDA driver, loaded at run time as
 * jopt loads it (devmem.h).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

#include "devmem.h"

typedef int CUresult;

static struct {
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGet)(int *, int);
    CUresult (*PrimaryCtxRetain)(void **, int);
    CUresult (*CtxSetCurrent)(void *);
    CUresult (*MemAlloc)(uint64_t *, size_t);
    CUresult (*MemFree)(uint64_t);
    CUresult (*HtoD)(uint64_t, const void *, size_t);
    CUresult (*DtoH)(void *, uint64_t, size_t);
    CUresult (*DtoDAsync)(uint64_t, uint64_t, size_t, void *);
    CUresult (*StreamCreate)(void **, unsigned);
    CUresult (*StreamSynchronize)(void *);
    CUresult (*EventCreate)(void **, unsigned);
    CUresult (*EventRecord)(void *, void *);
    CUresult (*EventSynchronize)(void *);
    CUresult (*EventElapsedTime)(float *, void *, void *);
    void *ctx;
} D;

int dm_open(char *why)
{
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, 256, "no CUDA driver: %s", dlerror());
        return -1;
    }
#define LOAD(f, name) if (!(*(void **)&D.f = dlsym(lib, name))) { \
        snprintf(why, 256, "the CUDA driver has no %s", name); return -1; }
    LOAD(Init, "cuInit") LOAD(DeviceGet, "cuDeviceGet")
    LOAD(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain") LOAD(CtxSetCurrent, "cuCtxSetCurrent")
    LOAD(MemAlloc, "cuMemAlloc_v2") LOAD(MemFree, "cuMemFree_v2")
    LOAD(HtoD, "cuMemcpyHtoD_v2") LOAD(DtoH, "cuMemcpyDtoH_v2")
    LOAD(DtoDAsync, "cuMemcpyDtoDAsync_v2") LOAD(StreamCreate, "cuStreamCreate")
    LOAD(StreamSynchronize, "cuStreamSynchronize") LOAD(EventCreate, "cuEventCreate")
    LOAD(EventRecord, "cuEventRecord") LOAD(EventSynchronize, "cuEventSynchronize")
    LOAD(EventElapsedTime, "cuEventElapsedTime")
#undef LOAD
    int dev, rc;
    if ((rc = D.Init(0)) || (rc = D.DeviceGet(&dev, 0)) ||
        (rc = D.PrimaryCtxRetain(&D.ctx, dev)) || (rc = D.CtxSetCurrent(D.ctx))) {
        snprintf(why, 256, "no CUDA device (driver error %d)", rc);
        return -1;
    }
    return 0;
}

void *dm_alloc(size_t bytes)
{
    uint64_t p;
    return D.CtxSetCurrent(D.ctx) || D.MemAlloc(&p, bytes ? bytes : 4) ? NULL
                                                                       : (void *)(uintptr_t)p;
}

void dm_free(void *p)
{
    if (p && !D.CtxSetCurrent(D.ctx))
        D.MemFree((uint64_t)(uintptr_t)p);
}

int dm_put(void *dev, const void *host, size_t bytes)
{
    return D.CtxSetCurrent(D.ctx) || D.HtoD((uint64_t)(uintptr_t)dev, host, bytes);
}

int dm_get(void *host, const void *dev, size_t bytes)
{
    return D.CtxSetCurrent(D.ctx) || D.DtoH(host, (uint64_t)(uintptr_t)dev, bytes);
}

void *dm_stream(void)
{
    void *s = NULL;
    return D.CtxSetCurrent(D.ctx) || D.StreamCreate(&s, 1) ? NULL : s;
}

void *dm_event(void)
{
    void *e = NULL;
    return D.CtxSetCurrent(D.ctx) || D.EventCreate(&e, 0) ? NULL : e;
}

int dm_record(void *event, void *stream) { return D.EventRecord(event, stream); }

float dm_elapsed_ms(void *a, void *b)
{
    float ms = -1;
    if (D.EventSynchronize(b) || D.EventElapsedTime(&ms, a, b))
        return -1;
    return ms;
}

int dm_copy_async(void *dst, const void *src, size_t bytes, void *stream)
{
    return D.DtoDAsync((uint64_t)(uintptr_t)dst, (uint64_t)(uintptr_t)src, bytes, stream);
}

int dm_sync(void *stream) { return D.StreamSynchronize(stream); }
