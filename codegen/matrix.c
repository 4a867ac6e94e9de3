/*
 * matrix.c - matrices in a graph: the tensor seen as a matrix, transposed
 * views and products while tracing; and, when the graph is finished, the
 * products' GEMMs and the workspace that holds their operands and results.
 *
 * While tracing (cg_int.h has the model):
 *
 *   transpose(x)     a view: a TRANSPOSE node over x, in x's space
 *   matmul(a, b)     a MATMUL node over a and b with their views as flags,
 *                    in the space of its result's shape
 *   a (op) b         element-wise ops need one space and one orientation:
 *                    op(xᵀ, yᵀ) is built as op(x, y)ᵀ, and a product meets
 *                    a view by being built transposed ((AB)ᵀ = BᵀAᵀ), so
 *                    views never reach a loop
 *
 * When finished: each live product is a GEMM at the level it opens; its
 * operands are array slots (a gradient, an input), other products'
 * results, or values a loop stores for it.  These workspace values get
 * buffers (work slots) by their lifetimes, in step times (level L's GEMMs
 * at 2L, its loops at 2L+1): two values share a buffer only when one is
 * dead before the other is written, so no loop or GEMM ever sees one
 * buffer under two names (the loops' arrays are noalias).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

static int32_t why(cg_graph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int32_t why(cg_graph *g, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->why, sizeof g->why, fmt, ap);
    va_end(ap);
    return -8;
}

void cg_matrix_tensor(cg_graph *g, int64_t rows, int64_t cols)
{
    g->spaces[0] = (cg_space){rows, cols};
    g->nspaces = 1;
}

static int is_matrix(cg_graph *g, int32_t x, const char *fn)
{
    const cg_node *n = &g->nodes[x];
    if (n->boolean)
        return why(g, "%s takes matrices of numbers, not truth values", fn);
    if (n->dom != CG_DOM_ELEM)
        return why(g, "%s takes matrices (a tensor's elements, or what is "
                      "computed from them); this is a per-%s value", fn,
                   n->dom == CG_DOM_ROW ? "row" : n->dom == CG_DOM_COL ? "column"
                   : n->dom == CG_DOM_TENSOR ? "tensor" : "group");
    if (!g->nspaces)
        return why(g, "%s takes matrices: this tensor is not 2-D (refuse other "
                      "shapes in check_shape, or test shape() first)", fn);
    return 0;
}

/* the space of a rows x cols matrix, added if new */
static int space_of(cg_graph *g, int64_t rows, int64_t cols)
{
    for (int s = 0; s < g->nspaces; s++)
        if (g->spaces[s].rows == rows && g->spaces[s].cols == cols)
            return s;
    if (g->nspaces == CG_MAX_SPACES)
        return why(g, "more than %d matrix shapes in one update", CG_MAX_SPACES);
    g->spaces[g->nspaces] = (cg_space){rows, cols};
    return g->nspaces++;
}

int32_t cg_matrix_transpose(cg_graph *g, int32_t a, int line)
{
    const cg_node *x = &g->nodes[a];
    if (x->dom == CG_DOM_GROUP || x->dom == CG_DOM_TENSOR)
        return a; /* a per-step number is its own transpose */
    int32_t r = is_matrix(g, a, "transpose");
    if (r < 0)
        return r;
    if (x->op == CG_TRANSPOSE)
        return x->arg[0];
    g->shaped = 1;
    return cg_graph_node(g, CG_TRANSPOSE, CG_DOM_ELEM, x->space, a, -1, 0, line);
}

static int32_t product(cg_graph *g, int32_t a, int ta, int32_t b, int tb, int line)
{
    int64_t m, k, k2, n;
    const cg_space *sa = &g->spaces[g->nodes[a].space], *sb = &g->spaces[g->nodes[b].space];
    m = ta ? sa->cols : sa->rows;
    k = ta ? sa->rows : sa->cols;
    k2 = tb ? sb->cols : sb->rows;
    n = tb ? sb->rows : sb->cols;
    if (k != k2)
        return why(g, "matmul: a %lldx%lld matrix times a %lldx%lld one",
                   (long long)m, (long long)k, (long long)k2, (long long)n);
    int s = space_of(g, m, n);
    if (s < 0)
        return s;
    return cg_graph_node(g, CG_MATMUL, CG_DOM_ELEM, s, a, b, ta + 2 * tb, line);
}

int32_t cg_matrix_matmul(cg_graph *g, int32_t a, int32_t b, int line)
{
    int32_t r;
    if ((r = is_matrix(g, a, "matmul")) < 0 || (r = is_matrix(g, b, "matmul")) < 0)
        return r;
    g->shaped = 1;
    int ta = g->nodes[a].op == CG_TRANSPOSE, tb = g->nodes[b].op == CG_TRANSPOSE;
    return product(g, ta ? g->nodes[a].arg[0] : a, ta, tb ? g->nodes[b].arg[0] : b,
                   tb, line);
}

