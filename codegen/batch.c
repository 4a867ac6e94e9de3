/*
 * batch.c - runs calls of kernels in the one order that gives the same bits
 * for every engine and thread count (cg.h has the protocol):
 *
 *   for each level:
 *     calls --per-step values--> u (caller's thread, in call order)
 *           --group reductions--> each group's sums of per-tensor values,
 *                                 call by call
 *     for each loop kind (rows, columns, column blocks, elements):
 *           --cut--> tasks of a size fixed by the shapes
 *           --run--> the caller's parallel-for; each task its own sums
 *           --merge--> each call's sums, task by task (caller's thread)
 *
 * The cuts depend only on the parts' shapes, and the merge order only on
 * the order of the calls and parts, so neither the thread count nor the
 * way the parallel-for shares the tasks can change a result.
 */
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

/* a call's row and column reduction arrays, for its tasks */
typedef struct call_axis {
    double *p[2 * CG_MAX_AXISRED];
} call_axis;

struct cg_batch {
    cg_task *tasks;
    const cg_kernel **kern;        /* each task's kernel */
    int *loop;                     /* and the index of its loop */
    size_t *call;                  /* and its call */
    double (*red)[CG_MAX_REDUCE];  /* each task's tensor sums */
    size_t cap;
    call_axis *axis;               /* per call */
    double (*red_call)[CG_MAX_REDUCE]; /* per call: its merged tensor sums */
    cg_gpart *gpart;               /* per call: its group values (hook) */
    size_t ccap;
    cg_batch_hook hook;            /* group reductions done elsewhere */
};

_Static_assert(CG_FOLD_SUM == (int)CG_REDUCE_SUM && CG_FOLD_MAX == (int)CG_REDUCE_MAX,
               "cg.h's fold kinds are the graph's reduction kinds");

double cg_fold_identity(int kind) { return cg_reduce_identity(kind); }
double cg_fold(int kind, double acc, double v) { return cg_reduce_add(kind, acc, v); }

void cg_batch_set_hook(cg_batch *b, const cg_batch_hook *hook)
{
    b->hook = hook ? *hook : (cg_batch_hook){NULL, NULL, 0};
}

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
    free(b->loop);
    free(b->call);
    free(b->red);
    free(b->axis);
    free(b->red_call);
    free(b->gpart);
    free(b);
}

/* rows per task of a 2-D loop, and columns per task of a column loop */
static int64_t rows_per_task(int64_t cols)
{
    return cols >= CG_CHUNK ? 1 : CG_CHUNK / (cols ? cols : 1);
}

static int64_t cols_per_task(int64_t rows)
{
    int64_t w = CG_CHUNK / (rows ? rows : 1);
    w -= w % CG_LANES;
    return w < CG_LANES ? CG_LANES : w;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return b ? a / b + (a % b != 0) : 0; /* no a + b - 1 to overflow */
}

size_t cg_batch_tasks(int64_t n, const int64_t *shape, int rank)
{
    if (n <= 0)
        return 0;
    size_t flat = (size_t)ceil_div(n, CG_CHUNK);
    if (!shape || rank < 2)
        return flat;
    int64_t cols = shape[0], rows = shape[1];
    int64_t nrows = cols ? n / cols : 0, nmat = rows ? nrows / rows : 0;
    size_t by_rows = (size_t)ceil_div(nrows, rows_per_task(cols));
    size_t by_cols = (size_t)(nmat * ceil_div(cols, cols_per_task(rows)));
    size_t most = flat > by_rows ? flat : by_rows;
    return most > by_cols ? most : by_cols;
}

