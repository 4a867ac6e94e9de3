/*
 * test_sched.c - learning-rate schedulers against torch 2.13.
 *
 * Every tests/fixtures/sched/<case>.txt (written by
 * tests/torch/record_schedulers.py) is replayed through the C API: the same
 * optimizer, the same scheduler option strings, jopt_step then
 * jopt_sched_step, and every recorded lr and momentum must be the same
 * double, bit for bit.  messages.txt holds torch's constructor errors, which
 * jopt must give with nothing changed.  The rest: bad arguments, failed
 * steps that change nothing, composites and their ownership.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define FIXDIR JOPT_SOURCE_DIR "/tests/fixtures/sched"
#define MAXG 4
#define MAXS 8

/* ---- a fixture ----------------------------------------------------------- */

typedef struct sfix {
    char name[128];
    char spec[32], options[256];
    char groups[MAXG][128];
    int ngroups;
    char lines[MAXS][512]; /* new / lambda / mult / sequential / chained */
    int nlines;
    int momentum; /* a momentum column per group */
    int steps;
    double *metrics; /* steps, or NULL */
    double *data;    /* (steps + 1) x ngroups x (1 + momentum) */
} sfix;

static void sfix_load(sfix *f, const char *name)
{
    char path[1024];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(path, sizeof path, "%s/%s", FIXDIR, name);
    FILE *in = fopen(path, "r");
    if (!in)
        fail_msg("cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    int cols = 0, row = 0, in_data = 0;
    while (getline(&line, &cap, in) > 0) {
        line[strcspn(line, "\n")] = 0;
        if (in_data) {
            if (!strcmp(line, "end"))
                break;
            assert_true(row <= f->steps);
            char *c = line;
            for (int k = 0; k < cols; k++) {
                char *end;
                f->data[row * cols + k] = strtod(c, &end);
                assert_true(end != c);
                c = end;
            }
            row++;
        } else if (!strncmp(line, "optimizer ", 10)) {
            char *sp = strchr(line + 10, ' ');
            assert_non_null(sp);
            *sp = 0;
            snprintf(f->spec, sizeof f->spec, "%s", line + 10);
            snprintf(f->options, sizeof f->options, "%s", sp + 1);
        } else if (!strncmp(line, "group ", 6)) {
            assert_true(f->ngroups < MAXG);
            snprintf(f->groups[f->ngroups++], 128, "%s", line + 6);
        } else if (!strncmp(line, "new ", 4) || !strncmp(line, "lambda ", 7) ||
                   !strncmp(line, "mult ", 5) ||
                   !strncmp(line, "sequential ", 11) ||
                   !strncmp(line, "chained ", 8)) {
            assert_true(f->nlines < MAXS);
            snprintf(f->lines[f->nlines++], 512, "%s", line);
        } else if (!strncmp(line, "record ", 7)) {
            f->momentum = strstr(line, "momentum") != NULL;
        } else if (!strncmp(line, "steps ", 6)) {
            f->steps = atoi(line + 6);
            cols = f->ngroups * (1 + f->momentum);
            f->data = calloc((size_t)((f->steps + 1) * cols), sizeof(double));
            assert_non_null(f->data);
        } else if (!strncmp(line, "metrics ", 8)) {
            f->metrics = calloc((size_t)f->steps, sizeof(double));
            char *c = line + 8;
            for (int k = 0; k < f->steps; k++) {
                char *end;
                f->metrics[k] = strtod(c, &end);
                assert_true(end != c);
                c = end;
            }
        } else if (!strcmp(line, "data")) {
            assert_true(f->steps > 0 && f->nlines > 0);
            in_data = 1;
        }
    }
    free(line);
    fclose(in);
    if (row != f->steps + 1)
        fail_msg("%s: %d rows, want %d", name, row, f->steps + 1);
}

static void sfix_free(sfix *f)
{
    free(f->metrics);
    free(f->data);
}

/* ---- the lambdas of the fixtures ---------------------------------------- */

/* "pow v0,v1": v[g] ** epoch; "lin v0,v1": 1.0 - v[g] * epoch, as the
 * recorder's Python lambdas (float ** int is C's pow on two doubles) */
typedef struct lam {
    int lin;
    double v[MAXG];
} lam;

static double lam_fn(void *user, int64_t epoch, size_t group)
{
    const lam *l = user;
    return l->lin ? 1.0 - l->v[group] * (double)epoch
                  : pow(l->v[group], (double)epoch);
}

/* a factor per group, whatever the epoch */
static double const_fn(void *user, int64_t epoch, size_t group)
{
    (void)epoch;
    return ((const double *)user)[group];
}

/* ---- replay -------------------------------------------------------------- */

typedef struct world {
    jopt_ctx *ctx;
    jopt_optim *opt;
    float p[MAXG][3], g[MAXG][3];
} world;

static void world_new(world *w, const char *spec, const char *options,
                      const char *const *groups, int ngroups)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(jopt_ctx_new(&w->ctx), JOPT_OK);
    /* hundreds of lr values: no JIT compile for each */
    assert_int_equal(jopt_ctx_set_engine(w->ctx, JOPT_ENGINE_REFERENCE), JOPT_OK);
    jopt_param params[MAXG];
    jopt_group gr[MAXG];
    for (int k = 0; k < ngroups; k++) {
        params[k] = (jopt_param){w->p[k], w->g[k], 3};
        gr[k] = (jopt_group){&params[k], 1, groups[k]};
    }
    T_OK(w->ctx, jopt_optim_new(w->ctx, spec, gr, (size_t)ngroups, options,
                                &w->opt));
}

