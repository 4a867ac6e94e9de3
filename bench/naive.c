/*
 * naive.c - the kernels jopt is measured against, besides its own reference
 * interpreter: an unfused kernel built from the graph jopt prints (one loop
 * per op over the whole tensor, as an eager framework's per-op path runs),
 * and hand-written fused scalar C loops for SGD with momentum, Adam and
 * AdamW, written as llm.c writes AdamW.
 *
 * The unfused kernel follows jopt's semantics op for op (the float column of
 * codegen/ops.h, written out here so the element loops vectorize; the
 * per-step values from graph_text.c), and sums in jopt's order, so its
 * results are jopt's bits; bench_optim checks that before timing.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ---- element semantics: ops.h's float column, op for op ------------------ */
static inline float f_max(float a, float b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static inline float f_min(float a, float b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static inline float f_lerp(float a, float b, float w)
{
    float d = b - a;
    return fabsf(w) < 0.5f ? fmaf(w, d, a) : fmaf(w - 1.0f, d, b);
}

#define F_ID(a) (a)
#define F_NEG(a) (-(a))
#define F_ABS(a) fabsf(a)
#define F_SQRT(a) sqrtf(a)
#define F_SIGN(a) ((float)(0 < (a)) - (float)((a) < 0))
#define F_NOT(a) ((float)((a) == 0))
#define F_ADD(a, b) ((a) + (b))
#define F_SUB(a, b) ((a) - (b))
#define F_MUL(a, b) ((a) * (b))
#define F_DIV(a, b) ((a) / (b))
#define F_LT(a, b) ((float)((a) < (b)))
#define F_LE(a, b) ((float)((a) <= (b)))
#define F_GT(a, b) ((float)((a) > (b)))
#define F_GE(a, b) ((float)((a) >= (b)))
#define F_EQ(a, b) ((float)((a) == (b)))
#define F_NE(a, b) ((float)((a) != (b)))
#define F_AND(a, b) ((float)((a) != 0 && (b) != 0))
#define F_OR(a, b) ((float)((a) != 0 || (b) != 0))
#define F_WHERE(a, b, c) ((a) != 0 ? (b) : (c))

/* an operand: a whole array (p) or one per-step value (s) */
typedef struct opnd {
    const float *p;
    float s;
} opnd;

/* one loop over the elements; the op is chosen outside it, and so is which
 * operands are arrays (a varying node has at least one) */
#define E1(F)                                                                  \
    do {                                                                       \
        const float *A = o[0].p;                                               \
        for (int64_t e = 0; e < n; e++)                                        \
            d[e] = F(A[e]);                                                    \
    } while (0)

#define E2(F)                                                                  \
    do {                                                                       \
        const float *A = o[0].p, *B = o[1].p;                                  \
        float a = o[0].s, b = o[1].s;                                          \
        if (A && B)                                                            \
            for (int64_t e = 0; e < n; e++)                                    \
                d[e] = F(A[e], B[e]);                                          \
        else if (A)                                                            \
            for (int64_t e = 0; e < n; e++)                                    \
                d[e] = F(A[e], b);                                             \
        else                                                                   \
            for (int64_t e = 0; e < n; e++)                                    \
                d[e] = F(a, B[e]);                                             \
    } while (0)

#define E3(F)                                                                  \
    do {                                                                       \
        const float *A = o[0].p, *B = o[1].p, *C = o[2].p;                     \
        float a = o[0].s, b = o[1].s, c = o[2].s;                              \
        switch ((A ? 1 : 0) | (B ? 2 : 0) | (C ? 4 : 0)) {                     \
        case 1: for (int64_t e = 0; e < n; e++) d[e] = F(A[e], b, c); break;   \
        case 2: for (int64_t e = 0; e < n; e++) d[e] = F(a, B[e], c); break;   \
        case 3: for (int64_t e = 0; e < n; e++) d[e] = F(A[e], B[e], c); break; \
        case 4: for (int64_t e = 0; e < n; e++) d[e] = F(a, b, C[e]); break;   \
        case 5: for (int64_t e = 0; e < n; e++) d[e] = F(A[e], b, C[e]); break; \
        case 6: for (int64_t e = 0; e < n; e++) d[e] = F(a, B[e], C[e]); break; \
        default:                                                               \
            for (int64_t e = 0; e < n; e++)                                    \
                d[e] = F(A[e], B[e], C[e]);                                    \
        }                                                                      \
    } while (0)

static void run_op(b_op op, float *d, const opnd *o, int64_t n)
{
    switch (op) {
    case B_F32: E1(F_ID); break;
    case B_NEG: E1(F_NEG); break;
    case B_ABS: E1(F_ABS); break;
    case B_SQRT: E1(F_SQRT); break;
    case B_SIGN: E1(F_SIGN); break;
    case B_NOT: E1(F_NOT); break;
    case B_ADD: E2(F_ADD); break;
    case B_SUB: E2(F_SUB); break;
    case B_MUL: E2(F_MUL); break;
    case B_DIV: E2(F_DIV); break;
    case B_MIN: E2(f_min); break;
    case B_MAX: E2(f_max); break;
    case B_LT: E2(F_LT); break;
    case B_LE: E2(F_LE); break;
    case B_GT: E2(F_GT); break;
    case B_GE: E2(F_GE); break;
    case B_EQ: E2(F_EQ); break;
    case B_NE: E2(F_NE); break;
    case B_AND: E2(F_AND); break;
    case B_OR: E2(F_OR); break;
    case B_FMA: E3(fmaf); break;
    case B_LERP: E3(f_lerp); break;
    case B_WHERE: E3(F_WHERE); break;
    case B_ATAN2: E2(atan2f); break;
    default: break; /* pow, exp, log, t, sums: per step only (parse checks) */
    }
}

/* ---- reductions: jopt's order ---------------------------------------------- */

static double max_nan(double a, double b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

/* One reduction over n elements (x, or the per-step value xs broadcast):
 * per 65,536-element range, element i of the range into lane i mod 16 in
 * double, the lanes added in order, the ranges in order (docs/specs.md,
 * `sum`; codegen/interp.c). */
static double reduce(int is_max, const float *x, float xs, int64_t n)
{
    double init = is_max ? -INFINITY : 0.0, acc = init;
    for (int64_t b = 0; b < n; b += B_CHUNK) {
        int64_t m = n - b < B_CHUNK ? n - b : B_CHUNK, e = 0;
        double lane[B_LANES];
        for (int l = 0; l < B_LANES; l++)
            lane[l] = init;
        if (!is_max && x) {
            const float *p = x + b;
            for (; e + B_LANES <= m; e += B_LANES)
                for (int l = 0; l < B_LANES; l++)
                    lane[l] += (double)p[e + l];
        }
        for (; e < m; e++) {
            double v = x ? (double)x[b + e] : (double)xs;
            int l = (int)(e % B_LANES);
            lane[l] = is_max ? max_nan(lane[l], v) : lane[l] + v;
        }
        double part = init;
        for (int l = 0; l < B_LANES; l++)
            part = is_max ? max_nan(part, lane[l]) : part + lane[l];
        acc = is_max ? max_nan(acc, part) : acc + part;
    }
    return acc;
}

/* ---- the unfused kernel ---------------------------------------------------- */

enum { AT_UNIFORM, AT_TEMP, AT_SLOT };

struct b_unfused {
    const b_graph *g;
    int64_t maxn;
    uint8_t *kind;   /* per node: AT_* */
    int *where;      /* temp index or array slot */
    int32_t *order;  /* node indices to run; -1 marks "sums here" */
    int norder, nops;
    float **tmp;
    int ntmp;
    double *val;     /* per node: its per-step value */
};

static int is_reduce(const b_node *x) { return x->op == B_SUM || x->op == B_MAXALL; }

int b_unfused_new(const b_graph *g, int64_t maxn, b_unfused **out)
{
    size_t n = (size_t)g->n + 1;
    b_unfused *u = calloc(1, sizeof *u);
    uint8_t *need = calloc(n, 1), *dep = calloc(n, 1), *stored = calloc(n, 1);
    int *last = malloc(n * sizeof *last), *pos = malloc(n * sizeof *pos);
    int *freelist = malloc(n * sizeof *freelist);
    if (!u || !need || !dep || !stored || !last || !pos || !freelist)
        goto fail;
    if (g->unmodelled[0])
        goto fail;
    u->g = g;
    u->maxn = maxn;
    u->kind = calloc(n, 1);
    u->where = calloc(n, sizeof *u->where);
    u->order = calloc(n + 1, sizeof *u->order);
    u->tmp = calloc(n, sizeof *u->tmp);
    u->val = calloc(n, sizeof *u->val);
    if (!u->kind || !u->where || !u->order || !u->tmp || !u->val)
        goto fail;

    /* what the stores need, and what waits for the sums */
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] >= 0) {
            need[g->store[s]] = 1;
            if (!g->scalar[s])
                stored[g->store[s]] = 1;
        }
    for (int i = g->n - 1; i >= 0; i--)
        if (need[i])
            for (int k = 0; k < b_op_arity((b_op)g->nodes[i].op); k++)
                need[g->nodes[i].arg[k]] = 1;
    for (int i = 0; i < g->n; i++) {
        const b_node *x = &g->nodes[i];
        dep[i] = is_reduce(x);
        for (int k = 0; k < b_op_arity((b_op)x->op); k++)
            dep[i] |= dep[x->arg[k]];
        if (is_reduce(x) && dep[x->arg[0]])
            goto fail; /* a sum of a sum: jopt has two passes */
    }

    /* the order: what does not need a sum, the sums, the rest (jopt's two
     * passes); positions of the reductions are the marker's */
    int marker = -1;
    for (int i = 0; i < g->n; i++)
        pos[i] = -1;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && g->nreduce) {
            marker = u->norder;
            u->order[u->norder++] = -1;
            for (int i = 0; i < g->n; i++)
                if (is_reduce(&g->nodes[i]))
                    pos[i] = marker;
        }
        for (int i = 0; i < g->n; i++) {
            const b_node *x = &g->nodes[i];
            if (!need[i] || !x->elem || x->op == B_LOAD || dep[i] != pass)
                continue;
            pos[i] = u->norder;
            u->order[u->norder++] = i;
            u->nops++;
        }
    }
    /* last use of each node, by position in the order */
    for (int i = 0; i < g->n; i++)
        last[i] = -1;
    for (int i = 0; i < g->n; i++) {
        const b_node *x = &g->nodes[i];
        if (!need[i] || pos[i] < 0)
            continue;
        for (int k = 0; k < b_op_arity((b_op)x->op); k++)
            if (last[x->arg[k]] < pos[i])
                last[x->arg[k]] = pos[i];
    }
    int32_t load_of[B_MAX_SLOTS];
    for (int s = 0; s < B_MAX_SLOTS; s++)
        load_of[s] = -1;
    for (int i = 0; i < g->n; i++) {
        const b_node *x = &g->nodes[i];
        u->kind[i] = x->elem ? AT_TEMP : AT_UNIFORM;
        if (x->op == B_LOAD) {
            u->kind[i] = AT_SLOT;
            u->where[i] = x->slot;
            load_of[x->slot] = i;
        }
    }
    /* destinations: in place into a state when the old value is dead,
     * else a temporary, reusing dead ones */
    uint8_t inplace[B_MAX_SLOTS] = {0};
    int nfree = 0;
    for (int k = 0; k < u->norder; k++) {
        int32_t i = u->order[k];
        /* the operands whose last use this is (at the marker: the sums') */
        for (int j = i < 0 ? 0 : i; j < (i < 0 ? g->n : i + 1); j++) {
            const b_node *x = &g->nodes[j];
            if (i < 0 && !(need[j] && is_reduce(x)))
                continue;
            for (int a = 0; a < b_op_arity((b_op)x->op); a++) {
                int32_t y = x->arg[a];
                int dup = 0;
                for (int b = 0; b < a; b++)
                    dup |= x->arg[b] == y;
                if (!dup && u->kind[y] == AT_TEMP && last[y] == k && !stored[y]) {
                    freelist[nfree++] = u->where[y];
                    last[y] = -2; /* freed once */
                }
            }
        }
        if (i < 0)
            continue;
        int slot = -1;
        for (int s = 0; s < g->nslots && slot < 0; s++) {
            if (g->store[s] != i || g->scalar[s] || inplace[s])
                continue;
            int32_t l = load_of[s];
            if (l >= 0 && (last[l] > k || stored[l]))
                continue;
            slot = s;
        }
        if (slot >= 0) {
            inplace[slot] = 1;
            u->kind[i] = AT_SLOT;
            u->where[i] = slot;
        } else {
            u->where[i] = nfree ? freelist[--nfree] : u->ntmp++;
        }
    }
    for (int t = 0; t < u->ntmp; t++)
        if (!(u->tmp[t] = b_alloc(maxn)))
            goto fail;
    free(need);
    free(dep);
    free(stored);
    free(last);
    free(pos);
    free(freelist);
    *out = u;
    return 0;
