/*
 * pool.c - a persistent thread pool for step(): the caller and n-1 workers
 * take tasks from a shared counter until none are left.
 *
 * Which thread runs a task never changes a result: tasks write disjoint
 * elements, and partial sums are kept per task and combined in task order
 * by the caller.  Flushing subnormals (FTZ/DAZ) is a per-thread CPU setting,
 * so it is applied on every worker for the run, and on the caller too,
 * restored after.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define HAVE_MXCSR 1
#endif

#include "cg_mem.h"
#include "pool.h"

typedef struct worker_arg {
    struct rt_pool *pool;
    int index;
} worker_arg;

struct rt_pool {
    pthread_t *threads;
    worker_arg *args;
    int nworkers;
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    _Atomic unsigned long generation; /* bumped for each run */
    _Atomic int quit;
    /* the current run */
    rt_task_fn fn;
    void *arg;
    size_t ntasks;
    _Atomic int active; /* workers still in the run */
    int flush;      /* FTZ/DAZ during the run */
};

#define MXCSR_FLUSH 0x8040u /* FTZ (bit 15) and DAZ (bit 6) */

static unsigned flush_on(int flush)
{
#ifdef HAVE_MXCSR
    unsigned old = _mm_getcsr();
    _mm_setcsr(flush ? old | MXCSR_FLUSH : old & ~MXCSR_FLUSH);
    return old;
#else
    (void)flush;
    return 0;
#endif
}

static void flush_restore(unsigned old)
{
#ifdef HAVE_MXCSR
    _mm_setcsr(old);
#else
    (void)old;
#endif
}

/* thread `who` of `of` runs its share: contiguous, fixed by the counts */
static void take_tasks(rt_pool *p, int who, int of)
{
    size_t lo = p->ntasks * (size_t)who / (size_t)of;
    size_t hi = p->ntasks * (size_t)(who + 1) / (size_t)of;
    if (lo < hi)
        p->fn(p->arg, lo, hi);
}

/* Waking a sleeping thread costs tens of microseconds on a VM, as much as
 * a whole step of a million elements: a thread that has just finished
 * spins this many pauses (~50 us) for the next run before it sleeps. */
#define SPIN 2000

static void cpu_relax(void)
{
#ifdef HAVE_MXCSR
    _mm_pause();
#endif
}

static void *worker(void *arg)
{
    worker_arg *wa = arg;
    rt_pool *p = wa->pool;
    unsigned long seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN && !p->quit && p->generation == seen; i++)
            cpu_relax();
        pthread_mutex_lock(&p->lock);
        while (!p->quit && p->generation == seen)
            pthread_cond_wait(&p->start, &p->lock);
        if (p->quit) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        seen = p->generation;
        int flush = p->flush;
        pthread_mutex_unlock(&p->lock);
        unsigned old = flush_on(flush);
        take_tasks(p, wa->index, p->nworkers + 1);
        flush_restore(old);
        pthread_mutex_lock(&p->lock);
        if (--p->active == 0)
            pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->lock);
    }
    return NULL;
}

int rt_pool_default_threads(void)
{
    /* sysconf reads /sys each time (tens of microseconds): once is enough */
    static _Atomic int cores;
    if (!cores) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cores = n < 1 ? 1 : n > 256 ? 256 : (int)n;
    }
    return cores;
}

int rt_pool_new(int nthreads, rt_pool **out)
{
    rt_pool *p = cg_calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->nworkers = nthreads > 1 ? nthreads - 1 : 0;
    p->threads = cg_calloc((size_t)p->nworkers + 1, sizeof *p->threads);
    p->args = cg_calloc((size_t)p->nworkers + 1, sizeof *p->args);
    if (!p->threads || !p->args || pthread_mutex_init(&p->lock, NULL)) {
        cg_free(p->threads);
        cg_free(p->args);
        cg_free(p);
        return -1;
    }
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < p->nworkers; i++) {
        p->args[i] = (worker_arg){p, i};
        if (pthread_create(&p->threads[i], NULL, worker, &p->args[i])) {
            p->nworkers = i; /* run with the threads we have */
            break;
        }
    }
    *out = p;
    return 0;
}

void rt_pool_free(rt_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    cg_free(p->threads);
    cg_free(p->args);
    cg_free(p);
}

int rt_pool_threads(const rt_pool *p)
{
    return p ? p->nworkers + 1 : 1;
}

/* a run handed to a runner: each call sets the FTZ/DAZ choice on the
 * thread it lands on, and restores that thread's after */
typedef struct ext_run {
    rt_task_fn fn;
    void *arg;
    int flush;
} ext_run;

static void ext_task(void *arg, size_t lo, size_t hi)
{
    const ext_run *r = arg;
    unsigned old = flush_on(r->flush);
    if (lo < hi)
        r->fn(r->arg, lo, hi);
    flush_restore(old);
}

void rt_pool_run_external(rt_runner_fn run, void *user, size_t ntasks,
                          rt_task_fn fn, void *arg, int flush)
{
    if (ntasks < 2) {
        rt_pool_run(NULL, ntasks, fn, arg, flush);
        return;
    }
    ext_run r = {fn, arg, flush};
    run(user, ntasks, ext_task, &r);
}

void rt_pool_run(rt_pool *p, size_t ntasks, rt_task_fn fn, void *arg,
                 int flush)
{
    unsigned old = flush_on(flush);
    if (!p || p->nworkers == 0 || ntasks < 2) {
        if (ntasks)
            fn(arg, 0, ntasks);
        flush_restore(old);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->ntasks = ntasks;
    p->flush = flush;
    p->active = p->nworkers;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    take_tasks(p, p->nworkers, p->nworkers + 1); /* the caller's share: last */
    for (int i = 0; i < SPIN && p->active > 0; i++)
        cpu_relax();
    pthread_mutex_lock(&p->lock);
    while (p->active > 0)
        pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
    flush_restore(old);
}