static void world_free(world *w)
{
    jopt_optim_free(w->opt);
    jopt_ctx_free(w->ctx);
}

/* betas[0], or momentum, or NaN when the optimizer has neither */
static double momentum_of(jopt_optim *opt, size_t g)
{
    double v;
    if (jopt_option_get(opt, g, "betas[0]", &v) != JOPT_OK &&
        jopt_option_get(opt, g, "momentum", &v) != JOPT_OK)
        v = NAN;
    return v;
}

static int same(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0 || (isnan(a) && isnan(b));
}

/* compares the optimizer's values with row `r` of the fixture */
static void check_row(const sfix *f, world *w, jopt_sched *s, int r)
{
    int cols = f->ngroups * (1 + f->momentum);
    for (int g = 0, k = 0; g < f->ngroups; g++) {
        double lr, last;
        T_OK(w->ctx, jopt_option_get(w->opt, (size_t)g, "lr", &lr));
        const double *want = &f->data[r * cols + k];
        if (!same(lr, want[0]))
            fail_msg("%s: step %d group %d: lr %.17g, torch %.17g", f->name,
                     r, g, lr, want[0]);
        T_OK(w->ctx, jopt_sched_last_lr(s, (size_t)g, &last));
        if (!same(last, lr))
            fail_msg("%s: step %d group %d: last_lr %.17g, lr %.17g", f->name,
                     r, g, last, lr);
        k++;
        if (f->momentum) {
            double m = momentum_of(w->opt, (size_t)g);
            if (!same(m, want[1]))
                fail_msg("%s: step %d group %d: momentum %.17g, torch %.17g",
                         f->name, r, g, m, want[1]);
            k++;
        }
    }
}

typedef struct named {
    char id[16];
    jopt_sched *s;
} named;

static jopt_sched *find(named *n, int count, const char *id)
{
    for (int i = 0; i < count; i++)
        if (!strcmp(n[i].id, id))
            return n[i].s;
    fail_msg("no scheduler '%s'", id);
    return NULL;
}

/* "a,b,c" -> the schedulers */
static size_t find_list(named *n, int count, char *ids, jopt_sched **out)
{
    size_t k = 0;
    for (char *id = strtok(ids, ","); id; id = strtok(NULL, ","))
        out[k++] = find(n, count, id);
    return k;
}

/* builds the fixture's schedulers; returns the last, which owns the rest
 * when it is a composite */
static jopt_sched *build(const sfix *f, world *w, lam *lams, jopt_sched **all,
                         int *nall)
{
    named n[MAXS];
    int count = 0;
    for (int i = 0; i < f->nlines; i++) {
        char buf[512], op[16], id[16], a[256] = "", b[256] = "";
        snprintf(buf, sizeof buf, "%s", f->lines[i]);
        int got = sscanf(buf, "%15s %15s %255s %255[^\n]", op, id, a, b);
        assert_true(got >= 3);
        jopt_sched *s = NULL;
        if (!strcmp(op, "new")) {
            T_OK(w->ctx, jopt_sched_new(w->opt, a, b, &s));
        } else if (!strcmp(op, "lambda") || !strcmp(op, "mult")) {
            lam *l = &lams[i];
            l->lin = !strcmp(a, "lin");
            char *c = b;
            for (int g = 0; g < f->ngroups; g++) {
                l->v[g] = strtod(c, &c);
                c += *c == ',';
            }
            T_OK(w->ctx, jopt_sched_new_lambda(w->opt, lam_fn, l,
                                               !strcmp(op, "mult"), &s));
        } else if (!strcmp(op, "sequential")) {
            jopt_sched *kids[MAXS];
            int64_t ms[MAXS];
            size_t nk = find_list(n, count, a, kids), nm = 0;
            for (char *m = strtok(b, ","); m; m = strtok(NULL, ","))
                ms[nm++] = atoll(m);
            assert_int_equal(nm, nk - 1);
            T_OK(w->ctx, jopt_sched_new_sequential(w->opt, kids, nk, ms, &s));
        } else {
            jopt_sched *kids[MAXS];
            size_t nk = find_list(n, count, a, kids);
            T_OK(w->ctx, jopt_sched_new_chained(w->opt, kids, nk, &s));
        }
        snprintf(n[count].id, sizeof n[count].id, "%s", id);
        n[count++].s = s;
    }
    for (int i = 0; i < count; i++)
        all[i] = n[i].s;
    *nall = count;
    return n[count - 1].s;
}

