/*
 * lbfgs.c - L-BFGS as torch.optim.LBFGS (PyTorch 2.13, torch/optim/lbfgs.py),
 * with its strong-Wolfe line search (_strong_wolfe, _cubic_interpolate).
 * The control flow is lbfgs.py's, statement for statement; every vector
 * operation is a kernel of specs/lbfgs.lua run through rt_vk.
 *
 * Scalars.  torch mixes 0-dim float32 tensors (every dot, ro, H_diag, al,
 * be, and any step size computed from them) with Python numbers (losses,
 * lr, bounds computed from Python numbers), and the type of a step size
 * changes on the way through the line search.  `num` carries that type so
 * that each operation rounds where torch does (tests/fixtures/lbfgs/
 * README.md, "float32 vs float64").  Our dots and sums accumulate in double
 * where torch's accumulate in float32, then are rounded to float: only the
 * scalar types are torch's, not the reduction order.
 *
 * Buffers and rollback.  Every flat vector lives in a table of buffers the
 * state owns; the state refers to them by index.  A buffer is free when no
 * root refers to it: the committed state (`cur`), the step's working copy
 * (`work`) and the step's temporaries (`tmp`).  A step works on `work` only
 * and never writes a buffer a root of `cur` refers to, so a failed step
 * leaves `cur` intact and returning is the whole rollback; a successful
 * step commits by swapping `work` into `cur`.  Vectors are never copied to
 * move them between roles: gradients are gathered into fresh buffers, which
 * are never written again, so prev_flat_grad, the line search's brackets
 * and flat_grad just share them, and the history is a ring of indices.
 *
 * Memory, in vectors of numel floats.  torch holds 2*history_size for
 * old_dirs and old_stps plus about 8 (d, prev_flat_grad, flat_grad, and in
 * the line search x_init, g, g_prev, g_new and the bracket's two
 * gradients).  We hold the same, plus what rollback costs: the committed
 * d and prev_flat_grad beside the step's new ones, and every pair the
 * step evicts from a full history, kept until the step commits: up to
 * 2*min(k, history_size) more for a step of k iterations (k <= max_iter;
 * 40 with the defaults, against torch's 208).  After the commit these
 * are spares that later pairs and temporaries reuse; buffers are freed
 * only with the optimizer.
 */
#include "closure.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static const rt_kernel_sig lbfgs_kernels[K_COUNT] = {
    {"gather", 2, 0, 2},        {"gather_dot", 3, 0, 3},
    {"curvature", 5, 1, 2},     {"neg_scale_dot", 2, 1, 1},
    {"neg_dot", 3, 0, 1},       {"axpy_dot", 3, 1, 1},
    {"axpy_scale_dot", 2, 2, 1}, {"move_from", 3, 1, 0},
    {"axpy", 2, 1, 0},          {"copy", 2, 0, 0},
    {"amax", 1, 0, 1},          {"amax_scaled", 1, 1, 1},
};

/* ---- torch's scalars: a 0-dim float32 tensor or a Python number ---------- */

typedef struct num {
    double v;
    int f32; /* a float32 tensor: v holds a float value */
} num;

static num tens(double v) { return (num){(float)v, 1}; }
static num py(double v) { return (num){v, 0}; }
static float f32(num a) { return (float)a.v; }

/* A binary operation with a tensor operand is done in float32 with the
 * Python operand rounded to float first; the double result of two floats'
 * +, -, *, / rounds to the correctly rounded float result. */
