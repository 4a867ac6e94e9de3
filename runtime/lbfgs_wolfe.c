/*
 * lbfgs_wolfe.c - torch.optim.lbfgs's strong-Wolfe line search
 * (_strong_wolfe, _cubic_interpolate, and the closure's
 * _directional_evaluate), statement for statement, on the scalars of
 * lbfgs.h, so that each step size, bound and comparison has torch's type
 * (a 0-dim float32 tensor or a Python number) and rounds where torch's does.
 *
 * Buffers.  The line search holds x_init (ls->x) and the direction (ls->d),
 * and its gradients in the step's temporaries: g in tmp[T_FG], g_prev in
 * tmp[T_GPREV], each trial's g_new in a fresh tmp[T_GNEW], and the
 * bracket's two gradients in tmp[T_BG0], tmp[T_BG1].  Gradient buffers are
 * never written after their gather, so moving a gradient between roles
 * moves an index, not a vector.
 */
#include "lbfgs.h"

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

/* _directional_evaluate: θ = x + t·d, evaluate; the gradient into a fresh
 * buffer in tmp[T_GNEW] (θ is left at the trial point: the next trial or
 * the final move rewrites it from x) */
static int directional_evaluate(lb_ls_ctx *ls, num t, double *f_new, num *gtd_new)
{
    lb_state *st = ls->st;
    rt_vec a[3] = {RT_PARAMS, V(st, ls->x), V(st, ls->d)};
    double tv = t.v;
    rt_vk(st->c, K_MOVE_FROM, a, &tv, NULL);
    int rc = rt_closure_eval(st->c, f_new);
    if (rc != JOPT_OK)
        return rc;
    ls->evals++;
    if ((rc = rt_lb_acquire_tmp(st, T_GNEW)) != JOPT_OK)
        return rc;
    double gtd = 0;
    rt_lb_gather(st, st->tmp[T_GNEW], ls->d, &gtd);
    *gtd_new = tens(gtd);
    return JOPT_OK;
}

/* _strong_wolfe(obj_func, x, t, d, f, g, gtd, max_ls=max_ls) with g in
 * tmp[T_FG]; returns f_new in *f, t in *t and g_new in tmp[T_FG] */
int rt_lb_strong_wolfe(lb_ls_ctx *ls, num *tio, double *fio, num gtd, double max_ls)
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
