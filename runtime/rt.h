/*
 * rt.h - the runtime's private structures: the context, the optimizer, its
 * groups and per-parameter state.  The runtime sees codegen only through
 * cg.h (codegen/include: the build gives the runtime no other codegen
 * folder, and no LLVM or Lua headers).
 */
#ifndef RT_H
#define RT_H

#include "cg.h"
#include "jopt.h"
#include "pool.h"

/* below this many elements in a step, the caller does all the work (the
 * batch cuts tensors into CG_CHUNK tasks either way) */
#define RT_PARALLEL_MIN JOPT_PARALLEL_MIN

/* a loaded spec, shared by the context's optimizers */
typedef struct rt_spec_entry {
    cg_spec *spec;
    int refs;
    struct rt_spec_entry *next;
} rt_spec_entry;

struct jopt_ctx {
    char err[CG_ERRLEN];
    cg_allocator alloc; /* jopt_ctx_new_ex's; every block of the context */
    rt_spec_entry *specs; /* every spec loaded, kept until the context goes */
    char **dirs; /* spec search path */
    size_t ndirs;
    char *path;  /* the same, ':'-separated (jopt_ctx_spec_path) */
    cg_jit *jit;
    jopt_engine engine;
    rt_pool *pool;  /* started by the first step that can use it */
    int threads;    /* 0: every core */
    jopt_parallel_fn run; /* another program's pool runs the tasks instead
                             (jopt_ctx_set_parallel); then `pool` is NULL */
    void *run_user;
    int flush;      /* FTZ/DAZ during step() */
    struct rt_gpu *gpu; /* the device new optimizers live on; NULL: the CPU */
};

typedef struct rt_param {
    float *p, *g; /* borrowed; elements of dtype, grad_dtype */
    int64_t n;
    uint8_t dtype, grad_dtype;    /* CG_DT_* (jopt_dtype) */
    uint8_t *state_dt;            /* per spec state: its CG_DT_*; owned */
    int rank;                     /* 1 for a tensor given without a shape */
    int64_t shape[CG_MAX_RANK];   /* its sizes, the last first */
    int shape_ok;                 /* the spec's check_shape passed it */
    int64_t step;   /* steps taken */
    float **state;  /* one per spec state, NULL until created; owned */
    int64_t *state_n; /* floats each state holds (cg_kind_numel) */
    /* buffers a checkpoint load took out of `state`: jopt_state_get may
     * have handed them out, valid until the optimizer is freed, so they are
     * kept, two per spec state ([2k], [2k + 1]) with their sizes, and
     * reused when a state of that size is made again (optim.c) */
    float **spare;
    int64_t *spare_n;
    int fresh;      /* some state that starts unset was just created and
                       has not been written yet: run the fresh kernel */
    float *input[CG_MAX_INPUTS]; /* the spec's inputs for the next step
                                    (borrowed; NULL: not given) */
    double *work;   /* the kernel's workspace (row and column sums) */
    size_t workcap;
    const cg_kernel *k;          /* this step's kernel */
    float *arrays[CG_MAX_SLOTS]; /* this step's: p, g, states, inputs in
                                    the kernel's slot order */
    double *u;      /* per-step values: optim->ucap doubles */
    int foreign;    /* held by another process of a sharded optimizer:
                       never stepped here, no state (shard.c) */
} rt_param;

/* A group's kernels for its current values: the update for each rank of
 * its tensors, fresh or steady, with the inputs given, and named kernels.
 * Looked up per step; a variant not yet built is built then. */
typedef struct rt_variant {
    int rank, fresh, named; /* named: index of a named kernel, or -1 */
    unsigned inputs;
    uint8_t dtype, grad_dtype; /* the tensor's element types */
    uint8_t scaled;            /* loss scaling: the gradient is divided */
} rt_variant;

typedef struct rt_kentry {
    rt_variant v;
    cg_kernel *k;
    int has_shape;              /* built for a tensor of this shape: */
    int64_t shape[CG_MAX_RANK];
    struct rt_gmod *mod; /* a GPU kernel loaded on the device, or NULL */
} rt_kentry;

/* A group's mixed-precision options, which every spec takes (mixed.c):
 * dtype=, grad_dtype= (its tensors' element types, unless one is set
 * apart with jopt_set_dtype), state_dtype=, stochastic_rounding=, seed=. */
typedef struct rt_prec {
    uint8_t dtype, grad_dtype, state_dtype, stochastic;
    uint64_t seed;
} rt_prec;

