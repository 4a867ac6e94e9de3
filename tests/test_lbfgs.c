/*
 * test_lbfgs.c - the L-BFGS closure optimizer (specs/lbfgs.lua,
 * runtime/lbfgs.c) against torch.optim.LBFGS: every recorded closure call
 * and step of tests/fixtures/lbfgs/ (README.md there), convergence, torch's
 * messages, the options torch leaves unchecked, the state, rollback when
 * the closure fails, and JIT against the reference interpreter.
 *
 * jopt's square root is IEEE's, so the strong-Wolfe cases whose recording
 * torch's inexact float32 sqrt changed are replayed from their
 * `.ieee-sqrt.txt` twins.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "problems.h"

/* ---- a recorded run --------------------------------------------------------- */

typedef struct lfix {
    char problem[16], options[256];
    int steps;
    int64_t n;
    float *x0;
    int64_t ncalls;            /* call records */
    double *cf;                /* per call: f, then x and g (n floats each) */
    float *cx, *cg;
    double *sloss;             /* per step: returned loss, counters, p */
    int64_t *sfe, *sni, *send; /* send: calls made when the step returned */
    float *sp;
} lfix;

static char *read_line(FILE *f, char **buf, size_t *cap)
{
    return getline(buf, cap, f) < 0 ? NULL : *buf;
}

static void read_vec(const char *s, float *out, int64_t n)
{
    char *e;
    for (int64_t i = 0; i < n; i++) {
        out[i] = strtof(s, &e);
        assert_true(e != s);
        s = e;
    }
}

static void lfix_load(lfix *fx, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/fixtures/lbfgs/%s", JOPT_SOURCE_DIR, name);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    memset(fx, 0, sizeof *fx);
    char *line = NULL;
    size_t cap = 0;
    int64_t ccap = 0;
    while (read_line(f, &line, &cap)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "problem ", 8))
            snprintf(fx->problem, sizeof fx->problem, "%s", line + 8);
        else if (!strncmp(line, "options ", 8))
            snprintf(fx->options, sizeof fx->options, "%s", line + 8);
        else if (!strncmp(line, "steps ", 6))
            fx->steps = atoi(line + 6);
        else if (!strncmp(line, "sizes ", 6)) {
            char *s = line + 6, *e;
            for (long v; (v = strtol(s, &e, 10)), e != s; s = e)
                fx->n += v;
        } else if (!strcmp(line, "end"))
            break;
    }
    assert_true(fx->n > 0 && fx->steps > 0);
    int64_t n = fx->n;
    fx->x0 = malloc(sizeof(float) * (size_t)n);
    fx->sloss = calloc((size_t)fx->steps, sizeof *fx->sloss);
    fx->sfe = calloc((size_t)fx->steps, sizeof *fx->sfe);
    fx->sni = calloc((size_t)fx->steps, sizeof *fx->sni);
    fx->send = calloc((size_t)fx->steps, sizeof *fx->send);
    fx->sp = malloc(sizeof(float) * (size_t)(n * fx->steps));
    int s = 0;
    while (read_line(f, &line, &cap)) {
        if (!strncmp(line, "x0 ", 3)) {
            read_vec(line + 3, fx->x0, n);
        } else if (!strncmp(line, "call ", 5)) {
            if (fx->ncalls == ccap) {
                ccap = ccap ? 2 * ccap : 64;
                fx->cf = realloc(fx->cf, sizeof *fx->cf * (size_t)ccap);
                fx->cx = realloc(fx->cx, sizeof(float) * (size_t)(ccap * n));
                fx->cg = realloc(fx->cg, sizeof(float) * (size_t)(ccap * n));
                assert_true(fx->cf && fx->cx && fx->cg);
            }
            char *e;
            strtol(line + 5, &e, 10);
            fx->cf[fx->ncalls++] = strtod(e, NULL);
        } else if (!strncmp(line, "x ", 2)) {
            read_vec(line + 2, fx->cx + (fx->ncalls - 1) * n, n);
        } else if (!strncmp(line, "g ", 2)) {
            read_vec(line + 2, fx->cg + (fx->ncalls - 1) * n, n);
        } else if (!strncmp(line, "step ", 5)) {
            char *e;
            assert_int_equal(strtol(line + 5, &e, 10), s + 1);
            fx->sloss[s] = strtod(e, &e);
            fx->sfe[s] = strtoll(e, &e, 10);
            fx->sni[s] = strtoll(e, &e, 10);
            fx->send[s] = fx->ncalls;
        } else if (!strncmp(line, "p ", 2)) {
            read_vec(line + 2, fx->sp + s * n, n);
            s++;
        }
    }
    assert_int_equal(s, fx->steps);
    free(line);
    fclose(f);
}