/* (AB)ᵀ = BᵀAᵀ: the product m built transposed */
static int32_t flip(cg_graph *g, int32_t m)
{
    const cg_node *x = &g->nodes[m];
    int ta = (int)x->value & 1, tb = (int)x->value >> 1;
    return product(g, x->arg[1], !tb, x->arg[0], !ta, x->line);
}

int cg_matrix_operands(cg_graph *g, int32_t *args, int n, int *space,
                       int *transposed)
{
    *transposed = 0;
    *space = -1;
    for (int i = 0; i < n; i++) {
        const cg_node *x = &g->nodes[args[i]];
        if (x->dom == CG_DOM_ROW || x->dom == CG_DOM_COL)
            return why(g, "row and column values cannot meet the elements of a "
                          "matrix product or a transposed matrix");
        *transposed |= x->dom == CG_DOM_ELEM && x->op == CG_TRANSPOSE;
    }
    for (int i = 0; i < n; i++) {
        int32_t v = args[i];
        const cg_node *x = &g->nodes[v];
        if (x->dom != CG_DOM_ELEM)
            continue;
        if (*transposed) {
            if (x->op == CG_TRANSPOSE)
                v = x->arg[0];
            else if (x->op == CG_MATMUL)
                v = flip(g, v);
            else
                return why(g, "an element-wise op on a transposed matrix and one "
                              "that is not: transpose both, or compute this "
                              "before transposing");
            if (v < 0)
                return v;
        }
        int s = g->nodes[v].space;
        if (*space >= 0 && s != *space) {
            const cg_space *a = &g->spaces[*space], *b = &g->spaces[s];
            return why(g, "an element-wise op on a %lldx%lld and a %lldx%lld "
                          "matrix", (long long)a->rows, (long long)a->cols,
                       (long long)b->rows, (long long)b->cols);
        }
        *space = s;
        args[i] = v;
    }
    if (*space < 0)
        *space = 0;
    return 0;
}

/* ---- the finished graph: GEMMs and workspace ------------------------------------ */

static int fail_node(const cg_graph *g, char *err, const char *where, int32_t i,
                     const char *msg)
{
    int line = i >= 0 ? g->nodes[i].line : 0;
    if (line > 0)
        return cg_fail(err, JOPT_ESPEC, "%s:%d: %s", where, line, msg);
    return cg_fail(err, JOPT_ESPEC, "%s: %s", where, msg);
}

static int add_work(cg_graph *g, int32_t node, int stored)
{
    cg_work *w = cg_realloc(g->work, ((size_t)g->nwork + 1) * sizeof *w);
    if (!w)
        return -1;
    g->work = w;
    w[g->nwork] = (cg_work){node, 0, 0, 0, (uint8_t)stored};
    g->work_of[node] = g->nwork;
    return g->nwork++;
}

/* a GEMM operand: its slot (an array never written, or a work value's,
 * placed later: -1 - work index) */
static int operand(cg_graph *g, int32_t v)
{
    const cg_node *x = &g->nodes[v];
    if (x->op == CG_LOAD && g->store[x->slot] < 0)
        return x->slot;
    int w = g->work_of[v];
    if (w < 0 && (w = add_work(g, v, x->op != CG_MATMUL)) < 0)
        return CG_MAX_SLOTS; /* out of memory */
    return -1 - w;
}

