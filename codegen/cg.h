/*
 * cg.h - all the runtime sees of codegen.
 *
 *   spec text --cg_spec_load--> cg_spec (hyperparameter schema, state names)
 *   cg_spec + hyperparameter values --cg_kernel_get--> cg_kernel
 *       (sandboxed trace -> validated graph -> LLVM IR -> O3 -> LLJIT, cached)
 *
 * No Lua or LLVM type crosses this header.  Status codes are jopt's.
 */
#ifndef CG_H
#define CG_H

#include <stddef.h>
#include <stdint.h>

#include "jopt.h"

#define CG_ERRLEN 1024
#define CG_MAX_SLOTS 64       /* arrays a kernel takes: p, g, states */
#define CG_MAX_UNIFORMS 4096  /* per-step values a kernel reads */
#define CG_MAX_REDUCE 16      /* sums over the tensor in one update */
#define CG_MAX_RESULTS 16     /* per-call results of a vector kernel */
#define CG_MAX_CHOICES 16     /* names a choice hyperparameter allows */

typedef struct cg_spec cg_spec;
typedef struct cg_jit cg_jit;
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
} cg_vkernel_sig;

/* Finds and loads a spec: `name` is looked up as <dir>/<name>.lua in each of
 * `dirs`; a name containing '/' or ending in ".lua" is a path.  Reads the
 * spec's table (doc, hyper, state, check, update) in a sandbox. */
int cg_spec_load(const char *const *dirs, size_t ndirs, const char *name,
                 cg_spec **out, char *err);
void cg_spec_free(cg_spec *spec);
/* cg_spec_load in two halves, for a cache of loaded specs: finding and
 * reading the file (caller frees *path and *text), and parsing it (takes
 * ownership of path and text, even on failure). */
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

/* Runs the spec's check() on a value vector: JOPT_EINVAL with the spec's
 * message if the values are refused.  Keeps a sandbox in the spec between
 * calls, so a scheduler's per-step checks cost microseconds. */
int cg_spec_check(cg_spec *spec, const double *values, char *err);

/* ---- Kernels ------------------------------------------------------------ */

/* How a state array starts: filled with a constant, or unset (the first
 * write defines it, as torch's `buf is None`). */
typedef enum cg_init { CG_INIT_CONST, CG_INIT_UNSET } cg_init;

/* The arrays a kernel takes: slot 0 is the parameter, slot 1 the gradient,
 * slots 2.. the states listed here (indices into the spec's state names). */
typedef struct cg_layout {
    int nstate;
    const int *state;         /* spec state index of slot 2 + i */
    const cg_init *init;
    const double *init_value; /* for CG_INIT_CONST */
    const uint8_t *scalar;    /* 1: one float per tensor, not an array */
    int has_unset;            /* some state starts unset */
    int nuniform;             /* per-step values the kernel reads */
    int nreduce;              /* sums over the tensor: 0, or two passes */
    int has_scalar;           /* some state is a per-tensor scalar */
    const uint8_t *reduce_kind; /* cg_reduce_kind of each reduction */
    /* vector kernels: arrays are slots 0..narrays-1 (no p, g or state) */
    int narrays, nscalars, nresults;
    int has_late;             /* pass 1 stores something (else skip it) */
    uint64_t written;         /* bit per array slot the kernel stores to */
} cg_layout;

/* How a reduction combines: a sum in double, or the NaN-propagating
 * maximum.  A range's partial results start at cg_reduce_init and merge in
 * element order with cg_reduce_merge; the runtime's ranges depend only on
 * the tensors' sizes, so the result does not depend on the thread count. */
typedef enum cg_reduce_kind { CG_REDUCE_SUM, CG_REDUCE_MAX } cg_reduce_kind;
void cg_reduce_init(const cg_layout *l, double *red);
void cg_reduce_merge(const cg_layout *l, double *acc, const double *part);

/* One range of one tensor for a kernel pass: its arrays (slot 0 the
 * parameter, 1 the gradient, then the states), elements [begin, end), its
 * per-step values, and where the range's sums go (added to, in element
 * order, in double). */
typedef struct cg_task {
    float *const *arrays;
    int64_t begin, end;
    const double *u;
    double *red;
} cg_task;

/* A kernel pass over a list of ranges: one call covers any number of
 * tensors of a group. */
typedef void (*cg_kernel_fn)(const cg_task *tasks, int64_t ntasks);

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
} cg_request;

/* Returns the kernel for a request, from the cache or compiled now.  The
 * caller holds a reference and drops it with cg_kernel_release. */
int cg_kernel_get(cg_jit *jit, const cg_request *req, cg_kernel **out,
                  char *err);
void cg_kernel_release(cg_kernel *k); /* NULL is a no-op */

const cg_layout *cg_kernel_layout(const cg_kernel *k);

/* One step of the update of one tensor at step count t (1 on the first)
 * (a vector kernel: one call, t unused, `values` its scalars):
 *   cg_kernel_prologue   the per-step values into `u` (layout->nuniform
 *                        doubles), reading the tensor's scalar states and
 *                        the group's hyperparameter `values` (those passed
 *                        at run time)
 *   cg_kernel_pass(0)    over every element, in any split into ranges
 *                        (cg_task), any number per call; a range adds its
 *                        sums (layout->nreduce) into its `red`
 *   with two passes: cg_kernel_epilogue with the sums of all ranges, added
 *                        in element order, then cg_kernel_pass(1)
 * The scalar states get their new values in the prologue (one pass) or the
 * epilogue (two).  None of these allocates. */
void cg_kernel_prologue(const cg_kernel *k, double t, const double *values,
                        float *const *arrays, double *u);
void cg_kernel_pass(const cg_kernel *k, int pass, const cg_task *tasks,
                    int64_t ntasks);
void cg_kernel_epilogue(const cg_kernel *k, double t, const double *values,
                        float *const *arrays, const double *red, double *u);

/* A vector kernel's results after its last pass (the epilogue, or the
 * prologue without reductions): layout->nresults doubles from u. */
void cg_kernel_results(const cg_kernel *k, const double *u, double *out);

/* The optimised IR ("ir") or machine code ("asm") of a request's kernel,
 * for tools and tests.  Caller frees *text with free(). */
int cg_emit_text(cg_jit *jit, const cg_request *req, const char *what,
                 char **text, char *err);

#endif /* CG_H */