static void lfix_free(lfix *fx)
{
    free(fx->x0);
    free(fx->cf);
    free(fx->cx);
    free(fx->cg);
    free(fx->sloss);
    free(fx->sfe);
    free(fx->sni);
    free(fx->send);
    free(fx->sp);
}

/* ---- a jopt run recording every closure call ------------------------------- */

typedef struct lrun {
    jopt_ctx *ctx;
    jopt_optim *opt;
    t_problem p;
    jopt_param params[T_PROBLEM_MAXT];
    int64_t ncalls, cap;
    double *f;
    float *x, *g;
} lrun;

/* one context per engine for every run: its kernel cache compiles each
 * of the spec's kernels once, not once per optimizer */
static jopt_ctx *contexts[2];

static int contexts_free(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++) {
        jopt_ctx_free(contexts[i]);
        contexts[i] = NULL;
    }
    return 0;
}

static void lrun_new_engine(lrun *r, const char *problem, const char *options,
                            jopt_engine engine)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(t_problem_init(&r->p, problem, JOPT_SOURCE_DIR), 0);
    if (!contexts[engine]) {
        assert_int_equal(jopt_ctx_new(&contexts[engine]), JOPT_OK);
        T_OK(contexts[engine], jopt_ctx_set_engine(contexts[engine], engine));
    }
    r->ctx = contexts[engine];
    for (int t = 0; t < r->p.ntensors; t++)
        r->params[t] = (jopt_param){r->p.params[t], r->p.grads[t], r->p.sizes[t]};
    jopt_group group = {r->params, (size_t)r->p.ntensors, NULL};
    T_OK(r->ctx, jopt_optim_new(r->ctx, "lbfgs", &group, 1, options, &r->opt));
}

static void lrun_new(lrun *r, const char *problem, const char *options)
{
    lrun_new_engine(r, problem, options, JOPT_ENGINE_JIT);
}

static void lrun_free(lrun *r)
{
    jopt_optim_free(r->opt);
    t_problem_free(&r->p);
    free(r->f);
    free(r->x);
    free(r->g);
}

static int recording_closure(void *user, double *loss)
{
    lrun *r = user;
    int rc = t_problem_closure(&r->p, loss);
    if (rc != 0)
        return rc;
    int64_t n = r->p.n;
    if (r->ncalls == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->f = realloc(r->f, sizeof *r->f * (size_t)r->cap);
        r->x = realloc(r->x, sizeof(float) * (size_t)(r->cap * n));
        r->g = realloc(r->g, sizeof(float) * (size_t)(r->cap * n));
        assert_true(r->f && r->x && r->g);
    }
    r->f[r->ncalls] = *loss;
    t_problem_get_x(&r->p, r->x + r->ncalls * n);
    t_problem_get_g(&r->p, r->g + r->ncalls * n);
    r->ncalls++;
    return 0;
}

static double scalar_state(const lrun *r, const char *name)
{
    const float *v = NULL;
    T_OK(r->ctx, jopt_state_get(r->opt, 0, 0, name, &v, NULL));
    assert_non_null(v);
    return *v;
}

/* ---- replaying a fixture ------------------------------------------------------- */

static double vec_max(const float *a, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i]));
    return m;
}

/* ||a - b||_inf / scale, or / ||b||_inf when scale is 0 (0 when a == b) */
static double vec_rel_to(const float *a, const float *b, int64_t n, double scale)
{
    double num = 0;
    for (int64_t i = 0; i < n; i++)
        num = fmax(num, fabs((double)a[i] - b[i]));
    if (isnan(num))
        return INFINITY;
    return num == 0 ? 0 : num / (scale > 0 ? scale : vec_max(b, n));
}

static double vec_rel(const float *a, const float *b, int64_t n)
{
    return vec_rel_to(a, b, n, 0);
}

static double scal_rel(double a, double b)
{
    return a == b ? 0 : fabs(a - b) / fabs(b);
}

/* How far a replay came from torch's recording, as relative differences:
 * `f` over the calls' losses and the steps' returned losses, `x` over the
 * calls' x and the steps' parameters (||a-b||_inf/||b||_inf), `g` over the
 * calls' gradients, relative to the first call's ||g||_inf (the gradients
 * near a minimum are small differences of large terms: relative to
 * themselves their noise would look arbitrarily large); over the first
 * `early` calls (and the steps they end) and over all.  first_diff: the first call that differs
 * in any bit (-1: none). */
typedef struct dev {
    double early_f, early_x, early_g, all_f, all_x, all_g;
    int64_t first_diff;
    int counters_equal; /* n_iter after every step as torch's */
} dev;

/* Replays fixture `name`, checking what must hold exactly: the closure
 * calls per step, func_evals, and that each step returns its first
 * evaluation's loss.  Fills *d with the deviations. */
