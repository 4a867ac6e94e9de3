/*
 * graph.c - the expression graph: node construction with type inference,
 * constant folding and hash-consing (equal subexpressions are one node), and
 * cg_graph_finish, the whitelist check every graph passes before LLVM.
 */
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

cg_graph *cg_graph_new(void)
{
    cg_graph *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    for (int i = 0; i < CG_MAX_SLOTS; i++)
        g->store[i] = -1;
    g->fault = -1;
    return g;
}

void cg_graph_free(cg_graph *g)
{
    if (!g)
        return;
    free(g->nodes);
    free(g->table);
    free(g->uniform);
    free(g->subst);
    free(g);
}

uint64_t cg_fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static uint64_t node_hash(const cg_node *n)
{
    unsigned char buf[sizeof(double) + 4 * sizeof(int32_t) + 3];
    size_t k = 0;
    memcpy(buf + k, &n->value, sizeof n->value), k += sizeof n->value;
    memcpy(buf + k, n->arg, sizeof n->arg), k += sizeof n->arg;
    memcpy(buf + k, &n->slot, sizeof n->slot), k += sizeof n->slot;
    buf[k++] = n->op;
    buf[k++] = n->varying;
    buf[k++] = n->boolean;
    return cg_fnv(CG_FNV_INIT, buf, k);
}

static int node_equal(const cg_node *a, const cg_node *b)
{
    return a->op == b->op && a->varying == b->varying &&
           a->boolean == b->boolean && a->slot == b->slot &&
           memcmp(&a->value, &b->value, sizeof a->value) == 0 &&
           memcmp(a->arg, b->arg, sizeof a->arg) == 0;
}

static int grow_table(cg_graph *g)
{
    int tcap = g->tcap ? g->tcap * 2 : 256;
    int32_t *t = calloc((size_t)tcap, sizeof *t);
    if (!t)
        return -1;
    for (int i = 0; i < g->n; i++) {
        size_t h = (size_t)node_hash(&g->nodes[i]) & (size_t)(tcap - 1);
        while (t[h])
            h = (h + 1) & (size_t)(tcap - 1);
        t[h] = i + 1;
    }
    free(g->table);
    g->table = t;
    g->tcap = tcap;
    return 0;
}

/* Returns the index of a node equal to `n`, adding it if new. */
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
        cg_node *nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            return -1;
        g->nodes = nodes;
        g->cap = cap;
    }
    g->nodes[g->n] = *n;
    g->nodes[g->n].line = g->line;
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
    return intern(g, &n);
}

int32_t cg_graph_step(cg_graph *g)
{
    cg_node n = blank(CG_STEP);
    return intern(g, &n);
}

int32_t cg_graph_load(cg_graph *g, int slot)
{
    cg_node n = blank(CG_LOAD);
    n.varying = 1;
    n.slot = slot;
    return intern(g, &n);
}

int32_t cg_graph_scalar(cg_graph *g, int slot)
{
    cg_node n = blank(CG_SCALAR);
    n.slot = slot;
    return intern(g, &n);
}

int32_t cg_graph_hyper(cg_graph *g, int offset)
{
    cg_node n = blank(CG_HYPER);
    n.slot = offset;
    return intern(g, &n);
}

/* Type rules.  Returns -2 for a type error (the tracer words it), -3 for
 * a per-step-only op on a per-element value, -4 for a reduction of a
 * per-step value, -1 for an allocation failure or an oversized graph. */
