/*
 * print.c - a finished graph as text: what `jopt compile --emit graph`
 * prints and what the golden tests in tests/graph/ compare against, so the
 * form is stable (docs/specs.md, "Reading a graph"):
 *
 *   graph adam update
 *   slot 0 param
 *   slot 2 exp_avg array init 0
 *   slot 3 exp_avg_sq array init 0 bfloat16 stochastic
 *   %3 = mul %1, %2  elem
 *   %7 = pow %5, %6  tensor u1
 *   %9 = sum %8  tensor r0 @1
 *   store 2 %9
 *   store 0 %14 @1
 *
 * One line per node in graph order, with its domain: `elem` (per element,
 * float32), `row`, `col` (per row or column, float32), `tensor` (per tensor
 * and step, double), `group` (per group and step; constants carry none);
 * `bool` marks truth values, `uK` the per-step values other code reads
 * (index K in u), `rK` reduction K of its kind, `@L` a level above 0 (one
 * more than the reductions it depends on).  Stores carry their level too.
 * A graph with matrices gives each element value its matrix's shape
 * (`elem 7x7`), marks a transposed operand of matmul with `^T`, and lists
 * its workspace (`slot 4 work 7x7`) and its GEMMs:
 *
 *   gemm %21 = slot 4^T x slot 4 -> slot 5 @2 sym
 *
 * (`sym`: a product of a matrix with its own transpose, computed as its
 * lower half and mirrored).
 * A slot whose elements are not float32 names its type, and "stochastic"
 * when its bfloat16 stores round stochastically.  Numbers are printed
 * with the digits that read back exactly.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

typedef struct out {
    char *buf;
    size_t len, cap;
    int oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        /* no buffer yet: measure (NULL + 0 is undefined behaviour) */
        int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->cap - o->len,
                          fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n + 64;
        char *b = cg_realloc(o->buf, cap);
        if (!b) {
            o->oom = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void put_num(out *o, double v)
{
    char buf[40];
    cg_format_number(v, buf, sizeof buf);
    put(o, "%s", buf);
}

static const char *name_or(const char *const *names, int i, char *buf,
                           size_t cap, const char *what)
{
    if (names && names[i])
        return names[i];
    snprintf(buf, cap, "%s%d", what, i);
    return buf;
}

static void put_node(out *o, const cg_graph *g, int i,
                     const char *const *slots, const char *const *gstates,
                     const char *const *hypers)
{
    const cg_node *x = &g->nodes[i];
    char nb[32];
    put(o, "%%%d = %s", i, cg_op_name((cg_op)x->op));
    switch ((cg_op)x->op) {
    case CG_CONST:
        put(o, " ");
        if (x->boolean)
            put(o, "%s", x->value != 0 ? "true" : "false");
        else
            put_num(o, x->value);
        break;
    case CG_LOAD:
    case CG_SCALAR:
        put(o, " %s", name_or(slots, x->slot, nb, sizeof nb, "slot"));
        break;
    case CG_HYPER:
        put(o, " %s", name_or(hypers, x->slot, nb, sizeof nb, "value"));
        break;
    case CG_GSTATE:
        for (int k = 0; k < g->ngstate; k++)
            if (g->gstate[k] == x->slot)
                put(o, " %s", name_or(gstates, k, nb, sizeof nb, "gstate"));
        break;
    case CG_SHAPE:
        if (x->slot == 0)
            put(o, " numel");
        else
            put(o, " %d", -x->slot);
        break;
    case CG_STEP:
        break;
    default:
        for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
            put(o, "%s%%%d%s", k ? ", " : " ", x->arg[k],
                x->op == CG_MATMUL && ((int)x->value >> k & 1) ? "^T" : "");
    }
    static const char *const dom[] = {"group", "tensor", "row", "col", "elem"};
    if (x->op != CG_CONST) {
        put(o, "  %s", dom[x->dom]);
        if (x->dom == CG_DOM_ELEM && g->work_of)
            put(o, " %lldx%lld", (long long)g->spaces[x->space].rows,
                (long long)g->spaces[x->space].cols);
        if (x->boolean)
            put(o, " bool");
    }
    if (x->uslot >= 0)
        put(o, " u%d", x->uslot);
    if (cg_op_flags((cg_op)x->op) & CG_F_REDUCE)
        put(o, " r%d", x->slot);
    if (x->level)
        put(o, " @%d", x->level);
    put(o, "\n");
}

int cg_graph_print(const cg_graph *g, const char *title,
                   const char *const *slots, const char *const *gstates,
                   const char *const *hypers, char **text, char *err)
{
    out o = {NULL, 0, 0, 0};
    char nb[32];
    put(&o, "graph %s\n", title);
    static const char *const kinds[] = {"array", "rows", "cols", "scalar",
                                        "double", "input"};
    for (int s = 0; s < g->nslots; s++) {
        if (g->kind[s] == CG_KIND_WORK) {
            const cg_space *sp = &g->spaces[g->slot_space[s]];
            put(&o, "slot %d work %lldx%lld\n", s, (long long)sp->rows,
                (long long)sp->cols);
            continue;
        }
        put(&o, "slot %d %s", s, name_or(slots, s, nb, sizeof nb, "slot"));
        int k = s - 2; /* a state's index, in an update's layout */
        if (k >= 0 && k < g->nstate) {
            put(&o, " %s init ", kinds[g->kind[s]]);
            if (g->init[k] == CG_INIT_UNSET)
                put(&o, "unset");
            else
                put_num(&o, g->init_value[k]);
        } else if (g->kind[s] == CG_KIND_INPUT) {
            put(&o, " input");
        }
        if (g->dtype[s] != CG_DT_F32) /* float32 unless it says */
            put(&o, " %s%s", cg_dt_name(g->dtype[s]), g->sr[s] ? " stochastic" : "");
        put(&o, "\n");
    }
    for (int s = 0; s < g->ngstate; s++) {
        put(&o, "group %d %s %s init ", s, name_or(gstates, s, nb, sizeof nb, "gstate"),
            g->gstate_f32[s] ? "float" : "double");
        put_num(&o, g->ginit[s]);
        put(&o, "\n");
    }
    for (int i = 0; i < g->n; i++)
        put_node(&o, g, i, slots, gstates, hypers);
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] >= 0) {
            int lv, kind;
            cg_store_loop(g, s, &lv, &kind);
            put(&o, "store %d %%%d", s, g->store[s]);
            if (lv > 0)
                put(&o, " @%d", lv);
            put(&o, "\n");
        }
    for (int s = 0; s < g->ngstate; s++)
        if (g->gstore[s] >= 0)
            put(&o, "gstore %d %%%d\n", s, g->gstore[s]);
    for (int r = 0; r < g->nresult; r++)
        put(&o, "result %d %%%d\n", r, g->result[r]);
    for (int r = 0; r < g->nguard; r++)
        put(&o, "require %%%d line %d: %s\n", g->guard[r], g->guard_line[r],
            g->guard_msg[r] + g->guard_text[r]);
    for (int i = 0; i < g->ngemm; i++) {
        const cg_gemm *m = &g->gemm[i];
        put(&o, "gemm %%%d = slot %d%s x slot %d%s -> slot %d @%d%s\n", m->node, m->a,
            m->ta ? "^T" : "", m->b, m->tb ? "^T" : "", m->c, m->level,
            m->sym ? " sym" : "");
    }
    if (o.oom || !o.buf) {
        cg_free(o.buf);
        return cg_fail(err, JOPT_ENOMEM, "out of memory printing the graph");
    }
    *text = o.buf;
    return JOPT_OK;
}