static void replay(const char *name, int64_t early, dev *d)
{
    lfix fx;
    lfix_load(&fx, name);
    lrun r;
    lrun_new(&r, fx.problem, fx.options);
    assert_int_equal(r.p.n, fx.n);
    float *x = malloc(sizeof(float) * (size_t)fx.n);
    t_problem_get_x(&r.p, x);
    assert_memory_equal(x, fx.x0, sizeof(float) * (size_t)fx.n);

    memset(d, 0, sizeof *d);
    d->first_diff = -1;
    d->counters_equal = 1;
    int64_t n = fx.n;
    for (int s = 0; s < fx.steps; s++) {
        double loss;
        T_OK(r.ctx, jopt_step(r.opt, recording_closure, &r, &loss));
        if (r.ncalls != fx.send[s])
            fail_msg("%s: step %d: %lld closure calls in all, torch %lld", name,
                     s + 1, (long long)r.ncalls, (long long)fx.send[s]);
        assert_int_equal((int64_t)scalar_state(&r, "func_evals"), fx.sfe[s]);
        if ((int64_t)scalar_state(&r, "n_iter") != fx.sni[s])
            d->counters_equal = 0;
        int64_t first = s ? fx.send[s - 1] : 0;
        assert_true(loss == r.f[first]);
        t_problem_get_x(&r.p, x);
        double ef = scal_rel(loss, fx.sloss[s]), ex = vec_rel(x, fx.sp + s * n, n);
        d->all_f = fmax(d->all_f, ef);
        d->all_x = fmax(d->all_x, ex);
        if (fx.send[s] <= early) {
            d->early_f = fmax(d->early_f, ef);
            d->early_x = fmax(d->early_x, ex);
        }
    }
    for (int64_t k = 0; k < fx.ncalls; k++) {
        const float *ax = r.x + k * n, *ag = r.g + k * n;
        const float *bx = fx.cx + k * n, *bg = fx.cg + k * n;
        if (d->first_diff < 0 &&
            (r.f[k] != fx.cf[k] || memcmp(ax, bx, sizeof(float) * (size_t)n) ||
             memcmp(ag, bg, sizeof(float) * (size_t)n)))
            d->first_diff = k + 1;
        double ef = scal_rel(r.f[k], fx.cf[k]), ex = vec_rel(ax, bx, n);
        double eg = vec_rel_to(ag, bg, n, vec_max(fx.cg, n));
        d->all_f = fmax(d->all_f, ef);
        d->all_x = fmax(d->all_x, ex);
        d->all_g = fmax(d->all_g, eg);
        if (k < early) {
            d->early_f = fmax(d->early_f, ef);
            d->early_x = fmax(d->early_x, ex);
            d->early_g = fmax(d->early_g, eg);
        }
    }
    print_message("%-32s %2lld calls, 1st diff %3lld; first %2lld: f %.1e x %.1e g %.1e;"
                  " all: f %.1e x %.1e g %.1e%s\n", name, (long long)fx.ncalls,
                  (long long)d->first_diff, (long long)(early < fx.ncalls ? early : fx.ncalls),
                  d->early_f, d->early_x, d->early_g, d->all_f, d->all_x, d->all_g,
                  d->counters_equal ? "" : "; n_iter differs");
    free(x);
    lrun_free(&r);
    lfix_free(&fx);
}

/*
 * The replays' tolerances.  torch's dots and sums accumulate in float32
 * (MKL sdot, ATen's cascade sum), ours in double (specs/lbfgs.lua), so
 * beyond 2-D a trajectory is torch's only approximately; the first
 * difference can come with the first direction (call 3).  What is always
 * exact: the closure calls of every step and func_evals (and n_iter where
 * `counters` says so), which show that the control flow is torch's.
 *
 * Measured with this port (x86-64, gcc 12, LLVM 19, either engine: the
 * trajectory is deterministic); each tolerance is about twice what was
 * measured, quoted beside it.
 */
typedef struct lcase {
    const char *file;
    int64_t early;               /* calls compared with the early tolerances */
    double early_f, early_x, early_g; /* over the first `early` calls */
    double all_f, all_x, all_g;       /* over all of them */
    int counters;                /* n_iter as torch's after every step */
} lcase;

/* rosen2: every recorded call and step equal torch's bit for bit
 * (measured: no difference in the 7 files, 317 calls).  Over 2 elements
 * our double dots rounded once agree with torch's float32 ones here, and
 * the rest is torch's scalar arithmetic. */
#define ROSEN2(file) {file, INT64_MAX, 0, 0, 0, 0, 0, 0, 1}

/* logreg (65-D): torch's and our reductions part at the first direction
 * (call 3) by float rounding noise, which stays small: measured f <=
 * 1.2e-6, x <= 9.2e-4 (wolfe_hist3: x near the minimum along its flattest
 * directions), g <= 3.2e-4 of the first gradient.  Each case's tolerances
 * are about twice what it measured (quoted). */