static num add(num a, num b)
{
    return (a.f32 || b.f32) ? tens((double)f32(a) + f32(b)) : py(a.v + b.v);
}
static num sub(num a, num b)
{
    return (a.f32 || b.f32) ? tens((double)f32(a) - f32(b)) : py(a.v - b.v);
}
static num mul(num a, num b)
{
    return (a.f32 || b.f32) ? tens((double)f32(a) * f32(b)) : py(a.v * b.v);
}
/* `number / tensor` is torch's __rtruediv__: reciprocal, then a product */
static num dvd(num a, num b)
{
    if (b.f32 && !a.f32)
        return tens((double)(float)(1.0 / f32(b)) * f32(a));
    return (a.f32 || b.f32) ? tens((double)f32(a) / f32(b)) : py(a.v / b.v);
}
static num nabs(num a) { return (num){fabs(a.v), a.f32}; }
static int lt(num a, num b)
{
    return (a.f32 || b.f32) ? f32(a) < f32(b) : a.v < b.v;
}
static int le(num a, num b)
{
    return (a.f32 || b.f32) ? f32(a) <= f32(b) : a.v <= b.v;
}
/* Python's max/min of two: the first unless the second is strictly
 * beyond it; they return one of the objects, type included */
static num pmax(num a, num b) { return lt(a, b) ? b : a; }
static num pmin(num a, num b) { return lt(b, a) ? b : a; }

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

static float *B(lb_state *st, int i) { return st->bufs[i].p; }

static void mark_hist(lb_state *st, const lb_hist *h)
{
    for (int i = 0; i < h->count; i++) {
        int pos = (h->head + i) % h->cap;
        st->bufs[h->y[pos]].mark = st->epoch;
        st->bufs[h->s[pos]].mark = st->epoch;
    }
}

static void mark_vars(lb_state *st, const lb_vars *v)
{
    if (v->d >= 0)
        st->bufs[v->d].mark = st->epoch;
    if (v->pfg >= 0)
        st->bufs[v->pfg].mark = st->epoch;
    mark_hist(st, &v->h);
}

/* A buffer no root refers to, allocated if there is none; -1 when out of
 * memory.  Marking beats searching the roots per buffer: the history can
 * hold hundreds of them. */
static int buf_acquire(lb_state *st)
{
    if (++st->epoch == 0) { /* wrapped: forget the old marks */
        for (int i = 0; i < st->nbufs; i++)
            st->bufs[i].mark = 0;
        st->epoch = 1;
    }
    mark_vars(st, &st->cur);
    mark_vars(st, &st->work);
    for (int k = 0; k < T_COUNT; k++)
        if (st->tmp[k] >= 0)
            st->bufs[st->tmp[k]].mark = st->epoch;
    for (int i = 0; i < st->nbufs; i++)
        if (st->bufs[i].mark != st->epoch)
            return i;
    if (st->nbufs == st->capbufs) {
        int cap = st->capbufs ? 2 * st->capbufs : 8;
        lb_buf *nb = realloc(st->bufs, sizeof *nb * (size_t)cap);
        if (!nb)
            return -1;
        st->bufs = nb;
        st->capbufs = cap;
    }
    float *p = rt_closure_alloc(st->c);
    if (!p)
        return -1;
    st->bufs[st->nbufs] = (lb_buf){p, 0, 0};
    return st->nbufs++;
}

/* acquires into tmp slot k */
static int acquire_tmp(lb_state *st, int k)
{
    st->tmp[k] = -1;
    st->tmp[k] = buf_acquire(st);
    return st->tmp[k] >= 0 ? JOPT_OK : JOPT_ENOMEM;
}

static void hist_free(lb_hist *h)
{
    free(h->y);
    free(h->s);
    free(h->ro);
    memset(h, 0, sizeof *h);
}

/* Room for `cap` pairs in logical order (head 0).  Allocates new arrays so
 * that a failure leaves h as it was. */
static int hist_resize(lb_hist *h, int cap)
{
    int *y = malloc(sizeof *y * (size_t)cap), *s = malloc(sizeof *s * (size_t)cap);
    double *ro = malloc(sizeof *ro * (size_t)cap);
    if (!y || !s || !ro) {
        free(y);
        free(s);
        free(ro);
        return JOPT_ENOMEM;
    }
    for (int i = 0; i < h->count; i++) {
        int pos = (h->head + i) % h->cap;
        y[i] = h->y[pos];
        s[i] = h->s[pos];
        ro[i] = h->ro[pos];
    }
    free(h->y);
    free(h->s);
    free(h->ro);
    h->y = y;
    h->s = s;
    h->ro = ro;
    h->cap = cap;
    h->head = 0;
    return JOPT_OK;
}

