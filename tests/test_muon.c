/*
 * test_muon.c - Muon (specs/muon.lua), the spec that multiplies matrices:
 * torch 2.13's recorded runs replayed (tests/fixtures/spec2/muon_*.fix:
 * Newton-Schulz in bfloat16 as torch runs it, and the .ns-f32 twins in
 * float32), the JIT against the reference engine and one thread against
 * two bit for bit, shapes and values refused with torch's messages with
 * nothing changed, and a checkpoint round trip.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* ---- a jopt-fixture 2 file (tests/fixtures/spec2/README.md), as Muon's
 * are: shapes, no inputs or events, the final momentum buffers ---------- */

#define MAXT 8

typedef struct fix2 {
    char options[512];
    int nt, steps;
    int64_t size[MAXT], shape[MAXT][2], total;
    float *init, *grads, *params, *final; /* final: the buffers, total */
    unsigned char *mask;                  /* steps x nt */
} fix2;

static void fix2_load(fix2 *f, const char *name)
{
    char path[1024], line[1024];
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "%s/tests/fixtures/spec2/%s", JOPT_SOURCE_DIR, name);
    FILE *in = fopen(path, "rb");
    if (!in)
        fail_msg("cannot open %s", path);
    int nfinal = 0;
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "end"))
            break;
        if (!strncmp(line, "options ", 8))
            snprintf(f->options, sizeof f->options, "%.500s", line + 8);
        else if (!strncmp(line, "steps ", 6))
            f->steps = atoi(line + 6);
        else if (!strncmp(line, "final ", 6))
            nfinal++;
        else if (!strncmp(line, "shapes ", 7)) {
            char *c = line + 7;
            for (f->nt = 0; *c && f->nt < MAXT; f->nt++) {
                long long r, k = 1;
                int used;
                if (sscanf(c, "%lldx%lld%n", &r, &k, &used) < 2)
                    fail_msg("%s: a shape that is not 2-D", name);
                f->shape[f->nt][0] = r;
                f->shape[f->nt][1] = k;
                f->size[f->nt] = r * k;
                f->total += r * k;
                c += used;
                while (*c == ' ')
                    c++;
            }
        }
    }
    assert_true(f->nt > 0 && f->steps > 0 && nfinal == f->nt);
    f->init = malloc((size_t)f->total * sizeof(float));
    f->grads = calloc((size_t)(f->steps * f->total), sizeof(float));
    f->params = malloc((size_t)(f->steps * f->total) * sizeof(float));
    f->final = malloc((size_t)f->total * sizeof(float));
    f->mask = malloc((size_t)(f->steps * f->nt));
    assert_true(f->init && f->grads && f->params && f->final && f->mask);
    size_t n = (size_t)f->total;
    assert_true(fread(f->init, sizeof(float), n, in) == n);
    for (int s = 0; s < f->steps; s++) {
        unsigned char *m = f->mask + s * f->nt;
        assert_true(fread(m, 1, (size_t)f->nt, in) == (size_t)f->nt);
        int64_t off = 0;
        for (int t = 0; t < f->nt; off += f->size[t++])
            if (m[t])
                assert_true(fread(f->grads + s * f->total + off, sizeof(float),
                                  (size_t)f->size[t], in) == (size_t)f->size[t]);
        assert_true(fread(f->params + s * f->total, sizeof(float), n, in) == n);
    }
    assert_true(fread(f->final, sizeof(float), n, in) == n);
    assert_true(fgetc(in) == EOF);
    fclose(in);
}

static void fix2_free(fix2 *f)
{
    free(f->init);
    free(f->grads);
    free(f->params);
    free(f->final);
    free(f->mask);
}

/* ---- a Muon run over shaped tensors ----------------------------------------- */

typedef struct run {
    jopt_ctx *ctx;
    jopt_optim *opt;
    int nt;
    jopt_param params[MAXT];
} run;

/* a context per (engine, threads), kept between tests: its kernel cache
 * saves compiling Muon's kernels (about 0.1 s each) again */
static jopt_ctx *g_ctx[2][2];

