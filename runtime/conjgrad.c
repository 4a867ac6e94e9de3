/*
 * conjgrad.c - nonlinear conjugate gradient as torch7's optim.cg (cg.lua,
 * Koray Kavukcuoglu's port of Rasmussen's minimize.m).  The specification
 * is tests/fixtures/lbfgs/cg_reference.md; names follow cg.lua.  One
 * jopt_step is one call of optim.cg: every call starts afresh from steepest
 * descent (torch7 carries no algorithmic state between calls either), and
 * the step's loss is fx[1], f at the starting point.
 *
 * The scalar part is cg.lua's double arithmetic operation for operation, in
 * Lua's evaluation order (the file is built without FP contraction).  Every
 * vector operation is a kernel of specs/cg.lua; the dots accumulate in
 * double, where torch7's FloatTensor dot is BLAS sdot (float, BLAS order).
 *
 * Two places where this port decides what cg.lua leaves open:
 *
 * - `if ls_failed or i > maxEval then break end`: ls_failed is the number 0
 *   or 1 and every Lua number is true, so cg.lua stops after the FIRST failed
 *   line search, with x put back at that search's start.  We do the same;
 *   minimize.m's restart from steepest descent after a first failure is
 *   dead code in cg.lua and not ported.  As nothing is read after that
 *   break, the restoration of f1 and df1 is not needed: only x = x0 is done,
 *   and torch7's df0/df2/df3 buffers have no counterpart here.
 *
 * - A fractional evaluation budget (max_eval = max_iter*1.25 by default,
 *   3.75 for max_iter = 3) makes m fractional, so cg.lua's `m == 0` never
 *   holds and, once m < 0, a search that keeps finding acceptable but steep
 *   points extrapolates with no bound.  That is normal use (on rosen100
 *   with max_iter = 3, torch7's searches run 7 evaluations past their
 *   budget and end), but it can also loop forever: at a stationary point,
 *   on a NaN loss, or once float32 parameters stop moving.  We keep
 *   `m == 0` and add one guard for that regime only: the search fails when
 *   m reaches -CG_RUNAWAY, so a step makes at most CG_RUNAWAY evaluations
 *   past max_eval.  Runs that torch7 ends before that are unchanged.
 */
#include "closure.h"

#include <math.h>
#include <stdlib.h>

/* the kernels of specs/cg.lua, in the order of cg_kernels */
enum {
    K_START,     /* df, s, g -> s.s       df = g, s = -g */
    K_STEEPEST,  /* s, g -> s.s           s = -g */
    K_SAVE_MOVE, /* x0, p, s; z           x0 = p, p += z.s */
    K_MOVE,      /* p, s; z               p += z.s */
    K_SLOPE,     /* g, s -> g.s */
    K_PR_DOTS,   /* g, g1 -> g.g, g.g1, g1.g1 */
    K_PR_UPDATE, /* s, g, g1; ss -> g.s   s = ss.s - g, g1 = g */
    K_COPY,      /* y, x                  y = x */
    K_COUNT
};

static const rt_kernel_sig cg_kernels[K_COUNT] = {
    [K_START] = {"start", 3, 0, 1, 1u << 2},
    [K_STEEPEST] = {"steepest", 2, 0, 1, 0},
    [K_SAVE_MOVE] = {"save_move", 3, 1, 0, 0},
    [K_MOVE] = {"move", 2, 1, 0, 0},
    [K_SLOPE] = {"slope", 2, 0, 1, 1u << 0},
    [K_PR_DOTS] = {"pr_dots", 2, 0, 3, 1u << 0},
    [K_PR_UPDATE] = {"pr_update", 3, 1, 1, 1u << 1},
    [K_COPY] = {"copy", 2, 0, 0, 0},
};

/* cg.lua's red (minimize.m's expected reduction), fixed there too */
#define CG_RED 1.0
/* evaluations a search may make past a fractional budget (see the top):
 * far more than a search that ends ever needs (each extrapolation without
 * an upper bound triples the step; within a bracket the step converges) */
#define CG_RUNAWAY 1000

/* The scratch vectors: the search direction, the gradient at the current
 * point of the outer loop (cg.lua's df1), the start of the line search. */
typedef struct cg_state {
    float *s, *df1, *x0;
} cg_state;

typedef struct cg_opts {
    double rho, sig, inter, ext, max_iter, ratio, max_eval;
} cg_opts;

/* One call's progress: cg.lua's i (evaluations so far), and the values of
 * the current point of the outer loop, point 1. */
typedef struct cg_run {
    rt_closure *c;
    cg_state *st;
    cg_opts o;
    int64_t i;
    double f1, d1, z1;
} cg_run;

/* Lua 5.1's math.min/math.max of two numbers: the first one unless the
 * second compares smaller/greater, so a NaN second argument loses. */
static double lua_min(double a, double b) { return b < a ? b : a; }
static double lua_max(double a, double b) { return b > a ? b : a; }

