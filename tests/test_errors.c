/*
 * test_errors.c - every bad input gets a clear error and loses nothing.
 *
 * For each kind of bad input (hyperparameters, option strings, specs that
 * misbehave in the sandbox, buffers and arguments) the tests assert the
 * exact status code and part of the message jopt_errmsg gives, and that a
 * call that fails on an existing optimizer leaves its parameters, gradients,
 * state and options bitwise as they were.  Specs that could hang the process
 * if the sandbox failed run in a forked child under a watchdog, so a
 * regression fails the test instead of hanging the suite.
 *
 * Temporary spec files live in a mkdtemp() folder removed at the end.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

/* ---- shared fixtures ----------------------------------------------------- */

static char g_dir[256]; /* the mkdtemp() folder for spec files */

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/jopt_test_errors_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

/* writes `src` to <g_dir>/<name>.lua; its path goes to `path` */
static void write_spec(char *path, size_t len, const char *name, const char *src)
{
    snprintf(path, len, "%s/%s.lua", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(src, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* What a test makes is tracked and freed by its teardown, so a test that
 * fails half-way leaks nothing (and the sanitizer run reports only jopt's
 * leaks).  Optimizers go first, then contexts, then buffers. */
enum { MAX_TRACKED = 64 };
static jopt_optim *g_opts[MAX_TRACKED];
static jopt_ctx *g_ctxs[MAX_TRACKED];
static void *g_mem[MAX_TRACKED];
static size_t g_nopts, g_nctxs, g_nmem;

static int test_teardown(void **state)
{
    (void)state;
    while (g_nopts)
        jopt_optim_free(g_opts[--g_nopts]);
    while (g_nctxs)
        jopt_ctx_free(g_ctxs[--g_nctxs]);
    while (g_nmem)
        free(g_mem[--g_nmem]);
    return 0;
}

static jopt_ctx *new_ctx(void)
{
    jopt_ctx *ctx = NULL;
    assert_true(g_nctxs < MAX_TRACKED);
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    assert_non_null(ctx);
    g_ctxs[g_nctxs++] = ctx;
    return ctx;
}

/* jopt_optim_new, with the optimizer (if any) freed at teardown */
static int optim_new(jopt_ctx *ctx, const char *spec, const jopt_group *groups,
                     size_t ngroups, const char *defaults, jopt_optim **out)
{
    assert_true(g_nopts < MAX_TRACKED);
    int rc = jopt_optim_new(ctx, spec, groups, ngroups, defaults, out);
    if (rc == JOPT_OK && out && *out)
        g_opts[g_nopts++] = *out;
    return rc;
}

/* t_alloc, freed at teardown */
static float *talloc(int64_t n)
{
    assert_true(g_nmem < MAX_TRACKED);
    float *p = t_alloc(n);
    g_mem[g_nmem++] = p;
    return p;
}

/* one small parameter, used where the buffers do not matter */
static _Alignas(64) float P0[64], G0[64];

/* an optimizer over P0/G0 (16 floats); `group_opts` is the group's string */
static int try_new(jopt_ctx *ctx, const char *spec, const char *defaults,
                   const char *group_opts, jopt_optim **out)
{
    jopt_param p = {P0, G0, 16};
    jopt_group g = {&p, 1, group_opts};
    return optim_new(ctx, spec, &g, 1, defaults, out);
}

/* Checks that `rc` is `want` and that jopt_errmsg(ctx) contains every one of
 * the NULL-terminated substrings; reports all that are missing. */
static void expect_(const char *file, int line, const char *call, jopt_ctx *ctx,
                    int rc, int want, ...)
{
    const char *msg = jopt_errmsg(ctx);
    int bad = 0;
    if (rc != want) {
        print_error("%s:%d: %s returned %d (%s), expected %d (%s)\n  message: %s\n",
                    file, line, call, rc, jopt_strerror(rc), want,
                    jopt_strerror(want), msg);
        bad = 1;
    }
    va_list ap;
    va_start(ap, want);
    for (const char *s; (s = va_arg(ap, const char *));) {
        if (!msg || !strstr(msg, s)) {
            print_error("%s:%d: %s: message \"%s\" lacks \"%s\"\n", file, line,
                        call, msg ? msg : "(null)", s);
            bad = 1;
        }
    }
    va_end(ap);
    if (bad)
        _fail(file, line);
}

/* EXPECT(ctx, call, status, "substring", ...) */
#define EXPECT(ctx, call, want, ...)                                           \
    expect_(__FILE__, __LINE__, #call, (ctx), (call), (want), __VA_ARGS__,     \
            (const char *)NULL)

/* ---- hyperparameters ----------------------------------------------------- */

/* A refused setting, tried every way: as the optimizer's defaults, as a
 * group's options, with jopt_options_set and (if `name`) jopt_option_set on
 * an existing optimizer.  Each must fail with JOPT_EINVAL and `msg`. */
static void refuse_everywhere(const char *spec, const char *options,
                              const char *name, double value, const char *msg)
{
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    EXPECT(ctx, try_new(ctx, spec, options, NULL, &opt), JOPT_EINVAL, msg);
    assert_null(opt);
    EXPECT(ctx, try_new(ctx, spec, NULL, options, &opt), JOPT_EINVAL, msg,
           "group 0");
    assert_null(opt);
    /* a good group 0 and a bad group 1: the message names group 1 */
    {
        static _Alignas(64) float p1[16], g1[16];
        jopt_param ps[2] = {{P0, G0, 16}, {p1, g1, 16}};
        jopt_group gs[2] = {{&ps[0], 1, NULL}, {&ps[1], 1, options}};
        EXPECT(ctx, optim_new(ctx, spec, gs, 2, NULL, &opt), JOPT_EINVAL,
               msg, "group 1");
        assert_null(opt);
    }
    T_OK(ctx, try_new(ctx, spec, NULL, NULL, &opt));
    EXPECT(ctx, jopt_options_set(opt, 0, options), JOPT_EINVAL, msg);
    if (name)
        EXPECT(ctx, jopt_option_set(opt, 0, name, value), JOPT_EINVAL, msg);
}

static void test_hyper_negative_lr(void **state)
{
    (void)state;
    refuse_everywhere("adam", "lr=-0.1", "lr", -0.1, "Invalid learning rate: -0.1");
    refuse_everywhere("sgd", "lr=-0.1", "lr", -0.1, "Invalid learning rate: -0.1");
    refuse_everywhere("adamw", "lr=-0.1", "lr", -0.1, "Invalid learning rate: -0.1");
    /* NaN is not >= 0 either (torch refuses it the same way) */
    refuse_everywhere("adam", "lr=nan", "lr", NAN, "Invalid learning rate: nan");
}

static void test_hyper_adam_beta0_one(void **state)
{
    (void)state;
    /* Lua prints floats as Python does: 1.0, not 1 */
    refuse_everywhere("adam", "betas=1.0,0.999", "betas[0]", 1.0,
                      "Invalid beta parameter at index 0: 1.0");
    refuse_everywhere("adamw", "betas=(1.0, 0.999)", "betas[0]", 1.0,
                      "Invalid beta parameter at index 0: 1.0");
    refuse_everywhere("adam", "betas=-0.5,0.999", "betas[0]", -0.5,
                      "Invalid beta parameter at index 0: -0.5");
}

static void test_hyper_adam_beta1_one(void **state)
{
    (void)state;
    refuse_everywhere("adam", "betas=0.9,1", "betas[1]", 1.0,
                      "Invalid beta parameter at index 1: 1.0");
    refuse_everywhere("adamw", "betas=0.9,1.5", "betas[1]", 1.5,
                      "Invalid beta parameter at index 1: 1.5");
}

static void test_hyper_negative_eps(void **state)
{
    (void)state;
    refuse_everywhere("adam", "eps=-1e-8", "eps", -1e-8,
                      "Invalid epsilon value: -1e-08");
    refuse_everywhere("adamw", "eps=-0.5", "eps", -0.5,
                      "Invalid epsilon value: -0.5");
}

static void test_hyper_negative_weight_decay(void **state)
{
    (void)state;
    refuse_everywhere("adam", "weight_decay=-0.01", "weight_decay", -0.01,
                      "Invalid weight_decay value: -0.01");
    refuse_everywhere("adamw", "weight_decay=-0.01", "weight_decay", -0.01,
                      "Invalid weight_decay value: -0.01");
    refuse_everywhere("sgd", "weight_decay=-0.01", "weight_decay", -0.01,
                      "Invalid weight_decay value: -0.01");
}

static void test_hyper_sgd_negative_momentum(void **state)
{
    (void)state;
    refuse_everywhere("sgd", "momentum=-0.5", "momentum", -0.5,
                      "Invalid momentum value: -0.5");
}

static void test_hyper_sgd_nesterov_without_momentum(void **state)
{
    (void)state;
    static const char msg[] = "Nesterov momentum requires a momentum and zero dampening";
    refuse_everywhere("sgd", "nesterov=true", "nesterov", 1, msg);
    refuse_everywhere("sgd", "nesterov=true momentum=0.9 dampening=0.1", NULL, 0, msg);
    /* turning momentum off under nesterov is refused too */
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    T_OK(ctx, try_new(ctx, "sgd", "momentum=0.9 nesterov=true", NULL, &opt));
    EXPECT(ctx, jopt_option_set(opt, 0, "momentum", 0), JOPT_EINVAL, msg);
    EXPECT(ctx, jopt_option_set(opt, 0, "dampening", 0.5), JOPT_EINVAL, msg);
    double v = -1;
    T_OK(ctx, jopt_option_get(opt, 0, "momentum", &v));
    assert_true(v == 0.9);
    T_OK(ctx, jopt_option_get(opt, 0, "dampening", &v));
    assert_true(v == 0);
}

static void test_hyper_unknown_option(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    EXPECT(ctx, try_new(ctx, "adam", "lrr=0.1", NULL, &opt), JOPT_EINVAL,
           "unknown option 'lrr'", "adam", "known: ", "lr", "betas", "amsgrad");
    EXPECT(ctx, try_new(ctx, "sgd", NULL, "lr=0.1 momentumm=0.9", &opt),
           JOPT_EINVAL, "unknown option 'momentumm'", "group 0", "momentum",
           "nesterov");
    assert_null(opt);
    T_OK(ctx, try_new(ctx, "adam", NULL, NULL, &opt));
    EXPECT(ctx, jopt_options_set(opt, 0, "lrr=0.1"), JOPT_EINVAL,
           "unknown option 'lrr'", "known: ");
    EXPECT(ctx, jopt_option_set(opt, 0, "lrr", 0.1), JOPT_EINVAL,
           "unknown option 'lrr'", "known: ");
    double v = 42;
    EXPECT(ctx, jopt_option_get(opt, 0, "lrr", &v), JOPT_EINVAL,
           "unknown option 'lrr'", "known: ");
    assert_true(v == 42);
    /* an option of another spec */
    EXPECT(ctx, jopt_option_set(opt, 0, "momentum", 0.9), JOPT_EINVAL,
           "unknown option 'momentum'");
}

/* a malformed string, as defaults, group options and jopt_options_set */
static void malformed(jopt_ctx *ctx, jopt_optim *opt, const char *options,
                      const char *m1, const char *m2)
{
    jopt_optim *o = NULL;
    EXPECT(ctx, try_new(ctx, "adam", options, NULL, &o), JOPT_EINVAL, m1, m2);
    assert_null(o);
    EXPECT(ctx, try_new(ctx, "adam", NULL, options, &o), JOPT_EINVAL, m1, m2,
           "group 0");
    assert_null(o);
    EXPECT(ctx, jopt_options_set(opt, 0, options), JOPT_EINVAL, m1, m2);
}

static void test_hyper_malformed_values(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    T_OK(ctx, try_new(ctx, "adam", NULL, NULL, &opt));
    malformed(ctx, opt, "lr=abc", "option 'lr'", "'abc'");
    malformed(ctx, opt, "lr=0.1x", "option 'lr'", "'0.1x'");
    malformed(ctx, opt, "lr=", "option 'lr'", "a number");
    malformed(ctx, opt, "amsgrad=maybe", "option 'amsgrad'", "'maybe'");
    malformed(ctx, opt, "amsgrad=2", "option 'amsgrad'", "boolean");
    malformed(ctx, opt, "betas=0.9", "option 'betas'", "takes 2 values, got 1");
    malformed(ctx, opt, "betas=0.9,0.99,0.999", "option 'betas'", "takes 2 values");
    malformed(ctx, opt, "betas=0.9,", "option 'betas'", "''");
    malformed(ctx, opt, "betas=(0.9,0.999", "option 'betas'", "')'");
    malformed(ctx, opt, "lr=0.1,0.2", "option 'lr'", "takes 1 value");
    malformed(ctx, opt, "lr", "option 'lr' has no value", "lr=");
    malformed(ctx, opt, "eps=1e-8 lr", "option 'lr' has no value", "lr=");
    malformed(ctx, opt, "lr=1 lr=2", "option 'lr'", "twice");
    malformed(ctx, opt, "=1", "unknown option ''", "known: ");
    /* nothing of a refused string was applied */
    double v = -1;
    T_OK(ctx, jopt_option_get(opt, 0, "lr", &v));
    assert_true(v == 1e-3);
    T_OK(ctx, jopt_option_get(opt, 0, "eps", &v));
    assert_true(v == 1e-8);
}

/* A value longer than the parser's buffer must be read whole or refused,
 * never cut short into another number. */
static void test_hyper_long_value_not_truncated(void **state)
{
    (void)state;
    char options[512] = "lr=1";
    size_t n = strlen(options);
    memset(options + n, '0', 300); /* "lr=1000...0e-300" is 1 */
    snprintf(options + n + 300, sizeof options - n - 300, "e-300");
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    int rc = try_new(ctx, "sgd", options, NULL, &opt);
    if (rc == JOPT_OK) {
        double v = 0;
        T_OK(ctx, jopt_option_get(opt, 0, "lr", &v));
        if (v != 1.0)
            fail_msg("\"lr=1<300 zeros>e-300\" was read as lr=%g, not 1", v);
    } else {
        EXPECT(ctx, rc, JOPT_EINVAL, "option 'lr'");
    }
}

static void test_hyper_option_get_set_bad_names(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    T_OK(ctx, try_new(ctx, "adam", NULL, NULL, &opt));
    double v = 42;
    static const struct {
        const char *name, *msg;
    } bad[] = {
        {"nosuch", "unknown option 'nosuch'"},
        {"betas", "option 'betas' is a tuple of 2"},
        {"betas[2]", "option 'betas[2]': index out of range"},
        {"betas[-1]", "option 'betas[-1]': index out of range"},
        {"betas[x]", "option 'betas[x]': index out of range"},
        {"betas[0", "option 'betas[0': index out of range"},
        {"betas[0]x", "option 'betas[0]x': index out of range"},
        {"lr[1]", "option 'lr[1]': index out of range"},
        {"", "unknown option ''"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        EXPECT(ctx, jopt_option_get(opt, 0, bad[i].name, &v), JOPT_EINVAL,
               bad[i].msg, "jopt_option_get");
        assert_true(v == 42); /* not written */
        EXPECT(ctx, jopt_option_set(opt, 0, bad[i].name, 0.5), JOPT_EINVAL,
               bad[i].msg, "jopt_option_set");
    }
    EXPECT(ctx, jopt_option_get(opt, 0, "betas", &v), JOPT_EINVAL, "betas[0]");
    EXPECT(ctx, jopt_option_get(opt, 0, NULL, &v), JOPT_EINVAL, "name is NULL");
    EXPECT(ctx, jopt_option_get(opt, 0, "lr", NULL), JOPT_EINVAL, "value is NULL");
    EXPECT(ctx, jopt_option_set(opt, 0, NULL, 1), JOPT_EINVAL, "name is NULL");
    EXPECT(ctx, jopt_option_set(opt, 0, "amsgrad", 0.5), JOPT_EINVAL,
           "option 'amsgrad' is a boolean", "0.5");
    EXPECT(ctx, jopt_option_set(opt, 0, "amsgrad", NAN), JOPT_EINVAL,
           "option 'amsgrad' is a boolean");
    assert_true(v == 42);
    T_OK(ctx, jopt_option_get(opt, 0, "betas[1]", &v));
    assert_true(v == 0.999);
    T_OK(ctx, jopt_option_get(opt, 0, "amsgrad", &v));
    assert_true(v == 0);
}

static void test_hyper_group_out_of_range(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    T_OK(ctx, try_new(ctx, "adam", NULL, NULL, &opt));
    double v = 42;
    const float *data = NULL;
    size_t groups[] = {1, 7, SIZE_MAX};
    for (size_t i = 0; i < 3; i++) {
        size_t g = groups[i];
        char want[64];
        snprintf(want, sizeof want, "group %zu does not exist", g);
        EXPECT(ctx, jopt_option_get(opt, g, "lr", &v), JOPT_EINVAL, want,
               "has 1");
        EXPECT(ctx, jopt_option_set(opt, g, "lr", 0.1), JOPT_EINVAL, want);
        EXPECT(ctx, jopt_options_set(opt, g, "lr=0.1"), JOPT_EINVAL, want);
        EXPECT(ctx, jopt_set_grad(opt, g, 0, G0), JOPT_EINVAL, want);
        EXPECT(ctx, jopt_state_get(opt, g, 0, "exp_avg", &data, NULL),
               JOPT_EINVAL, want);
    }
    assert_true(v == 42);
    EXPECT(ctx, jopt_state_get(opt, 0, 1, "exp_avg", &data, NULL), JOPT_EINVAL,
           "group 0 has no parameter 1");
    EXPECT(ctx, jopt_state_get(opt, 0, 0, "momentum_buffer", &data, NULL),
           JOPT_EINVAL, "no state 'momentum_buffer'");
    EXPECT(ctx, jopt_state_get(opt, 0, 0, NULL, &data, NULL), JOPT_EINVAL,
           "name is NULL");
    EXPECT(ctx, jopt_state_get(opt, 0, 0, "exp_avg", NULL, NULL), JOPT_EINVAL,
           "data is NULL");
    T_OK(ctx, jopt_option_get(opt, 0, "lr", &v));
    assert_true(v == 1e-3);
}

/* ---- specs --------------------------------------------------------------- */

/* a spec file with `src`; an optimizer over it must fail with `want` and a
 * message holding the spec's path followed by `suffix` (NULL: just the path)
 * and every further substring */
#define SPEC_FAILS(name, src, want, suffix, ...)                               \
    do {                                                                       \
        char path_[512], where_[600];                                          \
        write_spec(path_, sizeof path_, (name), (src));                        \
        spec_where(where_, sizeof where_, path_, (suffix));                    \
        jopt_ctx *ctx_ = new_ctx();                                            \
        jopt_optim *o_ = NULL;                                                 \
        EXPECT(ctx_, try_new(ctx_, path_, NULL, NULL, &o_), (want), where_,    \
               __VA_ARGS__);                                                   \
        assert_null(o_);                                                       \
    } while (0)

static void spec_where(char *buf, size_t len, const char *path,
                       const char *suffix)
{
    snprintf(buf, len, "%s%s", path, suffix ? suffix : "");
}

#define UPDATE_OK "update = function (p, g, s, h) return p - h.lr * g end"

static void test_spec_unknown_name(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    EXPECT(ctx, try_new(ctx, "nosuchopt", NULL, NULL, &opt), JOPT_ESPEC,
           "unknown optimizer spec 'nosuchopt'", "looked in");
    EXPECT(ctx, try_new(ctx, "ad am", NULL, NULL, &opt), JOPT_ESPEC,
           "invalid spec name 'ad am'");
    EXPECT(ctx, try_new(ctx, "", NULL, NULL, &opt), JOPT_ESPEC,
           "invalid spec name ''");
    /* the spec path is searched, and only it */
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, g_dir));
    EXPECT(ctx, try_new(ctx, "adam", NULL, NULL, &opt), JOPT_ESPEC,
           "unknown optimizer spec 'adam'", g_dir);
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, ""));
    EXPECT(ctx, try_new(ctx, "adam", NULL, NULL, &opt), JOPT_ESPEC,
           "unknown optimizer spec 'adam'", "no folders");
    assert_null(opt);
    /* a spec found by name in the path works */
    char path[512];
    write_spec(path, sizeof path, "byname",
               "return { hyper = { lr = 0.1 }, " UPDATE_OK " }");
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, g_dir));
    T_OK(ctx, try_new(ctx, "byname", NULL, NULL, &opt));
}