int cg_batch_reserve(cg_batch *b, size_t ntasks, size_t ncalls, char *err)
{
    if (ntasks > b->cap) {
        cg_task *tasks = calloc(ntasks, sizeof *tasks);
        const cg_kernel **kern = calloc(ntasks, sizeof *kern);
        int *loop = calloc(ntasks, sizeof *loop);
        size_t *call = calloc(ntasks, sizeof *call);
        double (*red)[CG_MAX_REDUCE] = calloc(ntasks, sizeof *red);
        if (!tasks || !kern || !loop || !call || !red) {
            free(tasks);
            free(kern);
            free(loop);
            free(call);
            free(red);
            return cg_fail(err, JOPT_ENOMEM, "out of memory");
        }
        free(b->tasks);
        free(b->kern);
        free(b->loop);
        free(b->call);
        free(b->red);
        b->tasks = tasks;
        b->kern = kern;
        b->loop = loop;
        b->call = call;
        b->red = red;
        b->cap = ntasks;
    }
    if (ncalls > b->ccap) {
        call_axis *axis = calloc(ncalls, sizeof *axis);
        double (*red_call)[CG_MAX_REDUCE] = calloc(ncalls, sizeof *red_call);
        cg_gpart *gpart = calloc(ncalls, sizeof *gpart);
        if (!axis || !red_call || !gpart) {
            free(axis);
            free(red_call);
            free(gpart);
            return cg_fail(err, JOPT_ENOMEM, "out of memory");
        }
        free(b->axis);
        free(b->red_call);
        free(b->gpart);
        b->axis = axis;
        b->red_call = red_call;
        b->gpart = gpart;
        b->ccap = ncalls;
    }
    return JOPT_OK;
}

typedef struct share {
    cg_batch *b;
} share;

/* a thread's share of the tasks: one kernel invocation for each run of
 * tasks of the same kernel and loop */
static void run_share(void *arg, size_t lo, size_t hi)
{
    cg_batch *b = ((const share *)arg)->b;
    for (size_t i = lo; i < hi;) {
        const cg_kernel *k = b->kern[i];
        int loop = b->loop[i];
        const cg_graph *g = cg_kernel_graph(k);
        size_t j = i;
        for (; j < hi && b->kern[j] == k && b->loop[j] == loop; j++)
            for (int r = 0; r < g->nreduce; r++)
                b->red[j][r] = cg_reduce_identity(g->reduce_kind[r]);
        cg_kernel_loop(k, loop, b->tasks + i, (int64_t)(j - i));
        i = j;
    }
}

static void run_tasks(cg_batch *b, size_t ntasks, const cg_parallel *par)
{
    share s = {b};
    if (par && par->run)
        par->run(par->pool, ntasks, run_share, &s);
    else
        run_share(&s, 0, ntasks);
}

/* the index of loop (level, kind) in k's plan, or -1 */
static int find_loop(const cg_graph *g, int level, int kind)
{
    for (int i = 0; i < g->nloops; i++)
        if (g->loops[i].level == level && g->loops[i].kind == kind)
            return i;
    return -1;
}

/* the call's tasks of one loop, appended at b->tasks[nt]; returns nt */
static size_t cut(cg_batch *b, size_t nt, size_t c, const cg_call *call,
                  int loop, const double *u)
{
    const cg_graph *g = cg_kernel_graph(call->k);
    int kind = g->loops[loop].kind;
    for (size_t p = 0; p < call->nparts; p++) {
        const cg_part *part = &call->parts[p];
        cg_task base = {part->arrays, 0, 0, u, NULL, b->axis[c].p, 1, part->n, 0};
        int64_t n = part->n, count, step;
        if (g->two_d) {
            base.cols = call->shape[0];
            base.rows = call->shape[1];
        }
        int64_t nrows = base.cols ? n / base.cols : 0;
        switch (kind) {
        case CG_LOOP_ROW: count = nrows; step = CG_CHUNK; break;
        case CG_LOOP_COL: count = base.rows ? n / base.rows : 0; step = CG_CHUNK; break;
        case CG_LOOP_COLS: count = 0; step = 0; break;
        default:
            count = g->two_d ? nrows : n;
            step = g->two_d ? rows_per_task(base.cols) : CG_CHUNK;
        }
        if (kind == CG_LOOP_COLS) { /* each matrix, column block by block */
            int64_t w = cols_per_task(base.rows);
            for (int64_t m = 0; m < nrows; m += base.rows)
                for (int64_t c0 = 0; c0 < base.cols; c0 += w, nt++) {
                    b->tasks[nt] = base;
                    b->tasks[nt].base = m;
                    b->tasks[nt].begin = c0;
                    b->tasks[nt].end = c0 + w < base.cols ? c0 + w : base.cols;
                }
        } else {
            for (int64_t at = 0; at < count; at += step, nt++) {
                b->tasks[nt] = base;
                b->tasks[nt].begin = at;
                b->tasks[nt].end = at + step < count ? at + step : count;
            }
        }
    }
    return nt;
}

