/*
 * membw.c - the roof the kernels are held against: a memory-only loop that
 * reads and writes exactly the arrays an optimizer's update reads and writes
 * (Adam: reads p, g, m, v and writes p, m, v), as jopt_spec_kernel reports
 * them.  A STREAM triad (2 reads, 1 write) would undercount that pattern.
 * Also the bench's clock, data and its own small thread pool, which the
 * memory-only and hand-written loops use for their 2-thread runs.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

double b_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

float *b_alloc(int64_t n)
{
    size_t bytes = ((size_t)(n > 0 ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *x = aligned_alloc(64, bytes);
    if (x)
        memset(x, 0, bytes); /* touch every page now, not while timing */
    return x;
}

void b_fill(float *x, int64_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = i % 31 == 7 ? 0.0f
                           : (float)((double)(s >> 40) / (double)(1ull << 23) - 1.0);
    }
}

/* ---- thread pool ---------------------------------------------------------- */

#define POOL_MAX 64

struct b_pool {
    pthread_t th[POOL_MAX];
    int nworkers;
    pthread_mutex_t lock;
    pthread_cond_t go, done;
    unsigned long gen;
    int pending, quit, nth;
    b_pool_fn fn;
    void *arg;
};

typedef struct worker_arg {
    b_pool *p;
    int id;
} worker_arg;

static worker_arg worker_args[POOL_MAX];

static void *worker(void *v)
{
    worker_arg *w = v;
    b_pool *p = w->p;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && p->gen == seen)
            pthread_cond_wait(&p->go, &p->lock);
        if (p->quit)
            break;
        seen = p->gen;
        int nth = p->nth;
        b_pool_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->lock);
        if (w->id < nth)
            fn(arg, w->id, nth);
        pthread_mutex_lock(&p->lock);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

b_pool *b_pool_new(int nthreads)
{
    b_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    int want = nthreads - 1 < POOL_MAX ? nthreads - 1 : POOL_MAX - 1;
    for (int i = 0; i < want; i++) {
        worker_args[i + 1] = (worker_arg){p, i + 1};
        if (pthread_create(&p->th[i], NULL, worker, &worker_args[i + 1]))
            break;
        p->nworkers = i + 1;
    }
    return p;
}

