/*
 * jopt.h - torch.optim for C programs, with JIT-compiled update kernels.
 *
 * An optimizer is built from a Lua spec (specs/<name>.lua or a path) over
 * parameter groups.  At construction each group's update rule is traced and
 * compiled by LLVM into one fused, vectorized loop specialised to the group's
 * hyperparameters (closure optimizers such as L-BFGS: several vector kernels
 * driven by C, docs/closure.md).  This is the only header a user includes.
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
    JOPT_ECLOSURE = -5, /* the closure passed to jopt_step reported an error */
    JOPT_EDEVICE = -6   /* no GPU or CUDA driver, a driver error, or a spec
                           the GPU cannot run (docs/gpu.md) */
} jopt_status;

/* Static text naming a status ("JOPT_EINVAL: invalid argument"). */
JOPT_API const char *jopt_strerror(int status);

/* ---- Context: spec search path, kernel cache, JIT, last error ---------- */

typedef struct jopt_ctx jopt_ctx;

/* Creates a context.  Specs are looked up in $JOPT_SPEC_PATH (a ':'-separated
 * list of folders) if set, else in the specs folder jopt was built with.
 * Caller frees with jopt_ctx_free, after every optimizer, spec and kernel
 * made from it. */
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

/* Steps cut tensors into tasks of JOPT_TASK_ELEMS elements, and add each
 * task's sums and maxima in 16 lanes (element i of a task in lane i % 16,
 * in double, then the lanes in order), then the tasks in order: a fixed
 * order, whatever the thread count.  A step of under JOPT_PARALLEL_MIN
 * elements runs on the caller alone. */
#define JOPT_TASK_ELEMS 65536
#define JOPT_PARALLEL_MIN (16 * JOPT_TASK_ELEMS)

/* Threads that step() uses (the caller included): 0, the default, is every
 * core.  Tensors are cut into ranges of 65,536 elements, shared among the
 * threads; a step of under 1,048,576 elements runs on the caller alone,
 * since waking the pool costs tens of microseconds.  After a step the
 * pool's threads spin for about 50 us before they sleep, so back-to-back
 * steps find them awake.  The results are the same bits for any thread
 * count.  A pool that cannot start leaves steps on the caller's thread. */
JOPT_API int jopt_ctx_set_threads(jopt_ctx *ctx, int threads);
JOPT_API int jopt_ctx_threads(const jopt_ctx *ctx); /* in use now */

/* Flush subnormals to zero (FTZ/DAZ) while step() runs, on every thread,
 * restored after: subnormal inputs can make kernels ~2x slower.  This
 * changes results, so it is off unless asked for. */
JOPT_API int jopt_ctx_set_flush_denormals(jopt_ctx *ctx, int on);

/* Kernels compiled so far and cache hits (for tests and benchmarks). */
JOPT_API void jopt_ctx_stats(const jopt_ctx *ctx, size_t *compiles, size_t *cache_hits);

/* The spec search path, its folders separated by ':'.  Owned by the
 * context, valid until the path changes. */
JOPT_API const char *jopt_ctx_spec_path(const jopt_ctx *ctx);

/* ---- GPUs (docs/gpu.md) -------------------------------------------------- */

/* NVIDIA GPUs through the CUDA driver, which jopt loads when first asked
 * (dlopen of libcuda.so.1): building jopt needs no CUDA toolkit, and a
 * machine without a GPU gets JOPT_EDEVICE with the reason.  On a GPU the
 * same specs compile, through LLVM's NVPTX back end, to kernels that give
 * the CPU's bits: one launch per group and level for all its tensors. */

/* The number of CUDA devices the driver sees: 0 where there is no driver
 * or no GPU. */
JOPT_API int jopt_cuda_device_count(void);