static void replay(const char *name)
{
    sfix f;
    sfix_load(&f, name);
    world w;
    const char *groups[MAXG];
    for (int g = 0; g < f.ngroups; g++)
        groups[g] = f.groups[g];
    world_new(&w, f.spec, f.options, groups, f.ngroups);
    lam lams[MAXS];
    jopt_sched *all[MAXS];
    int nall;
    jopt_sched *s = build(&f, &w, lams, all, &nall);
    assert_int_equal(jopt_sched_epoch(s), 0);
    check_row(&f, &w, s, 0);
    for (int t = 1; t <= f.steps; t++) {
        T_OK(w.ctx, jopt_step(w.opt, NULL, NULL, NULL));
        if (f.metrics)
            T_OK(w.ctx, jopt_sched_step_metric(s, f.metrics[t - 1]));
        else
            T_OK(w.ctx, jopt_sched_step(s));
        assert_int_equal(jopt_sched_epoch(s), t);
        check_row(&f, &w, s, t);
    }
    /* a composite owns its children; else each scheduler is the caller's */
    if (strncmp(f.lines[f.nlines - 1], "sequential", 10) &&
        strncmp(f.lines[f.nlines - 1], "chained", 7))
        for (int i = 0; i < nall - 1; i++)
            jopt_sched_free(all[i]);
    jopt_sched_free(s);
    world_free(&w);
    sfix_free(&f);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_sched_torch_fixtures(void **state)
{
    (void)state;
    DIR *d = opendir(FIXDIR);
    assert_non_null(d);
    char *names[256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".txt") &&
            strcmp(e->d_name, "messages.txt") && n < 256)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        replay(names[i]);
        free(names[i]);
    }
    print_message("%d torch scheduler runs replayed bit for bit\n", n);
    assert_true(n >= 30);
}

/* ---- errors -------------------------------------------------------------- */

static const char *const TWO[] = {"lr=0.1", "lr=0.05"};

typedef struct values {
    double lr[2], mom[2];
} values;

static values snap(world *w)
{
    values v;
    for (size_t g = 0; g < 2; g++) {
        T_OK(w->ctx, jopt_option_get(w->opt, g, "lr", &v.lr[g]));
        v.mom[g] = momentum_of(w->opt, g);
    }
    return v;
}

static void assert_same_values(values a, values b)
{
    for (int g = 0; g < 2; g++) {
        assert_true(same(a.lr[g], b.lr[g]));
        assert_true(same(a.mom[g], b.mom[g]));
    }
}

static void expect_fail(world *w, int rc, int want, const char *msg)
{
    if (rc != want || !strstr(jopt_errmsg(w->ctx), msg))
        fail_msg("got %d \"%s\", want %d with \"%s\"", rc, jopt_errmsg(w->ctx),
                 want, msg);
}

/* torch's constructor errors, from messages.txt; nothing changes, and a
 * scheduler made afterwards starts from the same initial_lr */