static jopt_ctx *ctx_for(jopt_engine engine, int threads)
{
    jopt_ctx **c = &g_ctx[engine][threads - 1];
    if (!*c) {
        T_OK(NULL, jopt_ctx_new(c));
        T_OK(*c, jopt_ctx_set_engine(*c, engine));
        T_OK(*c, jopt_ctx_set_threads(*c, threads));
    }
    return *c;
}

static int free_contexts(void **state)
{
    (void)state;
    for (int e = 0; e < 2; e++)
        for (int t = 0; t < 2; t++)
            jopt_ctx_free(g_ctx[e][t]);
    return 0;
}

static void run_new(run *r, jopt_engine engine, int threads, const char *options,
                    int nt, const int64_t (*shape)[2], const float *init)
{
    memset(r, 0, sizeof *r);
    r->ctx = ctx_for(engine, threads);
    r->nt = nt;
    int64_t off = 0;
    for (int t = 0; t < nt; t++) {
        int64_t n = shape[t][0] * shape[t][1];
        r->params[t] = (jopt_param){t_alloc(n), t_alloc(n), n};
        if (init)
            memcpy(r->params[t].param, init + off, (size_t)n * sizeof(float));
        else
            t_fill(r->params[t].param, n, 100 + (uint64_t)t, 0.0);
        off += n;
    }
    jopt_group group = {r->params, (size_t)nt, options};
    T_OK(r->ctx, jopt_optim_new(r->ctx, "muon", &group, 1, NULL, &r->opt));
    for (int t = 0; t < nt; t++)
        T_OK(r->ctx, jopt_set_shape(r->opt, 0, (size_t)t, 2, shape[t]));
}

static void run_free(run *r)
{
    jopt_optim_free(r->opt);
    for (int t = 0; t < r->nt; t++) {
        free(r->params[t].param);
        free(r->params[t].grad);
    }
}

/* one step with the fixture's gradients of step s (absent ones NULL) */
static void fixture_step(run *r, const fix2 *f, int s)
{
    int64_t off = 0;
    for (int t = 0; t < f->nt; off += f->size[t++]) {
        int present = f->mask[s * f->nt + t];
        if (present)
            memcpy(r->params[t].grad, f->grads + s * f->total + off,
                   (size_t)f->size[t] * sizeof(float));
        T_OK(r->ctx, jopt_set_grad(r->opt, 0, (size_t)t,
                                   present ? r->params[t].grad : NULL));
    }
    T_OK(r->ctx, jopt_step(r->opt, NULL, NULL, NULL));
}

typedef struct diff {
    int64_t n, differ;  /* floats compared, floats not bit-equal */
    double max_rel;     /* max |jopt - torch| / max(|torch|, tiny) */
    double sq, ref_sq;  /* sum of squared differences, of squared values */
} diff;

static void diff_add(diff *d, const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        d->n++;
        if (memcmp(&got[i], &want[i], sizeof(float)))
            d->differ++;
        double e = fabs((double)got[i] - (double)want[i]);
        double rel = e / fmax(fabs((double)want[i]), 1e-30);
        d->max_rel = rel > d->max_rel ? rel : d->max_rel;
        d->sq += e * e;
        d->ref_sq += (double)want[i] * want[i];
    }
}

/* replays fixture `name`; the parameters after every step and the final
 * buffers compared, into *d (NULL: none) */
static void replay(const char *name, const char *extra, diff *params, diff *bufs)
{
    fix2 f;
    fix2_load(&f, name);
    char options[600];
    snprintf(options, sizeof options, "%s %s", f.options, extra);
    run r;
    run_new(&r, JOPT_ENGINE_JIT, 1, options, f.nt, (const int64_t (*)[2])f.shape, f.init);
    for (int s = 0; s < f.steps; s++) {
        fixture_step(&r, &f, s);
        int64_t off = 0;
        for (int t = 0; t < f.nt; off += f.size[t++]) {
            int64_t before = params->differ;
            diff_add(params, r.params[t].param, f.params + s * f.total + off, f.size[t]);
            if (getenv("JOPT_TEST_VERBOSE") && before == 0 && params->differ)
                print_message("first difference: step %d tensor %d\n", s + 1, t);
        }
    }
    int64_t off = 0;
    for (int t = 0; t < f.nt; off += f.size[t++]) {
        const float *buf;
        T_OK(r.ctx, jopt_state_get(r.opt, 0, (size_t)t, "momentum_buffer", &buf, NULL));
        diff_add(bufs, buf, f.final + off, f.size[t]);
    }
    run_free(&r);
    fix2_free(&f);
}