int cg_matrix_collect(cg_graph *g, const char *where, char *err)
{
    int any = 0;
    for (int i = 0; i < g->n && !any; i++)
        any = (cg_op_flags((cg_op)g->nodes[i].op) & CG_F_MATRIX) != 0;
    if (!any)
        return JOPT_OK;
    for (int s = 0; s < g->nslots; s++) {
        int32_t v = g->store[s];
        if (v < 0)
            continue;
        if (g->nodes[v].op == CG_TRANSPOSE)
            return fail_node(g, err, where, v, "a transposed matrix cannot be "
                             "stored: transpose it back first");
        if (g->nodes[v].dom == CG_DOM_ELEM && g->nodes[v].space != 0) {
            char msg[160];
            const cg_space *sp = &g->spaces[g->nodes[v].space];
            snprintf(msg, sizeof msg, "stores a %lldx%lld matrix into a %lldx%lld "
                     "tensor's array", (long long)sp->rows, (long long)sp->cols,
                     (long long)g->spaces[0].rows, (long long)g->spaces[0].cols);
            return fail_node(g, err, where, v, msg);
        }
    }
    if (g->two_d || g->ngred) {
        int at = -1; /* the first row, column or group value, for its line */
        for (int i = 0; i < g->n && at < 0; i++) {
            const cg_node *x = &g->nodes[i];
            if (x->dom == CG_DOM_ROW || x->dom == CG_DOM_COL ||
                ((cg_op_flags((cg_op)x->op) & CG_F_REDUCE) &&
                 cg_reduce_dom((cg_op)x->op) == CG_DOM_GROUP))
                at = i;
        }
        return fail_node(g, err, where, at, "matrix products cannot share an "
                         "update with row or column values (rows(), cols(), "
                         "sums over an axis) or sums over the group");
    }
    /* the live products, in graph order */
    uint8_t *live = cg_calloc((size_t)g->n + 1, 1);
    g->work_of = cg_malloc(((size_t)g->n + 1) * sizeof *g->work_of);
    if (!live || !g->work_of) {
        cg_free(live);
        return cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
    }
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] >= 0)
            live[g->store[s]] = 1;
    for (int s = 0; s < g->ngstate; s++)
        if (g->gstore[s] >= 0)
            live[g->gstore[s]] = 1;
    for (int r = 0; r < g->nresult; r++)
        live[g->result[r]] = 1;
    for (int i = g->n - 1; i >= 0; i--) {
        g->work_of[i] = -1;
        for (int k = 0; live[i] && k < cg_op_arity((cg_op)g->nodes[i].op); k++)
            live[g->nodes[i].arg[k]] = 1;
    }
    int rc = JOPT_OK;
    /* which matrices are symmetric: X Xᵀ and what element-wise ops make of
     * symmetric ones alone (live[] now: 1 live, 3 live and symmetric) */
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        int sym = 0;
        if (x->op == CG_MATMUL)
            sym = x->arg[0] == x->arg[1] &&
                  (((int)x->value == 1 || (int)x->value == 2) || live[x->arg[0]] & 2);
        else if (x->op == CG_TRANSPOSE)
            sym = live[x->arg[0]] & 2;
        else if (x->dom == CG_DOM_ELEM &&
                 !(cg_op_flags((cg_op)x->op) & (CG_F_LEAF | CG_F_MATRIX)) &&
                 g->spaces[x->space].rows == g->spaces[x->space].cols) {
            sym = 1;
            for (int k = 0; k < cg_op_arity((cg_op)x->op); k++) {
                const cg_node *a = &g->nodes[x->arg[k]];
                sym &= a->dom != CG_DOM_ELEM || (live[x->arg[k]] & 2);
            }
        }
        live[i] |= (uint8_t)(sym << 1);
    }
    for (int i = 0; i < g->n && rc == JOPT_OK; i++) {
        const cg_node *x = &g->nodes[i];
        if (x->op != CG_MATMUL || !(live[i] & 1))
            continue;
        cg_gemm *m = cg_realloc(g->gemm, ((size_t)g->ngemm + 1) * sizeof *m);
        if (!m || add_work(g, i, 0) < 0) {
            if (m)
                g->gemm = m;
            rc = cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
            break;
        }
        g->gemm = m;
        cg_gemm *e = &m[g->ngemm++];
        int ta = (int)x->value & 1, tb = (int)x->value >> 1;
        const cg_space *sa = &g->spaces[g->nodes[x->arg[0]].space];
        const cg_space *sb = &g->spaces[g->nodes[x->arg[1]].space];
        *e = (cg_gemm){.node = i, .ta = ta, .tb = tb,
                       .m = g->spaces[x->space].rows, .n = g->spaces[x->space].cols,
                       .k = ta ? sa->rows : sa->cols, .lda = sa->cols,
                       .ldb = sb->cols, .level = x->level};
        if (e->m > INT32_MAX || e->n > INT32_MAX || e->k > INT32_MAX ||
            e->lda > INT32_MAX || e->ldb > INT32_MAX) {
            rc = fail_node(g, err, where, i, "matmul: a matrix with more than "
                           "2^31-1 rows or columns (BLAS's limit)");
            break;
        }
        if (live[i] & 2) { /* op(A) op(A)ᵀ: G G for a symmetric G is G Gᵀ */
            e->sym = 1;
            e->tb = !e->ta;
        }
        e->a = operand(g, x->arg[0]);
        e->b = operand(g, x->arg[1]);
        e->c = -1 - g->work_of[i];
        if (e->a == CG_MAX_SLOTS || e->b == CG_MAX_SLOTS)
            rc = cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
    }
    cg_free(live);
    return rc;
}

int cg_matrix_reload(const cg_graph *g, int32_t i, int level)
{
    int w = g->work_of ? g->work_of[i] : -1;
    if (w < 0)
        return -1;
    const cg_work *v = &g->work[w];
    const cg_node *x = &g->nodes[v->node];
    int from = v->stored ? 2 * x->level + 1 : 2 * x->level;
    return from < 2 * level + 1 ? v->slot : -1;
}