static void test_sched_torch_messages(void **state)
{
    (void)state;
    FILE *f = fopen(FIXDIR "/messages.txt", "r");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *spec = line, *kind = strchr(spec, '\t');
        assert_non_null(kind);
        *kind++ = 0;
        char *options = strchr(kind, '\t');
        assert_non_null(options);
        *options++ = 0;
        char *message = strchr(options, '\t');
        assert_non_null(message);
        *message++ = 0;
        world w;
        world_new(&w, spec, "lr=0.1", TWO, 2);
        if (!strcmp(spec, "sgd")) /* a momentum to see it is not touched */
            T_OK(w.ctx, jopt_options_set(w.opt, 1, "momentum=0.5"));
        /* an earlier scheduler set initial_lr; then move the lr away */
        jopt_sched *first, *bad = NULL, *later;
        T_OK(w.ctx, jopt_sched_new(w.opt, "exponential", "gamma=0.5", &first));
        T_OK(w.ctx, jopt_sched_step(first));
        values before = snap(&w);
        int rc = jopt_sched_new(w.opt, kind, options, &bad);
        if (rc != JOPT_EINVAL || !strstr(jopt_errmsg(w.ctx), message))
            fail_msg("%s %s: got %d \"%s\", want JOPT_EINVAL with \"%s\"",
                     kind, options, rc, jopt_errmsg(w.ctx), message);
        assert_null(bad);
        assert_same_values(before, snap(&w));
        assert_int_equal(jopt_sched_epoch(first), 1);
        /* LambdaLR of 1: lr = initial_lr, still the first scheduler's */
        lam one = {0, {1.0, 1.0}};
        T_OK(w.ctx, jopt_sched_new_lambda(w.opt, lam_fn, &one, 0, &later));
        double lr0, lr1;
        T_OK(w.ctx, jopt_option_get(w.opt, 0, "lr", &lr0));
        T_OK(w.ctx, jopt_option_get(w.opt, 1, "lr", &lr1));
        assert_true(lr0 == 0.1 && lr1 == 0.05);
        jopt_sched_free(later);
        jopt_sched_free(first);
        world_free(&w);
        n++;
    }
    fclose(f);
    print_message("%d torch scheduler errors reproduced\n", n);
    assert_true(n >= 40);
}

static void test_sched_bad_arguments(void **state)
{
    (void)state;
    world w;
    world_new(&w, "sgd", "lr=0.1 momentum=0.9", TWO, 2);
    values before = snap(&w);
    jopt_sched *s = NULL;
    assert_int_equal(jopt_sched_new(NULL, "step", "step_size=3", &s), JOPT_EINVAL);
    expect_fail(&w, jopt_sched_new(w.opt, NULL, "", &s), JOPT_EINVAL,
                "jopt_sched_new: kind is NULL");
    expect_fail(&w, jopt_sched_new(w.opt, "step", "step_size=3", NULL),
                JOPT_EINVAL, "jopt_sched_new: out is NULL");
    expect_fail(&w, jopt_sched_new(w.opt, "steplr", "", &s), JOPT_EINVAL,
                "unknown scheduler kind 'steplr' (known: step, multistep");
    expect_fail(&w, jopt_sched_new(w.opt, "step", "step_size=3 gama=0.5", &s),
                JOPT_EINVAL, "StepLR: unknown option 'gama' (known: step_size, "
                "gamma)");
    expect_fail(&w, jopt_sched_new(w.opt, "step", "gamma=0.5", &s),
                JOPT_EINVAL, "StepLR: option 'step_size' is required");
    expect_fail(&w, jopt_sched_new(w.opt, "step", "step_size=3.5", &s),
                JOPT_EINVAL, "option 'step_size': cannot read '3.5' as an "
                "integer");
    expect_fail(&w, jopt_sched_new(w.opt, "step", "step_size=3 gamma=x", &s),
                JOPT_EINVAL, "option 'gamma': cannot read 'x' as a number");
    expect_fail(&w, jopt_sched_new(w.opt, "step", "step_size=3 step_size=4", &s),
                JOPT_EINVAL, "option 'step_size' given twice");
    expect_fail(&w, jopt_sched_new(w.opt, "step", "step_size", &s),
                JOPT_EINVAL, "option 'step_size' has no value");
    expect_fail(&w, jopt_sched_new(w.opt, "multistep", "milestones=(3,x)", &s),
                JOPT_EINVAL, "option 'milestones': cannot read 'x' as an "
                "integer");
    expect_fail(&w, jopt_sched_new(w.opt, "multistep", "milestones=[3,4", &s),
                JOPT_EINVAL, "option 'milestones': missing ']'");
    expect_fail(&w, jopt_sched_new(w.opt, "onecycle", "max_lr=1 total_steps=9 "
                                   "three_phase=maybe", &s),
                JOPT_EINVAL, "option 'three_phase': cannot read 'maybe' as a "
                "boolean");
    /* torch takes these, then fails at every step: refused up front */
    expect_fail(&w, jopt_sched_new(w.opt, "step", "step_size=0", &s),
                JOPT_EINVAL, "StepLR: step_size must not be 0");
    expect_fail(&w, jopt_sched_new(w.opt, "cosine", "T_max=0", &s),
                JOPT_EINVAL, "CosineAnnealingLR: T_max must not be 0");
    expect_fail(&w, jopt_sched_new(w.opt, "cosine", "T_max=9007199254740993",
                                   &s),
                JOPT_EINVAL, "option 'T_max': cannot read '9007199254740993' "
                "as an integer (of at most 2^53 in magnitude)");
    expect_fail(&w, jopt_sched_new(w.opt, "cyclic", "base_lr=0.01, "
                                   "max_lr=0.1", &s),
                JOPT_EINVAL, "base_lr must have the same length as "
                "optimizer.param_groups. base_lr has 1 values, param_groups "
                "has 2.");
    expect_fail(&w, jopt_sched_new_lambda(w.opt, NULL, NULL, 1, &s),
                JOPT_EINVAL, "MultiplicativeLR: lr_lambda should be a "
                "function, but got NULL");
    assert_null(s);
    assert_same_values(before, snap(&w));

    /* plateau steps on a metric, and only plateau */
    jopt_sched *p, *e;
    T_OK(w.ctx, jopt_sched_new(w.opt, "plateau", NULL, &p));
    T_OK(w.ctx, jopt_sched_new(w.opt, "exponential", "gamma=0.5", &e));
    expect_fail(&w, jopt_sched_step(p), JOPT_EINVAL,
                "jopt_sched_step: ReduceLROnPlateau steps on a metric: call "
                "jopt_sched_step_metric");
    expect_fail(&w, jopt_sched_step_metric(e, 1.0), JOPT_EINVAL,
                "only ReduceLROnPlateau takes a metric (this is "
                "ExponentialLR)");
    assert_int_equal(jopt_sched_epoch(p), 0);
    assert_int_equal(jopt_sched_epoch(e), 0);
    double lr;
    expect_fail(&w, jopt_sched_last_lr(e, 2, &lr), JOPT_EINVAL,
                "jopt_sched_last_lr: group 2 does not exist (the scheduler "
                "has 2)");
    expect_fail(&w, jopt_sched_last_lr(e, 0, NULL), JOPT_EINVAL,
                "jopt_sched_last_lr: lr is NULL");
    assert_int_equal(jopt_sched_step(NULL), JOPT_EINVAL);
    assert_int_equal(jopt_sched_step_metric(NULL, 0), JOPT_EINVAL);
    assert_int_equal(jopt_sched_last_lr(NULL, 0, &lr), JOPT_EINVAL);
    assert_int_equal(jopt_sched_epoch(NULL), -1);
    jopt_sched_free(NULL);
    jopt_sched_free(e);
    jopt_sched_free(p);

    /* cycle_momentum needs betas or momentum: Adagrad has neither */
    world a;
    world_new(&a, "adagrad", "lr=0.1", TWO, 2);
    expect_fail(&a, jopt_sched_new(a.opt, "cyclic", "base_lr=0.01 max_lr=0.1",
                                   &s),
                JOPT_EINVAL, "optimizer must support momentum or beta1 with "
                "`cycle_momentum` option enabled");
    T_OK(a.ctx, jopt_sched_new(a.opt, "cyclic", "base_lr=0.01 max_lr=0.1 "
                               "cycle_momentum=false", &s));
    jopt_sched_free(s);
    world_free(&a);
    world_free(&w);
}

