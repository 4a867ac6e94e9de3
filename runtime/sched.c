/*
 * sched.c - learning-rate schedulers: torch.optim.lr_scheduler in C.
 *
 * Each kind mirrors its torch 2.13 class: the constructor's checks and
 * messages, its initial step, and get_lr()'s recursive ("chainable")
 * formula, in double and in Python's order of operations, so the lrs are
 * torch's bit for bit.  Python raises where C would quietly give inf or NaN
 * (float division by zero, 0.0 to a negative power); so does this file.
 *
 *   jopt_sched_new: options --parse--> checks (torch's order) --> keys
 *                   (initial_lr ...) --> initial step (last_epoch 0)
 *   jopt_sched_step: step --> get_lr (current group lrs) --> lrs written
 *                    with jopt_option_set, logged so a failure undoes them
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

/* math.pi */
#define PY_PI 3.141592653589793

typedef enum sched_kind {
    K_STEP, K_MULTISTEP, K_EXPONENTIAL, K_COSINE, K_WARM, K_LINEAR,
    K_CONSTANT, K_POLY, K_ONECYCLE, K_CYCLIC, K_PLATEAU, K_LAMBDA, K_MULT,
    K_SEQUENTIAL, K_CHAINED
} sched_kind;

static const char *const class_names[] = {
    "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts", "LinearLR", "ConstantLR", "PolynomialLR",
    "OneCycleLR", "CyclicLR", "ReduceLROnPlateau", "LambdaLR",
    "MultiplicativeLR", "SequentialLR", "ChainedScheduler"};

/* ---- the optimizer's scheduler keys ------------------------------------- */

/* torch keeps "initial_lr" (and OneCycleLR's keys) in the optimizer's param
 * groups, where every scheduler of the optimizer sees them.  jopt's
 * optimizer has no room for them, so they live here, one entry per
 * optimizer, alive while a scheduler of it is. */
enum { KEY_INITIAL_LR, KEY_MAX_LR, KEY_MIN_LR, KEY_MAX_MOMENTUM,
       KEY_BASE_MOMENTUM, NKEYS };

typedef struct group_keys {
    jopt_optim *opt;
    size_t ngroups, refs;
    double *v;          /* ngroups x NKEYS */
    unsigned char *has; /* ngroups x NKEYS */
    struct group_keys *next;
} group_keys;

/* the list only: an entry's contents belong to its optimizer's thread */
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static group_keys *keys_list;

/* more groups (jopt_add_param_group): the new ones have no keys yet */
static int keys_grow(group_keys *k, size_t ngroups)
{
    size_t n = ngroups * NKEYS, old = k->ngroups * NKEYS;
    double *v = realloc(k->v, (n + 1) * sizeof *v);
    if (!v)
        return JOPT_ENOMEM;
    k->v = v;
    unsigned char *has = realloc(k->has, n + 1);
    if (!has)
        return JOPT_ENOMEM;
    k->has = has;
    memset(v + old, 0, (n - old) * sizeof *v);
    memset(has + old, 0, n - old);
    k->ngroups = ngroups;
    return JOPT_OK;
}

static group_keys *keys_acquire(jopt_optim *opt, size_t ngroups)
{
    pthread_mutex_lock(&keys_lock);
    group_keys *k = keys_list;
    while (k && k->opt != opt)
        k = k->next;
    if (k) {
        if (k->ngroups < ngroups && keys_grow(k, ngroups))
            k = NULL;
        else
            k->refs++;
    } else if ((k = calloc(1, sizeof *k))) {
        k->v = calloc(ngroups * NKEYS + 1, sizeof *k->v);
        k->has = calloc(ngroups * NKEYS + 1, 1);
        if (!k->v || !k->has) {
            free(k->v);
            free(k->has);
            free(k);
            k = NULL;
        } else {
            *k = (group_keys){opt, ngroups, 1, k->v, k->has, keys_list};
            keys_list = k;
        }
    }
    pthread_mutex_unlock(&keys_lock);
    return k;
}

static void keys_release(group_keys *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&keys_lock);
    if (--k->refs == 0) {
        group_keys **pp = &keys_list;
        while (*pp != k)
            pp = &(*pp)->next;
        *pp = k->next;
        free(k->v);
        free(k->has);
        free(k);
    }
    pthread_mutex_unlock(&keys_lock);
}

static double key_get(const group_keys *k, size_t g, int key)
{
    return k->v[g * NKEYS + (size_t)key];
}

static void key_set(group_keys *k, size_t g, int key, double v)
{
    k->v[g * NKEYS + (size_t)key] = v;
    k->has[g * NKEYS + (size_t)key] = 1;
}

/* ---- the scheduler ------------------------------------------------------ */

typedef struct sched_state { /* what a step changes: saved for rollback */
    int64_t last_epoch, step_count;
    int64_t T_cur, T_i;           /* warm restarts */
    double best;                  /* plateau */
    int64_t num_bad, cooldown_counter;
} sched_state;

typedef struct phase {
    double end_step;
    int start_lr, end_lr, start_mom, end_mom; /* KEY_ */
} phase;

struct jopt_sched {
    jopt_optim *opt;
    sched_kind kind;
    size_t ngroups;
    int is_initial; /* inside _initial_step */
    int owned;      /* a child of a composite */
    sched_state st;
    double *last_lr;  /* ngroups */
    double *base_lrs; /* ngroups */
    group_keys *keys;
    /* options, by kind */
    double gamma, factor, start_factor, end_factor, eta_min, power;
    int64_t step_size, T_max, T_0, T_mult, total_iters;
    int64_t *milestones; /* multistep as given; sequential's */
    size_t nmilestones;
    /* onecycle */
    int64_t total_steps;
    double div_factor, final_div_factor;
    phase phases[3];
    int nphases, anneal_cos;
    /* onecycle and cyclic */
    int cycle_momentum, use_beta1;
    double *max_lrs, *base_moms, *max_moms; /* cyclic's, ngroups each */
    double total_size, step_ratio;
    int cyc_mode; /* 0 triangular, 1 triangular2, 2 exp_range */
    /* plateau */
    int mode_max, thr_abs;
    double threshold, eps, *min_lrs;
    int64_t patience, cooldown;
    /* lambda */
    jopt_lr_lambda fn;
    void *user;
    /* composites */
    jopt_sched **children;
    size_t nchildren;
};

/* ---- Python's arithmetic where it raises -------------------------------- */

typedef struct calc {
    const char *err; /* the first exception's message, or NULL */
} calc;

static double py_div(calc *c, double a, double b)
{
    if (b == 0) {
        if (!c->err)
            c->err = "float division by zero";
        return NAN;
    }
    return a / b;
}

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

