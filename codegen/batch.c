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
 *
 * A matrix kernel's call (one with products) runs alone, in its turn, so
 * that one workspace serves every such call: its arrays are the part's,
 * then its work slots in the batch's workspace; each of its levels starts
 * with the level's GEMMs, cut into blocks (gemm.c), on the parallel-for.
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
    /* matrix calls, one at a time: workspace, arrays, GEMM tasks */
    float *scratch;
    int64_t scap;
    float *mslots[CG_MAX_SLOTS];
    struct gemm_task {
        const cg_gemm *m;
        int64_t row0, rows, col0, cols;
    } *gt;
    size_t gcap;
    cg_batch_hook hook;            /* group reductions done elsewhere */
    double *cpart;                 /* 2-D element tasks' column partial sums */
    size_t cpcap;                  /* doubles */
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
    cg_batch *b = cg_calloc(1, sizeof *b);
    if (!b)
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    *out = b;
    return JOPT_OK;
}

void cg_batch_free(cg_batch *b)
{
    if (!b)
        return;
    cg_free(b->tasks);
    cg_free(b->kern);
    cg_free(b->loop);
    cg_free(b->call);
    cg_free(b->red);
    cg_free(b->axis);
    cg_free(b->red_call);
    cg_free(b->scratch);
    cg_free(b->gt);
    cg_free(b->gpart);
    cg_free(b->cpart);
    cg_free(b);
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return b ? a / b + (a % b != 0) : 0; /* no a + b - 1 to overflow */
}

/* Rows per task of a 2-D element loop: about CG_CHUNK elements, and at
 * least one row; at least 16 in a loop that takes column sums, so that
 * the partial sums of a matrix's blocks (a row of doubles per block and
 * column sum) stay under an eighth of its bytes per sum.  (A matrix of
 * fewer than 32 rows longer than 4096 is then one task.) */
static int64_t rows_per_task(int64_t cols, int colsums)
{
    int64_t r = CG_CHUNK / (cols ? cols : 1), least = colsums ? 16 : 1;
    return r < least ? least : r;
}

/* A 2-D element loop's cut, which never straddles two matrices: k whole
 * matrices of `rows` rows per task (*mats = k), or a tall matrix in
 * blocks of `per` rows (*mats = 0).  Returns the rows per task. */
static int64_t row_cut(int64_t rows, int64_t cols, int colsums, int64_t *mats)
{
    int64_t per = rows_per_task(cols, colsums);
    rows = rows ? rows : 1;
    *mats = rows <= per ? per / rows : 0;
    return *mats ? *mats * rows : per;
}

/* the tasks of a 2-D element loop over nrows rows, and how many of them
 * start inside a matrix (those add into column partial sums); the most
 * tasks when colsums is 0 */
static size_t row_tasks(int64_t nrows, int64_t rows, int64_t cols, int colsums,
                        size_t *inner)
{
    int64_t mats, per = row_cut(rows, cols, colsums, &mats);
    rows = rows ? rows : 1;
    int64_t nmat = nrows / rows, blocks = ceil_div(rows, per);
    *inner = mats ? 0 : (size_t)(nmat * (blocks - 1));
    return mats ? (size_t)ceil_div(nrows, per) : (size_t)(nmat * blocks);
}

/* Column blocks are at least 256 wide (a task of a tall matrix then holds
 * more than CG_CHUNK elements): a column's sum runs over all the matrix's
 * rows in one task, in row order, however the columns are cut, so the cut
 * changes no bit; wide blocks keep the loop over a row's columns long. */
static int64_t cols_per_task(int64_t rows)
{
    int64_t w = CG_CHUNK / (rows ? rows : 1);
    w -= w % CG_LANES;
    return w < 256 ? 256 : w;
}