void b_pool_free(b_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

void b_pool_run(b_pool *p, int nthreads, b_pool_fn fn, void *arg)
{
    if (nthreads > p->nworkers + 1)
        nthreads = p->nworkers + 1;
    if (nthreads <= 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->nth = nthreads;
    p->pending = p->nworkers;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->lock);
    fn(arg, 0, nthreads);
    pthread_mutex_lock(&p->lock);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

void b_split(int64_t n, int t, int nt, int64_t *lo, int64_t *hi)
{
    int64_t chunk = ((n + nt - 1) / nt + 15) & ~(int64_t)15;
    *lo = (int64_t)t * chunk < n ? (int64_t)t * chunk : n;
    *hi = t == nt - 1 ? n : (*lo + chunk < n ? *lo + chunk : n);
}

/* ---- access pattern ------------------------------------------------------- */

int b_pattern_of(jopt_spec *spec, b_pattern *pat)
{
    jopt_kernel_info k;
    memset(pat, 0, sizeof *pat);
    if (jopt_spec_method(spec) || jopt_spec_kernel(spec, 0, &k) ||
        k.narrays > B_MAX_SLOTS || k.npasses > 16)
        return -1;
    pat->nslots = k.narrays;
    pat->passes = k.npasses;
    /* the arrays live per-element code loads (LLVM drops the rest), pass by
     * pass; a state of one value per tensor, row or column is not streamed */
    uint64_t streamed = ~(k.scalar | k.axis);
    for (int p = 0; p < k.npasses; p++) {
        pat->pass_read[p] = k.pass_read[p] & streamed;
        pat->pass_written[p] = k.pass_written[p] & streamed;
        for (int a = 0; a < k.narrays; a++) {
            pat->read[a] |= pat->pass_read[p] >> a & 1;
            pat->written[a] |= pat->pass_written[p] >> a & 1;
            pat->reads += pat->pass_read[p] >> a & 1;
            pat->writes += pat->pass_written[p] >> a & 1;
        }
    }
    return 0;
}

double b_pattern_bytes(const b_pattern *pat)
{
    return 4.0 * (pat->reads + pat->writes);
}

const char *b_pattern_text(const b_pattern *pat, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    for (int p = 0; p < pat->passes && at < len; p++) {
        int r = __builtin_popcountll(pat->pass_read[p]);
        int w = __builtin_popcountll(pat->pass_written[p]);
        at += (size_t)snprintf(buf + at, len - at, "%s%dR/%dW", p ? " + " : "", r, w);
    }
    return buf;
}

/* ---- the memory-only loops ------------------------------------------------- */

/* `c` is 0 at run time, which the compiler cannot know: every written value
 * is what was there (x + 0), yet each element is loaded and stored. */
static volatile float zero_at_run_time = 0.0f;

/* where a pass that only reads (it takes sums) leaves its result; atomic,
 * as both threads of a 2-thread pass store to it */
static _Atomic float sink;

enum { MAX_RO = 4, MAX_RW = 6, MAX_WO = 2 };

/* One loop over the elements touching every array at each element, as the
 * JIT's fused loop does: nro arrays read only, nrw read and written, nwo
 * written only.  Streaming the arrays one block at a time instead (an
 * earlier version, for the patterns the fixed loops did not cover) is a
 * different pattern: DRAM sees long runs of one array rather than all of
 * them at once, and on this VM that ran from 0.8x to 1.5x the fused
 * pattern's speed depending on where the arrays' pages fell, so it was no
 * roof for a fused kernel.  Instantiated with constant counts (below), each
 * copy vectorizes like a hand-written loop with restrict pointers. */
static inline __attribute__((always_inline)) float
element(int nro, const float *const *ro, int nrw, float *const *rw, int nwo,
        float *const *wo, int64_t i, float c)
{
    float s = 0.0f;
    for (int k = 0; k < nro; k++)
        s += c * ro[k][i];
    for (int k = 0; k < nrw; k++)
        rw[k][i] += s;
    for (int k = 0; k < nwo; k++)
        wo[k][i] = s;
    return s;
}

static inline __attribute__((always_inline)) void
fused(int nro, int nrw, int nwo, float *const *ro_in, float *const *rw_in,
      float *const *wo_in, int64_t lo, int64_t hi, float c)
{
    const float *ro[MAX_RO];
    float *rw[MAX_RW], *wo[MAX_WO];
    for (int k = 0; k < nro; k++)
        ro[k] = ro_in[k];
    for (int k = 0; k < nrw; k++)
        rw[k] = rw_in[k];
    for (int k = 0; k < nwo; k++)
        wo[k] = wo_in[k];
    float acc[16] = {0}; /* a pass that only reads: 16 lanes of sums */
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16) {
#pragma GCC ivdep
        for (int j = 0; j < 16; j++)
            acc[j] += element(nro, ro, nrw, rw, nwo, wo, i + j, c);
    }
    for (; i < hi; i++)
        acc[0] += element(nro, ro, nrw, rw, nwo, wo, i, c);
    if (nrw + nwo == 0) {
        float t = 0.0f;
        for (int j = 0; j < 16; j++)
            t += acc[j];
        sink = t;
    }
}

/* a pattern beyond the instantiated counts: blocks of 1024 elements, each
 * array streamed in turn (see fused() for why this is only a fallback) */
static void blocked(const b_pattern *pat, float *const *x, int64_t lo,
                    int64_t hi, float c)
{
    int writes = 0;
    for (int k = 0; k < pat->nslots; k++)
        writes += pat->written[k];
    float s[1024], acc = 0;
    for (int64_t b = lo; b < hi; b += 1024) {
        int m = hi - b < 1024 ? (int)(hi - b) : 1024;
        for (int j = 0; j < m; j++)
            s[j] = 0.0f;
        for (int k = 0; k < pat->nslots; k++)
            if (pat->read[k] && !pat->written[k])
                for (int j = 0; j < m; j++)
                    s[j] += c * x[k][b + j];
        for (int k = 0; k < pat->nslots; k++) {
            if (!pat->written[k])
                continue;
            float *y = x[k] + b;
            if (pat->read[k])
                for (int j = 0; j < m; j++)
                    y[j] += s[j];
            else
                for (int j = 0; j < m; j++)
                    y[j] = s[j];
        }
        for (int j = 0; !writes && j < m; j++)
            acc += s[j];
    }
    if (!writes)
        sink = acc;
}

static void one_pass(const b_pattern *pat, float *const *arrays, int64_t lo,
                     int64_t hi);

/* the counts fused() is instantiated for (one_pass's switch) */
static int instantiated(int nro, int nrw, int nwo)
{
    return nro <= MAX_RO && nrw <= MAX_RW && nwo <= MAX_WO;
}

int b_membw_fused(const b_pattern *pat)
{
    for (int p = 0; p < pat->passes; p++) {
        int nro = 0, nrw = 0, nwo = 0;
        for (int a = 0; a < pat->nslots; a++) {
            int r = pat->pass_read[p] >> a & 1, w = pat->pass_written[p] >> a & 1;
            nro += r && !w;
            nrw += r && w;
            nwo += w && !r;
        }
        if (!instantiated(nro, nrw, nwo))
            return 0;
    }
    return 1;
}

void b_membw(const b_pattern *pat, float *const *arrays, int64_t lo, int64_t hi)
{
    for (int p = 0; p < pat->passes; p++) {
        b_pattern one = {.nslots = pat->nslots, .passes = 1};
        for (int a = 0; a < pat->nslots; a++) {
            one.read[a] = pat->pass_read[p] >> a & 1;
            one.written[a] = pat->pass_written[p] >> a & 1;
        }
        one_pass(&one, arrays, lo, hi);
    }
}

#define CASE_WO(r, w, o)                                                     \
    case (r) * 100 + (w) * 10 + (o):                                         \
        fused(r, w, o, ro, rw, wo, lo, hi, c);                               \
        return;
#define CASE_RW(r, w) CASE_WO(r, w, 0) CASE_WO(r, w, 1) CASE_WO(r, w, 2)
#define CASE_RO(r)                                                           \
    CASE_RW(r, 0) CASE_RW(r, 1) CASE_RW(r, 2) CASE_RW(r, 3) CASE_RW(r, 4)    \
    CASE_RW(r, 5) CASE_RW(r, 6)

static void one_pass(const b_pattern *pat, float *const *arrays, int64_t lo,
                     int64_t hi)
{
    float c = zero_at_run_time;
    float *ro[B_MAX_SLOTS], *rw[B_MAX_SLOTS], *wo[B_MAX_SLOTS];
    int nro = 0, nrw = 0, nwo = 0;
    for (int k = 0; k < pat->nslots; k++) {
        if (pat->read[k] && pat->written[k])
            rw[nrw++] = arrays[k];
        else if (pat->read[k])
            ro[nro++] = arrays[k];
        else if (pat->written[k])
            wo[nwo++] = arrays[k];
    }
    if (instantiated(nro, nrw, nwo))
        switch (nro * 100 + nrw * 10 + nwo) {
            CASE_RO(0)
            CASE_RO(1)
            CASE_RO(2)
            CASE_RO(3)
            CASE_RO(4)
        }
    blocked(pat, arrays, lo, hi, c);
}