/* bisect.bisect_right, on the list as given (torch does not sort it) */
static size_t bisect_right(const int64_t *a, size_t n, int64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (x < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---- writing the optimizer: a log to undo ------------------------------- */

enum { P_LR, P_BETA1, P_MOMENTUM };
static const char *const param_names[] = {"lr", "betas[0]", "momentum"};

typedef struct txn_entry {
    size_t group;
    int which;
    double old;
} txn_entry;

typedef struct txn {
    jopt_optim *opt;
    const char *fn; /* the public call, for messages */
    txn_entry *e;
    size_t n, cap;
} txn;

static int fail(txn *t, const jopt_sched *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "<fn>: <Class>: <message>" */
static int fail(txn *t, const jopt_sched *s, int rc, const char *fmt, ...)
{
    char msg[CG_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return rt_fail(t->opt->ctx, rc, "%s: %s: %s", t->fn,
                   class_names[s->kind], msg);
}

static double get_param(jopt_optim *opt, size_t g, int which)
{
    double v = NAN;
    jopt_option_get(opt, g, param_names[which], &v); /* checked at creation */
    return v;
}

static int set_param(txn *t, const jopt_sched *s, size_t g, int which,
                     double v)
{
    double old = get_param(t->opt, g, which);
    if (memcmp(&old, &v, sizeof v) == 0)
        return JOPT_OK;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        txn_entry *e = realloc(t->e, cap * sizeof *e);
        if (!e)
            return fail(t, s, JOPT_ENOMEM, "out of memory");
        t->e = e;
        t->cap = cap;
    }
    int rc = jopt_option_set(t->opt, g, param_names[which], v);
    if (rc) {
        char msg[CG_ERRLEN];
        snprintf(msg, sizeof msg, "%s", jopt_errmsg(t->opt->ctx));
        return fail(t, s, rc, "group %zu: setting %s to %.17g: %s", g,
                    param_names[which], v, msg);
    }
    t->e[t->n++] = (txn_entry){g, which, old};
    return JOPT_OK;
}

/* puts back every value the transaction changed; keeps the message */
static void txn_rollback(txn *t)
{
    char msg[CG_ERRLEN];
    snprintf(msg, sizeof msg, "%s", jopt_errmsg(t->opt->ctx));
    while (t->n > 0) {
        txn_entry *e = &t->e[--t->n];
        jopt_option_set(t->opt, e->group, param_names[e->which], e->old);
    }
    rt_fail(t->opt->ctx, 0, "%s", msg);
}

static void txn_done(txn *t)
{
    free(t->e);
    t->e = NULL;
    t->n = t->cap = 0;
}

static void read_lrs(const jopt_sched *s, double *out)
{
    for (size_t g = 0; g < s->ngroups; g++)
        out[g] = get_param(s->opt, g, P_LR);
}

/* ---- get_lr: torch's formulas ------------------------------------------- */

/* the momentum torch writes into group["betas"][0] or group["momentum"] */
static int set_momentum(txn *t, const jopt_sched *s, size_t g, double m)
{
    return set_param(t, s, g, s->use_beta1 ? P_BETA1 : P_MOMENTUM, m);
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
        return fail(t, s, JOPT_EINVAL, "Tried to step %lld times. The "
                    "specified number of total steps is %lld",
                    (long long)step_num, (long long)s->total_steps);
    for (size_t g = 0; g < s->ngroups; g++) {
        double start_step = 0.0, lr = 0, mom = 0;
        for (int i = 0; i < s->nphases; i++) {
            const phase *ph = &s->phases[i];
            if ((double)step_num <= ph->end_step || i == s->nphases - 1) {
                double pct = py_div(c, (double)step_num - start_step,
                                    ph->end_step - start_step);
                lr = anneal(s, c, key_get(s->keys, g, ph->start_lr),
                            key_get(s->keys, g, ph->end_lr), pct);
                if (s->cycle_momentum)
                    mom = anneal(s, c, key_get(s->keys, g, ph->start_mom),
                                 key_get(s->keys, g, ph->end_mom), pct);
                break;
            }
            start_step = ph->end_step;
        }
        if (c->err)
            return JOPT_OK; /* reported by the caller */
        out[g] = lr;
        int rc;
        if (s->cycle_momentum && (rc = set_momentum(t, s, g, mom)))
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
        int rc = set_momentum(t, s, g, s->max_moms[g] - base_height * scale);
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
    double *lr = malloc((2 * n + 1) * sizeof *lr), *out = lr + n;
    if (!lr)
        return fail(t, s, JOPT_ENOMEM, "out of memory");
    calc c = {NULL};
    int rc;
    read_lrs(s, lr);
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
        rc = fail(t, s, JOPT_EINVAL, "%s (at epoch %lld)", c.err,
                  (long long)s->st.last_epoch);
    for (size_t g = 0; g < n && rc == JOPT_OK; g++)
        rc = set_param(t, s, g, P_LR, out[g]);
    if (rc == JOPT_OK)
        read_lrs(s, s->last_lr);
    free(lr);
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
            read_lrs(s, s->last_lr);
        }
        return rc;
    default:
        s->st.step_count++;
        return update_lr(t, s, -1);
    }
}

/* LRScheduler._initial_step() */
static int initial_step(txn *t, jopt_sched *s)
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
            double old_lr = get_param(s->opt, g, P_LR);
            double a = old_lr * s->factor, b = s->min_lrs[g];
            double new_lr = b > a ? b : a; /* max(a, b) */
            int rc;
            if (old_lr - new_lr > s->eps &&
                (rc = set_param(t, s, g, P_LR, new_lr)))
                return rc;
        }
        st->cooldown_counter = s->cooldown;
        st->num_bad = 0;
    }
    read_lrs(s, s->last_lr);
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

typedef struct snapshot {
    sched_state *st;
    double *lr;
    size_t n;
} snapshot;

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

static int snapshot_take(jopt_sched *const *roots, size_t nroots, snapshot *sn)
{
    size_t n = 0, i = 0;
    for (size_t r = 0; r < nroots; r++)
        n += tree_size(roots[r]);
    size_t ng = roots[0]->ngroups;
    sn->st = malloc((n + 1) * sizeof *sn->st);
    sn->lr = malloc((n * ng + 1) * sizeof *sn->lr);
    sn->n = n;
    if (!sn->st || !sn->lr) {
        free(sn->st);
        free(sn->lr);
        return JOPT_ENOMEM;
    }
    for (size_t r = 0; r < nroots; r++)
        tree_copy(roots[r], sn, &i, 1);
    return JOPT_OK;
}

