/*
 * probe.c - counts allocations and math-library calls made while a probe is
 * on, to measure what jopt_step() does besides running kernels.
 *
 * The bench executable defines malloc & co. (forwarding to glibc's
 * __libc_* entry points) and the libm functions jopt's C code can reach
 * (forwarding to libm through dlsym), and exports them, so libjopt.so's
 * calls bind to them by ELF interposition and land here.  Code the JIT
 * emits cannot call these (bench_optim reads the kernels' machine code for
 * calls instead).  Under
 * AddressSanitizer, which owns malloc, the probe is off.
 */
#include <dlfcn.h>
#include <malloc.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#if defined(__SANITIZE_ADDRESS__)
#define B_NO_PROBE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define B_NO_PROBE 1
#endif
#endif

#ifdef B_NO_PROBE

int b_probe_available(void) { return 0; }
void b_probe_begin(void) {}
void b_probe_end(b_probe *out)
{
    memset(out, 0, sizeof *out);
    out->allocs = out->libm = out->lua_states = -1;
}

#else

static atomic_int probing;
static atomic_long n_alloc, n_libm, n_lua;
static atomic_uint libm_seen; /* a bit per function below */

int b_probe_available(void) { return 1; }

void b_probe_begin(void)
{
    atomic_store(&n_alloc, 0);
    atomic_store(&n_libm, 0);
    atomic_store(&n_lua, 0);
    atomic_store(&libm_seen, 0);
    atomic_store(&probing, 1);
}

/* ---- allocation ------------------------------------------------------------ */

void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
void __libc_free(void *);

#define COUNT_ALLOC()                                                          \
    do {                                                                       \
        if (atomic_load_explicit(&probing, memory_order_relaxed))              \
            atomic_fetch_add(&n_alloc, 1);                                     \
    } while (0)

void *malloc(size_t n)
{
    COUNT_ALLOC();
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    COUNT_ALLOC();
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    if (n) /* realloc(p, 0) frees */
        COUNT_ALLOC();
    return __libc_realloc(p, n);
}

void *aligned_alloc(size_t al, size_t n)
{
    COUNT_ALLOC();
    return __libc_memalign(al, n);
}

void *memalign(size_t al, size_t n)
{
    COUNT_ALLOC();
    return __libc_memalign(al, n);
}

int posix_memalign(void **out, size_t al, size_t n)
{
    COUNT_ALLOC();
    void *p = __libc_memalign(al, n);
    if (!p)
        return 12; /* ENOMEM */
    *out = p;
    return 0;
}

void free(void *p)
{
    __libc_free(p);
}

/* ---- libm ------------------------------------------------------------------ */

static const char *const libm_name[] = {"pow", "exp", "log", "fma", "sqrt",
                                        "powf", "expf", "logf", "fmaf", "sqrtf"};

static void *real(int k)
{
    static void *fn[10];
    void *f = __atomic_load_n(&fn[k], __ATOMIC_ACQUIRE);
    if (!f) {
        f = dlsym(RTLD_NEXT, libm_name[k]);
        __atomic_store_n(&fn[k], f, __ATOMIC_RELEASE);
    }
    return f;
}

static void count_libm(int k)
{
    if (atomic_load_explicit(&probing, memory_order_relaxed)) {
        atomic_fetch_add(&n_libm, 1);
        atomic_fetch_or(&libm_seen, 1u << k);
    }
}

typedef double (*d2)(double, double);
typedef double (*d1)(double);
typedef double (*d3)(double, double, double);
typedef float (*f2)(float, float);
typedef float (*f1)(float);
typedef float (*f3)(float, float, float);

double pow(double a, double b)
{
    count_libm(0);
    return ((d2)real(0))(a, b);
}
double exp(double a)
{
    count_libm(1);
    return ((d1)real(1))(a);
}
double log(double a)
{
    count_libm(2);
    return ((d1)real(2))(a);
}
double fma(double a, double b, double c)
{
    count_libm(3);
    return ((d3)real(3))(a, b, c);
}
double sqrt(double a)
{
    count_libm(4);
    return ((d1)real(4))(a);
}
float powf(float a, float b)
{
    count_libm(5);
    return ((f2)real(5))(a, b);
}
float expf(float a)
{
    count_libm(6);
    return ((f1)real(6))(a);
}
float logf(float a)
{
    count_libm(7);
    return ((f1)real(7))(a);
}
float fmaf(float a, float b, float c)
{
    count_libm(8);
    return ((f3)real(8))(a, b, c);
}
float sqrtf(float a)
{
    count_libm(9);
    return ((f1)real(9))(a);
}

/* ---- Lua ------------------------------------------------------------------- */

/* lua_newstate: each jopt sandbox is one Lua state */
void *lua_newstate(void *alloc, void *ud);
void *lua_newstate(void *alloc, void *ud)
{
    static void *fn;
    typedef void *(*newstate)(void *, void *);
    if (!fn)
        fn = dlsym(RTLD_NEXT, "lua_newstate");
    if (atomic_load_explicit(&probing, memory_order_relaxed))
        atomic_fetch_add(&n_lua, 1);
    return ((newstate)fn)(alloc, ud);
}

void b_probe_end(b_probe *out)
{
    atomic_store(&probing, 0);
    memset(out, 0, sizeof *out);
    out->lua_states = atomic_load(&n_lua);
    out->allocs = atomic_load(&n_alloc);
    out->libm = atomic_load(&n_libm);
    unsigned seen = atomic_load(&libm_seen);
    for (int k = 0; k < 10; k++)
        if (seen & (1u << k)) {
            size_t len = strlen(out->libm_names);
            snprintf(out->libm_names + len, sizeof out->libm_names - len, "%s%s",
                     len ? "," : "", libm_name[k]);
        }
}

#endif
