/*
 * graph.c - the expression graph: node construction with domain and type
 * inference, constant folding and hash-consing (equal subexpressions are
 * one node); and cg_graph_finish, the check every graph passes before LLVM,
 * which also cuts the update into levels and plans their loops.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

static const struct {
    const char *name;
    int arity, flags;
} op_info[CG_NOPS] = {
#define OP_INFO(id, name, arity, flags, d, f, ir) [CG_##id] = {name, arity, flags},
    CG_OPS(OP_INFO)
#undef OP_INFO
};

int cg_op_arity(cg_op op) { return op_info[op].arity; }
int cg_op_flags(cg_op op) { return op_info[op].flags; }
const char *cg_op_name(cg_op op) { return op_info[op].name; }

int cg_reduce_dom(cg_op op)
{
    int f = cg_op_flags(op);
    return f & CG_F_TO_ROW ? CG_DOM_ROW : f & CG_F_TO_COL ? CG_DOM_COL
           : f & CG_F_TO_GROUP ? CG_DOM_GROUP : CG_DOM_TENSOR;
}

int cg_fail(char *err, int status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CG_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return status;
}

uint64_t cg_fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

cg_graph *cg_graph_new(void)
{
    cg_graph *g = cg_calloc(1, sizeof *g);
    if (!g)
        return NULL;
    for (int i = 0; i < CG_MAX_SLOTS; i++)
        g->store[i] = -1;
    for (int i = 0; i < CG_MAX_GSTATE; i++)
        g->gstore[i] = -1;
    g->rank = -1;
    return g;
}

void cg_graph_free(cg_graph *g)
{
    if (!g)
        return;
    cg_free(g->nodes);
    cg_free(g->table);
    cg_free(g->uniform);
    for (int i = 0; i < g->nguard; i++)
        cg_free(g->guard_msg[i]);
    cg_free(g->loops);
    cg_free(g->work);
    cg_free(g->work_of);
    cg_free(g->gemm);
    cg_free(g);
}

/* what identifies a node: everything but its level, u slot and line */
static uint64_t node_hash(const cg_node *n)
{
    unsigned char buf[sizeof(double) + 4 * sizeof(int32_t) + 4];
    size_t k = 0;
    memcpy(buf + k, &n->value, sizeof n->value), k += sizeof n->value;
    memcpy(buf + k, n->arg, sizeof n->arg), k += sizeof n->arg;
    memcpy(buf + k, &n->slot, sizeof n->slot), k += sizeof n->slot;
    buf[k++] = n->op;
    buf[k++] = n->dom;
    buf[k++] = n->boolean;
    buf[k++] = n->space;
    return cg_fnv(CG_FNV_INIT, buf, k);
}

static int node_equal(const cg_node *a, const cg_node *b)
{
    return a->op == b->op && a->dom == b->dom && a->boolean == b->boolean &&
           a->space == b->space && a->slot == b->slot &&
           memcmp(&a->value, &b->value, sizeof a->value) == 0 &&
           memcmp(a->arg, b->arg, sizeof a->arg) == 0;
}

static int grow_table(cg_graph *g)
{
    int tcap = g->tcap ? g->tcap * 2 : 256;
    int32_t *t = cg_calloc((size_t)tcap, sizeof *t);
    if (!t)
        return -1;
    for (int i = 0; i < g->n; i++) {
        size_t h = (size_t)node_hash(&g->nodes[i]) & (size_t)(tcap - 1);
        while (t[h])
            h = (h + 1) & (size_t)(tcap - 1);
        t[h] = i + 1;
    }
    cg_free(g->table);
    g->table = t;
    g->tcap = tcap;
    return 0;
}

/* Returns the index of a node equal to `n`, adding it if new (an existing
 * node keeps the line that first made it). */