#define LOGREG(file, f, x, g) {file, INT64_MAX, f, x, g, f, x, g, 1}

/* logreg_wolfe_lr01: at call 18 the loss differs from torch's in its last
 * bit and a line search's comparison goes the other way; the searches
 * part there (same number of calls, different iterations: n_iter is not
 * compared).  Tight up to call 18, loose after. */
#define LOGREG_LR01_EARLY 18

/* rosen100: 100-D Rosenbrock under L-BFGS amplifies a last-bit change
 * (the README: up to 0.8 in the final parameters between torch's own
 * reduction orders).  The first 5 calls are compared tightly (measured up
 * to 3.1e-7), the rest per case at about twice what was measured;
 * rosen100_default's far excursions are chaotic (measured f 0.81, x 1.3,
 * g 0.49): there only the call counts and the first calls mean much. */
#define ROSEN100_EARLY 5
#define ROSEN100_EARLY_TOL 5e-7
#define ROSEN100(file, f, x, g)                                                \
    {file, ROSEN100_EARLY, ROSEN100_EARLY_TOL, ROSEN100_EARLY_TOL,             \
     ROSEN100_EARLY_TOL, f, x, g, 1}

static void check_case(const lcase *c)
{
    dev d;
    replay(c->file, c->early, &d);
    if (!(d.early_f <= c->early_f && d.early_x <= c->early_x && d.early_g <= c->early_g))
        fail_msg("%s: over the first calls f %.3g x %.3g g %.3g, tolerance %.3g %.3g %.3g",
                 c->file, d.early_f, d.early_x, d.early_g, c->early_f, c->early_x,
                 c->early_g);
    if (!(d.all_f <= c->all_f && d.all_x <= c->all_x && d.all_g <= c->all_g))
        fail_msg("%s: f %.3g x %.3g g %.3g, tolerance %.3g %.3g %.3g", c->file,
                 d.all_f, d.all_x, d.all_g, c->all_f, c->all_x, c->all_g);
    if (c->counters && !d.counters_equal)
        fail_msg("%s: n_iter is not torch's", c->file);
    if (c->all_x == 0 && d.first_diff != -1)
        fail_msg("%s: call %lld differs", c->file, (long long)d.first_diff);
}

static const lcase cases[] = {
    ROSEN2("rosen2_default.txt"),
    ROSEN2("rosen2_wolfe.txt"),
    ROSEN2("rosen2_hist3.txt"),
    ROSEN2("rosen2_lr05_tol.txt"),
    ROSEN2("rosen2_wolfe_hist3.txt"),
    ROSEN2("rosen2_wolfe_lr01.ieee-sqrt.txt"),
    ROSEN2("rosen2_wolfe_lr2.ieee-sqrt.txt"),
    /*                                f      x      g      measured f, x, g */
    ROSEN100("rosen100_default.txt", 1.5, 2.5, 1.0),      /* 0.81 1.3 0.49 */
    ROSEN100("rosen100_wolfe.txt", 1e-3, 7e-2, 1e-2),     /* 5.4e-4 3.6e-2 5.7e-3 */
    ROSEN100("rosen100_hist3.txt", 1e-3, 5e-4, 8e-4),     /* 5.1e-4 2.6e-4 3.9e-4 */
    ROSEN100("rosen100_lr05_tol.txt", 3e-6, 4e-4, 2e-5),  /* 1.6e-6 1.8e-4 9.1e-6 */
    ROSEN100("rosen100_wolfe_hist3.txt", 5e-5, 1.3e-3, 3e-5), /* 2.3e-5 6.5e-4 1.5e-5 */
    ROSEN100("rosen100_wolfe_lr01.txt", 5e-7, 3e-6, 5e-7), /* 2.3e-7 1.3e-6 2.7e-7 */
    ROSEN100("rosen100_wolfe_lr2.txt", 8e-5, 9e-3, 3e-4), /* 4.1e-5 4.4e-3 1.3e-4 */
    LOGREG("logreg_default.txt", 1.3e-7, 4e-6, 8e-7),     /* 6.4e-8 2.0e-6 4.1e-7 */
    LOGREG("logreg_wolfe.txt", 1.3e-7, 4e-6, 8e-7),       /* 6.4e-8 2.0e-6 4.1e-7 */
    LOGREG("logreg_hist3.txt", 5e-7, 4e-5, 1.2e-5),       /* 2.7e-7 1.8e-5 5.6e-6 */
    LOGREG("logreg_lr05_tol.txt", 1.3e-7, 4e-7, 2e-7),    /* 6.6e-8 1.8e-7 9.0e-8 */
    LOGREG("logreg_wolfe_hist3.txt", 2.5e-6, 2e-3, 7e-4), /* 1.2e-6 9.2e-4 3.2e-4 */
    LOGREG("logreg_wolfe_lr2.txt", 2.5e-6, 1.7e-3, 1.5e-4), /* 1.1e-6 8.2e-4 7.3e-5 */
    /* first 18 calls: 1.2e-7 2.3e-7 8.8e-8; all: 1.6e-4 5.9e-3 2.8e-3 */
    {"logreg_wolfe_lr01.ieee-sqrt.txt", LOGREG_LR01_EARLY, 2.5e-7, 5e-7, 2e-7,
     3e-4, 1.2e-2, 6e-3, 0},
};