/* whole matrices per column-block task: several when a matrix is small */
static int64_t mats_per_task(int64_t rows, int64_t cols)
{
    int64_t m = rows * cols;
    return cols <= cols_per_task(rows) && m && m < CG_CHUNK ? CG_CHUNK / m : 1;
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
    size_t inner, by_rows = row_tasks(nrows, rows, cols, 0, &inner);
    int64_t k = mats_per_task(rows, cols);
    size_t by_cols = k > 1 ? (size_t)ceil_div(nmat, k)
                           : (size_t)(nmat * ceil_div(cols, cols_per_task(rows)));
    size_t most = flat > by_rows ? flat : by_rows;
    return most > by_cols ? most : by_cols;
}

int cg_batch_reserve(cg_batch *b, size_t ntasks, size_t ncalls, char *err)
{
    if (ntasks > b->cap) {
        cg_task *tasks = cg_calloc(ntasks, sizeof *tasks);
        const cg_kernel **kern = cg_calloc(ntasks, sizeof *kern);
        int *loop = cg_calloc(ntasks, sizeof *loop);
        size_t *call = cg_calloc(ntasks, sizeof *call);
        double (*red)[CG_MAX_REDUCE] = cg_calloc(ntasks, sizeof *red);
        if (!tasks || !kern || !loop || !call || !red) {
            cg_free(tasks);
            cg_free(kern);
            cg_free(loop);
            cg_free(call);
            cg_free(red);
            return cg_fail(err, JOPT_ENOMEM, "out of memory");
        }
        cg_free(b->tasks);
        cg_free(b->kern);
        cg_free(b->loop);
        cg_free(b->call);
        cg_free(b->red);
        b->tasks = tasks;
        b->kern = kern;
        b->loop = loop;
        b->call = call;
        b->red = red;
        b->cap = ntasks;
    }
    if (ncalls > b->ccap) {
        call_axis *axis = cg_calloc(ncalls, sizeof *axis);
        double (*red_call)[CG_MAX_REDUCE] = cg_calloc(ncalls, sizeof *red_call);
        cg_gpart *gpart = cg_calloc(ncalls, sizeof *gpart);
        if (!axis || !red_call || !gpart) {
            cg_free(axis);
            cg_free(red_call);
            cg_free(gpart);
            return cg_fail(err, JOPT_ENOMEM, "out of memory");
        }
        cg_free(b->axis);
        cg_free(b->red_call);
        cg_free(b->gpart);
        b->axis = axis;
        b->red_call = red_call;
        b->gpart = gpart;
        b->ccap = ncalls;
    }
    return JOPT_OK;
}

