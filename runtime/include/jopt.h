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
    JOPT_EDEVICE = -6,  /* no GPU or CUDA driver, a driver error, or a spec
                           the GPU cannot run (docs/gpu.md) */
    JOPT_ECOMM = -7,    /* a sharded optimizer's transport failed */
    JOPT_SKIPPED = 1    /* not an error: jopt_step skipped the step, changing
                           nothing, for a NaN or infinite gradient
                           (jopt_set_grad_scale) */
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

/* An allocator, with Lua's lua_Alloc contract: nsize == 0 frees ptr (which
 * may be NULL) and returns NULL; otherwise it returns a block of nsize bytes
 * (aligned as malloc's) holding the first min(osize, nsize) bytes of ptr, or
 * NULL, leaving ptr as it was.  ptr == NULL: a new block, osize then means
 * nothing.  osize is always the size the block was last given.  Like Lua,
 * jopt assumes a block never fails to shrink (osize >= nsize).  Called from
 * the threads that call jopt, never from a step's worker threads. */
typedef void *(*jopt_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

/* jopt_ctx_new with an allocator: every block jopt makes for this context
 * and what is made from it (optimizers, specs, kernels, schedulers, Lua
 * states, checkpoints' buffers) comes from alloc(ud, ...); a failure is
 * JOPT_ENOMEM with nothing changed.  LLVM's own memory, thread stacks,
 * OpenBLAS and the CUDA driver are not routed (docs/allocation.md).  alloc
 * NULL: the C library's. */
JOPT_API int jopt_ctx_new_ex(jopt_ctx **out, jopt_alloc_fn alloc, void *ud);

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
 * jopt_ctx_set_threads goes back to jopt's own pool of that many.  With a
 * runner, steps from JOPT_PARALLEL_MIN_RUNNER elements up are shared: the
 * runner's threads are awake, so sharing pays from fewer elements.
 * jopt_parallel_openmp (below) without its jopt_openmp as `user` is
 * refused (JOPT_EINVAL). */
#define JOPT_PARALLEL_MIN_RUNNER (2 * JOPT_TASK_ELEMS)
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

/* One parameter tensor: contiguous, `numel` elements of float32 (or of
 * its group's dtype option: "Mixed precision" below), seen as
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
 * L-BFGS and CG call it several times per step (docs/closure.md).  From
 * inside it, for every optimizer, stepping, loading, adding a group or
 * changing the options of the same optimizer (a scheduler step included),
 * setting a shape or calling a named kernel (jopt_optim_call)
 * fails with JOPT_EINVAL; jopt_optim_free of it is deferred until the step
 * returns, which then frees it and fails with JOPT_EINVAL (the step not
 * taken).  A closure may leave by longjmp: the step is abandoned (an
 * L-BFGS history stays as before it; the parameters are where the closure
 * left them) and the next call on the optimizer goes on normally. */
typedef int (*jopt_closure)(void *user_data, double *loss);

/* One optimization step over every group.  With a closure, calls it first
 * and returns its loss in *loss (NULL to ignore); without one (NULL), *loss
 * is set to NaN.  A parameter takes a step only if its gradient is present;
 * its state is created at its first such step. */
JOPT_API int jopt_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                       double *loss);

/* Gives parameter `index` of `group` the spec's per-element input `name`
 * (one of its `inputs`, such as Sophia's "hessian": numel floats) for the
 * next step only (a step skipped for loss scaling takes it too); NULL, or
 * not calling it, gives none, which the spec sees as nil.  Borrowed until
 * that step; must not overlap other buffers (a parameter, a gradient,
 * another input, a state): JOPT_EINVAL names the one it overlaps.  Give a
 * step's gradients first: jopt still holds the last ones until then. */
JOPT_API int jopt_set_input(jopt_optim *opt, size_t group, size_t index,
                            const char *name, float *data);
