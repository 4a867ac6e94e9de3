/*
 * test_mixed_api.c - mixed precision through jopt.h: every combination of
 * parameter, gradient and state types against the reference interpreter
 * and against float32 arithmetic rounded once; 2-byte buffers laid side by
 * side; bad input (each refused with a message, nothing changed);
 * checkpoints of the state's type and the generator's seed; loss scaling
 * and the skipped step.  Stochastic rounding's statistics and determinism
 * are in test_mixed_sr.c.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "helpers.h"
#include "mixed_helpers.h"

static const char *const dt_names[] = {"float32", "bfloat16", "float16"};

/* ---- every combination of types ----------------------------------------- */

#define NT 4
static const int64_t sizes[NT] = {1, 17, 1000, 4099};

typedef struct rig {
    jopt_ctx *ctx;
    jopt_optim *opt;
    void *p[NT], *g[NT];
    jopt_param params[NT];
} rig;

static void rig_new(rig *r, jopt_engine engine, const char *spec, const char *options,
                    int dt, int gdt)
{
    assert_int_equal(jopt_ctx_new(&r->ctx), JOPT_OK);
    T_OK(r->ctx, jopt_ctx_set_engine(r->ctx, engine));
    for (int t = 0; t < NT; t++) {
        r->p[t] = m_alloc(dt, sizes[t]);
        r->g[t] = m_alloc(gdt, sizes[t]);
        m_fill(r->p[t], dt, sizes[t], 100 + (uint64_t)t, 0.0);
        r->params[t] = (jopt_param){r->p[t], r->g[t], sizes[t]};
    }
    jopt_group group = {r->params, NT, options};
    T_OK(r->ctx, jopt_optim_new(r->ctx, spec, &group, 1, NULL, &r->opt));
}

static void rig_free(rig *r)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    for (int t = 0; t < NT; t++)
        free(r->p[t]), free(r->g[t]);
}

/* Three steps with both engines: the same bits everywhere (parameters and
 * every state); and the first step equals float32 arithmetic on the
 * widened inputs, rounded once to each array's type. */
static void combo(const char *spec, const char *base, int dt, int gdt, int sdt)
{
    char options[512];
    snprintf(options, sizeof options, "%s dtype=%s grad_dtype=%s state_dtype=%s", base,
             dt_names[dt], dt_names[gdt], dt_names[sdt]);
    rig jit, ref, f32;
    rig_new(&jit, JOPT_ENGINE_JIT, spec, options, dt, gdt);
    rig_new(&ref, JOPT_ENGINE_REFERENCE, spec, options, dt, gdt);
    rig_new(&f32, JOPT_ENGINE_JIT, spec, base, CG_DT_F32, CG_DT_F32);
    for (int t = 0; t < NT; t++) /* float32 starts from the same values */
        m_widen(f32.p[t], jit.p[t], dt, sizes[t]);
    jopt_spec *sp;
    T_OK(jit.ctx, jopt_spec_open(jit.ctx, spec, base, &sp));
    for (int s = 0; s < 3; s++) {
        for (int t = 0; t < NT; t++) {
            m_fill(jit.g[t], gdt, sizes[t], 7 * (uint64_t)s + (uint64_t)t, 0.05);
            memcpy(ref.g[t], jit.g[t], (size_t)sizes[t] * (size_t)cg_dt_size(gdt));
            m_widen(f32.g[t], jit.g[t], gdt, sizes[t]);
        }
        T_OK(jit.ctx, jopt_step(jit.opt, NULL, NULL, NULL));
        T_OK(ref.ctx, jopt_step(ref.opt, NULL, NULL, NULL));
        if (s == 0)
            T_OK(f32.ctx, jopt_step(f32.opt, NULL, NULL, NULL));
        for (int t = 0; t < NT; t++) {
            m_assert_same(jit.p[t], ref.p[t], dt, sizes[t], "param", options);
            if (s == 0)
                m_assert_rounded(jit.p[t], f32.p[t], dt, sizes[t], "param", options);
            for (size_t k = 0; k < jopt_spec_nstate(sp); k++) {
                jopt_state_info info;
                T_OK(jit.ctx, jopt_spec_state(sp, k, &info));
                const float *a, *b, *c;
                int64_t n;
                jopt_dtype sd;
                T_OK(jit.ctx, jopt_state_get(jit.opt, 0, (size_t)t, info.name, &a, NULL));
                T_OK(ref.ctx, jopt_state_get(ref.opt, 0, (size_t)t, info.name, &b, NULL));
                T_OK(f32.ctx, jopt_state_get(f32.opt, 0, (size_t)t, info.name, &c, NULL));
                T_OK(jit.ctx, jopt_state_numel(jit.opt, 0, (size_t)t, info.name, &n));
                T_OK(jit.ctx, jopt_state_dtype(jit.opt, 0, (size_t)t, info.name, &sd));
                assert_true((a == NULL) == (b == NULL));
                if (!a)
                    continue;
                assert_int_equal((int)sd, info.kind == JOPT_STATE_ELEM ? sdt : CG_DT_F32);
                m_assert_same(a, b, (int)sd, n, info.name, options);
                if (s == 0 && info.kind == JOPT_STATE_ELEM)
                    m_assert_rounded(a, c, (int)sd, n, info.name, options);
            }
        }
    }
    jopt_spec_free(sp);
    rig_free(&jit);
    rig_free(&ref);
    rig_free(&f32);
}

