/*
 * batch.c - runs calls of kernels in the one order that gives the same bits
 * for every engine and thread count (cg.h has the protocol):
 *
 *   calls --prologue--> per-step values (caller's thread, in call order)
 *         --cut--> tasks of CG_CHUNK elements
 *         --pass 0--> the caller's parallel-for; each task its own sums
 *         --merge--> each call's sums, task by task (caller's thread)
 *         --epilogue--> the values that depend on the sums
 *         --pass 1--> the tasks of calls whose stores depend on the sums
 *
 * The cut depends only on the parts' lengths, and the merge order only on
 * the order of the calls and parts, so neither the thread count nor the
 * way the parallel-for shares the tasks can change a result.
 */
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

struct cg_batch {
    cg_task *tasks;                /* pass 0's, then compacted for pass 1 */
    const cg_kernel **kern;        /* each task's kernel */
    double (*red)[CG_MAX_REDUCE];  /* each task's sums */
    size_t cap;
};

int cg_batch_new(cg_batch **out, char *err)
{
    cg_batch *b = calloc(1, sizeof *b);
    if (!b)
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    *out = b;
    return JOPT_OK;
}

void cg_batch_free(cg_batch *b)
{
    if (!b)
        return;
    free(b->tasks);
    free(b->kern);
    free(b->red);
    free(b);
}

size_t cg_batch_tasks(int64_t n)
{
    return n > 0 ? (size_t)((n + CG_CHUNK - 1) / CG_CHUNK) : 0;
}

int cg_batch_reserve(cg_batch *b, size_t ntasks, char *err)
{
    if (ntasks <= b->cap)
        return JOPT_OK;
    cg_task *tasks = calloc(ntasks, sizeof *tasks);
    const cg_kernel **kern = calloc(ntasks, sizeof *kern);
    double (*red)[CG_MAX_REDUCE] = calloc(ntasks, sizeof *red);
    if (!tasks || !kern || !red) {
        free(tasks);
        free(kern);
        free(red);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    free(b->tasks);
    free(b->kern);
    free(b->red);
    b->tasks = tasks;
    b->kern = kern;
    b->red = red;
    b->cap = ntasks;
    return JOPT_OK;
}

typedef struct share {
    cg_batch *b;
    int pass;
} share;

/* a thread's share of the tasks: one kernel invocation for each run of
 * tasks of the same kernel */
static void run_share(void *arg, size_t lo, size_t hi)
{
    const share *s = arg;
    cg_batch *b = s->b;
    for (size_t i = lo; i < hi;) {
        const cg_kernel *k = b->kern[i];
        size_t j = i;
        for (; j < hi && b->kern[j] == k; j++)
            if (s->pass == 0)
                cg_reduce_init(cg_kernel_graph(k), b->red[j]);
        cg_kernel_pass(k, s->pass, b->tasks + i, (int64_t)(j - i));
        i = j;
    }
}

static void run_pass(cg_batch *b, int pass, size_t ntasks,
                     const cg_parallel *par)
{
    share s = {b, pass};
    if (par && par->run)
        par->run(par->pool, ntasks, run_share, &s);
    else
        run_share(&s, 0, ntasks);
}

static float *const *first_arrays(const cg_call *c)
{
    return c->nparts ? c->parts[0].arrays : NULL;
}

/* the prologues, and the calls cut into tasks; returns the task count */
static size_t plan(cg_batch *b, const cg_call *calls, size_t ncalls)
{
    size_t nt = 0;
    const cg_call *prev = NULL;
    const double *prev_u = NULL;
    for (size_t c = 0; c < ncalls; c++) {
        const cg_call *call = &calls[c];
        const cg_layout *l = cg_kernel_layout(call->k);
        const double *u = call->u;
        /* per-step values depend on the kernel, the step and the values,
         * unless the tensor has scalar state or sums: most tensors of a
         * group share one prologue */
        if (prev && prev->k == call->k && prev->t == call->t &&
            prev->values == call->values && !l->has_scalar && !l->nreduce)
            u = prev_u;
        else
            cg_kernel_prologue(call->k, call->t, call->values,
                               first_arrays(call), call->u);
        if (!l->nreduce && call->results)
            cg_kernel_results(call->k, u, call->results);
        for (size_t p = 0; p < call->nparts; p++) {
            const cg_part *part = &call->parts[p];
            for (int64_t at = 0; at < part->n; at += CG_CHUNK, nt++) {
                int64_t end = at + CG_CHUNK < part->n ? at + CG_CHUNK : part->n;
                b->tasks[nt] = (cg_task){part->arrays, at, end, u, b->red[nt]};
                b->kern[nt] = call->k;
            }
        }
        prev = call;
        prev_u = u;
    }
    return nt;
}

int cg_batch_run(cg_batch *b, const cg_call *calls, size_t ncalls,
                 const cg_parallel *par, char *err)
{
    size_t need = 0;
    for (size_t c = 0; c < ncalls; c++)
        for (size_t p = 0; p < calls[c].nparts; p++)
            need += cg_batch_tasks(calls[c].parts[p].n);
    if (need > b->cap)
        return cg_fail(err, JOPT_EINVAL, "internal error: a batch of %zu tasks "
                       "in room for %zu", need, b->cap);
    size_t nt = plan(b, calls, ncalls);
    run_pass(b, 0, nt, par);

    /* each call's sums in task order, its epilogue, and its tasks moved
     * to the front when pass 1 has stores to do */
    size_t late = 0, t = 0;
    for (size_t c = 0; c < ncalls; c++) {
        const cg_call *call = &calls[c];
        const cg_layout *l = cg_kernel_layout(call->k);
        const cg_graph *g = cg_kernel_graph(call->k);
        size_t count = 0;
        for (size_t p = 0; p < call->nparts; p++)
            count += cg_batch_tasks(call->parts[p].n);
        if (l->nreduce) {
            double acc[CG_MAX_REDUCE];
            cg_reduce_init(g, acc);
            for (size_t i = t; i < t + count; i++)
                cg_reduce_merge(g, acc, b->red[i]);
            cg_kernel_epilogue(call->k, call->t, call->values,
                               first_arrays(call), acc, call->u);
            if (call->results)
                cg_kernel_results(call->k, call->u, call->results);
            for (size_t i = t; l->npasses > 1 && i < t + count; i++, late++) {
                b->tasks[late] = b->tasks[i];
                b->kern[late] = b->kern[i];
            }
        }
        t += count;
    }
    if (late)
        run_pass(b, 1, late, par);
    return JOPT_OK;
}
