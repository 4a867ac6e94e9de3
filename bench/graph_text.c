/*
 * graph_text.c - a kernel's graph as jopt prints it
 * (jopt_spec_emit(spec, NULL, "graph"), codegen/print.c), read back into
 * nodes, and its per-step nodes evaluated in double as jopt's prologue and
 * epilogue evaluate them (codegen/interp.c).  The unfused kernel (naive.c)
 * is built on this, so the bench needs nothing from jopt but jopt.h:
 *
 *   graph adam update
 *   slot 2 exp_avg array init 0
 *   %7 = pow %5, %6  tensor u1
 *   store 0 %14 @1
 *
 * The bench's kernels are flat (no per-row or per-column values) and take
 * one or two passes (level 0, and 1 after the sums).
 *
 * Each op's per-step value is the double column of codegen/ops.h, written
 * out again here: an op the library gains and this file lacks makes the
 * parse fail, and the smoke test with it.
 */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static const struct {
    const char *name;
    int arity;
} ops[B_NOPS] = {
#define B_OP_ROW(id, nm, ar) [B_##id] = {nm, ar},
    B_OPS(B_OP_ROW)
#undef B_OP_ROW
};

int b_op_arity(b_op op) { return op < B_NOPS ? ops[op].arity : 0; }

/* ---- reading -------------------------------------------------------------- */

typedef struct reader {
    char *err;
    size_t errlen;
    int line;
} reader;

static int fail(reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(reader *r, const char *fmt, ...)
{
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, r->errlen, "graph line %d: %s", r->line, msg);
    return -1;
}

/* the line's words, split at blanks and commas, in place */
static int words(char *line, char **w, int max)
{
    int n = 0;
    for (char *p = line; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            *p++ = 0;
        if (!*p)
            break;
        if (n == max)
            return -1;
        w[n++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != ',')
            p++;
    }
    return n;
}

static int number(const char *s, double *v)
{
    char *end;
    *v = strtod(s, &end);
    return end != s && !*end;
}

static int integer(const char *s, const char *prefix, long lo, long hi, int *v)
{
    size_t k = strlen(prefix);
    char *end;
    if (strncmp(s, prefix, k) || !s[k])
        return 0;
    long x = strtol(s + k, &end, 10);
    if (*end || x < lo || x > hi)
        return 0;
    *v = (int)x;
    return 1;
}

static int slot_named(const b_graph *g, const char *name)
{
    for (int s = 0; s < g->nslots; s++)
        if (!strcmp(g->name[s], name))
            return s;
    return -1;
}

/* "lr", or "betas[1]": its value under the spec's options */
static int hyper_value(const jopt_spec *spec, const char *name, double *v)
{
    char base[96];
    int k = 0;
    const char *br = strchr(name, '[');
    size_t len = br ? (size_t)(br - name) : strlen(name);
    if (len >= sizeof base || (br && sscanf(br, "[%d]", &k) != 1))
        return 0;
    memcpy(base, name, len);
    base[len] = 0;
    for (size_t i = 0; i < jopt_spec_nhyper(spec); i++) {
        jopt_hyper_info h;
        if (jopt_spec_hyper(spec, i, &h) || strcmp(h.name, base))
            continue;
        if (k < 0 || k >= h.len || (!br && h.len != 1))
            return 0;
        *v = h.value[k];
        return 1;
    }
    return 0;
}

static int parse_slot(reader *r, b_graph *g, char **w, int nw)
{
    int s;
    if (nw < 3 || !integer(w[1], "", 0, B_MAX_SLOTS - 1, &s) || s != g->nslots)
        return fail(r, "expected `slot %d NAME ...`", g->nslots);
    snprintf(g->name[s], sizeof g->name[s], "%s", w[2]);
    if (nw == 4 && !strcmp(w[3], "input")) { /* an input of the step */
        g->input[s] = 1;
        g->ninput++;
        snprintf(g->unmodelled, sizeof g->unmodelled, "an input of the step");
    } else if (nw > 3) { /* a state: array|scalar init V|unset */
        double v;
        if (nw != 6 || (strcmp(w[3], "array") && strcmp(w[3], "scalar")) ||
            strcmp(w[4], "init") || (strcmp(w[5], "unset") && !number(w[5], &v)))
            return fail(r, "expected `slot %d %s array|scalar|input [init VALUE|unset]` "
                        "(the bench takes flat kernels)", s, w[2]);
        g->scalar[s] = !strcmp(w[3], "scalar");
        g->nstate = s - 1;
    }
    g->nslots++;
    return 0;
}