static void test_mixed_every_type_combination(void **state)
{
    (void)state;
    for (int dt = 0; dt < 3; dt++)
        for (int gdt = 0; gdt < 3; gdt++)
            for (int sdt = 0; sdt < 3; sdt++)
                combo("adam", "lr=0.01 amsgrad=true weight_decay=0.1", dt, gdt, sdt);
    /* an unset state (SGD's buffer), scalar state (ASGD), sums over the
     * tensor in two passes (LAMB), the fused SGD */
    static const char *const others[][2] = {
        {"sgd", "lr=0.1 momentum=0.9 nesterov=true"},
        {"sgd", "lr=0.1 momentum=0.9 dampening=0.2 fused=true"},
        {"asgd", "lr=0.05 t0=1"},
        {"rmsprop", "centered=true momentum=0.5"},
        {"lamb", "weight_decay=0.01"},
        {"adamw", "lr=0.01"}};
    static const int types[][3] = {{1, 1, 1}, {2, 2, 2}, {1, 0, 0}, {2, 1, 0}, {0, 2, 1}};
    for (size_t k = 0; k < sizeof others / sizeof others[0]; k++)
        for (size_t c = 0; c < sizeof types / sizeof types[0]; c++)
            combo(others[k][0], others[k][1], types[c][0], types[c][1], types[c][2]);
}

/* ---- buffers --------------------------------------------------------------- */

/* 2-byte tensors side by side in one arena are not an overlap; the same
 * addresses declared float32 are. */
