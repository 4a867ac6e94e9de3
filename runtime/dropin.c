/*
 * dropin.c - calls for bindings that drive jopt from another framework's
 * training loop (jopt.h, "Bindings"): every
 * gradient pointer in one call, step()'s tasks on another program's
 * thread pool (an OpenMP team: torch's), and the checksum of a checkpoint
 * written by the binding itself (a torch.optim state dict converted).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

/* ---- jopt_set_grads ------------------------------------------------------ */

typedef struct gspan {
    uintptr_t lo, hi; /* [lo, hi) in bytes */
    size_t group, index;
    int is_grad;
} gspan;

static int cmp_gspan(const void *a, const void *b)
{
    const gspan *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void gdescribe(char *buf, size_t len, const gspan *s)
{
    snprintf(buf, len, "group %zu parameter %zu (%s)", s->group, s->index,
             s->is_grad ? "grad" : "param");
}

JOPT_API int jopt_set_grads(jopt_optim *opt, float *const *grads, size_t n)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_set_grads";
    if (!opt)
        return JOPT_EINVAL;
    int rc = rt_busy(opt, fn);
    if (rc)
        return rc;
    size_t total = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        total += opt->groups[g].n;
    if (n != total)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %zu gradients for %zu "
                       "parameters", fn, n, total);
    if (n && !grads)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: grads is NULL", fn);
    gspan *s = cg_malloc((2 * total + 1) * sizeof *s);
    if (!s)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    size_t k = 0, i = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        for (size_t j = 0; j < opt->groups[g].n; j++, i++) {
            const rt_param *p = &opt->groups[g].params[j];
            if ((uintptr_t)grads[i] % rt_gsize(p)) {
                cg_free(s);
                return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter "
                               "%zu: grad is not aligned to %zu bytes (its element)",
                               fn, g, j, rt_gsize(p));
            }
            if (p->n == 0)
                continue;
            uintptr_t pb = (uintptr_t)p->n * rt_psize(p), gb = (uintptr_t)p->n * rt_gsize(p);
            s[k++] = (gspan){(uintptr_t)p->p, (uintptr_t)p->p + pb, g, j, 0};
            if (grads[i])
                s[k++] = (gspan){(uintptr_t)grads[i], (uintptr_t)grads[i] + gb,
                                 g, j, 1};
        }
    }
    qsort(s, k, sizeof *s, cmp_gspan);
    size_t widest = 0;
    for (size_t j = 1; j < k && rc == JOPT_OK; j++) {
        if (s[j].lo < s[widest].hi) {
            char da[96], db[96];
            gdescribe(da, sizeof da, &s[widest]);
            gdescribe(db, sizeof db, &s[j]);
            rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: buffers overlap: %s and %s "
                         "(no two buffers of an optimizer may share memory)",
                         fn, da, db);
        }
        if (s[j].hi > s[widest].hi)
            widest = j;
    }
    cg_free(s);
    if (rc)
        return rc;
    i = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t j = 0; j < opt->groups[g].n; j++, i++)
            opt->groups[g].params[j].g = grads[i];
    return JOPT_OK;
}

/* ---- step() on an OpenMP team (jopt_ctx_set_parallel: ctx.c) ---------- */

/* one thread's share of an OpenMP run: contiguous, fixed by the counts */
typedef struct omp_job {
    const jopt_openmp *omp;
    size_t ntasks;
    jopt_task_fn task;
    void *arg;
} omp_job;

static void omp_body(void *data)
{
    const omp_job *j = data;
    size_t t = (size_t)j->omp->thread_num(), n = (size_t)j->omp->num_threads();
    size_t lo = j->ntasks * t / n, hi = j->ntasks * (t + 1) / n;
    if (lo < hi)
        j->task(j->arg, lo, hi);
}

JOPT_API void jopt_parallel_openmp(void *user, size_t ntasks, jopt_task_fn task,
                                   void *arg)
{
    const jopt_openmp *omp = user;
    if (ntasks == 0)
        return;
    size_t want = omp->max_threads ? (size_t)omp->max_threads() : 0;
    if (want > ntasks)
        want = ntasks;
    omp_job j = {omp, ntasks, task, arg};
    omp->parallel(omp_body, &j, (unsigned)want, 0);
}

/* ---- checkpoints written elsewhere ------------------------------------------ */

JOPT_API int jopt_state_seal(void *buf, size_t len)
{
    if (!buf || len < 16)
        return JOPT_EINVAL;
    uint64_t sum = cg_fnv(CG_FNV_INIT, buf, len - 8);
    memcpy((unsigned char *)buf + len - 8, &sum, 8);
    return JOPT_OK;
}