/* a step whose lr the optimizer refuses (lr < 0) changes nothing: not the
 * lrs, not group 0's when group 1 fails, not the scheduler */
static void test_sched_failed_step_changes_nothing(void **state)
{
    (void)state;
    world w;
    world_new(&w, "sgd", "lr=0.1", TWO, 2);
    jopt_sched *s;
    lam l = {1, {0.01, 0.02}}; /* 1 - v[g] * epoch: group 1 negative at 51 */
    T_OK(w.ctx, jopt_sched_new_lambda(w.opt, lam_fn, &l, 0, &s));
    for (int t = 1; t <= 50; t++)
        T_OK(w.ctx, jopt_sched_step(s));
    values before = snap(&w);
    double last0, last1;
    T_OK(w.ctx, jopt_sched_last_lr(s, 1, &last1));
    expect_fail(&w, jopt_sched_step(s), JOPT_EINVAL, "Invalid learning rate");
    assert_non_null(strstr(jopt_errmsg(w.ctx), "jopt_sched_step: LambdaLR: "
                           "group 1: setting lr to"));
    assert_same_values(before, snap(&w));
    assert_int_equal(jopt_sched_epoch(s), 50);
    T_OK(w.ctx, jopt_sched_last_lr(s, 1, &last0));
    assert_true(same(last0, last1));
    /* a lambda that stays positive steps on from epoch 51 */
    l.v[1] = 0.001;
    T_OK(w.ctx, jopt_sched_step(s));
    assert_int_equal(jopt_sched_epoch(s), 51);
    double lr;
    T_OK(w.ctx, jopt_option_get(w.opt, 0, "lr", &lr));
    assert_true(same(lr, 0.1 * (1.0 - 0.01 * 51)));
    jopt_sched_free(s);
    world_free(&w);
}