typedef struct rt_kset {
    rt_kentry *e;
    size_t n, cap;
    uint8_t state_dtype, stochastic; /* what its kernels were built for */
} rt_kset;

/* torch's scheduler keys in a param group: "initial_lr", set by the first
 * scheduler made, and OneCycleLR's "max_lr", "min_lr", "max_momentum" and
 * "base_momentum".  Every scheduler of the optimizer reads them, and they
 * live as long as the group, as in torch.  NaN while unset (torch: the key
 * is absent).  Saved with the optimizer's checkpoint. */
enum { RT_KEY_INITIAL_LR, RT_KEY_MAX_LR, RT_KEY_MIN_LR, RT_KEY_MAX_MOMENTUM,
       RT_KEY_BASE_MOMENTUM, RT_NKEYS };
extern const char *const rt_key_names[RT_NKEYS];

typedef struct rt_group {
    rt_param *params;
    size_t n;
    double *values;     /* hyperparameters, cg_spec_nvalues() of them */
    uint8_t *runtime;   /* per hyperparameter: passed per step, not folded */
    rt_kset ks;         /* its kernels */
    double *keys;       /* RT_NKEYS scheduler keys, NaN while unset */
    int64_t step;       /* the group's steps (a spec's `steps = "group"`) */
    double *gstate;     /* the spec's per-group states (by spec state
                           index; NaN while a state is not kept) */
    double gred[CG_MAX_REDUCE]; /* the batch's group sums */
    rt_prec prec;       /* its mixed-precision options */
} rt_group;

struct rt_closure; /* closure.h */
struct rt_shard;   /* shard.h */

struct jopt_optim {
    jopt_ctx *ctx;
    cg_spec *spec;
    /* a closure optimizer (the spec has a method): its driver and kernels,
     * or NULL; its one group has no update kernels */
    struct rt_closure *closure;
    rt_group *groups;
    size_t ngroups;
    double *defaults; /* the spec's, overlaid by the optimizer's defaults */
    jopt_engine engine; /* the context's when the optimizer was made */
    /* step()'s preallocated work space: no allocation while stepping */
    double *ubuf;     /* every parameter's u, ucap doubles each */
    size_t ucap;
    cg_batch *batch;  /* room for every parameter cut into tasks */
    cg_call *calls;   /* a call and a part per parameter */
    cg_part *parts;
    /* guard.c: a step is running the user's closure */
    int busy;
    int free_pending;  /* the closure called jopt_optim_free */
    /* kept buffers no spare slot had room for (a third size of one
     * state): freed with the optimizer */
    float **retired;
    size_t nretired;
    volatile uint64_t *guard_slot; /* the token in that step's frame */
    uint64_t guard_token;
    uintptr_t closure_frame; /* the frame that calls the closure */
    rt_prec prec_defaults; /* the optimizer's defaults' precision options */
    /* loss scaling for the next step (jopt_set_grad_scale) */
    double grad_scale; /* 1: none */
    int found_inf;     /* 0, 1 (skip the step) or JOPT_CHECK_FINITE */
    /* sharded across processes (jopt_optim_new_sharded), or NULL */
    struct rt_shard *shard;
    struct rt_gopt *gpu; /* a GPU optimizer's device side (gpu.c), or NULL */
};

/* optim.c: whether n floats at buf overlap any parameter, gradient, input
 * or state of the optimizer other than the one at `replaced` (the pointer
 * buf is to replace): JOPT_EINVAL with a message naming `what` and which,
 * else 0 */
int rt_buffer_overlaps(jopt_optim *opt, const char *what, const float *buf, int64_t n,
                       float *const *replaced);

/* optim.c: whether the new input `input` of every parameter, data[j] for
 * the j-th in group order, overlaps any buffer of the optimizer (or
 * another of them): JOPT_EINVAL naming both, else 0.  One sort. */
int rt_inputs_overlap(jopt_optim *opt, const char *fn, int input, float *const *data);

/* optim.c: no two buffers of `groups` overlap, with parameter (skip_g,
 * skip_i)'s gradient replaced by `grad` when skip_g is not SIZE_MAX */
int rt_check_buffers(jopt_ctx *ctx, const char *fn, const rt_group *groups,
                     size_t ngroups, size_t skip_g, size_t skip_i, float *grad);

/* optim.c: the spec's check() of a group's values */
int rt_check_values(jopt_optim *opt, const char *where, const double *values);

