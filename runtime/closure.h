/*
 * closure.h - closure optimizers (L-BFGS, conjugate gradient): control flow
 * in C, vector arithmetic from the spec.
 *
 * A spec with `method = "lbfgs"` has no update(); it names a driver here and
 * lists the vector kernels the driver calls in its `kernels` table.  Codegen
 * compiles each kernel once, at construction, like any update.  The driver
 * sees the group's tensors as one flat vector of rt_closure_numel() floats
 * (tensor 0 first: torch's cat of the flattened tensors) and does every
 * vector operation through rt_vk, never with loops of its own.  Why the
 * control flow is C: docs/closure.md.
 */
#ifndef RT_CLOSURE_H
#define RT_CLOSURE_H

#include "rt.h"

typedef struct rt_closure rt_closure;

/* An operand of a vector kernel: a flat buffer the driver owns (from
 * rt_closure_alloc), or the user's parameters or gradients seen flat (an
 * absent gradient reads as zeros, as torch's _gather_flat_grad). */
typedef enum rt_vec_kind { RT_VEC_BUF, RT_VEC_PARAMS, RT_VEC_GRADS } rt_vec_kind;
typedef struct rt_vec {
    rt_vec_kind kind;
    float *buf; /* RT_VEC_BUF only */
} rt_vec;
#define RT_BUF(p) ((rt_vec){RT_VEC_BUF, (p)})
#define RT_PARAMS ((rt_vec){RT_VEC_PARAMS, NULL})
#define RT_GRADS ((rt_vec){RT_VEC_GRADS, NULL})

/* A kernel a driver needs from its spec: its name in `kernels`, and how
 * many arrays, scalars and results it must have. */
typedef struct rt_kernel_sig {
    const char *name;
    int narrays, nscalars, nresults;
    unsigned grads; /* bit per array the driver binds to RT_GRADS: the
                       spec's kernel must not write those */
} rt_kernel_sig;

typedef struct rt_driver {
    const char *method;   /* the spec's `method` */
    const char *name;     /* in messages, as torch names it ("LBFGS") */
    const char *source;   /* where the driver lives, for tools */
    const rt_kernel_sig *kernels;
    int nkernels;
    /* Makes the driver's state for a new optimizer (NULL on failure).  May
     * allocate flat buffers now or lazily in step. */
    void *(*state_new)(rt_closure *c);
    /* One step.  Calls rt_closure_eval for every evaluation; stores the
     * first evaluation's loss in *loss.  On an error (a failed
     * evaluation, JOPT_ENOMEM) it returns the code with the driver's state
     * as it was before the step; the runtime puts the parameters back. */
    int (*step)(rt_closure *c, void *state, double *loss);
    void (*state_free)(void *state);
    /* A state readable with jopt_state_get: a flat one (numel floats, seen
     * per tensor) or a scalar (one float); 0 if `name` is none of its
     * states, *data NULL if it does not exist yet. */
    int (*state_get)(void *state, const char *name, const float **data,
                     int *flat);
    /* Checkpoints (docs/checkpoint.md).  `save` writes what a resumed
     * optimizer needs (an rt_out with buf NULL only counts).  `load` reads
     * what save wrote into a new state (*out) for this optimizer, checking
     * every count against rt_closure_numel and the bytes left; on failure
     * (JOPT_EINVAL with a message in err, or JOPT_ENOMEM) nothing is
     * allocated and nothing changed.  NULL: nothing to save, and loading
     * makes a fresh state. */
    void (*save)(const void *state, rt_out *o);
    int (*load)(rt_closure *c, rt_in *r, void **out, char *err);
    /* Optional: JOPT_OK if `load` would take what `save` writes now, else
     * JOPT_EINVAL with a message in err (L-BFGS refuses a non-finite t,
     * H_diag or prev_loss), so that no save writes what no load reads. */
    int (*savable)(const void *state, char *err);
    /* Optional: moves a loaded state into the current one and frees the
     * loaded one's shell, keeping every buffer jopt_state_get handed out
     * from `cur` valid (jopt.h: until the optimizer is freed).  Cannot
     * fail: `load` reserved what it needs (rt_closure_state gives it the
     * current state).  NULL: the current state is freed. */
    void (*adopt)(void *cur, void *loaded);
    /* Optional, at construction: fills options the method derives once
     * from others (torch's LBFGS turns max_eval=None into max_iter*5//4
     * in its constructor), with rt_closure_set_value. */
    void (*prepare)(rt_closure *c);
} rt_driver;

