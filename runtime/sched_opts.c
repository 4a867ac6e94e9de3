/*
 * sched_opts.c - a scheduler's options: the "name=value" string of
 * jopt_sched_new, read with torch's keyword names and defaults, and
 * checked in the order torch's constructors check them, with their
 * messages.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched_int.h"

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
    cg_opt_item *it = cg_malloc(sizeof *it);
    if (!it)
        return rt_sched_fail(o->t, o->s, JOPT_ENOMEM, "out of memory");
    char err[CG_ERRLEN];
    int rc;
    for (const char *c = text ? text : ""; (rc = cg_opt_next(&c, it, err)) == 1;) {
        int i = 0;
        while (i < n && strcmp(kd->opts[i].name, it->name) != 0)
            i++;
        if (i == n) {
            char known[512] = "";
            for (int j = 0; j < n; j++) {
                size_t l = strlen(known);
                snprintf(known + l, sizeof known - l, "%s%s", j ? ", " : "",
                         kd->opts[j].name);
            }
            rc = rt_sched_fail(o->t, o->s, JOPT_EINVAL, "unknown option '%s' "
                               "(known: %s)", it->name, known);
            cg_free(it);
            return rc;
        }
        if (o->given[i]++) {
            cg_free(it);
            return rt_sched_fail(o->t, o->s, JOPT_EINVAL, "option '%s' given "
                                 "twice", kd->opts[i].name);
        }
        /* the values as "a,b,c", as the readers below take them */
        o->text[i][0] = 0;
        for (int v = 0; v < it->nval; v++) {
            size_t l = strlen(o->text[i]);
            snprintf(o->text[i] + l, OPT_TEXT - l, "%s%s", v ? "," : "", it->val[v]);
        }
    }
    cg_free(it);
    if (rc)
        return rt_sched_fail(o->t, o->s, rc, "%s", err);
    for (int i = 0; i < n; i++)
        if (!kd->opts[i].dflt && !o->given[i])
            return rt_sched_fail(o->t, o->s, JOPT_EINVAL, "option '%s' is "
                                 "required", kd->opts[i].name);
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
    if (*end != 0)
        return 0;
    return isfinite(*v) ? 1 : -1; /* "inf", "nan", "1e400": refused */
}

static int get_int(opts *o, const char *name, int64_t *v)
{
    if (read_int(opt_text(o, name), v))
        return JOPT_OK;
    return rt_sched_fail(o->t, o->s, JOPT_EINVAL, "option '%s': cannot read "
                         "'%s' as an integer (of at most 2^53 in magnitude)",
                         name, opt_text(o, name));
}

static int get_num(opts *o, const char *name, double *v)
{
    int ok = read_num(opt_text(o, name), v);
    if (ok == 1)
        return JOPT_OK;
    return rt_sched_fail(o->t, o->s, JOPT_EINVAL, ok ? "option '%s': '%s' is "
                         "not a finite number" : "option '%s': cannot read "
                         "'%s' as a number", name, opt_text(o, name));
}

static int get_bool(opts *o, const char *name, int *v)
{
    const char *s = opt_text(o, name);
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "1"))
        *v = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "0"))
        *v = 0;
    else
        return rt_sched_fail(o->t, o->s, JOPT_EINVAL, "option '%s': cannot "
                             "read '%s' as a boolean (true or false)", name, s);
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
        if (ok != 1)
            return rt_sched_fail(o->t, o->s, JOPT_EINVAL, ok ? "option '%s': "
                                 "'%s' is not a finite number" : "option '%s': "
                                 "cannot read '%s' as %s", name, item,
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
        return rt_sched_fail(o->t, o->s, JOPT_EINVAL, "%s must have the same "
                             "length as optimizer.param_groups. %s has %zu "
                             "values, param_groups has %zu.", name, name, n,
                             ng);
    return JOPT_OK;
}

/* ---- torch's constructor checks ---------------------------------------- */

/* cycle_momentum: which of the optimizer's options torch would cycle */
static int momentum_check(txn *t, jopt_sched *s)
{
    if (cg_spec_find_hyper(s->opt->spec, "betas"))
        s->use_beta1 = 1;
    else if (!cg_spec_find_hyper(s->opt->spec, "momentum"))
        return rt_sched_fail(t, s, JOPT_EINVAL, "optimizer must support "
                             "momentum or beta1 with `cycle_momentum` option "
                             "enabled");
    return JOPT_OK;
}

