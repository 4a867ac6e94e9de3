/*
 * cg_int.h - codegen's private view: the expression graph that a traced spec
 * becomes, the passes over it (validate, print, emit, interpret), and the
 * kernel protocol the batch runs.
 *
 * A graph is a list of nodes in topological order (an operand always comes
 * before its user).  A node is uniform (one value per step, computed in
 * double) or varying (one value per element, computed in float32); a
 * uniform operand of a varying node is rounded to float where it is used.
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

typedef struct cg_node {
    uint8_t op;
    uint8_t varying; /* per element (float) rather than per step (double) */
    uint8_t boolean; /* a truth value rather than a number */
    int32_t arg[3];
    int32_t slot;    /* CG_LOAD, CG_SCALAR: the array slot; CG_HYPER: the
                        offset in the value vector; CG_SUM, CG_MAXALL: its
                        index in the reductions */
    int32_t uslot;   /* uniform nodes varying code reads: index in u[] */
    int32_t line;    /* the spec's line that made it (0: none), for errors;
                        not part of a node's identity */
    double value;    /* CG_CONST */
} cg_node;

/* A bound on compile time (issue 16): LLVM's O3 grows faster than
 * linearly with a kernel's size (4,000 nodes compile in about 1 s, 30,000
 * in 20 to 50 s and 230 MiB), so a graph holds at most CG_MAX_NODES nodes,
 * refused while tracing, at the line that crossed it; and a kernel with
 * sums, whose loop body the emitter copies 16 times, at most
 * CG_MAX_NODES_REDUCE per-element ones.  The shipped specs use under 60. */
#define CG_MAX_NODES 4096
#define CG_MAX_NODES_REDUCE 2048
/* A range's sums and maxima accumulate in this many lanes, element i of
 * the range in lane (i - begin) % CG_LANES, then the lanes in order
 * (emit.c, interp.c): a fixed order of operations that vectorizes. */
#define CG_LANES 16

/* How a reduction combines: a sum in double, or the NaN-propagating
 * maximum.  A range's partial results start at cg_reduce_init and merge in
 * element order with cg_reduce_merge. */
typedef enum cg_reduce_kind { CG_REDUCE_SUM, CG_REDUCE_MAX } cg_reduce_kind;

typedef struct cg_graph {
    cg_node *nodes;
    int n, cap;
    int32_t *table; /* hash-consing: node index + 1, 0 for empty */
    int tcap;
    /* result: the node stored to each array slot after the update, or -1 */
    int32_t store[CG_MAX_SLOTS];
    int nslots;
    /* uniform nodes that varying code reads, in slot order */
    int32_t *uniform;
    int nuniform;
    /* slots holding a per-tensor scalar (one float) rather than an array */
    uint8_t scalar[CG_MAX_SLOTS];
    /* Reductions split the update in two passes over the tensor.  Pass 0
     * accumulates the sums and stores what does not depend on them; pass 1
     * stores the rest (late_store), reading what pass 0 stored back from
     * its array (subst: node -> slot, or -1) instead of recomputing it. */
    int nreduce;
    uint8_t reduce_kind[CG_MAX_REDUCE]; /* cg_reduce_kind of each */
    uint8_t late_store[CG_MAX_SLOTS];
    int32_t *subst;
    uint64_t read; /* slots a live node loads */
    /* the state layout the trace produced */
    int state[CG_MAX_SLOTS];
    cg_init init[CG_MAX_SLOTS];
    double init_value[CG_MAX_SLOTS];
    int nstate;
    /* a vector kernel's results: per-call nodes, in the order run()
     * returned them */
    int32_t result[CG_MAX_RESULTS];
    int nresult;
    /* errors: the spec line new nodes get (the tracer sets it), and the
     * node cg_graph_finish found at fault (-1: none) */
    int32_t line;
    int32_t fault;
} cg_graph;

/* graph.c */
cg_graph *cg_graph_new(void);
void cg_graph_free(cg_graph *g);
/* Adds (or finds) a node; folds constants.  -1 on allocation failure or
 * when the graph is over CG_MAX_NODES. */
