/*
 * cg.h - all the runtime sees of codegen, and the one internal header the
 * tests may include besides jopt.h.
 *
 *   spec text --cg_spec_load--> cg_spec (hyperparameter schema, state names)
 *   options text --cg_options_parse--> a value vector (checked by the spec)
 *   cg_spec + values --cg_kernel_get--> cg_kernel
 *       (sandboxed trace -> validated graph -> LLVM IR -> O3 -> LLJIT, cached)
 *   cg_kernel + tensors --cg_batch_run--> the update, or a vector kernel's
 *       results (prologue, passes, in-order merges of sums, epilogue)
 *
 * No Lua or LLVM type crosses this header.  Status codes are jopt's; every
 * function that fails writes a message into `err` (CG_ERRLEN bytes).
 */
#ifndef CG_H
#define CG_H

#include <stddef.h>
#include <stdint.h>

#include "jopt.h"
#include "cg_mem.h"

#define CG_ERRLEN 1024
#define CG_MAX_SLOTS 64       /* arrays a kernel takes: p, g, states */
#define CG_MAX_UNIFORMS 4096  /* per-step values a kernel reads */
#define CG_MAX_REDUCE 16      /* sums over the tensor in one update */
#define CG_MAX_RESULTS 16     /* per-call results of a vector kernel */
#define CG_MAX_CHOICES 16     /* names a choice hyperparameter allows */
#define CG_MAX_TUPLE 8        /* values a tuple hyperparameter holds */
#define CG_MAX_GSTATE 16      /* per-group states of a spec */
#define CG_MAX_AXISRED 8      /* row (or column) reductions in one update */
#define CG_MAX_INPUTS 8       /* per-element inputs besides the gradient */
#define CG_MAX_RANK 8         /* dimensions of a tensor */
/* A call's parts are cut into tasks of this many elements (a multiple of
 * 16 floats, so cuts fall on 64-byte boundaries of an aligned tensor).
 * Sums are added range by range in this fixed cut, so they do not depend
 * on the thread count. */
#define CG_CHUNK JOPT_TASK_ELEMS

/* FNV-1a, 64 bits: the key of the kernel cache and the seal of
 * checkpoints.  The offset basis is FNV's, 14695981039346656037
 * (0xcbf29ce484222325); jopt before issue 16 used it without its last
 * digit, and checkpoint loaders still accept seals made with that one
 * (CG_FNV_INIT_OLD). */
#define CG_FNV_INIT 14695981039346656037ull
#define CG_FNV_INIT_OLD 1469598103934665603ull
uint64_t cg_fnv(uint64_t h, const void *p, size_t n);

typedef struct cg_spec cg_spec;
typedef struct cg_jit cg_jit;

/* Element types of a kernel's arrays (jopt_dtype's values).  Kernels load
 * every element as float32, compute in float32 ("opmath", as torch's
 * fused CPU kernels) and round once, when they store. */
enum { CG_DT_F32 = 0, CG_DT_BF16 = 1, CG_DT_F16 = 2, CG_NDT };
/* bytes per element of a dtype */
static inline int cg_dt_size(int dt) { return dt == CG_DT_F32 ? 4 : 2; }
const char *cg_dt_name(int dt); /* "float32", "bfloat16", "float16" */
/* v rounded to dt (to nearest even, as a kernel's store), into n
 * elements at dst; element i of src widened to double */
void cg_dt_fill(void *dst, int dt, int64_t n, double v);
double cg_dt_get(const void *src, int dt, int64_t i);
typedef struct cg_kernel cg_kernel;

/* ---- Specs -------------------------------------------------------------- */

typedef enum cg_hyper_kind {
    CG_HYPER_NUMBER,
    CG_HYPER_BOOL,
    CG_HYPER_CHOICE /* one of a list of names; its value is the index */
} cg_hyper_kind;

/* One hyperparameter: a number, a boolean, a choice, or a tuple of `len`
 * numbers.  Its values live at [offset, offset + len) of a group's value
 * vector. */