/* kernels.c: a group's kernel for a variant (rank, fresh, inputs, named,
 * element types) under `values` and `runtime`, from the set or built and
 * added to it */
int rt_kset_get(jopt_optim *opt, rt_kset *ks, const char *where,
                const double *values, const uint8_t *runtime,
                const rt_variant *v, const cg_kernel **out);
/* the update's variant for a parameter (steady, no inputs) */
rt_variant rt_update_variant(const rt_param *p);
/* the same for parameter p's shape (a spec that reads a tensor's sizes,
 * or multiplies matrices, has a kernel per shape) */
int rt_kset_param(jopt_optim *opt, rt_kset *ks, const char *where,
                  const double *values, const uint8_t *runtime,
                  const rt_param *p, const rt_variant *v, const cg_kernel **out);
/* the spec's check_shape on p's shape (once: p->shape_ok); `where` names
 * the parameter in the message */
int rt_check_shape(jopt_optim *opt, rt_param *p, const char *where);
void rt_kset_free(rt_kset *ks);
/* A set for new values (and precision options `prec`) holding the same
 * variants as `old` (and at least the steady update for each rank and
 * element types of the group's tensors): built aside, checked against the
 * group's existing state; nothing held on failure. */
int rt_kset_rebuild(jopt_optim *opt, const rt_group *gr, const char *where,
                    const double *values, const uint8_t *runtime,
                    const rt_prec *prec, const rt_kset *old, int check_state,
                    rt_kset *out);
/* Whether a parameter's existing states are of the size and element type
 * the kernel's layout gives its shape; -1 if they fit, else the spec state
 * index that does not.  `state_n`, `state_dt` as rt_param's (0: absent). */
int rt_state_misfit(const cg_kernel *k, const rt_param *p,
                    const int64_t *state_n, const uint8_t *state_dt);
/* ---- mixed precision (mixed.c) ---- */
/* The option names the runtime reads itself are cg_prec_options (cg.h). */
/* Overlays the precision items of an options string on *prec (the others
 * are left to the spec's parser); nothing changes on error. */
int rt_prec_parse(jopt_ctx *ctx, const char *where, const char *text, rt_prec *prec,
                  unsigned *given);
/* Whether `name` is a precision option: its value as jopt_option_get
 * reads it (a dtype as its jopt_dtype, a flag as 0 or 1), or -1. */
int rt_prec_get(const rt_prec *prec, const char *name, double *value);
/* Bytes of one element of each array of a parameter. */
static inline size_t rt_psize(const rt_param *p) { return (size_t)cg_dt_size(p->dtype); }
static inline size_t rt_gsize(const rt_param *p) { return (size_t)cg_dt_size(p->grad_dtype); }
/* Whether every gradient the next step reads is finite (-1), else the
 * ordinal of the first parameter whose gradient is not: *elem gets the
 * element.  Read on the pool for big steps. */
int64_t rt_grads_finite(jopt_optim *opt, int64_t *elem);
/* One precision option set from a number (jopt_option_set): 1 if `name`
 * is not one, else JOPT_OK (with *given its bit) or an error. */
int rt_prec_set(jopt_ctx *ctx, const char *where, const char *name, double value,
                rt_prec *prec, unsigned *given);
/* The bits of rt_prec_parse's `given` that set tensors' element types. */
#define RT_GIVEN_DTYPE 1u
#define RT_GIVEN_GRAD_DTYPE 2u

/* The doubles of per-step values any kernel of the set keeps, plus one. */
size_t rt_kset_uniforms(const rt_kset *ks);

/* step.c: a step's phases, for a sharded step (shard.c).  rt_step_choose
 * picks each parameter's kernel (`named` < 0: the update, for those with
 * a gradient; else that named kernel, for those with state), skipping
 * foreign ones; rt_step_state creates the state they need, recording in
 * *created (NULL if it made none) what rt_step_unstate undoes; nothing
 * else changes before rt_step_run.  rt_step_plan makes their calls, and
 * rt_step_count counts the step. */
int rt_step_choose(jopt_optim *opt, const char *fn, int named);
int rt_step_state(jopt_optim *opt, unsigned char **created);
void rt_step_unstate(jopt_optim *opt, unsigned char *created);
size_t rt_step_plan(jopt_optim *opt, int64_t *total);
int rt_step_run(jopt_optim *opt, const char *fn, size_t ncalls, int64_t total);
void rt_step_count(jopt_optim *opt);