/* The same for every parameter at once, data[j] for the j-th in group
 * order (n of them; NULL: none for that one), checked in one sort rather
 * than one pass over the optimizer per parameter; nothing changes on
 * failure. */
JOPT_API int jopt_set_inputs(jopt_optim *opt, const char *name, float *const *data,
                             size_t n);

/* Runs the spec's named kernel `kernel` (a function in its `kernels`,
 * such as Schedule-Free's "eval" and "train") once over every parameter
 * that has state, on every group: it may change the parameter and its
 * state, as the spec says.  It takes no step. */
JOPT_API int jopt_optim_call(jopt_optim *opt, const char *kernel);

/* Replaces the gradient buffer of parameter `index` of group `group`; NULL
 * marks the gradient absent.  Borrowed; must not overlap other buffers. */
JOPT_API int jopt_set_grad(jopt_optim *opt, size_t group, size_t index,
                           float *grad);

/* Replaces every parameter's gradient buffer at once: grads[k] is the k-th
 * parameter counting through the groups in order (group 0's parameters,
 * then group 1's, ...); NULL marks a gradient absent.  n must be the
 * number of parameters.  The buffers are checked as jopt_set_grad checks
 * one (aligned to their element type, no two buffers of the optimizer
 * overlapping, each of the bytes its type takes), but
 * once for all of them: a framework whose autograd hands out new gradient
 * tensors at every backward would otherwise pay one whole check per
 * parameter per step.  On failure nothing changes. */
JOPT_API int jopt_set_grads(jopt_optim *opt, float *const *grads, size_t n);

/* Gives parameter `index` of `group` a shape: `ndim` sizes (1 to 8), the
 * first outermost as torch's, whose product is its numel.  A spec may then
 * reduce over its last two axes or keep state per row or column
 * (Adafactor); other specs see the same flat elements.  Copied.  Before the
 * parameter's first step only (its state is made for its shape). */
JOPT_API int jopt_set_shape(jopt_optim *opt, size_t group, size_t index,
                            int ndim, const int64_t *shape);

/* ---- Mixed precision ------------------------------------------------------
 *
 * Parameters and gradients may be float32 (the default), bfloat16 or
 * float16, each tensor its own; an optimizer's per-element state (exp_avg,
 * momentum_buffer, ...) float32 (the default), bfloat16 or float16, per
 * group.  Kernels are built for each combination: they load every element
 * as float32, compute in float32 as torch's fused CPU kernels do, and round
 * once, when they store: to nearest even, or stochastically for bfloat16
 * if asked.  A 16-bit buffer holds numel 2-byte elements, aligned to 2
 * bytes (bfloat16: the top half of a float32's bits; float16: IEEE
 * binary16); pass its address where jopt_param, jopt_set_grad and
 * jopt_state_get say float *.  Per-tensor and per-group scalar states stay
 * float32 or double.  Closure optimizers (L-BFGS, CG) take float32 only.
 *
 * Every update spec takes these options besides its own, in a group's
 * options or the optimizer's defaults (jopt_option_get reads a type as its
 * jopt_dtype, a flag as 0 or 1):
 *
 *   dtype=float32|bfloat16|float16   the group's parameters' type (its
 *                                    gradients' too, unless grad_dtype)
 *   grad_dtype=...                   the gradients' type
 *   state_dtype=float32|bfloat16|float16  per-element state; it cannot
 *                                    change once a parameter has state
 *   stochastic_rounding=true|false   bfloat16 stores (parameters and
 *                                    state) round stochastically, with
 *                                    the probability that makes them
 *                                    unbiased (default false)
 *   seed=N                           the generator's seed, 0 to 2^53
 *                                    (default 0)
 *
 * Stochastic rounding's random bits for element i of an array at step t
 * depend only on (seed, t, the tensor's place among the optimizer's
 * parameters, the array, i): a counter-based generator, the same bits for
 * any thread count and with either engine.  The seed and the flag are
 * saved in checkpoints; a checkpoint's state type must be the group's.
 * torch's fused=True kernels keep their state in the parameters' type:
 * state_dtype=bfloat16 (float16) with bfloat16 (float16) parameters, and
 * the spec's fused=true where it has one, gives their bits
 * (docs/fidelity.md). */