typedef struct cg_hyper {
    const char *name;
    cg_hyper_kind kind;
    int len;    /* 1 for a scalar, the tuple's length otherwise */
    int tuple;  /* written as a tuple in the spec ({0.9, 0.999}) */
    int integer; /* its default is a Lua integer (max_iter = 20) */
    int runtime_ok; /* in the spec's `runtime` list: used arithmetically
                       only, so it can be passed per step, not folded */
    int optional; /* a number whose default is `none` (torch's None):
                     NaN in a value vector while unset */
    int infinite; /* in the spec's `infinite` list: may be +-inf (an
                     absent bound, as Rprop's step_sizes); every other
                     number must be finite */
    const char *const *choices; /* CG_HYPER_CHOICE: the names, default first */
    int nchoices;
    int offset;
} cg_hyper;

/* A vector kernel from the spec's `kernels` table (closure optimizers):
 * a loop over flat vectors bound to its arrays, with per-call scalars,
 * returning per-call results (sums, maxima). */
typedef struct cg_vkernel_sig {
    const char *name;
    int narrays, nscalars;
    const char *const *arrays; /* their names, in the spec's order */
    const char *const *scalars;
} cg_vkernel_sig;

/* Finds and loads a spec: `name` is looked up as <dir>/<name>.lua in each of
 * `dirs`; a name containing '/' or ending in ".lua" is a path.  Reads the
 * spec's table (doc, hyper, state, check, update) in a sandbox. */
int cg_spec_load(const char *const *dirs, size_t ndirs, const char *name,
                 cg_spec **out, char *err);
void cg_spec_free(cg_spec *spec);
/* cg_spec_load in two halves, for a cache of loaded specs: finding and
 * reading the file (caller frees *path and *text with cg_free), and
 * parsing it (takes ownership of path and text, from cg_malloc, even on
 * failure). */
int cg_spec_read(const char *const *dirs, size_t ndirs, const char *name,
                 char **path, char **text, size_t *len, char *err);
int cg_spec_parse(char *path, char *text, size_t len, cg_spec **out,
                  char *err);

const char *cg_spec_name(const cg_spec *spec);   /* "adam" */
const char *cg_spec_path(const cg_spec *spec);   /* as opened */
const char *cg_spec_doc(const cg_spec *spec);
const char *cg_spec_text(const cg_spec *spec, size_t *len); /* the source */
size_t cg_spec_nhyper(const cg_spec *spec);
const cg_hyper *cg_spec_hyper(const cg_spec *spec, size_t i); /* by name */
const cg_hyper *cg_spec_find_hyper(const cg_spec *spec, const char *name);
size_t cg_spec_nvalues(const cg_spec *spec);     /* length of a value vector */
const double *cg_spec_defaults(const cg_spec *spec);
size_t cg_spec_nstate(const cg_spec *spec);      /* every state the spec names */
const char *cg_spec_state_name(const cg_spec *spec, size_t i); /* sorted */

/* A spec's `method` ("lbfgs": the runtime's control flow that drives its
 * vector kernels instead of an update), or NULL; and its kernels, sorted
 * by name. */
const char *cg_spec_method(const cg_spec *spec);
size_t cg_spec_nvkernels(const cg_spec *spec);
const cg_vkernel_sig *cg_spec_vkernel(const cg_spec *spec, size_t i);
const cg_vkernel_sig *cg_spec_find_vkernel(const cg_spec *spec,
                                           const char *name);
/* An update spec's named kernels (`kernels = { eval = function ... }`),
 * sorted; the index of one, or -1. */
size_t cg_spec_nnamed(const cg_spec *spec);
const char *cg_spec_named(const cg_spec *spec, size_t i);
int cg_spec_find_named(const cg_spec *spec, const char *name);
/* Its per-element inputs besides the gradient (`inputs`), in order. */
size_t cg_spec_ninputs(const cg_spec *spec);
const char *cg_spec_input(const cg_spec *spec, size_t i);
/* 1 if t counts the group's steps (`steps = "group"`), 0 the tensor's. */
int cg_spec_group_steps(const cg_spec *spec);

/* Runs the spec's check() on a value vector: JOPT_EINVAL with the spec's
 * message if the values are refused.  Keeps a sandbox in the spec between
 * calls, so a scheduler's per-step checks cost microseconds. */
int cg_spec_check(cg_spec *spec, const double *values, char *err);
/* Runs the spec's check_shape(size) on a tensor's shape (`rank` sizes,
 * last first): JOPT_EINVAL with the spec's message if it refuses the
 * shape (Muon: 2-D only); JOPT_OK for a spec without one. */