/* runtime/lbfgs.c, runtime/conjgrad.c */
extern const rt_driver rt_lbfgs_driver;
extern const rt_driver rt_conjgrad_driver;

/* ---- what a driver may call ---------------------------------------------- */

int64_t rt_closure_numel(const rt_closure *c);
/* A 64-byte aligned buffer of rt_closure_numel() floats (uninitialised),
 * or NULL when out of memory; free() it. */
float *rt_closure_alloc(const rt_closure *c);
/* The group's hyperparameter `name` (a choice reads as its index; an
 * optional number left at None reads as NaN). */
double rt_closure_value(const rt_closure *c, const char *name);
/* Sets the group's value of option `name` (for rt_driver.prepare). */
void rt_closure_set_value(rt_closure *c, const char *name, double v);
/* Evaluates the user's closure at the current parameters: the loss into
 * *loss and the gradients into the user's buffers.  JOPT_ECLOSURE (with
 * the context's message set) if it reports an error. */
int rt_closure_eval(rt_closure *c, double *loss);
/* Runs the driver's kernel number `k` (index into its rt_driver.kernels)
 * over the flat vector: arrays[i] binds the kernel's i-th array, scalars
 * its scalars, results gets its results (in double).  Operands must be
 * distinct.  Sums and maxima give the same bits for any thread count. */
void rt_vk(rt_closure *c, int k, const rt_vec *arrays, const double *scalars,
           double *results);

/* ---- what the runtime calls (closure.c) ---------------------------------- */

/* The driver for a spec's method, or NULL. */
const rt_driver *rt_driver_find(const char *method);
/* Whether the spec's kernel for the driver's kernel i, with layout l (NULL:
 * the spec has none), is what the driver needs: the shape, and no write to
 * an array it binds to the user's gradients.  JOPT_OK, or JOPT_ESPEC with
 * a message in err. */
int rt_driver_kernel_fits(const rt_driver *d, int i, const cg_spec *spec,
                          const cg_layout *l, char *err);
/* Builds the closure machinery of an optimizer whose spec has a method:
 * one group, its kernels compiled, the driver's state.  Messages name the
 * optimizer as torch does ("LBFGS doesn't support per-parameter options"). */
int rt_closure_new(jopt_optim *opt, const rt_driver *d, rt_closure **out);
void rt_closure_free(rt_closure *c);
/* jopt_step for a closure optimizer: the closure is required; on failure
 * the parameters are put back as they were before the step. */
int rt_closure_step(rt_closure *c, jopt_closure closure, void *user,
                    double *loss);
/* A step left by a longjmp out of the closure (guard.c): forget it.  The
 * driver's committed state is as before that step.  c may be NULL. */
void rt_closure_abandon(rt_closure *c);
/* jopt_state_get and jopt_state_numel of a closure optimizer (index
 * already checked); numel and step may be NULL */
int rt_closure_state_get(const rt_closure *c, size_t index, const char *name,
                         const float **data, int64_t *numel, int64_t *step);
/* jopt_add_param_group: refused, as torch refuses groups */
int rt_closure_one_group(const rt_closure *c);
/* checkpoint.c: the closure optimizer's part of a checkpoint (its step
 * count and its driver's state); loading it builds the new state aside
 * (JOPT_EINVAL or JOPT_ENOMEM with the context's message, nothing changed),
 * then rt_closure_adopt swaps it in or rt_closure_discard drops it */
void rt_closure_save(const rt_closure *c, rt_out *o);
int rt_closure_savable(const rt_closure *c, const char *fn);
int rt_closure_load(rt_closure *c, const void *buf, size_t len, const char *fn,
                    void **state, int64_t *steps);
void rt_closure_adopt(rt_closure *c, void *state, int64_t steps);
const void *rt_closure_state(const rt_closure *c);
void rt_closure_discard(const rt_closure *c, void *state);

#endif /* RT_CLOSURE_H */