/* Where optimizers made from now on live: "cpu" (the default), "cuda"
 * (device 0) or "cuda:N".  On a GPU, parameters, gradients and inputs are
 * device memory of that device (cudaMalloc, or torch CUDA tensors), state
 * is allocated there, and jopt_step, jopt_zero_grad and jopt_optim_call
 * enqueue their work on the optimizer's stream and return before it runs,
 * as torch's CUDA optimizers do.  JOPT_EDEVICE with the reason if there is
 * no such device. */
JOPT_API int jopt_ctx_set_device(jopt_ctx *ctx, const char *device);

/* ---- Optimizer ---------------------------------------------------------- */

typedef struct jopt_optim jopt_optim;

/* One parameter tensor: float32, contiguous, `numel` elements, seen as
 * flat unless jopt_set_shape gives it a shape.  `grad` may be
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

/* The device an optimizer lives on: "cpu" or "cuda:N" (static text). */
JOPT_API const char *jopt_optim_device(const jopt_optim *opt);

/* A GPU optimizer's CUDA stream (a CUstream or cudaStream_t, borrowed;
 * NULL, the default, is the legacy default stream): its steps, zero_grad
 * and named kernels are enqueued there, after whatever the stream holds.
 * JOPT_EINVAL on a CPU optimizer. */
JOPT_API int jopt_set_stream(jopt_optim *opt, void *stream);

/* Waits until the optimizer's stream has run everything enqueued; an
 * error of an earlier asynchronous step is reported here (JOPT_EDEVICE).
 * A no-op on the CPU. */
JOPT_API int jopt_synchronize(jopt_optim *opt);

/* Sets every present gradient buffer to zero.  (The buffers are the user's,
 * so this is torch's zero_grad(set_to_none=False); use jopt_set_grad(NULL)
 * to mark a gradient absent.) */
JOPT_API int jopt_zero_grad(jopt_optim *opt);

/* A closure re-evaluates the model: zero the gradients, compute the loss and
 * the gradients, store the loss in *loss and return 0.  A non-zero return is
 * an error: jopt_step then fails with JOPT_ECLOSURE and changes nothing.
 * L-BFGS and CG call it several times per step (docs/closure.md); from
 * inside it, stepping, loading or changing the options of the same
 * optimizer fails with JOPT_EINVAL, and freeing it is not allowed. */
typedef int (*jopt_closure)(void *user_data, double *loss);

/* One optimization step over every group.  With a closure, calls it first
 * and returns its loss in *loss (NULL to ignore); without one (NULL), *loss
 * is set to NaN.  A parameter takes a step only if its gradient is present;
 * its state is created at its first such step. */
JOPT_API int jopt_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                       double *loss);

/* Gives parameter `index` of `group` the spec's per-element input `name`
 * (one of its `inputs`, such as Sophia's "hessian": numel floats) for the
 * next step only; NULL, or not calling it, gives none, which the spec sees
 * as nil.  Borrowed until that step; must not overlap other buffers. */
JOPT_API int jopt_set_input(jopt_optim *opt, size_t group, size_t index,
                            const char *name, float *data);

/* Runs the spec's named kernel `kernel` (a function in its `kernels`,
 * such as Schedule-Free's "eval" and "train") once over every parameter
 * that has state, on every group: it may change the parameter and its
 * state, as the spec says.  It takes no step. */
JOPT_API int jopt_optim_call(jopt_optim *opt, const char *kernel);

/* Replaces the gradient buffer of parameter `index` of group `group`; NULL
 * marks the gradient absent.  Borrowed; must not overlap other buffers. */
JOPT_API int jopt_set_grad(jopt_optim *opt, size_t group, size_t index,
                           float *grad);

/* Gives parameter `index` of `group` a shape: `ndim` sizes (1 to 8), the
 * first outermost as torch's, whose product is its numel.  A spec may then
 * reduce over its last two axes or keep state per row or column
 * (Adafactor); other specs see the same flat elements.  Copied.  Before the
 * parameter's first step only (its state is made for its shape). */
JOPT_API int jopt_set_shape(jopt_optim *opt, size_t group, size_t index,
                            int ndim, const int64_t *shape);

