/*
 * jopt.h - torch.optim for C programs, with JIT-compiled update kernels.
 *
 * An optimizer is built from a Lua spec (specs/<name>.lua or a path) over
 * parameter groups.  At construction each group's update rule is traced and
 * compiled by LLVM into one fused, vectorized loop specialised to the group's
 * hyperparameters.  This is the only header a user includes.
 *
 * Conventions: every function that can fail returns a jopt_status (JOPT_OK is
 * 0, errors are negative) and leaves a message readable with jopt_errmsg().
 * A call that fails changes nothing: the optimizer, its state and the user's
 * buffers stay as they were.  Parameter and gradient buffers are borrowed
 * (the caller keeps them alive and owns them); the optimizer owns its state.
 * A context and the optimizers made from it are used by one thread at a time.
 */
#ifndef JOPT_H
#define JOPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(JOPT_BUILDING) && defined(__GNUC__)
#define JOPT_API __attribute__((visibility("default")))
#else
#define JOPT_API
#endif

typedef enum jopt_status {
    JOPT_OK = 0,
    JOPT_EINVAL = -1,   /* bad argument: a NULL, an index, a buffer, a value */
    JOPT_ENOMEM = -2,   /* an allocation failed */
    JOPT_ESPEC = -3,    /* spec not found, malformed, or over a sandbox limit */
    JOPT_ECOMPILE = -4, /* LLVM could not build the kernel */
    JOPT_ECLOSURE = -5  /* the closure passed to jopt_step reported an error */
} jopt_status;

/* Static text naming a status ("JOPT_EINVAL: invalid argument"). */
JOPT_API const char *jopt_strerror(int status);

/* ---- Context: spec search path, kernel cache, JIT, last error ---------- */

typedef struct jopt_ctx jopt_ctx;

/* Creates a context.  Specs are looked up in $JOPT_SPEC_PATH (a ':'-separated
 * list of folders) if set, else in the specs folder jopt was built with.
 * Caller frees with jopt_ctx_free, after every optimizer made from it. */
JOPT_API int jopt_ctx_new(jopt_ctx **out);
JOPT_API void jopt_ctx_free(jopt_ctx *ctx); /* NULL is a no-op */

/* The message of the last failed call on this context or on an optimizer
 * made from it; "" if none.  Owned by the context, valid until next call. */
JOPT_API const char *jopt_errmsg(const jopt_ctx *ctx);

/* Replaces the spec search path (':'-separated folders).  Copied. */
JOPT_API int jopt_ctx_set_spec_path(jopt_ctx *ctx, const char *folders);

/* Which code runs the update: the JIT kernel (default) or the reference
 * interpreter, which evaluates the same graph element by element in plain C
 * and gives the same bits, slower.  Applies to optimizers made afterwards. */
typedef enum jopt_engine { JOPT_ENGINE_JIT = 0, JOPT_ENGINE_REFERENCE = 1 } jopt_engine;
JOPT_API int jopt_ctx_set_engine(jopt_ctx *ctx, jopt_engine engine);

/* Threads that step() uses (the caller included): 0, the default, is every
 * core.  Tensors are cut into ranges of 65,536 elements, shared among the
 * threads; a step of under 262,144 elements runs on the caller alone.  The
 * results are the same bits for any thread count.  A pool that cannot
 * start leaves steps on the caller's thread. */
JOPT_API int jopt_ctx_set_threads(jopt_ctx *ctx, int threads);
JOPT_API int jopt_ctx_threads(const jopt_ctx *ctx); /* in use now */

/* Flush subnormals to zero (FTZ/DAZ) while step() runs, on every thread,
 * restored after: subnormal inputs can make kernels ~2x slower.  This
 * changes results, so it is off unless asked for. */
JOPT_API int jopt_ctx_set_flush_denormals(jopt_ctx *ctx, int on);

/* Kernels compiled so far and cache hits (for tests and benchmarks). */
JOPT_API void jopt_ctx_stats(const jopt_ctx *ctx, size_t *compiles, size_t *cache_hits);