/* optim.c: makes room for per-step values of `need` doubles per parameter
 * (never shrinks); JOPT_ENOMEM changes nothing */
int rt_reserve_uniforms(jopt_optim *opt, size_t need);
/* optim.c: a kept buffer of state k of exactly `bytes` bytes, taken out of the
 * spares (NULL: none); and keeping one (never fails, never frees). */
float *rt_spare_take(rt_param *p, size_t k, int64_t bytes);
/* optim.c: a new host buffer of `bytes` for state k of p, placed apart
 * from p's other arrays when it is large (RT_STAGGER_*); freed with
 * cg_free (rt_state_free on a CPU optimizer) */
float *rt_state_alloc(const rt_param *p, size_t k, size_t bytes);
void rt_spare_keep(jopt_optim *opt, rt_param *p, size_t k, float *buf, int64_t bytes);

/* guard.c: while a step runs the closure.  rt_guard_enter marks the
 * optimizer busy, with a token in `slot`, a local of the caller's frame;
 * rt_guard_leave ends it.  rt_busy: JOPT_EINVAL (with a message naming
 * fn) if called from inside that closure; a step left by longjmp is
 * cleared instead.  rt_free_deferred: 1 if jopt_optim_free must only mark
 * the optimizer (the step frees it when the closure returns). */
void rt_guard_enter(jopt_optim *opt, volatile uint64_t *slot);
/* in the function that calls the closure, just before the call */
#define RT_GUARD_CALL(opt) \
    ((opt)->closure_frame = (uintptr_t)__builtin_frame_address(0))
void rt_guard_leave(jopt_optim *opt);
int rt_busy(jopt_optim *opt, const char *fn);
int rt_free_deferred(jopt_optim *opt);

/* ctx.c: starts the context's thread pool if it has none; a pool that
 * cannot start leaves steps on the caller's thread, which is not an error */
int rt_ctx_pool(jopt_ctx *ctx);
/* ctx.c: the parallel-for for `total` elements of work: the pool from
 * RT_PARALLEL_MIN up, else the caller alone (with FTZ/DAZ if asked);
 * `par` is its storage */
typedef struct rt_par {
    rt_pool *pool;
    jopt_parallel_fn run; /* instead of pool, if set */
    void *run_user;
    int flush;
} rt_par;
cg_parallel rt_ctx_parallel(const jopt_ctx *ctx, int64_t total, rt_par *par);
/* ctx.c: the spec `name` resolves to, loaded once per file text (a cache
 * hit reads the file but starts no Lua); rt_spec_put drops the reference */
