/*
 * fake_cuda.c - a stand-in libcuda.so.1 for machines without a GPU: the
 * entry points runtime/cuda.c loads, by their exported names, with host
 * memory as device memory.  Modules of jopt's "sim" kernels
 * (JOPT_CUDA_ARCH=sim: host LLVM IR, emit_nvptx.c) are JIT-compiled with
 * LLVM and launched for real: blocks one after another, each block's
 * threads as coroutines (ucontext) that switch at the barrier.  So the
 * runtime's whole GPU path (records, chunk tables, host and device values,
 * group sums, launch order) runs in CI, and the tests compare it with the
 * CPU bit for bit.  PTX cannot run here: loading it fails with
 * CUDA_ERROR_INVALID_PTX and a log, as a driver's JIT error does.
 *
 * Environment: FAKE_CUDA_DEVICES (default 1; 0: cuInit fails as a driver
 * without a GPU does), FAKE_CUDA_ALLOC_FAIL=n (the n-th allocation from
 * now on fails with CUDA_ERROR_OUT_OF_MEMORY), FAKE_CUDA_LAUNCH_FAIL=1
 * (launches fail).  Single-threaded, as jopt's tests are.
 */
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/IRReader.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#define API __attribute__((visibility("default")))
#define MAX_THREADS 1024
#define STACK (256 * 1024)

typedef int CUresult;
enum {
    OK = 0, E_INVALID_VALUE = 1, E_OUT_OF_MEMORY = 2, E_NO_DEVICE = 100,
    E_INVALID_DEVICE = 101, E_INVALID_CONTEXT = 201, E_INVALID_PTX = 218,
    E_NOT_FOUND = 500, E_LAUNCH_OUT_OF_RESOURCES = 701
};

static int env_int(const char *name, int dflt)
{
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

static int devices(void) { return env_int("FAKE_CUDA_DEVICES", 1); }

API CUresult cuInit(unsigned flags) { return flags ? E_INVALID_VALUE : devices() ? OK : E_NO_DEVICE; }
API CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }

API CUresult cuGetErrorName(CUresult rc, const char **s)
{
    *s = rc == E_OUT_OF_MEMORY ? "CUDA_ERROR_OUT_OF_MEMORY"
       : rc == E_NO_DEVICE ? "CUDA_ERROR_NO_DEVICE"
       : rc == E_INVALID_VALUE ? "CUDA_ERROR_INVALID_VALUE"
       : rc == E_INVALID_PTX ? "CUDA_ERROR_INVALID_PTX"
       : rc == E_NOT_FOUND ? "CUDA_ERROR_NOT_FOUND"
       : rc == E_LAUNCH_OUT_OF_RESOURCES ? "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"
       : "CUDA_ERROR_UNKNOWN";
    return OK;
}

API CUresult cuGetErrorString(CUresult rc, const char **s)
{
    *s = rc == E_OUT_OF_MEMORY ? "out of memory"
       : rc == E_NO_DEVICE ? "no CUDA-capable device is detected"
       : rc == E_INVALID_VALUE ? "invalid argument"
       : rc == E_INVALID_PTX ? "a PTX JIT compilation failed"
       : rc == E_NOT_FOUND ? "named symbol not found"
       : rc == E_LAUNCH_OUT_OF_RESOURCES ? "too many resources requested for launch"
       : "unknown error";
    return OK;
}

API CUresult cuDeviceGetCount(int *n) { *n = devices(); return OK; }
API CUresult cuDeviceGet(int *d, int i) { *d = i; return i < devices() ? OK : E_INVALID_DEVICE; }

API CUresult cuDeviceGetName(char *name, int len, int d)
{
    snprintf(name, (size_t)len, "Fake GPU %d (jopt's tests)", d);
    return OK;
}

API CUresult cuDeviceGetAttribute(int *v, int attr, int d)
{
    (void)d;
    *v = attr == 75 ? 9 : attr == 76 ? 0 : attr == 16 ? 4 : 0;
    return OK;
}

static int ctx_token;
API CUresult cuDevicePrimaryCtxRetain(void **ctx, int d) { (void)d; *ctx = &ctx_token; return OK; }
API CUresult cuDevicePrimaryCtxRelease_v2(int d) { (void)d; return OK; }
API CUresult cuCtxSetCurrent(void *ctx) { return ctx == &ctx_token ? OK : E_INVALID_CONTEXT; }

/* ---- memory: the blocks handed out, so pointer queries can answer ------- */

typedef struct block {
    uintptr_t base;
    size_t n;
    struct block *next;
} block;
static block *blocks;
static long allocs;

static int alloc_fails(void)
{
    int n = env_int("FAKE_CUDA_ALLOC_FAIL", 0);
    return n > 0 && ++allocs >= n;
}