static int32_t intern(cg_graph *g, const cg_node *n)
{
    if (g->tcap == 0 || (g->n + 1) * 2 > g->tcap)
        if (grow_table(g) < 0)
            return -1;
    size_t mask = (size_t)(g->tcap - 1);
    size_t h = (size_t)node_hash(n) & mask;
    for (; g->table[h]; h = (h + 1) & mask)
        if (node_equal(&g->nodes[g->table[h] - 1], n))
            return g->table[h] - 1;
    if (g->n >= CG_MAX_NODES)
        return -1;
    if (g->n == g->cap) {
        int cap = g->cap ? g->cap * 2 : 64;
        cg_node *nodes = cg_realloc(g->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return -1;
        g->nodes = nodes;
        g->cap = cap;
    }
    g->nodes[g->n] = *n;
    g->table[h] = g->n + 1;
    return g->n++;
}

static cg_node blank(cg_op op)
{
    cg_node n;
    memset(&n, 0, sizeof n);
    n.op = (uint8_t)op;
    n.arg[0] = n.arg[1] = n.arg[2] = -1;
    n.slot = -1;
    n.uslot = -1;
    return n;
}

int32_t cg_graph_const(cg_graph *g, double v)
{
    cg_node n = blank(CG_CONST);
    n.value = v; /* compared bitwise: -0.0 and NaN stay distinct */
    n.dom = CG_DOM_GROUP;
    return intern(g, &n);
}

int32_t cg_graph_leaf(cg_graph *g, cg_op op, int dom, int slot)
{
    cg_node n = blank(op);
    n.dom = (uint8_t)dom;
    n.slot = slot;
    return intern(g, &n);
}

int32_t cg_graph_node(cg_graph *g, cg_op op, int dom, int space, int32_t a,
                      int32_t b, double value, int line)
{
    cg_node n = blank(op);
    n.dom = (uint8_t)dom;
    n.space = (uint8_t)space;
    n.arg[0] = a;
    n.arg[1] = b;
    n.value = value;
    n.line = line;
    return intern(g, &n);
}

/* Type rules.  Returns -2 for a type error (the tracer words it), -3 for
 * a per-step-only op on a per-element value, -4 for a reduction of a value
 * that does not vary over what it reduces, -5 for a group reduction of a
 * per-element value, -8 for matrices that do not fit (g->why says why), -1
 * for an allocation failure or an oversized graph. */
int32_t cg_graph_op(cg_graph *g, cg_op op, int32_t a, int32_t b, int32_t c,
                    int line)
{
    int32_t args[3] = {a, b, c};
    int arity = cg_op_arity(op), flags = cg_op_flags(op);
    cg_node n = blank(op);
    int all_const = 1, space = 0, transposed = 0;
    if (flags & (CG_F_LEAF | CG_F_MATRIX))
        return -2;
    for (int i = 0; i < arity; i++) { /* a matrix of its own, or a view */
        if (args[i] < 0 || args[i] >= g->n)
            return -2;
        const cg_node *x = &g->nodes[args[i]];
        if (x->dom != CG_DOM_ELEM || (!x->space && x->op != CG_TRANSPOSE))
            continue;
        if (flags & CG_F_REDUCE) { /* over a view: over what it shows */
            if (flags & (CG_F_TO_ROW | CG_F_TO_COL)) {
                snprintf(g->why, sizeof g->why, "sums over an axis take the "
                         "tensor's own elements, not a matrix product's or a "
                         "transposed matrix's");
                return -8;
            }
            if (x->op == CG_TRANSPOSE)
                args[i] = x->arg[0];
            break;
        }
        int32_t r = cg_matrix_operands(g, args, arity, &space, &transposed);
        if (r < 0)
            return r;
        break;
    }
    n.dom = CG_DOM_GROUP;
    for (int i = 0; i < arity; i++) {
        if (args[i] < 0 || args[i] >= g->n)
            return -2;
        const cg_node *x = &g->nodes[args[i]];
        n.arg[i] = args[i];
        n.dom = (uint8_t)cg_dom_join(n.dom, x->dom);
        all_const &= x->op == CG_CONST;
        /* which operands must be truth values; where's two branches
         * may be either, as long as they agree */
        int want_bool = (flags & CG_F_BOOLARGS) || ((flags & CG_F_SELECT) && i == 0);
        if ((flags & CG_F_SELECT) && i > 0)
            continue;
        if (x->boolean != want_bool)
            return -2;
    }
    if (flags & CG_F_SELECT) {
        if (g->nodes[b].boolean != g->nodes[c].boolean)
            return -2;
        n.boolean = g->nodes[b].boolean;
    } else {
        n.boolean = (flags & CG_F_BOOL) != 0;
    }
    if (cg_dom_varying(n.dom) && (flags & CG_F_UNIFORM))
        return -3;
    if (flags & CG_F_REDUCE) {
        int to = cg_reduce_dom(op), from = n.dom;
        if (to == CG_DOM_GROUP ? from != CG_DOM_TENSOR : !cg_dom_varying(from))
            return to == CG_DOM_GROUP && cg_dom_varying(from) ? -5 : -4;
        /* a row value does not vary along the last axis, nor a column value
         * along the second-to-last: that axis is already reduced */
        if ((to == CG_DOM_ROW && from == CG_DOM_ROW) || (to == CG_DOM_COL && from == CG_DOM_COL))
            return -4;
        n.dom = (uint8_t)to;
        all_const = 0;
    }
    n.line = line;
    if (n.dom == CG_DOM_ELEM)
        n.space = (uint8_t)space;
    if (all_const) {
        double v[3] = {0, 0, 0};
        for (int i = 0; i < arity; i++)
            v[i] = g->nodes[args[i]].value;
        cg_node k = blank(CG_CONST);
        k.value = cg_eval_double(op, v[0], v[1], v[2]);
        k.boolean = n.boolean;
        k.dom = CG_DOM_GROUP;
        return intern(g, &k);
    }
    int32_t r = intern(g, &n);
    return transposed && r >= 0 ? cg_matrix_transpose(g, r, line) : r;
}

/* ---- levels and loops -------------------------------------------------------- */

/* the domain of what a slot holds */
static int slot_dom(int kind)
{
    return kind == CG_KIND_ROW ? CG_DOM_ROW : kind == CG_KIND_COL ? CG_DOM_COL
           : kind == CG_KIND_SCALAR || kind == CG_KIND_SCALAR64 ? CG_DOM_TENSOR
                                                                : CG_DOM_ELEM;
}

void cg_store_loop(const cg_graph *g, int slot, int *level, int *kind)
{
    int v = g->store[slot];
    *level = v < 0 ? -1 : g->defer_stores ? g->nlevels - 1 : g->nodes[v].level;
    int d = slot_dom(g->kind[slot]);
    *kind = d == CG_DOM_ROW ? CG_LOOP_ROW : d == CG_DOM_COL ? CG_LOOP_COL
            : d == CG_DOM_ELEM ? CG_LOOP_ELEM : -1; /* a scalar: per step */
}

/* The loop that accumulates reduction node x (-1: merged per step).  A
 * column sum of anything but row values is taken in the element loop, by
 * blocks of rows (cg_task's cpart), with the row sums: one pass over the
 * elements fewer than a walk down the columns.  A column sum of row
 * values (Adafactor's mean of its row statistics) keeps its column loop,
 * which adds such a value once per row (emit.c, find_rowc). */
static int reduce_loop(const cg_graph *g, const cg_node *x)
{
    int to = cg_reduce_dom((cg_op)x->op), from = g->nodes[x->arg[0]].dom;
    if (to == CG_DOM_GROUP)
        return -1;
    if (to == CG_DOM_COL)
        return from == CG_DOM_ROW ? CG_LOOP_COLS : CG_LOOP_ELEM;
    if (to == CG_DOM_ROW) /* each row's sum, in the element loop */
        return CG_LOOP_ELEM;
    return from == CG_DOM_ROW ? CG_LOOP_ROW : from == CG_DOM_COL ? CG_LOOP_COL
                                                                 : CG_LOOP_ELEM;
}

int cg_loop_stores(const cg_graph *g, const cg_loop *l, int s)
{
    int lv, k;
    cg_store_loop(g, s, &lv, &k);
    return lv == l->level && k == l->kind && g->slot_space[s] == l->space;
}

int cg_loop_stores_work(const cg_graph *g, const cg_loop *l, int w)
{
    const cg_node *x = &g->nodes[g->work[w].node];
    return g->work[w].stored && l->kind == CG_LOOP_ELEM && x->level == l->level &&
           x->space == l->space;
}

int cg_loop_accumulates(const cg_graph *g, const cg_loop *l, int32_t i)
{
    const cg_node *x = &g->nodes[i];
    return (cg_op_flags((cg_op)x->op) & CG_F_REDUCE) && x->level == l->level + 1 &&
           reduce_loop(g, x) == l->kind && g->nodes[x->arg[0]].space == l->space;
}

/* whether loop l stores or accumulates anything */
int cg_loop_busy(const cg_graph *g, const cg_loop *l)
{
    for (int s = 0; s < g->nslots; s++)
        if (cg_loop_stores(g, l, s))
            return 1;
    for (int w = 0; w < g->nwork; w++)
        if (cg_loop_stores_work(g, l, w))
            return 1;
    for (int i = 0; i < g->n; i++)
        if (cg_loop_accumulates(g, l, i))
            return 1;
    return 0;
}

/* Whether a value stored in slot s is already written when loop (level,
 * kind) runs: stores of an earlier level, or of an earlier loop of the
 * same level. */
static int written_before(const cg_graph *g, int s, int level, int kind)
{
    int lv, k;
    cg_store_loop(g, s, &lv, &k);
    return lv >= 0 && k >= 0 && (lv < level || (lv == level && k < kind));
}

/* a stored slot of node i written before loop (level, kind), or -1 */
static int reload_slot(const cg_graph *g, int32_t i, int level, int kind)
{
    int w = cg_matrix_reload(g, i, level);
    if (w >= 0)
        return w;
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] == i && slot_dom(g->kind[s]) == g->nodes[i].dom &&
            written_before(g, s, level, kind))
            return s;
    return -1;
}

