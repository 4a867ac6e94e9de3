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
    rt_spec_entry *specs; /* every spec loaded, kept until the context goes */
    char **dirs; /* spec search path */
    size_t ndirs;
    char *path;  /* the same, ':'-separated (jopt_ctx_spec_path) */
    cg_jit *jit;
    jopt_engine engine;
    rt_pool *pool;  /* started by the first step that can use it */
    int threads;    /* 0: every core */
    int flush;      /* FTZ/DAZ during step() */
    struct rt_gpu *gpu; /* the device new optimizers live on; NULL: the CPU */
};

typedef struct rt_param {
    float *p, *g; /* borrowed */
    int64_t n;
    int rank;                     /* 1 for a tensor given without a shape */
    int64_t shape[CG_MAX_RANK];   /* its sizes, the last first */
    int64_t step;   /* steps taken */
    float **state;  /* one per spec state, NULL until created; owned */
    int64_t *state_n; /* floats each state holds (cg_kind_numel) */
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
} rt_param;

/* A group's kernels for its current values: the update for each rank of
 * its tensors, fresh or steady, with the inputs given, and named kernels.
 * Looked up per step; a variant not yet built is built then. */
typedef struct rt_kentry {
    int rank, fresh, named; /* named: index of a named kernel, or -1 */
    unsigned inputs;
    cg_kernel *k;
    struct rt_gmod *mod; /* a GPU kernel loaded on the device, or NULL */
} rt_kentry;

typedef struct rt_kset {
    rt_kentry *e;
    size_t n, cap;
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
} rt_group;

struct rt_closure; /* closure.h */

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
    struct rt_gopt *gpu; /* a GPU optimizer's device side (gpu.c), or NULL */
};

/* optim.c: whether n floats at buf overlap any parameter, gradient or
 * input of the optimizer (other than buf itself): JOPT_EINVAL with a
 * message naming which, else 0 */
int rt_buffer_overlaps(jopt_optim *opt, const float *buf, int64_t n);

/* optim.c: the spec's check() of a group's values */
int rt_check_values(jopt_optim *opt, const char *where, const double *values);

/* kernels.c: a group's kernel for (rank, fresh, inputs, named) under
 * `values` and `runtime`, from the set or built and added to it */
int rt_kset_get(jopt_optim *opt, rt_kset *ks, const char *where,
                const double *values, const uint8_t *runtime, int rank,
                int fresh, unsigned inputs, int named, const cg_kernel **out);
void rt_kset_free(rt_kset *ks);
/* A set for new values holding the same variants as `old` (and at least
 * the steady update for each rank of the group's tensors): built aside,
 * checked against the group's existing state; nothing held on failure. */
int rt_kset_rebuild(jopt_optim *opt, const rt_group *gr, const char *where,
                    const double *values, const uint8_t *runtime,
                    const rt_kset *old, int check_state, rt_kset *out);
/* Whether a parameter's existing states are of the size the kernel's
 * layout gives its shape; -1 if they fit, else the spec state index that
 * does not.  `state_n` as rt_param's (0: absent). */
int rt_state_misfit(const cg_kernel *k, const rt_param *p,
                    const int64_t *state_n);
/* The doubles of per-step values any kernel of the set keeps, plus one. */
size_t rt_kset_uniforms(const rt_kset *ks);

/* optim.c: makes room for per-step values of `need` doubles per parameter
 * (never shrinks); JOPT_ENOMEM changes nothing */
int rt_reserve_uniforms(jopt_optim *opt, size_t need);

/* ctx.c: starts the context's thread pool if it has none; a pool that
 * cannot start leaves steps on the caller's thread, which is not an error */
int rt_ctx_pool(jopt_ctx *ctx);
/* ctx.c: the parallel-for for `total` elements of work: the pool from
 * RT_PARALLEL_MIN up, else the caller alone (with FTZ/DAZ if asked);
 * `par` is its storage */
typedef struct rt_par {
    rt_pool *pool;
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

#endif /* RT_H */
