/*
 * sched_lr.c - torch's formulas and stepping: each kind's get_lr() (and
 * closed form, where SequentialLR uses one), LRScheduler.step() and
 * ReduceLROnPlateau.step(metric), in double and in Python's order of
 * operations, so the lrs are torch's bit for bit.  Python raises where C
 * would quietly give inf or NaN (float division by zero, 0.0 to a negative
 * power); so does this file.
 *
 *   jopt_sched_step: step --> get_lr (current group lrs) --> lrs written
 *                    with jopt_option_set, logged so a failure undoes them
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched_int.h"

/* math.pi */
#define PY_PI 3.141592653589793

/* ---- Python's arithmetic where it raises -------------------------------- */

static int is_odd_integer(double x)
{
    return fmod(fabs(x), 2.0) == 1.0;
}

/* float.__pow__ (CPython's float_pow) */
static double py_pow(calc *c, double iv, double iw)
{
    if (iw == 0)
        return 1.0;
    if (isnan(iv))
        return iv;
    if (isnan(iw))
        return iv == 1.0 ? 1.0 : iw;
    if (isinf(iw)) {
        iv = fabs(iv);
        if (iv == 1.0)
            return 1.0;
        return (iw > 0.0) == (iv > 1.0) ? fabs(iw) : 0.0;
    }
    if (isinf(iv)) {
        int odd = is_odd_integer(iw);
        if (iw > 0.0)
            return odd ? iv : fabs(iv);
        return odd ? copysign(0.0, iv) : 0.0;
    }
    if (iv == 0.0) {
        if (iw < 0.0) {
            if (!c->err)
                c->err = "0.0 cannot be raised to a negative power";
            return NAN;
        }
        return is_odd_integer(iw) ? iv : 0.0;
    }
    int negate = 0;
    if (iv < 0.0) {
        if (iw != floor(iw)) {
            if (!c->err)
                c->err = "a negative number to a fractional power is complex";
            return NAN;
        }
        iv = -iv;
        negate = is_odd_integer(iw);
    }
    if (iv == 1.0)
        return negate ? -1.0 : 1.0;
    double ix = pow(iv, iw);
    if (isinf(ix)) {
        if (!c->err)
            c->err = "(34, 'Numerical result out of range')";
        return NAN;
    }
    return negate ? -ix : ix;
}

static double py_cos(calc *c, double x)
{
    if (isinf(x)) {
        if (!c->err)
            c->err = "math domain error";
        return NAN;
    }
    return cos(x);
}

/* ---- writing the optimizer: a log to undo ------------------------------- */

static const char *const param_names[] = {"lr", "betas[0]", "momentum"};

/* "<fn>: <Class>: <message>" */
int rt_sched_fail(txn *t, const jopt_sched *s, int rc, const char *fmt, ...)
{
    char msg[CG_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return rt_fail(t->opt->ctx, rc, "%s: %s: %s", t->fn,
                   rt_sched_class_names[s->kind], msg);
}

double rt_sched_get_param(jopt_optim *opt, size_t g, int which)
{
    double v = NAN;
    jopt_option_get(opt, g, param_names[which], &v); /* checked at creation */
    return v;
}

/* the flag that says whether option `which` of group g is passed per step */
static uint8_t *runtime_flag(jopt_optim *opt, size_t g, int which)
{
    const cg_hyper *h = NULL;
    char err[CG_ERRLEN];
    if (cg_option_offset(opt->spec, param_names[which], &h, err) < 0 || !h)
        return NULL;
    return &opt->groups[g].runtime[h - cg_spec_hyper(opt->spec, 0)];
}

int rt_sched_set_param(txn *t, const jopt_sched *s, size_t g, int which,
                     double v)
{
    double old = rt_sched_get_param(t->opt, g, which);
    if (memcmp(&old, &v, sizeof v) == 0)
        return JOPT_OK;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        txn_entry *e = cg_realloc(t->e, cap * sizeof *e);
        if (!e)
            return rt_sched_fail(t, s, JOPT_ENOMEM, "out of memory");
        t->e = e;
        t->cap = cap;
    }
    uint8_t *flag = runtime_flag(t->opt, g, which);
    uint8_t was = flag ? *flag : 0;
    int rc = jopt_option_set(t->opt, g, param_names[which], v);
    if (rc) {
        char msg[CG_ERRLEN];
        snprintf(msg, sizeof msg, "%s", jopt_errmsg(t->opt->ctx));
        return rt_sched_fail(t, s, rc, "group %zu: setting %s to %.17g: %s", g,
                    param_names[which], v, msg);
    }
    t->e[t->n++] = (txn_entry){g, which, old, was};
    return JOPT_OK;
}