/* dst = src, keeping dst's arrays when they are large enough */
static int vars_copy(lb_vars *dst, const lb_vars *src)
{
    lb_hist h = dst->h;
    if (h.cap < src->h.cap) {
        hist_free(&h);
        h.y = malloc(sizeof *h.y * (size_t)src->h.cap);
        h.s = malloc(sizeof *h.s * (size_t)src->h.cap);
        h.ro = malloc(sizeof *h.ro * (size_t)src->h.cap);
        if (!h.y || !h.s || !h.ro) {
            hist_free(&h);
            dst->h = h;
            return JOPT_ENOMEM;
        }
        h.cap = src->h.cap;
    }
    *dst = *src;
    /* src's pairs in logical order at the start of dst's arrays */
    for (int i = 0; i < src->h.count; i++) {
        int pos = (src->h.head + i) % src->h.cap;
        h.y[i] = src->h.y[pos];
        h.s[i] = src->h.s[pos];
        h.ro[i] = src->h.ro[pos];
    }
    h.head = 0;
    h.count = src->h.count;
    dst->h = h;
    return JOPT_OK;
}

/* old_dirs.append(y) etc., after dropping the oldest pair when the list
 * holds exactly history_size (torch's `==`: a list longer than a lowered
 * history_size keeps growing, as torch's does) */
static int hist_push(lb_hist *h, double history_size, int y, int s, double ro)
{
    if ((double)h->count == history_size) {
        int pos = (h->head + h->count) % h->cap;
        h->y[pos] = y;
        h->s[pos] = s;
        h->ro[pos] = ro;
        h->head = (h->head + 1) % h->cap;
        return JOPT_OK;
    }
    if (h->count == h->cap) {
        int cap = h->cap ? 2 * h->cap : 8;
        if (history_size > h->count && history_size < cap)
            cap = (int)ceil(history_size);
        if (cap <= h->count || hist_resize(h, cap) != JOPT_OK)
            return JOPT_ENOMEM;
    }
    int pos = (h->head + h->count) % h->cap;
    h->y[pos] = y;
    h->s[pos] = s;
    h->ro[pos] = ro;
    h->count++;
    return JOPT_OK;
}

/* ---- the vector kernels ----------------------------------------------------- */

static rt_vec V(lb_state *st, int i) { return RT_BUF(B(st, i)); }

/* gathers the user's gradients into buffer `buf`; returns sum|g| and, with
 * d >= 0, g.d in *gtd */
static double gather(lb_state *st, int buf, int d, double *gtd)
{
    double r[3];
    if (d >= 0) {
        rt_vec a[3] = {V(st, buf), RT_GRADS, V(st, d)};
        rt_vk(st->c, K_GATHER_DOT, a, NULL, r);
        *gtd = r[2];
    } else {
        rt_vec a[2] = {V(st, buf), RT_GRADS};
        rt_vk(st->c, K_GATHER, a, NULL, r);
    }
    st->bufs[buf].amax = r[0];
    return r[1];
}

/* ---- _strong_wolfe ------------------------------------------------------------ */

/* _cubic_interpolate: bounds NULL for the bracket's own ends */
static num cubic_interpolate(num x1, double f1, num g1, num x2, double f2,
                             num g2, const num *bounds)
{
    num xmin_bound, xmax_bound;
    if (bounds) {
        xmin_bound = bounds[0];
        xmax_bound = bounds[1];
    } else if (le(x1, x2)) {
        xmin_bound = x1;
        xmax_bound = x2;
    } else {
        xmin_bound = x2;
        xmax_bound = x1;
    }
    num d1 = sub(add(g1, g2), dvd(mul(py(3), py(f1 - f2)), sub(x1, x2)));
    num d2_square = sub(mul(d1, d1), mul(g1, g2));
    if (le(py(0), d2_square)) {
        num d2 = tens(sqrtf(f32(d2_square)));
        num min_pos;
        if (le(x1, x2))
            min_pos = sub(x2, mul(sub(x2, x1), dvd(sub(add(g2, d2), d1),
                                                   add(sub(g2, g1), mul(py(2), d2)))));
        else
            min_pos = sub(x1, mul(sub(x1, x2), dvd(sub(add(g1, d2), d1),
                                                   add(sub(g1, g2), mul(py(2), d2)))));
        return pmin(pmax(min_pos, xmin_bound), xmax_bound);
    }
    return dvd(add(xmin_bound, xmax_bound), py(2.0));
}