/* a milestone list longer than any fixed table: MultiStepLR over 100 */
static void test_sched_many_milestones(void **state)
{
    (void)state;
    static const char *const ONE[] = {""};
    world w;
    world_new(&w, "sgd", "lr=0.1", ONE, 1);
    char opts[512] = "gamma=0.5 milestones=(";
    for (int k = 1; k <= 100; k++)
        snprintf(opts + strlen(opts), sizeof opts - strlen(opts), "%d%s", k,
                 k < 100 ? "," : ")");
    jopt_sched *s = NULL;
    T_OK(w.ctx, jopt_sched_new(w.opt, "multistep", opts, &s));
    double lr, want = 0.1;
    for (int k = 1; k <= 70; k++) {
        T_OK(w.ctx, jopt_sched_step(s));
        want *= 0.5;
    }
    T_OK(w.ctx, jopt_option_get(w.opt, 0, "lr", &lr));
    assert_true(fabs(lr - want) <= 1e-15 * want);
    jopt_sched_free(s);
    world_free(&w);
}

/* torch raises past total_steps; momentum and lr stay as they were */
static void test_sched_onecycle_past_total_steps(void **state)
{
    (void)state;
    world w;
    world_new(&w, "adam", "lr=0.1", TWO, 2);
    jopt_sched *s;
    T_OK(w.ctx, jopt_sched_new(w.opt, "onecycle", "max_lr=0.1 total_steps=10",
                               &s));
    for (int t = 1; t <= 10; t++)
        T_OK(w.ctx, jopt_sched_step(s));
    values before = snap(&w);
    expect_fail(&w, jopt_sched_step(s), JOPT_EINVAL,
                "OneCycleLR: Tried to step 11 times. The specified number of "
                "total steps is 10");
    assert_same_values(before, snap(&w));
    assert_int_equal(jopt_sched_epoch(s), 10);
    jopt_sched_free(s);
    world_free(&w);
}

/* ConstantLR(factor=0) divides by zero at total_iters, as torch does; a
 * OneCycleLR whose first phase is empty fails in its constructor after
 * writing momentum and initial_lr: all of it is undone */
static void test_sched_python_errors(void **state)
{
    (void)state;
    world w;
    world_new(&w, "sgd", "lr=0.1 momentum=0.9", TWO, 2);
    jopt_sched *s, *bad = NULL;
    T_OK(w.ctx, jopt_sched_new(w.opt, "constant", "factor=0 total_iters=3", &s));
    T_OK(w.ctx, jopt_sched_step(s));
    T_OK(w.ctx, jopt_sched_step(s));
    expect_fail(&w, jopt_sched_step(s), JOPT_EINVAL,
                "ConstantLR: float division by zero (at epoch 3)");
    assert_int_equal(jopt_sched_epoch(s), 2);
    jopt_sched_free(s);

    T_OK(w.ctx, jopt_options_set(w.opt, 0, "lr=0.1"));
    T_OK(w.ctx, jopt_options_set(w.opt, 1, "lr=0.05"));
    values before = snap(&w);
    expect_fail(&w, jopt_sched_new(w.opt, "onecycle", "max_lr=1 total_steps=100 "
                                   "pct_start=0.01", &bad),
                JOPT_EINVAL, "OneCycleLR: float division by zero (at epoch 0)");
    assert_null(bad);
    assert_same_values(before, snap(&w));
    lam one = {0, {1.0, 1.0}};
    T_OK(w.ctx, jopt_sched_new_lambda(w.opt, lam_fn, &one, 0, &s));
    double lr;
    T_OK(w.ctx, jopt_option_get(w.opt, 0, "lr", &lr));
    assert_true(lr == 0.1); /* not OneCycleLR's initial_lr, 1/25 */
    jopt_sched_free(s);
    world_free(&w);
}