typedef enum jopt_dtype {
    JOPT_FLOAT32 = 0,
    JOPT_BFLOAT16 = 1,
    JOPT_FLOAT16 = 2
} jopt_dtype;

/* Sets the element types of parameter `index` of `group` and its gradient
 * (the group's dtype= and grad_dtype= set every tensor's), rechecking that
 * no two buffers overlap with the new sizes.  Its state keeps the group's
 * state_dtype.  The kernel for the new types is built now. */
JOPT_API int jopt_set_dtype(jopt_optim *opt, size_t group, size_t index,
                            jopt_dtype dtype, jopt_dtype grad_dtype);

/* The element type of a parameter's state `name`: the group's state_dtype
 * for a per-element state, float32 otherwise (a double scalar reads as
 * float32 too: jopt_state_numel tells it apart). */
JOPT_API int jopt_state_dtype(const jopt_optim *opt, size_t group,
                              size_t index, const char *name, jopt_dtype *dtype);

/* Loss scaling, as torch's fused optimizers take it from
 * torch.amp.GradScaler, for the next jopt_step only.  `scale` (finite,
 * > 0; 1 for none): each gradient element is divided by it, in float32,
 * inside the kernel, and the quotient is written back to the gradient
 * buffer (rounded to its type), as torch's fused kernels do.  found_inf:
 * 0, none (the gradients are used as they are); 1, the caller found a
 * NaN or infinite gradient (GradScaler's found_inf): the step is skipped;
 * JOPT_CHECK_FINITE, jopt reads every gradient of the step first, on the
 * step's threads, and skips the step if any element is NaN or infinite.
 * A skipped step changes nothing (parameters, gradients, state, step
 * counts: a parameter's state is not even created) and jopt_step returns
 * JOPT_SKIPPED, with a message naming the first such element. */
#define JOPT_CHECK_FINITE (-1)
JOPT_API int jopt_set_grad_scale(jopt_optim *opt, double scale, int found_inf);

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
 * new values are validated (by the spec's check, and a number must be
 * finite unless the spec lists it as `infinite`: an inf lr is refused) and
 * the kernel re-specialised (or found in the cache) before anything
 * changes. */
JOPT_API int jopt_option_set(jopt_optim *opt, size_t group, const char *name,
                             double value);
JOPT_API int jopt_options_set(jopt_optim *opt, size_t group,
                              const char *options);

/* Hyperparameters are folded into the kernel as constants.  Those a spec
 * lists as `runtime` (lr, betas, eps in most shipped specs: values it uses
 * only in arithmetic) are instead passed to the kernel each step from the
 * first time they change, so a scheduled lr costs one compile, not one per
 * step.  jopt_option_runtime does that now, before any change; it fails
 * for a hyperparameter the spec does not list, and for a tuple's element
 * ("betas[0]": a tuple is passed whole).  jopt_option_is_runtime
 * tells which way a value is passed (1: per step). */
JOPT_API int jopt_option_runtime(jopt_optim *opt, size_t group,
                                 const char *name);
JOPT_API int jopt_option_is_runtime(const jopt_optim *opt, size_t group,
                                    const char *name);

/* A parameter's state buffer `name` ("exp_avg"): `numel` elements of the
 * group's state_dtype (float32 unless set: jopt_state_dtype tells), or one
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
    uint64_t axis;             /* bit per array holding one value per row
                                  or column (a state smaller than the
                                  tensor), not streamed */
    /* each pass over the elements, in order (npasses of them, at most 16):
     * the arrays it loads (or reads back) and those it stores */
    uint64_t pass_read[16], pass_written[16];
} jopt_kernel_info;