typedef struct ls_ctx {
    lb_state *st;
    int x, d;      /* x_init and the direction */
    int evals;     /* ls_func_evals */
} ls_ctx;

/* _directional_evaluate: θ = x + t·d, evaluate; the gradient into a fresh
 * buffer in tmp[T_GNEW] (θ is left at the trial point: the next trial or
 * the final move rewrites it from x) */
static int directional_evaluate(ls_ctx *ls, num t, double *f_new, num *gtd_new)
{
    lb_state *st = ls->st;
    rt_vec a[3] = {RT_PARAMS, V(st, ls->x), V(st, ls->d)};
    double tv = t.v;
    rt_vk(st->c, K_MOVE_FROM, a, &tv, NULL);
    int rc = rt_closure_eval(st->c, f_new);
    if (rc != JOPT_OK)
        return rc;
    ls->evals++;
    if ((rc = acquire_tmp(st, T_GNEW)) != JOPT_OK)
        return rc;
    double gtd = 0;
    gather(st, st->tmp[T_GNEW], ls->d, &gtd);
    *gtd_new = tens(gtd);
    return JOPT_OK;
}

/* _strong_wolfe(obj_func, x, t, d, f, g, gtd, max_ls=max_ls) with g in
 * tmp[T_FG]; returns f_new in *f, t in *t and g_new in tmp[T_FG] */