static void test_mixed_arena_of_two_byte_tensors(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    uint16_t *arena = m_alloc(CG_DT_BF16, 400), *garena = m_alloc(CG_DT_BF16, 400);
    jopt_param ps[2] = {{(float *)(void *)arena, (float *)(void *)garena, 200},
                        {(float *)(void *)(arena + 200), (float *)(void *)(garena + 200), 200}};
    jopt_group g = {ps, 2, "dtype=bfloat16"};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &g, 1, NULL, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    /* one tensor back to float32: its 800 bytes now cover the next one */
    assert_int_equal(jopt_set_dtype(opt, 0, 0, JOPT_FLOAT32, JOPT_BFLOAT16), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "overlap"));
    assert_int_equal(jopt_options_set(opt, 0, "grad_dtype=float32"), JOPT_EINVAL);
    double v;
    T_OK(ctx, jopt_option_get(opt, 0, "grad_dtype", &v));
    assert_true(v == JOPT_BFLOAT16);
    jopt_optim_free(opt);
    g.options = NULL; /* float32 */
    assert_int_equal(jopt_optim_new(ctx, "sgd", &g, 1, NULL, &opt), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "overlap"));
    /* 2-byte aligned is enough for 2-byte elements, not for float32 */
    jopt_param odd = {(float *)(void *)(arena + 1), (float *)(void *)(garena + 1), 10};
    jopt_group og = {&odd, 1, "dtype=float16"};
    T_OK(ctx, jopt_optim_new(ctx, "adam", &og, 1, NULL, &opt));
    assert_int_equal(jopt_set_dtype(opt, 0, 0, JOPT_FLOAT32, JOPT_FLOAT16), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "aligned"));
    jopt_optim_free(opt);
    og.options = "dtype=float16 grad_dtype=float32";
    assert_int_equal(jopt_optim_new(ctx, "adam", &og, 1, NULL, &opt), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "aligned to 4 bytes"));
    free(arena), free(garena);
    jopt_ctx_free(ctx);
}

/* ---- bad input ---------------------------------------------------------------- */

static void refused_new(jopt_ctx *ctx, const char *spec, const char *options,
                        const char *defaults, const char *needle)
{
    float *p = t_alloc(8), *g = t_alloc(8);
    jopt_param par = {p, g, 8};
    jopt_group grp = {&par, 1, options};
    jopt_optim *opt = NULL;
    int rc = jopt_optim_new(ctx, spec, &grp, 1, defaults, &opt);
    if (rc != JOPT_EINVAL || !strstr(jopt_errmsg(ctx), needle))
        fail_msg("%s \"%s\" / \"%s\": got %d \"%s\", want JOPT_EINVAL with \"%s\"", spec,
                 options ? options : "", defaults ? defaults : "", rc, jopt_errmsg(ctx),
                 needle);
    assert_null(opt);
    free(p), free(g);
}

static void test_mixed_bad_options(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    refused_new(ctx, "adam", "dtype=bf16", NULL,
                "option 'dtype': 'bf16' is not one of float32, bfloat16, float16");
    refused_new(ctx, "adam", NULL, "state_dtype=float64", "option 'state_dtype': 'float64'");
    refused_new(ctx, "adam", "grad_dtype=int8", NULL, "option 'grad_dtype'");
    refused_new(ctx, "adam", "stochastic_rounding=maybe", NULL, "as a boolean");
    refused_new(ctx, "adam", "seed=-1", NULL, "seed");
    refused_new(ctx, "adam", "seed=1.5", NULL, "not a whole number");
    refused_new(ctx, "adam", "seed=1e300", NULL, "2^53");
    refused_new(ctx, "adam", "seed=x", NULL, "cannot read 'x'");
    refused_new(ctx, "adam", "dtype=bfloat16 dtype=float16", NULL, "given twice");
    refused_new(ctx, "adam", "dtype=bfloat16,float16", NULL, "takes 1 value");
    refused_new(ctx, "lbfgs", "dtype=bfloat16", NULL, "closure optimizer");
    refused_new(ctx, "cg", NULL, "state_dtype=bfloat16", "closure optimizer");
    refused_new(ctx, "adam", "lr=0.1 nonsense=1 dtype=float16", NULL,
                "unknown option 'nonsense'");
    jopt_ctx_free(ctx);
}

/* a model whose failing calls must change nothing: its checkpoint bytes
 * and its parameters are compared before and after */
typedef struct victim {
    jopt_ctx *ctx;
    jopt_optim *opt;
    uint16_t *p, *g;
    jopt_param par;
    unsigned char *before;
    size_t len;
    uint16_t p_before[64];
} victim;

