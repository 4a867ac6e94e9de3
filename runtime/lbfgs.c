/*
 * lbfgs.c - L-BFGS as torch.optim.LBFGS (PyTorch 2.13, torch/optim/lbfgs.py);
 * its strong-Wolfe line search (_strong_wolfe, _cubic_interpolate) is in
 * lbfgs_wolfe.c, torch's scalar type `num` in lbfgs.h.
 * The control flow is lbfgs.py's, statement for statement; every vector
 * operation is a kernel of specs/lbfgs.lua run through rt_vk.
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
#include "lbfgs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the kernels of specs/lbfgs.lua, in the order of the K_ enum of lbfgs.h */
static const rt_kernel_sig lbfgs_kernels[K_COUNT] = {
    {"gather", 2, 0, 2, 1u << 1}, {"gather_dot", 3, 0, 3, 1u << 1},
    {"curvature", 5, 1, 2, 0},     {"neg_scale_dot", 2, 1, 1, 0},
    {"neg_dot", 3, 0, 1, 0},       {"axpy_dot", 3, 1, 1, 0},
    {"axpy_scale_dot", 2, 2, 1, 0}, {"move_from", 3, 1, 0, 0},
    {"axpy", 2, 1, 0, 0},          {"copy", 2, 0, 0, 0},
    {"amax", 1, 0, 1, 0},          {"amax_scaled", 1, 1, 1, 0},
};

/* ---- state ----------------------------------------------------------------- */

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