static const char *const cases[] = {"muon_default", "muon_lr_nonesterov",
                                    "muon_match_rms_adamw", "muon_ns3_original"};

/* torch's bfloat16 Newton-Schulz, as jopt's: the same roundings and FMAs
 * (specs/muon.lua); only the GEMMs' float32 sums are in OpenBLAS's order
 * rather than ATen's, which decides a bfloat16 tie now and then.  The
 * momentum buffers take no product: they must be bit-exact.  The figures
 * are in docs/fidelity.md. */
static void test_muon_fixtures(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int twin = 0; twin < 2; twin++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", cases[c], twin ? ".ns-f32.fix" : ".fix");
            diff p = {0}, b = {0};
            replay(name, twin ? "ns_dtype=float32" : "", &p, &b);
            double rms = sqrt(p.sq / p.ref_sq);
            print_message("%-32s params %4lld/%lld differ, max rel %.3g, rms rel "
                          "%.3g; buffers %lld/%lld differ\n", name, (long long)p.differ,
                          (long long)p.n, p.max_rel, rms, (long long)b.differ,
                          (long long)b.n);
            assert_int_equal(b.differ, 0);
            /* bfloat16: a tie decided the other way is one bfloat16 ulp
             * (2^-8) of one element of one update; float32: MKL's order */
            assert_true(rms < (twin ? 1e-6 : 1e-4));
            assert_true(p.max_rel < (twin ? 1e-2 : 5e-2));
        }
}

/* ---- engines and threads ------------------------------------------------------ */

static void same_bits(const float *a, const float *b, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof a[i]) && !(isnan(a[i]) && isnan(b[i])))
            fail_msg("%s element %lld: %a against %a", what, (long long)i, a[i], b[i]);
}

/* two runs (engine, threads) over the same shapes and gradients, compared
 * bit for bit after every step */
static void compare(const char *options, int nt, const int64_t (*shape)[2],
                    jopt_engine ea, int ta, jopt_engine eb, int tb, int steps)
{
    run a, b;
    run_new(&a, ea, ta, options, nt, shape, NULL);
    run_new(&b, eb, tb, options, nt, shape, NULL);
    for (int s = 0; s < steps; s++) {
        for (int t = 0; t < nt; t++) {
            int64_t n = a.params[t].numel;
            t_fill(a.params[t].grad, n, 7000 + 31 * (uint64_t)s + (uint64_t)t, 0.05);
            memcpy(b.params[t].grad, a.params[t].grad, (size_t)n * sizeof(float));
        }
        T_OK(a.ctx, jopt_step(a.opt, NULL, NULL, NULL));
        T_OK(b.ctx, jopt_step(b.opt, NULL, NULL, NULL));
        for (int t = 0; t < nt; t++) {
            const float *x, *y;
            same_bits(a.params[t].param, b.params[t].param, a.params[t].numel, options);
            T_OK(a.ctx, jopt_state_get(a.opt, 0, (size_t)t, "momentum_buffer", &x, NULL));
            T_OK(b.ctx, jopt_state_get(b.opt, 0, (size_t)t, "momentum_buffer", &y, NULL));
            same_bits(x, y, a.params[t].numel, "momentum_buffer");
        }
    }
    run_free(&a);
    run_free(&b);
}

static const int64_t small[][2] = {{7, 9}, {9, 5}, {6, 1}, {1, 6}, {130, 70}};

static void test_muon_jit_equals_reference(void **state)
{
    (void)state;
    static const char *const options[] = {
        "", "ns_dtype=float32",
        "nesterov=false lr=0.02 ns_steps=3 adjust_lr_fn=match_rms_adamw weight_decay=0",
        "momentum=0 ns_coefficients=2,-1.5,0.5 eps=1e-3 ns_steps=0"};
    for (size_t o = 0; o < sizeof options / sizeof options[0]; o++)
        compare(options[o], 5, small, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_REFERENCE, 1, 3);
    /* GEMMs cut into more than one block of rows, elements into tasks */
    static const int64_t big[][2] = {{256, 1024}, {1100, 300}};
    compare("", 2, big, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_REFERENCE, 1, 2);
}