JOPT_API size_t jopt_group_count(const jopt_optim *opt);

/* Reads a group's hyperparameter.  `name` is an option name ("lr"), or an
 * element of a tuple option ("betas[1]", 0-based as in torch).  Booleans read
 * as 0 or 1; a choice ("line_search_fn": none or strong_wolfe) as the index
 * of its name in the spec's list; an option left at None (CG's
 * max_eval; L-BFGS resolves its max_eval=None to max_iter*5//4 when it is
 * made, as torch's constructor does) as NaN. */
JOPT_API int jopt_option_get(const jopt_optim *opt, size_t group,
                             const char *name, double *value);

/* Changes a group's hyperparameters; they take effect at the next step.  The
 * new values are validated and the kernel re-specialised (or found in the
 * cache) before anything changes. */
JOPT_API int jopt_option_set(jopt_optim *opt, size_t group, const char *name,
                             double value);
JOPT_API int jopt_options_set(jopt_optim *opt, size_t group,
                              const char *options);

/* Hyperparameters are folded into the kernel as constants.  Those a spec
 * lists as `runtime` (lr, betas, eps in most shipped specs: values it uses
 * only in arithmetic) are instead passed to the kernel each step from the
 * first time they change, so a scheduled lr costs one compile, not one per
 * step.  jopt_option_runtime does that now, before any change; it fails
 * for a hyperparameter the spec does not list.  jopt_option_is_runtime
 * tells which way a value is passed (1: per step). */
JOPT_API int jopt_option_runtime(jopt_optim *opt, size_t group,
                                 const char *name);
JOPT_API int jopt_option_is_runtime(const jopt_optim *opt, size_t group,
                                    const char *name);

/* A parameter's state buffer `name` ("exp_avg"): `numel` floats, or one
 * float for a per-tensor scalar state (ASGD's "eta"); owned by the
 * optimizer and valid until the optimizer is freed; *data is NULL if the
 * state does not exist yet (on a GPU optimizer, device memory: read it
 * with jopt_state_copy).  *step (if not NULL) gets the number of steps the
 * parameter has taken. */
JOPT_API int jopt_state_get(const jopt_optim *opt, size_t group, size_t index,
                            const char *name, const float **data,
                            int64_t *step);

/* How many floats that state holds: the parameter's numel, a row's or a
 * column's count for a state per row or per column, 1 for a per-tensor
 * float32 scalar, 2 for a double one, 0 if it does not exist yet. */
JOPT_API int jopt_state_numel(const jopt_optim *opt, size_t group,
                              size_t index, const char *name, int64_t *numel);

/* Copies that state (jopt_state_numel floats) into the caller's host
 * buffer of `cap` floats; on a GPU optimizer, after the steps enqueued
 * before it (the buffer jopt_state_get gives there is device memory). */
JOPT_API int jopt_state_copy(const jopt_optim *opt, size_t group, size_t index,
                             const char *name, float *out, int64_t cap);

/* ---- Specs: what a spec declares, and its kernels as text ---------------- */

/* An opened spec answers what `jopt show` prints: its hyperparameters (and
 * their values under some options), its states, its kernels, and each
 * kernel's graph, LLVM IR or machine code.  It builds no optimizer.  Its
 * errors are reported on the context it was opened with. */
typedef struct jopt_spec jopt_spec;

/* Opens the spec `name` (found as jopt_optim_new finds it) with `options`
 * over its defaults (NULL or "" for none), checked by the spec as a
 * group's options are.  Caller frees *out with jopt_spec_free, before the
 * context. */
JOPT_API int jopt_spec_open(jopt_ctx *ctx, const char *name,
                            const char *options, jopt_spec **out);
JOPT_API void jopt_spec_free(jopt_spec *spec); /* NULL is a no-op */