/* puts back every value the transaction changed; keeps the message */
void rt_sched_txn_rollback(txn *t)
{
    char msg[CG_ERRLEN];
    snprintf(msg, sizeof msg, "%s", jopt_errmsg(t->opt->ctx));
    while (t->n > 0) { /* setting a value back cannot fail: it was taken */
        txn_entry *e = &t->e[--t->n];
        jopt_option_set(t->opt, e->group, param_names[e->which], e->old);
        uint8_t *flag = runtime_flag(t->opt, e->group, e->which);
        if (flag)
            *flag = e->was_runtime;
    }
    rt_fail(t->opt->ctx, 0, "%s", msg);
}

void rt_sched_txn_done(txn *t)
{
    cg_free(t->e);
    t->e = NULL;
    t->n = t->cap = 0;
}

void rt_sched_read_lrs(const jopt_sched *s, double *out)
{
    for (size_t g = 0; g < s->ngroups; g++)
        out[g] = rt_sched_get_param(s->opt, g, P_LR);
}

/* ---- get_lr: torch's formulas ------------------------------------------- */

/* the momentum torch writes into group["betas"][0] or group["momentum"] */
int rt_sched_set_momentum(txn *t, const jopt_sched *s, size_t g, double m)
{
    return rt_sched_set_param(t, s, g, s->use_beta1 ? P_BETA1 : P_MOMENTUM, m);
}

static double anneal(const jopt_sched *s, calc *c, double start, double end,
                     double pct)
{
    if (s->anneal_cos) { /* OneCycleLR._annealing_cos */
        double cos_out = py_cos(c, PY_PI * pct) + 1;
        return end + (start - end) / 2.0 * cos_out;
    }
    return (end - start) * pct + start; /* _annealing_linear */
}

static int onecycle_lr(txn *t, jopt_sched *s, calc *c, double *out)
{
    int64_t step_num = s->st.last_epoch;
    if (step_num > s->total_steps)
        return rt_sched_fail(t, s, JOPT_EINVAL, "Tried to step %lld times. The "
                    "specified number of total steps is %lld",
                    (long long)step_num, (long long)s->total_steps);
    for (size_t g = 0; g < s->ngroups; g++) {
        double start_step = 0.0, lr = 0, mom = 0;
        for (int i = 0; i < s->nphases; i++) {
            const phase *ph = &s->phases[i];
            if ((double)step_num <= ph->end_step || i == s->nphases - 1) {
                double pct = py_div(c, (double)step_num - start_step,
                                    ph->end_step - start_step);
                lr = anneal(s, c, key_get(s, g, ph->start_lr),
                            key_get(s, g, ph->end_lr), pct);
                if (s->cycle_momentum)
                    mom = anneal(s, c, key_get(s, g, ph->start_mom),
                                 key_get(s, g, ph->end_mom), pct);
                break;
            }
            start_step = ph->end_step;
        }
        if (c->err)
            return JOPT_OK; /* reported by the caller */
        out[g] = lr;
        int rc;
        if (s->cycle_momentum && (rc = rt_sched_set_momentum(t, s, g, mom)))
            return rc;
    }
    return JOPT_OK;
}