int cg_matrix_place(cg_graph *g, const char *where, char *err)
{
    if (!g->nwork)
        return JOPT_OK;
    uint8_t *how = cg_malloc((size_t)g->n + 1);
    if (!how)
        return cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
    for (int w = 0; w < g->nwork; w++) {
        cg_work *v = &g->work[w];
        int lv = g->nodes[v->node].level;
        v->from = v->to = v->stored ? 2 * lv + 1 : 2 * lv;
    }
    for (int li = 0; li < g->nloops; li++) {
        const cg_loop *l = &g->loops[li];
        cg_loop_plan(g, l, how);
        for (int i = 0; i < g->n; i++)
            if (how[i] == CG_HOW_RELOAD && g->work_of[i] >= 0) {
                cg_work *v = &g->work[g->work_of[i]];
                if (v->to < 2 * l->level + 1)
                    v->to = 2 * l->level + 1;
            }
    }
    cg_free(how);
    for (int k = 0; k < g->ngemm; k++) {
        int t = 2 * g->gemm[k].level, ops[2] = {g->gemm[k].a, g->gemm[k].b};
        for (int j = 0; j < 2; j++)
            if (ops[j] < 0 && g->work[-1 - ops[j]].to < t)
                g->work[-1 - ops[j]].to = t;
    }
    /* buffers, space by space: values by the time they are written, each
     * into the first buffer free by then (greedy by start is optimal for
     * intervals) */
    int busy[CG_MAX_SLOTS];
    for (int s = 0; s < g->nspaces; s++) {
        int first = g->nslots;
        for (int t = 0; t <= 2 * g->nlevels; t++)
            for (int w = 0; w < g->nwork; w++) {
                cg_work *v = &g->work[w];
                if (v->from != t || g->nodes[v->node].space != s)
                    continue;
                int slot = first;
                while (slot < g->nslots && busy[slot] >= v->from)
                    slot++;
                if (slot == g->nslots) {
                    if (g->nslots == CG_MAX_SLOTS)
                        return cg_fail(err, JOPT_ESPEC, "%s: the matrix products "
                                       "need more than %d arrays", where,
                                       CG_MAX_SLOTS);
                    g->nslots++;
                    g->kind[slot] = CG_KIND_WORK;
                    g->slot_space[slot] = (uint8_t)s;
                }
                busy[slot] = v->to;
                v->slot = slot;
            }
    }
    g->scratch = 0;
    for (int s = 0; s < g->nslots; s++)
        if (g->kind[s] == CG_KIND_WORK) {
            const cg_space *sp = &g->spaces[g->slot_space[s]];
            g->work_off[s] = g->scratch;
            g->scratch += (sp->rows * sp->cols + 15) & ~(int64_t)15; /* 64 bytes */
        }
    for (int k = 0; k < g->ngemm; k++) {
        cg_gemm *m = &g->gemm[k];
        if (m->a < 0)
            m->a = g->work[-1 - m->a].slot;
        if (m->b < 0)
            m->b = g->work[-1 - m->b].slot;
        m->c = g->work[-1 - m->c].slot;
        if (g->kind[m->a] != CG_KIND_WORK)
            g->read |= 1ull << m->a;
        if (g->kind[m->b] != CG_KIND_WORK)
            g->read |= 1ull << m->b;
    }
    return JOPT_OK;
}

static int64_t block(int64_t n, int64_t most)
{
    if (n <= most)
        return n;
    int64_t parts = (n + most - 1) / most, b = (n + parts - 1) / parts;
    return (b + 15) & ~(int64_t)15;
}

void cg_gemm_tiles(const cg_gemm *m, int64_t *rows, int64_t *cols)
{
    /* blocks of at most 256 rows and 512 columns of C (measured: as fast
     * per flop as one call, or faster, with OpenBLAS 0.3.21 on Zen 3),
     * one block for a small product; fixed by the sizes, so the bits
     * never depend on the thread count.  A symmetric product: square
     * blocks, on and below the diagonal. */
    int small = (double)m->m * (double)m->n * (double)m->k <= (double)(1 << 22);
    *rows = small ? m->m : block(m->m, 256);
    *cols = small ? m->n : m->sym ? *rows : block(m->n, 512);
}

size_t cg_gemm_ntasks(const cg_gemm *m)
{
    int64_t rows, cols;
    cg_gemm_tiles(m, &rows, &cols);
    size_t nr = (size_t)((m->m + rows - 1) / rows), nc = (size_t)((m->n + cols - 1) / cols);
    return m->sym ? nr * (nr + 1) / 2 : nr * nc;
}
