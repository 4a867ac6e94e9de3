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
    uint8_t space;   /* an element value's index space (matrix.c): 0, the
                        tensor's elements; others, a matrix of its own shape */
    uint16_t level;  /* the level it is first known at */
    int32_t arg[3];
    int32_t slot;    /* LOAD, SCALAR: the array slot; HYPER: the offset in
                        the value vector; GSTATE: the group state; SHAPE:
                        which size; a reduction: its index among its kind */
    int32_t uslot;   /* per-step nodes kept for later: index in u[] */
    int32_t line;    /* the spec line that made it (0: none) */
    double value;    /* CONST; MATMUL: which operands are transposed (1: the
                        first, 2: the second) */
} cg_node;

/* A bound on compile time (issue 16): LLVM's O3 grows faster than
 * linearly with a kernel's size (4,000 nodes compile in about 1 s, 30,000
 * in 20 to 50 s and 230 MiB), so a graph holds at most CG_MAX_NODES nodes,
 * refused while tracing, at the line that crossed it; and a kernel with
 * reductions, whose loops repeat parts of the body, at most
 * CG_MAX_NODES_REDUCE per-element ones.  The shipped specs use under 100. */
#define CG_MAX_NODES 4096
#define CG_MAX_NODES_REDUCE 2048
#define CG_MAX_GUARDS 16 /* require_that on per-step values, per kernel */
#define CG_MAX_LEVELS 1024 /* Muon's 99 Newton-Schulz steps take 300 */
#define CG_MAX_RED_LEVELS 8 /* without matrix products */
#define CG_MAX_SPACES 16
#define CG_MAX_PASSES (CG_MAX_RED_LEVELS * 2) /* over a tensor's elements */
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
    uint16_t level;
    uint8_t kind;
    uint8_t space; /* ELEM loops of a matrix kernel: the index space */
    uint8_t colsums; /* a 2-D ELEM loop that takes column sums (cg_task's
                        cpart) */
} cg_loop;

/* ---- matrices (matrix.c) ------------------------------------------------------
 * A kernel that uses matmul is traced for the tensor's exact shape.  Its
 * element values live in index spaces: space 0 is the tensor (rows x cols),
 * each other space a matrix shape a product makes (Muon's Gram matrix).  A
 * transposed matrix is a view, never a loop: element-wise ops on views are
 * rewritten as a view of the op (matrix.c), and a product takes views as
 * BLAS's transposition flags.  Products run as GEMMs between the loops of
 * the level they open (a product is known one level after its operands,
 * as a sum is); their operands and results live in workspace buffers (work
 * slots), shared by values whose lifetimes do not overlap. */
typedef struct cg_space {
    int64_t rows, cols;
} cg_space;

/* a matrix held in workspace: a product's result, or a value a loop stores
 * for a product to read */
typedef struct cg_work {
    int32_t node;
    int slot;         /* the work slot holding it */
    int from, to;     /* its lifetime: 2L at level L's GEMMs, 2L+1 at its loops */
    uint8_t stored;   /* written by a loop, not by a GEMM */
} cg_work;

/* C = op(A) op(B), row-major: C is m x n, the inner size k.  A product
 * of a matrix with its own transpose (X Xᵀ, and G G for a G known to be
 * symmetric: G Gᵀ) is `sym`: its lower triangle is computed (SYRK, half
 * the multiply-adds) and mirrored. */