static double cyclic_scale(const jopt_sched *s, calc *c, int64_t cycle)
{
    switch (s->cyc_mode) {
    case 0: return 1.0;
    case 1: return py_div(c, 1, py_pow(c, 2.0, (double)(cycle - 1)));
    default: return py_pow(c, s->gamma, (double)s->st.last_epoch);
    }
}

static int cyclic_lr(txn *t, jopt_sched *s, calc *c, double *out)
{
    int64_t le = s->st.last_epoch;
    double f = floor(1 + (double)le / s->total_size);
    int64_t cycle = (int64_t)f;
    double x = 1.0 + (double)le / s->total_size - (double)cycle;
    double scale_factor = x <= s->step_ratio
                              ? py_div(c, x, s->step_ratio)
                              : py_div(c, x - 1, s->step_ratio - 1);
    double scale = cyclic_scale(s, c, cycle);
    for (size_t g = 0; g < s->ngroups; g++) {
        double base_height = (s->max_lrs[g] - s->base_lrs[g]) * scale_factor;
        out[g] = s->base_lrs[g] + base_height * scale;
    }
    if (c->err || !s->cycle_momentum)
        return JOPT_OK;
    for (size_t g = 0; g < s->ngroups; g++) {
        double base_height = (s->max_moms[g] - s->base_moms[g]) * scale_factor;
        int rc = rt_sched_set_momentum(t, s, g,
                                       s->max_moms[g] - base_height * scale);
        if (rc)
            return rc;
    }
    return JOPT_OK;
}

/* the closed forms, used when SequentialLR calls _update_lr(0) */
static int has_closed_form(sched_kind k)
{
    return k == K_STEP || k == K_MULTISTEP || k == K_CONSTANT ||
           k == K_LINEAR || k == K_EXPONENTIAL || k == K_POLY ||
           k == K_COSINE;
}

static int64_t py_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static void closed_form_lr(const jopt_sched *s, calc *c, double *out)
{
    int64_t le = s->st.last_epoch;
    for (size_t g = 0; g < s->ngroups; g++) {
        double b = s->base_lrs[g];
        switch (s->kind) {
        case K_STEP:
            out[g] = b * py_pow(c, s->gamma,
                                (double)py_floordiv(le, s->step_size));
            break;
        case K_MULTISTEP: {
            int64_t n = 0; /* bisect_right(sorted(milestones), le) */
            for (size_t i = 0; i < s->nmilestones; i++)
                n += s->milestones[i] <= le;
            out[g] = b * py_pow(c, s->gamma, (double)n);
            break;
        }
        case K_CONSTANT:
            out[g] = b * (s->factor + (double)(le >= s->total_iters) *
                                          (1 - s->factor));
            break;
        case K_LINEAR: {
            int64_t m = s->total_iters < le ? s->total_iters : le;
            out[g] = b * (s->start_factor +
                          py_div(c, (s->end_factor - s->start_factor) * (double)m,
                                 (double)s->total_iters));
            break;
        }
        case K_EXPONENTIAL:
            out[g] = b * py_pow(c, s->gamma, (double)le);
            break;
        case K_POLY: {
            int64_t m = s->total_iters < le ? s->total_iters : le;
            out[g] = b * py_pow(c, 1.0 - py_div(c, (double)m,
                                                (double)s->total_iters),
                                s->power);
            break;
        }
        default: /* K_COSINE */
            out[g] = s->eta_min + (b - s->eta_min) *
                                      (1 + py_cos(c, PY_PI * (double)le /
                                                         (double)s->T_max)) /
                                      2;
            break;
        }
    }
}