/* points the call's row and column reduction arrays into its workspace */
static void place_axis(cg_batch *b, size_t c, const cg_call *call)
{
    const cg_graph *g = cg_kernel_graph(call->k);
    if (!g->two_d || !call->work)
        return;
    int64_t n = call->nparts ? call->parts[0].n : 0;
    int64_t nr = cg_kind_numel(CG_KIND_ROW, n, call->shape, call->rank);
    int64_t nc = cg_kind_numel(CG_KIND_COL, n, call->shape, call->rank);
    double *w = call->work;
    for (int r = 0; r < g->nrowred; r++, w += nr)
        b->axis[c].p[r] = w;
    for (int r = 0; r < g->ncolred; r++, w += nc)
        b->axis[c].p[g->nrowred + r] = w;
}

static cg_env env_of(const cg_batch *b, size_t c, const cg_call *call, int level)
{
    const cg_graph *g = cg_kernel_graph(call->k);
    int64_t n = 0;
    for (size_t p = 0; p < call->nparts; p++)
        n += call->parts[p].n;
    return (cg_env){call->t, call->values,
                    call->nparts ? call->parts[0].arrays : NULL,
                    call->shape, call->rank, (double)n, call->gstate,
                    b->red_call[c], call->gred, level, level == g->nlevels - 1};
}

/* the level's group reductions, by the hook: each call's values */
static int fold_elsewhere(cg_batch *b, const cg_call *calls, size_t ncalls,
                          int level, char *err)
{
    for (size_t c = 0; c < ncalls; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        cg_gpart *gp = &b->gpart[c];
        gp->mask = 0;
        for (int r = 0; r < g->ngred && calls[c].gred; r++) {
            const cg_node *arg = &g->nodes[g->gred_arg[r]];
            if (arg->level != level)
                continue;
            gp->mask |= 1u << r;
            gp->kind[r] = g->gred_kind[r];
            gp->v[r] = calls[c].u[arg->uslot];
        }
    }
    return b->hook.fold(b->hook.arg, level, calls, b->gpart, ncalls, err);
}