/* The update then the spec's named kernels, or a closure optimizer's
 * kernels, sorted by name.  Tracing a kernel can fail (a spec bug):
 * JOPT_ESPEC with the spec's line. */
JOPT_API size_t jopt_spec_nkernels(const jopt_spec *spec);
JOPT_API int jopt_spec_kernel(jopt_spec *spec, size_t i,
                              jopt_kernel_info *out);
/* Kernel i's name without tracing it ("update"), or NULL past the end. */
JOPT_API const char *jopt_spec_kernel_name(const jopt_spec *spec, size_t i);

/* The spec's per-element inputs besides the gradient (its `inputs`, given
 * with jopt_set_input: Sophia's "hessian"), in the spec's order; NULL past
 * the end.  Owned by the spec. */
JOPT_API size_t jopt_spec_ninputs(const jopt_spec *spec);
JOPT_API const char *jopt_spec_input(const jopt_spec *spec, size_t i);
/* 1 if the step count t is the group's (`steps = "group"`, as
 * pytorch_optimizer counts), 0 if each tensor's (torch.optim's). */
JOPT_API int jopt_spec_steps_per_group(const jopt_spec *spec);

/* Which variant states, kernels and jopt_spec_emit show: for tensors of
 * `rank` dimensions (1, the default, for a flat one) with the inputs named
 * in `inputs` given (space-separated; NULL: none). */
JOPT_API int jopt_spec_set_variant(jopt_spec *spec, int rank,
                                   const char *inputs);
/* The same for tensors of one shape (`ndim` sizes, outermost first) and no
 * inputs: a spec that reads a tensor's sizes or multiplies matrices (Muon)
 * has kernels for one shape.  JOPT_EINVAL if the spec refuses the shape. */
JOPT_API int jopt_spec_set_shape(jopt_spec *spec, int ndim,
                                 const int64_t *shape);

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
 * rename, fsync of the folder): if it fails before the rename, the
 * previous file is intact; if the folder's fsync fails, the call fails
 * and says that the new file is in place but may not survive a crash.
 * jopt_state_size and jopt_state_save_mem write into the caller's memory
 * (a checkpoint container of your own); *len gets the size needed.
 *
 * Loading goes into an optimizer built over the same parameters (same
 * spec, groups and sizes); stepping it then gives the same bits as never
 * having stopped.  It checks everything before it changes anything: a
 * truncated or corrupt file, another spec's, a different number of groups,
 * parameters or elements each fail with JOPT_EINVAL and a message, and the
 * optimizer stays exactly as it was.  It never allocates more than the
 * file holds, but for about 256 KiB of slack per state array of 4 MiB or
 * more, asked of the context's allocator, which places the array apart
 * from its parameter's other arrays (docs/design.md, "Where state arrays
 * start").  Loading copies into the state buffers jopt_state_get handed
 * out, which stay valid.  The parameters themselves are the caller's to
 * save. */
JOPT_API int jopt_state_save(const jopt_optim *opt, const char *path);
JOPT_API int jopt_state_load(jopt_optim *opt, const char *path);
JOPT_API int jopt_state_size(const jopt_optim *opt, size_t *len);
JOPT_API int jopt_state_save_mem(const jopt_optim *opt, void *buf, size_t cap,
                                 size_t *len);
JOPT_API int jopt_state_load_mem(jopt_optim *opt, const void *buf, size_t len);

/* Writes the checksum that ends a checkpoint (docs/checkpoint.md: FNV-1a
 * 64 of every byte before it) into its last 8 bytes, for a program that
 * writes the documented format itself (jopt.torch, converting a
 * torch.optim state dict); jopt_state_load_mem then checks all the rest.
 * JOPT_EINVAL if buf is NULL or len < 16. */
JOPT_API int jopt_state_seal(void *buf, size_t len);