int32_t cg_graph_op(cg_graph *g, cg_op op, int32_t a, int32_t b, int32_t c)
{
    int32_t args[3] = {a, b, c};
    int arity = cg_op_arity(op), flags = cg_op_flags(op);
    cg_node n = blank(op);
    int all_const = 1;
    if (flags & CG_F_LEAF)
        return -2;
    for (int i = 0; i < arity; i++) {
        if (args[i] < 0 || args[i] >= g->n)
            return -2;
        const cg_node *x = &g->nodes[args[i]];
        n.arg[i] = args[i];
        n.varying |= x->varying;
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
    if (n.varying && (flags & CG_F_UNIFORM))
        return -3;
    if (flags & CG_F_REDUCE) { /* per element in, per step out */
        if (!n.varying)
            return -4;
        n.varying = 0;
        all_const = 0;
    }
    if (all_const) {
        double v[3] = {0, 0, 0};
        for (int i = 0; i < arity; i++)
            v[i] = g->nodes[args[i]].value;
        cg_node k = blank(CG_CONST);
        k.value = cg_eval_double(op, v[0], v[1], v[2]);
        k.boolean = n.boolean;
        return intern(g, &k);
    }
    return intern(g, &n);
}

/* Numbers the reductions and splits the stores between the two passes
 * (see cg_graph); refuses what two passes cannot do. */
static int split_passes(cg_graph *g, char *err)
{
    uint8_t *late = calloc((size_t)g->n + 1, 1);
    uint8_t *need = calloc((size_t)g->n + 1, 1);
    int32_t *by = malloc(((size_t)g->n + 1) * sizeof *by); /* who needs it */
    g->subst = malloc(((size_t)g->n + 1) * sizeof *g->subst);
    int rc = JOPT_OK;
    if (!late || !need || !by || !g->subst) {
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
        goto done;
    }
    for (int i = 0; i < g->n; i++) {
        cg_node *x = &g->nodes[i];
        g->subst[i] = -1;
        for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
            late[i] |= late[x->arg[k]];
        by[i] = i;
        if (cg_op_flags((cg_op)x->op) & CG_F_REDUCE) {
            if (late[i] || g->nreduce == CG_MAX_REDUCE) {
                g->fault = i;
                rc = cg_fail(err, JOPT_ESPEC, late[i]
                             ? "a sum over a value that depends on another sum "
                               "(one level of reductions is supported)"
                             : "more than %d sums in one update", CG_MAX_REDUCE);
                goto done;
            }
            g->reduce_kind[g->nreduce] = x->op == CG_SUM ? CG_REDUCE_SUM
                                                         : CG_REDUCE_MAX;
            x->slot = g->nreduce++;
            late[i] = 1;
        }
    }
    for (int s = 0; s < g->nslots; s++) {
        int32_t v = g->store[s];
        g->late_store[s] = v >= 0 && late[v];
        if (v >= 0 && !late[v] && !g->scalar[s] && g->nodes[v].varying)
            g->subst[v] = s;
        if (v >= 0 && late[v] && !g->scalar[s])
            need[v] = 1;
    }
    /* pass 1 recomputes what it needs, except what pass 0 stored: it must
     * not need the old value of an array that pass 0 overwrote */
    for (int i = g->n - 1; i >= 0; i--) {
        const cg_node *x = &g->nodes[i];
        if (!need[i] || !x->varying || g->subst[i] >= 0)
            continue;
        if (x->op == CG_LOAD && g->store[x->slot] >= 0 && !g->late_store[x->slot]) {
            g->fault = by[i]; /* where the old value is used */
            rc = cg_fail(err, JOPT_ESPEC, "after a sum, update() uses the old "
                         "value of array %d, which the pass before the sum "
                         "already overwrote", x->slot);
            goto done;
        }
        for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
            if (!need[x->arg[k]]) {
                need[x->arg[k]] = 1;
                by[x->arg[k]] = i;
            }
    }
done:
    free(late);
    free(need);
    free(by);
    return rc;
}

/* The array slots that live per-element code loads: what the stores and
 * the results need, back to the leaves (LLVM drops the rest). */
static int mark_reads(cg_graph *g, char *err)
{
    uint8_t *live = calloc((size_t)g->n + 1, 1);
    if (!live)
        return cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] >= 0)
            live[g->store[s]] = 1;
    for (int r = 0; r < g->nresult; r++)
        live[g->result[r]] = 1;
    g->read = 0;
    for (int i = g->n - 1; i >= 0; i--) {
        const cg_node *x = &g->nodes[i];
        if (!live[i])
            continue;
        for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
            live[x->arg[k]] = 1;
        if (x->op == CG_LOAD)
            g->read |= 1ull << x->slot;
    }
    free(live);
    return JOPT_OK;
}