/* get_lr(): the new lrs from the current ones (lr) and the options */
static int get_lr(txn *t, jopt_sched *s, calc *c, const double *lr, double *out)
{
    int64_t le = s->st.last_epoch;
    size_t n = s->ngroups;
    memcpy(out, lr, n * sizeof *out); /* _param_groups_val_list */
    switch (s->kind) {
    case K_STEP:
        if (le != 0 && le % s->step_size == 0)
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * s->gamma;
        break;
    case K_MULTISTEP: {
        int64_t count = 0; /* Counter(milestones)[le] */
        for (size_t i = 0; i < s->nmilestones; i++)
            count += s->milestones[i] == le;
        if (count)
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * py_pow(c, s->gamma, (double)count);
        break;
    }
    case K_CONSTANT:
        if (le == 0)
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * s->factor;
        else if (le == s->total_iters)
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * py_div(c, 1.0, s->factor);
        break;
    case K_LINEAR:
        if (le == 0)
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * s->start_factor;
        else if (!s->is_initial && le <= s->total_iters) {
            double d = s->end_factor - s->start_factor;
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * (1.0 + py_div(c, d,
                                               (double)s->total_iters *
                                                       s->start_factor +
                                                   (double)(le - 1) * d));
        }
        break;
    case K_EXPONENTIAL:
        if (!s->is_initial)
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * s->gamma;
        break;
    case K_POLY:
        if (!s->is_initial && le <= s->total_iters) {
            double ti = (double)s->total_iters;
            double decay = py_pow(c, py_div(c, 1.0 - py_div(c, (double)le, ti),
                                            1.0 - py_div(c, (double)(le - 1), ti)),
                                  s->power);
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * decay;
        }
        break;
    case K_COSINE: {
        double T = (double)s->T_max, e = s->eta_min;
        if (s->is_initial)
            break;
        if (s->st.step_count == 1 && le > 0) {
            for (size_t g = 0; g < n; g++)
                out[g] = e + (s->base_lrs[g] - e) *
                                 (1 + py_cos(c, (double)le * PY_PI / T)) / 2;
        } else if ((le - 1 - s->T_max) % (2 * s->T_max) == 0) {
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] + (s->base_lrs[g] - e) *
                                     (1 - py_cos(c, PY_PI / T)) / 2;
        } else {
            double q = py_div(c, 1 + py_cos(c, PY_PI * (double)le / T),
                              1 + py_cos(c, PY_PI * (double)(le - 1) / T));
            for (size_t g = 0; g < n; g++)
                out[g] = q * (lr[g] - e) + e;
        }
        break;
    }
    case K_WARM: {
        double e = s->eta_min;
        double cs = py_cos(c, PY_PI * (double)s->st.T_cur / (double)s->st.T_i);
        for (size_t g = 0; g < n; g++)
            out[g] = e + (s->base_lrs[g] - e) * (1 + cs) / 2;
        break;
    }
    case K_ONECYCLE:
        return onecycle_lr(t, s, c, out);
    case K_CYCLIC:
        return cyclic_lr(t, s, c, out);
    case K_LAMBDA:
        for (size_t g = 0; g < n; g++)
            out[g] = s->base_lrs[g] * s->fn(s->user, le, g);
        break;
    case K_MULT:
        if (!s->is_initial)
            for (size_t g = 0; g < n; g++)
                out[g] = lr[g] * s->fn(s->user, le, g);
        break;
    default:
        break;
    }
    return JOPT_OK;
}

/* ---- stepping ----------------------------------------------------------- */

static int sched_step(txn *t, jopt_sched *s);

/* LRScheduler._update_lr: with `epoch` < 0, the next epoch by get_lr();
 * else last_epoch = epoch, by the closed form where there is one */
static int update_lr(txn *t, jopt_sched *s, int64_t epoch)
{
    size_t n = s->ngroups;
    double *lr = cg_malloc((2 * n + 1) * sizeof *lr), *out = lr + n;
    if (!lr)
        return rt_sched_fail(t, s, JOPT_ENOMEM, "out of memory");
    calc c = {NULL};
    int rc;
    rt_sched_read_lrs(s, lr);
    if (epoch < 0) {
        s->st.last_epoch++;
        rc = get_lr(t, s, &c, lr, out);
    } else {
        s->st.last_epoch = epoch;
        if (has_closed_form(s->kind)) {
            closed_form_lr(s, &c, out);
            rc = JOPT_OK;
        } else {
            rc = get_lr(t, s, &c, lr, out);
        }
    }
    if (rc == JOPT_OK && c.err)
        rc = rt_sched_fail(t, s, JOPT_EINVAL, "%s (at epoch %lld)", c.err,
                  (long long)s->st.last_epoch);
    for (size_t g = 0; g < n && rc == JOPT_OK; g++)
        rc = rt_sched_set_param(t, s, g, P_LR, out[g]);
    if (rc == JOPT_OK)
        rt_sched_read_lrs(s, s->last_lr);
    cg_free(lr);
    return rc;
}