static void snapshot_restore(jopt_sched *const *roots, size_t nroots,
                             snapshot *sn)
{
    size_t i = 0;
    for (size_t r = 0; r < nroots; r++)
        tree_copy(roots[r], sn, &i, 0);
}

static void snapshot_free(snapshot *sn)
{
    free(sn->st);
    free(sn->lr);
}

/* ---- the options string ------------------------------------------------- */

typedef enum otype { O_INT, O_NUM, O_BOOL, O_WORD, O_NUMS, O_INTS } otype;

typedef struct optdef {
    const char *name;
    otype type;
    const char *dflt; /* NULL: required; "None": may be None */
} optdef;

#define MAX_OPTS 13
#define OPT_TEXT 512

typedef struct kinddef {
    const char *name;
    sched_kind kind;
    optdef opts[MAX_OPTS];
} kinddef;

static const kinddef kinds[] = {
    {"step", K_STEP, {{"step_size", O_INT, NULL}, {"gamma", O_NUM, "0.1"}}},
    {"multistep", K_MULTISTEP,
     {{"milestones", O_INTS, NULL}, {"gamma", O_NUM, "0.1"}}},
    {"exponential", K_EXPONENTIAL, {{"gamma", O_NUM, NULL}}},
    {"cosine", K_COSINE, {{"T_max", O_INT, NULL}, {"eta_min", O_NUM, "0.0"}}},
    {"cosine_warm_restarts", K_WARM,
     {{"T_0", O_INT, NULL}, {"T_mult", O_INT, "1"}, {"eta_min", O_NUM, "0.0"}}},
    {"linear", K_LINEAR,
     {{"start_factor", O_NUM, "0.3333333333333333"},
      {"end_factor", O_NUM, "1.0"},
      {"total_iters", O_INT, "5"}}},
    {"constant", K_CONSTANT,
     {{"factor", O_NUM, "0.3333333333333333"}, {"total_iters", O_INT, "5"}}},
    {"polynomial", K_POLY,
     {{"total_iters", O_INT, "5"}, {"power", O_NUM, "1.0"}}},
    {"onecycle", K_ONECYCLE,
     {{"max_lr", O_NUMS, NULL},
      {"total_steps", O_INT, "None"},
      {"epochs", O_INT, "None"},
      {"steps_per_epoch", O_INT, "None"},
      {"pct_start", O_NUM, "0.3"},
      {"anneal_strategy", O_WORD, "cos"},
      {"cycle_momentum", O_BOOL, "true"},
      {"base_momentum", O_NUMS, "0.85"},
      {"max_momentum", O_NUMS, "0.95"},
      {"div_factor", O_NUM, "25.0"},
      {"final_div_factor", O_NUM, "1e4"},
      {"three_phase", O_BOOL, "false"}}},
    {"cyclic", K_CYCLIC,
     {{"base_lr", O_NUMS, NULL},
      {"max_lr", O_NUMS, NULL},
      {"step_size_up", O_INT, "2000"},
      {"step_size_down", O_INT, "None"},
      {"mode", O_WORD, "triangular"},
      {"gamma", O_NUM, "1.0"},
      {"scale_mode", O_WORD, "cycle"},
      {"cycle_momentum", O_BOOL, "true"},
      {"base_momentum", O_NUMS, "0.8"},
      {"max_momentum", O_NUMS, "0.9"}}},
    {"plateau", K_PLATEAU,
     {{"mode", O_WORD, "min"},
      {"factor", O_NUM, "0.1"},
      {"patience", O_INT, "10"},
      {"threshold", O_NUM, "1e-4"},
      {"threshold_mode", O_WORD, "rel"},
      {"cooldown", O_INT, "0"},
      {"min_lr", O_NUMS, "0"},
      {"eps", O_NUM, "1e-8"}}},
};

/* the options of one constructor call, as text */
typedef struct opts {
    const kinddef *kd;
    char text[MAX_OPTS][OPT_TEXT];
    unsigned char given[MAX_OPTS];
    txn *t;
    jopt_sched *s;
} opts;

static int nopts(const kinddef *kd)
{
    int n = 0;
    while (n < MAX_OPTS && kd->opts[n].name)
        n++;
    return n;
}

static int opts_parse(opts *o, const char *text)
{
    const kinddef *kd = o->kd;
    int n = nopts(kd);
    for (int i = 0; i < n; i++)
        if (kd->opts[i].dflt)
            snprintf(o->text[i], OPT_TEXT, "%s", kd->opts[i].dflt);
    for (const char *c = text ? text : "";;) {
        while (isspace((unsigned char)*c))
            c++;
        if (!*c)
            break;
        char name[64], val[OPT_TEXT];
        size_t k = 0;
        int too_long = 0;
        for (; *c && *c != '=' && !isspace((unsigned char)*c); c++)
            if (k + 1 < sizeof name)
                name[k++] = *c;
            else
                too_long = 1;
        name[k] = 0;
        if (too_long)
            return fail(o->t, o->s, JOPT_EINVAL, "option name '%s...' is too "
                        "long", name);
        if (*c != '=')
            return fail(o->t, o->s, JOPT_EINVAL, "option '%s' has no value "
                        "(write %s=VALUE)", name, name);
        c++;
        /* a value: up to white space, or a list in ( ) or [ ] */
        char close = *c == '(' ? ')' : *c == '[' ? ']' : 0;
        if (close)
            c++;
        k = 0;
        for (; *c && (close ? *c != close : !isspace((unsigned char)*c)); c++)
            if (!isspace((unsigned char)*c)) {
                if (k + 1 < sizeof val)
                    val[k++] = *c;
                else
                    too_long = 1;
            }
        val[k] = 0;
        if (close && *c++ != close)
            return fail(o->t, o->s, JOPT_EINVAL, "option '%s': missing '%c'",
                        name, close);
        if (too_long)
            return fail(o->t, o->s, JOPT_EINVAL, "option '%s': value is too "
                        "long", name);
        int i = 0;
        while (i < n && strcmp(kd->opts[i].name, name) != 0)
            i++;
        if (i == n) {
            char known[512] = "";
            for (int j = 0; j < n; j++) {
                size_t l = strlen(known);
                snprintf(known + l, sizeof known - l, "%s%s", j ? ", " : "",
                         kd->opts[j].name);
            }
            return fail(o->t, o->s, JOPT_EINVAL, "unknown option '%s' (known: "
                        "%s)", name, known);
        }
        if (o->given[i]++)
            return fail(o->t, o->s, JOPT_EINVAL, "option '%s' given twice",
                        name);
        memcpy(o->text[i], val, k + 1);
    }
    for (int i = 0; i < n; i++)
        if (!kd->opts[i].dflt && !o->given[i])
            return fail(o->t, o->s, JOPT_EINVAL, "option '%s' is required",
                        kd->opts[i].name);
    return JOPT_OK;
}

