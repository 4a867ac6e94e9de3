/*
 * test_cg.c - the conjugate gradient closure optimizer (specs/cg.lua,
 * runtime/conjgrad.c), torch7's optim.cg: one jopt_step is one optim.cg
 * call.  On the fixture problems (tests/problems.h): convergence and the
 * steps it takes, the evaluation budget, the option checks, rollback when
 * the closure fails, JIT against the reference interpreter, and every
 * closure call against tests/torch/cg_reference.py (a Python transcription
 * of cg.lua with the port's arithmetic, tests/fixtures/cg).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "problems.h"

/* The per-call losses must equal the Python transcription's within this
 * relative difference (measured: see tests/fixtures/cg/README.md). */
#define REF_RTOL 0.0

typedef struct cg_run {
    jopt_ctx *ctx;
    jopt_optim *opt;
    t_problem p;
    jopt_param params[T_PROBLEM_MAXT];
    /* per-call losses, when recording */
    double *calls;
    int64_t ncalls, cap;
} cg_run;

static void run_new_engine(cg_run *r, const char *problem, const char *options,
                           jopt_engine engine)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(t_problem_init(&r->p, problem, JOPT_SOURCE_DIR), 0);
    assert_int_equal(jopt_ctx_new(&r->ctx), JOPT_OK);
    T_OK(r->ctx, jopt_ctx_set_engine(r->ctx, engine));
    for (int t = 0; t < r->p.ntensors; t++)
        r->params[t] = (jopt_param){r->p.params[t], r->p.grads[t], r->p.sizes[t]};
    jopt_group group = {r->params, (size_t)r->p.ntensors, NULL};
    T_OK(r->ctx, jopt_optim_new(r->ctx, "cg", &group, 1, options, &r->opt));
}

static void run_new(cg_run *r, const char *problem, const char *options)
{
    run_new_engine(r, problem, options, JOPT_ENGINE_JIT);
}

static void run_free(cg_run *r)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    t_problem_free(&r->p);
    free(r->calls);
}

/* the problem's closure, keeping each call's loss */
static int recording_closure(void *user, double *loss)
{
    cg_run *r = user;
    int rc = t_problem_closure(&r->p, loss);
    if (rc == 0) {
        if (r->ncalls == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 256;
            r->calls = realloc(r->calls, (size_t)r->cap * sizeof *r->calls);
            assert_non_null(r->calls);
        }
        r->calls[r->ncalls++] = *loss;
    }
    return rc;
}

/* one jopt_step; returns the closure calls it made */
static int64_t step(cg_run *r, double *loss)
{
    int64_t before = r->p.calls;
    T_OK(r->ctx, jopt_step(r->opt, recording_closure, r, loss));
    return r->p.calls - before;
}

/* Steps until the loss at the parameters is below `target` (at most
 * `max_steps`); the returned loss of each step must be the loss where the
 * step started, as torch's step(closure) returns its first loss. */
static int steps_to(cg_run *r, double target, int max_steps, int64_t *evals)
{
    *evals = 0;
    for (int s = 1; s <= max_steps; s++) {
        double start = t_problem_loss(&r->p), loss;
        *evals += step(r, &loss);
        assert_true(loss == start);
        if (t_problem_loss(&r->p) < target)
            return s;
    }
    return -1;
}

/* ---- convergence ---------------------------------------------------------- */

/* Counts and steps are this port's deterministic trajectory (the same
 * bits on any machine and thread count); rosen2's is also the Python
 * transcription's (test_reference_*). */
static void test_converges_rosen2(void **unused)
{
    (void)unused;
    cg_run r;
    run_new(&r, "rosen2", NULL);
    int64_t evals;
    int steps = steps_to(&r, 1e-10, 50, &evals);
    print_message("rosen2: f < 1e-10 after %d steps, %lld evaluations, "
                  "max|x-1| %.3g\n", steps, (long long)evals, t_problem_dist_to_one(&r.p));
    assert_int_equal(steps, 5);
    assert_int_equal(evals, 125);
    assert_true(t_problem_dist_to_one(&r.p) < 1e-5);
    run_free(&r);
}

