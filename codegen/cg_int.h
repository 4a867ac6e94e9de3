/*
 * cg_int.h - codegen's private view: the expression graph that a traced spec
 * becomes, and the passes over it (validate, emit, interpret).
 *
 * A graph is a list of nodes in topological order (an operand always comes
 * before its user).  A node is uniform (one value per step, computed in
 * double) or varying (one value per element, computed in float32); a
 * uniform operand of a varying node is rounded to float where it is used.
 */
#ifndef CG_INT_H
#define CG_INT_H

#include "cg.h"

typedef enum cg_op {
    CG_CONST, /* value */
    CG_STEP,  /* the step count t */
    CG_LOAD,  /* array slot `slot`, element i */
    CG_SCALAR, /* the per-tensor scalar state in array slot `slot` */
    CG_HYPER, /* a hyperparameter passed at run time: values[slot] */
    CG_NEG, CG_ABS, CG_SQRT, CG_SIGN, CG_EXP, CG_LOG, CG_NOT,
    CG_F32,   /* rounds a per-step value to float32, as a torch tensor op */
    CG_ADD, CG_SUB, CG_MUL, CG_DIV, CG_POW, CG_MIN, CG_MAX,
    CG_LT, CG_LE, CG_GT, CG_GE, CG_EQ, CG_NE, CG_AND, CG_OR,
    CG_FMA,   /* a * b + c, one rounding */
    CG_LERP,  /* ATen's lerp(a, b, w) */
    CG_WHERE, /* a ? b : c */
    CG_SUM,   /* per step: the sum over the tensor of a per-element value */
    CG_MAXALL, /* per step: the NaN-propagating maximum over the tensor */
    CG_NOPS
} cg_op;

typedef struct cg_node {
    uint8_t op;
    uint8_t varying; /* per element (float) rather than per step (double) */
    uint8_t boolean; /* a truth value rather than a number */
    int32_t arg[3];
    int32_t slot;    /* CG_LOAD, CG_SCALAR: the array slot; CG_SUM,
                        CG_MAXALL: its index in the reductions */
    int32_t uslot;   /* uniform nodes varying code reads: index in u[] */
    double value;    /* CG_CONST */
} cg_node;

#define CG_MAX_NODES 65536
/* A range's sums and maxima accumulate in this many lanes, element i of
 * the range in lane (i - begin) % CG_LANES, then the lanes in order
 * (emit.c, interp.c): a fixed order of operations that vectorizes. */
#define CG_LANES 16

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
    /* the state layout the trace produced */
    int state[CG_MAX_SLOTS];
    cg_init init[CG_MAX_SLOTS];
    double init_value[CG_MAX_SLOTS];
    int nstate;
    /* a vector kernel's results: per-call nodes, in the order run()
     * returned them */
    int32_t result[CG_MAX_RESULTS];
    int nresult;
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
const char *cg_op_name(cg_op op);
/* Checks ops, types and references; numbers the uniforms varying code
 * reads.  Returns JOPT_OK or JOPT_ESPEC with a message. */
int cg_graph_finish(cg_graph *g, char *err);
/* Serialises what determines the kernel, for tests and hashing. */
uint64_t cg_graph_hash(const cg_graph *g);

/* interp.c: the reference semantics, shared by folding, the uniform
 * prologue and the reference kernel. */
double cg_eval_double(cg_op op, double a, double b, double c);
float cg_eval_float(cg_op op, float a, float b, float c);
/* llvm.maximum on doubles: NaN-propagating, -0 < +0 */
double cg_max_nan(double a, double b);
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
