/*
 * test_vkernels.c - the spec language grown for closure optimizers: vector
 * kernels (`kernels`, `method`), the `maxall` reduction, and the choice and
 * None hyperparameters.
 *
 * Kernels are checked JIT against the reference interpreter bit for bit
 * (arrays written and results), maxall against a plain C maximum, and a
 * reduction through the runtime for the same bits at any thread count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "cg.h"

static char g_dir[256];

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/jopt_test_vk_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_spec(char *path, size_t len, const char *name, const char *src)
{
    snprintf(path, len, "%s/%s.lua", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(src, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static int load_spec(const char *path, cg_spec **spec, char *err)
{
    return cg_spec_load(NULL, 0, path, spec, err);
}

/* ---- JIT == reference on every shipped kernel ---------------------------- */

/* one call of a vector kernel over n elements, as two parts (the batch
 * then merges the sums of both, in order) */
static void run_vk(cg_kernel *k, float **arrays, int64_t n, const double *scalars,
                   double *results)
{
    double u[CG_MAX_UNIFORMS + 1];
    char err[CG_ERRLEN];
    int64_t mid = n / 3;
    float *second[CG_MAX_SLOTS];
    for (int a = 0; a < cg_kernel_layout(k)->narrays; a++)
        second[a] = arrays[a] + mid;
    cg_part parts[2] = {{arrays, mid}, {second, n - mid}};
    cg_call call = {.k = k, .parts = parts, .nparts = 2, .values = scalars,
                    .u = u, .results = results};
    cg_batch *b;
    assert_int_equal(cg_batch_new(&b, err), JOPT_OK);
    assert_int_equal(cg_batch_reserve(b, cg_batch_tasks(mid, NULL, 0) +
                                         cg_batch_tasks(n - mid, NULL, 0), 1, err), JOPT_OK);
    assert_int_equal(cg_batch_run(b, &call, 1, NULL, err), JOPT_OK);
    cg_batch_free(b);
}

/* data with the values that break kernels: zeros, subnormals, inf, NaN */
static void fill_special(float *x, int64_t n, uint64_t seed)
{
    t_fill(x, n, seed, 0.1);
    static const float special[] = {0.0f, -0.0f, 1e-40f, -3e-39f, INFINITY,
                                    -INFINITY, NAN, 3e38f, -1e-30f};
    for (int64_t i = (int64_t)(seed % 7); i < n; i += 97)
        x[i] = special[(size_t)i % (sizeof special / sizeof special[0])];
}

static int same_double(double a, double b)
{
    return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0;
}

static void check_spec_kernels(const char *name, int with_specials)
{
    const char *dirs[] = {JOPT_SOURCE_DIR "/specs"};
    char err[CG_ERRLEN];
    cg_spec *spec;
    if (cg_spec_load(dirs, 1, name, &spec, err))
        fail_msg("%s", err);
    cg_jit *jit;
    assert_int_equal(cg_jit_new(&jit, err), JOPT_OK);
    const int64_t n = 4099;
    assert_true(cg_spec_nvkernels(spec) > 0);
    for (size_t i = 0; i < cg_spec_nvkernels(spec); i++) {
        const cg_vkernel_sig *sig = cg_spec_vkernel(spec, i);
        cg_kernel *k[2];
        for (int e = 0; e < 2; e++) {
            cg_request req = {.spec = spec, .vkernel = sig->name, .reference = e};
            if (cg_kernel_get(jit, &req, &k[e], err))
                fail_msg("%s.%s: %s", name, sig->name, err);
        }
        float *a[2][CG_MAX_SLOTS];
        for (int e = 0; e < 2; e++)
            for (int s = 0; s < sig->narrays; s++) {
                a[e][s] = t_alloc(n);
                if (with_specials)
                    fill_special(a[e][s], n, 11 + (uint64_t)s);
                else
                    t_fill(a[e][s], n, 11 + (uint64_t)s, 0.05);
            }
        double scalars[8] = {0.37, -1.5, 2.0, 1e-3, 0, 0, 0, 0};
        double res[2][CG_MAX_RESULTS];
        for (int e = 0; e < 2; e++)
            run_vk(k[e], a[e], n, scalars, res[e]);
        for (int s = 0; s < sig->narrays; s++) {
            int64_t at;
            uint32_t ulp = t_max_ulp(a[0][s], a[1][s], n, &at);
            if (ulp)
                fail_msg("%s.%s: array %s differs by %u ulp at %lld", name,
                         sig->name, sig->arrays[s], ulp, (long long)at);
        }
        for (int r = 0; r < cg_kernel_layout(k[0])->nresults; r++)
            if (!same_double(res[0][r], res[1][r]))
                fail_msg("%s.%s: result %d: JIT %a, reference %a", name,
                         sig->name, r, res[0][r], res[1][r]);
        for (int e = 0; e < 2; e++) {
            for (int s = 0; s < sig->narrays; s++)
                free(a[e][s]);
            cg_kernel_release(k[e]);
        }
    }
    cg_jit_free(jit);
    cg_spec_free(spec);
}