int cg_spec_check_shape(cg_spec *spec, const int64_t *shape, int rank,
                        char *err);
int cg_spec_has_shape_check(const cg_spec *spec);

/* ---- Options (options.c) -------------------------------------------------
 * The options string, shared by optimizers and schedulers:
 *   "lr=1e-3 betas=0.9,0.999 betas=(0.9,0.999) milestones=[30,80]"
 * Items are separated by white space; a value is a word, or a list of
 * words separated by commas, optionally in ( ) or [ ] (where spaces are
 * allowed). */

#define CG_OPT_NAME 64
#define CG_OPT_TEXT 512
#define CG_OPT_MAXVALS CG_OPT_TEXT /* no limit but the text's length */

/* one item of an options string: its name and its values' text */
typedef struct cg_opt_item {
    char name[CG_OPT_NAME];
    char text[CG_OPT_TEXT];       /* the values, NUL-separated */
    const char *val[CG_OPT_MAXVALS];
    int nval;
} cg_opt_item;

/* Reads the next item at *cursor into `it` and advances: 1 for an item,
 * 0 at the end, JOPT_EINVAL (with a message) for malformed text. */
int cg_opt_next(const char **cursor, cg_opt_item *it, char *err);

/* Overlays "name=value ..." onto a spec's value vector: each value read
 * by its hyperparameter's kind; nothing changes on error. */
int cg_options_parse(const cg_spec *spec, const char *text, double *values,
                     char *err);
/* The options the runtime reads itself, not the spec (NULL-terminated):
 * element types, stochastic rounding and its seed.  No spec may name a
 * hyperparameter so. */
extern const char *const cg_prec_options[];
/* The same, leaving alone the items named in `skip` (NULL-terminated):
 * options that another layer reads (cg_prec_options). */
int cg_options_parse_skip(const cg_spec *spec, const char *text, double *values,
                          const char *const *skip, char *err);
/* "name" or "name[i]": the offset in a value vector and the hyperparameter,
 * or -1 with a message. */
int cg_option_offset(const cg_spec *spec, const char *name,
                     const cg_hyper **hyper, char *err);
/* Whether v is a value of the hyperparameter's kind (a boolean is 0 or 1,
 * a choice the index of a name, a number finite unless the spec lists it
 * as `infinite`, and NaN only for an optional one: None).  `where`
 * prefixes the message. */
int cg_hyper_check(const cg_hyper *h, double v, const char *where, char *err);
/* v with the fewest digits that read back exactly; a whole number without
 * an exponent ("50", "0.9", "1e-08") */
void cg_format_number(double v, char *buf, size_t cap);
/* The hyperparameter's value as the options string writes it ("0.9,0.999",
 * "true", "strong_wolfe", "None"). */
void cg_hyper_format(const cg_hyper *h, const double *v, char *buf,
                     size_t cap);

/* ---- Kernels ------------------------------------------------------------ */

/* How a state array starts: filled with a constant, or unset (the first
 * write defines it, as torch's `buf is None`). */
typedef enum cg_init { CG_INIT_CONST, CG_INIT_UNSET } cg_init;

/* What an array slot holds, and how many floats it takes for a tensor of
 * n elements whose last two sizes are R (rows) and C (columns): */
typedef enum cg_kind {
    CG_KIND_ELEM,     /* one float per element: n */
    CG_KIND_ROW,      /* one per row, reduced over the last axis: n / C */
    CG_KIND_COL,      /* one per column, over the second-to-last: n / R */
    CG_KIND_SCALAR,   /* one float32 per tensor: 1 */
    CG_KIND_SCALAR64, /* one double per tensor: 2 floats' room, 8-aligned */
    CG_KIND_INPUT,    /* a per-element input of the step (read only): n */
    CG_KIND_WORK      /* a matrix kernel's workspace buffer (the batch's) */
} cg_kind;

/* The arrays a kernel takes: slot 0 is the parameter, slot 1 the gradient,
 * slots 2.. the states listed here (indices into the spec's state names),
 * then the inputs.  A vector kernel's arrays are its own. */