API CUresult cuMemAlloc_v2(uint64_t *p, size_t n)
{
    if (n > ((size_t)1 << 40) || alloc_fails())
        return E_OUT_OF_MEMORY;
    block *b = malloc(sizeof *b);
    void *m = aligned_alloc(256, (n + 255) & ~(size_t)255);
    if (!b || !m) {
        free(b);
        free(m);
        return E_OUT_OF_MEMORY;
    }
    memset(m, 0xff, n); /* NaN: what a kernel reads unwritten shows */
    *b = (block){(uintptr_t)m, n, blocks};
    blocks = b;
    *p = (uint64_t)(uintptr_t)m;
    return OK;
}

API CUresult cuMemFree_v2(uint64_t p)
{
    for (block **b = &blocks; *b; b = &(*b)->next)
        if ((*b)->base == p) {
            block *x = *b;
            *b = x->next;
            free((void *)x->base);
            free(x);
            return OK;
        }
    return E_INVALID_VALUE;
}

API CUresult cuMemAllocHost_v2(void **p, size_t n)
{
    if (alloc_fails())
        return E_OUT_OF_MEMORY;
    *p = malloc(n ? n : 1);
    return *p ? OK : E_OUT_OF_MEMORY;
}

API CUresult cuMemFreeHost(void *p) { free(p); return OK; }

API CUresult cuPointerGetAttribute(void *data, int attr, uint64_t p)
{
    for (block *b = blocks; b; b = b->next)
        if (p >= b->base && p < b->base + (b->n ? b->n : 1)) {
            if (attr == 2) /* CU_POINTER_ATTRIBUTE_MEMORY_TYPE: device */
                *(unsigned *)data = 2;
            else if (attr == 9) /* CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL */
                *(int *)data = 0;
            else
                return E_INVALID_VALUE;
            return OK;
        }
    return E_INVALID_VALUE; /* host memory the driver does not know */
}

API CUresult cuMemcpyHtoDAsync_v2(uint64_t d, const void *s, size_t n, void *st)
{
    (void)st;
    memcpy((void *)(uintptr_t)d, s, n);
    return OK;
}

API CUresult cuMemcpyDtoHAsync_v2(void *d, uint64_t s, size_t n, void *st)
{
    (void)st;
    memcpy(d, (const void *)(uintptr_t)s, n);
    return OK;
}

API CUresult cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t s, size_t n, void *st)
{
    (void)st;
    memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, n);
    return OK;
}

API CUresult cuMemsetD32Async(uint64_t d, unsigned v, size_t n, void *st)
{
    (void)st;
    uint32_t *p = (uint32_t *)(uintptr_t)d;
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return OK;
}

/* ---- modules: sim IR through LLJIT ---------------------------------------- */

typedef struct function {
    uintptr_t addr;
} function;

typedef struct module {
    LLVMOrcLLJITRef jit;
    function fn[64]; /* handed out by cuModuleGetFunction */
    int nfn;
} module;

static void put_log(unsigned n, int *opts, void **vals, const char *text)
{
    for (unsigned i = 0; i < n; i++)
        if (opts[i] == 5) /* CU_JIT_ERROR_LOG_BUFFER */
            for (unsigned j = 0; j < n; j++)
                if (opts[j] == 6) /* its size */
                    snprintf(vals[i], (size_t)(uintptr_t)vals[j], "%s", text);
}

API CUresult cuModuleLoadDataEx(void **out, const void *image, unsigned n, int *opts,
                                void **vals)
{
    static const char sim[] = "; jopt-sim\n";
    const char *text = image;
    if (strncmp(text, sim, sizeof sim - 1)) {
        put_log(n, opts, vals, "fake CUDA driver: it runs jopt's \"sim\" kernels "
                               "(JOPT_CUDA_ARCH=sim), not PTX");
        return E_INVALID_PTX;
    }
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRangeCopy(text, strlen(text), "sim");
    LLVMModuleRef mod;
    char *msg = NULL;
    if (LLVMParseIRInContext(ctx, buf, &mod, &msg)) {
        put_log(n, opts, vals, msg ? msg : "bad IR");
        LLVMDisposeMessage(msg);
        LLVMOrcDisposeThreadSafeContext(tsc);
        return E_INVALID_PTX;
    }
    module *m = calloc(1, sizeof *m);
    LLVMErrorRef e = LLVMOrcCreateLLJIT(&m->jit, NULL);
    if (!e)
        e = LLVMOrcLLJITAddLLVMIRModule(m->jit, LLVMOrcLLJITGetMainJITDylib(m->jit),
                                        LLVMOrcCreateNewThreadSafeModule(mod, tsc));
    LLVMOrcDisposeThreadSafeContext(tsc);
    if (e) {
        char *em = LLVMGetErrorMessage(e);
        put_log(n, opts, vals, em);
        LLVMDisposeErrorMessage(em);
        free(m);
        return E_INVALID_PTX;
    }
    *out = m;
    return OK;
}

API CUresult cuModuleUnload(void *p)
{
    module *m = p;
    if (m->jit)
        LLVMOrcDisposeLLJIT(m->jit);
    free(m);
    return OK;
}