static int parse_node(reader *r, b_graph *g, char **w, int nw,
                      const jopt_spec *spec)
{
    int i, k = 3;
    if (!integer(w[0], "%", 0, 1 << 30, &i) || i != g->n || nw < 3 ||
        strcmp(w[1], "="))
        return fail(r, "expected `%%%d = OP ...`", g->n);
    b_node *x = &g->nodes[i];
    *x = (b_node){.arg = {-1, -1, -1}, .slot = -1, .uslot = -1};
    int op = 0;
    while (op < B_NOPS && strcmp(ops[op].name, w[2]))
        op++;
    if (op == B_NOPS)
        return fail(r, "unknown op '%s' (the bench knows codegen/ops.h's ops "
                       "as of issue 12: update bench/graph_text.c)", w[2]);
    x->op = (uint8_t)op;
    switch (op) {
    case B_CONST:
        if (nw != 4)
            return fail(r, "a const takes one value");
        if (!strcmp(w[3], "true") || !strcmp(w[3], "false")) {
            x->boolean = 1;
            x->value = !strcmp(w[3], "true");
        } else if (!number(w[3], &x->value))
            return fail(r, "cannot read '%s' as a number", w[3]);
        g->n++;
        return 0; /* no flags: a constant is per step */
    case B_LOAD:
    case B_SCALAR:
        if (nw < 4 || (x->slot = slot_named(g, w[3])) < 0)
            return fail(r, "%s of an unknown slot", w[2]);
        if (g->scalar[x->slot] != (op == B_SCALAR))
            return fail(r, "%s of slot %s, which is %s", w[2], w[3],
                        g->scalar[x->slot] ? "scalar" : "an array");
        k = 4;
        break;
    case B_HYPER:
        if (nw < 4 || !hyper_value(spec, w[3], &x->value))
            return fail(r, "hyper of an unknown value '%s'", nw < 4 ? "" : w[3]);
        k = 4;
        break;
    case B_GSTATE: /* a group's state: read by name, not modelled */
        if (nw < 4)
            return fail(r, "gstate without its name");
        snprintf(g->unmodelled, sizeof g->unmodelled, "state per group (%s)", w[3]);
        k = 4;
        break;
    case B_SHAPE: /* numel, or size(-k) of a shaped tensor */
        if (nw < 4)
            return fail(r, "size without numel or an axis");
        x->slot = !strcmp(w[3], "numel") ? 0 : -1;
        if (x->slot < 0)
            snprintf(g->unmodelled, sizeof g->unmodelled, "a tensor's sizes");
        k = 4;
        break;
    default:
        for (int a = 0; a < ops[op].arity; a++, k++)
            if (k >= nw || !integer(w[k], "%", 0, i - 1, &x->arg[a]))
                return fail(r, "%s takes %d operands, earlier nodes", w[2],
                            ops[op].arity);
    }
    if (k >= nw || (strcmp(w[k], "elem") && strcmp(w[k], "tensor") &&
                    strcmp(w[k], "group")))
        return fail(r, "expected elem, tensor or group after the operands "
                       "(the bench takes flat kernels)");
    x->elem = !strcmp(w[k++], "elem");
    for (; k < nw; k++) {
        int v;
        if (!strcmp(w[k], "bool"))
            x->boolean = 1;
        else if (integer(w[k], "u", 0, 1 << 30, &v))
            x->uslot = v;
        else if (integer(w[k], "r", 0, B_MAX_REDUCE - 1, &v))
            x->slot = v;
        else if (integer(w[k], "@", 0, 7, &v)) {
            /* its level: the unfused kernel finds its passes itself */
            if (v > 1)
                snprintf(g->unmodelled, sizeof g->unmodelled, "more than two passes");
        }
        else
            return fail(r, "unknown flag '%s'", w[k]);
    }
    /* what the unfused kernel relies on */
    if (x->elem && (op == B_POW || op == B_EXP || op == B_LOG || op == B_SCALAR ||
                    op == B_HYPER || op == B_STEP || op == B_SUM || op == B_MAXALL ||
                    op == B_GSTATE || op == B_SHAPE || op == B_MOD || op == B_GSUM ||
                    op == B_GMAX))
        return fail(r, "%s is never per element", w[2]);
    if (op == B_GSUM || op == B_GMAX)
        snprintf(g->unmodelled, sizeof g->unmodelled, "a sum over the group");
    if (!x->elem && op == B_LOAD)
        return fail(r, "a load is per element");
    if (op == B_SUM || op == B_MAXALL) {
        if (x->slot < 0)
            return fail(r, "a reduction without its rK");
        if (x->slot + 1 > g->nreduce)
            g->nreduce = x->slot + 1;
        g->reduce_max[x->slot] = op == B_MAXALL;
    }
    for (int a = 0; a < ops[op].arity; a++) {
        const b_node *y = &g->nodes[x->arg[a]];
        if (x->elem && !y->elem && y->op != B_CONST && y->uslot < 0)
            return fail(r, "per-element code reads %%%d, which has no uK", x->arg[a]);
        if (!x->elem && y->elem && op != B_SUM && op != B_MAXALL && !g->unmodelled[0])
            return fail(r, "a per-step node reads per-element %%%d", x->arg[a]);
    }
    if (x->uslot >= g->nuniform)
        g->nuniform = x->uslot + 1;
    g->nstep += !x->elem;
    g->n++;
    return 0;
}