static int strong_wolfe(ls_ctx *ls, num *tio, double *fio, num gtd, double max_ls)
{
    const double c1 = 1e-4, c2 = 0.9, tolerance_change = 1e-9;
    lb_state *st = ls->st;
    int *tmp = st->tmp;
    double dn;
    rt_vec ad = V(st, ls->d);
    rt_vk(st->c, K_AMAX, &ad, NULL, &dn);
    num d_norm = tens(dn), t = *tio;
    double f = *fio, f_new;
    num gtd_new;
    int rc = directional_evaluate(ls, t, &f_new, &gtd_new);
    if (rc != JOPT_OK)
        return rc;

    num t_prev = py(0), gtd_prev = gtd;
    double f_prev = f;
    tmp[T_GPREV] = tmp[T_FG];
    int done = 0, ls_iter = 0, nb = 0;
    num br[2] = {py(0), py(0)}, br_gtd[2] = {py(0), py(0)};
    double br_f[2] = {0, 0};
    /* armijo: f_new > f + c1*t*gtd */
#define ARMIJO_FAILS(t_) lt(add(py(f), mul(mul(py(c1), (t_)), gtd)), py(f_new))
    while (ls_iter < max_ls) {
        if (ARMIJO_FAILS(t) || (ls_iter > 1 && f_new >= f_prev)) {
            nb = 2;
            br[0] = t_prev, br[1] = t;
            br_f[0] = f_prev, br_f[1] = f_new;
            tmp[T_BG0] = tmp[T_GPREV], tmp[T_BG1] = tmp[T_GNEW];
            br_gtd[0] = gtd_prev, br_gtd[1] = gtd_new;
            break;
        }
        if (le(nabs(gtd_new), mul(py(-c2), gtd))) {
            nb = 1;
            br[0] = t;
            br_f[0] = f_new;
            tmp[T_BG0] = tmp[T_GNEW];
            done = 1;
            break;
        }
        if (le(py(0), gtd_new)) {
            nb = 2;
            br[0] = t_prev, br[1] = t;
            br_f[0] = f_prev, br_f[1] = f_new;
            tmp[T_BG0] = tmp[T_GPREV], tmp[T_BG1] = tmp[T_GNEW];
            br_gtd[0] = gtd_prev, br_gtd[1] = gtd_new;
            break;
        }
        num bounds[2] = {add(t, mul(py(0.01), sub(t, t_prev))), mul(t, py(10))};
        num tmp_t = t;
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds);
        t_prev = tmp_t;
        f_prev = f_new;
        tmp[T_GPREV] = tmp[T_GNEW];
        gtd_prev = gtd_new;
        if ((rc = directional_evaluate(ls, t, &f_new, &gtd_new)) != JOPT_OK)
            return rc;
        ls_iter++;
    }
    tmp[T_GPREV] = -1; /* the zoom has no use for it: let it be reused */
    /* torch tests `ls_iter == max_ls`; a negative max_ls (max_eval below
     * the evaluations made) leaves its bracket unset and raises there, we
     * take this branch instead */
    if (ls_iter >= max_ls) {
        nb = 2;
        br[0] = py(0), br[1] = t;
        br_f[0] = f, br_f[1] = f_new;
        tmp[T_BG0] = tmp[T_FG], tmp[T_BG1] = tmp[T_GNEW];
    }

    int insuf_progress = 0;
    int low = br_f[0] <= br_f[nb - 1] ? 0 : 1, high = 1 - low;
    while (!done && ls_iter < max_ls) {
        if (lt(mul(nabs(sub(br[1], br[0])), d_norm), py(tolerance_change)))
            break;
        t = cubic_interpolate(br[0], br_f[0], br_gtd[0], br[1], br_f[1], br_gtd[1], NULL);
        num bmax = pmax(br[0], br[1]), bmin = pmin(br[0], br[1]);
        num eps = mul(py(0.1), sub(bmax, bmin));
        if (lt(pmin(sub(bmax, t), sub(t, bmin)), eps)) {
            if (insuf_progress || le(bmax, t) || le(t, bmin)) {
                if (lt(nabs(sub(t, bmax)), nabs(sub(t, bmin))))
                    t = sub(bmax, eps);
                else
                    t = add(bmin, eps);
                insuf_progress = 0;
            } else {
                insuf_progress = 1;
            }
        } else {
            insuf_progress = 0;
        }
        if ((rc = directional_evaluate(ls, t, &f_new, &gtd_new)) != JOPT_OK)
            return rc;
        ls_iter++;
        if (ARMIJO_FAILS(t) || f_new >= br_f[low]) {
            br[high] = t;
            br_f[high] = f_new;
            tmp[T_BG0 + high] = tmp[T_GNEW];
            br_gtd[high] = gtd_new;
            low = br_f[0] <= br_f[1] ? 0 : 1;
            high = 1 - low;
        } else {
            if (le(nabs(gtd_new), mul(py(-c2), gtd))) {
                done = 1;
            } else if (le(py(0), mul(gtd_new, sub(br[high], br[low])))) {
                br[high] = br[low];
                br_f[high] = br_f[low];
                tmp[T_BG0 + high] = tmp[T_BG0 + low];
                br_gtd[high] = br_gtd[low];
            }
            br[low] = t;
            br_f[low] = f_new;
            tmp[T_BG0 + low] = tmp[T_GNEW];
            br_gtd[low] = gtd_new;
        }
    }
#undef ARMIJO_FAILS
    *tio = br[low];
    *fio = br_f[low];
    tmp[T_FG] = tmp[T_BG0 + low];
    tmp[T_GPREV] = tmp[T_GNEW] = tmp[T_BG0] = tmp[T_BG1] = -1;
    return JOPT_OK;
}

/* ---- the step ----------------------------------------------------------------- */

typedef struct lb_opts {
    double lr, max_iter, max_eval, tolerance_grad, tolerance_change,
        history_size;
    int strong_wolfe;
} lb_opts;