static void victim_new(victim *v, const char *options)
{
    assert_int_equal(jopt_ctx_new(&v->ctx), JOPT_OK);
    v->p = m_alloc(CG_DT_BF16, 64);
    v->g = m_alloc(CG_DT_BF16, 64);
    m_fill(v->p, CG_DT_BF16, 64, 1, 0);
    v->par = (jopt_param){(float *)(void *)v->p, (float *)(void *)v->g, 64};
    jopt_group grp = {&v->par, 1, options};
    T_OK(v->ctx, jopt_optim_new(v->ctx, "adam", &grp, 1, NULL, &v->opt));
    m_fill(v->g, CG_DT_BF16, 64, 2, 0);
    T_OK(v->ctx, jopt_step(v->opt, NULL, NULL, NULL));
    T_OK(v->ctx, jopt_state_size(v->opt, &v->len));
    v->before = malloc(v->len);
    T_OK(v->ctx, jopt_state_save_mem(v->opt, v->before, v->len, NULL));
    memcpy(v->p_before, v->p, sizeof v->p_before);
}

static void victim_unchanged(victim *v)
{
    size_t len;
    T_OK(v->ctx, jopt_state_size(v->opt, &len));
    assert_int_equal(len, v->len);
    unsigned char *now = malloc(len);
    T_OK(v->ctx, jopt_state_save_mem(v->opt, now, len, NULL));
    assert_memory_equal(now, v->before, len);
    assert_memory_equal(v->p, v->p_before, sizeof v->p_before);
    free(now);
}

static void victim_free(victim *v)
{
    jopt_optim_free(v->opt);
    jopt_ctx_free(v->ctx);
    free(v->p), free(v->g), free(v->before);
}

static void expect(victim *v, int rc, int want, const char *needle)
{
    if (rc != want || !strstr(jopt_errmsg(v->ctx), needle))
        fail_msg("got %d \"%s\", want %d with \"%s\"", rc, jopt_errmsg(v->ctx), want, needle);
    victim_unchanged(v);
}

static void test_mixed_bad_calls_change_nothing(void **state)
{
    (void)state;
    victim v;
    victim_new(&v, "dtype=bfloat16 state_dtype=bfloat16");
    expect(&v, jopt_set_dtype(v.opt, 0, 0, (jopt_dtype)7, JOPT_FLOAT32), JOPT_EINVAL,
           "dtype 7 is not a jopt_dtype");
    expect(&v, jopt_set_dtype(v.opt, 0, 0, JOPT_FLOAT32, (jopt_dtype)-1), JOPT_EINVAL,
           "grad_dtype -1");
    expect(&v, jopt_set_dtype(v.opt, 0, 3, JOPT_FLOAT32, JOPT_FLOAT32), JOPT_EINVAL,
           "no parameter 3");
    expect(&v, jopt_options_set(v.opt, 0, "state_dtype=float32"), JOPT_EINVAL,
           "state_dtype cannot change from bfloat16 to float32");
    expect(&v, jopt_option_set(v.opt, 0, "state_dtype", 0), JOPT_EINVAL,
           "have state already");
    expect(&v, jopt_option_set(v.opt, 0, "dtype", 3), JOPT_EINVAL, "not a jopt_dtype");
    expect(&v, jopt_option_set(v.opt, 0, "stochastic_rounding", 0.5), JOPT_EINVAL,
           "not a boolean");
    expect(&v, jopt_options_set(v.opt, 0, "lr=0.5 dtype=float64"), JOPT_EINVAL,
           "'float64'");
    expect(&v, jopt_options_set(v.opt, 0, "dtype=float16 lr=-1"), JOPT_EINVAL,
           "learning rate");
    double lr;
    T_OK(v.ctx, jopt_option_get(v.opt, 0, "lr", &lr));
    assert_true(lr == 1e-3);
    expect(&v, jopt_set_grad_scale(v.opt, NAN, 0), JOPT_EINVAL, "scale nan");
    expect(&v, jopt_set_grad_scale(v.opt, 0, 0), JOPT_EINVAL, "above 0");
    expect(&v, jopt_set_grad_scale(v.opt, -2, 0), JOPT_EINVAL, "above 0");
    expect(&v, jopt_set_grad_scale(v.opt, INFINITY, 0), JOPT_EINVAL, "finite");
    expect(&v, jopt_set_grad_scale(v.opt, 2, 2), JOPT_EINVAL, "found_inf 2");
    jopt_dtype sd;
    expect(&v, jopt_state_dtype(v.opt, 0, 0, "nope", &sd), JOPT_EINVAL, "no state 'nope'");
    T_OK(v.ctx, jopt_state_dtype(v.opt, 0, 0, "exp_avg", &sd));
    assert_int_equal(sd, JOPT_BFLOAT16);
    /* what may change: the options read back as set */
    T_OK(v.ctx, jopt_options_set(v.opt, 0, "stochastic_rounding=true seed=12345"));
    double sr, seed;
    T_OK(v.ctx, jopt_option_get(v.opt, 0, "stochastic_rounding", &sr));
    T_OK(v.ctx, jopt_option_get(v.opt, 0, "seed", &seed));
    assert_true(sr == 1 && seed == 12345);
    victim_free(&v);
}