/* CosineAnnealingWarmRestarts.step() */
static int warm_step(txn *t, jopt_sched *s)
{
    int64_t epoch;
    if (s->st.last_epoch < 0) {
        epoch = 0; /* step(epoch=0): 0 < T_0 */
        s->st.T_i = s->T_0;
        s->st.T_cur = 0;
    } else {
        epoch = s->st.last_epoch + 1;
        s->st.T_cur++;
        if (s->st.T_cur >= s->st.T_i) {
            s->st.T_cur %= s->st.T_i;
            s->st.T_i *= s->T_mult;
        }
    }
    s->st.last_epoch = epoch - 1; /* update_lr adds the 1 back */
    return update_lr(t, s, -1);
}

static int sequential_step(txn *t, jopt_sched *s)
{
    int64_t le = ++s->st.last_epoch;
    size_t idx = bisect_right(s->milestones, s->nmilestones, le);
    jopt_sched *child = s->children[idx];
    int rc = idx > 0 && s->milestones[idx - 1] == le ? update_lr(t, child, 0)
                                                      : sched_step(t, child);
    if (rc == JOPT_OK)
        memcpy(s->last_lr, child->last_lr, s->ngroups * sizeof *s->last_lr);
    return rc;
}

/* scheduler.step() */
static int sched_step(txn *t, jopt_sched *s)
{
    int rc = JOPT_OK;
    switch (s->kind) {
    case K_WARM:
        return warm_step(t, s);
    case K_SEQUENTIAL:
        return sequential_step(t, s);
    case K_CHAINED:
        for (size_t i = 0; i < s->nchildren && rc == JOPT_OK; i++)
            rc = sched_step(t, s->children[i]);
        if (rc == JOPT_OK) {
            s->st.last_epoch++;
            rt_sched_read_lrs(s, s->last_lr);
        }
        return rc;
    default:
        s->st.step_count++;
        return update_lr(t, s, -1);
    }
}

/* LRScheduler._initial_step() */
int rt_sched_initial_step(txn *t, jopt_sched *s)
{
    s->st.step_count = 0;
    s->is_initial = 1;
    int rc = sched_step(t, s);
    s->is_initial = 0;
    return rc;
}

/* ReduceLROnPlateau.step(metrics) */
static int is_better(const jopt_sched *s, double a, double best)
{
    if (!s->mode_max && !s->thr_abs)
        return a < best * (1.0 - s->threshold);
    if (!s->mode_max)
        return a < best - s->threshold;
    if (!s->thr_abs)
        return a > best * (s->threshold + 1.0);
    return a > best + s->threshold;
}

static int plateau_step(txn *t, jopt_sched *s, double current)
{
    sched_state *st = &s->st;
    st->last_epoch++;
    if (is_better(s, current, st->best)) {
        st->best = current;
        st->num_bad = 0;
    } else {
        st->num_bad++;
    }
    if (st->cooldown_counter > 0) {
        st->cooldown_counter--;
        st->num_bad = 0;
    }
    if (st->num_bad > s->patience) {
        for (size_t g = 0; g < s->ngroups; g++) {
            double old_lr = rt_sched_get_param(s->opt, g, P_LR);
            double a = old_lr * s->factor, b = s->min_lrs[g];
            double new_lr = b > a ? b : a; /* max(a, b) */
            int rc;
            if (old_lr - new_lr > s->eps &&
                (rc = rt_sched_set_param(t, s, g, P_LR, new_lr)))
                return rc;
        }
        st->cooldown_counter = s->cooldown;
        st->num_bad = 0;
    }
    rt_sched_read_lrs(s, s->last_lr);
    return JOPT_OK;
}