static void test_sched_composite_errors(void **state)
{
    (void)state;
    world w, v;
    world_new(&w, "sgd", "lr=0.1", TWO, 2);
    world_new(&v, "sgd", "lr=0.1", TWO, 2);
    jopt_sched *a, *b, *p, *other, *out = NULL;
    T_OK(w.ctx, jopt_sched_new(w.opt, "step", "step_size=3", &a));
    T_OK(w.ctx, jopt_sched_new(w.opt, "exponential", "gamma=0.9", &b));
    T_OK(w.ctx, jopt_sched_new(w.opt, "plateau", "", &p));
    T_OK(v.ctx, jopt_sched_new(v.opt, "step", "step_size=3", &other));
    int64_t ms[2] = {5, 10};
    expect_fail(&w, jopt_sched_new_sequential(w.opt, NULL, 0, NULL, &out),
                JOPT_EINVAL, "SequentialLR expects at least one scheduler, but "
                "got no scheduler.");
    expect_fail(&w, jopt_sched_new_chained(w.opt, NULL, 0, &out), JOPT_EINVAL,
                "ChainedScheduler expects at least one scheduler to be "
                "chained, but got no scheduler.");
    jopt_sched *ap[] = {a, p};
    expect_fail(&w, jopt_sched_new_sequential(w.opt, ap, 2, ms, &out),
                JOPT_EINVAL, "SequentialLR does not support "
                "`ReduceLROnPlateau` scheduler as it requires additional "
                "kwargs to be specified when calling `step`, but got one at "
                "index 1 in the given schedulers sequence.");
    expect_fail(&w, jopt_sched_new_chained(w.opt, ap, 2, &out), JOPT_EINVAL,
                "ChainedScheduler does not support `ReduceLROnPlateau` "
                "scheduler as it requires additional kwargs to be specified "
                "when calling `step`, but got one at index 1 in the given "
                "schedulers sequence.");
    jopt_sched *ao[] = {a, other};
    expect_fail(&w, jopt_sched_new_sequential(w.opt, ao, 2, ms, &out),
                JOPT_EINVAL, "SequentialLR expects all schedulers to belong "
                "to the same optimizer, but got scheduler StepLR at index 1");
    jopt_sched *aa[] = {a, a};
    expect_fail(&w, jopt_sched_new_chained(w.opt, aa, 2, &out), JOPT_EINVAL,
                "the same scheduler is at index 0 and 1");
    jopt_sched *ab[] = {a, b};
    expect_fail(&w, jopt_sched_new_sequential(w.opt, ab, 2, NULL, &out),
                JOPT_EINVAL, "milestones is NULL (2 schedulers need 1)");
    jopt_sched *an[] = {a, NULL};
    expect_fail(&w, jopt_sched_new_chained(w.opt, an, 2, &out), JOPT_EINVAL,
                "the scheduler at index 1 is NULL");
    expect_fail(&w, jopt_sched_new_chained(NULL, ab, 2, NULL), JOPT_EINVAL,
                "jopt_sched_new_chained: out is NULL");
    assert_int_equal(jopt_sched_new_chained(NULL, NULL, 0, &out), JOPT_EINVAL);
    assert_null(out);

    /* a chain owns a and b: neither can join another composite */
    jopt_sched *chain, *seq;
    T_OK(w.ctx, jopt_sched_new_chained(NULL, ab, 2, &chain));
    expect_fail(&w, jopt_sched_new_chained(w.opt, ab, 2, &out), JOPT_EINVAL,
                "the scheduler at index 0 (StepLR) already belongs to a "
                "SequentialLR or ChainedScheduler");
    jopt_sched *c;
    T_OK(w.ctx, jopt_sched_new(w.opt, "step", "step_size=3", &c));
    jopt_sched *cc[] = {c, chain};
    expect_fail(&w, jopt_sched_new_sequential(w.opt, cc, 2, ms, &out),
                JOPT_EINVAL, "the scheduler at index 1 is a ChainedScheduler: "
                "only the first child of a SequentialLR may be a composite");
    jopt_sched *cs[] = {chain, c};
    T_OK(w.ctx, jopt_sched_new_sequential(w.opt, cs, 2, ms, &seq));
    T_OK(w.ctx, jopt_sched_step(seq));
    jopt_sched_free(seq); /* frees chain, a, b and c */
    jopt_sched_free(p);
    jopt_sched_free(other);
    world_free(&v);
    world_free(&w);
}

/* SequentialLR's constructor resets the lrs, undoes its children's steps
 * and takes one: when that step fails, all of it is put back, and the
 * children are still the caller's */