/* ---- Optimizer state sharded across processes (ZeRO stage 1) ------------
 *
 * Data-parallel training: every process holds the whole model and
 * computes gradients on its part of the batch.  A sharded optimizer gives
 * each process the state (and the update) of only some of the tensors, so
 * the optimizer's memory per process falls as processes are added.  At
 * each jopt_step it averages the gradients across processes, each process
 * receiving only those of its own tensors; each steps its tensors with the
 * compiled kernels; then every process receives every updated parameter.
 * The parameters are the same bits on every process, and the same bits a
 * single process gets when it steps with the averaged gradients
 * (docs/distributed.md has the exact arithmetic).
 *
 * Every process builds it with the same spec, options, groups and sizes
 * (checked at construction: a mismatch fails on every process with the
 * same message), then makes the same calls in the same order: jopt_step,
 * jopt_optim_call, jopt_state_save and jopt_state_load are collective, and
 * also check that the processes agree (gradients present, options, shapes)
 * before anything changes.  Options, schedulers and everything else work
 * as on one process; each process must make the same changes.
 * jopt_state_get finds state only on the process that holds the tensor.
 *
 * The transport is the caller's: jopt_mpi.h makes one over MPI. */

/* What a sharded optimizer needs from a transport: this process's rank
 * (0 to size - 1) and two collectives that every process calls in the
 * same order.  Counts and displacements are in bytes.  Each returns 0, or
 * non-zero if the transport failed: the call then fails with JOPT_ECOMM,
 * and the optimizer may be left part way through a step. */
typedef struct jopt_comm {
    int rank, size;
    void *user;
    /* process r gives counts[r] bytes (send); every process receives them
     * all, back to back in rank order (recv) */
    int (*allgatherv)(void *user, const void *send, const size_t *counts,
                      void *recv);
    /* this process sends scounts[r] bytes at send + sdispls[r] to process
     * r and receives rcounts[r] bytes from it at recv + rdispls[r] */
    int (*alltoallv)(void *user, const void *send, const size_t *scounts,
                     const size_t *sdispls, void *recv, const size_t *rcounts,
                     const size_t *rdispls);
    /* called once when the optimizer is freed (or its construction
     * fails); may be NULL */
    void (*release)(void *user);
    /* the transport's words for what a collective returned, for jopt's
     * message (valid until the next call); may be NULL */
    const char *(*errstr)(void *user, int code);
    /* the exchange's send and receive buffers together, in bytes: a step
     * exchanges gradients and parameters in rounds of a window per
     * process that fits them (bigger: fewer rounds); 0 for 16 MiB */
    size_t buffer_bytes;
} jopt_comm;

/* jopt_optim_new, sharded over the processes of `comm` (copied; its user
 * pointer is borrowed until release).  Collective.  Each tensor is held
 * by one process, assigned largest first to the process holding the
 * fewest elements so far.  Closure optimizers (L-BFGS, CG) are refused. */
JOPT_API int jopt_optim_new_sharded(jopt_ctx *ctx, const char *spec,
                                    const jopt_group *groups, size_t ngroups,
                                    const char *defaults, const jopt_comm *comm,
                                    jopt_optim **out);

/* The process that holds parameter `index` of `group` (0 when the
 * optimizer is not sharded), or -1 if there is no such parameter. */
JOPT_API int jopt_shard_owner(const jopt_optim *opt, size_t group,
                              size_t index);

/* What this process holds and has sent. */
typedef struct jopt_shard_info {
    int rank, size;           /* 0 and 1 when not sharded */
    size_t tensors;           /* tensors held here */
    int64_t numel;            /* their elements */
    int64_t numel_all;        /* elements of every tensor */
    size_t state_bytes;       /* optimizer state held here now */
    size_t buffer_bytes;      /* the exchange's buffers */
    uint64_t bytes_sent;      /* to other processes, since construction */
    uint64_t exchanges;       /* collectives called, since construction */
} jopt_shard_info;
JOPT_API int jopt_shard_info_get(const jopt_optim *opt, jopt_shard_info *out);

#ifdef __cplusplus
}
#endif
#endif /* JOPT_H */
