/*
 * cg_int.h - codegen's private view: the expression graph that a traced spec
 * becomes, the passes over it (validate, plan, print, emit, interpret), and
 * the kernel protocol the batch runs.
 *
 * A graph is a list of nodes in topological order (an operand always comes
 * before its user).  Each node lives in a domain: one value per group, per
 * tensor, per row, per column or per element of a tensor (cg_dom).  Group
 * and tensor values are computed once per step in double; row, column and
 * element values in float32, where a per-step operand is rounded to float.
 *
 * Reductions (sums and maxima over a tensor, over its last axis (rows) or
 * second-to-last (columns), or over the tensors of a group) cut the update
 * into levels: a node's level is one more than that of the reductions it
 * depends on.  A kernel runs level by level, each level being loops over
 * the data (cg_loop) that store what that level computes and accumulate
 * the reductions the next level reads.  Today's updates have one or two.
 */
#ifndef CG_INT_H
#define CG_INT_H

#include "cg.h"
#include "ops.h"

typedef enum cg_op {
#define CG_OP_ENUM(id, name, arity, flags, d, f, ir) CG_##id,
    CG_OPS(CG_OP_ENUM)
#undef CG_OP_ENUM
    CG_NOPS
} cg_op;

/* Where a value lives; the domain of an op is the join of its operands'
 * (ROW and COL join to ELEM). */
typedef enum cg_dom {
    CG_DOM_GROUP,  /* one per group per step: double */
    CG_DOM_TENSOR, /* one per tensor per step: double */
    CG_DOM_ROW,    /* one per row (over the last axis): float32 */
    CG_DOM_COL,    /* one per column (over the second-to-last): float32 */
    CG_DOM_ELEM    /* one per element: float32 */
} cg_dom;

static inline int cg_dom_varying(int d) { return d >= CG_DOM_ROW; }
static inline int cg_dom_join(int a, int b)
{
    return a == b ? a : (a == CG_DOM_ROW && b == CG_DOM_COL) ||
                                (a == CG_DOM_COL && b == CG_DOM_ROW)
                            ? CG_DOM_ELEM
                            : a > b ? a : b;
}

typedef struct cg_node {
    uint8_t op;
    uint8_t dom;     /* cg_dom */
    uint8_t boolean; /* a truth value rather than a number */
    uint8_t level;   /* the level it is first known at */
    int32_t arg[3];
    int32_t slot;    /* LOAD, SCALAR: the array slot; HYPER: the offset in
                        the value vector; GSTATE: the group state; SHAPE:
                        which size; a reduction: its index among its kind */
    int32_t uslot;   /* per-step nodes kept for later: index in u[] */
    int32_t line;    /* the spec line that made it (0: none) */
    double value;    /* CONST */
} cg_node;

#define CG_MAX_NODES 65536
#define CG_MAX_LEVELS 8
/* A range's sums and maxima accumulate in this many lanes, element i of
 * the range in lane (i - begin) % CG_LANES, then the lanes in order
 * (emit.c, interp.c): a fixed order of operations that vectorizes. */
#define CG_LANES 16

/* How a reduction combines: a sum in double, or the NaN-propagating
 * maximum. */
typedef enum cg_reduce_kind { CG_REDUCE_SUM, CG_REDUCE_MAX } cg_reduce_kind;

/* The loops of a level, in the order they run.  ROW and COL loops run over
 * a tensor's row and column values (its reduced arrays); COLS runs over
 * the elements column block by column block, for the column reductions;
 * ELEM over the elements (row blocks in a 2-D kernel). */
typedef enum cg_loop_kind {
    CG_LOOP_ROW, CG_LOOP_COL, CG_LOOP_COLS, CG_LOOP_ELEM, CG_NLOOP_KINDS
} cg_loop_kind;

typedef struct cg_loop {
    uint8_t level, kind;
} cg_loop;

/* How a loop obtains each node (cg_loop_plan). */
typedef enum cg_how {
    CG_HOW_NONE,    /* not needed */
    CG_HOW_UNIFORM, /* a per-step value: u[uslot], or a constant */
    CG_HOW_COMPUTE, /* computed here, per element (or per row/column) */
    CG_HOW_ROWWISE, /* a row value computed once per row (2-D ELEM loop) */
    CG_HOW_RELOAD,  /* stored earlier in the step: read back from its slot */
    CG_HOW_AXIS     /* a row or column reduction's result, from its array */
} cg_how;

