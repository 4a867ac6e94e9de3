/*
 * bench.h - what the files of bench_optim share: the graph text jopt prints
 * and its per-step evaluation (graph_text.c), the naive kernels it measures
 * jopt against (naive.c), the memory-only loops that measure the machine's
 * bandwidth for an optimizer's own access pattern and the bench's own
 * thread pool (membw.c), the table, CSV and SVG writers (report.c), and the
 * allocation and libm-call probes (probe.c).
 *
 * The bench sees jopt only through jopt.h: what it knows of a kernel comes
 * from jopt_spec_kernel, jopt_spec_state and jopt_spec_emit.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "jopt.h"

/* jopt's task size, and the order its sums are added in: 16 lanes per
 * task, then the tasks in order (jopt.h, JOPT_TASK_ELEMS); a step of under
 * JOPT_PARALLEL_MIN elements runs on the caller alone */
#define B_CHUNK JOPT_TASK_ELEMS
#define B_LANES 16
#define B_PARALLEL_MIN JOPT_PARALLEL_MIN
/* arrays a kernel takes: one bit each in jopt_kernel_info's read/written */
#define B_MAX_SLOTS 64
#define B_MAX_REDUCE 64

/* ---- clock and data ---------------------------------------------------- */

double b_now(void); /* seconds, CLOCK_MONOTONIC */
float *b_alloc(int64_t n); /* 64-byte aligned, touched (zeroed); free() */
/* seeded xorshift: uniform in [-1, 1), every 31st element zero */
void b_fill(float *x, int64_t n, uint64_t seed);

/* ---- a tensor list: one optimizer's parameters --------------------------- */

typedef struct b_tensors {
    int n;            /* tensors */
    int64_t *numel;   /* per tensor */
    int64_t total;    /* elements in all */
} b_tensors;

/* ---- the bench's own thread pool (membw.c) ------------------------------- */

typedef struct b_pool b_pool;
/* fn(arg, thread, nthreads) runs once on each of `nthreads` threads (the
 * caller is thread 0); b_pool_run returns when all are done. */
typedef void (*b_pool_fn)(void *arg, int thread, int nthreads);
b_pool *b_pool_new(int nthreads);
void b_pool_free(b_pool *p);
void b_pool_run(b_pool *p, int nthreads, b_pool_fn fn, void *arg);
/* the part [*lo, *hi) of n elements that thread `t` of `nt` takes: halves
 * cut on a 16-float (64-byte) boundary */
void b_split(int64_t n, int t, int nt, int64_t *lo, int64_t *hi);

/* ---- a kernel's graph, as jopt prints it (graph_text.c) ------------------ */

/* The ops of the printed graph, by the names codegen/ops.h gives them. */
#define B_OPS(X)                                                               \
    X(CONST, "const", 0) X(STEP, "t", 0) X(LOAD, "load", 0)                    \
    X(SCALAR, "scalar", 0) X(HYPER, "hyper", 0)                                \
    X(NEG, "neg", 1) X(ABS, "abs", 1) X(SQRT, "sqrt", 1) X(SIGN, "sign", 1)    \
    X(EXP, "exp", 1) X(LOG, "log", 1) X(NOT, "not_", 1) X(F32, "f32", 1)       \
    X(ADD, "add", 2) X(SUB, "sub", 2) X(MUL, "mul", 2) X(DIV, "div", 2)        \
    X(POW, "pow", 2) X(MIN, "min", 2) X(MAX, "max", 2)                         \
    X(LT, "lt", 2) X(LE, "le", 2) X(GT, "gt", 2) X(GE, "ge", 2)                \
    X(EQ, "eq", 2) X(NE, "ne", 2) X(AND, "and_", 2) X(OR, "or_", 2)            \
    X(FMA, "fma", 3) X(LERP, "lerp", 3) X(WHERE, "where", 3)                   \
    X(SUM, "sum", 1) X(MAXALL, "maxall", 1)                                    \
    X(GSTATE, "gstate", 0) X(SHAPE, "size", 0) X(MOD, "mod", 2)                \
    X(ATAN2, "atan2", 2) X(GSUM, "groupsum", 1) X(GMAX, "groupmax", 1)

typedef enum b_op {
#define B_OP_ENUM(id, name, arity) B_##id,
    B_OPS(B_OP_ENUM)
#undef B_OP_ENUM
    B_NOPS
} b_op;

int b_op_arity(b_op op);