static lb_opts read_opts(const rt_closure *c)
{
    lb_opts o;
    o.lr = rt_closure_value(c, "lr");
    o.max_iter = rt_closure_value(c, "max_iter");
    o.max_eval = rt_closure_value(c, "max_eval");
    if (isnan(o.max_eval)) /* None: max_iter * 5 // 4 */
        o.max_eval = floor(o.max_iter * 5 / 4);
    o.tolerance_grad = rt_closure_value(c, "tolerance_grad");
    o.tolerance_change = rt_closure_value(c, "tolerance_change");
    o.history_size = rt_closure_value(c, "history_size");
    o.strong_wolfe = rt_closure_value(c, "line_search_fn") == 1;
    return o;
}

/* The direction d = -H·g from the history (the two-loop recursion) into a
 * fresh buffer tmp[T_D]; returns g.d, fused into the last pass. */
static int two_loop(lb_state *st, int g, double *gtd)
{
    lb_vars *w = &st->work;
    const lb_hist *h = &w->h;
    int rc = acquire_tmp(st, T_D);
    if (rc != JOPT_OK)
        return rc;
    int d = st->tmp[T_D], n = h->count;
    if (n == 0) {
        rt_vec a[2] = {V(st, d), V(st, g)};
        rt_vk(st->c, K_NEG_SCALE_DOT, a, &w->H_diag, gtd);
        return JOPT_OK;
    }
    if (st->alcap < n) {
        double *al = realloc(st->al, sizeof *al * (size_t)n);
        if (!al)
            return JOPT_ENOMEM;
        st->al = al;
        st->alcap = n;
    }
#define HY(i) h->y[(h->head + (i)) % h->cap]
#define HS(i) h->s[(h->head + (i)) % h->cap]
#define HRO(i) h->ro[(h->head + (i)) % h->cap]
    double *al = st->al, dot;
    /* q = -g; al[i] = s_i.q * ro_i; q += -al[i]·y_i, for i = n-1 .. 0,
     * each dot fused with the pass before it */
    rt_vec a3[3] = {V(st, d), V(st, g), V(st, HS(n - 1))};
    rt_vk(st->c, K_NEG_DOT, a3, NULL, &dot);
    for (int i = n - 1; i >= 1; i--) {
        al[i] = (float)((double)(float)dot * (float)HRO(i));
        double a = -al[i];
        rt_vec b[3] = {V(st, d), V(st, HY(i)), V(st, HS(i - 1))};
        rt_vk(st->c, K_AXPY_DOT, b, &a, &dot);
    }
    al[0] = (float)((double)(float)dot * (float)HRO(0));
    /* q += -al[0]·y_0, then d = q·H_diag, and y_0.d */
    double sc[2] = {-al[0], w->H_diag};
    rt_vec b2[2] = {V(st, d), V(st, HY(0))};
    rt_vk(st->c, K_AXPY_SCALE_DOT, b2, sc, &dot);
    /* be_i = y_i.d * ro_i; d += (al[i] - be_i)·s_i; then y_(i+1).d, and
     * after the last pair g.d */
    for (int i = 0; i < n; i++) {
        double be = (float)((double)(float)dot * (float)HRO(i));
        double a = (float)(al[i] - be);
        int z = i + 1 < n ? HY(i + 1) : g;
        rt_vec b[3] = {V(st, d), V(st, HS(i)), V(st, z)};
        rt_vk(st->c, K_AXPY_DOT, b, &a, &dot);
    }
    *gtd = dot;
#undef HY
#undef HS
#undef HRO
    return JOPT_OK;
}

/* the new direction of an iteration after the first: the curvature pair
 * of the last move, then the two-loop recursion */