/* Owned by the spec: "adam", the file it was read from, its doc line. */
JOPT_API const char *jopt_spec_name(const jopt_spec *spec);
JOPT_API const char *jopt_spec_path(const jopt_spec *spec);
JOPT_API const char *jopt_spec_doc(const jopt_spec *spec);
/* A closure optimizer's method ("lbfgs"), or NULL for a spec with an
 * update; and where this build's driver for it lives ("runtime/lbfgs.c"),
 * or NULL if it has none. */
JOPT_API const char *jopt_spec_method(const jopt_spec *spec);
JOPT_API const char *jopt_spec_method_source(const jopt_spec *spec);

typedef enum jopt_kind {
    JOPT_KIND_NUMBER, /* a number, or a tuple of numbers */
    JOPT_KIND_BOOL,   /* true or false: reads as 1 or 0 */
    JOPT_KIND_CHOICE  /* one of a list of names: reads as its index */
} jopt_kind;

/* A hyperparameter; pointers are owned by the spec. */
typedef struct jopt_hyper_info {
    const char *name;
    jopt_kind kind;
    int len;             /* how many values: 1, or a tuple's length */
    int tuple;           /* written as a tuple ({0.9, 0.999}) */
    int integer;         /* its default is a whole number (torch's int) */
    int optional;        /* may be None (torch's None), which reads as NaN */
    int runtime;         /* may be passed per step (the spec's `runtime`) */
    const double *value; /* len values: the defaults under the options */
    const double *spec_default; /* len values: the spec's own defaults */
    const char *const *choices; /* a choice's names, the default first */
    int nchoices;
} jopt_hyper_info;

/* The hyperparameters, sorted by name. */
JOPT_API size_t jopt_spec_nhyper(const jopt_spec *spec);
JOPT_API int jopt_spec_hyper(const jopt_spec *spec, size_t i,
                             jopt_hyper_info *out);
/* Hyperparameter i's value as an options string writes it ("0.9,0.999",
 * "true", "strong_wolfe", "None"), into buf (cap bytes, truncated). */
JOPT_API int jopt_spec_format(const jopt_spec *spec, size_t i, char *buf,
                              size_t cap);

/* What a state holds. */
typedef enum jopt_state_kind {
    JOPT_STATE_ELEM,   /* one value per element of the parameter */
    JOPT_STATE_ROW,    /* one per row (a mean over the last axis) */
    JOPT_STATE_COL,    /* one per column (over the second-to-last) */
    JOPT_STATE_TENSOR, /* one per tensor (ASGD's eta) */
    JOPT_STATE_GROUP   /* one per group (Prodigy's d): jopt_group_state */
} jopt_state_kind;

/* A state the spec declares, as the options given (and the variant shown,
 * jopt_spec_set_variant) keep it. */
typedef struct jopt_state_info {
    const char *name;
    int kept;      /* 0: not kept with these options */
    int scalar;    /* one value per tensor (kind JOPT_STATE_TENSOR) */
    int unset;     /* starts unset (torch's `buf is None`) */
    double init;   /* otherwise, the value it starts at */
    jopt_state_kind kind;
    int f64;       /* kept in double, not float32 (a tensor's or a
                      group's scalar) */
} jopt_state_info;

/* The states, sorted by name (those of an update spec; a closure
 * optimizer's live in its driver). */
JOPT_API size_t jopt_spec_nstate(const jopt_spec *spec);
JOPT_API int jopt_spec_state(jopt_spec *spec, size_t i, jopt_state_info *out);

/* A kernel: the update ("update": its arrays are "param", "grad", the
 * kept states and the inputs given), a named kernel of the spec's
 * `kernels`, or a closure optimizer's vector kernel. */
typedef struct jopt_kernel_info {
    const char *name;
    int narrays;
    const char *const *arrays; /* names, in the kernel's order */
    int nscalars;              /* per-call inputs of a vector kernel */
    int nresults;              /* per-call results of a vector kernel */
    int nsums, nmaxima;        /* reductions over the data per call */
    int npasses;               /* passes over the data per call: 1 or 2 */
    uint64_t read, written;    /* bit per array: loaded, stored */
    uint64_t scalar;           /* bit per array holding one float per
                                  tensor (a scalar state), not streamed */
} jopt_kernel_info;