static int opt_index(const opts *o, const char *name)
{
    int i = 0;
    while (strcmp(o->kd->opts[i].name, name) != 0)
        i++;
    return i;
}

static const char *opt_text(const opts *o, const char *name)
{
    return o->text[opt_index(o, name)];
}

static int opt_is_none(const opts *o, const char *name)
{
    return strcmp(opt_text(o, name), "None") == 0;
}

/* integers are kept within 2^53, where doubles hold them exactly and
 * torch's integer arithmetic (2 * T_max, le - 1 - T_max) cannot overflow */
#define MAX_INT_OPTION 9007199254740992LL

static int read_int(const char *s, int64_t *v)
{
    char *end;
    if (!*s || isspace((unsigned char)*s))
        return 0;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    *v = x;
    return *end == 0 && errno == 0 && x <= MAX_INT_OPTION &&
           x >= -MAX_INT_OPTION;
}

static int read_num(const char *s, double *v)
{
    char *end;
    if (!*s || isspace((unsigned char)*s))
        return 0;
    *v = strtod(s, &end);
    return *end == 0;
}

static int get_int(opts *o, const char *name, int64_t *v)
{
    if (read_int(opt_text(o, name), v))
        return JOPT_OK;
    return fail(o->t, o->s, JOPT_EINVAL, "option '%s': cannot read '%s' as an "
                "integer (of at most 2^53 in magnitude)", name,
                opt_text(o, name));
}

static int get_num(opts *o, const char *name, double *v)
{
    if (read_num(opt_text(o, name), v))
        return JOPT_OK;
    return fail(o->t, o->s, JOPT_EINVAL, "option '%s': cannot read '%s' as a "
                "number", name, opt_text(o, name));
}

static int get_bool(opts *o, const char *name, int *v)
{
    const char *s = opt_text(o, name);
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "1"))
        *v = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "0"))
        *v = 0;
    else
        return fail(o->t, o->s, JOPT_EINVAL, "option '%s': cannot read '%s' "
                    "as a boolean (true or false)", name, s);
    return JOPT_OK;
}

/* a comma list; *n gets its length (0 for ""); `out` holds `cap` */
static int get_list(opts *o, const char *name, int ints, void *out,
                    size_t cap, size_t *n)
{
    char buf[OPT_TEXT];
    snprintf(buf, sizeof buf, "%s", opt_text(o, name));
    *n = 0;
    if (!buf[0])
        return JOPT_OK;
    for (char *item = buf, *next; item; item = next) {
        next = strchr(item, ',');
        if (next)
            *next++ = 0;
        if (!*item && !next && *n > 0)
            break; /* a trailing comma, "30," as in Python */
        int ok;
        if (*n < cap)
            ok = ints ? read_int(item, (int64_t *)out + *n)
                      : read_num(item, (double *)out + *n);
        else {
            int64_t i;
            double d;
            ok = ints ? read_int(item, &i) : read_num(item, &d);
        }
        if (!ok)
            return fail(o->t, o->s, JOPT_EINVAL, "option '%s': cannot read "
                        "'%s' as %s", name, item,
                        ints ? "an integer" : "a number");
        (*n)++;
    }
    return JOPT_OK;
}

/* torch's _format_param: one value for every group, or a list of one per
 * group ("0.1," is a list of one, as [0.1] in Python) */
static int get_per_group(opts *o, const char *name, double *out)
{
    size_t ng = o->s->ngroups, n;
    int rc = get_list(o, name, 0, out, ng, &n);
    if (rc)
        return rc;
    if (n == 1 && !strchr(opt_text(o, name), ','))
        for (size_t g = 1; g < ng; g++)
            out[g] = out[0];
    else if (n != ng)
        return fail(o->t, o->s, JOPT_EINVAL, "%s must have the same length as "
                    "optimizer.param_groups. %s has %zu values, param_groups "
                    "has %zu.", name, name, n, ng);
    return JOPT_OK;
}

/* ---- construction ------------------------------------------------------- */

static void sched_free(jopt_sched *s)
{
    for (size_t i = 0; i < s->nchildren; i++)
        sched_free(s->children[i]);
    free(s->children);
    keys_release(s->keys);
    free(s->last_lr);
    free(s->base_lrs);
    free(s->milestones);
    free(s->max_lrs);
    free(s->base_moms);
    free(s->max_moms);
    free(s->min_lrs);
    free(s);
}

JOPT_API void jopt_sched_free(jopt_sched *s)
{
    if (s)
        sched_free(s);
}

static jopt_sched *sched_alloc(jopt_optim *opt, sched_kind k)
{
    jopt_sched *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    size_t n = jopt_group_count(opt);
    s->opt = opt;
    s->kind = k;
    s->ngroups = n;
    s->st.last_epoch = -1;
    s->last_lr = calloc(n + 1, sizeof(double));
    s->base_lrs = calloc(n + 1, sizeof(double));
    s->keys = keys_acquire(opt, n);
    if (!s->last_lr || !s->base_lrs || !s->keys) {
        sched_free(s);
        return NULL;
    }
    return s;
}

/* cycle_momentum: which of the optimizer's options torch would cycle */
static int momentum_check(txn *t, jopt_sched *s)
{
    if (cg_spec_find_hyper(s->opt->spec, "betas"))
        s->use_beta1 = 1;
    else if (!cg_spec_find_hyper(s->opt->spec, "momentum"))
        return fail(t, s, JOPT_EINVAL, "optimizer must support momentum or "
                    "beta1 with `cycle_momentum` option enabled");
    return JOPT_OK;
}

/* an integer option torch checks with "Expected positive integer NAME, but
 * got VALUE" */
static int get_positive(opts *o, const char *name, int64_t *v)
{
    if (read_int(opt_text(o, name), v) && *v > 0)
        return JOPT_OK;
    return fail(o->t, o->s, JOPT_EINVAL, "Expected positive integer %s, but "
                "got %s", name, opt_text(o, name));
}