static void test_fixtures(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_case(&cases[i]);
}

/* ---- convergence -------------------------------------------------------------- */

/* steps until the loss at the parameters is below target; -1 if not
 * within max_steps.  Every step returns the loss where it started. */
static int steps_to(lrun *r, double target, int max_steps)
{
    for (int s = 1; s <= max_steps; s++) {
        double start = t_problem_loss(&r->p), loss;
        T_OK(r->ctx, jopt_step(r->opt, recording_closure, r, &loss));
        assert_true(loss == start);
        if (t_problem_loss(&r->p) < target)
            return s;
    }
    return -1;
}

/* Rosenbrock's minimum is f = 0 at all ones; in float32 L-BFGS gets f
 * below 1e-9 (|x - 1| a few 1e-5) and then stops on tolerance_change.  The
 * step counts are this port's deterministic trajectory (same bits with
 * either engine and any thread count). */
/* strong Wolfe to f < 1e-9 in exactly `want` steps, ending near all ones */
static void converges(const char *problem, int max_steps, int want)
{
    lrun r;
    lrun_new(&r, problem, "line_search_fn=strong_wolfe");
    int s = steps_to(&r, 1e-9, max_steps);
    print_message("%s: f < 1e-9 after %d steps, %lld calls, max|x-1| %.3g\n",
                  problem, s, (long long)r.ncalls, t_problem_dist_to_one(&r.p));
    assert_int_equal(s, want);
    assert_true(t_problem_dist_to_one(&r.p) < 1e-4);
    lrun_free(&r);
}

static void test_converges_rosen2(void **state)
{
    (void)state;
    converges("rosen2", 10, 3);
}

static void test_converges_rosen100(void **state)
{
    (void)state;
    converges("rosen100", 60, 25);
}

/* torch's logreg runs end at 0.22247225 (the README's "loss at final
 * params" of logreg_default, _wolfe, _wolfe_lr2): the minimum in float32 */
#define LOGREG_MIN 0.22247225
static void test_converges_logreg(void **state)
{
    (void)state;
    lrun r;
    lrun_new(&r, "logreg", "line_search_fn=strong_wolfe");
    for (int s = 0; s < 5; s++) {
        double loss;
        T_OK(r.ctx, jopt_step(r.opt, recording_closure, &r, &loss));
    }
    double f = t_problem_loss(&r.p);
    print_message("logreg: f = %.9g after 5 steps (torch's minimum %.9g)\n", f, LOGREG_MIN);
    /* within a few float32 ulps of the minimum (ulp there ~1.5e-8) */
    assert_true(fabs(f - LOGREG_MIN) <= 1e-7);
    lrun_free(&r);
}

/* ---- messages ------------------------------------------------------------------ */

static void expect_error(const char *options, int ngroups, int empty,
                         const char *message)
{
    t_problem p;
    assert_int_equal(t_problem_init(&p, "rosen2", JOPT_SOURCE_DIR), 0);
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float b[2] = {0, 0}, gb[2] = {0, 0};
    jopt_param params[2] = {{p.params[0], p.grads[0], 2}, {b, gb, 2}};
    jopt_group groups[2] = {{params, empty ? 0 : 1, NULL}, {params + 1, 1, NULL}};
    jopt_optim *opt = NULL;
    int rc = jopt_optim_new(ctx, "lbfgs", groups, (size_t)ngroups, options, &opt);
    if (rc == JOPT_OK)
        fail_msg("%s: accepted", options);
    assert_int_equal(rc, JOPT_EINVAL);
    if (!strstr(jopt_errmsg(ctx), message))
        fail_msg("%s: message \"%s\", want \"%s\"", options, jopt_errmsg(ctx), message);
    jopt_ctx_free(ctx);
    t_problem_free(&p);
}

