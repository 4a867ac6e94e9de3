/*
 * step.c - zero_grad and step: the hot path.
 *
 *   step(closure): closure (may fail: nothing changed yet)
 *               -> create missing state for every parameter with a gradient
 *                  (may fail: what was created is freed, nothing changed)
 *               -> per parameter: its kernel, its arrays, the per-step
 *                  values for its step count t (the prologue)
 *               -> pass 0 over every parameter, cut into RT_CHUNK tasks,
 *                  on the thread pool
 *               -> for kernels with sums: the sums of each parameter's
 *                  tasks added in element order, the epilogue, pass 1
 * Nothing after the state is created can fail, and nothing allocates.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "closure.h"

JOPT_API int jopt_zero_grad(jopt_optim *opt)
{
    if (!opt)
        return JOPT_EINVAL;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            if (p->g && p->n)
                memset(p->g, 0, (size_t)p->n * sizeof(float));
        }
    return JOPT_OK;
}

/* The kernel a parameter runs: the fresh variant (unset states read as
 * nil) on the step that creates its unset states. */
static const cg_kernel *kernel_for(const rt_group *gr, const rt_param *p)
{
    return p->fresh && gr->fresh ? gr->fresh : gr->steady;
}

static float *alloc_state(int64_t n)
{
    size_t bytes = ((size_t)n * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

/* Creates the states the kernels need; `created` records which, so a
 * failure can undo exactly those. */
static int create_state(jopt_optim *opt, unsigned char *created)
{
    size_t ns = cg_spec_nstate(opt->spec), k = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        const cg_layout *l = cg_kernel_layout(gr->steady);
        for (size_t i = 0; i < gr->n; i++, k += ns) {
            rt_param *p = &gr->params[i];
            if (!p->g || !p->n)
                continue;
            for (int s = 0; s < l->nstate; s++) {
                int si = l->state[s];
                if (p->state[si])
                    continue;
                int64_t n = l->scalar[s] ? 1 : p->n;
                if (!(p->state[si] = alloc_state(n)))
                    return JOPT_ENOMEM;
                created[k + (size_t)si] = 1;
                p->fresh |= l->init[s] == CG_INIT_UNSET;
                if (l->scalar[s])
                    p->scalar_mask |= 1ull << si;
                float v = l->init[s] == CG_INIT_CONST ? (float)l->init_value[s] : 0.0f;
                for (int64_t e = 0; e < n; e++)
                    p->state[si][e] = v;
            }
        }
    }
    return JOPT_OK;
}

static void undo_state(jopt_optim *opt, const unsigned char *created)
{
    size_t ns = cg_spec_nstate(opt->spec), k = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++, k += ns)
            for (size_t s = 0; s < ns; s++)
                if (created[k + s]) {
                    free(opt->groups[g].params[i].state[s]);
                    opt->groups[g].params[i].state[s] = NULL;
                    opt->groups[g].params[i].fresh = 0;
                }
}

/* Creating state allocates; a step where every state exists does not. */
static int needs_state(const jopt_optim *opt)
{
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        const cg_layout *l = cg_kernel_layout(gr->steady);
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            if (!p->g || !p->n)
                continue;
            for (int s = 0; s < l->nstate; s++)
                if (!p->state[l->state[s]])
                    return 1;
        }
    }
    return 0;
}

static int ensure_state(jopt_optim *opt)
{
    if (!needs_state(opt))
        return JOPT_OK;
    size_t total = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        total += opt->groups[g].n * cg_spec_nstate(opt->spec);
    unsigned char *created = calloc(total + 1, 1);
    if (!created)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "jopt_step: out of memory");
    if (create_state(opt, created) != JOPT_OK) {
        undo_state(opt, created);
        free(created);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "jopt_step: out of memory "
                       "creating optimizer state");
    }
    free(created);
    return JOPT_OK;
}

typedef struct run {
    const jopt_optim *opt;
    int pass;
} run;

/* a thread's share of the tasks: one kernel call for each run of tasks
 * with the same kernel (a group's tensors, in order) */