typedef struct cg_graph {
    cg_node *nodes;
    int n, cap;
    int32_t *table; /* hash-consing: node index + 1, 0 for empty */
    int tcap;
    /* the arrays: slot 0 the parameter, 1 the gradient, then the states,
     * then the inputs; a vector kernel's arrays are its own */
    int nslots;
    uint8_t kind[CG_MAX_SLOTS];      /* cg_kind */
    int32_t store[CG_MAX_SLOTS];     /* the node stored there, or -1 */
    /* group state: its value at the end of the step, or -1 */
    int ngstate;
    int32_t gstore[CG_MAX_GSTATE];
    /* per-step values other code reads: in uslot order */
    int32_t *uniform;
    int nuniform;
    /* reductions, by kind of result: into a tensor value (red[] of a
     * call), a row or column array, a group value */
    int nreduce, nrowred, ncolred, ngred;
    uint8_t reduce_kind[CG_MAX_REDUCE];
    uint8_t row_kind[CG_MAX_AXISRED], col_kind[CG_MAX_AXISRED];
    uint8_t gred_kind[CG_MAX_REDUCE];
    int32_t gred_arg[CG_MAX_REDUCE]; /* the per-tensor node each sums */
    /* the plan: levels and their loops */
    int nlevels;
    cg_loop loops[CG_MAX_LEVELS * CG_NLOOP_KINDS];
    int nloops;
    int two_d;        /* has row or column values: ELEM loops by rows */
    uint64_t read;    /* slots live code loads */
    /* the state layout the trace produced */
    int state[CG_MAX_SLOTS];       /* spec state index of slot 2 + i */
    cg_init init[CG_MAX_SLOTS];
    double init_value[CG_MAX_SLOTS];
    int nstate;
    int gstate[CG_MAX_GSTATE];     /* spec state index of group state i */
    uint8_t gstate_f32[CG_MAX_GSTATE];
    double ginit[CG_MAX_GSTATE];
    int ninput;                    /* inputs: slots 2 + nstate ... */
    int input[CG_MAX_INPUTS];      /* spec input index of each */
    int rank;                      /* the rank it was traced for; -1: any */
    /* a vector kernel's results: per-call nodes, in the order run()
     * returned them */
    int32_t result[CG_MAX_RESULTS];
    int nresult;
} cg_graph;

/* graph.c */
cg_graph *cg_graph_new(void);
void cg_graph_free(cg_graph *g);
/* Adds (or finds) a node; folds constants.  -1 on allocation failure or
 * when the graph is over CG_MAX_NODES.  `line` is the spec line. */
int32_t cg_graph_const(cg_graph *g, double v);
int32_t cg_graph_leaf(cg_graph *g, cg_op op, int dom, int slot);
int32_t cg_graph_op(cg_graph *g, cg_op op, int32_t a, int32_t b, int32_t c,
                    int line);
int cg_op_arity(cg_op op);
int cg_op_flags(cg_op op);
const char *cg_op_name(cg_op op);
/* The domain a reduction op's result lives in. */
int cg_reduce_dom(cg_op op);
/* Checks ops, types and references, assigns levels, plans the loops and
 * numbers the per-step values other code reads.  Returns JOPT_OK or
 * JOPT_ESPEC with a message naming `where` and the line at fault. */
int cg_graph_finish(cg_graph *g, const char *where, char *err);
/* How loop l obtains each node: how[n] for n < g->n (caller's array). */
void cg_loop_plan(const cg_graph *g, const cg_loop *l, uint8_t *how);
/* The level and loop a stored slot is written in. */
void cg_store_loop(const cg_graph *g, int slot, int *level, int *kind);
/* The slot node i is read back from in loop l (CG_HOW_RELOAD). */
int cg_reload_slot(const cg_graph *g, int32_t i, const cg_loop *l);
/* Whether loop l has anything to do. */
int cg_loop_busy(const cg_graph *g, const cg_loop *l);

/* print.c: the finished graph in its stable text form (docs/specs.md);
 * `slot_names` name the array slots, `gstate_names` the group states,
 * `hyper_names` the value vector's offsets (NULL where unnamed).  Caller
 * frees *text. */
int cg_graph_print(const cg_graph *g, const char *title,
                   const char *const *slot_names,
                   const char *const *gstate_names,
                   const char *const *hyper_names, char **text, char *err);

/* interp.c: the reference semantics, shared by folding, the per-step
 * values and the reference kernel. */
double cg_eval_double(cg_op op, double a, double b, double c);
float cg_eval_float(cg_op op, float a, float b, float c);
/* llvm.maximum on doubles: NaN-propagating, -0 < +0 */
double cg_max_nan(double a, double b);
double cg_reduce_identity(int kind);
double cg_reduce_add(int kind, double acc, double x);