/* The update then the spec's named kernels, or a closure optimizer's
 * kernels, sorted by name.  Tracing a kernel can fail (a spec bug):
 * JOPT_ESPEC with the spec's line. */
JOPT_API size_t jopt_spec_nkernels(const jopt_spec *spec);
JOPT_API int jopt_spec_kernel(jopt_spec *spec, size_t i,
                              jopt_kernel_info *out);
/* Kernel i's name without tracing it ("update"), or NULL past the end. */
JOPT_API const char *jopt_spec_kernel_name(const jopt_spec *spec, size_t i);

/* Which variant states, kernels and jopt_spec_emit show: for tensors of
 * `rank` dimensions (1, the default, for a flat one) with the inputs named
 * in `inputs` given (space-separated; NULL: none). */
JOPT_API int jopt_spec_set_variant(jopt_spec *spec, int rank,
                                   const char *inputs);

/* Whether jopt_optim_new would take the spec's kernels: for a closure
 * optimizer, its driver exists and each kernel the driver calls has the
 * arrays, scalars and results it needs and writes no gradient.
 * JOPT_OK, or JOPT_ESPEC naming the first misfit. */
JOPT_API int jopt_spec_validate(jopt_spec *spec);

/* Kernel `kernel` (NULL or "update" for the update) as text: what is "graph" (the
 * validated expression graph, in the form docs/specs.md describes), "ir"
 * (optimised LLVM IR), "asm" (machine code) or "ptx" (the GPU kernels for
 * sm_90, docs/gpu.md).  *text is owned by the
 * spec, valid until the next jopt_spec_emit or jopt_spec_free. */
JOPT_API int jopt_spec_emit(jopt_spec *spec, const char *kernel,
                            const char *what, const char **text);

/* ---- A vector kernel on arrays of your own -------------------------------- */

/* A closure optimizer's vector kernel, compiled with the context's engine
 * and run over flat float32 arrays, cut and summed exactly as jopt_step
 * runs it (for tools and tests: `jopt check` runs the JIT against the
 * reference interpreter this way).  Errors are reported on its context.
 * Caller frees *out with jopt_kernel_free, before the context. */
typedef struct jopt_kernel jopt_kernel;

JOPT_API int jopt_kernel_new(jopt_ctx *ctx, const char *spec,
                             const char *name, jopt_kernel **out);
JOPT_API void jopt_kernel_free(jopt_kernel *k); /* NULL is a no-op */
/* One call over n elements: arrays[i] is the kernel's i-th array (n
 * floats, borrowed, no two overlapping), scalars its per-call inputs and
 * results gets its results (jopt_kernel_info's counts). */
JOPT_API int jopt_kernel_run(jopt_kernel *k, float *const *arrays, int64_t n,
                             const double *scalars, double *results);

/* A per-tensor scalar state ("eta"), float32 or double, as a double; or a
 * per-group state (jopt_group_state: Prodigy's "d").  NaN if the state
 * does not exist yet. */
JOPT_API int jopt_state_scalar(const jopt_optim *opt, size_t group,
                               size_t index, const char *name, double *value);
JOPT_API int jopt_group_state(const jopt_optim *opt, size_t group,
                              const char *name, double *value);

/* ---- Learning-rate schedulers (torch.optim.lr_scheduler) --------------- */

