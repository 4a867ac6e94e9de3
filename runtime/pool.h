/*
 * pool.h - the runtime's thread pool (see pool.c).
 */
#ifndef RT_POOL_H
#define RT_POOL_H

#include <stddef.h>

typedef struct rt_pool rt_pool;
/* runs tasks [lo, hi) */
typedef void (*rt_task_fn)(void *arg, size_t lo, size_t hi);

/* nthreads counts the caller: 1 makes a pool with no workers.  0 on
 * success, -1 if nothing could be allocated. */
int rt_pool_new(int nthreads, rt_pool **out);
void rt_pool_free(rt_pool *p); /* NULL is a no-op */
int rt_pool_threads(const rt_pool *p);
int rt_pool_default_threads(void); /* the cores online */

/* Splits [0, ntasks) into one contiguous share per thread, the same
 * split for the same counts, calls fn(arg, lo, hi) for each share on the
 * caller and the workers, and returns when all are done; with `flush`, subnormals are flushed to zero
 * (FTZ/DAZ) on every thread for the run.  p may be NULL (caller only). */
void rt_pool_run(rt_pool *p, size_t ntasks, rt_task_fn fn, void *arg,
                 int flush);

/* The same run on another program's pool (jopt_ctx_set_parallel):
 * run(user, ntasks, task, arg) with `flush` applied on each thread a task
 * lands on; under 2 tasks, on the caller.  The split is the runner's. */
typedef void (*rt_runner_fn)(void *user, size_t ntasks,
                             void (*task)(void *arg, size_t lo, size_t hi),
                             void *arg);
void rt_pool_run_external(rt_runner_fn run, void *user, size_t ntasks,
                          rt_task_fn fn, void *arg, int flush);

#endif /* RT_POOL_H */