/* an integer option torch checks with "Expected positive integer NAME, but
 * got VALUE" */
static int get_positive(opts *o, const char *name, int64_t *v)
{
    if (read_int(opt_text(o, name), v) && *v > 0)
        return JOPT_OK;
    return rt_sched_fail(o->t, o->s, JOPT_EINVAL, "Expected positive integer "
                         "%s, but got %s", name, opt_text(o, name));
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
            return rt_sched_fail(t, s, JOPT_EINVAL, "epochs * steps_per_epoch "
                                 "is too large");
        s->total_steps = epochs * spe;
    } else {
        return rt_sched_fail(t, s, JOPT_EINVAL, "You must define either "
                             "total_steps OR (epochs AND steps_per_epoch)");
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
        s->phases[0] = (phase){pct * total - 1, RT_KEY_INITIAL_LR,
                               RT_KEY_MAX_LR, RT_KEY_MAX_MOMENTUM,
                               RT_KEY_BASE_MOMENTUM};
        s->phases[1] = (phase){2 * pct * total - 2, RT_KEY_MAX_LR,
                               RT_KEY_INITIAL_LR, RT_KEY_BASE_MOMENTUM,
                               RT_KEY_MAX_MOMENTUM};
        s->phases[2] = (phase){total - 1, RT_KEY_INITIAL_LR, RT_KEY_MIN_LR,
                               RT_KEY_MAX_MOMENTUM, RT_KEY_MAX_MOMENTUM};
        s->nphases = 3;
    } else {
        s->phases[0] = (phase){pct * total - 1, RT_KEY_INITIAL_LR,
                               RT_KEY_MAX_LR, RT_KEY_MAX_MOMENTUM,
                               RT_KEY_BASE_MOMENTUM};
        s->phases[1] = (phase){total - 1, RT_KEY_MAX_LR, RT_KEY_MIN_LR,
                               RT_KEY_BASE_MOMENTUM, RT_KEY_MAX_MOMENTUM};
        s->nphases = 2;
    }
    if (!(pct >= 0 && pct <= 1))
        return rt_sched_fail(t, s, JOPT_EINVAL, "Expected float between 0 and "
                             "1 pct_start, but got %s",
                             opt_text(o, "pct_start"));
    const char *as = opt_text(o, "anneal_strategy");
    if (strcmp(as, "cos") != 0 && strcmp(as, "linear") != 0)
        return rt_sched_fail(t, s, JOPT_EINVAL, "anneal_strategy must be one "
                             "of 'cos' or 'linear', instead got %s", as);
    s->anneal_cos = strcmp(as, "cos") == 0;
    if ((rc = get_per_group(o, "max_lr", max_lrs)))
        return rc;
    calc c = {NULL}; /* the divisions torch does next, in Python */
    for (size_t g = 0; g < s->ngroups; g++)
        py_div(&c, py_div(&c, max_lrs[g], s->div_factor), s->final_div_factor);
    if (c.err)
        return rt_sched_fail(t, s, JOPT_EINVAL, "%s (div_factor is %s, "
                             "final_div_factor is %s)", c.err,
                             opt_text(o, "div_factor"),
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
        return rt_sched_fail(t, s, JOPT_EINVAL, "%s (step_size_up + "
                             "step_size_down is 0)", c.err);
    const char *mode = opt_text(o, "mode");
    if (!strcmp(mode, "triangular"))
        s->cyc_mode = 0;
    else if (!strcmp(mode, "triangular2"))
        s->cyc_mode = 1;
    else if (!strcmp(mode, "exp_range"))
        s->cyc_mode = 2;
    else
        return rt_sched_fail(t, s, JOPT_EINVAL, "mode is invalid and scale_fn "
                             "is None");
    const char *sm = opt_text(o, "scale_mode");
    if (strcmp(sm, "cycle") != 0 && strcmp(sm, "iterations") != 0)
        return rt_sched_fail(t, s, JOPT_EINVAL, "scale_mode must be 'cycle' or "
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
        return rt_sched_fail(t, s, JOPT_EINVAL, "Factor should be < 1.0.");
    size_t n;
    if ((rc = get_list(o, "min_lr", 0, s->min_lrs, s->ngroups, &n)))
        return rc;
    if (n == 1 && !strchr(opt_text(o, "min_lr"), ','))
        for (size_t g = 1; g < s->ngroups; g++)
            s->min_lrs[g] = s->min_lrs[0];
    else if (n != s->ngroups)
        return rt_sched_fail(t, s, JOPT_EINVAL, "expected %zu min_lrs, got %zu",
                    s->ngroups, n);
    if ((rc = get_int(o, "patience", &s->patience)) ||
        (rc = get_int(o, "cooldown", &s->cooldown)) ||
        (rc = get_num(o, "eps", &s->eps)) ||
        (rc = get_num(o, "threshold", &s->threshold)))
        return rc;
    const char *mode = opt_text(o, "mode"), *tm = opt_text(o, "threshold_mode");
    if (strcmp(mode, "min") != 0 && strcmp(mode, "max") != 0)
        return rt_sched_fail(t, s, JOPT_EINVAL, "mode %s is unknown!", mode);
    if (strcmp(tm, "rel") != 0 && strcmp(tm, "abs") != 0)
        return rt_sched_fail(t, s, JOPT_EINVAL, "threshold mode %s is unknown!",
                             tm);
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
            return rt_sched_fail(t, s, JOPT_EINVAL, "step_size must not be 0");
        return JOPT_OK;
    case K_MULTISTEP: {
        size_t n;
        if ((rc = get_list(o, "milestones", 1, NULL, 0, &n)))
            return rc;
        if (!(s->milestones = cg_malloc((n + 1) * sizeof *s->milestones)))
            return rt_sched_fail(t, s, JOPT_ENOMEM, "out of memory");
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
            return rt_sched_fail(t, s, JOPT_EINVAL, "T_max must not be 0");
        return JOPT_OK;
    case K_WARM:
        if ((rc = get_positive(o, "T_0", &s->T_0)))
            return rc;
        if (!read_int(opt_text(o, "T_mult"), &s->T_mult) || s->T_mult < 1)
            return rt_sched_fail(t, s, JOPT_EINVAL, "Expected integer T_mult "
                                 ">= 1, but got %s", opt_text(o, "T_mult"));
        return get_num(o, "eta_min", &s->eta_min);
    case K_LINEAR:
        if ((rc = get_num(o, "start_factor", &s->start_factor)) ||
            (rc = get_num(o, "end_factor", &s->end_factor)) ||
            (rc = get_int(o, "total_iters", &s->total_iters)))
            return rc;
        if (s->start_factor > 1.0 || s->start_factor <= 0)
            return rt_sched_fail(t, s, JOPT_EINVAL, "Starting multiplicative "
                                 "factor expected to be greater than 0 and "
                                 "less or equal to 1.");
        if (s->end_factor > 1.0 || s->end_factor < 0)
            return rt_sched_fail(t, s, JOPT_EINVAL, "Ending multiplicative "
                                 "factor expected to be between 0 and 1.");
        return JOPT_OK;
    case K_CONSTANT:
        if ((rc = get_num(o, "factor", &s->factor)) ||
            (rc = get_int(o, "total_iters", &s->total_iters)))
            return rc;
        if (s->factor > 1.0 || s->factor < 0)
            return rt_sched_fail(t, s, JOPT_EINVAL, "Constant multiplicative "
                                 "factor expected to be between 0 and 1.");
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


/* ---- entry points ------------------------------------------------------- */

int rt_sched_kind(const char *name, char *known, size_t len)
{
    size_t nk = sizeof kinds / sizeof kinds[0];
    for (size_t i = 0; i < nk; i++)
        if (!strcmp(kinds[i].name, name))
            return (int)kinds[i].kind;
    known[0] = 0;
    for (size_t i = 0; i < nk; i++) {
        size_t l = strlen(known);
        snprintf(known + l, len - l, "%s%s", i ? ", " : "", kinds[i].name);
    }
    return -1;
}

int rt_sched_options(txn *t, jopt_sched *s, const char *text, double *pre)
{
    const kinddef *kd = kinds;
    while (kd->kind != s->kind)
        kd++;
    opts *o = cg_calloc(1, sizeof *o);
    if (!o)
        return rt_fail(t->opt->ctx, JOPT_ENOMEM, "%s: out of memory", t->fn);
    o->kd = kd;
    o->t = t;
    o->s = s;
    int rc = opts_parse(o, text);
    if (rc == JOPT_OK)
        rc = parse_kind(o, s, pre);
    cg_free(o);
    return rc;
}