static void run_share(void *arg, size_t lo, size_t hi)
{
    const run *r = arg;
    rt_task *tasks = r->opt->tasks;
    const cg_task *kt = r->opt->ktasks;
    for (size_t i = lo; i < hi;) {
        size_t j = i;
        while (j < hi && tasks[j].p->k == tasks[i].p->k)
            cg_reduce_init(cg_kernel_layout(tasks[i].p->k), tasks[j++].red);
        cg_kernel_pass(tasks[i].p->k, r->pass, kt + i, (int64_t)(j - i));
        i = j;
    }
}

/* Sets up each stepping parameter and cuts it into tasks; returns the
 * number of tasks, and the elements in *total. */
static size_t plan(jopt_optim *opt, int64_t *total)
{
    size_t nt = 0;
    *total = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        const rt_param *prev = NULL;
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            if (!p->g || !p->n) {
                p->k = NULL;
                continue;
            }
            p->k = kernel_for(gr, p);
            p->values = gr->values;
            const cg_layout *lay = cg_kernel_layout(p->k);
            p->arrays[0] = p->p;
            p->arrays[1] = p->g;
            for (int s = 0; s < lay->nstate; s++)
                p->arrays[2 + s] = p->state[lay->state[s]];
            /* per-step values depend on the kernel, the step count and the
             * group's values, unless the tensor has scalar state or sums:
             * most tensors of a group share one prologue */
            if (prev && prev->k == p->k && prev->step == p->step &&
                !lay->has_scalar && !lay->nreduce) {
                p->uv = prev->uv;
            } else {
                cg_kernel_prologue(p->k, (double)(p->step + 1), p->values,
                                   p->arrays, p->u);
                p->uv = p->u;
            }
            prev = p;
            for (int64_t b = 0; b < p->n; b += RT_CHUNK, nt++) {
                opt->tasks[nt].p = p;
                opt->ktasks[nt] = (cg_task){p->arrays, b,
                                            b + RT_CHUNK < p->n ? b + RT_CHUNK : p->n,
                                            p->uv, opt->tasks[nt].red};
            }
            *total += p->n;
        }
    }
    return nt;
}

JOPT_API int jopt_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                       double *loss)
{
    if (!opt)
        return JOPT_EINVAL;
    if (opt->closure)
        return rt_closure_step(opt->closure, closure, user_data, loss);
    double l = NAN;
    if (closure) {
        int crc = closure(user_data, &l);
        if (crc != 0)
            return rt_fail(opt->ctx, JOPT_ECLOSURE, "jopt_step: the closure "
                           "returned %d; the step was not taken", crc);
    }
    int rc = ensure_state(opt);
    if (rc)
        return rc;
    int64_t total;
    size_t nt = plan(opt, &total);
    jopt_ctx *ctx = opt->ctx;
    rt_pool *pool = total >= RT_PARALLEL_MIN ? ctx->pool : NULL;
    run r = {opt, 0};
    rt_pool_run(pool, nt, run_share, &r, ctx->flush);

    /* kernels with sums: each parameter's sums, task by task in element
     * order, then the second pass over the same tasks */
    size_t late = 0;
    for (size_t i = 0; i < nt; i++) {
        rt_task *t = &opt->tasks[i];
        const cg_task *kt = &opt->ktasks[i];
        const cg_layout *lay = cg_kernel_layout(t->p->k);
        if (!lay->nreduce)
            continue;
        if (kt->begin == 0)
            cg_reduce_init(lay, t->p->red);
        cg_reduce_merge(lay, t->p->red, t->red);
        if (kt->end == t->p->n)
            cg_kernel_epilogue(t->p->k, (double)(t->p->step + 1), t->p->values,
                               t->p->arrays, t->p->red, t->p->u);
        /* compacted: pass 1 runs these only (uv is u for kernels with sums) */
        opt->tasks[late] = *t;
        opt->ktasks[late] = *kt;
        opt->ktasks[late].red = opt->tasks[late].red;
        late++;
    }
    if (late) {
        r.pass = 1;
        rt_pool_run(pool, late, run_share, &r, ctx->flush);
    }
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            if (p->k) {
                p->step++;
                p->fresh = 0;
            }
        }
    if (loss)
        *loss = l;
    return JOPT_OK;
}