/* ---- Optimizer ---------------------------------------------------------- */

typedef struct jopt_optim jopt_optim;

/* One parameter tensor: float32, contiguous, `numel` elements.  `grad` may be
 * NULL: the parameter then has no gradient and is skipped by jopt_step, as a
 * torch parameter whose .grad is None.  A parameter of 0 elements takes no
 * steps and has no state.  No two buffers of an optimizer may overlap. */
typedef struct jopt_param {
    float *param;
    float *grad;
    int64_t numel;
} jopt_param;

/* A parameter group: its tensors and its own options, a string such as
 * "lr=1e-3 betas=0.9,0.999 amsgrad=true" (NULL or "" for none).  Options it
 * does not name fall back to the optimizer's defaults. */
typedef struct jopt_group {
    const jopt_param *params;
    size_t nparams;
    const char *options;
} jopt_group;

/* Builds an optimizer from the spec `spec` (a name looked up in the spec path,
 * or a path to a .lua file) over `ngroups` groups.  `defaults` overrides the
 * spec's defaults for every group ("lr=1e-2 momentum=0.9"; NULL for none).
 * Compiles each group's kernel.  The arrays are copied; the buffers they
 * point to are borrowed.  Caller frees *out with jopt_optim_free. */
JOPT_API int jopt_optim_new(jopt_ctx *ctx, const char *spec,
                            const jopt_group *groups, size_t ngroups,
                            const char *defaults, jopt_optim **out);
JOPT_API void jopt_optim_free(jopt_optim *opt); /* NULL is a no-op */

/* Sets every present gradient buffer to zero.  (The buffers are the user's,
 * so this is torch's zero_grad(set_to_none=False); use jopt_set_grad(NULL)
 * to mark a gradient absent.) */
JOPT_API int jopt_zero_grad(jopt_optim *opt);

/* A closure re-evaluates the model: zero the gradients, compute the loss and
 * the gradients, store the loss in *loss and return 0.  A non-zero return is
 * an error: jopt_step then fails with JOPT_ECLOSURE and changes nothing. */
typedef int (*jopt_closure)(void *user_data, double *loss);

/* One optimization step over every group.  With a closure, calls it first
 * and returns its loss in *loss (NULL to ignore); without one (NULL), *loss
 * is set to NaN.  A parameter takes a step only if its gradient is present;
 * its state is created at its first such step. */
JOPT_API int jopt_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                       double *loss);

/* Replaces the gradient buffer of parameter `index` of group `group`; NULL
 * marks the gradient absent.  Borrowed; must not overlap other buffers. */
JOPT_API int jopt_set_grad(jopt_optim *opt, size_t group, size_t index,
                           float *grad);

JOPT_API size_t jopt_group_count(const jopt_optim *opt);

/* Reads a group's hyperparameter.  `name` is an option name ("lr"), or an
 * element of a tuple option ("betas[1]", 0-based as in torch).  Booleans read
 * as 0 or 1. */
JOPT_API int jopt_option_get(const jopt_optim *opt, size_t group,
                             const char *name, double *value);

/* Changes a group's hyperparameters; they take effect at the next step.  The
 * new values are validated and the kernel re-specialised (or found in the
 * cache) before anything changes. */
JOPT_API int jopt_option_set(jopt_optim *opt, size_t group, const char *name,
                             double value);
JOPT_API int jopt_options_set(jopt_optim *opt, size_t group,
                              const char *options);

/* A parameter's state buffer `name` ("exp_avg"): `numel` floats, or one
 * float for a per-tensor scalar state (ASGD's "eta"); owned by the
 * optimizer and valid until the optimizer is freed; *data is NULL if the
 * state does not exist yet.  *step (if not NULL) gets the number of steps the
 * parameter has taken. */
JOPT_API int jopt_state_get(const jopt_optim *opt, size_t group, size_t index,
                            const char *name, const float **data,
                            int64_t *step);

#ifdef __cplusplus
}
#endif
#endif /* JOPT_H */