static int direction(lb_state *st, const lb_opts *o, int g, double *gtd)
{
    lb_vars *w = &st->work;
    int rc;
    double r[2] = {0, 0};
    /* a line search that returned t = 0 gives back the same gradient
     * buffer: y = 0, so y.s = 0 (or NaN) and no pair is stored */
    if (g != w->pfg) {
        if ((rc = acquire_tmp(st, T_Y)) != JOPT_OK || (rc = acquire_tmp(st, T_S)) != JOPT_OK)
            return rc;
        rt_vec a[5] = {V(st, st->tmp[T_Y]), V(st, st->tmp[T_S]), V(st, g),
                       V(st, w->pfg), V(st, w->d)};
        rt_vk(st->c, K_CURVATURE, a, &w->t, r);
    }
    float ys = (float)r[0];
    if (g != w->pfg && ys > (float)1e-10 && o->history_size >= 1) {
        double ro = (float)(1.0 / ys);
        if ((rc = hist_push(&w->h, o->history_size, st->tmp[T_Y], st->tmp[T_S], ro)) != JOPT_OK)
            return rc;
        w->H_diag = (float)((double)ys / (float)r[1]);
    }
    st->tmp[T_Y] = st->tmp[T_S] = -1;
    return two_loop(st, g, gtd);
}

/* gathers the gradients into a fresh flat_grad, tmp[T_FG]; *gsum = sum|g| */
static int new_flat_grad(lb_state *st, double *gsum)
{
    int rc = acquire_tmp(st, T_FG);
    if (rc == JOPT_OK)
        *gsum = gather(st, st->tmp[T_FG], -1, NULL);
    return rc;
}

static int opt_cond(lb_state *st, const lb_opts *o)
{
    return (float)st->bufs[st->tmp[T_FG]].amax <= (float)o->tolerance_grad;
}

/* the iterations of one step, on st->work; *loss is the first evaluation's */
static int run_step(lb_state *st, const lb_opts *o, double *loss)
{
    lb_vars *w = &st->work;
    double gsum, lossv;
    int rc = rt_closure_eval(st->c, &lossv);
    if (rc != JOPT_OK)
        return rc;
    *loss = lossv;
    double current_evals = 1;
    w->func_evals += 1;
    if ((rc = new_flat_grad(st, &gsum)) != JOPT_OK)
        return rc;
    if (opt_cond(st, o))
        return JOPT_OK;

    double n_iter = 0;
    num t = py(w->t);
    while (n_iter < o->max_iter) {
        n_iter += 1;
        w->n_iter += 1;
        double gtdv;
        if (w->n_iter == 1) {
            w->h.count = w->h.head = 0;
            w->H_diag = 1;
            if ((rc = two_loop(st, st->tmp[T_FG], &gtdv)) != JOPT_OK)
                return rc;
        } else if ((rc = direction(st, o, st->tmp[T_FG], &gtdv)) != JOPT_OK) {
            return rc;
        }
        w->d = st->tmp[T_D];
        st->tmp[T_D] = -1;
        w->pfg = st->tmp[T_FG]; /* never written again: no copy needed */
        w->prev_loss = lossv;

        if (w->n_iter == 1) /* min(1.0, 1.0/|g|.sum()) * lr */
            t = mul(pmin(py(1.0), dvd(py(1.0), tens(gsum))), py(o->lr));
        else
            t = py(o->lr);
        num gtd = tens(gtdv);
        w->t = t.v;
        if (lt(py(-o->tolerance_change), gtd))
            break;

        double ls_func_evals = 0;
        int cond = 0;
        if (o->strong_wolfe) {
            ls_ctx ls = {st, -1, w->d, 0};
            if ((rc = acquire_tmp(st, T_X)) != JOPT_OK)
                return rc;
            ls.x = st->tmp[T_X];
            rt_vec a[2] = {V(st, ls.x), RT_PARAMS};
            rt_vk(st->c, K_COPY, a, NULL, NULL);
            double ms = o->max_eval - current_evals;
            rc = strong_wolfe(&ls, &t, &lossv, gtd, ms);
            if (rc != JOPT_OK)
                return rc;
            w->t = t.v;
            rt_vec m[3] = {RT_PARAMS, V(st, ls.x), V(st, w->d)};
            rt_vk(st->c, K_MOVE_FROM, m, &w->t, NULL);
            st->tmp[T_X] = -1;
            cond = opt_cond(st, o);
            ls_func_evals = ls.evals;
        } else {
            rt_vec a[2] = {RT_PARAMS, V(st, w->d)};
            rt_vk(st->c, K_AXPY, a, &w->t, NULL);
            if (n_iter != o->max_iter) {
                if ((rc = rt_closure_eval(st->c, &lossv)) != JOPT_OK)
                    return rc;
                if ((rc = new_flat_grad(st, &gsum)) != JOPT_OK)
                    return rc;
                cond = opt_cond(st, o);
                ls_func_evals = 1;
            }
        }
        current_evals += ls_func_evals;
        w->func_evals += ls_func_evals;

        if (n_iter == o->max_iter || current_evals >= o->max_eval || cond)
            break;
        double dmax;
        rt_vec ad = V(st, w->d);
        rt_vk(st->c, K_AMAX_SCALED, &ad, &w->t, &dmax);
        if ((float)dmax <= (float)o->tolerance_change)
            break;
        if (fabs(lossv - w->prev_loss) < o->tolerance_change)
            break;
    }
    return JOPT_OK;
}

