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

static double min_d(double a, double b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static float max_f(float a, float b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static float min_f(float a, float b)
{
    if (isnan(a) || isnan(b))
        return a + b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

double cg_eval_double(cg_op op, double a, double b, double c)
{
    switch (op) {
    case CG_F32: return (double)(float)a;
    case CG_NEG: return -a;
    case CG_ABS: return fabs(a);
    case CG_SQRT: return sqrt(a);
    case CG_SIGN: return (double)(0 < a) - (double)(a < 0);
    case CG_EXP: return exp(a);
    case CG_LOG: return log(a);
    case CG_NOT: return a == 0;
    case CG_ADD: return a + b;
    case CG_SUB: return a - b;
    case CG_MUL: return a * b;
    case CG_DIV: return a / b;
    case CG_POW: return pow(a, b);
    case CG_MIN: return min_d(a, b);
    case CG_MAX: return cg_max_nan(a, b);
    case CG_LT: return a < b;
    case CG_LE: return a <= b;
    case CG_GT: return a > b;
    case CG_GE: return a >= b;
    case CG_EQ: return a == b;
    case CG_NE: return a != b;
    case CG_AND: return a != 0 && b != 0;
    case CG_OR: return a != 0 || b != 0;
    case CG_FMA: return fma(a, b, c);
    case CG_LERP: {
        double d = b - a;
        return fabs(c) < 0.5 ? fma(c, d, a) : fma(c - 1.0, d, b);
    }
    case CG_WHERE: return a != 0 ? b : c;
    default: return NAN; /* CONST, STEP, LOAD never reach here */
    }
}

float cg_eval_float(cg_op op, float a, float b, float c)
{
    switch (op) {
    case CG_F32: return a;
    case CG_NEG: return -a;
    case CG_ABS: return fabsf(a);
    case CG_SQRT: return sqrtf(a);
    case CG_SIGN: return (float)(0 < a) - (float)(a < 0);
    case CG_NOT: return a == 0;
    case CG_ADD: return a + b;
    case CG_SUB: return a - b;
    case CG_MUL: return a * b;
    case CG_DIV: return a / b;
    case CG_MIN: return min_f(a, b);
    case CG_MAX: return max_f(a, b);
    case CG_LT: return a < b;
    case CG_LE: return a <= b;
    case CG_GT: return a > b;
    case CG_GE: return a >= b;
    case CG_EQ: return a == b;
    case CG_NE: return a != b;
    case CG_AND: return a != 0 && b != 0;
    case CG_OR: return a != 0 || b != 0;
    case CG_FMA: return fmaf(a, b, c);
    case CG_LERP: {
        /* ATen cpu/LerpKernel.cpp: the weight is rounded to float first */
        float d = b - a;
        return fabsf(c) < 0.5f ? fmaf(c, d, a) : fmaf(c - 1.0f, d, b);
    }
    case CG_WHERE: return a != 0 ? b : c;
    default: return NAN; /* pow/exp/log are uniform-only (graph.c) */
    }
}

void cg_interp_uniforms(const cg_graph *g, double t, const double *values,
                        float *const *arrays, const double *red, double *u,
                        double *val)
{
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (x->varying)
            continue;
        switch (x->op) {
        case CG_CONST: val[i] = x->value; break;
        case CG_STEP: val[i] = t; break;
        case CG_SCALAR: val[i] = arrays[x->slot][0]; break;
        case CG_HYPER: val[i] = values[x->slot]; break;
        case CG_SUM:
        case CG_MAXALL: val[i] = red ? red[x->slot] : NAN; break;
        default:
            val[i] = cg_eval_double((cg_op)x->op,
                                    x->arg[0] >= 0 ? val[x->arg[0]] : 0,
                                    x->arg[1] >= 0 ? val[x->arg[1]] : 0,
                                    x->arg[2] >= 0 ? val[x->arg[2]] : 0);
        }
    }
    for (int s = 0; s < g->nuniform; s++)
        u[s] = val[g->uniform[s]];
    /* new scalar states: after every read of the old ones, and only once
     * the sums are known */
    for (int s = 0; s < g->nslots && (red || !g->nreduce); s++)
        if (g->scalar[s] && g->store[s] >= 0)
            arrays[s][0] = (float)val[g->store[s]];
}

void cg_interp_run(const cg_graph *g, int pass, float *const *arrays,
                   int64_t begin, int64_t end, const double *u, double *red)
{
    /* the reference engine runs on the pool's threads: its scratch is on
     * the stack, except for graphs too big for it */
    float stack[1024];
    float *val = (size_t)g->n <= sizeof stack / sizeof stack[0]
                     ? stack
                     : malloc(((size_t)g->n + 1) * sizeof *val);
    if (!val) { /* make the failure visible rather than skip the range */
        for (int s = 0; s < g->nslots; s++)
            if (g->store[s] >= 0 && !g->scalar[s] && g->late_store[s] == pass)
                for (int64_t e = begin; e < end; e++)
                    arrays[s][e] = NAN;
        return;
    }
    /* uniform operands, rounded to float once, as the kernel's prologue */
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (x->varying)
            continue;
        val[i] = x->op == CG_CONST ? (float)x->value
                 : x->uslot >= 0   ? (float)u[x->uslot]
                                   : 0.0f;
        if (x->boolean)
            val[i] = x->op == CG_CONST ? (x->value != 0)
                     : x->uslot >= 0   ? (u[x->uslot] != 0)
                                       : 0.0f;
    }
    /* each reduction's lanes, as emit.c's */
    double lane[CG_MAX_REDUCE][CG_LANES];
    for (int r = 0; r < g->nreduce; r++)
        for (int l = 0; l < CG_LANES; l++)
            lane[r][l] = g->reduce_kind[r] == CG_REDUCE_MAX ? -INFINITY : 0.0;
    for (int64_t e = begin; e < end; e++) {
        for (int i = 0; i < g->n; i++) {
            const cg_node *x = &g->nodes[i];
            if (!x->varying)
                continue;
            if (pass == 1 && g->subst[i] >= 0) /* stored by pass 0 */
                val[i] = arrays[g->subst[i]][e];
            else if (x->op == CG_LOAD)
                val[i] = arrays[x->slot][e];
            else
                val[i] = cg_eval_float((cg_op)x->op,
                                       x->arg[0] >= 0 ? val[x->arg[0]] : 0,
                                       x->arg[1] >= 0 ? val[x->arg[1]] : 0,
                                       x->arg[2] >= 0 ? val[x->arg[2]] : 0);
        }
        if (pass == 0) {
            int l = (int)((e - begin) % CG_LANES);
            for (int i = 0; i < g->n; i++) {
                const cg_node *x = &g->nodes[i];
                if (x->op == CG_SUM)
                    lane[x->slot][l] += (double)val[x->arg[0]];
                else if (x->op == CG_MAXALL)
                    lane[x->slot][l] = cg_max_nan(lane[x->slot][l], (double)val[x->arg[0]]);
            }
        }
        /* stores after all loads of the element, as the kernel does */
        for (int s = 0; s < g->nslots; s++)
            if (g->store[s] >= 0 && !g->scalar[s] && g->late_store[s] == pass)
                arrays[s][e] = val[g->store[s]];
    }
    for (int r = 0; pass == 0 && r < g->nreduce; r++)
        for (int l = 0; l < CG_LANES; l++)
            red[r] = g->reduce_kind[r] == CG_REDUCE_MAX ? cg_max_nan(red[r], lane[r][l])
                                                      : red[r] + lane[r][l];
    if (val != stack)
        free(val);
}