static void *cg_state_new(rt_closure *c)
{
    cg_state *st = cg_calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->s = rt_closure_alloc(c);
    st->df1 = rt_closure_alloc(c);
    st->x0 = rt_closure_alloc(c);
    if (!st->s || !st->df1 || !st->x0) {
        cg_free(st->s);
        cg_free(st->df1);
        cg_free(st->x0);
        cg_free(st);
        return NULL;
    }
    return st;
}

static void cg_state_free(void *state)
{
    cg_state *st = state;
    if (!st)
        return;
    cg_free(st->s);
    cg_free(st->df1);
    cg_free(st->x0);
    cg_free(st);
}

/* The buffers are scratch: nothing in them outlives a step. */
static int cg_state_get(void *state, const char *name, const float **data,
                        int *flat)
{
    (void)state, (void)name, (void)data, (void)flat;
    return 0;
}

static cg_opts read_opts(const rt_closure *c)
{
    cg_opts o = {
        .rho = rt_closure_value(c, "rho"),
        .sig = rt_closure_value(c, "sig"),
        .inter = rt_closure_value(c, "int"),
        .ext = rt_closure_value(c, "ext"),
        .max_iter = rt_closure_value(c, "max_iter"),
        .ratio = rt_closure_value(c, "ratio"),
        .max_eval = rt_closure_value(c, "max_eval"),
    };
    if (isnan(o.max_eval)) /* None: cg.lua's maxIter*1.25, not rounded */
        o.max_eval = o.max_iter * 1.25;
    return o;
}

/* x += z.s: the parameters move to the next trial point */
static void move(cg_run *r, double z)
{
    rt_vec a[2] = {RT_PARAMS, RT_BUF(r->st->s)};
    rt_vk(r->c, K_MOVE, a, &z, NULL);
}

/* f2, df2 = opfunc(x); d2 = df2.s.  cg.lua copies df2 out of opfunc's
 * tensor; here the user's gradients stay where they are until the next
 * evaluation, which is as long as they are needed. */
static int evaluate(cg_run *r, double *f2, double *d2)
{
    int rc = rt_closure_eval(r->c, f2);
    if (rc != JOPT_OK)
        return rc;
    r->i++;
    rt_vec a[2] = {RT_GRADS, RT_BUF(r->st->s)};
    rt_vk(r->c, K_SLOPE, a, NULL, d2);
    return JOPT_OK;
}

/* Whether point 2 fails the Wolfe-Powell tests: not enough decrease, or a
 * slope not yet flat enough (still the positive side: d2 > -sig*d1). */
static int unacceptable(const cg_run *r, double f2, double d2)
{
    return f2 > r->f1 + r->z1 * r->o.rho * r->d1 || d2 > -r->o.sig * r->d1;
}

/* The next step from point 2 when it is acceptable but still descending
 * steeply: cubic extrapolation, kept within the bracket or the limits. */
static double extrapolate(const cg_run *r, double f2, double d2, double f3,
                          double d3, double z3, double limit)
{
    const cg_opts *o = &r->o;
    double z1 = r->z1;
    double A = 6 * (f2 - f3) / z3 + 3 * (d2 + d3);
    double B = 3 * (f3 - f2) - z3 * (d3 + 2 * d2);
    double z2 = -d2 * z3 * z3 / (B + sqrt(B * B - A * d2 * z3 * z3));
    if (!isfinite(z2) || z2 < 0) { /* numerical trouble or the wrong sign */
        if (limit < -0.5)
            z2 = z1 * (o->ext - 1);
        else
            z2 = (limit - z1) / 2;
    } else if (limit > -0.5 && z2 + z1 > limit) {
        z2 = (limit - z1) / 2;
    } else if (limit < -0.5 && z2 + z1 > z1 * o->ext) {
        z2 = z1 * (o->ext - 1);
    } else if (z2 < -z3 * o->inter) {
        z2 = -z3 * o->inter;
    } else if (limit > -0.5 && z2 < (limit - z1) * (1 - o->inter)) {
        z2 = (limit - z1) * (1 - o->inter);
    }
    return z2;
}

/* The next step back towards point 3 when point 2 is unacceptable:
 * quadratic fit if f went up, else cubic; never within int of either end. */
static double interpolate(const cg_run *r, double f2, double d2, double f3,
                          double d3, double z3)
{
    double z2;
    if (f2 > r->f1) {
        z2 = z3 - (0.5 * d3 * z3 * z3) / (d3 * z3 + f2 - f3);
    } else {
        double A = 6 * (f2 - f3) / z3 + 3 * (d2 + d3);
        double B = 3 * (f3 - f2) - z3 * (d3 + 2 * d2);
        z2 = (sqrt(B * B - A * d2 * z3 * z3) - B) / A; /* sqrt(<0): NaN */
    }
    if (!isfinite(z2))
        z2 = z3 / 2;
    return lua_max(lua_min(z2, r->o.inter * z3), (1 - r->o.inter) * z3);
}