/* a new buffer at the end of the table; -1 when out of memory */
static int buf_append(lb_state *st)
{
    if (st->nbufs == st->capbufs) {
        int cap = st->capbufs ? 2 * st->capbufs : 8;
        lb_buf *nb = cg_realloc(st->bufs, sizeof *nb * (size_t)cap);
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
    return buf_append(st);
}

/* acquires into tmp slot k */
int rt_lb_acquire_tmp(lb_state *st, int k)
{
    st->tmp[k] = -1;
    st->tmp[k] = buf_acquire(st);
    return st->tmp[k] >= 0 ? JOPT_OK : JOPT_ENOMEM;
}

static void hist_free(lb_hist *h)
{
    cg_free(h->y);
    cg_free(h->s);
    cg_free(h->ro);
    memset(h, 0, sizeof *h);
}

/* Room for `cap` pairs in logical order (head 0).  Allocates new arrays so
 * that a failure leaves h as it was. */
static int hist_resize(lb_hist *h, int cap)
{
    int *y = cg_malloc(sizeof *y * (size_t)cap), *s = cg_malloc(sizeof *s * (size_t)cap);
    double *ro = cg_malloc(sizeof *ro * (size_t)cap);
    if (!y || !s || !ro) {
        cg_free(y);
        cg_free(s);
        cg_free(ro);
        return JOPT_ENOMEM;
    }
    for (int i = 0; i < h->count; i++) {
        int pos = (h->head + i) % h->cap;
        y[i] = h->y[pos];
        s[i] = h->s[pos];
        ro[i] = h->ro[pos];
    }
    cg_free(h->y);
    cg_free(h->s);
    cg_free(h->ro);
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
        h.y = cg_malloc(sizeof *h.y * (size_t)src->h.cap);
        h.s = cg_malloc(sizeof *h.s * (size_t)src->h.cap);
        h.ro = cg_malloc(sizeof *h.ro * (size_t)src->h.cap);
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

/* gathers the user's gradients into buffer `buf`; returns sum|g| and, with
 * d >= 0, g.d in *gtd */
double rt_lb_gather(lb_state *st, int buf, int d, double *gtd)
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
    if (isnan(o.max_eval)) /* set to None after construction */
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
    int rc = rt_lb_acquire_tmp(st, T_D);
    if (rc != JOPT_OK)
        return rc;
    int d = st->tmp[T_D], n = h->count;
    if (n == 0) {
        rt_vec a[2] = {V(st, d), V(st, g)};
        rt_vk(st->c, K_NEG_SCALE_DOT, a, &w->H_diag, gtd);
        return JOPT_OK;
    }
    if (st->alcap < n) {
        double *al = cg_realloc(st->al, sizeof *al * (size_t)n);
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
        if ((rc = rt_lb_acquire_tmp(st, T_Y)) != JOPT_OK ||
            (rc = rt_lb_acquire_tmp(st, T_S)) != JOPT_OK)
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
    int rc = rt_lb_acquire_tmp(st, T_FG);
    if (rc == JOPT_OK)
        *gsum = rt_lb_gather(st, st->tmp[T_FG], -1, NULL);
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
            lb_ls_ctx ls = {st, -1, w->d, 0};
            if ((rc = rt_lb_acquire_tmp(st, T_X)) != JOPT_OK)
                return rc;
            ls.x = st->tmp[T_X];
            rt_vec a[2] = {V(st, ls.x), RT_PARAMS};
            rt_vk(st->c, K_COPY, a, NULL, NULL);
            double ms = o->max_eval - current_evals;
            rc = rt_lb_strong_wolfe(&ls, &t, &lossv, gtd, ms);
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
    lb_state *st = cg_calloc(1, sizeof *st);
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
        cg_free(st->bufs[i].p);
    cg_free(st->bufs);
    hist_free(&st->cur.h);
    hist_free(&st->work.h);
    cg_free(st->al);
    cg_free(st);
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

/* ---- checkpoints --------------------------------------------------------------
 *
 *   u64 numel; f64 t, H_diag, prev_loss, func_evals, n_iter
 *   u8 has_d, has_prev_flat_grad; u32 pairs
 *   per pair, oldest first: f64 ro, f32 y[numel] (old_dirs), f32 s[numel] (old_stps)
 *   f32 d[numel] if has_d; f32 prev_flat_grad[numel] if has_prev_flat_grad
 */

static void lbfgs_save(const void *state, rt_out *o)
{
    const lb_state *st = state;
    const lb_vars *v = &st->cur;
    size_t bytes = (size_t)rt_closure_numel(st->c) * sizeof(float);
    rt_put_u64(o, (uint64_t)rt_closure_numel(st->c));
    double scalars[5] = {v->t, v->H_diag, v->prev_loss, v->func_evals, v->n_iter};
    rt_put(o, scalars, sizeof scalars);
    unsigned char has[2] = {v->d >= 0, v->pfg >= 0};
    rt_put(o, has, 2);
    rt_put_u32(o, (uint32_t)v->h.count);
    for (int i = 0; i < v->h.count; i++) {
        int pos = (v->h.head + i) % v->h.cap;
        rt_put_f64(o, v->h.ro[pos]);
        rt_put(o, st->bufs[v->h.y[pos]].p, bytes);
        rt_put(o, st->bufs[v->h.s[pos]].p, bytes);
    }
    if (v->d >= 0)
        rt_put(o, st->bufs[v->d].p, bytes);
    if (v->pfg >= 0)
        rt_put(o, st->bufs[v->pfg].p, bytes);
}

/* what lbfgs_load accepts: t, H_diag and prev_loss finite (a run whose
 * loss or step went to inf or NaN has diverged) */
static int lbfgs_savable(const void *state, char *err)
{
    const lb_vars *v = &((const lb_state *)state)->cur;
    const char *bad = !isfinite(v->t) ? "t" : !isfinite(v->H_diag) ? "H_diag"
                      : !isfinite(v->prev_loss) ? "prev_loss" : NULL;
    if (bad)
        snprintf(err, CG_ERRLEN, "its %s is %g: a checkpoint holds finite "
                 "values only (the run has diverged)", bad,
                 bad[0] == 't' ? v->t : bad[0] == 'H' ? v->H_diag : v->prev_loss);
    return bad ? JOPT_EINVAL : JOPT_OK;
}

/* a new buffer holding the next numel floats of r, or -1 */
static int load_vec(lb_state *st, rt_in *r, size_t bytes)
{
    const void *src = rt_take(r, bytes);
    int b = src ? buf_append(st) : -1;
    if (b >= 0)
        memcpy(st->bufs[b].p, src, bytes);
    return b;
}

static int count_ok(double v)
{
    return v >= 0 && v <= 9007199254740992.0 && v == floor(v);
}

static int lbfgs_load(rt_closure *c, rt_in *r, void **out, char *err)
{
    int64_t n = rt_closure_numel(c);
    size_t bytes = (size_t)n * sizeof(float);
    if (rt_get_u64(r) != (uint64_t)n)
        return snprintf(err, CG_ERRLEN, "it was saved for parameters of another "
                        "size (these have %lld elements)", (long long)n), JOPT_EINVAL;
    double sc[5];
    const void *p = rt_take(r, sizeof sc);
    const unsigned char *has = rt_take(r, 2);
    uint32_t pairs = rt_get_u32(r);
    if (p)
        memcpy(sc, p, sizeof sc);
    /* every pair holds 2·numel floats: a count the bytes left cannot hold
     * is refused before anything is allocated */
    /* after an iteration d and prev_flat_grad exist; with no elements no
     * pair is ever stored (y.s is 0) */
    if (!p || !has || r->bad || has[0] > 1 || has[1] > 1 ||
        !count_ok(sc[3]) || !count_ok(sc[4]) ||
        (sc[4] != 0 && !(has[0] && has[1])) || (pairs && !bytes) ||
        !isfinite(sc[0]) || !isfinite(sc[1]) || !isfinite(sc[2]) ||
        pairs > (r->len - r->pos) / (8 + 2 * bytes))
        return snprintf(err, CG_ERRLEN, "corrupt counters or history length, "
                        "or t, H_diag or prev_loss not a finite number"),
               JOPT_EINVAL;
    lb_state *st = lbfgs_state_new(c);
    if (!st || hist_resize(&st->cur.h, pairs ? (int)pairs : 1) != JOPT_OK)
        goto oom;
    /* room for the loaded vectors and for the current state's buffers,
     * which lbfgs_adopt keeps as spares */
    const lb_state *cur = rt_closure_state(c);
    int need = 2 * (int)pairs + 2 + (cur ? cur->nbufs : 0);
    if (!(st->bufs = cg_malloc(sizeof *st->bufs * (size_t)(need + 1))))
        goto oom;
    st->capbufs = need + 1;
    lb_vars *v = &st->cur;
    v->t = sc[0];
    v->H_diag = sc[1];
    v->prev_loss = sc[2];
    v->func_evals = sc[3];
    v->n_iter = sc[4];
    for (uint32_t i = 0; i < pairs; i++) {
        double ro = rt_get_f64(r);
        int y = load_vec(st, r, bytes), s = y >= 0 ? load_vec(st, r, bytes) : -1;
        if (s < 0)
            goto fail;
        v->h.y[i] = y;
        v->h.s[i] = s;
        v->h.ro[i] = ro;
        v->h.count = (int)i + 1;
    }
    if ((has[0] && (v->d = load_vec(st, r, bytes)) < 0) ||
        (has[1] && (v->pfg = load_vec(st, r, bytes)) < 0))
        goto fail;
    st->work = (lb_vars){.d = -1, .pfg = -1};
    show(st);
    *out = st;
    return JOPT_OK;
fail:
    if (r->bad) {
        lbfgs_state_free(st);
        return snprintf(err, CG_ERRLEN, "truncated"), JOPT_EINVAL;
    }
oom:
    lbfgs_state_free(st);
    return snprintf(err, CG_ERRLEN, "out of memory"), JOPT_ENOMEM;
}

/* a loaded state replaces the current one in place: `cur` keeps its
 * address (jopt_state_get handed out &cur->shown[k]) and its buffers, as
 * spares of the loaded history (handed out as d or prev_flat_grad) */
static void lbfgs_adopt(void *cur_, void *loaded)
{
    lb_state *cur = cur_, *st = loaded;
    for (int i = 0; i < cur->nbufs; i++) /* room reserved by lbfgs_load */
        st->bufs[st->nbufs++] = (lb_buf){cur->bufs[i].p, 0, 0};
    cg_free(cur->bufs);
    hist_free(&cur->cur.h);
    hist_free(&cur->work.h);
    cg_free(cur->al);
    *cur = *st;
    cg_free(st);
}

/* torch's constructor: max_eval=None becomes max_iter * 5 // 4, once */
static void lbfgs_prepare(rt_closure *c)
{
    if (isnan(rt_closure_value(c, "max_eval")))
        rt_closure_set_value(c, "max_eval",
                             floor(rt_closure_value(c, "max_iter") * 5 / 4));
}

const rt_driver rt_lbfgs_driver = {
    .method = "lbfgs",
    .name = "LBFGS",
    .source = "runtime/lbfgs.c",
    .kernels = lbfgs_kernels,
    .nkernels = K_COUNT,
    .state_new = lbfgs_state_new,
    .step = lbfgs_step,
    .state_free = lbfgs_state_free,
    .state_get = lbfgs_state_get,
    .save = lbfgs_save,
    .load = lbfgs_load,
    .savable = lbfgs_savable,
    .adopt = lbfgs_adopt,
    .prepare = lbfgs_prepare,
};