/* A scheduler changes the "lr" of every group of one optimizer (and, for
 * "onecycle" and "cyclic" with cycle_momentum, "betas[0]" or "momentum") by
 * torch 2.13's formulas, in double, in torch's order of operations.  Call
 * jopt_sched_step after jopt_step, as scheduler.step() after
 * optimizer.step().  A scheduler borrows its optimizer: free the scheduler
 * first.  As in torch, the optimizer's groups hold the schedulers' shared
 * keys ("initial_lr", and OneCycleLR's "max_lr", "min_lr", "max_momentum",
 * "base_momentum"): the first scheduler made records each group's lr as its
 * initial_lr, and later ones start from it, even after the first is freed;
 * the keys live as long as the optimizer and jopt_state_save saves them.
 * Errors are reported on the optimizer's context (jopt_errmsg); a call
 * that fails changes neither the optimizer nor the scheduler.
 * docs/schedulers.md has the details. */
typedef struct jopt_sched jopt_sched;

/* Makes a scheduler of `kind` over every group of `opt` and takes torch's
 * constructor step: last_epoch becomes 0 and the lrs are set (LinearLR
 * multiplies them by start_factor, OneCycleLR sets max_lr/div_factor, ...).
 * kind: "step", "multistep", "exponential", "cosine",
 * "cosine_warm_restarts", "linear", "constant", "polynomial", "onecycle",
 * "cyclic", "plateau" (StepLR, MultiStepLR, ExponentialLR,
 * CosineAnnealingLR, CosineAnnealingWarmRestarts, LinearLR, ConstantLR,
 * PolynomialLR, OneCycleLR, CyclicLR, ReduceLROnPlateau).  `options` uses
 * torch's keyword names, "step_size=30 gamma=0.1", "milestones=30,80",
 * "mode=triangular2"; a per-group option (max_lr, base_lr, base_momentum,
 * max_momentum, min_lr) takes one value for every group or a comma list of
 * one per group; NULL or "" for the defaults.  Caller frees *out with
 * jopt_sched_free. */
JOPT_API int jopt_sched_new(jopt_optim *opt, const char *kind,
                            const char *options, jopt_sched **out);

/* lr_lambda(user, epoch, group): the factor for `group` at `epoch`.  It must
 * not call jopt on the same optimizer. */
typedef double (*jopt_lr_lambda)(void *user, int64_t epoch, size_t group);

/* LambdaLR (multiplicative 0: lr = initial_lr * lr_lambda(epoch)) or
 * MultiplicativeLR (multiplicative 1: lr = lr * lr_lambda(epoch), from epoch
 * 1).  `user` is borrowed and passed back to every call. */
JOPT_API int jopt_sched_new_lambda(jopt_optim *opt, jopt_lr_lambda lr_lambda,
                                   void *user, int multiplicative,
                                   jopt_sched **out);

/* SequentialLR: scheds[0] until milestones[0], scheds[1] until
 * milestones[1], ... (n - 1 milestones; NULL when n is 1).  The children
 * must be schedulers of `opt`, not "plateau", and not already part of a
 * composite; a composite child may only come first.  On success the new
 * scheduler owns the children (do not free or reuse them; stepping one on
 * its own is allowed, as in torch); on failure the caller still owns them. */
JOPT_API int jopt_sched_new_sequential(jopt_optim *opt,
                                       jopt_sched *const *scheds, size_t n,
                                       const int64_t *milestones,
                                       jopt_sched **out);

/* ChainedScheduler: each step steps every child in order, so their factors
 * compose.  `opt` may be NULL (then the children's).  Ownership as for
 * jopt_sched_new_sequential. */
JOPT_API int jopt_sched_new_chained(jopt_optim *opt, jopt_sched *const *scheds,
                                    size_t n, jopt_sched **out);

/* scheduler.step(): the next epoch's lrs (and momentums).  A "plateau"
 * scheduler refuses it: use jopt_sched_step_metric. */
JOPT_API int jopt_sched_step(jopt_sched *s);

/* ReduceLROnPlateau.step(metric); only for "plateau". */
JOPT_API int jopt_sched_step_metric(jopt_sched *s, double metric);

/* get_last_lr()[group]: the lr the scheduler last set (or found). */
JOPT_API int jopt_sched_last_lr(const jopt_sched *s, size_t group, double *lr);