static void test_mixed_closure_optimizers_refuse(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float *p = t_alloc(8), *g = t_alloc(8);
    jopt_param par = {p, g, 8};
    jopt_group grp = {&par, 1, NULL};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "lbfgs", &grp, 1, NULL, &opt));
    assert_int_equal(jopt_set_dtype(opt, 0, 0, JOPT_BFLOAT16, JOPT_BFLOAT16), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "float32 parameters"));
    assert_int_equal(jopt_set_grad_scale(opt, 2, 0), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "no loss scaling"));
    assert_int_equal(jopt_options_set(opt, 0, "state_dtype=float16"), JOPT_EINVAL);
    jopt_optim_free(opt);
    free(p), free(g);
    jopt_ctx_free(ctx);
}

/* ---- checkpoints -------------------------------------------------------------- */

static void test_mixed_checkpoint_of_another_state_type(void **state)
{
    (void)state;
    victim a, b, c;
    victim_new(&a, "dtype=bfloat16 state_dtype=bfloat16 stochastic_rounding=true seed=99");
    victim_new(&b, "dtype=bfloat16");                       /* float32 state */
    victim_new(&c, "dtype=bfloat16 state_dtype=float16");
    expect(&b, jopt_state_load_mem(b.opt, a.before, a.len), JOPT_EINVAL,
           "the checkpoint's per-element state is bfloat16; this optimizer keeps float32");
    expect(&a, jopt_state_load_mem(a.opt, b.before, b.len), JOPT_EINVAL,
           "state is float32; this optimizer keeps bfloat16");
    expect(&c, jopt_state_load_mem(c.opt, a.before, a.len), JOPT_EINVAL,
           "keeps float16");
    /* into one of the same state type: the rounding and seed come with it */
    victim d;
    victim_new(&d, "dtype=bfloat16 state_dtype=bfloat16 seed=5");
    T_OK(d.ctx, jopt_state_load_mem(d.opt, a.before, a.len));
    double sr, seed;
    T_OK(d.ctx, jopt_option_get(d.opt, 0, "stochastic_rounding", &sr));
    T_OK(d.ctx, jopt_option_get(d.opt, 0, "seed", &seed));
    assert_true(sr == 1 && seed == 99);
    size_t len;
    T_OK(d.ctx, jopt_state_size(d.opt, &len));
    unsigned char *again = malloc(len);
    T_OK(d.ctx, jopt_state_save_mem(d.opt, again, len, NULL));
    assert_int_equal(len, a.len);
    assert_memory_equal(again, a.before, len);
    /* the state is 2 bytes an element in the file: bfloat16 state is
     * 2 x 64 x 2 bytes smaller than float32's */
    assert_int_equal(b.len - a.len, 2 * 64 * 2 - 8 * 0);
    free(again);
    victim_free(&a), victim_free(&b), victim_free(&c), victim_free(&d);
}

/* ---- loss scaling ------------------------------------------------------------- */