static void test_sched_sequential_failure_changes_nothing(void **state)
{
    (void)state;
    world w;
    world_new(&w, "sgd", "lr=0.1", TWO, 2);
    double l[2] = {0.5, 0.5};
    jopt_sched *lam_s, *exp_s, *out = NULL;
    T_OK(w.ctx, jopt_sched_new(w.opt, "exponential", "gamma=0.9", &exp_s));
    T_OK(w.ctx, jopt_sched_step(exp_s));
    T_OK(w.ctx, jopt_sched_new_lambda(w.opt, const_fn, l, 0, &lam_s));
    values before = snap(&w);
    assert_true(before.lr[0] == 0.1 * 0.5);
    l[1] = -1; /* its next initial step sets a negative lr */
    jopt_sched *kids[] = {lam_s, exp_s};
    int64_t ms[] = {5};
    expect_fail(&w, jopt_sched_new_sequential(w.opt, kids, 2, ms, &out),
                JOPT_EINVAL, "Invalid learning rate");
    assert_null(out);
    assert_same_values(before, snap(&w));
    assert_int_equal(jopt_sched_epoch(lam_s), 0);
    assert_int_equal(jopt_sched_epoch(exp_s), 1);
    l[1] = 0.25;
    T_OK(w.ctx, jopt_sched_new_sequential(w.opt, kids, 2, ms, &out));
    double lr;
    T_OK(w.ctx, jopt_option_get(w.opt, 1, "lr", &lr));
    assert_true(lr == 0.05 * 0.25);
    assert_int_equal(jopt_sched_epoch(exp_s), 0); /* undone, waiting */
    jopt_sched_free(out);
    world_free(&w);
}

/* a group added after the scheduler: the scheduler refuses to step (torch
 * fails in most schedulers' zip(strict=True)); a new scheduler takes the new
 * group's lr as its initial_lr and keeps the old groups' */
static void test_sched_added_group(void **state)
{
    (void)state;
    world w;
    world_new(&w, "sgd", "lr=0.1", TWO, 2);
    jopt_sched *s, *later;
    T_OK(w.ctx, jopt_sched_new(w.opt, "exponential", "gamma=0.5", &s));
    T_OK(w.ctx, jopt_sched_step(s));
    jopt_param extra = {w.p[2], w.g[2], 3};
    jopt_group g = {&extra, 1, "lr=0.2"};
    T_OK(w.ctx, jopt_add_param_group(w.opt, &g));
    values before = snap(&w);
    expect_fail(&w, jopt_sched_step(s), JOPT_EINVAL,
                "jopt_sched_step: the optimizer has 3 groups, the scheduler "
                "was made for 2");
    assert_same_values(before, snap(&w));
    jopt_sched *kids[] = {s};
    expect_fail(&w, jopt_sched_new_chained(w.opt, kids, 1, &later), JOPT_EINVAL,
                "the scheduler at index 0 was made for 2 groups; the "
                "optimizer has 3 now");
    double one[3] = {1, 1, 1}, lr[3];
    T_OK(w.ctx, jopt_sched_new_lambda(w.opt, const_fn, one, 0, &later));
    for (size_t k = 0; k < 3; k++)
        T_OK(w.ctx, jopt_option_get(w.opt, k, "lr", &lr[k]));
    assert_true(lr[0] == 0.1 && lr[1] == 0.05 && lr[2] == 0.2);
    T_OK(w.ctx, jopt_sched_step(later));
    jopt_sched_free(later);
    jopt_sched_free(s);
    world_free(&w);
}

/* the scheduler keys belong to the optimizer, as in torch: with every
 * scheduler freed and the lr changed, a new scheduler still starts from
 * the first one's initial_lr */
static void test_sched_keys_outlive_schedulers(void **state)
{
    (void)state;
    world w;
    world_new(&w, "sgd", "lr=0.1", TWO, 2);
    jopt_sched *s;
    T_OK(w.ctx, jopt_sched_new(w.opt, "exponential", "gamma=0.5", &s));
    T_OK(w.ctx, jopt_sched_step(s));
    jopt_sched_free(s);
    T_OK(w.ctx, jopt_options_set(w.opt, 0, "lr=0.3"));
    double one[2] = {1, 1}, lr0, lr1;
    T_OK(w.ctx, jopt_sched_new_lambda(w.opt, const_fn, one, 0, &s));
    T_OK(w.ctx, jopt_option_get(w.opt, 0, "lr", &lr0));
    T_OK(w.ctx, jopt_option_get(w.opt, 1, "lr", &lr1));
    assert_true(lr0 == 0.1 && lr1 == 0.05);
    jopt_sched_free(s);
    world_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sched_torch_fixtures),
        cmocka_unit_test(test_sched_torch_messages),
        cmocka_unit_test(test_sched_bad_arguments),
        cmocka_unit_test(test_sched_failed_step_changes_nothing),
        cmocka_unit_test(test_sched_onecycle_past_total_steps),
        cmocka_unit_test(test_sched_many_milestones),
        cmocka_unit_test(test_sched_python_errors),
        cmocka_unit_test(test_sched_composite_errors),
        cmocka_unit_test(test_sched_sequential_failure_changes_nothing),
        cmocka_unit_test(test_sched_added_group),
        cmocka_unit_test(test_sched_keys_outlive_schedulers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