int32_t cg_graph_const(cg_graph *g, double v);
int32_t cg_graph_step(cg_graph *g);
int32_t cg_graph_load(cg_graph *g, int slot);
int32_t cg_graph_scalar(cg_graph *g, int slot);
int32_t cg_graph_hyper(cg_graph *g, int offset);
int32_t cg_graph_op(cg_graph *g, cg_op op, int32_t a, int32_t b, int32_t c);
int cg_op_arity(cg_op op);
int cg_op_flags(cg_op op);
const char *cg_op_name(cg_op op);
/* Checks ops, types and references; numbers the uniforms varying code
 * reads.  Returns JOPT_OK or JOPT_ESPEC with a message, and g->fault set
 * to the node at fault where there is one (its line names it). */
int cg_graph_finish(cg_graph *g, char *err);
/* Whether pass 1 stores anything (a kernel with sums may need only the
 * epilogue after them). */
int cg_graph_has_late(const cg_graph *g);

/* print.c: the finished graph in its stable text form (docs/specs.md);
 * `slot_names` name the array slots, `hyper_names` the value vector's
 * offsets (NULL where unnamed).  Caller frees *text. */
int cg_graph_print(const cg_graph *g, const char *title,
                   const char *const *slot_names,
                   const char *const *hyper_names, char **text, char *err);

/* interp.c: the reference semantics, shared by folding, the uniform
 * prologue and the reference kernel. */
double cg_eval_double(cg_op op, double a, double b, double c);
float cg_eval_float(cg_op op, float a, float b, float c);
/* llvm.maximum on doubles: NaN-propagating, -0 < +0 */
double cg_max_nan(double a, double b);
void cg_reduce_init(const cg_graph *g, double *red);
void cg_reduce_merge(const cg_graph *g, double *acc, const double *part);
/* Evaluates the per-step values for step t into u, reading per-tensor
 * scalar states from arrays[slot][0] and then writing their new values
 * back there (rounded to float, as torch's 0-dim float32 tensors). */
void cg_interp_uniforms(const cg_graph *g, double t, const double *values,
                        float *const *arrays, const double *red, double *u,
                        double *scratch); /* g->n doubles */
/* With reductions, call it before pass 0 with red NULL (the values that
 * depend on sums are then NaN and no scalar state is written), and again
 * with the sums before pass 1. */
void cg_interp_run(const cg_graph *g, int pass, float *const *arrays,
                   int64_t begin, int64_t end, const double *u, double *red);

/* trace.c */
int cg_trace(const cg_spec *spec, const double *values,
             const uint8_t *runtime, int fresh, cg_graph **out, char *err);

/* A vector kernel of the spec's `kernels` table: arrays are slots
 * 0..narrays-1, its scalars CG_HYPER nodes reading values[0..nscalars-1]. */
int cg_trace_vkernel(const cg_spec *spec, const char *name, cg_graph **out,
                     char *err);

/* The kernel ABI (emit.c, interp.c, batch.c): one range of one tensor for
 * a pass: its arrays, elements [begin, end), its per-step values, and where
 * the range's sums go (added to, in element order, in double). */
typedef struct cg_task {
    float *const *arrays;
    int64_t begin, end;
    const double *u;
    double *red;
} cg_task;

/* A kernel pass over a list of ranges: one call covers any number of
 * tensors of a group. */
typedef void (*cg_kernel_fn)(const cg_task *tasks, int64_t ntasks);

/* kernel.c: the protocol the batch drives (cg.h's order) */
const cg_graph *cg_kernel_graph(const cg_kernel *k);
void cg_kernel_prologue(const cg_kernel *k, double t, const double *values,
                        float *const *arrays, double *u);
void cg_kernel_pass(const cg_kernel *k, int pass, const cg_task *tasks,
                    int64_t ntasks);
void cg_kernel_epilogue(const cg_kernel *k, double t, const double *values,
                        float *const *arrays, const double *red, double *u);
void cg_kernel_results(const cg_kernel *k, const double *u, double *out);

/* emit.c + jit.c */
typedef struct cg_llvm cg_llvm;
int cg_llvm_new(cg_llvm **out, char *err);
void cg_llvm_free(cg_llvm *l);
/* Emits, verifies, optimises and JIT-links `g` as `name` (pass 0) and,
 * with reductions, `name`_late (pass 1; fn[1] is NULL without). */
int cg_llvm_compile(cg_llvm *l, const cg_graph *g, const char *name,
                    cg_kernel_fn fn[2], void **tracker, char *err);
void cg_llvm_remove(cg_llvm *l, void *tracker);
int cg_llvm_text(cg_llvm *l, const cg_graph *g, const char *what,
                 char **text, char *err);

/* errors: formats into err (CG_ERRLEN bytes), returns `status` */
int cg_fail(char *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* CG_INT_H */
