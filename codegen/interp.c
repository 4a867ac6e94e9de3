/*
 * interp.c - the reference semantics of every graph op, and the reference
 * interpreter that evaluates a whole graph element by element.
 *
 * Built with -ffp-contract=off -fno-math-errno: each C operation here is one
 * IEEE operation, exactly what emit.c asks LLVM for, so the JIT kernel and
 * this interpreter agree bit for bit.  Constant folding and the per-step
 * uniform prologue use cg_eval_double, so folded and unfolded values agree.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

/* llvm.maximum / llvm.minimum: NaN propagates, -0 < +0 (torch.maximum) */
double cg_max_nan(double a, double b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static double cg_min_nan(double a, double b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static float cg_max_nanf(float a, float b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static float cg_min_nanf(float a, float b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

/* ATen's lerp (cpu/LerpKernel.cpp): two branches on |w|, one fma each;
 * in float the weight is rounded to float first */
static double cg_lerp(double a, double b, double w)
{
    double d = b - a;
    return fabs(w) < 0.5 ? fma(w, d, a) : fma(w - 1.0, d, b);
}

static float cg_lerpf(float a, float b, float w)
{
    float d = b - a;
    return fabsf(w) < 0.5f ? fmaf(w, d, a) : fmaf(w - 1.0f, d, b);
}

/* Lua's float `%`: the remainder with the sign of the divisor */
static double cg_mod(double a, double b)
{
    double m = fmod(a, b);
    if ((m > 0) ? b < 0 : (m < 0 && b != m))
        m += b;
    return m;
}

/* c10::BFloat16's round_to_nearest_even, read back as a float; a NaN stays
 * a NaN (its payload is not kept, as in ATen's vector conversion) */
float cg_bf16f(float a)
{
    if (isnan(a))
        return a;
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&a, &u, sizeof a);
    return a;
}

/* Each op's semantics are ops.h's columns; leaves and reductions never
 * reach these (their columns are placeholders). */
double cg_eval_double(cg_op op, double a, double b, double c)
{
    (void)b, (void)c;
    switch (op) {
#define EVAL_D(id, name, arity, flags, d, f, ir) case CG_##id: return (d);
    CG_OPS(EVAL_D)
#undef EVAL_D
    case CG_NOPS: break;
    }
    return NAN;
}

float cg_eval_float(cg_op op, float a, float b, float c)
{
    (void)b, (void)c;
    switch (op) {
#define EVAL_F(id, name, arity, flags, d, f, ir) case CG_##id: return (f);
    CG_OPS(EVAL_F)
#undef EVAL_F
    case CG_NOPS: break;
    }
    return NAN;
}

/* ---- the 16-bit types ---------------------------------------------------------
 * Exactly what emit.c's IR computes, on integers, so that the two engines
 * agree bit for bit (NaN included). */

const char *cg_dt_name(int dt)
{
    return dt == CG_DT_BF16 ? "bfloat16" : dt == CG_DT_F16 ? "float16" : "float32";
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float cg_bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

/* round to nearest even: c10's round_to_nearest_even; its NaN */
uint16_t cg_f32_to_bf16(float f)
{
    uint32_t u = bits_of(f);
    if (isnan(f))
        return 0x7fc0;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* lowbias32 (C. Wellons' hash-prospector) of a Weyl sequence over the
 * index: cheap in vector code (32-bit multiplies), and its 16 top bits
 * pass a chi-square test over consecutive indices (docs/notes/
 * mixed-precision-ir.md, "(d)") */
uint32_t cg_sr_bits(uint32_t key, int64_t index)
{
    uint64_t i = (uint64_t)index;
    uint32_t x = (uint32_t)i * 0x9e3779b9u + (uint32_t)(i >> 32) * 0x7feb352du + key;
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* stochastic rounding: 16 random bits added below bfloat16's last bit,
 * then truncation, rounds away from zero with probability (the bits cut
 * off) / 65536: unbiased */
uint16_t cg_f32_to_bf16_sr(float f, uint32_t bits)
{
    if (isnan(f))
        return 0x7fc0;
    return (uint16_t)((bits_of(f) + (bits >> 16)) >> 16);
}

/* IEEE binary16, as vcvtph2ps: exact */
float cg_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* Inf; NaN quieted, payload kept (as vcvtph2ps) */
        return float_of(sign | 0x7f800000u | man << 13 | (man ? 0x400000u : 0));
    if (exp == 0) {  /* zero, subnormal: man * 2^-24, exact in float */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return float_of(sign | (exp + 112) << 23 | man << 13);
}

/* IEEE binary16, round to nearest even, as vcvtps2ph (imm 0): overflow to
 * Inf, subnormal results rounded, NaN quieted with its top payload bits */
uint16_t cg_f32_to_f16(float f)
{
    uint32_t u = bits_of(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    if (a >= 0x477ff000u) /* at or past the tie with 65536: Inf */
        return (uint16_t)(sign | 0x7c00);
    if (a < 0x38800000u) { /* below 2^-14: a subnormal (or zero) result */
        if (a < 0x33000000u) /* at or below 2^-25: rounds to zero */
            return sign;
        uint32_t man = (a & 0x7fffff) | 0x800000, e = a >> 23;
        int shift = 126 - (int)e; /* 14..24: result = man >> (shift - 0) */
        uint32_t r = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        r += rem > half || (rem == half && (r & 1));
        return (uint16_t)(sign | r);
    }
    uint32_t r = a - 0x38000000u; /* rebias 127 -> 15 */
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return (uint16_t)(sign | r);
}

void cg_dt_fill(void *dst, int dt, int64_t n, double v)
{
    float f = (float)v;
    uint16_t h = dt == CG_DT_BF16 ? cg_f32_to_bf16(f) : cg_f32_to_f16(f);
    for (int64_t i = 0; i < n; i++) {
        if (dt == CG_DT_F32)
            ((float *)dst)[i] = f;
        else
            ((uint16_t *)dst)[i] = h;
    }
}

/* Reads through memcpy: callers pass user buffers and file images whose
 * 16-bit elements need not be aligned (the compiler makes it one load). */
double cg_dt_get(const void *src, int dt, int64_t i)
{
    const unsigned char *b = src;
    if (dt == CG_DT_F32) {
        float f;
        memcpy(&f, b + i * 4, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, b + i * 2, 2);
    return dt == CG_DT_BF16 ? cg_bf16_to_f32(h) : cg_f16_to_f32(h);
}

uint32_t cg_sr_slot_key(uint64_t callkey, int slot)
{
    uint64_t z = callkey ^ ((uint64_t)(slot + 1) * 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t cg_sr_key(uint64_t seed, uint64_t step, uint64_t tensor)
{
    return mix64(mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ step) ^ tensor);
}

double cg_reduce_identity(int kind)
{
    return kind == CG_REDUCE_MAX ? -INFINITY : 0.0;
}

double cg_reduce_add(int kind, double acc, double x)
{
    return kind == CG_REDUCE_MAX ? cg_max_nan(acc, x) : acc + x;
}

/* ---- per-step values ------------------------------------------------------- */

void cg_interp_uniforms(const cg_graph *g, const cg_env *env, double *u,
                        double *val)
{
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (cg_dom_varying(x->dom))
            continue;
        if (x->level > env->level) { /* depends on sums not taken yet */
            val[i] = NAN;
            continue;
        }
        switch ((cg_op)x->op) {
        case CG_CONST: val[i] = x->value; break;
        case CG_STEP: val[i] = env->t; break;
        case CG_SCALAR:
            val[i] = g->kind[x->slot] == CG_KIND_SCALAR64
                         ? *(const double *)(const void *)env->arrays[x->slot]
                         : env->arrays[x->slot][0];
            break;
        case CG_GSTATE: val[i] = env->gstate[x->slot]; break;
        case CG_HYPER: val[i] = env->values[x->slot]; break;
        case CG_GSCALE: val[i] = env->grad_scale; break;
        case CG_SHAPE:
            val[i] = x->slot == 0 ? env->numel
                     : x->slot <= env->rank ? (double)env->shape[x->slot - 1] : NAN;
            break;
        case CG_SUM: case CG_MAXALL: val[i] = env->red[x->slot]; break;
        case CG_GSUM: case CG_GMAX: val[i] = env->gred[x->slot]; break;
        default:
            val[i] = cg_eval_double((cg_op)x->op,
                                    x->arg[0] >= 0 ? val[x->arg[0]] : 0,
                                    x->arg[1] >= 0 ? val[x->arg[1]] : 0,
                                    x->arg[2] >= 0 ? val[x->arg[2]] : 0);
        }
    }
    for (int s = 0; s < g->nuniform; s++)
        u[s] = val[g->uniform[s]];
    for (int s = 0; s < g->nslots; s++) /* the stochastic stores' keys */
        if (g->sr[s])
            u[g->sru[s]] = cg_sr_slot_key(env->srkey, s);
    /* new scalar states: once every level has read the old ones */
    for (int s = 0; env->last && s < g->nslots; s++) {
        if (g->store[s] < 0)
            continue;
        if (g->kind[s] == CG_KIND_SCALAR)
            env->arrays[s][0] = (float)val[g->store[s]];
        else if (g->kind[s] == CG_KIND_SCALAR64)
            *(double *)(void *)env->arrays[s] = val[g->store[s]];
    }
}

/* ---- the reference loops ------------------------------------------------------
 * The same order of operations as emit.c's: per-element values in float,
 * stores after the element's loads, sums in CG_LANES lanes by position. */

typedef struct where {
    int64_t e, row, col; /* the element, its row and its column index */
} where;

static int64_t index_of(const cg_graph *g, int s, where at)
{
    int k = g->kind[s];
    return k == CG_KIND_ROW ? at.row : k == CG_KIND_COL ? at.col : at.e;
}

/* an array's element, widened to float */
static float load_at(const cg_task *t, const cg_graph *g, int s, where at)
{
    int64_t i = index_of(g, s, at);
    const uint16_t *h = (const uint16_t *)(const void *)t->arrays[s];
    switch (g->dtype[s]) {
    case CG_DT_BF16: return cg_bf16_to_f32(h[i]);
    case CG_DT_F16: return cg_f16_to_f32(h[i]);
    default: return t->arrays[s][i];
    }
}

/* a value stored, rounded once to the array's type */
static void store_at(const cg_task *t, const cg_graph *g, int s, where at, float v)
{
    int64_t i = index_of(g, s, at);
    uint16_t *h = (uint16_t *)(void *)t->arrays[s];
    switch (g->dtype[s]) {
    case CG_DT_BF16:
        h[i] = g->sr[s] ? cg_f32_to_bf16_sr(v, cg_sr_bits((uint32_t)t->u[g->sru[s]], i))
                        : cg_f32_to_bf16(v);
        break;
    case CG_DT_F16: h[i] = cg_f32_to_f16(v); break;
    default: t->arrays[s][i] = v;
    }
}

static float axis_at(const cg_task *t, const cg_graph *g, const cg_node *x,
                     where at)
{
    int to = cg_reduce_dom((cg_op)x->op);
    return to == CG_DOM_ROW ? (float)t->axis[x->slot][at.row]
                            : (float)t->axis[g->nrowred + x->slot][at.col];
}

/* which nodes are evaluated once per row (1) or per element (2) */
static int phase(const cg_graph *g, const cg_loop *l, int how, int32_t i)
{
    int per_row = g->two_d && l->kind >= CG_LOOP_COLS;
    switch (how) {
    case CG_HOW_ROWWISE: return 1;
    case CG_HOW_RELOAD:
    case CG_HOW_AXIS: return per_row && g->nodes[i].dom == CG_DOM_ROW ? 1 : 2;
    case CG_HOW_COMPUTE: return 2;
    default: return 0;
    }
}

static void eval(const cg_graph *g, const cg_loop *l, const uint8_t *how,
                 int ph, float *val, const cg_task *t, where at)
{
    for (int i = 0; i < g->n; i++) {
        if (phase(g, l, how[i], i) != ph)
            continue;
        const cg_node *x = &g->nodes[i];
        if (how[i] == CG_HOW_RELOAD)
            val[i] = load_at(t, g, cg_reload_slot(g, i, l), at);
        else if (how[i] == CG_HOW_AXIS)
            val[i] = axis_at(t, g, x, at);
        else if (x->op == CG_LOAD)
            val[i] = load_at(t, g, x->slot, at);
        else
            val[i] = cg_eval_float((cg_op)x->op,
                                   x->arg[0] >= 0 ? val[x->arg[0]] : 0,
                                   x->arg[1] >= 0 ? val[x->arg[1]] : 0,
                                   x->arg[2] >= 0 ? val[x->arg[2]] : 0);
    }
}

/* the loop's stores, after all of the element's loads */
/* what a loop stores and accumulates, listed once per task */
typedef struct lists {
    int32_t acc[CG_MAX_REDUCE + 2 * CG_MAX_AXISRED];
    int nacc;
    int slot[2 * CG_MAX_SLOTS];
    int32_t node[2 * CG_MAX_SLOTS];
    int nstore;
} lists;

static void make_lists(const cg_graph *g, const cg_loop *l, lists *L)
{
    L->nacc = L->nstore = 0;
    for (int i = 0; i < g->n; i++)
        if (cg_loop_accumulates(g, l, i) && L->nacc < (int)(sizeof L->acc / sizeof L->acc[0]))
            L->acc[L->nacc++] = i;
    for (int s = 0; s < g->nslots; s++)
        if (cg_loop_stores(g, l, s)) {
            L->slot[L->nstore] = s;
            L->node[L->nstore++] = g->store[s];
        }
    /* a loop's work values are live together, so in distinct slots */
    for (int w = 0; w < g->nwork && L->nstore < 2 * CG_MAX_SLOTS; w++)
        if (cg_loop_stores_work(g, l, w)) {
            L->slot[L->nstore] = g->work[w].slot;
            L->node[L->nstore++] = g->work[w].node;
        }
}

/* the loop's stores, after all of the element's loads */
static void store(const cg_graph *g, const lists *L, const float *val,
                  const cg_task *t, where at)
{
    for (int k = 0; k < L->nstore; k++)
        store_at(t, g, L->slot[k], at, val[L->node[k]]);
}

void cg_interp_run(const cg_graph *g, const cg_loop *l, const cg_task *t)
{
    /* the reference engine runs on the pool's threads: its scratch is on
     * the stack, except for graphs too big for it */
    float vstack[1024];
    uint8_t hstack[1024];
    int big = g->n > 1024;
    float *val = big ? cg_malloc(((size_t)g->n + 1) * sizeof *val) : vstack;
    uint8_t *how = big ? cg_malloc((size_t)g->n + 1) : hstack;
    if (!val || !how) { /* make the failure visible rather than skip it */
        for (int s = 0; s < g->nslots; s++)
            if (g->store[s] >= 0 && g->kind[s] == CG_KIND_ELEM && l->kind == CG_LOOP_ELEM)
                for (int64_t e = t->begin * (g->two_d ? t->cols : 1);
                     e < t->end * (g->two_d ? t->cols : 1); e++)
                    store_at(t, g, s, (where){e, e, e}, NAN);
        if (big) {
            cg_free(val);
            cg_free(how);
        }
        return;
    }
    cg_loop_plan(g, l, how);
    lists L;
    make_lists(g, l, &L);
    for (int i = 0; i < g->n; i++) { /* per-step operands, rounded once */
        const cg_node *x = &g->nodes[i];
        if (how[i] != CG_HOW_UNIFORM)
            continue;
        double v = x->op == CG_CONST ? x->value : t->u[x->uslot];
        val[i] = x->boolean ? (v != 0) : (float)v;
    }
    /* tensor sums: lanes by position in the task (by column in a 2-D
     * task); row sums: lanes by column, per row; column sums: in place,
     * row after row */
    double lane[CG_MAX_REDUCE][CG_LANES], rlane[CG_MAX_AXISRED][CG_LANES];
    for (int r = 0; r < g->nreduce; r++)
        for (int j = 0; j < CG_LANES; j++)
            lane[r][j] = cg_reduce_identity(g->reduce_kind[r]);
    int64_t pos = 0; /* the element's position in the task */
    if (l->kind == CG_LOOP_COLS) {
      for (int64_t mat = 0; mat < t->nmat; mat++) {
        int64_t base = t->base + mat * t->rows;
        int64_t colbase = base / t->rows * t->cols;
        for (int k = 0; k < L.nacc; k++) {
            const cg_node *x = &g->nodes[L.acc[k]];
            for (int64_t c = t->begin; c < t->end; c++)
                t->axis[g->nrowred + x->slot][colbase + c] = cg_reduce_identity(g->col_kind[x->slot]);
        }
        for (int64_t m = base; m < base + t->rows; m++) {
            where at = {0, m, 0};
            eval(g, l, how, 1, val, t, at);
            for (int64_t c = t->begin; c < t->end; c++) {
                at = (where){m * t->cols + c, m, colbase + c};
                eval(g, l, how, 2, val, t, at);
                for (int k = 0; k < L.nacc; k++) {
                    const cg_node *x = &g->nodes[L.acc[k]];
                    double *acc = &t->axis[g->nrowred + x->slot][colbase + c];
                    *acc = cg_reduce_add(g->col_kind[x->slot], *acc, (double)val[x->arg[0]]);
                }
            }
        }
      }
    } else if (l->kind == CG_LOOP_ELEM && g->two_d) {
        /* column sums: the task's block of each column, in row order, in
         * its partial sums or (a block that starts its matrix) in place */
        double *col[CG_MAX_AXISRED];
        for (int64_t m = t->begin; m < t->end; m++) {
            int64_t colbase = m / t->rows * t->cols;
            where at = {0, m, 0};
            eval(g, l, how, 1, val, t, at);
            for (int r = 0; r < g->nrowred; r++)
                for (int j = 0; j < CG_LANES; j++)
                    rlane[r][j] = cg_reduce_identity(g->row_kind[r]);
            for (int k = 0; k < L.nacc; k++) {
                int r = g->nodes[L.acc[k]].slot;
                if (cg_reduce_dom((cg_op)g->nodes[L.acc[k]].op) != CG_DOM_COL)
                    continue;
                col[r] = t->cpart ? t->cpart + (int64_t)r * t->cols
                                  : t->axis[g->nrowred + r] + colbase;
                if (m == t->begin || m % t->rows == 0)
                    for (int64_t c = 0; c < t->cols; c++)
                        col[r][c] = cg_reduce_identity(g->col_kind[r]);
            }
            for (int64_t c = 0; c < t->cols; c++) {
                at = (where){m * t->cols + c, m, colbase + c};
                eval(g, l, how, 2, val, t, at);
                for (int k = 0; k < L.nacc; k++) {
                    const cg_node *x = &g->nodes[L.acc[k]];
                    double v = (double)val[x->arg[0]];
                    if (cg_reduce_dom((cg_op)x->op) == CG_DOM_ROW) {
                        double *a = &rlane[x->slot][c % CG_LANES];
                        *a = cg_reduce_add(g->row_kind[x->slot], *a, v);
                    } else if (cg_reduce_dom((cg_op)x->op) == CG_DOM_COL) {
                        double *a = &col[x->slot][c];
                        *a = cg_reduce_add(g->col_kind[x->slot], *a, v);
                    } else { /* tensor sums: lanes by column, all rows */
                        double *a = &lane[x->slot][c % CG_LANES];
                        *a = cg_reduce_add(g->reduce_kind[x->slot], *a, v);
                    }
                }
                store(g, &L, val, t, at);
            }
            for (int k = 0; k < L.nacc; k++) {
                const cg_node *x = &g->nodes[L.acc[k]];
                if (cg_reduce_dom((cg_op)x->op) != CG_DOM_ROW)
                    continue;
                double acc = cg_reduce_identity(g->row_kind[x->slot]);
                for (int j = 0; j < CG_LANES; j++)
                    acc = cg_reduce_add(g->row_kind[x->slot], acc, rlane[x->slot][j]);
                t->axis[x->slot][m] = acc;
            }
        }
    } else { /* a flat loop: elements, rows or columns */
        for (int64_t e = t->begin; e < t->end; e++, pos++) {
            where at = {e, e, e};
            eval(g, l, how, 2, val, t, at);
            for (int k = 0; k < L.nacc; k++) {
                const cg_node *x = &g->nodes[L.acc[k]];
                double *a = &lane[x->slot][pos % CG_LANES];
                *a = cg_reduce_add(g->reduce_kind[x->slot], *a, (double)val[x->arg[0]]);
            }
            store(g, &L, val, t, at);
        }
    }
    for (int k = 0; k < L.nacc; k++) {
        const cg_node *x = &g->nodes[L.acc[k]];
        if (cg_reduce_dom((cg_op)x->op) != CG_DOM_TENSOR)
            continue;
        for (int j = 0; j < CG_LANES; j++)
            t->red[x->slot] = cg_reduce_add(g->reduce_kind[x->slot], t->red[x->slot],
                                            lane[x->slot][j]);
    }
    if (big) {
        cg_free(val);
        cg_free(how);
    }
}