static int parse_onecycle(opts *o, jopt_sched *s, double *max_lrs)
{
    txn *t = o->t;
    int rc;
    int64_t epochs, spe;
    if (!opt_is_none(o, "total_steps")) {
        if ((rc = get_positive(o, "total_steps", &s->total_steps)))
            return rc;
    } else if (!opt_is_none(o, "epochs") && !opt_is_none(o, "steps_per_epoch")) {
        if ((rc = get_positive(o, "epochs", &epochs)) ||
            (rc = get_positive(o, "steps_per_epoch", &spe)))
            return rc;
        if (epochs > MAX_INT_OPTION / spe)
            return fail(t, s, JOPT_EINVAL, "epochs * steps_per_epoch is too "
                        "large");
        s->total_steps = epochs * spe;
    } else {
        return fail(t, s, JOPT_EINVAL, "You must define either total_steps OR "
                    "(epochs AND steps_per_epoch)");
    }
    double pct;
    int three;
    if ((rc = get_num(o, "pct_start", &pct)) ||
        (rc = get_bool(o, "three_phase", &three)) ||
        (rc = get_num(o, "div_factor", &s->div_factor)) ||
        (rc = get_num(o, "final_div_factor", &s->final_div_factor)) ||
        (rc = get_bool(o, "cycle_momentum", &s->cycle_momentum)))
        return rc;
    double total = (double)s->total_steps;
    if (three) {
        s->phases[0] = (phase){pct * total - 1, KEY_INITIAL_LR, KEY_MAX_LR,
                               KEY_MAX_MOMENTUM, KEY_BASE_MOMENTUM};
        s->phases[1] = (phase){2 * pct * total - 2, KEY_MAX_LR, KEY_INITIAL_LR,
                               KEY_BASE_MOMENTUM, KEY_MAX_MOMENTUM};
        s->phases[2] = (phase){total - 1, KEY_INITIAL_LR, KEY_MIN_LR,
                               KEY_MAX_MOMENTUM, KEY_MAX_MOMENTUM};
        s->nphases = 3;
    } else {
        s->phases[0] = (phase){pct * total - 1, KEY_INITIAL_LR, KEY_MAX_LR,
                               KEY_MAX_MOMENTUM, KEY_BASE_MOMENTUM};
        s->phases[1] = (phase){total - 1, KEY_MAX_LR, KEY_MIN_LR,
                               KEY_BASE_MOMENTUM, KEY_MAX_MOMENTUM};
        s->nphases = 2;
    }
    if (!(pct >= 0 && pct <= 1))
        return fail(t, s, JOPT_EINVAL, "Expected float between 0 and 1 "
                    "pct_start, but got %s", opt_text(o, "pct_start"));
    const char *as = opt_text(o, "anneal_strategy");
    if (strcmp(as, "cos") != 0 && strcmp(as, "linear") != 0)
        return fail(t, s, JOPT_EINVAL, "anneal_strategy must be one of 'cos' "
                    "or 'linear', instead got %s", as);
    s->anneal_cos = strcmp(as, "cos") == 0;
    if ((rc = get_per_group(o, "max_lr", max_lrs)))
        return rc;
    calc c = {NULL}; /* the divisions torch does next, in Python */
    for (size_t g = 0; g < s->ngroups; g++)
        py_div(&c, py_div(&c, max_lrs[g], s->div_factor), s->final_div_factor);
    if (c.err)
        return fail(t, s, JOPT_EINVAL, "%s (div_factor is %s, final_div_factor "
                    "is %s)", c.err, opt_text(o, "div_factor"),
                    opt_text(o, "final_div_factor"));
    if (s->cycle_momentum) {
        if ((rc = momentum_check(t, s)) ||
            (rc = get_per_group(o, "max_momentum", s->max_moms)) ||
            (rc = get_per_group(o, "base_momentum", s->base_moms)))
            return rc;
    }
    return JOPT_OK;
}

static int parse_cyclic(opts *o, jopt_sched *s, double *base_lr)
{
    txn *t = o->t;
    int rc;
    int64_t up, down;
    if ((rc = get_per_group(o, "base_lr", base_lr)) ||
        (rc = get_per_group(o, "max_lr", s->max_lrs)) ||
        (rc = get_int(o, "step_size_up", &up)))
        return rc;
    if (opt_is_none(o, "step_size_down"))
        down = up;
    else if ((rc = get_int(o, "step_size_down", &down)))
        return rc;
    s->total_size = (double)up + (double)down;
    calc c = {NULL};
    s->step_ratio = py_div(&c, (double)up, s->total_size);
    if (c.err)
        return fail(t, s, JOPT_EINVAL, "%s (step_size_up + step_size_down is "
                    "0)", c.err);
    const char *mode = opt_text(o, "mode");
    if (!strcmp(mode, "triangular"))
        s->cyc_mode = 0;
    else if (!strcmp(mode, "triangular2"))
        s->cyc_mode = 1;
    else if (!strcmp(mode, "exp_range"))
        s->cyc_mode = 2;
    else
        return fail(t, s, JOPT_EINVAL, "mode is invalid and scale_fn is None");
    const char *sm = opt_text(o, "scale_mode");
    if (strcmp(sm, "cycle") != 0 && strcmp(sm, "iterations") != 0)
        return fail(t, s, JOPT_EINVAL, "scale_mode must be 'cycle' or "
                    "'iterations', not '%s'", sm);
    if ((rc = get_num(o, "gamma", &s->gamma)) ||
        (rc = get_bool(o, "cycle_momentum", &s->cycle_momentum)))
        return rc;
    if (s->cycle_momentum &&
        ((rc = momentum_check(t, s)) ||
         (rc = get_per_group(o, "base_momentum", s->base_moms)) ||
         (rc = get_per_group(o, "max_momentum", s->max_moms))))
        return rc;
    return JOPT_OK;
}

static int parse_plateau(opts *o, jopt_sched *s)
{
    txn *t = o->t;
    int rc;
    if ((rc = get_num(o, "factor", &s->factor)))
        return rc;
    if (!(s->factor < 1.0))
        return fail(t, s, JOPT_EINVAL, "Factor should be < 1.0.");
    size_t n;
    if ((rc = get_list(o, "min_lr", 0, s->min_lrs, s->ngroups, &n)))
        return rc;
    if (n == 1 && !strchr(opt_text(o, "min_lr"), ','))
        for (size_t g = 1; g < s->ngroups; g++)
            s->min_lrs[g] = s->min_lrs[0];
    else if (n != s->ngroups)
        return fail(t, s, JOPT_EINVAL, "expected %zu min_lrs, got %zu",
                    s->ngroups, n);
    if ((rc = get_int(o, "patience", &s->patience)) ||
        (rc = get_int(o, "cooldown", &s->cooldown)) ||
        (rc = get_num(o, "eps", &s->eps)) ||
        (rc = get_num(o, "threshold", &s->threshold)))
        return rc;
    const char *mode = opt_text(o, "mode"), *tm = opt_text(o, "threshold_mode");
    if (strcmp(mode, "min") != 0 && strcmp(mode, "max") != 0)
        return fail(t, s, JOPT_EINVAL, "mode %s is unknown!", mode);
    if (strcmp(tm, "rel") != 0 && strcmp(tm, "abs") != 0)
        return fail(t, s, JOPT_EINVAL, "threshold mode %s is unknown!", tm);
    s->mode_max = !strcmp(mode, "max");
    s->thr_abs = !strcmp(tm, "abs");
    return JOPT_OK;
}