static void test_spec_missing_path(void **state)
{
    (void)state;
    char path[512], dir[512];
    snprintf(path, sizeof path, "%s/does_not_exist.lua", g_dir);
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    EXPECT(ctx, try_new(ctx, path, NULL, NULL, &opt), JOPT_ESPEC,
           "cannot read spec file", path, "No such file");
    snprintf(path, sizeof path, "%s/no/such/folder/x.lua", g_dir);
    EXPECT(ctx, try_new(ctx, path, NULL, NULL, &opt), JOPT_ESPEC,
           "cannot read spec file", path);
    snprintf(dir, sizeof dir, "%s/", g_dir); /* a folder, not a file */
    EXPECT(ctx, try_new(ctx, dir, NULL, NULL, &opt), JOPT_ESPEC, dir);
    assert_null(opt);
}

static void test_spec_syntax_error(void **state)
{
    (void)state;
    SPEC_FAILS("syntax",
               "return {\n"
               "  hyper = { lr = 0.1 },\n"
               "  x = = 3,\n"
               "}\n",
               JOPT_ESPEC, ":3:", "'='");
    SPEC_FAILS("unclosed",
               "return {\n"
               "  hyper = { lr = 0.1 },\n",
               JOPT_ESPEC, ":3:", "<eof>"); /* the end of the file is line 3 */
}