/* tests/fixtures/lbfgs/messages.txt: torch's exact messages */
static void test_messages(void **state)
{
    (void)state;
    char path[1024], line[512];
    snprintf(path, sizeof path, "%s/tests/fixtures/lbfgs/messages.txt", JOPT_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int checked = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = 0;
        const char *opts = line, *msg = tab + 1;
        if (!strcmp(opts, "line_search_fn=bogus"))
            continue; /* torch raises at step(); we refuse it when built */
        if (!strcmp(opts, "groups=2"))
            expect_error(NULL, 2, 0, msg);
        else if (!strcmp(opts, "params=empty"))
            expect_error(NULL, 1, 1, msg);
        else
            expect_error(opts, 1, 0, msg);
        checked++;
    }
    fclose(f);
    assert_true(checked >= 5);
    /* a choice outside {"none", "strong_wolfe"}: refused when built, with
     * a message that names the option */
    expect_error("line_search_fn=bogus", 1, 0, "line_search_fn");
}

static void test_step_needs_closure(void **state)
{
    (void)state;
    lrun r;
    lrun_new(&r, "rosen2", NULL);
    double loss = 0;
    assert_int_equal(jopt_step(r.opt, NULL, NULL, &loss), JOPT_EINVAL);
    assert_int_equal(r.p.calls, 0);
    lrun_free(&r);
}

/* A closure that calls back into its own optimizer: each call that would
 * change it under the running step is refused, and the step goes on. */
typedef struct reentrant {
    lrun *r;
    unsigned char *ckpt;
    size_t len;
    int refused;
} reentrant;

static int reentrant_closure(void *user, double *loss)
{
    reentrant *e = user;
    jopt_optim *opt = e->r->opt;
    double l;
    e->refused += jopt_step(opt, recording_closure, e->r, &l) == JOPT_EINVAL;
    e->refused += jopt_state_load_mem(opt, e->ckpt, e->len) == JOPT_EINVAL;
    e->refused += jopt_option_set(opt, 0, "lr", 0.5) == JOPT_EINVAL;
    e->refused += jopt_options_set(opt, 0, "history_size=3") == JOPT_EINVAL;
    return t_problem_closure(&e->r->p, loss);
}

static void test_closure_cannot_change_its_optimizer(void **state)
{
    (void)state;
    lrun a, b;
    lrun_new(&a, "rosen2", "line_search_fn=strong_wolfe");
    lrun_new(&b, "rosen2", "line_search_fn=strong_wolfe");
    reentrant e = {&a, NULL, 0, 0};
    T_OK(a.ctx, jopt_state_size(a.opt, &e.len));
    e.ckpt = malloc(e.len);
    T_OK(a.ctx, jopt_state_save_mem(a.opt, e.ckpt, e.len, NULL));
    double la, lb;
    T_OK(a.ctx, jopt_step(a.opt, reentrant_closure, &e, &la));
    assert_non_null(strstr(jopt_errmsg(a.ctx), "from inside the closure"));
    T_OK(b.ctx, jopt_step(b.opt, recording_closure, &b, &lb));
    /* refused every time, and the step is the one a plain closure takes */
    assert_int_equal(e.refused, 4 * a.p.calls);
    assert_int_equal(a.p.calls, b.p.calls);
    assert_true(la == lb);
    float xa[2], xb[2];
    t_problem_get_x(&a.p, xa);
    t_problem_get_x(&b.p, xb);
    assert_memory_equal(xa, xb, sizeof xa);
    double lr;
    T_OK(a.ctx, jopt_option_get(a.opt, 0, "lr", &lr));
    assert_true(lr == 1);
    free(e.ckpt);
    lrun_free(&a);
    lrun_free(&b);
}

/* torch's constructor fixes max_eval=None at max_iter*5//4: changing
 * max_iter later does not move it */
static void test_max_eval_fixed_at_construction(void **state)
{
    (void)state;
    lrun r;
    lrun_new(&r, "rosen2", "max_iter=5");
    double v;
    T_OK(r.ctx, jopt_option_get(r.opt, 0, "max_eval", &v));
    assert_true(v == 6);
    T_OK(r.ctx, jopt_option_set(r.opt, 0, "max_iter", 2));
    T_OK(r.ctx, jopt_option_get(r.opt, 0, "max_eval", &v));
    assert_true(v == 6);
    lrun_free(&r);
}

/* ---- options torch does not check, and the state ----------------------------- */

/* one step; returns its closure calls */
static int64_t one_step(lrun *r)
{
    int64_t before = r->ncalls;
    double loss;
    T_OK(r->ctx, jopt_step(r->opt, recording_closure, r, &loss));
    return r->ncalls - before;
}