static void test_vk_shipped_kernels_jit_is_reference(void **state)
{
    (void)state;
    const char *specs[] = {"lbfgs", "cg"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        check_spec_kernels(specs[i], 0);
        check_spec_kernels(specs[i], 1);
    }
}

/* ---- maxall --------------------------------------------------------------- */

static const char maxall_spec[] =
    "return { method = 'lbfgs', hyper = { lr = 1 },\n"
    "  kernels = {\n"
    "    amax = { arrays = 'x', run = function (v) return maxall(abs(v.x)) end },\n"
    "    both = { arrays = 'x y', scalars = 'a',\n"
    "             run = function (v, a) v.y = v.x * a\n"
    "                                   return maxall(v.x), sum(v.x) * a, 7 end },\n"
    "  } }\n";

static void test_vk_maxall_matches_c_and_propagates_nan(void **state)
{
    (void)state;
    char path[512], err[CG_ERRLEN];
    write_spec(path, sizeof path, "maxall", maxall_spec);
    cg_spec *spec;
    if (load_spec(path, &spec, err))
        fail_msg("%s", err);
    cg_jit *jit;
    assert_int_equal(cg_jit_new(&jit, err), JOPT_OK);
    const int64_t n = 1000;
    float *x = t_alloc(n), *y = t_alloc(n);
    t_fill(x, n, 5, 0);
    for (int e = 0; e < 2; e++) {
        cg_kernel *k;
        cg_request req = {.spec = spec, .vkernel = "both", .reference = e};
        assert_int_equal(cg_kernel_get(jit, &req, &k, err), JOPT_OK);
        assert_int_equal(cg_kernel_layout(k)->nresults, 3);
        double want_max = -INFINITY, want_sum = 0, res[3], a = 0.5;
        for (int64_t i = 0; i < n; i++) {
            want_max = x[i] > want_max ? x[i] : want_max;
            want_sum += (double)x[i]; /* in element order, in double */
        }
        float *arr[2] = {x, y};
        run_vk(k, arr, n, &a, res);
        assert_true(res[0] == want_max);
        assert_true(res[1] == want_sum * a);
        assert_true(res[2] == 7);
        for (int64_t i = 0; i < n; i++)
            assert_true(y[i] == x[i] * 0.5f);
        x[n - 2] = NAN; /* one NaN anywhere makes the maximum NaN */
        run_vk(k, arr, n, &a, res);
        assert_true(isnan(res[0]));
        x[n - 2] = 0;
        cg_kernel_release(k);
    }
    free(x);
    free(y);
    cg_jit_free(jit);
    cg_spec_free(spec);
}

/* an update that divides by a maximum over the tensor: the same bits with
 * one thread or two, over tensors of several 65,536-element ranges */
static const char clip_spec[] =
    "return { hyper = { lr = 0.1 },\n"
    "  update = function (p, g, s, h)\n"
    "    return p - h.lr * g / max(maxall(abs(g)), 1)\n"
    "  end }\n";

static void run_clip(const char *path, int threads, float *p, float *g, int64_t n)
{
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    T_OK(ctx, jopt_ctx_set_threads(ctx, threads));
    jopt_param prm = {p, g, n};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, path, &grp, 1, NULL, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
}

static void test_vk_maxall_in_update_any_thread_count(void **state)
{
    (void)state;
    char path[512];
    write_spec(path, sizeof path, "clip", clip_spec);
    const int64_t n = 3 * 65536 + 777 + 16 * 65536; /* over the runtime's RT_PARALLEL_MIN */
    float *p1 = t_alloc(n), *p2 = t_alloc(n), *g = t_alloc(n);
    t_fill(p1, n, 1, 0);
    memcpy(p2, p1, (size_t)n * sizeof *p1);
    t_fill(g, n, 2, 0);
    g[n - 5] = 4.0f; /* the maximum, in the last range */
    run_clip(path, 1, p1, g, n);
    run_clip(path, 2, p2, g, n);
    assert_memory_equal(p1, p2, (size_t)n * sizeof *p1);
    float want = p2[0]; /* recompute one element by hand */
    t_fill(p2, 1, 1, 0);
    assert_true(want == p2[0] - 0.1f * g[0] / 4.0f);
    free(p1);
    free(p2);
    free(g);
}

/* ---- closure optimizers over tensors big enough for the pool -------------- */

/* f = Σ a_k (x_k - 1)² / 2 over two tensors, a_k in [0.5, 4.5) */
typedef struct quad {
    float *x[2], *g[2], *a[2];
    int64_t n[2];
} quad;