static void test_spec_too_deeply_nested(void **state)
{
    (void)state;
    static char src[4096];
    size_t k = (size_t)snprintf(src, sizeof src, "return ");
    for (int i = 0; i < 1000; i++)
        src[k++] = '(';
    src[k++] = '1';
    for (int i = 0; i < 1000; i++)
        src[k++] = ')';
    src[k] = 0;
    /* Lua's parser stops; the message must still name the file */
    SPEC_FAILS("nested", src, JOPT_ESPEC, NULL, "");
}

static void test_spec_runtime_error_in_update(void **state)
{
    (void)state;
    SPEC_FAILS("rt_update",
               "return {\n"
               "  hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    return undefined_function(p)\n"
               "  end,\n"
               "}\n",
               JOPT_ESPEC, ":4:", "undefined_function");
    SPEC_FAILS("rt_update_hyper",
               "return {\n"
               "  hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h) return p - h.lrr * g end,\n"
               "}\n",
               JOPT_ESPEC, ":3:", "unknown hyperparameter 'lrr'");
    SPEC_FAILS("rt_update_concat",
               "return {\n"
               "  hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h) return p .. g end,\n"
               "}\n",
               JOPT_ESPEC, ":3:", "not defined on traced values");
}

static void test_spec_runtime_error_in_check(void **state)
{
    (void)state;
    SPEC_FAILS("rt_check",
               "return {\n"
               "  hyper = { lr = 0.1 },\n"
               "  check = function (h)\n"
               "    no_such_check(h.lr)\n"
               "  end,\n"
               "  " UPDATE_OK ",\n"
               "}\n",
               JOPT_ESPEC, ":4:", "no_such_check");
    SPEC_FAILS("rt_load",
               "local x = nil\n"
               "return x.field\n",
               JOPT_ESPEC, ":2:", "attempt to index");
}

/* error() with a value that is not a string still names the spec */
static void test_spec_error_object_not_string(void **state)
{
    (void)state;
    SPEC_FAILS("errobj_load", "error({})\n", JOPT_ESPEC, NULL, "");
    SPEC_FAILS("errobj_update",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h) error(p) end }\n",
               JOPT_ESPEC, NULL, "");
}

static void test_spec_returns_non_table(void **state)
{
    (void)state;
    SPEC_FAILS("ret_number", "return 42\n", JOPT_ESPEC, NULL, "must return a table");
    SPEC_FAILS("ret_nothing", "local x = 1\n", JOPT_ESPEC, NULL, "must return a table");
    SPEC_FAILS("ret_empty", "", JOPT_ESPEC, NULL, "must return a table");
    SPEC_FAILS("ret_string", "return 'adam'\n", JOPT_ESPEC, NULL, "must return a table");
}