/* the pool takes GEMM blocks and element tasks; the cut is the shape's */
static void test_muon_threads_same_bits(void **state)
{
    (void)state;
    static const int64_t big[][2] = {{256, 1024}, {1100, 300}, {64, 96}, {9, 5}};
    compare("", 4, big, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_JIT, 2, 3);
    compare("ns_dtype=float32", 4, big, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_JIT, 2, 2);
}

/* ---- refusals ------------------------------------------------------------------- */

/* torch's constructor messages (tests/fixtures/spec2/messages.txt), as the
 * optimizer's defaults and as a group's options; nothing is built */
static void test_muon_torch_messages(void **state)
{
    (void)state;
    FILE *f = fopen(JOPT_SOURCE_DIR "/tests/fixtures/spec2/messages.txt", "r");
    assert_non_null(f);
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *col[6] = {line};
        int k = 1;
        for (char *c = line; *c && k < 6; c++)
            if (*c == '\t') {
                *c = 0;
                col[k++] = c + 1;
            }
        if (k < 6 || strcmp(col[0], "muon") || !col[3][0])
            continue; /* other specs; the shape lines are below */
        if (strstr(col[3], "adjust_lr_fn")) /* a choice: jopt's message */
            continue;
        for (int as_group = 0; as_group < 2; as_group++) {
            float p[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, g[9] = {0};
            jopt_param param = {p, g, 9};
            jopt_group group = {&param, 1, as_group ? col[3] : NULL};
            jopt_optim *opt = NULL;
            int rc = jopt_optim_new(ctx, "muon", &group, 1, as_group ? NULL : col[3], &opt);
            if (rc != JOPT_EINVAL || !strstr(jopt_errmsg(ctx), col[5]))
                fail_msg("muon %s: got %d \"%s\", want \"%s\"", col[3], rc,
                         jopt_errmsg(ctx), col[5]);
            assert_null(opt);
        }
        n++;
    }
    fclose(f);
    jopt_ctx_free(ctx);
    assert_int_equal(n, 3);
}

/* a shape torch refuses, a bad value: JOPT_EINVAL naming it, nothing
 * changed */
static void test_muon_refusals(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p[2] = {t_alloc(24), t_alloc(24)}, *g[2] = {t_alloc(24), t_alloc(24)};
    t_fill(p[0], 24, 1, 0), t_fill(p[1], 24, 2, 0);
    t_fill(g[0], 24, 3, 0), t_fill(g[1], 24, 4, 0);
    float keep[24];
    memcpy(keep, p[1], sizeof keep);
    jopt_param params[2] = {{p[0], g[0], 24}, {p[1], g[1], 24}};
    jopt_group group = {params, 2, "lr=0.02"};
    jopt_optim *opt;
    /* a flat tensor is fine until it steps: it may get a shape first */
    T_OK(ctx, jopt_optim_new(ctx, "muon", &group, 1, NULL, &opt));
    int64_t s3[3] = {2, 3, 4}, s1[1] = {24}, s2[2] = {4, 6};
    assert_int_equal(jopt_set_shape(opt, 0, 1, 3, s3), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "group 0 parameter 1: Muon only supports "
                           "2D parameters whereas we found a parameter with size: "
                           "torch.Size([2, 3, 4])"));
    assert_int_equal(jopt_set_shape(opt, 0, 0, 1, s1), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "torch.Size([24])"));
    T_OK(ctx, jopt_set_shape(opt, 0, 0, 2, s2));
    /* parameter 1 stayed flat: the step refuses it, and steps nothing */
    assert_int_equal(jopt_step(opt, NULL, NULL, NULL), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "jopt_step: group 0 parameter 1: Muon "
                           "only supports 2D parameters"));
    assert_non_null(strstr(jopt_errmsg(ctx), "jopt_set_shape"));
    assert_memory_equal(keep, p[1], sizeof keep);
    int64_t n;
    T_OK(ctx, jopt_state_numel(opt, 0, 0, "momentum_buffer", &n));
    assert_int_equal(n, 0);
    /* values: refused with the spec's message, the old ones kept */
    assert_int_equal(jopt_option_set(opt, 0, "ns_steps", 100), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "Number of steps must be less than 100"));
    assert_int_equal(jopt_option_set(opt, 0, "ns_steps", 2.5), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "ns_steps must be an integer"));
    assert_int_equal(jopt_options_set(opt, 0, "adjust_lr_fn=spectral"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "'spectral' is not one of none, original, "
                           "match_rms_adamw"));
    assert_int_equal(jopt_options_set(opt, 0, "ns_coefficients=1,2"), JOPT_EINVAL);
    double v;
    T_OK(ctx, jopt_option_get(opt, 0, "ns_steps", &v));
    assert_true(v == 5);
    /* with both shaped, it steps */
    T_OK(ctx, jopt_set_shape(opt, 0, 1, 2, (int64_t[]){6, 4}));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    T_OK(ctx, jopt_state_numel(opt, 0, 1, "momentum_buffer", &n));
    assert_int_equal(n, 24);
    assert_int_equal(jopt_set_shape(opt, 0, 1, 2, (int64_t[]){4, 6}), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "has stepped already"));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    for (int i = 0; i < 2; i++)
        free(p[i]), free(g[i]);
}