int b_graph_parse(const char *text, const jopt_spec *spec, b_graph **out,
                  char *err, size_t errlen)
{
    reader r = {err, errlen, 0};
    size_t lines = 1;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    b_graph *g = calloc(1, sizeof *g);
    char *copy = strdup(text);
    if (!g || !copy || !(g->nodes = calloc(lines, sizeof *g->nodes))) {
        free(copy);
        b_graph_free(g);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int s = 0; s < B_MAX_SLOTS; s++)
        g->store[s] = -1;
    int rc = 0, title = 0;
    for (char *line = copy, *next; line && !rc; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        r.line++;
        if (!strncmp(line, "graph ", 6)) {
            snprintf(g->title, sizeof g->title, "%s", line + 6);
            title = 1;
            continue;
        }
        char *w[16];
        int nw = words(line, w, 16);
        if (nw == 0)
            continue;
        if (nw < 0)
            rc = fail(&r, "too many words");
        else if (!title)
            rc = fail(&r, "expected `graph TITLE` first");
        else if (!strcmp(w[0], "slot"))
            rc = parse_slot(&r, g, w, nw);
        else if (w[0][0] == '%')
            rc = parse_node(&r, g, w, nw, spec);
        else if (!strcmp(w[0], "store")) {
            int s, v;
            int lv = 0;
            if ((nw != 3 && nw != 4) || !integer(w[1], "", 0, g->nslots - 1, &s) ||
                !integer(w[2], "%", 0, g->n - 1, &v) ||
                (nw == 4 && !integer(w[3], "@", 1, 7, &lv)))
                rc = fail(&r, "expected `store SLOT %%NODE [@LEVEL]`");
            else if (g->store[s] >= 0 || s == 1)
                rc = fail(&r, "slot %d stored twice, or the gradient", s);
            else if (g->nodes[v].elem && g->scalar[s])
                rc = fail(&r, "a per-element value stored to scalar slot %d", s);
            else {
                g->store[s] = v;
                g->late[s] = nw == 4;
            }
        } else if (!strcmp(w[0], "group") || !strcmp(w[0], "gstore")) {
            /* a group's state and its new value: the unfused kernel, one
             * tensor at a time, cannot keep it */
            snprintf(g->unmodelled, sizeof g->unmodelled, "state per group");
        } else if (!strcmp(w[0], "require"))
            ; /* a requirement of the step: jopt checks it */
        else if (!strcmp(w[0], "result"))
            rc = fail(&r, "results: a vector kernel's graph, not an update's");
        else
            rc = fail(&r, "unknown line '%s'", w[0]);
    }
    free(copy);
    if (!rc && (g->nslots < 2 || strcmp(g->name[0], "param") ||
                strcmp(g->name[1], "grad"))) {
        snprintf(err, errlen, "graph: an update's slots start with param, grad");
        rc = -1;
    }
    if (rc) {
        b_graph_free(g);
        return -1;
    }
    *out = g;
    return 0;
}