static void test_spec_without_update(void **state)
{
    (void)state;
    SPEC_FAILS("no_update", "return { hyper = { lr = 0.1 } }\n", JOPT_ESPEC,
               NULL, "'update' must be a function");
    SPEC_FAILS("update_number", "return { hyper = { lr = 0.1 }, update = 3 }\n",
               JOPT_ESPEC, NULL, "'update' must be a function");
    SPEC_FAILS("no_hyper", "return { " UPDATE_OK " }\n", JOPT_ESPEC, NULL,
               "'hyper' must be a table");
    SPEC_FAILS("bad_hyper", "return { hyper = { lr = 'fast' }, " UPDATE_OK " }\n",
               JOPT_ESPEC, NULL, "hyperparameter 'lr'");
    SPEC_FAILS("bad_check", "return { hyper = { lr = 0.1 }, check = 1, "
               UPDATE_OK " }\n", JOPT_ESPEC, NULL, "'check' must be a function");
}

static void test_spec_update_returns_nil(void **state)
{
    (void)state;
    SPEC_FAILS("ret_nil",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h) local x = p - g end }\n",
               JOPT_ESPEC, NULL, "update() must return");
}

static void test_spec_update_returns_wrong_type(void **state)
{
    (void)state;
    SPEC_FAILS("ret_bool",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h) return gt(g, 0) end }\n",
               JOPT_ESPEC, NULL, "update() must return a number");
    SPEC_FAILS("ret_table",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h) return {} end }\n",
               JOPT_ESPEC, NULL, "update() result", "table");
}

static void test_spec_compare_traced_values(void **state)
{
    (void)state;
    static const char *const conds[] = {"g < 0", "0 < g", "g <= p", "g > 1",
                                        "g >= p", "g == p", "g ~= p"};
    for (size_t i = 0; i < sizeof conds / sizeof conds[0]; i++) {
        char src[512];
        snprintf(src, sizeof src,
                 "return { hyper = { lr = 0.1 },\n"
                 "  update = function (p, g, s, h)\n"
                 "    if %s then return p end\n"
                 "    return p - h.lr * g\n"
                 "  end }\n", conds[i]);
        SPEC_FAILS("compare", src, JOPT_ESPEC, ":3:", "lt", "gt", "cannot see traced values");
    }
}

/* `if gt(g, 0) then` tests a traced condition for truth: every userdata is
 * true in Lua, so the spec would silently always take the first branch
 * (it wants where()). */
