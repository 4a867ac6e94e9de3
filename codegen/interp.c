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

void cg_reduce_init(const cg_graph *g, double *red)
{
    for (int r = 0; r < g->nreduce; r++)
        red[r] = g->reduce_kind[r] == CG_REDUCE_MAX ? -INFINITY : 0.0;
}

void cg_reduce_merge(const cg_graph *g, double *acc, const double *part)
{
    for (int r = 0; r < g->nreduce; r++)
        acc[r] = g->reduce_kind[r] == CG_REDUCE_MAX ? cg_max_nan(acc[r], part[r])
                                                    : acc[r] + part[r];
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