API CUresult cuModuleGetFunction(void **f, void *p, const char *name)
{
    module *m = p;
    LLVMOrcExecutorAddress addr;
    LLVMErrorRef e = LLVMOrcLLJITLookup(m->jit, &addr, name);
    if (e) {
        LLVMConsumeError(e);
        return E_NOT_FOUND;
    }
    if (m->nfn == 64)
        return E_OUT_OF_MEMORY;
    function *fn = &m->fn[m->nfn++]; /* as long as the module */
    fn->addr = (uintptr_t)addr;
    *f = fn;
    return OK;
}

API CUresult cuFuncGetAttribute(int *v, int attr, void *f)
{
    (void)f, (void)attr;
    *v = 0;
    return OK;
}

/* ---- launches: blocks in order, threads as coroutines --------------------- */

/* the context every sim kernel takes last (emit_nvptx.c's sreg, barrier) */
typedef struct sim_ctx {
    int32_t tid, ctaid, nctaid, pad;
    void (*barrier)(struct sim_ctx *);
} sim_ctx;

typedef void (*sim_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                       sim_ctx *);

enum { RUN, WAIT, DONE };

static struct {
    ucontext_t sched, th[MAX_THREADS];
    char *stacks;
    int state[MAX_THREADS];
    sim_ctx ctx[MAX_THREADS];
    int cur;
    sim_fn fn;
    uint64_t args[6];
} S;

static void sim_barrier(sim_ctx *c)
{
    S.state[c->tid] = WAIT;
    swapcontext(&S.th[c->tid], &S.sched);
}

static void thread_main(void)
{
    int t = S.cur;
    S.fn(S.args[0], S.args[1], S.args[2], S.args[3], S.args[4], S.args[5], &S.ctx[t]);
    S.state[t] = DONE; /* then uc_link: back to the scheduler */
}

/* thread t of block b as a coroutine that starts at thread_main */
static __attribute__((noinline)) void new_thread(volatile unsigned t, unsigned b, unsigned gx)
{
    S.ctx[t] = (sim_ctx){(int32_t)t, (int32_t)b, (int32_t)gx, 0, sim_barrier};
    getcontext(&S.th[t]);
    S.th[t].uc_stack.ss_sp = S.stacks + (size_t)t * STACK;
    S.th[t].uc_stack.ss_size = STACK;
    S.th[t].uc_link = &S.sched;
    makecontext(&S.th[t], thread_main, 0);
    S.state[t] = RUN;
}

API CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                            unsigned by, unsigned bz, unsigned smem, void *s, void **args,
                            void **extra)
{
    (void)smem, (void)s, (void)extra;
    if (env_int("FAKE_CUDA_LAUNCH_FAIL", 0))
        return E_LAUNCH_OUT_OF_RESOURCES;
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || bx > MAX_THREADS || !bx)
        return E_INVALID_VALUE;
    if (!S.stacks && !(S.stacks = malloc((size_t)MAX_THREADS * STACK)))
        return E_OUT_OF_MEMORY;
    S.fn = (sim_fn)((function *)f)->addr;
    for (int i = 0; i < 6; i++) /* jopt passes six, NULL past its kernel's */
        S.args[i] = args[i] ? *(const uint64_t *)args[i] : 0;
    for (unsigned b = 0; b < gx; b++) {
        for (unsigned t = 0; t < bx; t++)
            new_thread(t, b, gx);
        /* round after round: each thread runs to its next barrier or end */
        for (int busy = 1; busy;) {
            busy = 0;
            for (unsigned t = 0; t < bx; t++) {
                if (S.state[t] == DONE)
                    continue;
                S.state[t] = RUN;
                S.cur = (int)t;
                swapcontext(&S.sched, &S.th[t]);
                busy |= S.state[t] != DONE;
            }
        }
    }
    return OK;
}

/* ---- streams and events: everything has run by the time a call returns ---- */

static int stream_token, event_token;
API CUresult cuStreamCreate(void **s, unsigned flags) { (void)flags; *s = &stream_token; return OK; }
API CUresult cuStreamDestroy_v2(void *s) { (void)s; return OK; }
API CUresult cuStreamSynchronize(void *s) { (void)s; return OK; }
API CUresult cuStreamWaitEvent(void *s, void *e, unsigned f) { (void)s, (void)e, (void)f; return OK; }
API CUresult cuEventCreate(void **e, unsigned flags) { (void)flags; *e = &event_token; return OK; }
API CUresult cuEventDestroy_v2(void *e) { (void)e; return OK; }
API CUresult cuEventRecord(void *e, void *s) { (void)e, (void)s; return OK; }
API CUresult cuEventSynchronize(void *e) { (void)e; return OK; }
API CUresult cuEventElapsedTime(float *ms, void *a, void *b) { (void)a, (void)b; *ms = 1.0f; return OK; }

/* the synchronous copies a program of the user's (tests, benchmarks) uses */
API CUresult cuMemcpyHtoD_v2(uint64_t d, const void *s, size_t n) { return cuMemcpyHtoDAsync_v2(d, s, n, NULL); }
API CUresult cuMemcpyDtoH_v2(void *d, uint64_t s, size_t n) { return cuMemcpyDtoHAsync_v2(d, s, n, NULL); }