int rt_spec_get(jopt_ctx *ctx, const char *name, cg_spec **out, char *err);
void rt_spec_put(jopt_ctx *ctx, cg_spec *spec);
/* ctx.c: sets ctx->err and returns `status` */
int rt_fail(jopt_ctx *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* copies codegen's message into ctx->err, prefixed by `where` */
int rt_fail_cg(jopt_ctx *ctx, int status, const char *where, const char *err);

/* serial.c: the byte streams of the checkpoint formats (checkpoint.c,
 * sched_io.c).  Fields are written in the host's order (little-endian on
 * every host jopt builds for).  A writer with buf NULL only counts. */
typedef struct rt_out {
    unsigned char *buf;
    size_t len, cap;
} rt_out;
void rt_put(rt_out *o, const void *p, size_t n);
void rt_put_u32(rt_out *o, uint32_t v);
void rt_put_u64(rt_out *o, uint64_t v);
void rt_put_f64(rt_out *o, double v);
void rt_put_str(rt_out *o, const char *s); /* u32 length, bytes */
void rt_put_seal(rt_out *o);                /* u64 FNV-1a of all before */

/* a reader that never reads past len: a short read sets bad, and every
 * read after it gives 0 */
typedef struct rt_in {
    const unsigned char *p;
    size_t len, pos;
    int bad;
} rt_in;
const void *rt_take(rt_in *r, size_t n);
uint32_t rt_get_u32(rt_in *r);
uint64_t rt_get_u64(rt_in *r);
double rt_get_f64(rt_in *r);
int rt_get_str_eq(rt_in *r, const char *want); /* a string equal to want */

/* whether the last 8 bytes are the FNV-1a of those before */
int rt_sealed(const void *buf, size_t len);

/* writes `path` atomically (temporary file, fsync, rename, fsync of the
 * folder); on failure the previous file is intact and `fn` names the call
 * in the message */
int rt_write_atomic(jopt_ctx *ctx, const char *fn, const char *path,
                    const void *buf, size_t len);
/* reads a whole regular file, by its real size; caller frees *buf */
int rt_read_file(jopt_ctx *ctx, const char *fn, const char *path,
                 unsigned char **buf, size_t *len);

/* gpu.c: optimizers on a GPU (docs/gpu.md).  A context's device is
 * shared by the optimizers made on it; an optimizer's device side keeps
 * its stream, its groups' states and its step's work space there. */
struct rt_gpu;
struct rt_gopt;
struct rt_gmod;
int rt_gpu_open(jopt_ctx *ctx, const char *device, struct rt_gpu **out);
void rt_gpu_put(struct rt_gpu *gpu); /* drops a reference; NULL is a no-op */
/* the device side of a new optimizer on ctx->gpu (before its groups are
 * built, so that their kernels are built for the device) */
int rt_gopt_new(jopt_optim *opt, const char *fn);
void rt_gopt_free(jopt_optim *opt);
const char *rt_gpu_arch(const jopt_optim *opt); /* NULL on the CPU */
/* every buffer of groups [from, ngroups) is memory of the device */
int rt_gpu_check_groups(jopt_optim *opt, const char *fn, size_t from);
int rt_gpu_check_buffer(jopt_optim *opt, const char *fn, const void *p,
                        size_t group, size_t index, const char *what);
/* a state of n floats on the device, filled with v (as 32-bit words; a
 * double's two halves for CG_KIND_SCALAR64), ordered on the stream */
int rt_gpu_state_new(jopt_optim *opt, int64_t n, int kind, double v, float **out);
void rt_state_free(const jopt_optim *opt, float *state); /* either kind */
/* a step of this step's kernels (p->k of each parameter): prepare loads
 * them and makes room (nothing changes that the user sees), run enqueues
 * the copies and launches (after the state is made) */
int rt_gpu_prepare(jopt_optim *opt, const char *fn);
int rt_gpu_run(jopt_optim *opt, const char *fn);
/* waits for the stream (before device memory is freed); errors ignored */
void rt_gpu_drain(const jopt_optim *opt);
int rt_gpu_zero_grad(jopt_optim *opt);
/* waits for the stream and brings the groups' states to the host */
int rt_gpu_pull(const jopt_optim *opt, const char *fn);
/* host bytes from device memory, after what the stream holds */
int rt_gpu_read(const jopt_optim *opt, const char *fn, void *dst,
                const void *src, size_t bytes);
/* the checkpoint's state bytes from the device (a failure is kept until
 * rt_gpu_put_status) */
void rt_put_state(const jopt_optim *opt, rt_out *o, const float *p, size_t bytes);
int rt_gpu_put_status(const jopt_optim *opt, const char *fn);
/* loaded state: host arrays replaced by device copies (all or none) */
int rt_gpu_adopt(jopt_optim *opt, const char *fn, float **state,
                 const int64_t *count, size_t n);
void rt_gpu_gstate_changed(jopt_optim *opt, size_t group);
void rt_gmod_put(struct rt_gmod *m); /* NULL is a no-op */

/* The allocator of what a public entry point works on, made current for
 * the call (cg_mem.h): RT_API_SCOPE(ctx), (opt), (spec), (kernel), (sched)
 * first thing in every jopt_* function that may allocate. */
const cg_allocator *rt_alloc_of_ctx(const jopt_ctx *ctx);
const cg_allocator *rt_alloc_of_optim(const jopt_optim *opt);
const cg_allocator *rt_alloc_of_spec(const jopt_spec *s);
const cg_allocator *rt_alloc_of_kernel(const jopt_kernel *k);
const cg_allocator *rt_alloc_of_sched(const jopt_sched *s);
#define RT_API_SCOPE(x)                                                        \
    CG_MEM_SCOPE(_Generic((x),                                                 \
        jopt_ctx *: rt_alloc_of_ctx, const jopt_ctx *: rt_alloc_of_ctx,        \
        jopt_optim *: rt_alloc_of_optim, const jopt_optim *: rt_alloc_of_optim, \
        jopt_spec *: rt_alloc_of_spec, const jopt_spec *: rt_alloc_of_spec,    \
        jopt_kernel *: rt_alloc_of_kernel,                                     \
        const jopt_kernel *: rt_alloc_of_kernel,                               \
        jopt_sched *: rt_alloc_of_sched,                                       \
        const jopt_sched *: rt_alloc_of_sched)(x))

#endif /* RT_H */
