/*
 * cuda.c - the CUDA driver API through dlopen("libcuda.so.1"), with the
 * types and entry points declared here (no CUDA header at build time).
 * Entry points are looked up by their exported ABI names: the `_v2` ones
 * where the driver's header maps the plain name to them (cuMemAlloc_v2,
 * cuMemcpyHtoDAsync_v2, cuStreamDestroy_v2, ...).  The library is loaded
 * once per process and never unloaded (libcuda does not survive dlclose
 * well).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudadrv.h"

typedef int CUresult; /* CUDA_SUCCESS = 0 */
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_NO_DEVICE = 100,
    CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES = 1,
    CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES = 3,
    CU_FUNC_ATTRIBUTE_NUM_REGS = 4,
    CU_JIT_INFO_LOG_BUFFER = 3,
    CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4,
    CU_JIT_ERROR_LOG_BUFFER = 5,
    CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6,
    CU_STREAM_NON_BLOCKING = 1,
    CU_EVENT_DEFAULT = 0,
    CU_EVENT_DISABLE_TIMING = 2,
    CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2,
    CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9,
    CU_MEMORYTYPE_DEVICE = 2,
    CU_MEMORYTYPE_UNIFIED = 4,
};

/* the driver's entry points, by exported name */
static struct driver {
    void *lib;
    char why[512]; /* why it could not be loaded */
    CUresult (*Init)(unsigned);
    CUresult (*DriverGetVersion)(int *);
    CUresult (*GetErrorName)(CUresult, const char **);
    CUresult (*GetErrorString)(CUresult, const char **);
    CUresult (*DeviceGetCount)(int *);
    CUresult (*DeviceGet)(CUdevice *, int);
    CUresult (*DeviceGetName)(char *, int, CUdevice);
    CUresult (*DeviceGetAttribute)(int *, int, CUdevice);
    CUresult (*DevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*DevicePrimaryCtxRelease)(CUdevice);
    CUresult (*CtxSetCurrent)(CUcontext);
    CUresult (*MemAlloc)(rt_cuptr *, size_t);
    CUresult (*MemFree)(rt_cuptr);
    CUresult (*MemAllocHost)(void **, size_t);
    CUresult (*MemFreeHost)(void *);
    CUresult (*PointerGetAttribute)(void *, int, rt_cuptr);
    CUresult (*MemcpyHtoDAsync)(rt_cuptr, const void *, size_t, rt_custream);
    CUresult (*MemcpyDtoHAsync)(void *, rt_cuptr, size_t, rt_custream);
    CUresult (*MemcpyDtoDAsync)(rt_cuptr, rt_cuptr, size_t, rt_custream);
    CUresult (*MemsetD32Async)(rt_cuptr, unsigned, size_t, rt_custream);
    CUresult (*ModuleLoadDataEx)(CUmodule *, const void *, unsigned, int *, void **);
    CUresult (*ModuleUnload)(CUmodule);
    CUresult (*ModuleGetFunction)(rt_cufn *, CUmodule, const char *);
    CUresult (*FuncGetAttribute)(int *, int, rt_cufn);
    CUresult (*LaunchKernel)(rt_cufn, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, unsigned, rt_custream, void **,
                             void **);
    CUresult (*StreamCreate)(rt_custream *, unsigned);
    CUresult (*StreamDestroy)(rt_custream);
    CUresult (*StreamSynchronize)(rt_custream);
    CUresult (*StreamWaitEvent)(rt_custream, rt_cuevent, unsigned);
    CUresult (*EventCreate)(rt_cuevent *, unsigned);
    CUresult (*EventDestroy)(rt_cuevent);
    CUresult (*EventRecord)(rt_cuevent, rt_custream);
    CUresult (*EventSynchronize)(rt_cuevent);
    CUresult (*EventElapsedTime)(float *, rt_cuevent, rt_cuevent);
    CUresult init_rc; /* cuInit's */
} drv;

static pthread_once_t drv_once = PTHREAD_ONCE_INIT;

