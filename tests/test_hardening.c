/*
 * test_hardening.c - regressions for defects a review found: each test
 * failed (crashed, hung or gave a wrong kernel) before its fix.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static char dir[] = "/tmp/jopt_hard_XXXXXX";

static const char *write_spec(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s.lua", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int try_new(jopt_ctx *ctx, const char *path, const char *options,
                   float *p, float *g, int64_t n, jopt_optim **opt)
{
    jopt_param param = {p, g, n};
    jopt_group group = {&param, 1, NULL};
    return jopt_optim_new(ctx, path, &group, 1, options, opt);
}

/* a state that is a scalar for one value of an option and an array for
 * another: changing the option must be refused, not corrupt the heap */
static void test_hardening_state_kind_cannot_change(void **state)
{
    (void)state;
    const char *path = write_spec("shape",
        "return { hyper = { lr = 0.1, per_element = false },\n"
        "  state = { m = function (h) if h.per_element then return 0 else return scalar(0) end end },\n"
        "  update = function (p, g, s, h, t)\n"
        "    if h.per_element then s.m = s.m + g else s.m = s.m + t end\n"
        "    return p - h.lr * s.m end }\n");
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float *p = t_alloc(100), *g = t_alloc(100);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, path, NULL, p, g, 100, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    assert_int_equal(jopt_option_set(opt, 0, "per_element", 1), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "state 'm'"));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL)); /* still the scalar kernel */
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* two specs whose key bytes once lined up (a value's bytes spelling the
 * start of the other's text) get their own kernels */
static void test_hardening_cache_key_has_lengths(void **state)
{
    (void)state;
    const char *tail =
        "if true then return { hyper = { a = {1,2,3,4,5,6,7}, b = 8, c = 9, d = 10, e = 11,"
        " f = 12, g = 13, h = 14, i = 15, j = 3.8354609747474554e+175 },\n"
        "  state = { s1 = 0, s2 = 0, s3 = 0 },\n"
        "  update = function (p, g, s, h) s.s1 = s.s1 + g; s.s2 = s.s2 + g; s.s3 = s.s3 + g;"
        " return p - g end } end --]]\n"
        "return { hyper = { x = {0.0,1,2,3,4,5,6,7}, y = {8,9,10,11,12,13,14,15} },\n"
        "  update = function (p, g, s, h) return p + g end }\n";
    char b[2048];
    snprintf(b, sizeof b, "--[[abcd%s", tail);
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s", write_spec("collA", tail));
    snprintf(pb, sizeof pb, "%s", write_spec("collB", b));
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float p[4] = {1, 1, 1, 1}, g[4] = {1, 1, 1, 1};
    jopt_optim *oa, *ob;
    T_OK(ctx, try_new(ctx, pa, NULL, p, g, 4, &oa));
    float q[4] = {1, 1, 1, 1}, h[4] = {1, 1, 1, 1};
    T_OK(ctx, try_new(ctx, pb, NULL, q, h, 4, &ob));
    T_OK(ctx, jopt_step(ob, NULL, NULL, NULL));
    assert_true(q[0] == 2.0f); /* B's update, p + g */
    size_t compiles;
    jopt_ctx_stats(ctx, &compiles, NULL);
    assert_int_equal(compiles, 2);
    jopt_optim_free(oa);
    jopt_optim_free(ob);
    jopt_ctx_free(ctx);
}

/* C loops over a length a Lua __len makes huge: the functions are gone,
 * and a metatable changed after setmetatable cannot slip in a library
 * function as a metamethod */
static void test_hardening_no_unbounded_c_loops(void **state)
{
    (void)state;
    static const char *const bodies[][2] = {
        {"local t = setmetatable({}, {__len = function() return math.maxinteger - 1 end})\n"
         "table.insert(t, 1, 0)\n", "insert"},
        {"local mt = {}\nlocal t = setmetatable({}, mt)\nmt.__index = string.upper\n"
         "assert(t.x == nil, 'metamethod slipped in')\n", NULL},
        {"setmetatable({}, {__close = function() end})\n", "__close"},
    };
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float p[4] = {0}, g[4] = {0};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%sreturn { hyper = { lr = 0.1 },\n"
                 "  update = function (p, g, s, h) return p - h.lr * g end }\n",
                 bodies[i][0]);
        jopt_optim *opt = NULL;
        int rc = try_new(ctx, write_spec("loop", text), NULL, p, g, 4, &opt);
        if (bodies[i][1]) {
            assert_int_equal(rc, JOPT_ESPEC);
            assert_non_null(strstr(jopt_errmsg(ctx), bodies[i][1]));
        } else {
            T_OK(ctx, rc);
        }
        jopt_optim_free(opt);
    }
    jopt_ctx_free(ctx);
}