void cg_loop_plan(const cg_graph *g, const cg_loop *l, uint8_t *how)
{
    memset(how, CG_HOW_NONE, (size_t)g->n);
    uint8_t *need = how; /* marked COMPUTE first, refined below */
    for (int s = 0; s < g->nslots; s++)
        if (cg_loop_stores(g, l, s))
            need[g->store[s]] = CG_HOW_COMPUTE;
    for (int w = 0; w < g->nwork; w++)
        if (cg_loop_stores_work(g, l, w))
            need[g->work[w].node] = CG_HOW_COMPUTE;
    for (int i = 0; i < g->n; i++)
        if (cg_loop_accumulates(g, l, i))
            need[g->nodes[i].arg[0]] = CG_HOW_COMPUTE;
    for (int i = g->n - 1; i >= 0; i--) {
        const cg_node *x = &g->nodes[i];
        if (need[i] == CG_HOW_NONE)
            continue;
        if (x->op == CG_CONST || !cg_dom_varying(x->dom)) {
            how[i] = CG_HOW_UNIFORM;
            continue;
        }
        if (cg_op_flags((cg_op)x->op) & CG_F_REDUCE) { /* a row or column sum */
            how[i] = CG_HOW_AXIS;
            continue;
        }
        if (reload_slot(g, i, l->level, l->kind) >= 0 || x->op == CG_MATMUL) {
            how[i] = CG_HOW_RELOAD; /* a product is always read back */
            continue;
        }
        how[i] = x->dom == CG_DOM_ROW && l->kind >= CG_LOOP_COLS ? CG_HOW_ROWWISE
                                                                 : CG_HOW_COMPUTE;
        for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
            if (need[x->arg[k]] == CG_HOW_NONE)
                need[x->arg[k]] = CG_HOW_COMPUTE;
    }
}