struct rt_cuda {
    CUdevice dev;
    CUcontext ctx;
    int ordinal;
    char name[256];
    int cc, sms, version;
};

struct rt_cumod {
    rt_cuda *c;
    CUmodule mod;
};

static void load_driver(void)
{
    drv.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv.lib) {
        const char *e = dlerror();
        snprintf(drv.why, sizeof drv.why, "the CUDA driver (libcuda.so.1) cannot be "
                 "loaded: %s", e ? e : "not found");
        return;
    }
    static const struct {
        const char *names[2]; /* the ABI name, then an older one */
        size_t off;
    } syms[] = {
#define SYM(field, a, b) {{a, b}, offsetof(struct driver, field)}
        SYM(Init, "cuInit", NULL),
        SYM(DriverGetVersion, "cuDriverGetVersion", NULL),
        SYM(GetErrorName, "cuGetErrorName", NULL),
        SYM(GetErrorString, "cuGetErrorString", NULL),
        SYM(DeviceGetCount, "cuDeviceGetCount", NULL),
        SYM(DeviceGet, "cuDeviceGet", NULL),
        SYM(DeviceGetName, "cuDeviceGetName", NULL),
        SYM(DeviceGetAttribute, "cuDeviceGetAttribute", NULL),
        SYM(DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain", NULL),
        SYM(DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"),
        SYM(CtxSetCurrent, "cuCtxSetCurrent", NULL),
        SYM(MemAlloc, "cuMemAlloc_v2", NULL),
        SYM(MemFree, "cuMemFree_v2", NULL),
        SYM(MemAllocHost, "cuMemAllocHost_v2", "cuMemAllocHost"),
        SYM(MemFreeHost, "cuMemFreeHost", NULL),
        SYM(PointerGetAttribute, "cuPointerGetAttribute", NULL),
        SYM(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2", NULL),
        SYM(MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2", NULL),
        SYM(MemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2", NULL),
        SYM(MemsetD32Async, "cuMemsetD32Async", NULL),
        SYM(ModuleLoadDataEx, "cuModuleLoadDataEx", NULL),
        SYM(ModuleUnload, "cuModuleUnload", NULL),
        SYM(ModuleGetFunction, "cuModuleGetFunction", NULL),
        SYM(FuncGetAttribute, "cuFuncGetAttribute", NULL),
        SYM(LaunchKernel, "cuLaunchKernel", NULL),
        SYM(StreamCreate, "cuStreamCreate", NULL),
        SYM(StreamDestroy, "cuStreamDestroy_v2", "cuStreamDestroy"),
        SYM(StreamSynchronize, "cuStreamSynchronize", NULL),
        SYM(StreamWaitEvent, "cuStreamWaitEvent", NULL),
        SYM(EventCreate, "cuEventCreate", NULL),
        SYM(EventDestroy, "cuEventDestroy_v2", "cuEventDestroy"),
        SYM(EventRecord, "cuEventRecord", NULL),
        SYM(EventSynchronize, "cuEventSynchronize", NULL),
        SYM(EventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime"),
#undef SYM
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *f = dlsym(drv.lib, syms[i].names[0]);
        if (!f && syms[i].names[1])
            f = dlsym(drv.lib, syms[i].names[1]);
        if (!f) {
            snprintf(drv.why, sizeof drv.why, "the CUDA driver (libcuda.so.1) has no "
                     "%s: too old a driver?", syms[i].names[0]);
            drv.lib = NULL; /* unusable; left loaded */
            return;
        }
        memcpy((char *)&drv + syms[i].off, &f, sizeof f);
    }
    drv.init_rc = drv.Init(0);
}

static int msg(char *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int msg(char *err, int status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CG_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* "CUDA: what: CUDA_ERROR_Y (n): words" */
static int fail(char *err, CUresult rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, CUresult rc, const char *fmt, ...)
{
    const char *name = NULL, *words = NULL;
    if (drv.GetErrorName(rc, &name) != CUDA_SUCCESS || !name)
        name = "CUDA_ERROR_UNKNOWN";
    if (drv.GetErrorString(rc, &words) != CUDA_SUCCESS || !words)
        words = "unknown error";
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (err)
        snprintf(err, CG_ERRLEN, "CUDA: %s: %s (%d): %s", what, name, rc, words);
    return rc == CUDA_ERROR_OUT_OF_MEMORY ? JOPT_ENOMEM : JOPT_EDEVICE;
}

/* the driver, initialised; JOPT_OK or a status with the reason */
static int driver(char *err)
{
    pthread_once(&drv_once, load_driver);
    if (!drv.lib)
        return msg(err, JOPT_EDEVICE, "CUDA: %s", drv.why);
    if (drv.init_rc != CUDA_SUCCESS)
        return fail(err, drv.init_rc, "cuInit%s", drv.init_rc == CUDA_ERROR_NO_DEVICE
                                                      ? " (no CUDA device)" : "");
    return JOPT_OK;
}

static int current(rt_cuda *c, char *err)
{
    CUresult rc = drv.CtxSetCurrent(c->ctx);
    return rc ? fail(err, rc, "cuCtxSetCurrent") : JOPT_OK;
}

int rt_cuda_devices(char *err)
{
    if (driver(err))
        return 0;
    int n = 0;
    CUresult rc = drv.DeviceGetCount(&n);
    if (rc) {
        fail(err, rc, "cuDeviceGetCount");
        return 0;
    }
    if (n == 0)
        msg(err, JOPT_EDEVICE, "CUDA: the driver sees no device");
    return n;
}

int rt_cuda_open(int ordinal, rt_cuda **out, char *err)
{
    int st = driver(err);
    if (st)
        return st;
    int n = 0;
    CUresult rc = drv.DeviceGetCount(&n);
    if (rc)
        return fail(err, rc, "cuDeviceGetCount");
    if (ordinal < 0 || ordinal >= n)
        return msg(err, JOPT_EDEVICE, "CUDA: no device %d (the driver sees %d)",
                   ordinal, n);
    rt_cuda *c = cg_calloc(1, sizeof *c);
    if (!c)
        return msg(err, JOPT_ENOMEM, "out of memory");
    c->ordinal = ordinal;
    int major = 0, minor = 0;
    if ((rc = drv.DeviceGet(&c->dev, ordinal)) ||
        (rc = drv.DeviceGetName(c->name, (int)sizeof c->name - 1, c->dev)) ||
        (rc = drv.DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, c->dev)) ||
        (rc = drv.DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, c->dev)) ||
        (rc = drv.DeviceGetAttribute(&c->sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, c->dev)) ||
        (rc = drv.DriverGetVersion(&c->version))) {
        cg_free(c);
        return fail(err, rc, "querying device %d", ordinal);
    }
    c->cc = 10 * major + minor;
    if ((rc = drv.DevicePrimaryCtxRetain(&c->ctx, c->dev))) {
        cg_free(c);
        return fail(err, rc, "cuDevicePrimaryCtxRetain (device %d)", ordinal);
    }
    if ((st = current(c, err))) {
        drv.DevicePrimaryCtxRelease(c->dev);
        cg_free(c);
        return st;
    }
    *out = c;
    return JOPT_OK;
}

void rt_cuda_close(rt_cuda *c)
{
    if (!c)
        return;
    drv.DevicePrimaryCtxRelease(c->dev);
    cg_free(c);
}

const char *rt_cuda_name(const rt_cuda *c) { return c->name; }
int rt_cuda_cc(const rt_cuda *c) { return c->cc; }
int rt_cuda_sms(const rt_cuda *c) { return c->sms; }
int rt_cuda_driver_version(const rt_cuda *c) { return c->version; }

int rt_cuda_alloc(rt_cuda *c, size_t bytes, rt_cuptr *out, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.MemAlloc(out, bytes ? bytes : 1);
    return rc ? fail(err, rc, "cuMemAlloc (%zu bytes)", bytes) : JOPT_OK;
}

void rt_cuda_free(rt_cuda *c, rt_cuptr p)
{
    if (!p || current(c, NULL))
        return;
    drv.MemFree(p);
}

int rt_cuda_host_alloc(rt_cuda *c, size_t bytes, void **out, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.MemAllocHost(out, bytes ? bytes : 1);
    return rc ? fail(err, rc, "cuMemAllocHost (%zu bytes)", bytes) : JOPT_OK;
}

void rt_cuda_host_free(rt_cuda *c, void *p)
{
    if (!p || current(c, NULL))
        return;
    drv.MemFreeHost(p);
}

int rt_cuda_is_device_ptr(rt_cuda *c, const void *p)
{
    unsigned type = 0;
    int ordinal = -1;
    if (current(c, NULL) ||
        drv.PointerGetAttribute(&type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (rt_cuptr)(uintptr_t)p) ||
        drv.PointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                                (rt_cuptr)(uintptr_t)p))
        return 0;
    return (type == CU_MEMORYTYPE_DEVICE || type == CU_MEMORYTYPE_UNIFIED) &&
           ordinal == c->ordinal;
}

int rt_cuda_htod(rt_cuda *c, rt_cuptr dst, const void *src, size_t bytes,
                 rt_custream s, char *err)
{
    int st = current(c, err);
    CUresult rc = st ? CUDA_SUCCESS : drv.MemcpyHtoDAsync(dst, src, bytes, s);
    return st ? st : rc ? fail(err, rc, "cuMemcpyHtoDAsync (%zu bytes)", bytes) : JOPT_OK;
}

int rt_cuda_dtoh(rt_cuda *c, void *dst, rt_cuptr src, size_t bytes,
                 rt_custream s, char *err)
{
    int st = current(c, err);
    CUresult rc = st ? CUDA_SUCCESS : drv.MemcpyDtoHAsync(dst, src, bytes, s);
    if (!st && !rc)
        rc = drv.StreamSynchronize(s);
    return st ? st : rc ? fail(err, rc, "copying %zu bytes to the host", bytes) : JOPT_OK;
}

int rt_cuda_dtod(rt_cuda *c, rt_cuptr dst, rt_cuptr src, size_t bytes,
                 rt_custream s, char *err)
{
    int st = current(c, err);
    CUresult rc = st ? CUDA_SUCCESS : drv.MemcpyDtoDAsync(dst, src, bytes, s);
    return st ? st : rc ? fail(err, rc, "cuMemcpyDtoDAsync (%zu bytes)", bytes) : JOPT_OK;
}

int rt_cuda_memset32(rt_cuda *c, rt_cuptr dst, uint32_t value, size_t n,
                     rt_custream s, char *err)
{
    int st = current(c, err);
    CUresult rc = st ? CUDA_SUCCESS : drv.MemsetD32Async(dst, value, n, s);
    return st ? st : rc ? fail(err, rc, "cuMemsetD32Async (%zu words)", n) : JOPT_OK;
}

int rt_cuda_load(rt_cuda *c, const char *ptx, rt_cumod **out, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    rt_cumod *m = cg_calloc(1, sizeof *m);
    char *elog = cg_calloc(1, 8192), *ilog = cg_calloc(1, 4096);
    if (!m || !elog || !ilog) {
        cg_free(m);
        cg_free(elog);
        cg_free(ilog);
        return msg(err, JOPT_ENOMEM, "out of memory");
    }
    int opts[4] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                   CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
    void *vals[4] = {elog, (void *)(uintptr_t)8192, ilog, (void *)(uintptr_t)4096};
    CUresult rc = drv.ModuleLoadDataEx(&m->mod, ptx, 4, opts, vals);
    if (rc) {
        elog[8191] = 0;
        char what[CG_ERRLEN];
        snprintf(what, sizeof what, "cuModuleLoadDataEx (the driver's PTX JIT): %.900s",
                 elog[0] ? elog : "(no log)");
        st = fail(err, rc, "%s", what);
        if (st != JOPT_ENOMEM)
            st = JOPT_ECOMPILE;
        cg_free(m);
    } else {
        m->c = c;
        *out = m;
    }
    cg_free(elog);
    cg_free(ilog);
    return st;
}

void rt_cuda_unload(rt_cumod *m)
{
    if (!m)
        return;
    if (current(m->c, NULL) == JOPT_OK)
        drv.ModuleUnload(m->mod);
    cg_free(m);
}

int rt_cuda_fn(rt_cumod *m, const char *name, rt_cufn *out, char *err)
{
    int st = current(m->c, err);
    if (st)
        return st;
    CUresult rc = drv.ModuleGetFunction(out, m->mod, name);
    return rc ? fail(err, rc, "cuModuleGetFunction (%s)", name) : JOPT_OK;
}

void rt_cuda_fn_info(rt_cuda *c, rt_cufn f, int *regs, int *smem, int *local)
{
    *regs = *smem = *local = -1;
    if (current(c, NULL))
        return;
    drv.FuncGetAttribute(regs, CU_FUNC_ATTRIBUTE_NUM_REGS, f);
    drv.FuncGetAttribute(smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, f);
    drv.FuncGetAttribute(local, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, f);
}

int rt_cuda_launch(rt_cuda *c, rt_cufn f, unsigned grid, unsigned block,
                   rt_custream s, void **args, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    if (grid == 0)
        return JOPT_OK;
    CUresult rc = drv.LaunchKernel(f, grid, 1, 1, block, 1, 1, 0, s, args, NULL);
    return rc ? fail(err, rc, "cuLaunchKernel (%u blocks of %u)", grid, block) : JOPT_OK;
}

int rt_cuda_stream_new(rt_cuda *c, rt_custream *out, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.StreamCreate(out, CU_STREAM_NON_BLOCKING);
    return rc ? fail(err, rc, "cuStreamCreate") : JOPT_OK;
}

void rt_cuda_stream_free(rt_cuda *c, rt_custream s)
{
    if (s && current(c, NULL) == JOPT_OK)
        drv.StreamDestroy(s);
}

int rt_cuda_sync(rt_cuda *c, rt_custream s, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.StreamSynchronize(s);
    return rc ? fail(err, rc, "cuStreamSynchronize (an earlier launch or copy "
                     "on the stream may have failed)") : JOPT_OK;
}

int rt_cuda_event_new(rt_cuda *c, int timing, rt_cuevent *out, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.EventCreate(out, timing ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING);
    return rc ? fail(err, rc, "cuEventCreate") : JOPT_OK;
}

void rt_cuda_event_free(rt_cuda *c, rt_cuevent e)
{
    if (e && current(c, NULL) == JOPT_OK)
        drv.EventDestroy(e);
}

int rt_cuda_record(rt_cuda *c, rt_cuevent e, rt_custream s, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.EventRecord(e, s);
    return rc ? fail(err, rc, "cuEventRecord") : JOPT_OK;
}

int rt_cuda_wait_event(rt_cuda *c, rt_custream s, rt_cuevent e, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.StreamWaitEvent(s, e, 0);
    return rc ? fail(err, rc, "cuStreamWaitEvent") : JOPT_OK;
}

int rt_cuda_event_sync(rt_cuda *c, rt_cuevent e, char *err)
{
    int st = current(c, err);
    if (st)
        return st;
    CUresult rc = drv.EventSynchronize(e);
    return rc ? fail(err, rc, "cuEventSynchronize (an earlier launch or copy may "
                     "have failed)") : JOPT_OK;
}

int rt_cuda_elapsed(rt_cuda *c, rt_cuevent a, rt_cuevent b, float *ms, char *err)
{
    int st = rt_cuda_event_sync(c, b, err);
    if (st)
        return st;
    CUresult rc = drv.EventElapsedTime(ms, a, b);
    return rc ? fail(err, rc, "cuEventElapsedTime") : JOPT_OK;
}