int cg_batch_reserve_matrix(cg_batch *b, int64_t floats, size_t tasks, char *err)
{
    int rc = cg_batch_reserve(b, tasks > b->cap ? tasks : b->cap, b->ccap, err);
    if (rc)
        return rc;
    if (tasks > b->gcap) {
        struct gemm_task *gt = cg_calloc(tasks, sizeof *gt);
        if (!gt)
            return cg_fail(err, JOPT_ENOMEM, "out of memory");
        cg_free(b->gt);
        b->gt = gt;
        b->gcap = tasks;
    }
    if (floats > b->scap) {
        float *w = cg_aligned_alloc(64, (size_t)floats * sizeof(float));
        if (!w)
            return cg_fail(err, JOPT_ENOMEM, "out of memory for %lld floats of "
                           "matrix workspace", (long long)floats);
        cg_free(b->scratch);
        b->scratch = w;
        b->scap = floats;
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

static void run_tasks(cg_batch *b, size_t ntasks, const cg_parallel *par,
                      cg_range_fn fn)
{
    share s = {b};
    if (par && par->run)
        par->run(par->pool, ntasks, fn, &s);
    else
        fn(&s, 0, ntasks);
}

static void run_gemms(void *arg, size_t lo, size_t hi)
{
    cg_batch *b = ((const share *)arg)->b;
    for (size_t i = lo; i < hi; i++)
        cg_gemm_run(b->gt[i].m, b->mslots, b->gt[i].row0, b->gt[i].rows,
                    b->gt[i].col0, b->gt[i].cols);
}

/* the index of loop (level, kind, space) in k's plan, or -1 */
static int find_loop(const cg_graph *g, int level, int kind, int space)
{
    for (int i = 0; i < g->nloops; i++)
        if (g->loops[i].level == level && g->loops[i].kind == kind &&
            g->loops[i].space == space)
            return i;
    return -1;
}

static int is_matrix(const cg_call *call)
{
    return cg_kernel_graph(call->k)->ngemm > 0;
}

/* a matrix call's arrays: its part's, then its work slots */
static void bind_matrix(cg_batch *b, const cg_call *call)
{
    const cg_graph *g = cg_kernel_graph(call->k);
    for (int s = 0; s < g->nslots; s++)
        b->mslots[s] = g->kind[s] == CG_KIND_WORK ? b->scratch + g->work_off[s]
                                                  : call->parts[0].arrays[s];
}

/* the call's tasks of one loop, appended at b->tasks[nt]; returns nt.
 * Blocks that start inside a matrix get column partial sums from
 * b->cpart at *cpoff, if the loop takes column sums. */
static size_t cut(cg_batch *b, size_t nt, size_t c, const cg_call *call,
                  int loop, const double *u, size_t *cpoff)
{
    const cg_graph *g = cg_kernel_graph(call->k);
    int kind = g->loops[loop].kind;
    for (size_t p = 0; p < call->nparts; p++) {
        const cg_part *part = &call->parts[p];
        cg_task base = {g->ngemm ? b->mslots : part->arrays, 0, 0, u, NULL,
                        b->axis[c].p, 1, part->n, 0, 1, NULL};
        int64_t n = part->n, count, step;
        if (g->ngemm) { /* an element loop of one of its matrices */
            const cg_space *sp = &g->spaces[g->loops[loop].space];
            n = sp->rows * sp->cols;
        }
        if (g->two_d) {
            base.cols = call->shape[0];
            base.rows = call->shape[1];
        }
        int64_t nrows = base.cols ? n / base.cols : 0;
        switch (kind) {
        case CG_LOOP_ROW: count = nrows; step = CG_CHUNK; break;
        case CG_LOOP_COL: count = base.rows ? n / base.rows : 0; step = CG_CHUNK; break;
        case CG_LOOP_COLS: count = 0; step = 0; break;
        default: count = n; step = CG_CHUNK;
        }
        if (kind == CG_LOOP_COLS) { /* each matrix, column block by block,
                                       or small whole matrices k at a time */
            int64_t w = cols_per_task(base.rows), k = mats_per_task(base.rows, base.cols);
            int64_t nmat = base.rows ? nrows / base.rows : 0;
            for (int64_t m = 0; k > 1 && m < nmat; m += k, nt++) {
                b->tasks[nt] = base;
                b->tasks[nt].base = m * base.rows;
                b->tasks[nt].end = base.cols;
                b->tasks[nt].nmat = m + k < nmat ? k : nmat - m;
            }
            for (int64_t m = 0; k == 1 && m < nrows; m += base.rows)
                for (int64_t c0 = 0; c0 < base.cols; c0 += w, nt++) {
                    b->tasks[nt] = base;
                    b->tasks[nt].base = m;
                    b->tasks[nt].begin = c0;
                    b->tasks[nt].end = c0 + w < base.cols ? c0 + w : base.cols;
                }
        } else if (kind == CG_LOOP_ELEM && g->two_d) { /* matrix by matrix */
            int64_t mats, per = row_cut(base.rows, base.cols, g->loops[loop].colsums,
                                        &mats);
            int64_t span = mats ? nrows : base.rows; /* a run of tasks */
            for (int64_t m0 = 0; m0 < nrows; m0 += span)
                for (int64_t at = m0; at < m0 + span; at += per, nt++) {
                    b->tasks[nt] = base;
                    b->tasks[nt].begin = at;
                    b->tasks[nt].end = at + per < m0 + span ? at + per : m0 + span;
                    if (!mats && at > m0 && g->loops[loop].colsums) {
                        b->tasks[nt].cpart = b->cpart + *cpoff;
                        *cpoff += (size_t)g->ncolred * (size_t)base.cols;
                    }
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

/* The column partial sums of blocks that start inside a matrix, added to
 * the column arrays block by block in task order: a column's sum is its
 * first block's, then each later block's, whatever the threads. */
static void merge_col_parts(cg_batch *b, size_t nt)
{
    for (size_t i = 0; i < nt; i++) {
        const cg_task *t = &b->tasks[i];
        if (!t->cpart)
            continue;
        const cg_graph *g = cg_kernel_graph(b->kern[i]);
        const cg_loop *l = &g->loops[b->loop[i]];
        int64_t colbase = t->begin / t->rows * t->cols;
        for (int j = 0; j < g->n; j++) {
            const cg_node *x = &g->nodes[j];
            if (!(cg_op_flags((cg_op)x->op) & CG_F_TO_COL) || !cg_loop_accumulates(g, l, j))
                continue;
            int kind = g->col_kind[x->slot];
            double *to = t->axis[g->nrowred + x->slot] + colbase;
            const double *from = t->cpart + (size_t)x->slot * (size_t)t->cols;
            for (int64_t c = 0; c < t->cols; c++)
                to[c] = cg_reduce_add(kind, to[c], from[c]);
        }
    }
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
                    b->red_call[c], call->gred, level, level == g->nlevels - 1,
                    call->grad_scale, call->srkey};
}

/* the level's group reductions of calls [from, to), by the hook */
static int fold_elsewhere(cg_batch *b, const cg_call *calls, size_t from, size_t to,
                          int level, char *err)
{
    for (size_t c = from; c < to; c++) {
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
    return b->hook.fold(b->hook.arg, level, calls + from, b->gpart + from, to - from, err);
}

/* the level's GEMMs of a matrix call, cut into blocks */
static void run_level_gemms(cg_batch *b, const cg_call *call, int level,
                            const cg_parallel *par)
{
    const cg_graph *g = cg_kernel_graph(call->k);
    size_t nt = 0;
    for (int i = 0; i < g->ngemm; i++) {
        const cg_gemm *m = &g->gemm[i];
        if (m->level != level)
            continue;
        int64_t rows, cols;
        cg_gemm_tiles(m, &rows, &cols);
        for (int64_t r = 0; r < m->m; r += rows)
            for (int64_t c = 0; c < m->n && (!m->sym || c <= r); c += cols)
                b->gt[nt++] = (struct gemm_task){m, r, r + rows < m->m ? rows : m->m - r,
                                                 c, c + cols < m->n ? cols : m->n - c};
    }
    if (nt)
        run_tasks(b, nt, par, run_gemms);
}

/* calls [from, to) level by level (all of them, or one matrix call) */
static int run_calls(cg_batch *b, const cg_call *calls, size_t from, size_t to,
                     const cg_parallel *par, char *err)
{
    int nlevels = 0, nspaces = 1;
    for (size_t c = from; c < to; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        nlevels = g->nlevels > nlevels ? g->nlevels : nlevels;
        nspaces = g->nspaces > nspaces ? g->nspaces : nspaces;
    }
    if (to == from + 1 && is_matrix(&calls[from]))
        bind_matrix(b, &calls[from]);
    if (b->hook.fold) /* every process runs the levels the hook is called at */
        for (int level = 0; level < 32; level++)
            if (b->hook.levels >> level & 1 && level >= nlevels)
                nlevels = level + 1;
    for (int level = 0; level < nlevels; level++) {
        if (to == from + 1 && is_matrix(&calls[from]))
            run_level_gemms(b, &calls[from], level, par);
        /* per-step values; then each group's sums of per-tensor values */
        for (size_t c = from; c < to; c++) {
            const cg_graph *g = cg_kernel_graph(calls[c].k);
            if (level >= g->nlevels)
                continue;
            const cg_call *pc = c > from ? &calls[c - 1] : NULL, *cc = &calls[c];
            if (pc && pc->k == cc->k && cg_kernel_uniforms_shared(cc->k) &&
                pc->t == cc->t && pc->values == cc->values && pc->gstate == cc->gstate &&
                pc->gred == cc->gred && pc->grad_scale == cc->grad_scale) {
                if (cc->u != pc->u) /* the same values: computed once */
                    memcpy(cc->u, pc->u, cg_kernel_layout(cc->k)->nuniform * sizeof *cc->u);
            } else {
                cg_env env = env_of(b, c, cc, level);
                cg_kernel_uniforms(cc->k, &env, cc->u);
            }
            if (!calls[c].results)
                continue;
            int known = 1; /* results once the sums they need are in */
            for (int r = 0; r < g->nresult; r++)
                known &= g->nodes[g->result[r]].level <= level;
            if (known)
                cg_kernel_results(calls[c].k, calls[c].u, calls[c].results);
        }
        if (b->hook.fold && (b->hook.levels >> level & 1)) {
            int rc = fold_elsewhere(b, calls, from, to, level, err);
            if (rc)
                return rc;
        } else for (size_t c = from; c < to; c++) {
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
        /* the loops, kind by kind (element loops space by space); each
         * call's sums merged after */
        for (int ks = 0; ks < CG_LOOP_ELEM + nspaces; ks++) {
            int kind = ks < CG_LOOP_ELEM ? ks : CG_LOOP_ELEM;
            int space = ks < CG_LOOP_ELEM ? 0 : ks - CG_LOOP_ELEM;
            size_t nt = 0, cpoff = 0;
            for (size_t c = from; c < to; c++) {
                const cg_graph *g = cg_kernel_graph(calls[c].k);
                int loop = level < g->nlevels ? find_loop(g, level, kind, space) : -1;
                if (loop < 0)
                    continue;
                size_t first = nt;
                nt = cut(b, nt, c, &calls[c], loop, calls[c].u, &cpoff);
                for (size_t i = first; i < nt; i++) {
                    b->tasks[i].red = b->red[i];
                    b->kern[i] = calls[c].k;
                    b->loop[i] = loop;
                    b->call[i] = c;
                }
            }
            if (!nt)
                continue;
            run_tasks(b, nt, par, run_share);
            if (cpoff)
                merge_col_parts(b, nt);
            for (size_t i = 0; i < nt; i++) {
                const cg_graph *g = cg_kernel_graph(b->kern[i]);
                size_t c = b->call[i];
                for (int r = 0; r < g->nreduce; r++)
                    b->red_call[c][r] = cg_reduce_add(g->reduce_kind[r],
                                                      b->red_call[c][r], b->red[i][r]);
            }
        }
    }
    return JOPT_OK;
}

/* room for the column partial sums of every call's blocks that start
 * inside a matrix (each level's element loop uses them in turn), taken
 * before anything runs: a failure changes nothing */
static int reserve_col_parts(cg_batch *b, const cg_call *calls, size_t ncalls, char *err)
{
    size_t need = 0;
    for (size_t c = 0; c < ncalls; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        int colsums = 0;
        for (int l = 0; l < g->nloops; l++)
            colsums |= g->loops[l].colsums;
        if (!g->two_d || !colsums)
            continue;
        int64_t cols = calls[c].shape[0], rows = calls[c].shape[1];
        size_t inner;
        row_tasks(cols ? calls[c].parts[0].n / cols : 0, rows, cols, 1, &inner);
        need += inner * (size_t)g->ncolred * (size_t)cols;
    }
    if (need <= b->cpcap)
        return JOPT_OK;
    double *p = cg_malloc(need * sizeof *p);
    if (!p)
        return cg_fail(err, JOPT_ENOMEM, "out of memory for %zu column partial sums",
                       need);
    cg_free(b->cpart);
    b->cpart = p;
    b->cpcap = need;
    return JOPT_OK;
}

/* whether a matrix call's group also has calls that sum over the group:
 * those sums need every call's level before the next, which a matrix
 * call, run alone, does not give them */
static int mixes_group_sums(const cg_call *calls, size_t ncalls)
{
    int any = 0;
    for (size_t c = 0; c < ncalls && !any; c++)
        any = cg_kernel_graph(calls[c].k)->ngred > 0;
    for (size_t c = 0; c < ncalls && any; c++) {
        if (!is_matrix(&calls[c]) || !calls[c].gred)
            continue;
        for (size_t d = 0; d < ncalls; d++)
            if (calls[d].gred == calls[c].gred && cg_kernel_graph(calls[d].k)->ngred)
                return 1;
    }
    return 0;
}

int cg_batch_run(cg_batch *b, const cg_call *calls, size_t ncalls,
                 const cg_parallel *par, char *err)
{
    size_t need = 0;
    for (size_t c = 0; c < ncalls; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        if (g->ngemm) {
            const cg_layout *l = cg_kernel_layout(calls[c].k);
            if (calls[c].nparts != 1 || calls[c].rank != 2 || !calls[c].shape ||
                calls[c].parts[0].n != g->spaces[0].rows * g->spaces[0].cols)
                return cg_fail(err, JOPT_EINVAL, "internal error: a matrix kernel's "
                               "call needs one part of its shape");
            if (l->mtasks > b->cap || l->mtasks > b->gcap || l->scratch > b->scap)
                return cg_fail(err, JOPT_EINVAL, "internal error: a matrix call "
                               "needs %zu tasks and %lld floats of workspace, in "
                               "room for %zu and %lld", l->mtasks,
                               (long long)l->scratch, b->gcap, (long long)b->scap);
            continue;
        }
        for (size_t p = 0; p < calls[c].nparts; p++)
            need += cg_batch_tasks(calls[c].parts[p].n, g->two_d ? calls[c].shape : NULL,
                                   g->two_d ? calls[c].rank : 0);
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
    int rc = reserve_col_parts(b, calls, ncalls, err);
    if (rc)
        return rc;
    if (mixes_group_sums(calls, ncalls))
        return cg_fail(err, JOPT_EINVAL, "a group whose tensors take matrix "
                       "products cannot also sum over the group");
    for (size_t c = 0; c < ncalls; c++) {
        const cg_graph *g = cg_kernel_graph(calls[c].k);
        place_axis(b, c, &calls[c]);
        for (int r = 0; r < g->nreduce; r++)
            b->red_call[c][r] = cg_reduce_identity(g->reduce_kind[r]);
    }
    if (b->hook.fold && b->hook.levels) {
        /* the hook is collective: every process calls it at the same
         * levels, whatever calls it has, so all calls run together */
        for (size_t c = 0; c < ncalls; c++)
            if (is_matrix(&calls[c]))
                return cg_fail(err, JOPT_EINVAL, "a sharded optimizer's group sums "
                               "cannot run with matrix products");
        rc = run_calls(b, calls, 0, ncalls, par, err);
    }
    /* runs of calls without products together; each matrix call alone */
    for (size_t c = 0; c < ncalls && !(b->hook.fold && b->hook.levels) && !rc;) {
        size_t e = c + 1;
        if (!is_matrix(&calls[c]))
            while (e < ncalls && !is_matrix(&calls[e]))
                e++;
        rc = run_calls(b, calls, c, e, par, err);
        c = e;
    }
    if (rc)
        return rc;
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