/* One line search along s from point 1 (x saved in x0 first).  z1 grows
 * to the accepted step; *ok says whether the search succeeded, and then
 * *f2, *d2 are the accepted point's (its gradient is in the user's
 * buffers).  Point 3's step z3 is relative to the current point. */
static int line_search(cg_run *r, double *f2p, double *d2p, int *ok)
{
    const cg_opts *o = &r->o;
    double f2, d2, z2;
    rt_vec a[3] = {RT_BUF(r->st->x0), RT_PARAMS, RT_BUF(r->st->s)};
    rt_vk(r->c, K_SAVE_MOVE, a, &r->z1, NULL);
    int rc = evaluate(r, &f2, &d2);
    if (rc != JOPT_OK)
        return rc;
    double f3 = r->f1, d3 = r->d1, z3 = -r->z1;
    double m = lua_min(o->max_iter, o->max_eval - (double)r->i);
    double limit = -1; /* no upper bound on the step yet */
    *ok = 0;
    for (;;) {
        while (unacceptable(r, f2, d2) && m > 0) {
            limit = r->z1;
            z2 = interpolate(r, f2, d2, f3, d3, z3);
            r->z1 = r->z1 + z2;
            move(r, z2);
            if ((rc = evaluate(r, &f2, &d2)) != JOPT_OK)
                return rc;
            m = m - 1;
            z3 = z3 - z2;
        }
        if (unacceptable(r, f2, d2))
            break; /* failed: out of evaluations, still unacceptable */
        if (d2 > o->sig * r->d1) {
            *ok = 1; /* the strong Wolfe-Powell conditions hold */
            break;
        }
        if (m == 0 || m <= -CG_RUNAWAY)
            break; /* failed; the second test is this port's guard */
        z2 = extrapolate(r, f2, d2, f3, d3, z3, limit);
        f3 = f2;
        d3 = d2;
        z3 = -z2;
        r->z1 = r->z1 + z2;
        move(r, z2);
        if ((rc = evaluate(r, &f2, &d2)) != JOPT_OK)
            return rc;
        m = m - 1;
    }
    *f2p = f2;
    *d2p = d2;
    return JOPT_OK;
}

/* After a successful search: the Polak-Ribiere direction from the new
 * gradient df2 (still in the user's buffers), which becomes df1; back to
 * steepest descent if that direction does not descend; the next initial
 * step from the ratio of the slopes. */
static void next_direction(cg_run *r)
{
    cg_state *st = r->st;
    double dots[3], d2, ss2;
    rt_vec pd[2] = {RT_GRADS, RT_BUF(st->df1)};
    rt_vk(r->c, K_PR_DOTS, pd, NULL, dots);
    double ss = (dots[0] - dots[1]) / dots[2];
    rt_vec pu[3] = {RT_BUF(st->s), RT_GRADS, RT_BUF(st->df1)};
    rt_vk(r->c, K_PR_UPDATE, pu, &ss, &d2);
    if (d2 > 0) {
        rt_vec sd[2] = {RT_BUF(st->s), RT_BUF(st->df1)};
        rt_vk(r->c, K_STEEPEST, sd, NULL, &ss2);
        d2 = -ss2;
    }
    r->z1 = r->z1 * lua_min(r->o.ratio, r->d1 / (d2 - 1e-320));
    r->d1 = d2;
}

static int cg_step(rt_closure *c, void *state, double *loss)
{
    cg_run r = {.c = c, .st = state, .o = read_opts(c)};
    cg_state *st = r.st;
    int rc = rt_closure_eval(c, &r.f1);
    if (rc != JOPT_OK)
        return rc;
    r.i = 1;
    double fx1 = r.f1;
    double ss;
    rt_vec a[3] = {RT_BUF(st->df1), RT_BUF(st->s), RT_GRADS};
    rt_vk(c, K_START, a, NULL, &ss);
    r.d1 = -ss;
    r.z1 = CG_RED / (1 - r.d1);
    while ((double)r.i < fabs(r.o.max_eval)) {
        double f2, d2;
        int ok;
        if ((rc = line_search(&r, &f2, &d2, &ok)) != JOPT_OK)
            return rc;
        if (!ok) { /* cg.lua breaks at once (see the top of this file) */
            rt_vec b[2] = {RT_PARAMS, RT_BUF(st->x0)};
            rt_vk(c, K_COPY, b, NULL, NULL);
            break;
        }
        r.f1 = f2;
        next_direction(&r);
    }
    *loss = fx1; /* what optim.cg returns first in fx */
    return JOPT_OK;
}

const rt_driver rt_conjgrad_driver = {
    .method = "cg",
    .name = "cg",
    .source = "runtime/conjgrad.c",
    .kernels = cg_kernels,
    .nkernels = K_COUNT,
    .state_new = cg_state_new,
    .step = cg_step,
    .state_free = cg_state_free,
    .state_get = cg_state_get,
};