fail:
    free(need);
    free(dep);
    free(stored);
    free(last);
    free(pos);
    free(freelist);
    b_unfused_free(u);
    return -1;
}

void b_unfused_free(b_unfused *u)
{
    if (!u)
        return;
    for (int t = 0; u->tmp && t < u->ntmp; t++)
        free(u->tmp[t]);
    free(u->tmp);
    free(u->kind);
    free(u->where);
    free(u->order);
    free(u->val);
    free(u);
}

int b_unfused_temps(const b_unfused *u) { return u->ntmp; }
int b_unfused_ops(const b_unfused *u) { return u->nops; }

/* a per-step operand as the kernels see it: rounded to float once, a truth
 * value as 0 or 1 */
static float uniform_value(const b_node *x, double v)
{
    return x->boolean ? (float)(v != 0) : (float)v;
}

static float *loc(const b_unfused *u, float *const *arrays, int32_t i)
{
    return u->kind[i] == AT_SLOT ? arrays[u->where[i]] : u->tmp[u->where[i]];
}

void b_unfused_step(b_unfused *u, double t, float *const *arrays, int64_t n)
{
    const b_graph *g = u->g;
    b_graph_steps(g, t, n, arrays, NULL, u->val); /* the prologue */
    for (int k = 0; k < u->norder; k++) {
        int32_t i = u->order[k];
        if (i < 0) { /* the sums, in jopt's order, then the epilogue */
            double red[B_MAX_REDUCE];
            for (int j = 0; j < g->n; j++) {
                const b_node *x = &g->nodes[j];
                if (!is_reduce(x))
                    continue;
                int32_t y = x->arg[0];
                int uni = u->kind[y] == AT_UNIFORM;
                red[x->slot] = reduce(x->op == B_MAXALL, uni ? NULL : loc(u, arrays, y),
                                      uni ? uniform_value(&g->nodes[y], u->val[y]) : 0,
                                      n);
            }
            b_graph_steps(g, t, n, arrays, red, u->val);
            continue;
        }
        const b_node *x = &g->nodes[i];
        opnd o[3] = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
        for (int a = 0; a < b_op_arity((b_op)x->op); a++) {
            int32_t y = x->arg[a];
            if (u->kind[y] == AT_UNIFORM)
                o[a].s = uniform_value(&g->nodes[y], u->val[y]);
            else
                o[a].p = loc(u, arrays, y);
        }
        run_op((b_op)x->op, loc(u, arrays, i), o, n);
    }
    /* stores not done in place: a copy (or a fill, for a per-step value) */
    for (int s = 0; s < g->nslots; s++) {
        int32_t v = g->store[s];
        if (v < 0 || g->scalar[s])
            continue;
        float *dst = arrays[s];
        if (u->kind[v] == AT_UNIFORM) {
            float c = uniform_value(&g->nodes[v], u->val[v]);
            for (int64_t e = 0; e < n; e++)
                dst[e] = c;
        } else {
            const float *src = loc(u, arrays, v);
            if (src != dst)
                memcpy(dst, src, (size_t)n * sizeof(float));
        }
    }
}