int cg_batch_run(cg_batch *b, const cg_call *calls, size_t ncalls,
                 const cg_parallel *par, char *err)
{
    size_t need = 0;
    int nlevels = 0;
    for (size_t c = 0; c < ncalls; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        size_t per = 0;
        for (size_t p = 0; p < calls[c].nparts; p++)
            per += cg_batch_tasks(calls[c].parts[p].n, g->two_d ? calls[c].shape : NULL,
                                  g->two_d ? calls[c].rank : 0);
        need += per;
        nlevels = g->nlevels > nlevels ? g->nlevels : nlevels;
        if (g->two_d && (calls[c].nparts != 1 || calls[c].rank < 2 || !calls[c].shape ||
                         (cg_call_work(calls[c].k, calls[c].parts[0].n, calls[c].shape,
                                       calls[c].rank) && !calls[c].work)))
            return cg_fail(err, JOPT_EINVAL, "internal error: a 2-D kernel's call "
                           "needs one part with its shape and workspace");
    }
    if (need > b->cap || ncalls > b->ccap)
        return cg_fail(err, JOPT_EINVAL, "internal error: a batch of %zu tasks "
                       "and %zu calls in room for %zu and %zu", need, ncalls,
                       b->cap, b->ccap);
    for (size_t c = 0; c < ncalls; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        place_axis(b, c, &calls[c]);
        for (int r = 0; r < g->nreduce; r++)
            b->red_call[c][r] = cg_reduce_identity(g->reduce_kind[r]);
    }
    if (b->hook.fold) /* every process runs the levels the hook is called at */
        for (int level = 0; level < 32; level++)
            if (b->hook.levels >> level & 1 && level >= nlevels)
                nlevels = level + 1;
    for (int level = 0; level < nlevels; level++) {
        /* per-step values; then each group's sums of per-tensor values */
        for (size_t c = 0; c < ncalls; c++) {
            const cg_graph *g = cg_kernel_graph(calls[c].k);
            if (level >= g->nlevels)
                continue;
            cg_env env = env_of(b, c, &calls[c], level);
            cg_kernel_uniforms(calls[c].k, &env, calls[c].u);
            if (!calls[c].results)
                continue;
            int known = 1; /* results once the sums they need are in */
            for (int r = 0; r < g->nresult; r++)
                known &= g->nodes[g->result[r]].level <= level;
            if (known)
                cg_kernel_results(calls[c].k, calls[c].u, calls[c].results);
        }
        if (b->hook.fold && (b->hook.levels >> level & 1)) {
            int rc = fold_elsewhere(b, calls, ncalls, level, err);
            if (rc)
                return rc;
        } else for (size_t c = 0; c < ncalls; c++) {
            const cg_graph *g = cg_kernel_graph(calls[c].k);
            int first = c == 0 || calls[c - 1].gred != calls[c].gred;
            for (int r = 0; r < g->ngred && calls[c].gred; r++) {
                const cg_node *arg = &g->nodes[g->gred_arg[r]];
                if (arg->level != level)
                    continue;
                double v = calls[c].u[arg->uslot];
                calls[c].gred[r] = first ? cg_reduce_add(g->gred_kind[r],
                                                         cg_reduce_identity(g->gred_kind[r]), v)
                                         : cg_reduce_add(g->gred_kind[r], calls[c].gred[r], v);
            }
        }
        /* the loops, kind by kind; each call's sums merged after */
        for (int kind = 0; kind < CG_NLOOP_KINDS; kind++) {
            size_t nt = 0;
            for (size_t c = 0; c < ncalls; c++) {
                const cg_graph *g = cg_kernel_graph(calls[c].k);
                int loop = level < g->nlevels ? find_loop(g, level, kind) : -1;
                if (loop < 0)
                    continue;
                size_t from = nt;
                nt = cut(b, nt, c, &calls[c], loop, calls[c].u);
                for (size_t i = from; i < nt; i++) {
                    b->tasks[i].red = b->red[i];
                    b->kern[i] = calls[c].k;
                    b->loop[i] = loop;
                    b->call[i] = c;
                }
            }
            if (!nt)
                continue;
            run_tasks(b, nt, par);
            for (size_t i = 0; i < nt; i++) {
                const cg_graph *g = cg_kernel_graph(b->kern[i]);
                size_t c = b->call[i];
                for (int r = 0; r < g->nreduce; r++)
                    b->red_call[c][r] = cg_reduce_add(g->reduce_kind[r],
                                                      b->red_call[c][r], b->red[i][r]);
            }
        }
    }
    /* the groups' new states, from the first call of each */
    for (size_t c = 0; c < ncalls; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        if (!calls[c].gstate || (c > 0 && calls[c - 1].gstate == calls[c].gstate))
            continue;
        for (int s = 0; s < g->ngstate; s++)
            if (g->gstore[s] >= 0)
                calls[c].gstate[g->gstate[s]] = calls[c].u[g->nodes[g->gstore[s]].uslot];
    }
    return JOPT_OK;
}