/* last_epoch: 0 after construction, +1 per step (for a chained scheduler,
 * which has none in torch, the number of steps); -1 for NULL. */
JOPT_API int64_t jopt_sched_epoch(const jopt_sched *s);

/* Frees a scheduler and the children it owns; NULL is a no-op.  The
 * optimizer keeps its current lrs. */
JOPT_API void jopt_sched_free(jopt_sched *s);

/* A scheduler's state, for resuming: its last_epoch and step count, its
 * base_lrs and last lrs, and what its kind keeps (warm restarts' T_cur and
 * T_i; plateau's best, num_bad_epochs and cooldown_counter), and for a
 * composite its children's, in a versioned, checksummed format with the
 * kind and a hash of the options each scheduler was made with
 * (docs/schedulers.md).  The optimizer's part (lrs, momentums, the keys
 * above) is in the optimizer's checkpoint (jopt_state_save).  LambdaLR's
 * callback is not saved: pass the same one again, as in torch.
 *
 * To resume: build the optimizer and the scheduler as before (same kinds,
 * options, children and milestones), then load both, jopt_state_load and
 * jopt_sched_load, in either order.  Stepping then gives the same lrs and
 * momentums, bit for bit, as never having stopped.
 *
 * jopt_sched_save writes a file atomically, as jopt_state_save does;
 * jopt_sched_state_size and jopt_sched_save_mem write into the caller's
 * memory (*len gets the size needed).  Loading checks everything before
 * it changes anything: a truncated or corrupt file, another kind's, one
 * made with other options, for another number of groups, or of a
 * composite with other children, fails with JOPT_EINVAL and leaves the
 * scheduler as it was.  Loading never changes the optimizer. */
JOPT_API int jopt_sched_save(const jopt_sched *s, const char *path);
JOPT_API int jopt_sched_load(jopt_sched *s, const char *path);
JOPT_API int jopt_sched_state_size(const jopt_sched *s, size_t *len);
JOPT_API int jopt_sched_save_mem(const jopt_sched *s, void *buf, size_t cap,
                                 size_t *len);
JOPT_API int jopt_sched_load_mem(jopt_sched *s, const void *buf, size_t len);

/* ---- Parameter groups after construction and checkpoints --------------- */

/* Appends a group, as torch's add_param_group: its options fall back to
 * the optimizer's defaults; its buffers must not overlap any other. */
JOPT_API int jopt_add_param_group(jopt_optim *opt, const jopt_group *group);

/* Everything needed to resume: the spec's name and a hash of its text,
 * each group's hyperparameters and scheduler keys (initial_lr, ...),
 * every parameter's step count and state (for L-BFGS: its history,
 * direction and counters), in a versioned, checksummed
 * format (docs/checkpoint.md).  A scheduler's own state is saved apart
 * (jopt_sched_save).
 *
 * jopt_state_save writes a file atomically (a temporary file, fsync,
 * rename, fsync of the folder): if it fails, the previous file is intact.
 * jopt_state_size and jopt_state_save_mem write into the caller's memory
 * (a checkpoint container of your own); *len gets the size needed.
 *
 * Loading goes into an optimizer built over the same parameters (same
 * spec, groups and sizes); stepping it then gives the same bits as never
 * having stopped.  It checks everything before it changes anything: a
 * truncated or corrupt file, another spec's, a different number of groups,
 * parameters or elements each fail with JOPT_EINVAL and a message, and the
 * optimizer stays exactly as it was.  It never allocates more than the
 * file holds.  The parameters themselves are the caller's to save. */
JOPT_API int jopt_state_save(const jopt_optim *opt, const char *path);
JOPT_API int jopt_state_load(jopt_optim *opt, const char *path);
JOPT_API int jopt_state_size(const jopt_optim *opt, size_t *len);
JOPT_API int jopt_state_save_mem(const jopt_optim *opt, void *buf, size_t cap,
                                 size_t *len);
JOPT_API int jopt_state_load_mem(jopt_optim *opt, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* JOPT_H */