void b_graph_free(b_graph *g)
{
    if (!g)
        return;
    free(g->nodes);
    free(g);
}

/* ---- per-step values: ops.h's double column ----------------------------- */

/* llvm.maximum / llvm.minimum: NaN propagates, -0 < +0 */
static double max_nan(double a, double b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static double min_nan(double a, double b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

/* ATen's lerp: two branches on |w|, one fma each */
static double lerp(double a, double b, double w)
{
    double d = b - a;
    return fabs(w) < 0.5 ? fma(w, d, a) : fma(w - 1.0, d, b);
}

static double eval(b_op op, double a, double b, double c)
{
    switch (op) {
    case B_NEG: return -a;
    case B_ABS: return fabs(a);
    case B_SQRT: return sqrt(a);
    case B_SIGN: return (double)(0 < a) - (double)(a < 0);
    case B_EXP: return exp(a);
    case B_LOG: return log(a);
    case B_NOT: return a == 0;
    case B_F32: return (double)(float)a;
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_POW: return pow(a, b);
    case B_MIN: return min_nan(a, b);
    case B_MAX: return max_nan(a, b);
    case B_LT: return a < b;
    case B_LE: return a <= b;
    case B_GT: return a > b;
    case B_GE: return a >= b;
    case B_EQ: return a == b;
    case B_NE: return a != b;
    case B_AND: return a != 0 && b != 0;
    case B_OR: return a != 0 || b != 0;
    case B_FMA: return fma(a, b, c);
    case B_LERP: return lerp(a, b, c);
    case B_WHERE: return a != 0 ? b : c;
    case B_MOD: { /* Lua's float % */
        double m = fmod(a, b);
        if ((m > 0) ? b < 0 : (m < 0 && b != m))
            m += b;
        return m;
    }
    case B_ATAN2: return atan2(a, b);
    default: return NAN; /* leaves and reductions: b_graph_steps */
    }
}

void b_graph_steps(const b_graph *g, double t, int64_t numel,
                   float *const *arrays, const double *red, double *val)
{
    for (int i = 0; i < g->n; i++) {
        const b_node *x = &g->nodes[i];
        if (x->elem)
            continue;
        switch (x->op) {
        case B_CONST:
        case B_HYPER: val[i] = x->value; break;
        case B_STEP: val[i] = t; break;
        case B_SHAPE: val[i] = x->slot == 0 ? (double)numel : NAN; break;
        case B_GSTATE:
        case B_GSUM:
        case B_GMAX: val[i] = NAN; break; /* not modelled (g->unmodelled) */
        case B_SCALAR: val[i] = arrays[x->slot][0]; break;
        case B_SUM:
        case B_MAXALL: val[i] = red ? red[x->slot] : NAN; break;
        default:
            val[i] = eval((b_op)x->op, x->arg[0] >= 0 ? val[x->arg[0]] : 0,
                          x->arg[1] >= 0 ? val[x->arg[1]] : 0,
                          x->arg[2] >= 0 ? val[x->arg[2]] : 0);
        }
    }
    for (int s = 0; s < g->nslots && (red || !g->nreduce); s++)
        if (g->scalar[s] && g->store[s] >= 0)
            arrays[s][0] = (float)val[g->store[s]];
}