static int quad_closure(void *user, double *loss)
{
    quad *q = user;
    double f = 0;
    for (int t = 0; t < 2; t++)
        for (int64_t k = 0; k < q->n[t]; k++) {
            double d = (double)q->x[t][k] - 1.0;
            f += 0.5 * q->a[t][k] * d * d;
            q->g[t][k] = (float)(q->a[t][k] * d);
        }
    *loss = f;
    return 0;
}

static void run_quad(const char *spec, const char *options, int threads,
                     float *out, double *losses)
{
    quad q = {.n = {1200000, 700001}};
    for (int t = 0; t < 2; t++) {
        q.x[t] = t_alloc(q.n[t]);
        q.g[t] = t_alloc(q.n[t]);
        q.a[t] = t_alloc(q.n[t]);
        t_fill(q.x[t], q.n[t], 3 + (uint64_t)t, 0);
        t_fill(q.a[t], q.n[t], 7 + (uint64_t)t, 0);
        for (int64_t k = 0; k < q.n[t]; k++)
            q.a[t][k] = 2.5f + 2 * q.a[t][k];
    }
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, JOPT_SOURCE_DIR "/specs"));
    T_OK(ctx, jopt_ctx_set_threads(ctx, threads));
    jopt_param prm[2] = {{q.x[0], q.g[0], q.n[0]}, {q.x[1], q.g[1], q.n[1]}};
    jopt_group grp = {prm, 2, options};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, spec, &grp, 1, NULL, &opt));
    for (int s = 0; s < 2; s++)
        T_OK(ctx, jopt_step(opt, quad_closure, &q, &losses[s]));
    memcpy(out, q.x[0], (size_t)q.n[0] * sizeof *out);
    memcpy(out + q.n[0], q.x[1], (size_t)q.n[1] * sizeof *out);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    for (int t = 0; t < 2; t++) {
        free(q.x[t]);
        free(q.g[t]);
        free(q.a[t]);
    }
}

/* every dot product and maximum of L-BFGS and CG over 1.9M elements, cut
 * among two threads or done by one: the same bits */
static void test_vk_closure_optimizers_any_thread_count(void **state)
{
    (void)state;
    const char *cases[][2] = {{"lbfgs", "max_iter=6 line_search_fn=strong_wolfe"},
                              {"lbfgs", "max_iter=3"},
                              {"cg", ""}};
    const int64_t n = 1200000 + 700001;
    float *x1 = t_alloc(n), *x2 = t_alloc(n);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double l1[2], l2[2];
        run_quad(cases[i][0], cases[i][1], 1, x1, l1);
        run_quad(cases[i][0], cases[i][1], 2, x2, l2);
        assert_memory_equal(x1, x2, (size_t)n * sizeof *x1);
        assert_memory_equal(l1, l2, sizeof l1);
        print_message("%s %s: %.9g -> %.9g\n", cases[i][0], cases[i][1], l1[0], l1[1]);
        assert_true(l1[1] < l1[0]); /* and it did descend */
    }
    free(x1);
    free(x2);
}

/* ---- spec errors ------------------------------------------------------------ */

static void expect_spec_error(const char *name, const char *src, const char *want)
{
    char path[512], err[CG_ERRLEN] = "";
    write_spec(path, sizeof path, name, src);
    cg_spec *spec = NULL;
    int rc = load_spec(path, &spec, err);
    if (rc == JOPT_OK) { /* some errors come at trace time */
        cg_jit *jit;
        assert_int_equal(cg_jit_new(&jit, err), JOPT_OK);
        cg_kernel *k = NULL;
        cg_request req = {.spec = spec, .vkernel = "k", .reference = 1};
        rc = cg_kernel_get(jit, &req, &k, err);
        cg_kernel_release(k);
        cg_jit_free(jit);
        cg_spec_free(spec);
    }
    assert_int_equal(rc, JOPT_ESPEC);
    if (!strstr(err, want))
        fail_msg("%s: expected '%s' in: %s", name, want, err);
}

static void test_vk_spec_errors(void **state)
{
    (void)state;
    expect_spec_error("nokernels", "return { method = 'lbfgs', hyper = {} }",
                      "needs a 'kernels' table");
    expect_spec_error("both", "return { method = 'lbfgs', hyper = {}, kernels = {},"
                      " update = function (p) return p end }", "not an 'update'");
    expect_spec_error("noarrays", "return { method = 'lbfgs', hyper = {}, kernels = {"
                      " k = { run = function (v) end } } }", "'arrays' must be");
    expect_spec_error("duparrays", "return { method = 'lbfgs', hyper = {}, kernels = {"
                      " k = { arrays = 'x x', run = function (v) end } } }",
                      "distinct names");
    expect_spec_error("norun", "return { method = 'lbfgs', hyper = {}, kernels = {"
                      " k = { arrays = 'x' } } }", "'run' must be a function");
    expect_spec_error("varying", "return { method = 'lbfgs', hyper = {}, kernels = {"
                      " k = { arrays = 'x', run = function (v) return v.x end } } }",
                      "result 1 is per element");
    expect_spec_error("unknown", "return { method = 'lbfgs', hyper = {}, kernels = {"
                      " k = { arrays = 'x', run = function (v) v.y = 1 end } } }",
                      "has no array 'y'");
    expect_spec_error("badchoice", "return { hyper = { f = {'a', 3} },"
                      " update = function (p) return p end }", "choice 'f'");
    expect_spec_error("line", "return { method = 'lbfgs', hyper = {}, kernels = {\n"
                      " k = { arrays = 'x', run = function (v)\n"
                      "   return sum(v.x) + nosuch.field end } } }",
                      "line.lua:3:");
}