static void show(lb_state *st)
{
    const lb_vars *v = &st->cur;
    st->shown[0] = (float)v->t;
    st->shown[1] = (float)v->H_diag;
    st->shown[2] = (float)v->prev_loss;
    st->shown[3] = (float)v->func_evals;
    st->shown[4] = (float)v->n_iter;
}

static int lbfgs_step(rt_closure *c, void *state, double *loss)
{
    lb_state *st = state;
    lb_opts o = read_opts(c);
    for (int k = 0; k < T_COUNT; k++)
        st->tmp[k] = -1;
    int rc = vars_copy(&st->work, &st->cur);
    if (rc == JOPT_OK)
        rc = run_step(st, &o, loss);
    for (int k = 0; k < T_COUNT; k++)
        st->tmp[k] = -1;
    if (rc != JOPT_OK)
        return rc; /* cur untouched: the rollback */
    lb_vars old = st->cur;
    st->cur = st->work;
    st->work = old;
    show(st);
    return JOPT_OK;
}

static void *lbfgs_state_new(rt_closure *c)
{
    lb_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->c = c;
    st->cur.d = st->cur.pfg = -1;
    st->cur.H_diag = 1;
    st->work = st->cur;
    for (int k = 0; k < T_COUNT; k++)
        st->tmp[k] = -1;
    return st;
}

static void lbfgs_state_free(void *state)
{
    lb_state *st = state;
    if (!st)
        return;
    for (int i = 0; i < st->nbufs; i++)
        free(st->bufs[i].p);
    free(st->bufs);
    hist_free(&st->cur.h);
    hist_free(&st->work.h);
    free(st->al);
    free(st);
}

static int lbfgs_state_get(void *state, const char *name, const float **data,
                           int *flat)
{
    static const char *const scalars[5] = {"t", "H_diag", "prev_loss",
                                           "func_evals", "n_iter"};
    lb_state *st = state;
    const lb_vars *v = &st->cur;
    *data = NULL;
    if (strcmp(name, "d") == 0 || strcmp(name, "prev_flat_grad") == 0) {
        int i = name[0] == 'd' ? v->d : v->pfg;
        *flat = 1;
        if (i >= 0)
            *data = st->bufs[i].p;
        return 1;
    }
    for (int k = 0; k < 5; k++) {
        if (strcmp(name, scalars[k]) != 0)
            continue;
        *flat = 0;
        /* func_evals and n_iter exist from the first step; the others
         * from the first iteration */
        if (k >= 3 ? v->func_evals > 0 : v->n_iter > 0)
            *data = &st->shown[k];
        return 1;
    }
    return 0;
}

const rt_driver rt_lbfgs_driver = {
    "lbfgs",          lbfgs_kernels,    K_COUNT,         lbfgs_state_new,
    lbfgs_step,       lbfgs_state_free, lbfgs_state_get,
};
