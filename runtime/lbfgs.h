/*
 * lbfgs.h - what the L-BFGS files share (private): torch's scalar type and
 * its arithmetic, the optimizer's state, and each file's entry points.
 *
 *   lbfgs.c        state, buffers, history, the two-loop recursion, the step
 *                  and rt_lbfgs_driver
 *   lbfgs_wolfe.c  the strong-Wolfe line search (_strong_wolfe,
 *                  _cubic_interpolate)
 *
 * Scalars.  torch mixes 0-dim float32 tensors (every dot, ro, H_diag, al,
 * be, and any step size computed from them) with Python numbers (losses,
 * lr, bounds computed from Python numbers), and the type of a step size
 * changes on the way through the line search.  `num` carries that type so
 * that each operation rounds where torch does (tests/fixtures/lbfgs/
 * README.md, "float32 vs float64").  Our dots and sums accumulate in double
 * where torch's accumulate in float32, then are rounded to float: only the
 * scalar types are torch's, not the reduction order.
 */
#ifndef RT_LBFGS_H
#define RT_LBFGS_H

#include <math.h>

#include "closure.h"

/* the kernels of specs/lbfgs.lua, in the order of lbfgs_kernels */
enum {
    K_GATHER,        /* flat, g -> max|g|, sum|g|           flat = g */
    K_GATHER_DOT,    /* flat, g, d -> max|g|, sum|g|, g.d   flat = g */
    K_CURVATURE,     /* y, s, g, g_prev, d; t -> y.s, y.y   y = g - g_prev, s = d*t */
    K_NEG_SCALE_DOT, /* d, g; h -> g.d                      d = (-g)*h */
    K_NEG_DOT,       /* q, g, z -> z.q                      q = -g */
    K_AXPY_DOT,      /* y, x, z; a -> z.y                   y += a*x (fma) */
    K_AXPY_SCALE_DOT,/* q, y; a, h -> y.q                   q = fma(y, a, q)*h */
    K_MOVE_FROM,     /* p, x, d; t                          p = fma(d, t, x) */
    K_AXPY,          /* y, x; a                             y += a*x (fma) */
    K_COPY,          /* y, x                                y = x */
    K_AMAX,          /* x -> max|x| */
    K_AMAX_SCALED,   /* d; t -> max|d*t| */
    K_COUNT
};

/* ---- torch's scalars: a 0-dim float32 tensor or a Python number ---------- */

typedef struct num {
    double v;
    int f32; /* a float32 tensor: v holds a float value */
} num;

static inline num tens(double v) { return (num){(float)v, 1}; }
static inline num py(double v) { return (num){v, 0}; }
static inline float f32(num a) { return (float)a.v; }

/* A binary operation with a tensor operand is done in float32 with the
 * Python operand rounded to float first; the double result of two floats'
 * +, -, *, / rounds to the correctly rounded float result. */
static inline num add(num a, num b)
{
    return (a.f32 || b.f32) ? tens((double)f32(a) + f32(b)) : py(a.v + b.v);
}
static inline num sub(num a, num b)
{
    return (a.f32 || b.f32) ? tens((double)f32(a) - f32(b)) : py(a.v - b.v);
}
static inline num mul(num a, num b)
{
    return (a.f32 || b.f32) ? tens((double)f32(a) * f32(b)) : py(a.v * b.v);
}
/* `number / tensor` is torch's __rtruediv__: reciprocal, then a product */
static inline num dvd(num a, num b)
{
    if (b.f32 && !a.f32)
        return tens((double)(float)(1.0 / f32(b)) * f32(a));
    return (a.f32 || b.f32) ? tens((double)f32(a) / f32(b)) : py(a.v / b.v);
}
static inline num nabs(num a) { return (num){fabs(a.v), a.f32}; }
static inline int lt(num a, num b)
{
    return (a.f32 || b.f32) ? f32(a) < f32(b) : a.v < b.v;
}
static inline int le(num a, num b)
{
    return (a.f32 || b.f32) ? f32(a) <= f32(b) : a.v <= b.v;
}
/* Python's max/min of two: the first unless the second is strictly
 * beyond it; they return one of the objects, type included */
static inline num pmax(num a, num b) { return lt(a, b) ? b : a; }
static inline num pmin(num a, num b) { return lt(b, a) ? b : a; }

/* ---- state ----------------------------------------------------------------- */

/* the curvature pairs, oldest first: logical i is at (head + i) % cap */
typedef struct lb_hist {
    int *y, *s;  /* buffer indices: old_dirs, old_stps */
    double *ro;  /* float values */
    int cap, head, count;
} lb_hist;

/* everything a step changes; committed as a whole */
typedef struct lb_vars {
    int d, pfg;  /* buffers of d and prev_flat_grad, -1 before the first */
    lb_hist h;
    double t, H_diag, prev_loss;
    double func_evals, n_iter;
} lb_vars;

typedef struct lb_buf {
    float *p;
    double amax; /* max|g| when the buffer holds a gathered gradient */
    unsigned mark;
} lb_buf;

/* a step's temporaries that hold buffers (roots for buf_acquire) */
enum { T_FG, T_X, T_GPREV, T_GNEW, T_BG0, T_BG1, T_Y, T_S, T_D, T_COUNT };

typedef struct lb_state {
    rt_closure *c;
    lb_buf *bufs;
    int nbufs, capbufs;
    unsigned epoch;
    lb_vars cur, work;
    int tmp[T_COUNT];
    double *al;
    int alcap;
    float shown[5]; /* t, H_diag, prev_loss, func_evals, n_iter */
} lb_state;

static inline float *B(lb_state *st, int i) { return st->bufs[i].p; }

static inline rt_vec V(lb_state *st, int i) { return RT_BUF(B(st, i)); }

/* ---- lbfgs.c ------------------------------------------------------------------ */

/* acquires a buffer no root refers to into tmp slot k */
int rt_lb_acquire_tmp(lb_state *st, int k);

/* gathers the user's gradients into buffer `buf`; returns sum|g| and, with
 * d >= 0, g.d in *gtd */
double rt_lb_gather(lb_state *st, int buf, int d, double *gtd);

/* ---- lbfgs_wolfe.c ------------------------------------------------------------ */

typedef struct lb_ls_ctx {
    lb_state *st;
    int x, d;      /* x_init and the direction */
    int evals;     /* ls_func_evals */
} lb_ls_ctx;

/* _strong_wolfe(obj_func, x, t, d, f, g, gtd, max_ls=max_ls) with g in
 * tmp[T_FG]; returns f_new in *f, t in *t and g_new in tmp[T_FG] */
int rt_lb_strong_wolfe(lb_ls_ctx *ls, num *tio, double *fio, num gtd, double max_ls);

#endif /* RT_LBFGS_H */