/* ---- changes of values and checkpoints ---------------------------------------------- */

static void fill_grads(run *r, int s)
{
    for (int t = 0; t < r->nt; t++)
        t_fill(r->params[t].grad, r->params[t].numel, 900 + 17 * (uint64_t)s + (uint64_t)t, 0);
}

/* stopping after 3 steps and resuming from a checkpoint in a new
 * optimizer gives the bits of never stopping, a change of values (lr, a
 * runtime value, and ns_dtype, a new kernel) included */
static void test_muon_checkpoint_round_trip(void **state)
{
    (void)state;
    static const int64_t shapes[][2] = {{7, 9}, {9, 5}, {40, 24}};
    run a, b;
    run_new(&a, JOPT_ENGINE_JIT, 1, "lr=0.02", 3, shapes, NULL);
    run_new(&b, JOPT_ENGINE_JIT, 1, "lr=0.02", 3, shapes, NULL);
    for (int s = 0; s < 3; s++) {
        fill_grads(&a, s);
        T_OK(a.ctx, jopt_step(a.opt, NULL, NULL, NULL));
    }
    size_t len;
    T_OK(a.ctx, jopt_state_size(a.opt, &len));
    void *buf = malloc(len);
    T_OK(a.ctx, jopt_state_save_mem(a.opt, buf, len, &len));
    for (int t = 0; t < 3; t++)
        memcpy(b.params[t].param, a.params[t].param,
               (size_t)a.params[t].numel * sizeof(float));
    T_OK(b.ctx, jopt_state_load_mem(b.opt, buf, len));
    free(buf);
    for (int s = 3; s < 7; s++) {
        if (s == 4)
            for (run *r = &a; r; r = r == &a ? &b : NULL) {
                T_OK(r->ctx, jopt_option_set(r->opt, 0, "lr", 0.01));
                T_OK(r->ctx, jopt_options_set(r->opt, 0, "ns_dtype=float32"));
            }
        fill_grads(&a, s);
        fill_grads(&b, s);
        T_OK(a.ctx, jopt_step(a.opt, NULL, NULL, NULL));
        T_OK(b.ctx, jopt_step(b.opt, NULL, NULL, NULL));
        for (int t = 0; t < 3; t++)
            same_bits(a.params[t].param, b.params[t].param, a.params[t].numel, "resumed");
    }
    run_free(&a);
    run_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_muon_fixtures),
        cmocka_unit_test(test_muon_jit_equals_reference),
        cmocka_unit_test(test_muon_threads_same_bits),
        cmocka_unit_test(test_muon_torch_messages),
        cmocka_unit_test(test_muon_refusals),
        cmocka_unit_test(test_muon_checkpoint_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, free_contexts);
}