/* What the per-step evaluation of one call reads and writes. */
typedef struct cg_env {
    double t;                 /* the step count */
    const double *values;     /* hyperparameters, or a vector kernel's scalars */
    float *const *arrays;     /* the call's first part's arrays (scalar state) */
    const int64_t *shape;     /* sizes, last first: shape[0] = size(-1) */
    int rank;
    double numel;
    const double *gstate;     /* the group's state */
    const double *red;        /* the call's tensor reductions, or NULL */
    const double *gred;       /* the group's reductions, or NULL */
    int level;                /* evaluate what is known at this level */
    int last;                 /* the last level: write the scalar state */
} cg_env;
/* Evaluates the per-step values known at env->level into u (the values
 * others read) and `scratch` (g->n doubles); at the last level writes the
 * tensor's scalar state back to its arrays (rounded to float32 where the
 * state is float32). */
void cg_interp_uniforms(const cg_graph *g, const cg_env *env, double *u,
                        double *scratch);

/* The kernel ABI (emit.c, interp.c, batch.c): one task of one loop of one
 * tensor: its arrays, its range, its per-step values, where its tensor
 * sums go, and for a 2-D kernel its row and column reduction arrays and
 * its shape.  ELEM and ROW/COL loops: elements [begin, end) of the loop's
 * index space (rows [begin, end) of the tensor in a 2-D ELEM loop); COLS:
 * columns [begin, end) of the matrix whose first row is `base`. */
typedef struct cg_task {
    float *const *arrays;
    int64_t begin, end;
    const double *u;
    double *red;
    double *const *axis;   /* nrowred row arrays, then ncolred column ones */
    int64_t rows, cols;    /* a matrix's rows (size(-2)) and columns */
    int64_t base;
} cg_task;

/* A kernel loop over a list of tasks: one call covers any number of
 * tensors of a group. */
typedef void (*cg_kernel_fn)(const cg_task *tasks, int64_t ntasks);

/* interp.c: the reference engine's loop over one task */
void cg_interp_run(const cg_graph *g, const cg_loop *l, const cg_task *t);

/* trace.c */
int cg_trace(const cg_spec *spec, const cg_request *req, cg_graph **out,
             char *err);

/* A vector kernel of the spec's `kernels` table: arrays are slots
 * 0..narrays-1, its scalars CG_HYPER nodes reading values[0..nscalars-1]. */
int cg_trace_vkernel(const cg_spec *spec, const char *name, cg_graph **out,
                     char *err);

/* kernel.c: the protocol the batch drives (cg.h's order) */
const cg_graph *cg_kernel_graph(const cg_kernel *k);
void cg_kernel_uniforms(const cg_kernel *k, const cg_env *env, double *u);
void cg_kernel_loop(const cg_kernel *k, int loop, const cg_task *tasks,
                    int64_t ntasks);
void cg_kernel_results(const cg_kernel *k, const double *u, double *out);

/* emit.c + jit.c */
typedef struct cg_llvm cg_llvm;
int cg_llvm_new(cg_llvm **out, char *err);
void cg_llvm_free(cg_llvm *l);
/* Emits, verifies, optimises and JIT-links a function per loop of `g`
 * (fn[i] for g->loops[i]; NULL for an idle loop). */
int cg_llvm_compile(cg_llvm *l, const cg_graph *g, const char *name,
                    cg_kernel_fn *fn, void **tracker, char *err);
void cg_llvm_remove(cg_llvm *l, void *tracker);
int cg_llvm_text(cg_llvm *l, const cg_graph *g, const char *what,
                 char **text, char *err);

/* emit_nvptx.c: a finished graph as CUDA kernels (cg.h, "GPU kernels"),
 * PTX for `arch`, or host IR for "sim"; `where` names the spec in
 * messages.  Refuses (JOPT_ESPEC) what the GPU back end cannot do. */
typedef struct cg_nvptx cg_nvptx;
int cg_nvptx_compile(const cg_graph *g, const char *arch, const char *where,
                     cg_nvptx **out, char *err);
void cg_nvptx_free(cg_nvptx *p);
const cg_gpu_info *cg_nvptx_info(const cg_nvptx *p);
void cg_nvptx_host_values(const cg_nvptx *p, const cg_graph *g,
                          const cg_env_host *env, double *h, double *scratch);

/* errors: formats into err (CG_ERRLEN bytes), returns `status` */
int cg_fail(char *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* CG_INT_H */