/* A power-of-two scale divides exactly: a scaled step equals the step on
 * the unscaled gradients, and the quotients are written back. */
static void test_mixed_grad_scale_divides_and_writes_back(void **state)
{
    (void)state;
    for (int dt = 0; dt < 3; dt++) {
        char opts[128];
        snprintf(opts, sizeof opts, "lr=0.01 dtype=%s", dt_names[dt]);
        rig a, b;
        rig_new(&a, JOPT_ENGINE_JIT, "adam", opts, dt, dt);
        rig_new(&b, JOPT_ENGINE_JIT, "adam", opts, dt, dt);
        for (int s = 0; s < 3; s++) {
            for (int t = 0; t < NT; t++) {
                m_fill(b.g[t], dt, sizes[t], 30 + (uint64_t)(s * NT + t), 0.05);
                m_scale(a.g[t], b.g[t], dt, sizes[t], 1024.0);
            }
            T_OK(a.ctx, jopt_set_grad_scale(a.opt, 1024.0, JOPT_CHECK_FINITE));
            T_OK(a.ctx, jopt_step(a.opt, NULL, NULL, NULL));
            T_OK(b.ctx, jopt_step(b.opt, NULL, NULL, NULL));
            for (int t = 0; t < NT; t++) {
                m_assert_same(a.p[t], b.p[t], dt, sizes[t], "param", opts);
                m_assert_same(a.g[t], b.g[t], dt, sizes[t], "grad written back", opts);
            }
        }
        rig_free(&a);
        rig_free(&b);
    }
}

/* A NaN or infinite gradient skips the step: nothing changes, not even
 * the state of a parameter's first step; the message names it.  Big
 * enough for the pool. */
static void test_mixed_found_inf_skips_the_step(void **state)
{
    (void)state;
    static const struct { int dt; uint16_t bad; const char *what; } cases[] = {
        {CG_DT_F32, 0, "inf"}, {CG_DT_BF16, 0x7fc1, "NaN"}, {CG_DT_F16, 0xfc00, "-inf"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int dt = cases[c].dt;
        jopt_ctx *ctx;
        assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
        T_OK(ctx, jopt_ctx_set_threads(ctx, 2));
        int64_t n[2] = {1 << 20, 700001};
        void *p[2], *g[2];
        jopt_param ps[2];
        for (int t = 0; t < 2; t++) {
            p[t] = m_alloc(dt, n[t]);
            g[t] = m_alloc(dt, n[t]);
            m_fill(p[t], dt, n[t], 3 + (uint64_t)t, 0);
            m_fill(g[t], dt, n[t], 5 + (uint64_t)t, 0.01);
            ps[t] = (jopt_param){p[t], g[t], n[t]};
        }
        char opts[64];
        snprintf(opts, sizeof opts, "dtype=%s", dt_names[dt]);
        jopt_group grp = {ps, 2, opts};
        jopt_optim *opt;
        T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, NULL, &opt));
        int64_t at = 654321;
        if (dt == CG_DT_F32)
            ((float *)g[1])[at] = INFINITY;
        else
            ((uint16_t *)g[1])[at] = cases[c].bad;
        size_t bytes[2] = {(size_t)n[0] * (size_t)cg_dt_size(dt),
                           (size_t)n[1] * (size_t)cg_dt_size(dt)};
        void *copy[2][2];
        for (int t = 0; t < 2; t++) {
            copy[t][0] = malloc(bytes[t]), copy[t][1] = malloc(bytes[t]);
            memcpy(copy[t][0], p[t], bytes[t]), memcpy(copy[t][1], g[t], bytes[t]);
        }
        for (int round = 0; round < 2; round++) {
            /* round 0: jopt looks; round 1: the caller says so */
            T_OK(ctx, jopt_set_grad_scale(opt, 8.0, round ? 1 : JOPT_CHECK_FINITE));
            double loss = 0;
            int rc = jopt_step(opt, NULL, NULL, &loss);
            assert_int_equal(rc, JOPT_SKIPPED);
            char want[128];
            snprintf(want, sizeof want, "group 0 parameter 1: gradient element %lld is %s",
                     (long long)at, cases[c].what);
            assert_non_null(strstr(jopt_errmsg(ctx), round ? "found_inf was set" : want));
            assert_true(isnan(loss));
            for (int t = 0; t < 2; t++) {
                assert_memory_equal(p[t], copy[t][0], bytes[t]);
                assert_memory_equal(g[t], copy[t][1], bytes[t]);
                const float *m;
                int64_t steps;
                T_OK(ctx, jopt_state_get(opt, 0, (size_t)t, "exp_avg", &m, &steps));
                assert_null(m);
                assert_int_equal(steps, 0);
            }
        }
        /* the scale was for one step: the next runs unscaled and unchecked */
        m_fill(g[1], dt, n[1], 6, 0.01);
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
        const float *m;
        int64_t steps;
        T_OK(ctx, jopt_state_get(opt, 0, 1, "exp_avg", &m, &steps));
        assert_non_null(m);
        assert_int_equal(steps, 1);
        /* checked and clean: a step */
        T_OK(ctx, jopt_set_grad_scale(opt, 1.0, JOPT_CHECK_FINITE));
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
        T_OK(ctx, jopt_state_get(opt, 0, 1, "exp_avg", &m, &steps));
        assert_int_equal(steps, 2);
        jopt_optim_free(opt);
        for (int t = 0; t < 2; t++)
            free(p[t]), free(g[t]), free(copy[t][0]), free(copy[t][1]);
        jopt_ctx_free(ctx);
    }
}