static void test_converges_rosen100(void **unused)
{
    (void)unused;
    cg_run r;
    run_new(&r, "rosen100", NULL);
    int64_t evals;
    int steps = steps_to(&r, 1e-6, 400, &evals);
    print_message("rosen100: f < 1e-6 after %d steps, %lld evaluations, "
                  "max|x-1| %.3g\n", steps, (long long)evals, t_problem_dist_to_one(&r.p));
    assert_int_equal(steps, 94);
    assert_int_equal(evals, 2350);
    assert_true(t_problem_dist_to_one(&r.p) < 1e-3);
    run_free(&r);
}

/* L-BFGS's fixtures end at 0.22247225 (tests/fixtures/lbfgs/README.md).
 * cg gets within 2 float32 ulps (1.5e-8 each here) in 4 steps, then stops:
 * float32 noise fails the next line search, which puts x back, and every
 * later step (a fresh cg call from the same point) fails the same way
 * (22 evaluations, no move).  (The closure calls libm's exp and log1p, so
 * counts are bounds, not exact, here.) */
static void test_converges_logreg(void **unused)
{
    (void)unused;
    cg_run r;
    run_new(&r, "logreg", NULL);
    int64_t evals;
    int steps = steps_to(&r, 0.22247225 + 5e-8, 100, &evals);
    double f = t_problem_loss(&r.p);
    print_message("logreg: f %.9g after %d steps, %lld evaluations\n", f,
                  steps, (long long)evals);
    assert_true(steps > 0 && steps <= 5);
    assert_true(fabs(f - 0.22247225) < 5e-8);
    float x[65], y[65];
    t_problem_get_x(&r.p, x);
    for (int s = 0; s < 3; s++) {
        double loss;
        step(&r, &loss);
    }
    t_problem_get_x(&r.p, y);
    assert_memory_equal(x, y, sizeof x);
    print_message("logreg: 3 more steps move nothing; f %.9g\n", t_problem_loss(&r.p));
    assert_true(t_problem_loss(&r.p) <= f);
    assert_true(fabs(t_problem_loss(&r.p) - 0.22247225) < 5e-8);
    run_free(&r);
}

/* ---- the evaluation budget ------------------------------------------------ */

/* With a whole max_eval a step never makes more evaluations than it. */
static void check_budget(const char *problem, const char *options,
                         int64_t max_eval, int steps)
{
    cg_run r;
    run_new(&r, problem, options);
    int64_t most = 0;
    for (int s = 0; s < steps; s++) {
        double loss;
        int64_t n = step(&r, &loss);
        assert_true(n >= 1 && n <= max_eval);
        most = n > most ? n : most;
    }
    print_message("%s %s: at most %lld evaluations per step (max_eval %lld)\n",
                  problem, options ? options : "(defaults)", (long long)most,
                  (long long)max_eval);
    run_free(&r);
}

static void test_budget_whole(void **unused)
{
    (void)unused;
    check_budget("rosen100", NULL, 25, 20);
    check_budget("rosen100", "max_iter=4", 5, 20);
    check_budget("rosen2", "max_iter=8 max_eval=7", 7, 10);
    check_budget("logreg", "max_eval=12", 12, 10);
}

/* max_eval <= 1: the first evaluation only, nothing moves */
static void test_budget_one(void **unused)
{
    (void)unused;
    const char *opts[] = {"max_eval=1", "max_eval=0", "max_iter=0"};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        cg_run r;
        run_new(&r, "rosen2", opts[k]);
        float before[2], after[2];
        t_problem_get_x(&r.p, before);
        double loss;
        assert_int_equal(step(&r, &loss), 1);
        assert_true(loss == 12.5);
        t_problem_get_x(&r.p, after);
        assert_memory_equal(before, after, sizeof before);
        run_free(&r);
    }
}

/* At a stationary point (cg_reference.md, "Termination summary") the search
 * extrapolates along s = 0 until its budget runs out: 2 + min(max_iter,
 * max_eval - 2) evaluations, parameters unchanged.  With a fractional
 * budget (max_iter=5: max_eval 6.25, m = 4.25, 3.25, ...) m never reaches 0
 * and torch7 loops forever; the port's guard (conjgrad.c) stops at
 * m <= -1000: m = -1000.75 after 2 + 1005 evaluations. */