/* One line `%i = op args  elem|tensor|group [bool] [uK] [rK] [@L]`. */
typedef struct b_node {
    uint8_t op;       /* b_op */
    uint8_t elem;     /* per element (float32), else per step (double) */
    uint8_t boolean;  /* a truth value */
    int32_t arg[3];   /* -1 past the arity */
    int32_t slot;     /* load, scalar: the array slot; sum, maxall: the
                         reduction's index; else -1 */
    int32_t uslot;    /* uK: a per-step value per-element code reads, or -1 */
    double value;     /* const; hyper: its value under the spec's options */
} b_node;

typedef struct b_graph {
    char title[128];
    int nslots, nstate;        /* slots 0 param, 1 grad, 2.. the states */
    char name[B_MAX_SLOTS][64];
    uint8_t scalar[B_MAX_SLOTS]; /* one float per tensor, not per element */
    int32_t store[B_MAX_SLOTS];  /* node stored to each slot, or -1 */
    uint8_t late[B_MAX_SLOTS];   /* stored by pass 1 */
    b_node *nodes;
    int n, nuniform, nstep;      /* nodes, uK values, per-step nodes */
    int nreduce;
    uint8_t reduce_max[B_MAX_REDUCE]; /* maxall (1) or sum (0) */
    uint8_t input[B_MAX_SLOTS];  /* a per-element input of the step */
    int ninput;
    /* why the unfused kernel cannot run this graph ("" if it can): state
     * or sums per group (the unfused kernel runs one tensor at a time),
     * inputs, more than two passes */
    char unmodelled[96];
} b_graph;

/* Reads the text of jopt_spec_emit(spec, NULL, "graph", ..); `hyper` nodes
 * take their values from `spec` (jopt_spec_hyper's value under the
 * options it was opened with).  0, or -1 with a message in err. */
int b_graph_parse(const char *text, const jopt_spec *spec, b_graph **out,
                  char *err, size_t errlen);
void b_graph_free(b_graph *g);

/* Every per-step node's value (val[i], double) at step count t for a
 * tensor of `numel` elements, as jopt's
 * prologue computes it (red NULL: the sums are not known yet and read as
 * NaN) or its epilogue (red: each reduction's result).  Then, once the sums
 * are known (or if there are none), each scalar state's new value, rounded
 * to float, into arrays[slot][0]: after every read of the old ones. */
void b_graph_steps(const b_graph *g, double t, int64_t numel,
                   float *const *arrays, const double *red, double *val);

/* ---- access patterns and the memory-only loop (membw.c) ---------------- */

/* Which arrays of a kernel's slots the update reads and writes.  A slot that
 * is both read and written is "rw"; the gradient is read only. */
typedef struct b_pattern {
    int nslots;
    int reads, writes;            /* array counts, summed over the passes
                                     (scalar and per-row/column states
                                     excluded) */
    uint8_t read[B_MAX_SLOTS], written[B_MAX_SLOTS]; /* in any pass */
    int passes;                   /* passes over the elements: 2 for
                                     kernels that store after sums */
    uint64_t pass_read[16], pass_written[16]; /* each pass's arrays */
} b_pattern;

/* The update's pattern, from jopt_spec_kernel's per-pass read and written
 * masks, leaving out the states that are not streamed (one value per
 * tensor, row or column).  0, or -1 (the message on the spec's context). */
int b_pattern_of(jopt_spec *spec, b_pattern *pat);
/* bytes moved per element by one step: 4 * (reads + writes) */
double b_pattern_bytes(const b_pattern *pat);
/* "4R/3W", or "3R/2W + 4R/1W" for two passes */
const char *b_pattern_text(const b_pattern *pat, char *buf, size_t len);

/* Each pass in turn: reads every array the pass reads and writes every
 * array it writes, over [lo, hi), with one multiply-add per written element
 * and values unchanged.  arrays are the kernel's slots. */
void b_membw(const b_pattern *pat, float *const *arrays, int64_t lo,
             int64_t hi);
/* 1 when every pass of the pattern runs as one fused loop over its arrays,
 * the JIT's own pattern; 0 when some pass is beyond the loops membw.c
 * instantiates and streams its arrays in blocks instead */
int b_membw_fused(const b_pattern *pat);

/* ---- naive kernels (naive.c) --------------------------------------------- */

/* The unfused kernel: one loop per graph op over the whole tensor, writing a
 * temporary array, as an eager framework runs one tensor op at a time.
 * Temporaries are reused once dead (as a caching allocator would) and an op
 * whose result is a state's new value writes that state in place when no
 * later op reads the old value.  Same bits as the JIT kernel. */