/* The kernels stay vectorized at the full width (8 floats on AVX2) with
 * 16-bit arrays: float16 converts with F16C's ymm forms (the loop's width
 * forced), bfloat16 by integer lanes; an all-bfloat16 kernel takes its
 * elements in pairs. */
static void test_mixed_kernels_vectorized(void **state)
{
    (void)state;
    static const char *const opts[] = {"dtype=bfloat16", "dtype=float16 state_dtype=float16",
                                       "dtype=bfloat16 state_dtype=bfloat16 "
                                       "stochastic_rounding=true"};
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        jopt_spec *sp;
        const char *text;
        T_OK(ctx, jopt_spec_open(ctx, "adam", opts[k], &sp));
        T_OK(ctx, jopt_spec_emit(sp, NULL, "asm", &text));
        int ymm = strstr(text, "vsqrtps\t%ymm") || strstr(text, "vsqrtps\t%zmm");
        if (!ymm)
            fail_msg("adam \"%s\": no full-width vsqrtps", opts[k]);
        if (k == 1 && !strstr(text, "vcvtph2ps\t(") )
            fail_msg("adam \"%s\": no vcvtph2ps from memory", opts[k]);
        if (k == 1 && !strstr(text, "vcvtps2ph\t$4, %ymm") && !strstr(text, "vcvtps2ph\t$4, %zmm"))
            fail_msg("adam \"%s\": no full-width vcvtps2ph", opts[k]);
        if (k == 2) {
            T_OK(ctx, jopt_spec_emit(sp, NULL, "ir", &text));
            assert_non_null(strstr(text, "load <8 x i32>"));
        }
        jopt_spec_free(sp);
    }
    jopt_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_every_type_combination),
        cmocka_unit_test(test_mixed_arena_of_two_byte_tensors),
        cmocka_unit_test(test_mixed_bad_options),
        cmocka_unit_test(test_mixed_bad_calls_change_nothing),
        cmocka_unit_test(test_mixed_closure_optimizers_refuse),
        cmocka_unit_test(test_mixed_checkpoint_of_another_state_type),
        cmocka_unit_test(test_mixed_grad_scale_divides_and_writes_back),
        cmocka_unit_test(test_mixed_found_inf_skips_the_step),
        cmocka_unit_test(test_mixed_kernels_vectorized),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