/* The behaviour the fixture README recorded by hand for torch. */
static void test_edge_options(void **state)
{
    (void)state;
    lrun r;
    float x0[2], x[2];
    /* max_iter <= 0: the step's one call, no move, n_iter stays 0 */
    lrun_new(&r, "rosen2", "max_iter=0");
    t_problem_get_x(&r.p, x0);
    assert_int_equal(one_step(&r), 1);
    t_problem_get_x(&r.p, x);
    assert_memory_equal(x, x0, sizeof x);
    assert_true(scalar_state(&r, "n_iter") == 0);
    lrun_free(&r);
    /* max_eval=0: one iteration, 2 calls, then the max_eval break */
    lrun_new(&r, "rosen2", "max_eval=0");
    assert_int_equal(one_step(&r), 2);
    assert_true(scalar_state(&r, "n_iter") == 1);
    lrun_free(&r);
    /* optimal at the start: one call, nothing else */
    lrun_new(&r, "rosen2", "tolerance_grad=1e3");
    assert_int_equal(one_step(&r), 1);
    assert_true(scalar_state(&r, "func_evals") == 1);
    const float *d = NULL;
    T_OK(r.ctx, jopt_state_get(r.opt, 0, 0, "d", &d, NULL));
    assert_null(d);
    lrun_free(&r);
    /* max_iter=3 with the default max_eval (3*5//4 = 3): no line search
     * makes max_iter calls; strong Wolfe may make max_eval + 1 */
    lrun_new(&r, "rosen100", "max_iter=3");
    assert_int_equal(one_step(&r), 3);
    lrun_free(&r);
    /* history_size=0: torch fails (pop from an empty list) when it would
     * store the first pair; we keep no pairs, i.e. scaled steepest descent */
    lrun_new(&r, "rosen2", "history_size=0 line_search_fn=strong_wolfe");
    double before = t_problem_loss(&r.p);
    for (int s = 0; s < 3; s++)
        one_step(&r);
    assert_true(t_problem_loss(&r.p) < before);
    lrun_free(&r);
}

/* torch's state names, readable after the first step; an lr changed
 * between steps applies from the next one */
static void test_state(void **state)
{
    (void)state;
    lrun r;
    lrun_new(&r, "logreg", NULL);
    const float *v = NULL;
    int64_t numel = -1;
    T_OK(r.ctx, jopt_state_get(r.opt, 0, 0, "d", &v, NULL));
    assert_null(v);
    T_OK(r.ctx, jopt_state_numel(r.opt, 0, 0, "d", &numel));
    assert_int_equal(numel, 0);
    one_step(&r);
    T_OK(r.ctx, jopt_state_numel(r.opt, 0, 0, "d", &numel));
    assert_int_equal(numel, r.p.sizes[0]);
    T_OK(r.ctx, jopt_state_numel(r.opt, 0, 1, "prev_flat_grad", &numel));
    assert_int_equal(numel, 1);
    T_OK(r.ctx, jopt_state_numel(r.opt, 0, 0, "t", &numel));
    assert_int_equal(numel, 1);
    /* prev_flat_grad is the gradient where the last direction was made */
    T_OK(r.ctx, jopt_state_get(r.opt, 0, 1, "prev_flat_grad", &v, NULL));
    assert_non_null(v);
    assert_true(scalar_state(&r, "func_evals") == 20);
    assert_true(scalar_state(&r, "n_iter") == 20);
    assert_true(scalar_state(&r, "t") == 1);
    assert_true(jopt_state_get(r.opt, 0, 0, "nosuch", &v, NULL) != JOPT_OK);
    T_OK(r.ctx, jopt_option_set(r.opt, 0, "lr", 0.5));
    one_step(&r);
    assert_true(scalar_state(&r, "t") == 0.5f);
    lrun_free(&r);
}

/* ---- rollback --------------------------------------------------------------------- */

static const char *const flat_states[] = {"d", "prev_flat_grad"};
static const char *const scalar_states[] = {"t", "H_diag", "prev_loss",
                                            "func_evals", "n_iter"};

/* the driver's visible state, flattened */
static size_t snapshot_state(const lrun *r, float *out)
{
    size_t k = 0;
    for (size_t i = 0; i < 2; i++) {
        const float *v = NULL;
        T_OK(r->ctx, jopt_state_get(r->opt, 0, 0, flat_states[i], &v, NULL));
        for (int64_t j = 0; j < r->p.n; j++)
            out[k++] = v ? v[j] : NAN;
    }
    for (size_t i = 0; i < 5; i++) {
        const float *v = NULL;
        T_OK(r->ctx, jopt_state_get(r->opt, 0, 0, scalar_states[i], &v, NULL));
        out[k++] = v ? *v : NAN;
    }
    return k;
}

/* The closure fails at call `fail_call` of step `fail_step` (1-based):
 * that step returns JOPT_ECLOSURE with the parameters and state bit for
 * bit as before it, and the run then continues exactly as a run that never
 * saw the failure. */