typedef struct cg_layout {
    int nstate;
    const int *state;         /* spec state index of slot 2 + i */
    const cg_init *init;
    const double *init_value; /* for CG_INIT_CONST */
    const uint8_t *kind;      /* cg_kind of slot 2 + i */
    int ninput;
    const int *input;         /* spec input index of slot 2 + nstate + i */
    int ngstate;              /* per-group states */
    const int *gstate;        /* their spec state indices */
    const uint8_t *gstate_f32; /* 1: rounded to float32 when stored */
    const double *ginit;
    int has_unset;            /* some state starts unset */
    int has_scalar;           /* some state is per tensor or per group */
    int nuniform;             /* per-step values the kernel keeps */
    int nreduce;              /* reductions over the data per call */
    int nsums, nmaxima;       /* of which sums, maxima */
    int npasses;              /* passes over the data per call */
    int rank;                 /* the tensors' rank it was built for; -1:
                                 any (the spec did not look at shapes) */
    int shaped;               /* built for one shape (cg_request.shape) */
    int64_t fixed_cols, fixed_rows; /* built for tensors whose last two
                                 sizes are these (0: any; cg_kernel_serves) */
    /* matrix kernels: products run as GEMMs (through BLAS) between the
     * loops; a call takes `scratch` floats of the batch's workspace and
     * room for `mtasks` tasks, and runs alone (cg_batch_reserve_matrix) */
    int ngemm;
    int64_t scratch;
    size_t mtasks;
    double gemm_flops;        /* per call: 2 m n k summed over the GEMMs */
    /* vector kernels: arrays are slots 0..narrays-1 (no p, g or state) */
    int narrays, nscalars, nresults;
    uint64_t read;            /* bit per array slot the kernel loads */
    uint64_t written;         /* bit per array slot the kernel stores to */
    int npass;                /* passes over the elements, and each one's */
    const uint64_t *pass_read, *pass_written; /* loads and stores */
    const uint8_t *dtype;     /* CG_DT_* of each array slot */
    int nlevels;              /* levels of the update (batch protocol) */
    unsigned glevels;         /* bit per level at which a group reduction
                                 takes its per-tensor values (cg_batch_hook) */
} cg_layout;

/* Floats a state of kind k takes for a tensor of n elements and `rank`
 * sizes (shape[0] the last). */
int64_t cg_kind_numel(int kind, int64_t n, const int64_t *shape, int rank);

/* Creates the JIT (lazily: the first compile starts LLVM). */
int cg_jit_new(cg_jit **out, char *err);
void cg_jit_free(cg_jit *jit); /* every kernel must be released first */
void cg_jit_stats(const cg_jit *jit, size_t *compiles, size_t *hits);

typedef struct cg_request {
    const cg_spec *spec;
    const double *values; /* cg_spec_nvalues() of them, already checked */
    const uint8_t *runtime; /* per hyper: passed per step, not folded
                               (only runtime_ok ones); NULL for none */
    int fresh;            /* 1: trace with unset states reading nil */
    int reference;        /* 1: the reference interpreter, no LLVM */
    const char *vkernel;  /* a vector kernel of the spec by name (values,
                             runtime and fresh are then unused); NULL: the
                             update */
    const char *named;    /* a named kernel of an update spec ("eval"),
                             run on the parameters and their state; NULL:
                             the update */
    int rank;             /* the tensor's rank (a kernel that does not look
                             at it serves every rank) */
    const int64_t *shape; /* its sizes, last first (rank of them), or NULL;
                             a spec that reads them (shape(), matmul) gets a
                             kernel for that shape */
    unsigned inputs;      /* bit per spec input given this step */
    /* mixed precision (zero: all float32, as before) */
    uint8_t dtype;        /* CG_DT_* of the parameter */
    uint8_t grad_dtype;   /* of the gradient */
    uint8_t state_dtype;  /* of every per-element state */
    uint8_t stochastic;   /* 1: bfloat16 stores round stochastically */
    uint8_t grad_scale;   /* 1: the gradient is divided by the call's
                             grad_scale, and the quotient written back to
                             it (torch's fused kernels with GradScaler) */
    const char *arch;     /* NULL: the host CPU; "sm_80", "sm_90", ...: an
                             NVIDIA GPU (cg_kernel_gpu); "sim": the same
                             kernels as host IR, for tests without a GPU */
} cg_request;