/* A spec for a method whose kernel writes what the driver binds to the
 * user's gradients, or lacks a kernel the driver needs: refused when the
 * optimizer is made, naming the spec, the kernel and the array. */
static void make_lbfgs_variant(jopt_ctx *ctx, const char *name, const char *from,
                               const char *to, const char *want)
{
    FILE *f = fopen(JOPT_SOURCE_DIR "/specs/lbfgs.lua", "r");
    assert_non_null(f);
    static char src[65536];
    size_t n = fread(src, 1, sizeof src - 1, f);
    fclose(f);
    src[n] = 0;
    char *at = strstr(src, from);
    assert_non_null(at);
    static char out[65536];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - src), src, to, at + strlen(from));
    char path[512];
    write_spec(path, sizeof path, name, out);
    float p[2] = {1, 2}, g[2] = {0};
    jopt_param prm = {p, g, 2};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *opt = NULL;
    assert_int_equal(jopt_optim_new(ctx, path, &grp, 1, NULL, &opt), JOPT_ESPEC);
    assert_null(opt);
    if (!strstr(jopt_errmsg(ctx), want))
        fail_msg("expected '%s' in: %s", want, jopt_errmsg(ctx));
}

static void test_vk_driver_checks_the_spec_kernels(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    make_lbfgs_variant(ctx, "writes_grads", "v.flat = v.g\n", "v.flat = v.g\n v.g = v.g * 2\n",
                       "kernel 'gather' writes its array 'g', which method 'lbfgs' "
                       "binds to the user's gradients");
    make_lbfgs_variant(ctx, "no_copy", "copy = {", "copy_renamed = {",
                       "needs a kernel 'copy' with 2 arrays, 0 scalars and 0 results");
    make_lbfgs_variant(ctx, "bad_method", "method = \"lbfgs\"", "method = \"bfgs\"",
                       "unknown method 'bfgs'");
    jopt_ctx_free(ctx);
}

/* ---- choice and None options ------------------------------------------------ */

static void test_vk_choice_and_none_options(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, JOPT_SOURCE_DIR "/specs"));
    float p[3] = {1, 2, 3}, g[3] = {0};
    jopt_param prm = {p, g, 3};
    jopt_group grp = {&prm, 1, "line_search_fn=strong_wolfe max_eval=7"};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "lbfgs", &grp, 1, NULL, &opt));
    double v;
    T_OK(ctx, jopt_option_get(opt, 0, "line_search_fn", &v));
    assert_true(v == 1);
    T_OK(ctx, jopt_option_get(opt, 0, "max_eval", &v));
    assert_true(v == 7);
    T_OK(ctx, jopt_options_set(opt, 0, "max_eval=None line_search_fn=None"));
    T_OK(ctx, jopt_option_get(opt, 0, "max_eval", &v));
    assert_true(isnan(v));
    T_OK(ctx, jopt_option_get(opt, 0, "line_search_fn", &v));
    assert_true(v == 0);
    /* refused, and nothing changes */
    assert_int_equal(jopt_options_set(opt, 0, "line_search_fn=bogus"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "'bogus' is not one of none, strong_wolfe"));
    assert_int_equal(jopt_option_set(opt, 0, "line_search_fn", 2), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "is a choice"));
    assert_int_equal(jopt_options_set(opt, 0, "lr=None"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "cannot read 'None' as a number"));
    T_OK(ctx, jopt_option_get(opt, 0, "line_search_fn", &v));
    assert_true(v == 0);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vk_shipped_kernels_jit_is_reference),
        cmocka_unit_test(test_vk_maxall_matches_c_and_propagates_nan),
        cmocka_unit_test(test_vk_maxall_in_update_any_thread_count),
        cmocka_unit_test(test_vk_closure_optimizers_any_thread_count),
        cmocka_unit_test(test_vk_spec_errors),
        cmocka_unit_test(test_vk_driver_checks_the_spec_kernels),
        cmocka_unit_test(test_vk_choice_and_none_options),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