typedef struct cg_gemm {
    int32_t node;
    int a, b, c;      /* slots */
    int ta, tb;       /* A, B transposed */
    int sym;          /* C = op(A) op(A)ᵀ, symmetric */
    int64_t m, n, k, lda, ldb;
    int level;
} cg_gemm;

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
    uint8_t dtype[CG_MAX_SLOTS];     /* CG_DT_*: what an element is in
                                        memory (loads widen to float32,
                                        stores round once) */
    uint8_t sr[CG_MAX_SLOTS];        /* 1: a bfloat16 store that rounds
                                        stochastically, with the key at
                                        u[sru[slot]] */
    int32_t sru[CG_MAX_SLOTS];
    int32_t store[CG_MAX_SLOTS];     /* the node stored there, or -1 */
    /* group state: its value at the end of the step, or -1 */
    int ngstate;
    int32_t gstore[CG_MAX_GSTATE];
    /* per-step values other code reads: in uslot order */
    int32_t *uniform;
    int nuniform;
    int nextra;       /* per-call values after them in u: the keys of
                         the stochastic stores */
    /* reductions, by kind of result: into a tensor value (red[] of a
     * call), a row or column array, a group value */
    int nreduce, nrowred, ncolred, ngred;
    uint8_t reduce_kind[CG_MAX_REDUCE];
    uint8_t row_kind[CG_MAX_AXISRED], col_kind[CG_MAX_AXISRED];
    uint8_t gred_kind[CG_MAX_REDUCE];
    int32_t gred_arg[CG_MAX_REDUCE]; /* the per-tensor node each sums */
    /* the plan: levels and their loops */
    int nlevels;
    cg_loop *loops;
    int nloops;
    int two_d;        /* has row or column values: ELEM loops by rows */
    int defer_stores; /* every store in the last level's loops (16-bit
                         arrays: nothing is read back rounded) */
    uint64_t read;    /* slots live code loads */
    /* each pass over the elements (a loop of kind COLS or ELEM, in order):
     * the slots it loads (or reads back) and the slots it stores */
    uint64_t pass_read[CG_MAX_PASSES], pass_written[CG_MAX_PASSES];
    int npass;
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
    int shaped;                    /* traced for this exact shape (shape(),
                                      matrices): */
    int64_t shape[CG_MAX_RANK];    /* its sizes, last first */
    /* short rows (kernel.c, short_axes): a 2-D kernel built for tensors whose
     * last axis (and, when short too, the one before) has this size, as a
     * constant; 0: the task's */
    int64_t fixed_cols, fixed_rows;
    /* matrices (matrix.c): index spaces, the slots' spaces, workspace
     * values, products, and the workspace's layout */
    int nspaces;
    cg_space spaces[CG_MAX_SPACES];
    uint8_t slot_space[CG_MAX_SLOTS];
    cg_work *work;
    int nwork;
    int32_t *work_of;              /* node -> index in work, or -1 */
    cg_gemm *gemm;
    int ngemm;
    int64_t work_off[CG_MAX_SLOTS]; /* a work slot's offset in floats */
    int64_t scratch;               /* floats of workspace a call needs */
    char why[256];                 /* why a matrix op was refused (-8) */
    /* a vector kernel's results: per-call nodes, in the order run()
     * returned them */
    int32_t result[CG_MAX_RESULTS];
    int nresult;
    /* requirements of a step (require_that on a per-step condition): the
     * condition, and "path:line: message" when it is false; they read only
     * t, values, group state and sizes, so they are checked before the
     * step changes anything */
    int32_t guard[CG_MAX_GUARDS];
    char *guard_msg[CG_MAX_GUARDS];
    int guard_line[CG_MAX_GUARDS];
    int guard_text[CG_MAX_GUARDS]; /* where the message starts in guard_msg */
    int nguard;
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
/* A node as given, with no type rules (matrix.c's views and products). */
int32_t cg_graph_node(cg_graph *g, cg_op op, int dom, int space, int32_t a,
                      int32_t b, double value, int line);
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
/* Whether loop l stores array slot s, or work value w. */
int cg_loop_stores(const cg_graph *g, const cg_loop *l, int s);
int cg_loop_stores_work(const cg_graph *g, const cg_loop *l, int w);
/* Whether reduction node i accumulates in loop l. */
int cg_loop_accumulates(const cg_graph *g, const cg_loop *l, int32_t i);
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

/* matrix.c: matrix values while tracing (-1: out of memory, -8: refused,
 * with the reason in g->why) */
/* the tensor is a rows x cols matrix: space 0 (before any node) */
void cg_matrix_tensor(cg_graph *g, int64_t rows, int64_t cols);
int32_t cg_matrix_transpose(cg_graph *g, int32_t a, int line);
int32_t cg_matrix_matmul(cg_graph *g, int32_t a, int32_t b, int line);
/* An element-wise op's operands args[0..n) when one is a matrix other
 * than the tensor's elements, or a view: rewritten to share one space and
 * orientation, into *space and *transposed (the op's result is then a
 * view of the op on the rewritten operands).  0, or -1 / -8. */