/* Returns the kernel for a request, from the cache or compiled now.  The
 * caller holds a reference and drops it with cg_kernel_release. */
int cg_kernel_get(cg_jit *jit, const cg_request *req, cg_kernel **out,
                  char *err);
void cg_kernel_release(cg_kernel *k); /* NULL is a no-op */

const cg_layout *cg_kernel_layout(const cg_kernel *k);

/* Whether kernel k, got for some tensor of this rank, also serves a tensor
 * of this shape (last first): a kernel built for one shape serves only
 * that shape, and a kernel of row and column loops serves tensors with
 * short rows only when built for their last two sizes (cg_kernel_get
 * builds one such kernel per pair of sizes). */
int cg_kernel_serves(const cg_kernel *k, const int64_t *shape, int rank);

/* The spec's requirements of a step (require_that on a per-step condition:
 * Sophia needs its Hessian input at the steps where the reference would
 * estimate one itself), for a tensor's step t with these values, sizes
 * (last first) and group state: JOPT_OK, or JOPT_EINVAL with
 * "spec:line: message".  Evaluated before the step changes anything. */
int cg_kernel_guard(const cg_kernel *k, double t, const double *values,
                    const int64_t *shape, int rank, int64_t numel,
                    const double *gstate, char *err);

/* A request's kernel as text: "graph" (the validated graph, in the stable
 * form docs/specs.md describes), "ir" (optimised LLVM IR) or "asm"
 * (machine code).  Caller frees *text with cg_free() (cg_mem.h). */
int cg_emit_text(cg_jit *jit, const cg_request *req, const char *what,
                 char **text, char *err);

/* ---- Running kernels: the batch (batch.c) --------------------------------
 * A batch runs calls of kernels in the one order that makes every engine
 * and every thread count give the same bits.  A kernel has levels (one, or
 * more when stores depend on reductions); for each level, in turn:
 *
 *   per-step   each call's per-step values, in double, on the caller;
 *              then each group's reductions of per-tensor values, call
 *              by call in order
 *   loops      each of the level's loops over every call's data cut into
 *              tasks of a fixed size, on the caller's parallel-for; a task
 *              adds its sums in 16 fixed lanes
 *   merge      each call's task sums, in task order, on the caller
 *
 * At the last level the tensors' and groups' scalar states are written.
 * Tasks of consecutive calls of one kernel run in one kernel invocation.
 *
 * A matrix kernel's call runs alone, level by level, in its turn among
 * the calls (so that one workspace serves every call): each level first
 * runs the level's products as GEMMs, cut into blocks fixed by their
 * sizes, on the parallel-for; then its per-step values and loops. */

/* One tensor's part of a call: its arrays in the layout's slot order and
 * its length. */
typedef struct cg_part {
    float *const *arrays;
    int64_t n;
} cg_part;

/* One call of a kernel over its parts, seen as one vector: one set of
 * per-step values, one set of sums over all the parts in order.  An
 * update makes one call per tensor; a vector kernel one call over a
 * group.  Calls of one group (sharing `gstate`) must be consecutive. */
typedef struct cg_call {
    const cg_kernel *k;
    const cg_part *parts;
    size_t nparts;        /* one for a kernel of rank >= 2 */
    double t;             /* the step count, 1 on the first (updates) */
    const double *values; /* hyperparameters, or a vector kernel's scalars */
    const int64_t *shape; /* the tensor's sizes, last first (NULL: flat) */
    int rank;
    double *gstate;       /* the group's state, by spec state index (the
                             layout's gstate[] say which), or NULL */
    double *gred;         /* the group's reductions (CG_MAX_REDUCE doubles) */
    double *u;            /* room for layout->nuniform + 1 doubles */
    double *work;         /* room for cg_call_work() doubles */
    double *results;      /* a vector kernel's results (layout->nresults
                             doubles), or NULL */
    double grad_scale;    /* what the gradient is divided by (a kernel
                             built with grad_scale) */
    uint64_t srkey;       /* stochastic rounding's key for this call:
                             cg_sr_key(seed, step, tensor) */
} cg_call;

/* The key of the counter-based generator behind stochastic rounding: the
 * random bits of element i of a call's array depend only on (seed, step,
 * tensor, array, i), so they are the same for any thread count, cut or
 * engine. */