int cg_graph_finish(cg_graph *g, char *err)
{
    int rc0 = split_passes(g, err);
    if (rc0)
        return rc0;
    int nuni = 0;
    int32_t *uni = malloc(((size_t)g->n + 1) * sizeof *uni);
    int *slot_of = malloc(((size_t)g->n + 1) * sizeof *slot_of);
    if (!uni || !slot_of) {
        free(uni);
        free(slot_of);
        return cg_fail(err, JOPT_ENOMEM, "out of memory finishing graph");
    }
    for (int i = 0; i < g->n; i++)
        slot_of[i] = -1;
    for (int i = 0; i < g->n; i++) {
        cg_node *x = &g->nodes[i];
        if (x->op >= CG_NOPS)
            goto bad;
        int arity = cg_op_arity((cg_op)x->op);
        for (int k = 0; k < 3; k++) {
            if (k < arity ? (x->arg[k] < 0 || x->arg[k] >= i) : x->arg[k] != -1)
                goto bad;
        }
        if ((x->op == CG_LOAD || x->op == CG_SCALAR) &&
            (x->slot < 0 || x->slot >= g->nslots ||
             g->scalar[x->slot] != (x->op == CG_SCALAR)))
            goto bad;
        if (!x->varying)
            continue;
        /* a varying node's uniform, non-constant operands get a slot */
        for (int k = 0; k < arity; k++) {
            int32_t a = x->arg[k];
            const cg_node *y = &g->nodes[a];
            if (!y->varying && y->op != CG_CONST && slot_of[a] < 0) {
                slot_of[a] = nuni;
                uni[nuni++] = a;
            }
        }
    }
    for (int s = 0; s < g->nslots; s++) {
        int32_t v = g->store[s];
        if (v >= g->n || (v >= 0 && g->nodes[v].boolean) ||
            (v >= 0 && g->scalar[s] && g->nodes[v].varying))
            goto bad;
        /* a uniform stored into an array needs a slot too (a scalar
         * state's new value is written by the uniform pass instead) */
        if (v >= 0 && !g->scalar[s] && !g->nodes[v].varying &&
            g->nodes[v].op != CG_CONST && slot_of[v] < 0) {
            slot_of[v] = nuni;
            uni[nuni++] = v;
        }
    }
    /* a vector kernel's results are read from u after its last pass */
    for (int r = 0; r < g->nresult; r++) {
        int32_t v = g->result[r];
        if (v < 0 || v >= g->n || g->nodes[v].varying || g->nodes[v].boolean)
            goto bad;
        if (g->nodes[v].op != CG_CONST && slot_of[v] < 0) {
            slot_of[v] = nuni;
            uni[nuni++] = v;
        }
    }
    if (nuni > CG_MAX_UNIFORMS) {
        g->fault = uni[CG_MAX_UNIFORMS]; /* the first one over */
        free(uni);
        free(slot_of);
        return cg_fail(err, JOPT_ESPEC, "update() needs %d per-step values "
                       "(at most %d)", nuni, CG_MAX_UNIFORMS);
    }
    for (int i = 0; i < g->n; i++)
        g->nodes[i].uslot = slot_of[i];
    free(slot_of);
    free(g->uniform);
    g->uniform = uni;
    g->nuniform = nuni;
    return mark_reads(g, err);
bad:
    free(uni);
    free(slot_of);
    return cg_fail(err, JOPT_ESPEC, "internal error: malformed graph");
}

int cg_graph_has_late(const cg_graph *g)
{
    for (int s = 0; s < g->nslots; s++)
        if (g->nreduce && g->store[s] >= 0 && g->late_store[s] && !g->scalar[s])
            return 1;
    return 0;
}