typedef struct b_unfused b_unfused;
int b_unfused_new(const b_graph *g, int64_t maxn, b_unfused **out);
void b_unfused_free(b_unfused *u);
/* one step of one tensor of n elements at step count t */
void b_unfused_step(b_unfused *u, double t, float *const *arrays, int64_t n);
int b_unfused_temps(const b_unfused *u); /* temporary arrays it holds */
int b_unfused_ops(const b_unfused *u);   /* loops per step */

/* Hand-written fused scalar C loops (llm.c's AdamW style), over [lo, hi) of
 * one tensor at step t.  arrays are jopt's slots: p, g, then the states in
 * sorted-name order (exp_avg, exp_avg_sq; momentum_buffer). */
typedef enum b_hand_kind { B_HAND_NONE, B_HAND_SGD, B_HAND_ADAM, B_HAND_ADAMW } b_hand_kind;
typedef struct b_hand {
    b_hand_kind kind;
    float lr, momentum, beta1, beta2, eps, wd;
} b_hand;
void b_hand_step(const b_hand *h, int t, float *const *arrays, int64_t lo,
                 int64_t hi);
const char *b_hand_name(b_hand_kind kind);

/* ---- probes (probe.c) ----------------------------------------------------- */

typedef struct b_probe {
    long allocs;      /* malloc, calloc, realloc, aligned_alloc, ... */
    long libm;        /* pow, exp, log, fma, sqrt, ... (double and float) */
    long lua_states;  /* lua_newstate: Lua sandboxes started */
    char libm_names[128];
} b_probe;
int b_probe_available(void); /* 0 under AddressSanitizer */
void b_probe_begin(void);
void b_probe_end(b_probe *out);

/* ---- results and reports (report.c) ---------------------------------------- */

/* one measured row: what `impl` took for one step of `optimizer` on
 * `casename` with `threads` threads */
typedef struct b_row {
    char optimizer[160];  /* "adam" or "sgd:momentum=0.9" */
    char casename[32];    /* "n=4194304", "resnet50", "resnet50-flat" */
    int64_t numel;
    int ntensors;
    int threads;
    char impl[32];        /* jit, hand, unfused, reference, membw, torch-... */
    int reps, inner;      /* samples, steps per sample */
    double med, min, max; /* seconds per step */
    double bytes;         /* pattern bytes per step */
    double roof;          /* memory-only seconds per step at <= threads, or 0 */
    char note[96];
} b_row;

typedef struct b_results {
    b_row *rows;
    size_t n, cap;
} b_results;

b_row *b_results_add(b_results *r);
void b_results_free(b_results *r);

int b_write_csv(const b_results *r, const char *path);
int b_write_svg(const b_results *r, const char *path, const char *title);
/* the per-optimizer tables on `out` */
void b_print_tables(const b_results *r, FILE *out);
/* a time with its unit, "12.3 ms" */
const char *b_fmt_time(double s, char *buf, size_t len);

/* ---- an optimizer under test (bench_optim.c) -------------------------------- */

typedef struct b_opt {
    char label[160];       /* "sgd:momentum=0.9" as given */
    char spec[128];        /* "sgd" */
    char options[160];     /* "momentum=0.9" or "" */
    jopt_spec *js;         /* the spec under the options (on b_ctx1) */
    b_graph *graph;        /* the steady kernel's graph, as jopt prints it */
    b_pattern pat;
    b_pattern pat2;        /* the pattern for a tensor with a 2-D shape */
    b_hand hand;
    const char *statename[B_MAX_SLOTS]; /* slot 2 + s */
    int ninput;            /* the spec's inputs, given at every step */
    const char *inputname[8];
} b_opt;

/* gives every input of o's spec (Sophia's "hessian") to the n tensors of
 * opt for its next step, from in[i] */
void b_give_inputs(const b_opt *o, jopt_optim *opt, float *const *in, int n);

/* the contexts: JIT on 1 thread, JIT on 2 threads, reference on 1 */
extern jopt_ctx *b_ctx1, *b_ctx2, *b_ctxr;
extern b_results b_res;

/* bench_check.c: JIT == reference interpreter == unfused, bit for bit, and
 * the hand-written loop within tolerance, over `n` tensors for `steps`
 * steps, the JIT on `threads` threads; prints one line; 0 if all agree */
int b_check(const b_opt *o, const int64_t *numel, int n, int threads, int steps);
/* bench_check.c: construction (cold compile, cache hit, their parts) and
 * per-step overheads, as rows of b_res, printed */
void b_bench_construction(const b_opt *opts, int nopts, double first_s);
void b_bench_overhead(const b_opt *o);

#endif /* BENCH_H */