uint64_t cg_sr_key(uint64_t seed, uint64_t step, uint64_t tensor);

/* Doubles of workspace a call of k over a tensor of n elements of that
 * shape needs (for its row and column reductions). */
size_t cg_call_work(const cg_kernel *k, int64_t n, const int64_t *shape,
                    int rank);

/* The caller's parallel-for: runs fn(arg, lo, hi) over shares of [0, n)
 * that cover it, and returns when all are done. */
typedef void (*cg_range_fn)(void *arg, size_t lo, size_t hi);
typedef struct cg_parallel {
    void (*run)(void *pool, size_t n, cg_range_fn fn, void *arg);
    void *pool;
} cg_parallel;

typedef struct cg_batch cg_batch;
int cg_batch_new(cg_batch **out, char *err);
void cg_batch_free(cg_batch *b); /* NULL is a no-op */
/* The most tasks a loop over a part of n elements of that shape (NULL:
 * flat) is cut into. */
size_t cg_batch_tasks(int64_t n, const int64_t *shape, int rank);
/* Room for `ntasks` tasks and `ncalls` calls in one run (never shrinks).
 * JOPT_ENOMEM changes nothing. */
int cg_batch_reserve(cg_batch *b, size_t ntasks, size_t ncalls, char *err);
/* Room for one matrix kernel's call at a time: `floats` of workspace and
 * `tasks` (cg_layout.scratch, .mtasks; never shrinks).  JOPT_ENOMEM
 * changes nothing. */
int cg_batch_reserve_matrix(cg_batch *b, int64_t floats, size_t tasks,
                            char *err);
/* Runs the calls; `par` NULL runs every task on the caller.  Allocates
 * nothing; JOPT_EINVAL (nothing run) when the calls need more room than
 * was reserved. */
int cg_batch_run(cg_batch *b, const cg_call *calls, size_t ncalls,
                 const cg_parallel *par, char *err);

/* Group reductions across processes.  At each level, the batch folds a
 * group's reductions of per-tensor values over the group's calls, in call
 * order (cg_fold).  When a group's tensors are spread over processes, each
 * holding some, a hook does that fold instead: at every level in
 * `levels` (a bit per level, the same on every process, even for a level
 * none of this batch's calls has), after the level's per-step values, the
 * batch gives it each call's values and the hook writes every group's
 * reductions (calls[c].gred[r] for r in parts[c].mask).  It returns a
 * jopt status: any other than JOPT_OK stops the run, and cg_batch_run
 * returns it with the hook's message in `err`. */
typedef enum cg_fold_kind { CG_FOLD_SUM, CG_FOLD_MAX } cg_fold_kind;
typedef struct cg_gpart {
    uint32_t mask;                 /* reductions taking a value this level */
    uint8_t kind[CG_MAX_REDUCE];   /* cg_fold_kind of each */
    double v[CG_MAX_REDUCE];       /* the call's per-tensor value for each */
} cg_gpart;
typedef int (*cg_gfold_fn)(void *arg, int level, const cg_call *calls,
                           const cg_gpart *parts, size_t ncalls, char *err);
typedef struct cg_batch_hook {
    cg_gfold_fn fold;
    void *arg;
    unsigned levels;
} cg_batch_hook;
/* Sets (or with NULL, removes) the batch's hook; copied. */
void cg_batch_set_hook(cg_batch *b, const cg_batch_hook *hook);
/* How a group reduction folds: its start, and acc with one more value (a
 * sum in double; a maximum that propagates NaN, with -0 < +0). */
double cg_fold_identity(int kind);
double cg_fold(int kind, double acc, double v);