static void check_rollback(const char *problem, const char *options, int steps,
                           int fail_step, int64_t fail_call)
{
    lrun a, b;
    lrun_new(&a, problem, options);
    lrun_new(&b, problem, options);
    int64_t n = a.p.n;
    float *xa = malloc(sizeof(float) * (size_t)n), *xb = malloc(sizeof(float) * (size_t)n);
    float *sa = malloc(sizeof(float) * (size_t)(2 * n + 5));
    float *sb = malloc(sizeof(float) * (size_t)(2 * n + 5));
    for (int s = 1; s <= steps; s++) {
        double la, lb;
        int64_t ca = a.ncalls;
        T_OK(a.ctx, jopt_step(a.opt, recording_closure, &a, &la));
        ca = a.ncalls - ca;
        if (s == fail_step) {
            t_problem_get_x(&b.p, xb);
            size_t ns = snapshot_state(&b, sb);
            b.p.fail_at = b.p.calls + fail_call;
            assert_int_equal(jopt_step(b.opt, recording_closure, &b, &lb), JOPT_ECLOSURE);
            assert_int_equal(b.p.calls, b.p.fail_at);
            b.p.fail_at = 0;
            t_problem_get_x(&b.p, xa);
            assert_memory_equal(xa, xb, sizeof(float) * (size_t)n);
            assert_int_equal(snapshot_state(&b, sa), ns);
            assert_memory_equal(sa, sb, sizeof(float) * ns);
        }
        int64_t cb = b.ncalls;
        T_OK(b.ctx, jopt_step(b.opt, recording_closure, &b, &lb));
        cb = b.ncalls - cb;
        assert_int_equal(ca, cb);
        assert_true(memcmp(&la, &lb, sizeof la) == 0);
        t_problem_get_x(&a.p, xa);
        t_problem_get_x(&b.p, xb);
        assert_memory_equal(xa, xb, sizeof(float) * (size_t)n);
        snapshot_state(&a, sa);
        size_t ns = snapshot_state(&b, sb);
        assert_memory_equal(sa, sb, sizeof(float) * ns);
    }
    free(xa);
    free(xb);
    free(sa);
    free(sb);
    lrun_free(&a);
    lrun_free(&b);
}

static void test_rollback(void **state)
{
    (void)state;
    /* the first step (no state yet), the first call of a later step, a
     * line search's trial, the step's last call, with the history full
     * and wrapping (history_size=3) */
    const char *wolfe = "line_search_fn=strong_wolfe history_size=3 max_iter=5";
    check_rollback("rosen2", wolfe, 6, 1, 1);
    check_rollback("rosen2", wolfe, 6, 1, 3);
    check_rollback("rosen2", wolfe, 6, 4, 1);
    check_rollback("rosen2", wolfe, 6, 4, 3);
    check_rollback("rosen2", wolfe, 6, 5, 7);
    check_rollback("logreg", wolfe, 6, 3, 4);
    /* without a line search: a move's evaluation */
    check_rollback("rosen100", "history_size=3 max_iter=5", 4, 3, 2);
    check_rollback("rosen100", "history_size=3 max_iter=5", 4, 3, 5);
}

/* ---- JIT against the reference interpreter ------------------------------------- */

static void test_reference_engine(void **state)
{
    (void)state;
    const char *opts = "line_search_fn=strong_wolfe history_size=3 max_iter=5";
    lrun a, b;
    lrun_new_engine(&a, "rosen100", opts, JOPT_ENGINE_JIT);
    lrun_new_engine(&b, "rosen100", opts, JOPT_ENGINE_REFERENCE);
    for (int s = 0; s < 4; s++) {
        double la, lb;
        T_OK(a.ctx, jopt_step(a.opt, recording_closure, &a, &la));
        T_OK(b.ctx, jopt_step(b.opt, recording_closure, &b, &lb));
        assert_true(memcmp(&la, &lb, sizeof la) == 0);
    }
    assert_int_equal(a.ncalls, b.ncalls);
    assert_memory_equal(a.x, b.x, sizeof(float) * (size_t)(a.ncalls * a.p.n));
    assert_memory_equal(a.g, b.g, sizeof(float) * (size_t)(a.ncalls * a.p.n));
    for (int t = 0; t < a.p.ntensors; t++)
        assert_memory_equal(a.p.params[t], b.p.params[t], sizeof(float) * (size_t)a.p.sizes[t]);
    lrun_free(&a);
    lrun_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixtures),
        cmocka_unit_test(test_converges_rosen2),
        cmocka_unit_test(test_converges_rosen100),
        cmocka_unit_test(test_converges_logreg),
        cmocka_unit_test(test_messages),
        cmocka_unit_test(test_step_needs_closure),
        cmocka_unit_test(test_closure_cannot_change_its_optimizer),
        cmocka_unit_test(test_max_eval_fixed_at_construction),
        cmocka_unit_test(test_edge_options),
        cmocka_unit_test(test_state),
        cmocka_unit_test(test_rollback),
        cmocka_unit_test(test_reference_engine),
    };
    return cmocka_run_group_tests(tests, NULL, contexts_free);
}