static void test_budget_stationary(void **unused)
{
    (void)unused;
    static const struct { const char *opts; int64_t evals; } cases[] = {
        {NULL, 22}, {"max_iter=5 max_eval=10", 7}, {"max_iter=30 max_eval=9", 9},
        {"max_iter=0 max_eval=5", 2}, {"max_iter=5", 1007},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        cg_run r;
        run_new(&r, "rosen2", cases[k].opts);
        const float one[2] = {1, 1};
        float after[2];
        t_problem_set_x(&r.p, one);
        double loss;
        assert_int_equal(step(&r, &loss), cases[k].evals);
        assert_true(loss == 0);
        t_problem_get_x(&r.p, after);
        assert_memory_equal(one, after, sizeof one);
        run_free(&r);
    }
}

/* A fractional budget (max_iter=3: max_eval 3.75) never makes m == 0: the
 * searches may run past it, as torch7's do (test_reference_fractional has
 * the exact counts); no step reaches the port's runaway guard. */
static void test_budget_fractional(void **unused)
{
    (void)unused;
    const char *problems[] = {"rosen2", "rosen100", "logreg"};
    for (size_t k = 0; k < 3; k++) {
        cg_run r;
        run_new(&r, problems[k], "max_iter=3");
        int64_t most = 0;
        for (int s = 0; s < 30; s++) {
            double loss;
            int64_t n = step(&r, &loss);
            assert_true(n >= 1 && n < 4 + 100);
            most = n > most ? n : most;
        }
        print_message("%s max_iter=3: at most %lld evaluations per step\n",
                      problems[k], (long long)most);
        run_free(&r);
    }
}

/* ---- options -------------------------------------------------------------- */

static void test_bad_options(void **unused)
{
    (void)unused;
    static const struct { const char *opts, *msg; } cases[] = {
        {"rho=0", "Invalid rho value: 0.0 (cg needs 0 < rho < 1)"},
        {"rho=1", "Invalid rho value: 1.0 (cg needs 0 < rho < 1)"},
        {"rho=nan", "Invalid rho value: nan"},
        {"sig=0.01", "Invalid sig value: 0.01 (cg needs rho < sig < 1, rho is 0.01)"},
        {"rho=0.6", "Invalid sig value: 0.5 (cg needs rho < sig < 1, rho is 0.6)"},
        {"sig=1", "Invalid sig value: 1.0"},
        {"int=0", "Invalid int value: 0.0 (cg needs 0 < int <= 0.5)"},
        {"int=0.6", "Invalid int value: 0.6"},
        {"ext=1", "Invalid ext value: 1.0 (cg needs ext > 1)"},
        {"ratio=0", "Invalid ratio value: 0 (cg needs ratio > 0)"},
        {"max_iter=-1", "Invalid max_iter value: -1 (cg needs a whole number >= 0)"},
        {"max_iter=2.5", "Invalid max_iter value: 2.5"},
        {"max_iter=inf", "Invalid max_iter value: inf"},
        {"max_eval=-1", "Invalid max_eval value: -1"},
        {"max_eval=inf", "Invalid max_eval value: inf"},
    };
    t_problem p;
    assert_int_equal(t_problem_init(&p, "rosen2", JOPT_SOURCE_DIR), 0);
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    jopt_param params[1] = {{p.params[0], p.grads[0], p.sizes[0]}};
    jopt_group group = {params, 1, NULL};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        jopt_optim *opt = NULL;
        int rc = jopt_optim_new(ctx, "cg", &group, 1, cases[k].opts, &opt);
        const char *msg = jopt_errmsg(ctx);
        if (rc != JOPT_EINVAL || !strstr(msg, cases[k].msg))
            fail_msg("%s -> %d: \"%s\", expected \"%s\"", cases[k].opts, rc,
                     msg, cases[k].msg);
        assert_null(opt);
    }
    /* accepted edges, and None for max_eval */
    const char *good[] = {"int=0.5 rho=0.3 sig=0.4", "max_eval=None",
                          "max_iter=0", "max_eval=2.5", "ratio=1e-3 ext=1.5"};
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
        jopt_optim *opt = NULL;
        T_OK(ctx, jopt_optim_new(ctx, "cg", &group, 1, good[k], &opt));
        jopt_optim_free(opt);
    }
    /* a later change is checked too, and a refused one changes nothing */
    jopt_optim *opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "cg", &group, 1, NULL, &opt));
    assert_int_equal(jopt_option_set(opt, 0, "sig", 0.001), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "Invalid sig value: 0.001"));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    t_problem_free(&p);
}