/* ---- GPU kernels (emit_nvptx.c; docs/gpu.md) -----------------------------
 * A request with an `arch` gets the update as CUDA kernels (PTX) for one
 * step of a group's tensors, in launches the runtime makes in this order
 * (for tensors of several kernels, each kind over all of them before the
 * next kind):
 *
 *   for each level:
 *     CG_GPU_VALUES  a thread per tensor: its sums of the level before,
 *                    merged chunk by chunk in order; the per-step values
 *                    that depend on sums or on state kept on the device
 *                    (scalar and group states), in double; the operands
 *                    of group sums; at the last level the new scalar
 *                    states, and the group's new states (first tensor)
 *     CG_GPU_GROUP   the group's sums of per-tensor values, tensor by
 *                    tensor in order (one thread per sum)
 *     CG_GPU_LOOP    the level's loop over the elements: a block per chunk
 *                    of the chunk table; a loop with sums writes each
 *                    chunk's (CG_CHUNK elements, 16 lanes, as the CPU)
 *   CG_GPU_COMMIT    the group's new states replace the old
 *
 * The per-step values that depend only on hyperparameters, t and the
 * shape are computed on the host (cg_kernel_host_values) and uploaded.
 * Device ABI, every field 8 bytes:
 *   tensor record: numel, chunk0 (its first chunk in the step's table of
 *     CG_CHUNK chunks), pos (its place among the group's tensors), double
 *     *h (its host values), double *d (room for nd values), then float
 *     *arrays[nslots] in the layout's slot order (a scalar state's array
 *     holds its float, or its double)
 *   chunk table entry: int64 record index (in the launch's record array),
 *     int64 first element
 *   partial sums: double[chunk][CG_MAX_REDUCE]
 *   group block: double gstate[CG_MAX_SLOTS] by spec state index, gnew[
 *     CG_MAX_SLOTS], gred[CG_MAX_REDUCE]
 *   group operands: double[pos][ngred]
 *   VALUES (tl, ntl, partial, grp, gargs): grid ceil(ntl / CG_GPU_VBLOCK)
 *   GROUP (grp, gargs, ntensors): one block of 32
 *   LOOP (tl, ct, nchunks, chunk, partial): CG_GPU_BLOCK threads a block,
 *     partial pointing at the launch's first chunk; block b does chunks b,
 *     b + grid, ...; chunk is CG_CHUNK for a loop with sums, else any
 *     multiple of 2048
 *   COMMIT (grp): one block of 64 */
#define CG_GPU_BLOCK 256
#define CG_GPU_VBLOCK 64
#define CG_GPU_REC_HEAD 5     /* fields before a record's arrays */
#define CG_GPU_GRP_DOUBLES (2 * CG_MAX_SLOTS + CG_MAX_REDUCE)
#define CG_GPU_MAX_LAUNCH 32 /* launches of one kernel: 3 per level, and 1 */

typedef enum cg_gpu_kind {
    CG_GPU_VALUES, CG_GPU_GROUP, CG_GPU_LOOP, CG_GPU_COMMIT
} cg_gpu_kind;

typedef struct cg_gpu_launch {
    int kind;       /* cg_gpu_kind */
    int level;
    int sums;       /* a loop that writes partial sums (chunks of CG_CHUNK) */
    char name[48];  /* its entry point */
} cg_gpu_launch;

typedef struct cg_gpu_info {
    const char *arch;          /* "sm_90", or "sim" */
    const char *text;          /* PTX (for "sim": host LLVM IR) */
    size_t len;
    int nlaunch;
    const cg_gpu_launch *launch; /* in level order, COMMIT last */
    int nlevels;
    int nslots;                /* arrays in a tensor record */
    int nh;                    /* host values per tensor */
    int nd;                    /* device values per tensor */
    int h_shape;               /* the host values depend on the shape */
    int ngred;                 /* group sums */
    uint8_t gred_kind[CG_MAX_REDUCE]; /* CG sum (0) or maximum (1) */
    uint8_t gred_level[CG_MAX_REDUCE]; /* the level its operand is known at */
    uint64_t loads, stores;    /* array slots the loops read and write */
} cg_gpu_info;

/* What a tensor's host values depend on. */
typedef struct cg_env_host {
    double t;             /* its step count */
    const double *values; /* the group's hyperparameters */
    const int64_t *shape; /* sizes, last first (NULL: flat) */
    int rank;
    int64_t numel;
} cg_env_host;

/* A GPU kernel's launches and PTX; NULL for a host kernel. */
const cg_gpu_info *cg_kernel_gpu(const cg_kernel *k);
/* A GPU kernel's host values for one tensor: nh doubles into h. */
void cg_kernel_host_values(const cg_kernel *k, const cg_env_host *env,
                           double *h);

#endif /* CG_H */