/* ---- hand-written fused loops ------------------------------------------------ */

const char *b_hand_name(b_hand_kind kind)
{
    switch (kind) {
    case B_HAND_SGD: return "sgd-momentum";
    case B_HAND_ADAM: return "adam";
    case B_HAND_ADAMW: return "adamw (llm.c)";
    default: return "none";
    }
}

/* torch's SGD, momentum without dampening or Nesterov */
static void hand_sgd(const b_hand *h, float *restrict p, const float *restrict g,
                     float *restrict buf, int64_t lo, int64_t hi)
{
    float mu = h->momentum, lr = h->lr;
    for (int64_t i = lo; i < hi; i++) {
        float b = mu * buf[i] + g[i];
        buf[i] = b;
        p[i] -= lr * b;
    }
}

/* llm.c's adamw_update (train_gpt2.c), the bias corrections hoisted out of
 * the loop; wd = 0 gives Adam with the same loop */
static void hand_adamw(const b_hand *h, int t, float *restrict p,
                       const float *restrict g, float *restrict mm,
                       float *restrict vv, int64_t lo, int64_t hi, float wd)
{
    float beta1 = h->beta1, beta2 = h->beta2, eps = h->eps, lr = h->lr;
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    for (int64_t i = lo; i < hi; i++) {
        float param = p[i];
        float grad = g[i];
        float m = beta1 * mm[i] + (1.0f - beta1) * grad;
        float v = beta2 * vv[i] + (1.0f - beta2) * grad * grad;
        float m_hat = m / bc1;
        float v_hat = v / bc2;
        mm[i] = m;
        vv[i] = v;
        p[i] -= lr * (m_hat / (sqrtf(v_hat) + eps) + wd * param);
    }
}