/* too many hyperparameters: an error, not a Lua panic */
static void test_hardening_hyperparameter_count_bounded(void **state)
{
    (void)state;
    size_t n = 20000, cap = n * 24 + 256;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t k = (size_t)snprintf(text, cap, "local h = {}\nfor i = 1, %zu do h['x' .. i] = i end\n"
                                "return { hyper = h, update = function (p) return p end }\n", n);
    assert_true(k < cap);
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float p[4] = {0}, g[4] = {0};
    jopt_optim *opt = NULL;
    assert_int_equal(try_new(ctx, write_spec("many", text), NULL, p, g, 4, &opt), JOPT_ESPEC);
    assert_non_null(strstr(jopt_errmsg(ctx), "more than 256 hyperparameters"));
    jopt_ctx_free(ctx);
    free(text);
}

/* the engine is the context's when the optimizer was made */
static void test_hardening_engine_fixed_per_optimizer(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float *p = t_alloc(64), *g = t_alloc(64);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "adam", NULL, p, g, 64, &opt));
    size_t c0, c1;
    jopt_ctx_stats(ctx, &c0, NULL);
    T_OK(ctx, jopt_ctx_set_engine(ctx, JOPT_ENGINE_REFERENCE));
    T_OK(ctx, jopt_option_set(opt, 0, "weight_decay", 0.5)); /* folded: a kernel */
    jopt_ctx_stats(ctx, &c1, NULL);
    assert_int_equal(c1, c0 + 1); /* compiled by LLVM: still the JIT */
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* a checkpoint that gives an array state one value (checksum fixed up)
 * is refused, as are run-time flags on folded-only options */
static void test_hardening_checkpoint_sizes_checked(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float *p = t_alloc(100), *g = t_alloc(100);
    t_fill(g, 100, 1, 0.0);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "sgd", "lr=0.1 momentum=0.9", p, g, 100, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    size_t len;
    T_OK(ctx, jopt_state_size(opt, &len));
    unsigned char *buf = malloc(len), *cut = malloc(len);
    T_OK(ctx, jopt_state_save_mem(opt, buf, len, NULL));
    /* the momentum buffer is the last thing before the checksum: its count,
     * element type and 100 floats become a count of 1, the type and one
     * float */
    size_t data = len - 8 - 100 * 4, count = data - 1 - 8;
    memcpy(cut, buf, count);
    uint64_t one = 1;
    memcpy(cut + count, &one, 8);
    memcpy(cut + count + 8, buf + data - 1, 1 + 4);
    size_t clen = count + 8 + 1 + 4 + 8;
    t_reseal(cut, clen);
    assert_int_equal(jopt_state_load_mem(opt, cut, clen), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "wrong size"));
    T_OK(ctx, jopt_state_load_mem(opt, buf, len)); /* the real one loads */
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g), free(buf), free(cut);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hardening_state_kind_cannot_change),
        cmocka_unit_test(test_hardening_cache_key_has_lengths),
        cmocka_unit_test(test_hardening_no_unbounded_c_loops),
        cmocka_unit_test(test_hardening_hyperparameter_count_bounded),
        cmocka_unit_test(test_hardening_engine_fixed_per_optimizer),
        cmocka_unit_test(test_hardening_checkpoint_sizes_checked),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