/* ---- rollback ------------------------------------------------------------- */

/* A closure that fails at any call of a step: JOPT_ECLOSURE, the parameters
 * bit for bit as before the step, and the next step as if nothing had
 * happened (cg keeps no state across steps). */
static void test_closure_failure(void **unused)
{
    (void)unused;
    const char *problems[] = {"rosen2", "logreg"};
    for (size_t q = 0; q < 2; q++) {
        cg_run clean, r;
        run_new(&clean, problems[q], NULL);
        run_new(&r, problems[q], NULL);
        double loss, loss_clean;
        step(&clean, &loss_clean);
        step(&r, &loss);
        int64_t per_step = step(&clean, &loss_clean); /* the clean 2nd step */
        float before[65], after[65], want[65];
        t_problem_get_x(&clean.p, want);
        t_problem_get_x(&r.p, before);
        const int64_t at[] = {1, 2, 3, 7, per_step};
        for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
            r.p.fail_at = r.p.calls + at[k];
            double l = -1;
            assert_int_equal(jopt_step(r.opt, recording_closure, &r, &l),
                             JOPT_ECLOSURE);
            assert_true(strlen(jopt_errmsg(r.ctx)) > 0);
            t_problem_get_x(&r.p, after);
            assert_memory_equal(before, after, (size_t)r.p.n * sizeof(float));
        }
        r.p.fail_at = 0;
        step(&r, &loss);
        assert_true(loss == loss_clean);
        t_problem_get_x(&r.p, after);
        assert_memory_equal(want, after, (size_t)r.p.n * sizeof(float));
        run_free(&clean);
        run_free(&r);
    }
}

/* ---- JIT against the reference interpreter -------------------------------- */

static void test_jit_vs_reference(void **unused)
{
    (void)unused;
    static const struct { const char *problem, *opts; int steps; } cases[] = {
        {"rosen2", NULL, 6}, {"rosen100", NULL, 30}, {"logreg", NULL, 8},
        {"rosen100", "max_iter=3 rho=0.05 sig=0.2", 20},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        cg_run a, b;
        run_new_engine(&a, cases[k].problem, cases[k].opts, JOPT_ENGINE_JIT);
        run_new_engine(&b, cases[k].problem, cases[k].opts, JOPT_ENGINE_REFERENCE);
        for (int s = 0; s < cases[k].steps; s++) {
            double la, lb;
            step(&a, &la);
            step(&b, &lb);
            assert_memory_equal(&la, &lb, sizeof la);
        }
        assert_int_equal(a.ncalls, b.ncalls);
        assert_memory_equal(a.calls, b.calls, (size_t)a.ncalls * sizeof(double));
        float xa[100], xb[100];
        t_problem_get_x(&a.p, xa);
        t_problem_get_x(&b.p, xb);
        assert_memory_equal(xa, xb, (size_t)a.p.n * sizeof(float));
        run_free(&a);
        run_free(&b);
    }
}

/* ---- against the Python transcription of cg.lua --------------------------- */

typedef struct ref_fixture {
    double *calls;     /* per closure call */
    int64_t ncalls;
    int steps;
    int64_t evals[64]; /* per step */
    int searches[64];  /* successful line searches per step (#fx - 1) */
    double loss[64];
    float p[64][100];  /* parameters after each step */
    int64_t n;
    char options[256];
} ref_fixture;