int cg_reload_slot(const cg_graph *g, int32_t i, const cg_loop *l)
{
    return reload_slot(g, i, l->level, l->kind);
}

static int fail_at(char *err, const char *where, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_at(char *err, const char *where, int line, const char *fmt, ...)
{
    char msg[CG_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        return cg_fail(err, JOPT_ESPEC, "%s:%d: %s", where, line, msg);
    return cg_fail(err, JOPT_ESPEC, "%s: %s", where, msg);
}

/* Levels: a node is known one level after the reductions it depends on.
 * Numbers the reductions by kind; refuses what the loops cannot do. */
static int assign_levels(cg_graph *g, const char *where, char *err)
{
    /* a level of reductions is a pass over the data: 8 at most, unless
     * matrix products (each a level) need more */
    int limit = CG_MAX_RED_LEVELS;
    for (int i = 0; i < g->n; i++)
        limit = g->nodes[i].op == CG_MATMUL ? CG_MAX_LEVELS : limit;
    g->nlevels = 1;
    for (int i = 0; i < g->n; i++) {
        cg_node *x = &g->nodes[i];
        int lv = 0;
        for (int k = 0; k < cg_op_arity((cg_op)x->op); k++) {
            int a = g->nodes[x->arg[k]].level;
            lv = a > lv ? a : lv;
        }
        int flags = cg_op_flags((cg_op)x->op);
        if (x->op == CG_MATMUL && ++lv >= CG_MAX_LEVELS)
            return fail_at(err, where, x->line, "matrix products and reductions "
                           "nested %d deep (at most %d)", lv, CG_MAX_LEVELS - 1);
        if (flags & CG_F_REDUCE) {
            int to = cg_reduce_dom((cg_op)x->op), max = flags & CG_F_MAX;
            int *count = to == CG_DOM_ROW ? &g->nrowred : to == CG_DOM_COL ? &g->ncolred
                         : to == CG_DOM_GROUP ? &g->ngred : &g->nreduce;
            int cap = to == CG_DOM_ROW || to == CG_DOM_COL ? CG_MAX_AXISRED : CG_MAX_REDUCE;
            if (*count == cap)
                return fail_at(err, where, x->line, "more than %d reductions of "
                               "this kind (%s) in one update", cap,
                               cg_op_name((cg_op)x->op));
            uint8_t *kinds = to == CG_DOM_ROW ? g->row_kind : to == CG_DOM_COL ? g->col_kind
                             : to == CG_DOM_GROUP ? g->gred_kind : g->reduce_kind;
            kinds[*count] = max ? CG_REDUCE_MAX : CG_REDUCE_SUM;
            if (to == CG_DOM_GROUP)
                g->gred_arg[*count] = x->arg[0];
            x->slot = (*count)++;
            lv++;
            if (lv >= limit)
                return fail_at(err, where, x->line, "reductions nested %d deep "
                               "(at most %d: each needs a pass over the data)",
                               lv, limit - 1);
        }
        x->level = (uint16_t)lv;
        if (lv + 1 > g->nlevels)
            g->nlevels = lv + 1;
        if (x->dom == CG_DOM_ROW || x->dom == CG_DOM_COL)
            g->two_d = 1;
    }
    for (int s = 0; s < g->nslots; s++)
        if (g->kind[s] == CG_KIND_ROW || g->kind[s] == CG_KIND_COL)
            g->two_d = 1;
    return JOPT_OK;
}

/* name of slot s for messages */
static const char *what_slot(int s, char *buf, size_t cap)
{
    if (s == 0)
        return "the parameter";
    if (s == 1)
        return "the gradient";
    snprintf(buf, cap, "array %d", s);
    return buf;
}

/* the line of the first operation in the loop (per `how`) that uses node
 * i: a load has no line of its own */
static int user_line(const cg_graph *g, const uint8_t *how, int32_t i)
{
    for (int j = i + 1; j < g->n; j++) {
        const cg_node *y = &g->nodes[j];
        if (how[j] != CG_HOW_COMPUTE && how[j] != CG_HOW_ROWWISE)
            continue;
        for (int k = 0; k < cg_op_arity((cg_op)y->op); k++)
            if (y->arg[k] == i && y->line > 0)
                return y->line;
    }
    return g->nodes[i].line;
}

/* Plans the loops of every level; refuses a loop that would need the old
 * value of an array an earlier loop overwrote. */
static int plan_loops(cg_graph *g, const char *where, char *err)
{
    uint8_t *how = cg_malloc((size_t)g->n + 1);
    if (!how)
        return cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
    int rc = JOPT_OK, cap = 0;
    g->nloops = 0;
    g->read = 0;
    g->npass = 0;
    for (int lv = 0; lv < g->nlevels && rc == JOPT_OK; lv++)
        for (int ks = 0; ks < CG_NLOOP_KINDS * CG_MAX_SPACES && rc == JOPT_OK; ks++) {
            /* kinds in order; the element loops space by space */
            int kind = ks < CG_LOOP_ELEM ? ks : CG_LOOP_ELEM;
            int space = ks < CG_LOOP_ELEM ? 0 : ks - CG_LOOP_ELEM;
            if (space >= (g->nspaces ? g->nspaces : 1))
                break;
            cg_loop l = {(uint16_t)lv, (uint8_t)kind, (uint8_t)space, 0};
            if (!cg_loop_busy(g, &l))
                continue;
            for (int i = 0; i < g->n && kind == CG_LOOP_ELEM && g->two_d; i++)
                if (cg_loop_accumulates(g, &l, i) &&
                    cg_reduce_dom((cg_op)g->nodes[i].op) == CG_DOM_COL)
                    l.colsums = 1;
            if (kind != CG_LOOP_ELEM && !g->two_d)
                continue;
            if (g->nloops == cap) {
                cap = cap ? 2 * cap : 8;
                cg_loop *loops = cg_realloc(g->loops, (size_t)cap * sizeof *loops);
                if (!loops) {
                    rc = cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
                    break;
                }
                g->loops = loops;
            }
            cg_loop_plan(g, &l, how);
            int pass = kind >= CG_LOOP_COLS && space == 0 && g->npass < CG_MAX_PASSES
                           ? g->npass++ : -1;
            if (pass >= 0) {
                g->pass_read[pass] = g->pass_written[pass] = 0;
                for (int s = 0; s < g->nslots; s++) {
                    int slv, sk;
                    cg_store_loop(g, s, &slv, &sk);
                    if (slv == lv && sk == kind)
                        g->pass_written[pass] |= 1ull << s;
                }
                for (int i = 0; i < g->n; i++)
                    if (how[i] == CG_HOW_RELOAD)
                        g->pass_read[pass] |= 1ull << reload_slot(g, i, lv, kind);
            }
            for (int i = 0; i < g->n && rc == JOPT_OK; i++) {
                const cg_node *x = &g->nodes[i];
                if (how[i] != CG_HOW_COMPUTE && how[i] != CG_HOW_ROWWISE)
                    continue;
                if (x->op == CG_LOAD && pass >= 0)
                    g->pass_read[pass] |= 1ull << x->slot;
                if (x->op == CG_LOAD) {
                    char b[32];
                    g->read |= 1ull << x->slot;
                    if (written_before(g, x->slot, lv, kind) &&
                        g->store[x->slot] != i)
                        rc = fail_at(err, where, user_line(g, how, i),
                                     "uses the old value "
                                     "of %s after a reduction, when the pass "
                                     "before it has already overwritten it",
                                     what_slot(x->slot, b, sizeof b));
                }
            }
            g->loops[g->nloops++] = l;
        }
    cg_free(how);
    return rc;
}

/* Numbers the per-step values that other code reads: operands of loop
 * code, values stored into arrays, results, group sums' operands and group
 * states' new values. */
static int number_uniforms(cg_graph *g, const char *where, char *err)
{
    uint8_t *keep = cg_calloc((size_t)g->n + 1, 1), *how = cg_malloc((size_t)g->n + 1);
    int32_t *uni = cg_malloc(((size_t)g->n + 1) * sizeof *uni);
    int nuni = 0, rc = JOPT_OK;
    if (!keep || !how || !uni) {
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
        goto done;
    }
    for (int li = 0; li < g->nloops; li++) {
        cg_loop_plan(g, &g->loops[li], how);
        for (int i = 0; i < g->n; i++)
            keep[i] |= how[i] == CG_HOW_UNIFORM && g->nodes[i].op != CG_CONST;
    }
    for (int r = 0; r < g->nresult; r++)
        keep[g->result[r]] |= g->nodes[g->result[r]].op != CG_CONST;
    for (int r = 0; r < g->ngred; r++)
        keep[g->gred_arg[r]] = 1;
    for (int s = 0; s < g->ngstate; s++)
        if (g->gstore[s] >= 0)
            keep[g->gstore[s]] = 1;
    for (int i = 0; i < g->n; i++) {
        g->nodes[i].uslot = keep[i] ? nuni : -1;
        if (keep[i])
            uni[nuni++] = i;
    }
    if (nuni > CG_MAX_UNIFORMS) {
        rc = fail_at(err, where, g->nodes[uni[CG_MAX_UNIFORMS]].line, /* the first over */
                     "update() needs %d per-step values (at most %d)", nuni,
                     CG_MAX_UNIFORMS);
        goto done;
    }
    cg_free(g->uniform);
    g->uniform = uni;
    g->nuniform = nuni;
    uni = NULL;
    g->nextra = 0; /* each stochastic store's key follows them */
    for (int s = 0; s < g->nslots; s++) {
        g->sr[s] = g->sr[s] && g->store[s] >= 0;
        g->sru[s] = g->sr[s] ? nuni + g->nextra++ : -1;
    }
done:
    cg_free(keep);
    cg_free(how);
    cg_free(uni);
    return rc;
}

/* A requirement of the step is checked before the step changes anything:
 * it may read t, values, group state and sizes, not a tensor's scalar state
 * (which the step may be about to create) nor a reduction of the data. */
static int check_guards(const cg_graph *g, const char *where, char *err)
{
    for (int k = 0; k < g->nguard; k++) {
        int32_t c = g->guard[k];
        if (c < 0 || c >= g->n || !g->nodes[c].boolean || cg_dom_varying(g->nodes[c].dom))
            return cg_fail(err, JOPT_ESPEC, "internal error: malformed requirement");
        uint8_t *need = cg_calloc((size_t)c + 1, 1);
        if (!need)
            return cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
        need[c] = 1;
        int bad = 0;
        for (int i = c; i >= 0 && !bad; i--) {
            if (!need[i])
                continue;
            const cg_node *x = &g->nodes[i];
            bad = x->op == CG_SCALAR || (cg_op_flags((cg_op)x->op) & CG_F_REDUCE);
            for (int a = 0; a < cg_op_arity((cg_op)x->op); a++)
                need[x->arg[a]] = 1;
        }
        cg_free(need);
        if (bad)
            return fail_at(err, where, g->guard_line[k], "require_that on a traced "
                           "value may read t, the options, group state and sizes, "
                           "not a tensor's scalar state or a sum");
    }
    return JOPT_OK;
}

int cg_graph_finish(cg_graph *g, const char *where, char *err)
{
    /* the whitelist: ops, references, slots, and what may be stored where */
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (x->op >= CG_NOPS)
            goto bad;
        int arity = cg_op_arity((cg_op)x->op);
        for (int k = 0; k < 3; k++)
            if (k < arity ? (x->arg[k] < 0 || x->arg[k] >= i) : x->arg[k] != -1)
                goto bad;
        if (x->op == CG_LOAD &&
            (x->slot < 0 || x->slot >= g->nslots || slot_dom(g->kind[x->slot]) != x->dom))
            goto bad;
        if (x->op == CG_SCALAR &&
            (x->slot < 0 || x->slot >= g->nslots || slot_dom(g->kind[x->slot]) != CG_DOM_TENSOR))
            goto bad;
        if (x->op == CG_GSTATE && (x->slot < 0 || x->slot >= CG_MAX_SLOTS))
            goto bad;
        if (x->space && (x->dom != CG_DOM_ELEM || x->space >= g->nspaces))
            goto bad;
        if ((cg_op_flags((cg_op)x->op) & CG_F_MATRIX) &&
            (x->dom != CG_DOM_ELEM || g->nodes[x->arg[0]].dom != CG_DOM_ELEM ||
             (x->op == CG_MATMUL && g->nodes[x->arg[1]].dom != CG_DOM_ELEM)))
            goto bad;
    }
    for (int s = 0; s < g->nslots; s++) {
        int32_t v = g->store[s];
        /* 16-bit elements: only in per-element arrays; stochastic stores
         * only to bfloat16 */
        if (g->dtype[s] >= CG_NDT || (g->dtype[s] != CG_DT_F32 && g->kind[s] != CG_KIND_ELEM) ||
            (g->sr[s] && g->dtype[s] != CG_DT_BF16))
            goto bad;
        if (v < -1 || v >= g->n || (v >= 0 && g->nodes[v].boolean) ||
            (v >= 0 && g->kind[s] == CG_KIND_INPUT) ||
            (v >= 0 && cg_dom_join(g->nodes[v].dom, slot_dom(g->kind[s])) !=
                           slot_dom(g->kind[s])))
            goto bad;
    }
    for (int s = 0; s < g->ngstate; s++) {
        int32_t v = g->gstore[s];
        if (v < -1 || v >= g->n || (v >= 0 && g->nodes[v].dom != CG_DOM_GROUP))
            goto bad;
    }
    for (int r = 0; r < g->nresult; r++) {
        int32_t v = g->result[r];
        if (v < 0 || v >= g->n || cg_dom_varying(g->nodes[v].dom) || g->nodes[v].boolean)
            goto bad;
    }
    /* With 16-bit arrays, every store waits for the last pass: a value the
     * last pass needs is then recomputed from the old data, unrounded, as
     * in a one-pass kernel, rather than read back rounded. */
    g->defer_stores = 0;
    for (int s = 0; s < g->nslots; s++)
        g->defer_stores |= g->dtype[s] != CG_DT_F32;
    int rc = assign_levels(g, where, err);
    if (rc == JOPT_OK)
        rc = check_guards(g, where, err);
    if (rc == JOPT_OK)
        rc = cg_matrix_collect(g, where, err);
    if (rc == JOPT_OK)
        rc = plan_loops(g, where, err);
    if (rc == JOPT_OK)
        rc = cg_matrix_place(g, where, err);
    if (rc == JOPT_OK)
        rc = number_uniforms(g, where, err);
    return rc;
bad:
    return cg_fail(err, JOPT_ESPEC, "%s: internal error: malformed graph", where);
}