/* Adam: the same loop without weight decay (a separate copy, so the
 * compiler need not multiply by a zero) */
static void hand_adam(const b_hand *h, int t, float *restrict p,
                      const float *restrict g, float *restrict mm,
                      float *restrict vv, int64_t lo, int64_t hi)
{
    float beta1 = h->beta1, beta2 = h->beta2, eps = h->eps, lr = h->lr;
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    for (int64_t i = lo; i < hi; i++) {
        float grad = g[i];
        float m = beta1 * mm[i] + (1.0f - beta1) * grad;
        float v = beta2 * vv[i] + (1.0f - beta2) * grad * grad;
        mm[i] = m;
        vv[i] = v;
        p[i] -= lr * ((m / bc1) / (sqrtf(v / bc2) + eps));
    }
}

void b_hand_step(const b_hand *h, int t, float *const *a, int64_t lo, int64_t hi)
{
    switch (h->kind) {
    case B_HAND_SGD: hand_sgd(h, a[0], a[1], a[2], lo, hi); break;
    case B_HAND_ADAM: hand_adam(h, t, a[0], a[1], a[2], a[3], lo, hi); break;
    case B_HAND_ADAMW: hand_adamw(h, t, a[0], a[1], a[2], a[3], lo, hi, h->wd); break;
    default: break;
    }
}