/* reads and checks the options, in the order torch's constructor does;
 * `pre` gets the per-group values the constructor writes before
 * LRScheduler.__init__ (cyclic's base_lr, onecycle's max_lr) */
static int parse_kind(opts *o, jopt_sched *s, double *pre)
{
    txn *t = o->t;
    int rc = JOPT_OK;
    switch (s->kind) {
    case K_STEP:
        if ((rc = get_int(o, "step_size", &s->step_size)) ||
            (rc = get_num(o, "gamma", &s->gamma)))
            return rc;
        if (s->step_size == 0) /* torch: ZeroDivisionError at every step */
            return fail(t, s, JOPT_EINVAL, "step_size must not be 0");
        return JOPT_OK;
    case K_MULTISTEP: {
        size_t n;
        if ((rc = get_list(o, "milestones", 1, NULL, 0, &n)))
            return rc;
        if (!(s->milestones = malloc((n + 1) * sizeof *s->milestones)))
            return fail(t, s, JOPT_ENOMEM, "out of memory");
        s->nmilestones = n;
        if ((rc = get_list(o, "milestones", 1, s->milestones, n, &n)))
            return rc;
        return get_num(o, "gamma", &s->gamma);
    }
    case K_EXPONENTIAL:
        return get_num(o, "gamma", &s->gamma);
    case K_COSINE:
        if ((rc = get_int(o, "T_max", &s->T_max)) ||
            (rc = get_num(o, "eta_min", &s->eta_min)))
            return rc;
        if (s->T_max == 0) /* torch: ZeroDivisionError at every step */
            return fail(t, s, JOPT_EINVAL, "T_max must not be 0");
        return JOPT_OK;
    case K_WARM:
        if ((rc = get_positive(o, "T_0", &s->T_0)))
            return rc;
        if (!read_int(opt_text(o, "T_mult"), &s->T_mult) || s->T_mult < 1)
            return fail(t, s, JOPT_EINVAL, "Expected integer T_mult >= 1, but "
                        "got %s", opt_text(o, "T_mult"));
        return get_num(o, "eta_min", &s->eta_min);
    case K_LINEAR:
        if ((rc = get_num(o, "start_factor", &s->start_factor)) ||
            (rc = get_num(o, "end_factor", &s->end_factor)) ||
            (rc = get_int(o, "total_iters", &s->total_iters)))
            return rc;
        if (s->start_factor > 1.0 || s->start_factor <= 0)
            return fail(t, s, JOPT_EINVAL, "Starting multiplicative factor "
                        "expected to be greater than 0 and less or equal to "
                        "1.");
        if (s->end_factor > 1.0 || s->end_factor < 0)
            return fail(t, s, JOPT_EINVAL, "Ending multiplicative factor "
                        "expected to be between 0 and 1.");
        return JOPT_OK;
    case K_CONSTANT:
        if ((rc = get_num(o, "factor", &s->factor)) ||
            (rc = get_int(o, "total_iters", &s->total_iters)))
            return rc;
        if (s->factor > 1.0 || s->factor < 0)
            return fail(t, s, JOPT_EINVAL, "Constant multiplicative factor "
                        "expected to be between 0 and 1.");
        return JOPT_OK;
    case K_POLY:
        if ((rc = get_int(o, "total_iters", &s->total_iters)) ||
            (rc = get_num(o, "power", &s->power)))
            return rc;
        return JOPT_OK;
    case K_ONECYCLE:
        return parse_onecycle(o, s, pre);
    case K_CYCLIC:
        return parse_cyclic(o, s, pre);
    default: /* K_PLATEAU */
        return parse_plateau(o, s);
    }
}

static int alloc_per_group(jopt_sched *s)
{
    size_t n = s->ngroups + 1;
    if (s->kind == K_CYCLIC && !(s->max_lrs = calloc(n, sizeof(double))))
        return JOPT_ENOMEM;
    if ((s->kind == K_CYCLIC || s->kind == K_ONECYCLE) &&
        (!(s->base_moms = calloc(n, sizeof(double))) ||
         !(s->max_moms = calloc(n, sizeof(double)))))
        return JOPT_ENOMEM;
    if (s->kind == K_PLATEAU && !(s->min_lrs = calloc(n, sizeof(double))))
        return JOPT_ENOMEM;
    return JOPT_OK;
}

/* LRScheduler.__init__ (last_epoch=-1): initial_lr, base_lrs, initial step */
static int lr_scheduler_init(txn *t, jopt_sched *s)
{
    for (size_t g = 0; g < s->ngroups; g++) {
        if (!s->keys->has[g * NKEYS + KEY_INITIAL_LR])
            key_set(s->keys, g, KEY_INITIAL_LR, get_param(s->opt, g, P_LR));
        s->base_lrs[g] = key_get(s->keys, g, KEY_INITIAL_LR);
    }
    s->st.last_epoch = -1;
    return initial_step(t, s);
}

/* what the kind's constructor does after its checks */
static int construct(txn *t, jopt_sched *s, const double *pre)
{
    int rc;
    size_t n = s->ngroups;
    switch (s->kind) {
    case K_PLATEAU:
        s->st.last_epoch = 0;
        s->st.best = s->mode_max ? -INFINITY : INFINITY;
        read_lrs(s, s->last_lr);
        return JOPT_OK;
    case K_WARM:
        s->st.T_i = s->T_0;
        s->st.T_cur = -1;
        return lr_scheduler_init(t, s);
    case K_CYCLIC:
        for (size_t g = 0; g < n; g++)
            if ((rc = set_param(t, s, g, P_LR, pre[g])))
                return rc;
        break;
    case K_ONECYCLE: /* group["initial_lr"], ["max_lr"], ["min_lr"] */
        for (size_t g = 0; g < n; g++) {
            double initial = pre[g] / s->div_factor;
            key_set(s->keys, g, KEY_INITIAL_LR, initial);
            key_set(s->keys, g, KEY_MAX_LR, pre[g]);
            key_set(s->keys, g, KEY_MIN_LR, initial / s->final_div_factor);
        }
        break;
    default:
        break;
    }
    if (s->cycle_momentum) {
        for (size_t g = 0; g < n; g++) {
            if ((rc = set_momentum(t, s, g, s->max_moms[g])))
                return rc;
            key_set(s->keys, g, KEY_MAX_MOMENTUM, s->max_moms[g]);
            key_set(s->keys, g, KEY_BASE_MOMENTUM, s->base_moms[g]);
        }
    }
    if ((rc = lr_scheduler_init(t, s)))
        return rc;
    if (s->kind == K_CYCLIC) /* self.base_lrs = base_lrs, after __init__ */
        memcpy(s->base_lrs, pre, n * sizeof *pre);
    return JOPT_OK;
}