static void ref_load(ref_fixture *f, const char *name)
{
    char path[4096], line[8192];
    snprintf(path, sizeof path, "%s/tests/fixtures/cg/%s", JOPT_SOURCE_DIR, name);
    FILE *in = fopen(path, "r");
    if (!in)
        fail_msg("cannot open %s", path);
    memset(f, 0, sizeof *f);
    f->calls = malloc(100000 * sizeof *f->calls);
    assert_non_null(f->calls);
    int body = 0;
    while (fgets(line, sizeof line, in)) {
        char *e;
        if (!body) {
            body = strcmp(line, "end\n") == 0;
            if (strncmp(line, "steps ", 6) == 0)
                assert_true(atoi(line + 6) < 64);
            if (strncmp(line, "options ", 8) == 0) {
                snprintf(f->options, sizeof f->options, "%.255s", line + 8);
                f->options[strcspn(f->options, "\n")] = 0;
            }
            continue;
        }
        if (strncmp(line, "call ", 5) == 0) {
            long long k = strtoll(line + 5, &e, 10);
            assert_int_equal(k, f->ncalls + 1);
            f->calls[f->ncalls++] = strtod(e, NULL);
        } else if (strncmp(line, "step ", 5) == 0) {
            int s = (int)strtol(line + 5, &e, 10);
            assert_int_equal(s, f->steps + 1);
            f->loss[f->steps] = strtod(e, &e);
            f->evals[f->steps] = strtoll(e, &e, 10);
            f->searches[f->steps] = (int)strtol(e, &e, 10);
            f->steps++;
        } else if (line[0] == 'p' && line[1] == ' ') {
            char *c = line + 2;
            int64_t k = 0;
            for (; k < 100; k++) {
                double v = strtod(c, &e);
                if (e == c)
                    break;
                f->p[f->steps - 1][k] = (float)v;
                c = e;
            }
            f->n = k;
        }
    }
    fclose(in);
    assert_true(f->ncalls > 0 && f->steps > 0);
}

/* Every call's loss (relative difference at most REF_RTOL), the
 * evaluations per step exactly, the parameters after each step. */
static void check_reference(const char *problem, const char *file)
{
    ref_fixture f;
    ref_load(&f, file);
    cg_run r;
    run_new(&r, problem, f.options[0] ? f.options : NULL);
    assert_int_equal(r.p.n, f.n);
    double worst = 0;
    uint32_t worst_ulp = 0;
    for (int s = 0; s < f.steps; s++) {
        double loss;
        int64_t n = step(&r, &loss);
        assert_int_equal(n, f.evals[s]);
        assert_true(loss == f.loss[s]);
        float x[100];
        t_problem_get_x(&r.p, x);
        worst_ulp = (uint32_t)fmax(worst_ulp, t_max_ulp(x, f.p[s], f.n, NULL));
    }
    assert_int_equal(r.ncalls, f.ncalls);
    for (int64_t k = 0; k < f.ncalls; k++) {
        double a = r.calls[k], b = f.calls[k];
        double d = a == b ? 0 : fabs(a - b) / fmax(fabs(a), fabs(b));
        worst = fmax(worst, d);
    }
    print_message("%s: %lld calls over %d steps; per-call loss rel. diff %.3g "
                  "(tolerance %.3g); parameters %u ulp\n", file,
                  (long long)f.ncalls, f.steps, worst, REF_RTOL, worst_ulp);
    assert_true(worst <= REF_RTOL);
    assert_int_equal(worst_ulp, 0);
    run_free(&r);
    free(f.calls);
}

static void test_reference_rosen2(void **unused)
{
    (void)unused;
    check_reference("rosen2", "rosen2_default.txt");
}

static void test_reference_rosen100(void **unused)
{
    (void)unused;
    check_reference("rosen100", "rosen100_default.txt");
}

/* max_iter=3: a fractional budget (3.75), searches past it (11+11+9+...) */
static void test_reference_fractional(void **unused)
{
    (void)unused;
    check_reference("rosen100", "rosen100_max_iter3.txt");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_converges_rosen2),
        cmocka_unit_test(test_converges_rosen100),
        cmocka_unit_test(test_converges_logreg),
        cmocka_unit_test(test_budget_whole),
        cmocka_unit_test(test_budget_one),
        cmocka_unit_test(test_budget_stationary),
        cmocka_unit_test(test_budget_fractional),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_closure_failure),
        cmocka_unit_test(test_jit_vs_reference),
        cmocka_unit_test(test_reference_rosen2),
        cmocka_unit_test(test_reference_rosen100),
        cmocka_unit_test(test_reference_fractional),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