int cg_matrix_operands(cg_graph *g, int32_t *args, int n, int *space,
                       int *transposed);
/* cg_graph_finish's part for matrices: the workspace values and the GEMMs
 * (after levels, before the loops are planned), then their slots (after). */
int cg_matrix_collect(cg_graph *g, const char *where, char *err);
int cg_matrix_place(cg_graph *g, const char *where, char *err);
/* the work slot a loop at `level` reads node i from, or -1 */
int cg_matrix_reload(const cg_graph *g, int32_t i, int level);
/* the rows and columns of C each GEMM task takes: fixed by the sizes; a
 * symmetric product's tasks are the blocks on and below the diagonal */
void cg_gemm_tiles(const cg_gemm *m, int64_t *rows, int64_t *cols);
/* the number of tasks of m's GEMM */
size_t cg_gemm_ntasks(const cg_gemm *m);

/* gemm.c: BLAS.  cg_gemm_init sets OpenBLAS to one thread (once per
 * process; jopt's pool runs the GEMM tasks); cg_gemm_run computes the
 * block of m's C at rows [row0, row0 + rows), columns [col0, col0 + cols)
 * from the call's arrays. */
void cg_gemm_init(void);
void cg_gemm_run(const cg_gemm *m, float *const *arrays, int64_t row0,
                 int64_t rows, int64_t col0, int64_t cols);

/* interp.c: the reference semantics, shared by folding, the per-step
 * values and the reference kernel. */
/* to the nearest bfloat16, ties to even (c10::BFloat16), kept in a float */
float cg_bf16f(float a);
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
    double grad_scale;        /* the call's gradient scale */
    uint64_t srkey;           /* the call's stochastic-rounding key */
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
 * columns [begin, end) of `nmat` consecutive matrices, the first of which
 * starts at row `base` (several only when each is taken whole: small
 * matrices, as a conv weight's 3x3 or 1x1 kernels).
 *
 * A 2-D ELEM task never straddles two matrices: it holds whole matrices,
 * or a block of rows of one.  Its column sums of per-element values go
 * into the column arrays, set to the identity at each matrix's first row
 * and at the task's; a block that does not start its matrix adds into
 * `cpart` instead (ncolred arrays of `cols` doubles, by the sum's slot),
 * which the batch adds to the column arrays block by block, in order. */
typedef struct cg_task {
    float *const *arrays;
    int64_t begin, end;
    const double *u;
    double *red;
    double *const *axis;   /* nrowred row arrays, then ncolred column ones */
    int64_t rows, cols;    /* a matrix's rows (size(-2)) and columns */
    int64_t base;
    int64_t nmat;
    double *cpart;         /* 2-D ELEM: this block's column partial sums */
} cg_task;

/* A kernel loop over a list of tasks: one call covers any number of
 * tensors of a group. */
typedef void (*cg_kernel_fn)(const cg_task *tasks, int64_t ntasks);

/* interp.c: conversions of the 16-bit types, as the JIT does them (emit.c):
 * bfloat16 by integer arithmetic, round to nearest even (NaN: 0x7fc0);
 * float16 as IEEE (x86's vcvtps2ph: round to nearest even, NaN keeps its
 * sign and top payload bits, quieted); stochastic rounding of element
 * `index` with a store's 32-bit key (cg_sr_bits). */
float cg_bf16_to_f32(uint16_t h);
uint16_t cg_f32_to_bf16(float f);
float cg_f16_to_f32(uint16_t h);
uint16_t cg_f32_to_f16(float f);
uint32_t cg_sr_bits(uint32_t key, int64_t index);
uint16_t cg_f32_to_bf16_sr(float f, uint32_t bits);
/* the 32-bit key of a call's stochastic store to array `slot` */
uint32_t cg_sr_slot_key(uint64_t callkey, int slot);

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
/* 1: cg_kernel_uniforms gives the same values for every tensor with the
 * same step, hyperparameters, group state, group sums and grad scale */
int cg_kernel_uniforms_shared(const cg_kernel *k);
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