/* the keys a constructor may change, to put back if it fails */
typedef struct keys_copy {
    double *v;
    unsigned char *has;
} keys_copy;

static int keys_save(const group_keys *k, keys_copy *c)
{
    size_t n = k->ngroups * NKEYS;
    c->v = malloc((n + 1) * sizeof *c->v);
    c->has = malloc(n + 1);
    if (!c->v || !c->has) {
        free(c->v);
        free(c->has);
        return JOPT_ENOMEM;
    }
    memcpy(c->v, k->v, n * sizeof *c->v);
    memcpy(c->has, k->has, n);
    return JOPT_OK;
}

static void keys_restore(group_keys *k, keys_copy *c)
{
    size_t n = k->ngroups * NKEYS;
    memcpy(k->v, c->v, n * sizeof *c->v);
    memcpy(k->has, c->has, n);
}

static void keys_copy_free(keys_copy *c)
{
    free(c->v);
    free(c->has);
}

/* runs the constructor's writes and initial step; on failure undoes them */
static int construct_all(txn *t, jopt_sched *s, const double *pre)
{
    keys_copy kc;
    if (keys_save(s->keys, &kc))
        return fail(t, s, JOPT_ENOMEM, "out of memory");
    int rc = construct(t, s, pre);
    if (rc) {
        txn_rollback(t);
        keys_restore(s->keys, &kc);
    }
    keys_copy_free(&kc);
    txn_done(t);
    return rc;
}

static int check_opt(jopt_optim *opt, const char *fn)
{
    if (!cg_spec_find_hyper(opt->spec, "lr"))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no option "
                       "'lr' to schedule", fn, cg_spec_name(opt->spec));
    return JOPT_OK;
}

JOPT_API int jopt_sched_new(jopt_optim *opt, const char *kind,
                            const char *options, jopt_sched **out)
{
    static const char fn[] = "jopt_sched_new";
    if (!opt)
        return JOPT_EINVAL;
    if (!kind || !out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !kind ? "kind" : "out");
    int rc = check_opt(opt, fn);
    if (rc)
        return rc;
    const kinddef *kd = NULL;
    size_t nk = sizeof kinds / sizeof kinds[0];
    for (size_t i = 0; i < nk && !kd; i++)
        if (!strcmp(kinds[i].name, kind))
            kd = &kinds[i];
    if (!kd) {
        char known[512] = "";
        for (size_t i = 0; i < nk; i++) {
            size_t l = strlen(known);
            snprintf(known + l, sizeof known - l, "%s%s", i ? ", " : "",
                     kinds[i].name);
        }
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: unknown scheduler kind "
                       "'%s' (known: %s; LambdaLR, MultiplicativeLR, "
                       "SequentialLR and ChainedScheduler have their own "
                       "constructors)", fn, kind, known);
    }
    jopt_sched *s = sched_alloc(opt, kd->kind);
    double *pre = calloc(jopt_group_count(opt) + 1, sizeof *pre);
    opts *o = calloc(1, sizeof *o);
    txn t = {opt, fn, NULL, 0, 0};
    if (!s || !pre || !o || alloc_per_group(s)) {
        rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto done;
    }
    o->kd = kd;
    o->t = &t;
    o->s = s;
    if ((rc = opts_parse(o, options)) || (rc = parse_kind(o, s, pre)) ||
        (rc = construct_all(&t, s, pre)))
        goto done;
    *out = s;
    s = NULL;
done:
    jopt_sched_free(s);
    free(pre);
    free(o);
    return rc;
}

JOPT_API int jopt_sched_new_lambda(jopt_optim *opt, jopt_lr_lambda lr_lambda,
                                   void *user, int multiplicative,
                                   jopt_sched **out)
{
    static const char fn[] = "jopt_sched_new_lambda";
    if (!opt)
        return JOPT_EINVAL;
    if (!out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    if (!lr_lambda)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s: lr_lambda should be a "
                       "function, but got NULL", fn,
                       multiplicative ? "MultiplicativeLR" : "LambdaLR");
    int rc = check_opt(opt, fn);
    if (rc)
        return rc;
    jopt_sched *s = sched_alloc(opt, multiplicative ? K_MULT : K_LAMBDA);
    if (!s)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    s->fn = lr_lambda;
    s->user = user;
    txn t = {opt, fn, NULL, 0, 0};
    if ((rc = construct_all(&t, s, NULL))) {
        jopt_sched_free(s);
        return rc;
    }
    *out = s;
    return JOPT_OK;
}

static int is_composite(const jopt_sched *s)
{
    return s->kind == K_SEQUENTIAL || s->kind == K_CHAINED;
}

/* torch's checks on a composite's children, and jopt's on ownership */
static int check_children(txn *t, const jopt_sched *proto,
                          jopt_sched *const *scheds, size_t n)
{
    const char *cls = class_names[proto->kind];
    if (n == 0)
        return fail(t, proto, JOPT_EINVAL, "%s expects at least one "
                    "scheduler%s, but got no scheduler.", cls,
                    proto->kind == K_CHAINED ? " to be chained" : "");
    if (!scheds)
        return fail(t, proto, JOPT_EINVAL, "scheds is NULL (n is %zu)", n);
    for (size_t i = 0; i < n; i++) {
        const jopt_sched *c = scheds[i];
        if (!c)
            return fail(t, proto, JOPT_EINVAL, "the scheduler at index %zu is "
                        "NULL", i);
        if (c->kind == K_PLATEAU)
            return fail(t, proto, JOPT_EINVAL, "%s does not support "
                        "`ReduceLROnPlateau` scheduler as it requires "
                        "additional kwargs to be specified when calling "
                        "`step`, but got one at index %zu in the given "
                        "schedulers sequence.", cls, i);
        if (c->opt != t->opt)
            return fail(t, proto, JOPT_EINVAL, "%s expects all schedulers to "
                        "belong to the same optimizer, but got scheduler %s "
                        "at index %zu, which belongs to another optimizer",
                        cls, class_names[c->kind], i);
        if (c->ngroups != jopt_group_count(t->opt))
            return fail(t, proto, JOPT_EINVAL, "the scheduler at index %zu "
                        "was made for %zu groups; the optimizer has %zu now",
                        i, c->ngroups, jopt_group_count(t->opt));
        if (c->owned)
            return fail(t, proto, JOPT_EINVAL, "the scheduler at index %zu "
                        "(%s) already belongs to a SequentialLR or "
                        "ChainedScheduler", i, class_names[c->kind]);
        for (size_t j = 0; j < i; j++)
            if (scheds[j] == c)
                return fail(t, proto, JOPT_EINVAL, "the same scheduler is at "
                            "index %zu and %zu (a composite owns each child "
                            "once)", j, i);
        /* torch calls _update_lr(0) on the child at a milestone, which a
         * composite does not have: NotImplementedError */
        if (proto->kind == K_SEQUENTIAL && i > 0 && is_composite(c))
            return fail(t, proto, JOPT_EINVAL, "the scheduler at index %zu is "
                        "a %s: only the first child of a SequentialLR may be "
                        "a composite (torch raises NotImplementedError at its "
                        "milestone)", i, class_names[c->kind]);
    }
    return JOPT_OK;
}