static void test_spec_branch_on_traced_condition(void **state)
{
    (void)state;
    SPEC_FAILS("branch_if",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    if gt(g, 0) then return p end\n"
               "    return p - h.lr * g\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "where");
    SPEC_FAILS("branch_and",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    return lt(g, 0) and p or p - h.lr * g\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "where");
}

static void test_spec_unknown_state(void **state)
{
    (void)state;
    SPEC_FAILS("state_read",
               "return { hyper = { lr = 0.1 }, state = { m = 0 },\n"
               "  update = function (p, g, s, h)\n"
               "    return p - s.foo * g\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "unknown state 'foo'");
    SPEC_FAILS("state_write",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    s.foo = g\n"
               "    return p\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "unknown state 'foo'");
    SPEC_FAILS("state_nil",
               "return { hyper = { lr = 0.1 }, state = { m = 0 },\n"
               "  update = function (p, g, s, h)\n"
               "    s.m = nil\n"
               "    return p\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "state 'm'", "nil");
}

/* mistakes in the state table are reported with the spec's file */
static void test_spec_bad_state_table(void **state)
{
    (void)state;
    SPEC_FAILS("state_bad_init",
               "return { hyper = { lr = 0.1 }, state = { m = 'zero' },\n"
               "  " UPDATE_OK " }\n",
               JOPT_ESPEC, NULL, "state 'm'", "initial value");
    SPEC_FAILS("state_never_set",
               "return { hyper = { lr = 0.1 }, state = { m = unset },\n"
               "  " UPDATE_OK " }\n",
               JOPT_ESPEC, NULL, "state 'm' starts unset");
}

static void test_spec_pow_per_element(void **state)
{
    (void)state;
    SPEC_FAILS("pow_elem",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    return p - h.lr * g ^ 2\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "pow takes per-step values");
    SPEC_FAILS("pow_fn",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    return p - h.lr * pow(g, 2)\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "pow takes per-step values");
    SPEC_FAILS("exp_elem",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    return p - h.lr * exp(g)\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "exp takes per-step values");
}

/* h is read-only: assigning a hyperparameter inside update() must not
 * quietly change the kernel behind the user's back */
static void test_spec_hyper_read_only(void **state)
{
    (void)state;
    SPEC_FAILS("hyper_assign",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    h.lr = 2\n"
               "    return p - h.lr * g\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "read-only");
    SPEC_FAILS("hyper_tuple_assign",
               "return { hyper = { lr = 0.1, betas = { 0.9, 0.99 } },\n"
               "  update = function (p, g, s, h)\n"
               "    h.betas[1] = 5\n"
               "    return p - h.betas[1] * g\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "read-only");
}

static void test_spec_os_io_unavailable(void **state)
{
    (void)state;
    SPEC_FAILS("os", "os.execute('touch /tmp/jopt_pwned')\n", JOPT_ESPEC, ":1:",
               "attempt to index a nil value (global 'os')");
    SPEC_FAILS("io", "local f = io.open('/etc/passwd')\n", JOPT_ESPEC, ":1:",
               "attempt to index a nil value (global 'io')");
    SPEC_FAILS("os_update",
               "return { hyper = { lr = 0.1 },\n"
               "  update = function (p, g, s, h)\n"
               "    os.exit(1)\n"
               "  end }\n",
               JOPT_ESPEC, ":3:", "global 'os'");
    assert_int_equal(access("/tmp/jopt_pwned", F_OK), -1);
}

static void test_spec_unsafe_functions_unavailable(void **state)
{
    (void)state;
    static const struct {
        const char *src, *what;
    } cases[] = {
        {"require('os')\n", "global 'require'"},
        {"load('return 1')\n", "global 'load'"},
        {"loadstring('return 1')\n", "global 'loadstring'"},
        {"dofile('/etc/passwd')\n", "global 'dofile'"},
        {"loadfile('/etc/passwd')\n", "global 'loadfile'"},
        {"print('hi')\n", "global 'print'"},
        {"collectgarbage()\n", "global 'collectgarbage'"},
        {"debug.sethook()\n", "global 'debug'"},
        {"coroutine.wrap(print)\n", "global 'coroutine'"},
        {"package.loadlib('x', 'y')\n", "global 'package'"},
        {"string.dump(function () end)\n", "field 'dump'"},
        {"string.gsub('a', 'a', 'b')\n", "field 'gsub'"},
        {"table.move({}, 1, 2, 3)\n", "field 'move'"},
        {"_G.os.exit()\n", "field 'os'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        SPEC_FAILS("unsafe", cases[i].src, JOPT_ESPEC, ":1:", cases[i].what);
}

static void test_spec_string_rep_unavailable(void **state)
{
    (void)state;
    SPEC_FAILS("rep", "local s = string.rep('x', 1e9)\n", JOPT_ESPEC, ":1:",
               "field 'rep'");
    SPEC_FAILS("rep_method", "local s = ('x'):rep(1e9)\n", JOPT_ESPEC, ":1:",
               "method 'rep'");
}

/* ---- specs that would run away: in a child, under a watchdog ------------- */

typedef struct outcome {
    int rc;
    int timed_out; /* the child was killed by the watchdog */
    int died;      /* it ended without reporting (signal or exit code) */
    double secs;   /* how long jopt_optim_new took, in the child */
    char msg[1024];
} outcome;

#define WATCHDOG_S 3.0 /* the sandbox's 2 s time limit, and some */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* writes the spec and builds an optimizer with it in a forked child */
static outcome run_spec_forked(const char *name, const char *src, char *path,
                               size_t len)
{
    write_spec(path, len, name, src);
    outcome o;
    memset(&o, 0, sizeof o);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        jopt_ctx *ctx = NULL;
        if (jopt_ctx_new(&ctx) != JOPT_OK)
            _exit(3);
        jopt_optim *opt = NULL;
        double t0 = now_s();
        o.rc = try_new(ctx, path, NULL, NULL, &opt);
        o.secs = now_s() - t0;
        snprintf(o.msg, sizeof o.msg, "%s", jopt_errmsg(ctx));
        jopt_optim_free(opt);
        jopt_ctx_free(ctx);
        ssize_t w = write(fds[1], &o, sizeof o);
        _exit(w == (ssize_t)sizeof o ? 0 : 4);
    }
    close(fds[1]);
    /* the parent: `r` gets the child's report, `o` says how it ended */
    outcome r;
    memset(&r, 0, sizeof r);
    double deadline = now_s() + WATCHDOG_S;
    size_t got = 0;
    while (got < sizeof r) {
        double left = deadline - now_s();
        if (left <= 0) {
            o.timed_out = 1;
            break;
        }
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(left * 1000) + 1);
        if (pr <= 0)
            continue; /* EINTR or not yet */
        ssize_t n = read(fds[0], (char *)&r + got, sizeof r - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    if (o.timed_out)
        kill(pid, SIGKILL);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (o.timed_out)
        return o;
    if (got != sizeof r || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        o.died = 1;
        snprintf(o.msg, sizeof o.msg, "child %s %d",
                 WIFSIGNALED(st) ? "killed by signal" : "exited with",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        return o;
    }
    return r;
}

/* the child returned in time, with `want` and `substr` (and the path) */
#define BOUNDED_FAILS(name, src, want, substr)                                 \
    do {                                                                       \
        char path_[512];                                                       \
        outcome o_ = run_spec_forked((name), (src), path_, sizeof path_);      \
        if (o_.timed_out)                                                      \
            fail_msg("spec %s: jopt_optim_new did not return within %.1f s "   \
                     "(killed)", (name), WATCHDOG_S);                          \
        if (o_.died)                                                           \
            fail_msg("spec %s: %s", (name), o_.msg);                           \
        if (o_.rc != (want))                                                   \
            fail_msg("spec %s: returned %d (%s), expected %d; message: %s",    \
                     (name), o_.rc, jopt_strerror(o_.rc), (want), o_.msg);     \
        if (!strstr(o_.msg, (substr)) || !strstr(o_.msg, path_))               \
            fail_msg("spec %s: message \"%s\" lacks \"%s\" or the path",       \
                     (name), o_.msg, (substr));                                \
    } while (0)

static void test_spec_infinite_loop_at_load(void **state)
{
    (void)state;
    BOUNDED_FAILS("loop_load", "while true do end\n", JOPT_ESPEC,
                  "instruction limit");
    BOUNDED_FAILS("loop_load_tail",
                  "local function f() return f() end\nreturn f()\n",
                  JOPT_ESPEC, "instruction limit");
}

static void test_spec_infinite_loop_in_update(void **state)
{
    (void)state;
    BOUNDED_FAILS("loop_update",
                  "return { hyper = { lr = 0.1 },\n"
                  "  update = function (p, g, s, h)\n"
                  "    while true do end\n"
                  "  end }\n",
                  JOPT_ESPEC, "instruction limit");
    BOUNDED_FAILS("loop_check",
                  "return { hyper = { lr = 0.1 },\n"
                  "  check = function (h) repeat until false end,\n"
                  "  " UPDATE_OK " }\n",
                  JOPT_ESPEC, "instruction limit");
    BOUNDED_FAILS("loop_state_init",
                  "return { hyper = { lr = 0.1 },\n"
                  "  state = { m = function (h) while true do end end },\n"
                  "  " UPDATE_OK " }\n",
                  JOPT_ESPEC, "instruction limit");
}

static void test_spec_pcall_cannot_swallow_limit(void **state)
{
    (void)state;
    BOUNDED_FAILS("pcall_load",
                  "while true do pcall(function () while true do end end) end\n",
                  JOPT_ESPEC, "instruction limit");
    BOUNDED_FAILS("pcall_update",
                  "return { hyper = { lr = 0.1 },\n"
                  "  update = function (p, g, s, h)\n"
                  "    while true do pcall(function () while true do end end) end\n"
                  "  end }\n",
                  JOPT_ESPEC, "instruction limit");
    BOUNDED_FAILS("pcall_error",
                  "while true do pcall(error, 'again') end\n", JOPT_ESPEC,
                  "limit exceeded"); /* instructions, or time under ASan */
    BOUNDED_FAILS("pcall_mem",
                  "local ok = pcall(function () local t = {} for i = 1, 1e12 do t[i] = i end end)\n"
                  "return { hyper = { lr = 0.1 }, " UPDATE_OK " }\n",
                  JOPT_ESPEC, "memory limit");
}

static void test_spec_memory_limit(void **state)
{
    (void)state;
    BOUNDED_FAILS("mem_table", "local t = {} for i = 1, 1e12 do t[i] = i end\n",
                  JOPT_ESPEC, "memory limit");
    BOUNDED_FAILS("mem_string", "local s = 'x' for i = 1, 64 do s = s .. s end\n",
                  JOPT_ESPEC, "memory limit");
    BOUNDED_FAILS("mem_concat",
                  "local t = {} for i = 1, 1e7 do t[i] = 'abcdefgh' end\n"
                  "local s = table.concat(t)\n",
                  JOPT_ESPEC, "memory limit");
    BOUNDED_FAILS("mem_update",
                  "return { hyper = { lr = 0.1 },\n"
                  "  update = function (p, g, s, h)\n"
                  "    local t = {} for i = 1, 1e12 do t[i] = {} end\n"
                  "  end }\n",
                  JOPT_ESPEC, "memory limit");
    BOUNDED_FAILS("mem_recursion", "local function f() return 1 + f() end\nf()\n",
                  JOPT_ESPEC, "");
}

/* Lua runs __gc metamethods with hooks off: a finalizer that loops must not
 * hang jopt_optim_new (the spec is otherwise fine) */
static void test_spec_gc_finalizer_cannot_hang(void **state)
{
    (void)state;
    char path[512];
    outcome o = run_spec_forked(
        "gc_loop",
        "setmetatable({}, { __gc = function () while true do end end })\n"
        "return { hyper = { lr = 0.1 }, " UPDATE_OK " }\n",
        path, sizeof path);
    if (o.timed_out)
        fail_msg("a spec with a looping __gc finalizer hangs jopt_optim_new "
                 "(killed after %.1f s)", WATCHDOG_S);
    if (o.died)
        fail_msg("%s", o.msg);
    if (o.rc != JOPT_OK && !(o.rc == JOPT_ESPEC && strstr(o.msg, path)))
        fail_msg("returned %d: %s", o.rc, o.msg);
}

/* One C library call that loops without running a Lua instruction (here
 * table.concat over a table whose __index is a C function) must still be
 * stopped by a sandbox budget. */
static void test_spec_c_function_loop_bounded(void **state)
{
    (void)state;
    BOUNDED_FAILS("c_loop",
                  "local t = setmetatable({}, { __index = table.concat })\n"
                  "local s = table.concat(t, '', 1, math.maxinteger)\n",
                  JOPT_ESPEC, "");
}

/* ---- buffers and arguments ----------------------------------------------- */

static void test_args_null_pointers(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    jopt_param p = {P0, G0, 16};
    jopt_group g = {&p, 1, NULL};
    assert_int_equal(optim_new(NULL, "adam", &g, 1, NULL, &opt), JOPT_EINVAL);
    EXPECT(ctx, optim_new(ctx, NULL, &g, 1, NULL, &opt), JOPT_EINVAL,
           "spec is NULL");
    EXPECT(ctx, optim_new(ctx, "adam", &g, 1, NULL, NULL), JOPT_EINVAL,
           "out is NULL");
    jopt_group nog = {NULL, 2, NULL};
    EXPECT(ctx, optim_new(ctx, "adam", &nog, 1, NULL, &opt), JOPT_EINVAL,
           "group 0: params is NULL");
    assert_null(opt);
}

/* groups == NULL with ngroups > 0 is a NULL argument, not an empty list */
static void test_args_null_groups(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    EXPECT(ctx, optim_new(ctx, "adam", NULL, 1, NULL, &opt), JOPT_EINVAL,
           "groups");
    assert_null(opt);
}

static void test_args_empty_parameter_list(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    jopt_param p = {P0, G0, 16};
    jopt_group g = {&p, 1, NULL};
    EXPECT(ctx, optim_new(ctx, "adam", &g, 0, NULL, &opt), JOPT_EINVAL,
           "optimizer got an empty parameter list");
    assert_null(opt);
}

static void test_args_null_optimizer(void **state)
{
    (void)state;
    double v = 1;
    const float *d = NULL;
    assert_int_equal(jopt_zero_grad(NULL), JOPT_EINVAL);
    assert_int_equal(jopt_step(NULL, NULL, NULL, NULL), JOPT_EINVAL);
    assert_int_equal(jopt_set_grad(NULL, 0, 0, NULL), JOPT_EINVAL);
    assert_int_equal(jopt_group_count(NULL), 0);
    assert_int_equal(jopt_option_get(NULL, 0, "lr", &v), JOPT_EINVAL);
    assert_int_equal(jopt_option_set(NULL, 0, "lr", 1), JOPT_EINVAL);
    assert_int_equal(jopt_options_set(NULL, 0, "lr=1"), JOPT_EINVAL);
    assert_int_equal(jopt_state_get(NULL, 0, 0, "exp_avg", &d, NULL), JOPT_EINVAL);
    assert_int_equal(jopt_ctx_new(NULL), JOPT_EINVAL);
    assert_int_equal(jopt_ctx_set_spec_path(NULL, "x"), JOPT_EINVAL);
    assert_int_equal(jopt_ctx_set_engine(NULL, JOPT_ENGINE_JIT), JOPT_EINVAL);
    jopt_ctx_stats(NULL, NULL, NULL);
    jopt_ctx *ctx = new_ctx();
    EXPECT(ctx, jopt_ctx_set_spec_path(ctx, NULL), JOPT_EINVAL, "folders is NULL");
    EXPECT(ctx, jopt_ctx_set_engine(ctx, (jopt_engine)7), JOPT_EINVAL,
           "unknown engine 7");
    jopt_ctx_stats(ctx, NULL, NULL);
    assert_true(v == 1);
}

static void test_buffers_null_param(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *a = talloc(16), *ga = talloc(16), *gb = talloc(16);
    jopt_param ps[2] = {{a, ga, 16}, {NULL, gb, 4}};
    jopt_group g = {ps, 2, NULL};
    EXPECT(ctx, optim_new(ctx, "adam", &g, 1, NULL, &opt), JOPT_EINVAL,
           "group 0 parameter 1", "param is NULL");
    assert_null(opt);
    /* an empty parameter may be NULL */
    ps[1] = (jopt_param){NULL, NULL, 0};
    T_OK(ctx, optim_new(ctx, "adam", &g, 1, NULL, &opt));
}

static void test_buffers_negative_numel(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *a = talloc(16), *b = talloc(16);
    jopt_param ps[2] = {{a, NULL, 16}, {b, NULL, -3}};
    jopt_group g = {ps, 2, NULL};
    EXPECT(ctx, optim_new(ctx, "sgd", &g, 1, NULL, &opt), JOPT_EINVAL,
           "group 0 parameter 1", "numel is negative (-3)");
    ps[1].numel = INT64_MIN;
    EXPECT(ctx, optim_new(ctx, "sgd", &g, 1, NULL, &opt), JOPT_EINVAL,
           "group 0 parameter 1", "negative");
    ps[1].numel = INT64_MAX;
    EXPECT(ctx, optim_new(ctx, "sgd", &g, 1, NULL, &opt), JOPT_EINVAL,
           "group 0 parameter 1", "too large");
    assert_null(opt);
}

static void test_buffers_overlapping_params(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *buf = talloc(64), *g1 = talloc(16), *g2 = talloc(16);
    /* [0, 16) and [8, 24) of one array */
    jopt_param ps[2] = {{buf, g1, 16}, {buf + 8, g2, 16}};
    jopt_group g = {ps, 2, NULL};
    EXPECT(ctx, optim_new(ctx, "adam", &g, 1, NULL, &opt), JOPT_EINVAL,
           "overlap", "group 0 parameter 0 (param)", "group 0 parameter 1 (param)");
    /* one inside the other */
    ps[0] = (jopt_param){buf, g1, 64};
    ps[1] = (jopt_param){buf + 20, g2, 4};
    EXPECT(ctx, optim_new(ctx, "adam", &g, 1, NULL, &opt), JOPT_EINVAL,
           "overlap", "group 0 parameter 0", "group 0 parameter 1");
    /* the same tensor twice in one group */
    ps[0] = (jopt_param){buf, g1, 16};
    ps[1] = (jopt_param){buf, g2, 16};
    EXPECT(ctx, optim_new(ctx, "adam", &g, 1, NULL, &opt), JOPT_EINVAL,
           "group 0 parameter 0", "group 0 parameter 1");
    /* across groups, not identical */
    jopt_param qa = {buf, g1, 16}, qb = {buf + 15, g2, 2};
    jopt_group gs[2] = {{&qa, 1, NULL}, {&qb, 1, NULL}};
    EXPECT(ctx, optim_new(ctx, "adam", gs, 2, NULL, &opt), JOPT_EINVAL,
           "overlap", "group 0 parameter 0", "group 1 parameter 0");
    /* adjacent is fine */
    qb = (jopt_param){buf + 16, g2, 16};
    T_OK(ctx, optim_new(ctx, "adam", gs, 2, NULL, &opt));
}

static void test_buffers_param_overlaps_grad(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *buf = talloc(64), *other = talloc(16);
    /* its own gradient */
    jopt_param p = {buf, buf + 8, 16};
    jopt_group g = {&p, 1, NULL};
    EXPECT(ctx, optim_new(ctx, "sgd", &g, 1, NULL, &opt), JOPT_EINVAL,
           "overlap", "group 0 parameter 0 (param)", "group 0 parameter 0 (grad)");
    p.grad = buf;
    EXPECT(ctx, optim_new(ctx, "sgd", &g, 1, NULL, &opt), JOPT_EINVAL,
           "overlap", "(param)", "(grad)");
    /* another parameter's gradient */
    jopt_param ps[2] = {{buf, other, 16}, {buf + 32, buf + 4, 4}};
    jopt_group g2 = {ps, 2, NULL};
    EXPECT(ctx, optim_new(ctx, "sgd", &g2, 1, NULL, &opt), JOPT_EINVAL,
           "overlap", "group 0 parameter 0 (param)", "group 0 parameter 1 (grad)");
    /* two gradients sharing memory */
    ps[1] = (jopt_param){buf + 32, other + 12, 4};
    EXPECT(ctx, optim_new(ctx, "sgd", &g2, 1, NULL, &opt), JOPT_EINVAL,
           "overlap", "group 0 parameter 0 (grad)", "group 0 parameter 1 (grad)");
    assert_null(opt);
}

static void test_buffers_same_param_in_two_groups(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *a = talloc(16), *b = talloc(16), *g1 = talloc(16), *g2 = talloc(16);
    jopt_param p1[2] = {{b, NULL, 16}, {a, g1, 16}}, p2 = {a, g2, 16};
    jopt_group gs[2] = {{p1, 2, "lr=0.1"}, {&p2, 1, "lr=0.01"}};
    EXPECT(ctx, optim_new(ctx, "sgd", gs, 2, NULL, &opt), JOPT_EINVAL,
           "some parameters appear in more than one parameter group",
           "group 0 parameter 1", "group 1 parameter 0");
    assert_null(opt);
}

static void test_buffers_misaligned(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *buf = talloc(32), *gr = talloc(32);
    jopt_param p = {(float *)(void *)((char *)buf + 1), gr, 8};
    jopt_group g = {&p, 1, NULL};
    EXPECT(ctx, optim_new(ctx, "adam", &g, 1, NULL, &opt), JOPT_EINVAL,
           "group 0 parameter 0", "aligned");
    p = (jopt_param){buf, (float *)(void *)((char *)gr + 2), 8};
    EXPECT(ctx, optim_new(ctx, "adam", &g, 1, NULL, &opt), JOPT_EINVAL,
           "group 0 parameter 0", "aligned");
    assert_null(opt);
}

/* A refused jopt_set_grad keeps the old gradient: the next step uses it. */
static void test_set_grad_refused_keeps_old_grad(void **state)
{
    (void)state;
    enum { N = 19 };
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *p = talloc(N), *g = talloc(N), *q = talloc(N), *h = talloc(N);
    float *spare = talloc(2 * N), *before = talloc(N);
    t_fill(p, N, 1, 0);
    t_fill(g, N, 2, 0);
    t_fill(q, N, 3, 0);
    t_fill(h, N, 4, 0);
    t_fill(spare, 2 * N, 5, 0);
    jopt_param ps[2] = {{p, g, N}, {q, h, N}};
    jopt_group grp = {ps, 2, "lr=0.5"};
    T_OK(ctx, optim_new(ctx, "sgd", &grp, 1, NULL, &opt));
    EXPECT(ctx, jopt_set_grad(opt, 0, 0, p + 3), JOPT_EINVAL, "jopt_set_grad",
           "overlap", "group 0 parameter 0");
    EXPECT(ctx, jopt_set_grad(opt, 0, 0, q), JOPT_EINVAL, "overlap",
           "group 0 parameter 1 (param)");
    EXPECT(ctx, jopt_set_grad(opt, 0, 0, h - 5), JOPT_EINVAL, "overlap",
           "group 0 parameter 1 (grad)");
    EXPECT(ctx, jopt_set_grad(opt, 0, 2, spare), JOPT_EINVAL,
           "group 0 has no parameter 2");
    EXPECT(ctx, jopt_set_grad(opt, 0, SIZE_MAX, spare), JOPT_EINVAL,
           "has no parameter");
    EXPECT(ctx, jopt_set_grad(opt, 1, 0, spare), JOPT_EINVAL,
           "group 1 does not exist");
    EXPECT(ctx, jopt_set_grad(opt, 0, 0, (float *)(void *)((char *)spare + 1)),
           JOPT_EINVAL, "group 0 parameter 0", "aligned");
    memcpy(before, p, N * sizeof(float));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    for (int i = 0; i < N; i++) {
        float want = fmaf(g[i], -0.5f, before[i]); /* the old gradient */
        if (memcmp(&p[i], &want, sizeof want))
            fail_msg("element %d: %.9g after the step, want %.9g (old grad %g)",
                     i, p[i], want, g[i]);
    }
    /* the same buffer again, or a fresh one, is accepted */
    T_OK(ctx, jopt_set_grad(opt, 0, 0, g));
    T_OK(ctx, jopt_set_grad(opt, 0, 0, spare));
    T_OK(ctx, jopt_set_grad(opt, 0, 0, NULL));
}

/* A failed jopt_optim_new leaves the user's buffers alone. */
static void test_new_failure_leaves_buffers(void **state)
{
    (void)state;
    enum { N = 33 };
    jopt_ctx *ctx = new_ctx();
    jopt_optim *opt = NULL;
    float *p = talloc(N), *g = talloc(N), *p0 = talloc(N), *g0 = talloc(N);
    t_fill(p, N, 7, 0.1);
    t_fill(g, N, 8, 0.1);
    memcpy(p0, p, N * sizeof(float));
    memcpy(g0, g, N * sizeof(float));
    jopt_param prm = {p, g, N};
    jopt_group grp = {&prm, 1, "lr=-1"};
    EXPECT(ctx, optim_new(ctx, "adam", &grp, 1, NULL, &opt), JOPT_EINVAL,
           "Invalid learning rate");
    grp.options = "betas=0.9";
    EXPECT(ctx, optim_new(ctx, "adam", &grp, 1, NULL, &opt), JOPT_EINVAL,
           "betas");
    grp.options = NULL;
    EXPECT(ctx, optim_new(ctx, "nosuchopt", &grp, 1, NULL, &opt),
           JOPT_ESPEC, "nosuchopt");
    assert_null(opt);
    assert_memory_equal(p, p0, N * sizeof(float));
    assert_memory_equal(g, g0, N * sizeof(float));
}

/* ---- nothing changed on failure ------------------------------------------ */

enum { NA = 37, NB = 5 }; /* odd sizes: vector body and remainder */

typedef struct snap {
    float p[NA + NB], g[NA + NB];
    float m[NA + NB], v[NA + NB];
    int64_t steps[2];
    double lr, b0, b1, eps, wd, ams;
} snap;

typedef struct adam_rig {
    float *pa, *ga, *pb, *gb;
    jopt_optim *opt;
} adam_rig;

static void rig_new(jopt_ctx *ctx, adam_rig *r)
{
    r->pa = talloc(NA);
    r->ga = talloc(NA);
    r->pb = talloc(NB);
    r->gb = talloc(NB);
    t_fill(r->pa, NA, 11, 0);
    t_fill(r->ga, NA, 12, 0.1);
    t_fill(r->pb, NB, 13, 0);
    t_fill(r->gb, NB, 14, 0);
    jopt_param ps[2] = {{r->pa, r->ga, NA}, {r->pb, r->gb, NB}};
    jopt_group g = {ps, 2, "lr=0.01 weight_decay=0.1"};
    T_OK(ctx, optim_new(ctx, "adam", &g, 1, NULL, &r->opt));
    T_OK(ctx, jopt_step(r->opt, NULL, NULL, NULL));
    T_OK(ctx, jopt_step(r->opt, NULL, NULL, NULL));
}

static void take_snap(jopt_ctx *ctx, const adam_rig *r, snap *s)
{
    memset(s, 0, sizeof *s);
    memcpy(s->p, r->pa, NA * sizeof(float));
    memcpy(s->p + NA, r->pb, NB * sizeof(float));
    memcpy(s->g, r->ga, NA * sizeof(float));
    memcpy(s->g + NA, r->gb, NB * sizeof(float));
    const char *names[2] = {"exp_avg", "exp_avg_sq"};
    float *dst[2] = {s->m, s->v};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < 2; i++) {
            const float *d = NULL;
            T_OK(ctx, jopt_state_get(r->opt, 0, i, names[k], &d, &s->steps[i]));
            assert_non_null(d);
            memcpy(dst[k] + (i ? NA : 0), d, (i ? NB : NA) * sizeof(float));
        }
    const float *d = (const float *)1;
    T_OK(ctx, jopt_state_get(r->opt, 0, 0, "max_exp_avg_sq", &d, NULL));
    assert_null(d);
    T_OK(ctx, jopt_option_get(r->opt, 0, "lr", &s->lr));
    T_OK(ctx, jopt_option_get(r->opt, 0, "betas[0]", &s->b0));
    T_OK(ctx, jopt_option_get(r->opt, 0, "betas[1]", &s->b1));
    T_OK(ctx, jopt_option_get(r->opt, 0, "eps", &s->eps));
    T_OK(ctx, jopt_option_get(r->opt, 0, "weight_decay", &s->wd));
    T_OK(ctx, jopt_option_get(r->opt, 0, "amsgrad", &s->ams));
}

static void same_snap(jopt_ctx *ctx, const adam_rig *r, const snap *before,
                      const char *after)
{
    snap now;
    take_snap(ctx, r, &now);
    if (memcmp(before, &now, sizeof now) != 0)
        fail_msg("after %s the optimizer or its buffers changed", after);
}

static int failing_closure(void *user_data, double *loss)
{
    int *calls = user_data;
    ++*calls;
    *loss = 99; /* jopt must not pass this on */
    return -7;
}

static void test_failure_changes_nothing(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    adam_rig r, twin;
    rig_new(ctx, &r);
    rig_new(ctx, &twin);
    snap s;
    take_snap(ctx, &r, &s);
    assert_int_equal(s.steps[0], 2);
    float *spare = talloc(NA);

    EXPECT(ctx, jopt_option_set(r.opt, 0, "lr", -1), JOPT_EINVAL,
           "Invalid learning rate: -1");
    same_snap(ctx, &r, &s, "option_set lr=-1");
    EXPECT(ctx, jopt_option_set(r.opt, 0, "lr", NAN), JOPT_EINVAL,
           "Invalid learning rate");
    same_snap(ctx, &r, &s, "option_set lr=nan");
    EXPECT(ctx, jopt_option_set(r.opt, 0, "betas[0]", 1.0), JOPT_EINVAL,
           "Invalid beta parameter at index 0: 1.0");
    same_snap(ctx, &r, &s, "option_set betas[0]=1");
    EXPECT(ctx, jopt_option_set(r.opt, 0, "betas[1]", 2), JOPT_EINVAL,
           "Invalid beta parameter at index 1");
    same_snap(ctx, &r, &s, "option_set betas[1]=2");
    EXPECT(ctx, jopt_option_set(r.opt, 0, "eps", -1), JOPT_EINVAL,
           "Invalid epsilon value");
    same_snap(ctx, &r, &s, "option_set eps=-1");
    EXPECT(ctx, jopt_option_set(r.opt, 0, "amsgrad", 0.5), JOPT_EINVAL, "boolean");
    same_snap(ctx, &r, &s, "option_set amsgrad=0.5");
    EXPECT(ctx, jopt_option_set(r.opt, 0, "betas", 0.5), JOPT_EINVAL, "tuple");
    same_snap(ctx, &r, &s, "option_set betas");
    EXPECT(ctx, jopt_option_set(r.opt, 1, "lr", 0.5), JOPT_EINVAL,
           "group 1 does not exist");
    same_snap(ctx, &r, &s, "option_set on group 1");
    /* strings where an early part is good: it must not stick */
    EXPECT(ctx, jopt_options_set(r.opt, 0, "lr=0.5 betas=0.9"), JOPT_EINVAL,
           "option 'betas'");
    same_snap(ctx, &r, &s, "options_set \"lr=0.5 betas=0.9\"");
    EXPECT(ctx, jopt_options_set(r.opt, 0, "lr=0.5 bogus=1"), JOPT_EINVAL,
           "unknown option 'bogus'");
    same_snap(ctx, &r, &s, "options_set \"lr=0.5 bogus=1\"");
    EXPECT(ctx, jopt_options_set(r.opt, 0, "lr=0.5 eps=-1"), JOPT_EINVAL,
           "Invalid epsilon value: -1");
    same_snap(ctx, &r, &s, "options_set \"lr=0.5 eps=-1\"");
    EXPECT(ctx, jopt_options_set(r.opt, 0, "amsgrad=true lr=-1"), JOPT_EINVAL,
           "Invalid learning rate: -1");
    same_snap(ctx, &r, &s, "options_set \"amsgrad=true lr=-1\"");
    EXPECT(ctx, jopt_options_set(r.opt, 0, "amsgrad=true lr"), JOPT_EINVAL,
           "option 'lr' has no value");
    same_snap(ctx, &r, &s, "options_set \"amsgrad=true lr\"");
    EXPECT(ctx, jopt_options_set(r.opt, 0, "weight_decay=0 lr=1 lr=2"),
           JOPT_EINVAL, "twice");
    same_snap(ctx, &r, &s, "options_set with a duplicate");
    /* gradients */
    EXPECT(ctx, jopt_set_grad(r.opt, 0, 0, r.pb), JOPT_EINVAL, "overlap");
    same_snap(ctx, &r, &s, "set_grad onto a parameter");
    EXPECT(ctx, jopt_set_grad(r.opt, 0, 1, r.ga + 30), JOPT_EINVAL, "overlap");
    same_snap(ctx, &r, &s, "set_grad onto another gradient");
    EXPECT(ctx, jopt_set_grad(r.opt, 0, 2, spare), JOPT_EINVAL, "no parameter 2");
    same_snap(ctx, &r, &s, "set_grad of parameter 2");
    /* a step whose closure fails */
    int calls = 0;
    double loss = 123;
    EXPECT(ctx, jopt_step(r.opt, failing_closure, &calls, &loss), JOPT_ECLOSURE,
           "closure", "-7");
    assert_int_equal(calls, 1);
    assert_true(loss == 123);
    same_snap(ctx, &r, &s, "a step whose closure failed");
    /* reads that fail */
    double v = 5;
    EXPECT(ctx, jopt_option_get(r.opt, 0, "betas[9]", &v), JOPT_EINVAL, "range");
    assert_true(v == 5);
    const float *d = NULL;
    EXPECT(ctx, jopt_state_get(r.opt, 0, 0, "nope", &d, NULL), JOPT_EINVAL,
           "no state 'nope'");
    same_snap(ctx, &r, &s, "failed reads");

    /* a good step now gives what the twin, which saw none of this, gives */
    T_OK(ctx, jopt_step(r.opt, NULL, NULL, NULL));
    T_OK(ctx, jopt_step(twin.opt, NULL, NULL, NULL));
    snap a, b;
    take_snap(ctx, &r, &a);
    take_snap(ctx, &twin, &b);
    assert_int_equal(a.steps[0], 3);
    if (memcmp(&a, &b, sizeof a) != 0)
        fail_msg("the step after the failed calls differs from the twin's");
    assert_memory_not_equal(a.p, s.p, sizeof a.p); /* and it did move */
}

/* ---- status text and NULL-safe calls ------------------------------------- */

static void test_strerror_every_status(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *name;
    } all[] = {{JOPT_OK, "JOPT_OK"},
               {JOPT_EINVAL, "JOPT_EINVAL"},
               {JOPT_ENOMEM, "JOPT_ENOMEM"},
               {JOPT_ESPEC, "JOPT_ESPEC"},
               {JOPT_ECOMPILE, "JOPT_ECOMPILE"},
               {JOPT_ECLOSURE, "JOPT_ECLOSURE"}, {JOPT_SKIPPED, "JOPT_SKIPPED"},
               {JOPT_ECOMM, "JOPT_ECOMM"}, {JOPT_EDEVICE, "JOPT_EDEVICE"}};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *s = jopt_strerror(all[i].status);
        assert_non_null(s);
        if (strncmp(s, all[i].name, strlen(all[i].name)) || s[strlen(all[i].name)] != ':')
            fail_msg("jopt_strerror(%d) = \"%s\"", all[i].status, s);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(s, jopt_strerror(all[j].status));
    }
    int unknown[] = {2, -8, -100, 12345, INT32_MIN};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = jopt_strerror(unknown[i]);
        assert_non_null(s);
        assert_non_null(strstr(s, "unknown"));
    }
}

static void test_errmsg_null_safe(void **state)
{
    (void)state;
    const char *m = jopt_errmsg(NULL);
    assert_non_null(m);
    (void)strlen(m);
    jopt_ctx *ctx = new_ctx();
    assert_non_null(jopt_errmsg(ctx));
    assert_string_equal(jopt_errmsg(ctx), "");
}

static void test_free_null_is_noop(void **state)
{
    (void)state;
    jopt_optim_free(NULL);
    jopt_ctx_free(NULL);
}

/* every test gets the teardown that frees what it made */
#define T(test) cmocka_unit_test_teardown(test, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_hyper_negative_lr),
        T(test_hyper_adam_beta0_one),
        T(test_hyper_adam_beta1_one),
        T(test_hyper_negative_eps),
        T(test_hyper_negative_weight_decay),
        T(test_hyper_sgd_negative_momentum),
        T(test_hyper_sgd_nesterov_without_momentum),
        T(test_hyper_unknown_option),
        T(test_hyper_malformed_values),
        T(test_hyper_long_value_not_truncated),
        T(test_hyper_option_get_set_bad_names),
        T(test_hyper_group_out_of_range),
        T(test_spec_unknown_name),
        T(test_spec_missing_path),
        T(test_spec_syntax_error),
        T(test_spec_too_deeply_nested),
        T(test_spec_runtime_error_in_update),
        T(test_spec_runtime_error_in_check),
        T(test_spec_error_object_not_string),
        T(test_spec_returns_non_table),
        T(test_spec_without_update),
        T(test_spec_update_returns_nil),
        T(test_spec_update_returns_wrong_type),
        T(test_spec_compare_traced_values),
        T(test_spec_branch_on_traced_condition),
        T(test_spec_unknown_state),
        T(test_spec_bad_state_table),
        T(test_spec_pow_per_element),
        T(test_spec_hyper_read_only),
        T(test_spec_os_io_unavailable),
        T(test_spec_unsafe_functions_unavailable),
        T(test_spec_string_rep_unavailable),
        T(test_spec_infinite_loop_at_load),
        T(test_spec_infinite_loop_in_update),
        T(test_spec_pcall_cannot_swallow_limit),
        T(test_spec_memory_limit),
        T(test_spec_gc_finalizer_cannot_hang),
        T(test_spec_c_function_loop_bounded),
        T(test_args_null_pointers),
        T(test_args_null_groups),
        T(test_args_empty_parameter_list),
        T(test_args_null_optimizer),
        T(test_buffers_null_param),
        T(test_buffers_negative_numel),
        T(test_buffers_overlapping_params),
        T(test_buffers_param_overlaps_grad),
        T(test_buffers_same_param_in_two_groups),
        T(test_buffers_misaligned),
        T(test_set_grad_refused_keeps_old_grad),
        T(test_new_failure_leaves_buffers),
        T(test_failure_changes_nothing),
        T(test_strerror_every_status),
        T(test_errmsg_null_safe),
        T(test_free_null_is_noop),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
