/*
 * dropin.h - calls for bindings that drive jopt from another framework's
 * training loop (python/jopt/torch.py).  A prototype: these declarations
 * are proposed for jopt.h (docs/notes/dropin-speed.md says why, with the
 * measurements); until then bindings reach them through the shared
 * library's exported symbols.
 */
#ifndef JOPT_DROPIN_H
#define JOPT_DROPIN_H

#include "jopt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Replaces every parameter's gradient buffer at once: grads[k] is the k-th
 * parameter counting through the groups in order (group 0's parameters,
 * then group 1's, ...); NULL marks a gradient absent.  n must be the
 * number of parameters.  The buffers are checked as jopt_set_grad checks
 * one (4-byte aligned, no two buffers of the optimizer overlapping), but
 * once for all of them: a framework whose autograd hands out new gradient
 * tensors at every backward would otherwise pay one whole check per
 * parameter per step.  On failure nothing changes. */
JOPT_API int jopt_set_grads(jopt_optim *opt, float *const *grads, size_t n);

/* Runs `task` over [0, ntasks): task(arg, lo, hi) for disjoint ranges that
 * together cover it, on any threads; returns when every call has
 * returned. */
typedef void (*jopt_task_fn)(void *arg, size_t lo, size_t hi);
typedef void (*jopt_parallel_fn)(void *user, size_t ntasks, jopt_task_fn task,
                                 void *arg);

/* step() (and the closure optimizers' vector kernels) hand their tasks to
 * `run` instead of jopt's own thread pool: another program's pool, such
 * as the OpenMP team torch's intra-op work runs on, whose threads are
 * awake and hold the cores right after torch's own work.  NULL goes back
 * to jopt's pool.  The results are the same bits either way.  Steps too
 * small to share (jopt_ctx_set_threads) still run on the caller alone.
 * With a runner jopt keeps no threads of its own (jopt_ctx_threads reads
 * 1) and the runner decides how many threads work; a later
 * jopt_ctx_set_threads goes back to jopt's own pool of that many. */
JOPT_API int jopt_ctx_set_parallel(jopt_ctx *ctx, jopt_parallel_fn run,
                                   void *user);

/* A runner over the OpenMP runtime library's ABI (GCC's libgomp; LLVM's
 * libomp and Intel's libiomp5 export the same entry points), for
 * jopt_ctx_set_parallel with `user` pointing to this struct, which must
 * outlive its use.  Fill it with the functions of the OpenMP library the
 * program's other work uses (torch: the libgomp it loaded), so that the
 * tasks run on that library's thread team.  The tasks are cut into one
 * contiguous share per thread, over min(max_threads(), ntasks) threads
 * (max_threads NULL: the runtime's default team). */
typedef struct jopt_openmp {
    void (*parallel)(void (*fn)(void *), void *data, unsigned nthreads,
                     unsigned flags);      /* GOMP_parallel */
    int (*thread_num)(void);               /* omp_get_thread_num */
    int (*num_threads)(void);              /* omp_get_num_threads */
    int (*max_threads)(void);              /* omp_get_max_threads, or NULL */
} jopt_openmp;
JOPT_API void jopt_parallel_openmp(void *user, size_t ntasks, jopt_task_fn task,
                                   void *arg);

/* Writes the checksum that ends a checkpoint (docs/checkpoint.md: FNV-1a
 * 64 of every byte before it) into its last 8 bytes, for a program that
 * writes the documented format itself (jopt.torch, converting a
 * torch.optim state dict); jopt_state_load_mem then checks all the rest.
 * JOPT_EINVAL if buf is NULL or len < 16. */
JOPT_API int jopt_state_seal(void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* JOPT_DROPIN_H */