/* ---- saving a tree's state, for rollback -------------------------------- */

static size_t tree_size(const jopt_sched *s)
{
    size_t n = 1;
    for (size_t i = 0; i < s->nchildren; i++)
        n += tree_size(s->children[i]);
    return n;
}

static void tree_copy(jopt_sched *s, snapshot *sn, size_t *i, int save)
{
    size_t k = (*i)++;
    double *lr = sn->lr + k * s->ngroups;
    if (save) {
        sn->st[k] = s->st;
        memcpy(lr, s->last_lr, s->ngroups * sizeof *lr);
    } else {
        s->st = sn->st[k];
        memcpy(s->last_lr, lr, s->ngroups * sizeof *lr);
    }
    for (size_t c = 0; c < s->nchildren; c++)
        tree_copy(s->children[c], sn, i, save);
}

int rt_sched_snapshot_take(jopt_sched *const *roots, size_t nroots,
                           snapshot *sn)
{
    size_t n = 0, i = 0;
    for (size_t r = 0; r < nroots; r++)
        n += tree_size(roots[r]);
    size_t ng = roots[0]->ngroups;
    sn->st = cg_malloc((n + 1) * sizeof *sn->st);
    sn->lr = cg_malloc((n * ng + 1) * sizeof *sn->lr);
    sn->n = n;
    if (!sn->st || !sn->lr) {
        cg_free(sn->st);
        cg_free(sn->lr);
        return JOPT_ENOMEM;
    }
    for (size_t r = 0; r < nroots; r++)
        tree_copy(roots[r], sn, &i, 1);
    return JOPT_OK;
}

void rt_sched_snapshot_restore(jopt_sched *const *roots, size_t nroots,
                             snapshot *sn)
{
    size_t i = 0;
    for (size_t r = 0; r < nroots; r++)
        tree_copy(roots[r], sn, &i, 0);
}

void rt_sched_snapshot_free(snapshot *sn)
{
    cg_free(sn->st);
    cg_free(sn->lr);
}

/* ---- stepping, from outside --------------------------------------------- */

/* one step of the tree under `s`; a failure puts everything back */
static int run_step(jopt_sched *s, const char *fn, int with_metric,
                    double metric)
{
    jopt_ctx *ctx = s->opt->ctx;
    if (jopt_group_count(s->opt) != s->ngroups)
        return rt_fail(ctx, JOPT_EINVAL, "%s: the optimizer has %zu groups, "
                       "the scheduler was made for %zu", fn,
                       jopt_group_count(s->opt), s->ngroups);
    snapshot sn;
    if (rt_sched_snapshot_take(&s, 1, &sn))
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    txn t = {s->opt, fn, NULL, 0, 0};
    int rc = with_metric ? plateau_step(&t, s, metric) : sched_step(&t, s);
    if (rc) {
        rt_sched_txn_rollback(&t);
        rt_sched_snapshot_restore(&s, 1, &sn);
    }
    rt_sched_snapshot_free(&sn);
    rt_sched_txn_done(&t);
    return rc;
}

JOPT_API int jopt_sched_step(jopt_sched *s)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_sched_step";
    if (!s)
        return JOPT_EINVAL;
    if (s->kind == K_PLATEAU)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: ReduceLROnPlateau "
                       "steps on a metric: call jopt_sched_step_metric", fn);
    return run_step(s, fn, 0, 0);
}

JOPT_API int jopt_sched_step_metric(jopt_sched *s, double metric)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_sched_step_metric";
    if (!s)
        return JOPT_EINVAL;
    if (s->kind != K_PLATEAU)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: only ReduceLROnPlateau "
                       "takes a metric (this is %s): call jopt_sched_step", fn,
                       rt_sched_class_names[s->kind]);
    return run_step(s, fn, 1, metric);
}