static jopt_sched *composite_alloc(jopt_optim *opt, sched_kind k,
                                   jopt_sched *const *scheds, size_t n)
{
    jopt_sched *s = sched_alloc(opt, k);
    if (!s)
        return NULL;
    if (!(s->children = malloc(n * sizeof *s->children))) {
        sched_free(s);
        return NULL;
    }
    memcpy(s->children, scheds, n * sizeof *s->children);
    s->nchildren = n;
    return s;
}

/* frees a composite that does not own its children (yet) */
static void composite_discard(jopt_sched *s)
{
    if (s)
        s->nchildren = 0;
    jopt_sched_free(s);
}

static void recursive_undo(jopt_sched *s)
{
    if (is_composite(s))
        for (size_t i = 0; i < s->nchildren; i++)
            recursive_undo(s->children[i]);
    else
        s->st.last_epoch--;
}

JOPT_API int jopt_sched_new_sequential(jopt_optim *opt,
                                       jopt_sched *const *scheds, size_t n,
                                       const int64_t *milestones,
                                       jopt_sched **out)
{
    static const char fn[] = "jopt_sched_new_sequential";
    if (!opt)
        return JOPT_EINVAL;
    if (!out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    txn t = {opt, fn, NULL, 0, 0};
    jopt_sched proto = {.kind = K_SEQUENTIAL};
    int rc = check_children(&t, &proto, scheds, n);
    if (rc)
        return rc;
    if (n > 1 && !milestones)
        return fail(&t, &proto, JOPT_EINVAL, "milestones is NULL (%zu "
                    "schedulers need %zu)", n, n - 1);
    jopt_sched *s = composite_alloc(opt, K_SEQUENTIAL, scheds, n);
    if (s && !(s->milestones = malloc(n * sizeof *s->milestones))) {
        composite_discard(s);
        s = NULL;
    }
    snapshot sn;
    if (!s || snapshot_take(scheds, n, &sn)) {
        composite_discard(s);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    if (n > 1)
        memcpy(s->milestones, milestones, (n - 1) * sizeof *milestones);
    s->nmilestones = n - 1;
    /* reset the lrs to initial_lr, undo the children's initial steps, and
     * take the initial step of the scheduler for epoch 0 */
    for (size_t g = 0; g < s->ngroups && rc == JOPT_OK; g++)
        rc = set_param(&t, s, g, P_LR, key_get(s->keys, g, KEY_INITIAL_LR));
    if (rc == JOPT_OK) {
        recursive_undo(s);
        jopt_sched *first =
            s->children[bisect_right(s->milestones, s->nmilestones, 0)];
        if ((rc = initial_step(&t, first)) == JOPT_OK) {
            memcpy(s->last_lr, first->last_lr, s->ngroups * sizeof *s->last_lr);
            s->st.last_epoch = 0;
        }
    }
    if (rc) {
        txn_rollback(&t);
        snapshot_restore(scheds, n, &sn);
        composite_discard(s);
    } else {
        for (size_t i = 0; i < n; i++)
            scheds[i]->owned = 1;
        *out = s;
    }
    snapshot_free(&sn);
    txn_done(&t);
    return rc;
}

JOPT_API int jopt_sched_new_chained(jopt_optim *opt, jopt_sched *const *scheds,
                                    size_t n, jopt_sched **out)
{
    static const char fn[] = "jopt_sched_new_chained";
    if (!opt && n > 0 && scheds && scheds[0])
        opt = scheds[0]->opt; /* optimizer or schedulers[0].optimizer */
    if (!opt)
        return JOPT_EINVAL;
    if (!out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    txn t = {opt, fn, NULL, 0, 0};
    jopt_sched proto = {.kind = K_CHAINED};
    int rc = check_children(&t, &proto, scheds, n);
    if (rc)
        return rc;
    jopt_sched *s = composite_alloc(opt, K_CHAINED, scheds, n);
    if (!s)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    s->st.last_epoch = 0;
    read_lrs(s, s->last_lr);
    for (size_t i = 0; i < n; i++)
        scheds[i]->owned = 1;
    *out = s;
    return JOPT_OK;
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
    if (snapshot_take(&s, 1, &sn))
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    txn t = {s->opt, fn, NULL, 0, 0};
    int rc = with_metric ? plateau_step(&t, s, metric) : sched_step(&t, s);
    if (rc) {
        txn_rollback(&t);
        snapshot_restore(&s, 1, &sn);
    }
    snapshot_free(&sn);
    txn_done(&t);
    return rc;
}

JOPT_API int jopt_sched_step(jopt_sched *s)
{
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
    static const char fn[] = "jopt_sched_step_metric";
    if (!s)
        return JOPT_EINVAL;
    if (s->kind != K_PLATEAU)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: only ReduceLROnPlateau "
                       "takes a metric (this is %s): call jopt_sched_step", fn,
                       class_names[s->kind]);
    return run_step(s, fn, 1, metric);
}

JOPT_API int jopt_sched_last_lr(const jopt_sched *s, size_t group, double *lr)
{
    static const char fn[] = "jopt_sched_last_lr";
    if (!s)
        return JOPT_EINVAL;
    if (!lr)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: lr is NULL", fn);
    if (group >= s->ngroups)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: group %zu does not exist "
                       "(the scheduler has %zu)", fn, group, s->ngroups);
    *lr = s->last_lr[group];
    return JOPT_OK;
}

JOPT_API int64_t jopt_sched_epoch(const jopt_sched *s)
{
    return s ? s->st.last_epoch : -1;
}
