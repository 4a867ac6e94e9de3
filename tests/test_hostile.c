/*
 * test_hostile.c - regressions for issue 16, what hostile testing found:
 * non-finite values, NUL bytes in names, errors without a line, kernels
 * that depended on the process, LLVM printing, re-entry from closures,
 * the checkpoint contracts and unbounded compile times.  Each test failed
 * before its fix.
 */
#include <errno.h>
#include <setjmp.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cg.h"
#include "helpers.h"

static char dir[] = "/tmp/jopt_hostile_XXXXXX";

static const char *write_spec(const char *name, const char *text, size_t len)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s.lua", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(text, 1, len ? len : strlen(text), f);
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

static int try_new(jopt_ctx *ctx, const char *spec, const char *options,
                   float *p, float *g, int64_t n, jopt_optim **opt)
{
    jopt_param param = {p, g, n};
    jopt_group group = {&param, 1, NULL};
    *opt = NULL;
    return jopt_optim_new(ctx, spec, &group, 1, options, opt);
}

/* the checkpoint of `opt`, malloc'd */
static unsigned char *save(jopt_ctx *ctx, jopt_optim *opt, size_t *len)
{
    T_OK(ctx, jopt_state_size(opt, len));
    unsigned char *buf = malloc(*len);
    assert_non_null(buf);
    T_OK(ctx, jopt_state_save_mem(opt, buf, *len, len));
    return buf;
}

/* replaces every 8-byte occurrence of `from` by `to` in a copy of buf,
 * one at a time, and checks that load refuses each with `why` */
static int refuse_each(jopt_ctx *ctx, jopt_optim *opt, const unsigned char *buf,
                       size_t len, double from, double to, const char *why,
                       int sched, jopt_sched *s)
{
    int found = 0;
    unsigned char *copy = malloc(len);
    assert_non_null(copy);
    for (size_t at = 16; at + 16 <= len; at++) {
        if (memcmp(buf + at, &from, 8) != 0)
            continue;
        memcpy(copy, buf, len);
        memcpy(copy + at, &to, 8);
        t_reseal(copy, len);
        int rc = sched ? jopt_sched_load_mem(s, copy, len)
                       : jopt_state_load_mem(opt, copy, len);
        assert_int_equal(rc, JOPT_EINVAL);
        if (!strstr(jopt_errmsg(ctx), why))
            fail_msg("at %zu: '%s' lacks '%s'", at, jopt_errmsg(ctx), why);
        found++;
    }
    free(copy);
    return found;
}

/* ---- 1. non-finite values ------------------------------------------------ */

static void test_hostile_options_must_be_finite(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(8), *g = t_alloc(8);
    jopt_optim *opt;
    static const char *const bad[] = {"lr=inf", "lr=1e400", "lr=-1e400",
                                      "lr=nan", "eps=-inf", "betas=0.9,inf",
                                      "weight_decay=NaN"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* torch's message where torch refuses (a NaN lr), ours where
         * torch would take it (an inf lr) */
        assert_int_equal(try_new(ctx, "adam", bad[i], p, g, 8, &opt), JOPT_EINVAL);
        const char *m = jopt_errmsg(ctx);
        if (!strstr(m, "finite") && !strstr(m, "Invalid"))
            fail_msg("%s: %s", bad[i], m);
    }
    assert_int_equal(try_new(ctx, "lbfgs", "history_size=1e400", p, g, 8, &opt),
                     JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "finite"));
    /* a fractional count never equals one: a step would not end (fuzzed) */
    assert_int_equal(try_new(ctx, "lbfgs", "max_iter=20.5", p, g, 8, &opt),
                     JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "whole number"));
    /* None is spelled None, never nan */
    assert_int_equal(try_new(ctx, "cg", "max_eval=nan", p, g, 8, &opt), JOPT_EINVAL);
    T_OK(ctx, try_new(ctx, "cg", "max_eval=None", p, g, 8, &opt));
    jopt_optim_free(opt);

    T_OK(ctx, try_new(ctx, "adam", "lr=0.5", p, g, 8, &opt));
    assert_int_equal(jopt_option_set(opt, 0, "eps", INFINITY), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "finite"));
    assert_int_equal(jopt_option_set(opt, 0, "lr", NAN), JOPT_EINVAL);
    assert_int_equal(jopt_option_set(opt, 0, "betas[1]", -INFINITY), JOPT_EINVAL);
    assert_int_equal(jopt_options_set(opt, 0, "lr=1e999"), JOPT_EINVAL);
    double lr;
    T_OK(ctx, jopt_option_get(opt, 0, "lr", &lr));
    assert_true(lr == 0.5);
    jopt_optim_free(opt);

    /* Rprop's step_sizes may be unbounded, as torch allows (the spec lists
     * it as `infinite`); NaN never */
    T_OK(ctx, try_new(ctx, "rprop", "step_sizes=(1e-6, inf)", p, g, 8, &opt));
    T_OK(ctx, jopt_option_set(opt, 0, "step_sizes[1]", INFINITY));
    assert_int_equal(jopt_option_set(opt, 0, "step_sizes[1]", NAN), JOPT_EINVAL);
    t_fill(g, 8, 1, 0);
    t_fill(p, 8, 2, 0);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    for (int i = 0; i < 8; i++)
        assert_true(isfinite(p[i]));
    jopt_optim_free(opt);

    /* a scheduler's options too */
    T_OK(ctx, try_new(ctx, "sgd", "lr=0.1", p, g, 8, &opt));
    jopt_sched *s;
    assert_int_equal(jopt_sched_new(opt, "cosine", "T_max=10 eta_min=inf", &s),
                     JOPT_EINVAL);
    assert_int_equal(jopt_sched_new(opt, "exponential", "gamma=1e400", &s),
                     JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "finite"));
    jopt_optim_free(opt);

    /* and a spec's own default */
    const char *path = write_spec("infdefault",
        "return { hyper = { lr = math.huge }, update = function (p, g, s, h) "
        "return p - h.lr * g end }\n", 0);
    assert_int_equal(try_new(ctx, path, NULL, p, g, 8, &opt), JOPT_ESPEC);
    assert_non_null(strstr(jopt_errmsg(ctx), "must be finite"));
    jopt_ctx_free(ctx);
    free(p), free(g);
}

static void test_hostile_checkpoint_values_must_be_finite(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(8), *g = t_alloc(8);
    t_fill(g, 8, 3, 0);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "adam", "lr=0.123456789 eps=0.0314159 weight_decay=0.0271828",
                      p, g, 8, &opt));
    jopt_sched *s;
    T_OK(ctx, jopt_sched_new(opt, "cosine", "T_max=10", &s)); /* initial_lr */
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    size_t len;
    unsigned char *buf = save(ctx, opt, &len);
    /* lr is in the values and in initial_lr: each refused on its own */
    assert_int_equal(refuse_each(ctx, opt, buf, len, 0.123456789, INFINITY,
                                 "finite", 0, NULL), 2);
    assert_int_equal(refuse_each(ctx, opt, buf, len, 0.0314159, INFINITY,
                                 "finite", 0, NULL), 1);
    assert_int_equal(refuse_each(ctx, opt, buf, len, 0.0271828, INFINITY,
                                 "finite", 0, NULL), 1);
    /* the header's reserved field */
    unsigned char *copy = malloc(len);
    memcpy(copy, buf, len);
    copy[12] = 1;
    t_reseal(copy, len);
    assert_int_equal(jopt_state_load_mem(opt, copy, len), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "reserved"));
    free(copy);
    T_OK(ctx, jopt_state_load_mem(opt, buf, len)); /* unchanged, loads */
    free(buf);

    /* the scheduler's own state: base_lrs and last lrs, reserved */
    T_OK(ctx, jopt_sched_step(s));
    T_OK(ctx, jopt_sched_state_size(s, &len));
    buf = malloc(len);
    T_OK(ctx, jopt_sched_save_mem(s, buf, len, &len));
    assert_true(refuse_each(ctx, opt, buf, len, 0.123456789, INFINITY,
                            "finite", 1, s) >= 1);
    copy = malloc(len);
    memcpy(copy, buf, len);
    copy[12] = 7;
    t_reseal(copy, len);
    assert_int_equal(jopt_sched_load_mem(s, copy, len), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "reserved"));
    T_OK(ctx, jopt_sched_load_mem(s, buf, len));
    free(copy);
    free(buf);
    jopt_sched_free(s);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* f(x) = sum (x - 1)^2, with a loss that can be made infinite */
typedef struct quad {
    float *x, *g;
    int n;
    int inf_loss;
} quad;

static int quad_closure(void *user, double *loss)
{
    quad *q = user;
    double l = 0;
    for (int i = 0; i < q->n; i++) {
        q->g[i] = 2 * (q->x[i] - 1);
        l += (double)(q->x[i] - 1) * (q->x[i] - 1);
    }
    *loss = q->inf_loss ? INFINITY : l;
    return 0;
}

/* where the L-BFGS state starts in a checkpoint: u64 steps, u64 length,
 * then u64 numel, f64 t, H_diag, prev_loss ... (runtime/lbfgs.c) */
static size_t lbfgs_blob(const unsigned char *buf, size_t len, uint64_t numel)
{
    for (size_t off = 16; off + 24 <= len; off++) {
        uint64_t l, n;
        memcpy(&l, buf + off + 8, 8);
        memcpy(&n, buf + off + 16, 8);
        if (n == numel && l <= len && off + 16 + l == len - 8)
            return off + 16;
    }
    fail_msg("no L-BFGS state in the checkpoint");
    return 0;
}

static void test_hostile_lbfgs_state_must_be_finite(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    quad q = {t_alloc(6), t_alloc(6), 6, 0};
    t_fill(q.x, 6, 4, 0);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "lbfgs", "max_iter=3", q.x, q.g, 6, &opt));
    double loss;
    T_OK(ctx, jopt_step(opt, quad_closure, &q, &loss));
    size_t len;
    unsigned char *buf = save(ctx, opt, &len);
    size_t at = lbfgs_blob(buf, len, 6) + 8;
    unsigned char *copy = malloc(len);
    const double bad[] = {INFINITY, -INFINITY, NAN};
    for (int field = 0; field < 3; field++) /* t, H_diag, prev_loss */
        for (int b = 0; b < 3; b++) {
            memcpy(copy, buf, len);
            memcpy(copy + at + 8 * field, &bad[b], 8);
            t_reseal(copy, len);
            assert_int_equal(jopt_state_load_mem(opt, copy, len), JOPT_EINVAL);
            assert_non_null(strstr(jopt_errmsg(ctx), "finite"));
        }
    T_OK(ctx, jopt_state_load_mem(opt, buf, len));
    free(copy);
    free(buf);
    /* and what a load would refuse, a save refuses: an infinite loss */
    q.inf_loss = 1;
    T_OK(ctx, jopt_step(opt, quad_closure, &q, &loss));
    T_OK(ctx, jopt_state_size(opt, &len));
    buf = malloc(len);
    assert_int_equal(jopt_state_save_mem(opt, buf, len, &len), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "prev_loss is inf"));
    free(buf);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(q.x), free(q.g);
}

/* ---- 3. NUL bytes in names ------------------------------------------------ */

static void test_hostile_nul_in_names(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *why;
    } cases[] = {
        {"return { hyper = { ['lr\\0x'] = 0.1, lr = 0.5 },\n"
         "  update = function (p, g, s, h) return p - h.lr * g end }\n",
         "NUL byte"},
        {"return { hyper = { lr = 0.5 }, state = { ['m\\0x'] = 0, m = 0 },\n"
         "  update = function (p, g, s, h) s.m = g return p - h.lr * g end }\n",
         "NUL byte"},
        {"return { hyper = { lr = 0.5 }, state = { m = 0 },\n"
         "  update = function (p, g, s, h) s['m\\0x'] = g return p - h.lr * g end }\n",
         "NUL byte"},
        {"return { hyper = { lr = 0.5 },\n"
         "  update = function (p, g, s, h) return p - h['lr\\0x'] * g end }\n",
         "NUL byte"},
        {"return { hyper = { lr = 0.5, c = {'a\\0b', 'b'} },\n"
         "  update = function (p, g, s, h) return p - h.lr * g end }\n",
         "NUL byte"},
        {"return { hyper = { lr = 0.5 }, runtime = { 'lr\\0' },\n"
         "  update = function (p, g, s, h) return p - h.lr * g end }\n",
         "NUL byte"},
        {"return { method = 'lbfgs', hyper = { lr = 1 }, kernels = {\n"
         "  copy = { arrays = 'y\\0 x', run = function (v) v.y = v.x end } } }\n",
         "NUL byte"},
        {"return { method = 'lb\\0fgs', hyper = { lr = 1 }, kernels = {} }\n",
         "NUL byte"},
    };
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(8), *g = t_alloc(8);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        jopt_optim *opt;
        int rc = try_new(ctx, write_spec("nul", cases[i].text, 0), "lr=0.3",
                         p, g, 8, &opt);
        if (rc != JOPT_ESPEC || !strstr(jopt_errmsg(ctx), cases[i].why))
            fail_msg("case %zu: %d %s", i, rc, jopt_errmsg(ctx));
    }
    jopt_ctx_free(ctx);
    free(p), free(g);
}


/* ---- 6. re-entry from a closure ------------------------------------------ */

typedef struct reenter {
    jopt_optim *opt;
    jopt_ctx *ctx;
    float *x, *g;
    int n;
    int calls;
    int refused;          /* calls on opt refused with JOPT_EINVAL */
    int free_it;          /* jopt_optim_free(opt) at the first call */
    int jump_at;          /* longjmp out at this call (0: never) */
    jmp_buf *out;
    const char *name;     /* an option the spec has */
    unsigned char *ckpt;
    size_t ckpt_len;
} reenter;

static int reenter_closure(void *user, double *loss)
{
    reenter *r = user;
    r->calls++;
    if (r->jump_at && r->calls == r->jump_at)
        longjmp(*r->out, 1);
    double l = 0;
    for (int i = 0; i < r->n; i++) {
        r->g[i] = 2 * (r->x[i] - 1);
        l += (double)(r->x[i] - 1) * (r->x[i] - 1);
    }
    *loss = l;
    if (r->free_it) {
        jopt_optim_free(r->opt);
        return 0;
    }
    if (r->calls > 1)
        return 0;
    /* everything that would change the optimizer under its step */
    float q[4] = {0}, h[4] = {0};
    jopt_param extra = {q, h, 4};
    jopt_group grp = {&extra, 1, NULL};
    int rcs[] = {
        jopt_step(r->opt, reenter_closure, r, NULL),
        jopt_step(r->opt, NULL, NULL, NULL),
        jopt_option_set(r->opt, 0, r->name, 0.5),
        jopt_options_set(r->opt, 0, r->name[0] == 'l' ? "lr=0.25" : "rho=0.25"),
        jopt_state_load_mem(r->opt, r->ckpt, r->ckpt_len),
        jopt_add_param_group(r->opt, &grp),
    };
    for (size_t i = 0; i < sizeof rcs / sizeof rcs[0]; i++)
        r->refused += rcs[i] == JOPT_EINVAL;
    /* valid calls outside a step, refused for being inside one */
    r->refused += jopt_set_shape(r->opt, 0, 0, 2, (const int64_t[]){2, 3}) ==
                      JOPT_EINVAL && strstr(jopt_errmsg(r->ctx), "inside the closure");
    r->refused += jopt_optim_call(r->opt, "eval") == JOPT_EINVAL &&
                  strstr(jopt_errmsg(r->ctx), "inside the closure");
    /* reading is allowed */
    double lr;
    if (jopt_option_get(r->opt, 0, r->name, &lr) != JOPT_OK)
        r->refused = -100;
    return 0;
}

static void test_hostile_closure_cannot_reenter(void **state)
{
    (void)state;
    static const char *const specs[] = {"adam", "sgd", "lbfgs", "cg"};
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    for (size_t k = 0; k < 4; k++) {
        int closure_opt = k >= 2;
        reenter r = {.ctx = ctx, .x = t_alloc(6), .g = t_alloc(6), .n = 6,
                     .name = k == 3 ? "rho" : "lr"};
        float *x2 = t_alloc(6), *g2 = t_alloc(6);
        t_fill(r.x, 6, 5, 0);
        memcpy(x2, r.x, 6 * sizeof(float));
        const char *opts = closure_opt ? "max_iter=2" : "lr=0.1";
        T_OK(ctx, try_new(ctx, specs[k], opts, r.x, r.g, 6, &r.opt));
        r.ckpt = save(ctx, r.opt, &r.ckpt_len);
        double loss;
        T_OK(ctx, jopt_step(r.opt, reenter_closure, &r, &loss));
        if (r.refused != 8)
            fail_msg("%s: %d of 8 calls refused", specs[k], r.refused);
        /* the outer step applied exactly one update: as a twin's */
        jopt_optim *twin;
        T_OK(ctx, try_new(ctx, specs[k], opts, x2, g2, 6, &twin));
        reenter r2 = {.ctx = ctx, .x = x2, .g = g2, .n = 6, .opt = twin,
                      .calls = 1}; /* tries nothing */
        T_OK(ctx, jopt_step(twin, reenter_closure, &r2, &loss));
        assert_memory_equal(r.x, x2, 6 * sizeof(float));
        double lr;
        T_OK(ctx, jopt_option_get(r.opt, 0, r.name, &lr));
        assert_true(lr == (k == 3 ? 0.01 : closure_opt ? 1.0 : 0.1));
        assert_int_equal(jopt_group_count(r.opt), 1);
        /* and the optimizer is not left busy */
        T_OK(ctx, jopt_option_set(r.opt, 0, r.name, k == 3 ? 0.05 : 0.5));
        jopt_optim_free(twin);
        jopt_optim_free(r.opt);
        free(r.ckpt);
        free(r.x), free(r.g), free(x2), free(g2);
    }
    jopt_ctx_free(ctx);
}

/* a closure that frees its optimizer: deferred to the end of the step,
 * which reports it (ASan would see a use after free otherwise) */
static void test_hostile_closure_frees_its_optimizer(void **state)
{
    (void)state;
    static const char *const specs[] = {"adam", "lbfgs", "cg"};
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    for (size_t k = 0; k < 3; k++) {
        reenter r = {.ctx = ctx, .x = t_alloc(6), .g = t_alloc(6), .n = 6,
                     .free_it = 1};
        t_fill(r.x, 6, 6, 0);
        float before[6];
        memcpy(before, r.x, sizeof before);
        T_OK(ctx, try_new(ctx, specs[k], NULL, r.x, r.g, 6, &r.opt));
        double loss;
        assert_int_equal(jopt_step(r.opt, reenter_closure, &r, &loss), JOPT_EINVAL);
        assert_non_null(strstr(jopt_errmsg(ctx), "freed"));
        assert_memory_equal(r.x, before, sizeof before); /* no step taken */
        free(r.x), free(r.g);
    }
    jopt_ctx_free(ctx);
}

/* a longjmp out of a closure (an error in an embedding language) abandons
 * the step; the optimizer must not refuse every later step */
static void test_hostile_longjmp_out_of_closure(void **state)
{
    (void)state;
    static const char *const specs[] = {"lbfgs", "adam", "cg"};
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    for (size_t k = 0; k < 3; k++) {
        reenter r = {.ctx = ctx, .x = t_alloc(6), .g = t_alloc(6), .n = 6};
        t_fill(r.x, 6, 7, 0);
        /* one iteration first, so that the next step iterates again */
        T_OK(ctx, try_new(ctx, specs[k], k == 1 ? NULL : "max_iter=1", r.x,
                          r.g, 6, &r.opt));
        double loss;
        r.calls = 1; /* no re-entry tries */
        T_OK(ctx, jopt_step(r.opt, reenter_closure, &r, &loss));
        if (k != 1)
            T_OK(ctx, jopt_option_set(r.opt, 0, "max_iter", 20));
        size_t len1;
        unsigned char *ck1 = save(ctx, r.opt, &len1);
        jmp_buf out;
        r.out = &out;
        r.calls = 1;
        r.jump_at = k == 1 ? 2 : 3; /* the second evaluation of the step */
        if (setjmp(out) == 0) {
            jopt_step(r.opt, reenter_closure, &r, &loss);
            fail_msg("%s: the closure did not jump", specs[k]);
        }
        /* the committed state is as before the abandoned step */
        size_t len2;
        unsigned char *ck2 = save(ctx, r.opt, &len2);
        assert_int_equal(len1, len2);
        assert_memory_equal(ck1, ck2, len1);
        r.jump_at = 0;
        for (int i = 0; i < 3; i++)
            T_OK(ctx, jopt_step(r.opt, reenter_closure, &r, &loss));
        T_OK(ctx, jopt_option_set(r.opt, 0, k == 1 ? "lr" : "max_eval", 100));
        T_OK(ctx, jopt_state_load_mem(r.opt, ck1, len1));
        jopt_optim_free(r.opt);
        free(ck1), free(ck2);
        free(r.x), free(r.g);
    }
    jopt_ctx_free(ctx);
}

/* ---- 7. contracts ----------------------------------------------------------- */

/* jopt.h: state buffers stay valid until the optimizer is freed, so a
 * load copies into them (or keeps them), never frees them */
static void test_hostile_load_keeps_state_buffers(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(10), *g = t_alloc(10);
    t_fill(g, 10, 8, 0);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "adam", "amsgrad=true", p, g, 10, &opt));
    size_t len0;
    unsigned char *fresh = save(ctx, opt, &len0); /* no state yet */
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    const float *m, *v;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &m, NULL));
    T_OK(ctx, jopt_state_get(opt, 0, 0, "max_exp_avg_sq", &v, NULL));
    assert_non_null(m);
    size_t len1;
    unsigned char *one = save(ctx, opt, &len1);
    float m1[10];
    memcpy(m1, m, sizeof m1);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    T_OK(ctx, jopt_state_load_mem(opt, one, len1));
    const float *m2;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &m2, NULL));
    assert_ptr_equal(m2, m);            /* loaded into the same buffer */
    assert_memory_equal(m, m1, sizeof m1);
    /* a checkpoint without state: the buffers stay readable (ASan) */
    T_OK(ctx, jopt_state_load_mem(opt, fresh, len0));
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &m2, NULL));
    assert_null(m2);
    volatile float sink = m[9] + v[9];
    (void)sink;
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL)); /* made again, in them */
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &m2, NULL));
    assert_ptr_equal(m2, m);
    T_OK(ctx, jopt_state_load_mem(opt, one, len1));
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &m2, NULL));
    assert_ptr_equal(m2, m);
    assert_memory_equal(m, m1, sizeof m1);
    jopt_optim_free(opt);
    free(fresh), free(one);
    free(p), free(g);

    /* L-BFGS: its scalars and vectors stay readable across a load */
    quad q = {t_alloc(6), t_alloc(6), 6, 0};
    t_fill(q.x, 6, 9, 0);
    T_OK(ctx, try_new(ctx, "lbfgs", "max_iter=2", q.x, q.g, 6, &opt));
    double loss;
    T_OK(ctx, jopt_step(opt, quad_closure, &q, &loss));
    const float *t, *d;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "t", &t, NULL));
    T_OK(ctx, jopt_state_get(opt, 0, 0, "d", &d, NULL));
    assert_non_null(t);
    assert_non_null(d);
    float t1 = *t;
    unsigned char *ck = save(ctx, opt, &len1);
    T_OK(ctx, jopt_step(opt, quad_closure, &q, &loss));
    T_OK(ctx, jopt_state_load_mem(opt, ck, len1));
    const float *t2;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "t", &t2, NULL));
    assert_ptr_equal(t2, t);
    assert_true(*t == t1);
    sink = d[5];
    (void)sink;
    T_OK(ctx, jopt_step(opt, quad_closure, &q, &loss));
    jopt_optim_free(opt);
    free(ck);
    free(q.x), free(q.g);
    jopt_ctx_free(ctx);
}

/* an I/O error when the folder is synced after the rename: the test's
 * fsync stands in for the C library's (the tests link libjopt statically) */
static int fail_dir_fsync;

int fsync(int fd);
int fsync(int fd)
{
    struct stat st;
    if (fail_dir_fsync && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

static void test_hostile_folder_fsync_error_reported(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(4), *g = t_alloc(4);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "sgd", "momentum=0.9", p, g, 4, &opt));
    char path[300];
    snprintf(path, sizeof path, "%s/ckpt.bin", dir);
    T_OK(ctx, jopt_state_save(opt, path));
    fail_dir_fsync = 1;
    int rc = jopt_state_save(opt, path);
    jopt_sched *s;
    T_OK(ctx, jopt_sched_new(opt, "step", "step_size=2", &s));
    int rc2 = jopt_sched_save(s, path);
    fail_dir_fsync = 0;
    assert_int_equal(rc2, JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "Input/output error"));
    assert_int_equal(rc, JOPT_EINVAL);
    jopt_sched_free(s);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* the seal is FNV-1a 64 with FNV's offset basis (it had lost its last
 * digit); seals made the old way still load */
static void test_hostile_fnv_offset_basis(void **state)
{
    (void)state;
    assert_true(CG_FNV_INIT == 0xcbf29ce484222325ull);
    assert_true(cg_fnv(CG_FNV_INIT, "a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(cg_fnv(CG_FNV_INIT, "foobar", 6) == 0x85944171f73967e8ull);
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(4), *g = t_alloc(4);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "sgd", "momentum=0.9", p, g, 4, &opt));
    size_t len;
    unsigned char *buf = save(ctx, opt, &len);
    uint64_t h;
    memcpy(&h, buf + len - 8, 8);
    assert_true(h == cg_fnv(0xcbf29ce484222325ull, buf, len - 8));
    h = cg_fnv(CG_FNV_INIT_OLD, buf, len - 8); /* an older jopt's file */
    memcpy(buf + len - 8, &h, 8);
    T_OK(ctx, jopt_state_load_mem(opt, buf, len));
    jopt_optim_free(opt);
    free(buf);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* ---- 5. LLVM kept quiet ------------------------------------------------------ */

/* executable memory refused, as a W^X policy does: the test's mprotect
 * stands in for the C library's for libLLVM (the test exports it) */
static int refuse_exec;

int mprotect(void *addr, size_t len, int prot);
int mprotect(void *addr, size_t len, int prot)
{
    if (refuse_exec && (prot & PROT_EXEC)) {
        errno = EACCES;
        return -1;
    }
    return (int)syscall(SYS_mprotect, addr, len, prot);
}

static void test_hostile_jit_errors_captured(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(4), *g = t_alloc(4);
    jopt_optim *opt;
    T_OK(ctx, try_new(ctx, "sgd", NULL, p, g, 4, &opt)); /* LLVM started */
    jopt_optim_free(opt);
    /* stderr into a file while the compile fails */
    char errpath[300];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(2), fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    refuse_exec = 1;
    int rc = try_new(ctx, "adam", "lr=0.0123", p, g, 4, &opt);
    refuse_exec = 0;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    struct stat st;
    assert_int_equal(stat(errpath, &st), 0);
    if (st.st_size != 0)
        fail_msg("LLVM wrote %lld bytes to stderr", (long long)st.st_size);
    assert_int_equal(rc, JOPT_ECOMPILE);
    const char *m = jopt_errmsg(ctx);
    if (!strstr(m, "Permission denied") || !strstr(m, "executable memory"))
        fail_msg("the error does not name the cause: %s", m);
    /* and the JIT still works once memory is executable again */
    T_OK(ctx, try_new(ctx, "adam", "lr=0.0123", p, g, 4, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* ---- 4. kernels independent of the process ------------------------------- */

static const char pairs_spec[] =
    "-- builds its update in pairs() order over a table it makes itself\n"
    "local terms = { alpha = 0.5, beta = 0.25, gamma = 0.125, delta = 2,\n"
    "  eps = 3, zeta = 5, eta = 7, theta = 11, iota = 13, kappa = 17,\n"
    "  [1] = 19, [2.5] = 23, [true] = 29 }\n"
    "local names = {}\n"
    "for k in pairs(terms) do names[#names + 1] = tostring(k) end\n"
    "return { hyper = { lr = 0.1 },\n"
    "  update = function (p, g, s, h)\n"
    "    local acc = 0\n"
    "    for k, v in pairs(terms) do acc = acc * 1.5 + v * g end\n"
    "    local t = {}\n"
    "    for i, n in ipairs(names) do t[n .. tostring({}) .. i] = i end\n"
    "    for k, v in next, t do acc = acc + v * p end\n"
    "    return p - h.lr * acc\n"
    "  end }\n";

static char *emit_graph(const char *path)
{
    jopt_ctx *ctx;
    jopt_spec *spec;
    const char *text;
    if (jopt_ctx_new(&ctx) || jopt_spec_open(ctx, path, NULL, &spec) ||
        jopt_spec_emit(spec, NULL, "graph", &text)) {
        fprintf(stderr, "%s\n", jopt_errmsg(ctx));
        return NULL;
    }
    char *copy = strdup(text);
    jopt_spec_free(spec);
    jopt_ctx_free(ctx);
    return copy;
}

/* each Lua state seeds its string hash afresh, and addresses differ
 * between processes: 20 processes must print the same graph */
static void test_hostile_kernel_same_in_every_process(void **state)
{
    (void)state;
    const char *path = write_spec("pairs", pairs_spec, 0);
    char *first = NULL;
    int differ = 0;
    for (int i = 0; i < 20; i++) {
        char cmd[600], *out = calloc(1, 1 << 16);
        snprintf(cmd, sizeof cmd, "/proc/%d/exe --emit-graph %s", (int)getpid(),
                 path);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        size_t n = fread(out, 1, (1 << 16) - 1, f);
        assert_int_equal(pclose(f), 0);
        assert_true(n > 0);
        if (!first)
            first = out;
        else {
            differ += strcmp(first, out) != 0;
            free(out);
        }
    }
    if (differ)
        fail_msg("%d of 19 processes printed another graph", differ);
    /* and this process agrees */
    char *mine = emit_graph(path);
    assert_non_null(mine);
    assert_string_equal(mine, first);
    free(mine);
    free(first);
}

static void test_hostile_no_addresses_reach_a_spec(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *why; /* NULL: the spec loads */
    } cases[] = {
        {"for k in pairs({[{}] = 1}) do end", "no order"},
        {"for k in pairs({[print or type] = 1}) do end", "no order"},
        {"local s = string.format('%p', {})", "%p"},
        {"assert(tostring({}) == 'table' and tostring(type) == 'function')", NULL},
        {"assert(string.format('%s|%5s', {}, {}) == 'table|table')", NULL},
        {"local t = setmetatable({}, {__tostring = function () return 'x' end})\n"
         "assert(tostring(t) == 'x' and string.format('%s', t) == 'x')", NULL},
        {"local o = {} for k in pairs({b = 1, a = 2, [3] = 0, [1] = 0, [false] = 0})"
         " do o[#o + 1] = tostring(k) end\n"
         "assert(table.concat == nil and #o == 5 and o[1] == '1' and o[2] == '3' and"
         " o[3] == 'a' and o[4] == 'b' and o[5] == 'false')", NULL},
        {"local mt = {__pairs = function (t) return function (_, k) if not k then"
         " return 1, 1 end end, t, nil end}\n"
         "local n = 0 for k in pairs(setmetatable({}, mt)) do n = n + 1 end\n"
         "assert(n == 1)", NULL},
    };
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s\nreturn { hyper = { lr = 0.1 },\n"
                 "  update = function (p, g, s, h) return p - h.lr * g end }\n",
                 cases[i].body);
        jopt_spec *spec = NULL;
        int rc = jopt_spec_open(ctx, write_spec("addr", text, 0), NULL, &spec);
        if (cases[i].why ? rc != JOPT_ESPEC || !strstr(jopt_errmsg(ctx), cases[i].why)
                         : rc != JOPT_OK)
            fail_msg("case %zu: %d %s", i, rc, jopt_errmsg(ctx));
        jopt_spec_free(spec);
    }
    jopt_ctx_free(ctx);
}

/* ---- 8. compile time is bounded ---------------------------------------------- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* 12 lines, about 60,000 nodes: took 21-25 s and 229 MiB in LLVM */
static void test_hostile_compile_time_bounded(void **state)
{
    (void)state;
    static const char *const specs[][2] = {
        {"-- a chain of 60,000 operations\n"
         "return {\n"
         "  hyper = { lr = 0.1 },\n"
         "  update = function (p, g, s, h)\n"
         "    local x = g\n"
         "    for i = 1, 20000 do\n"
         "      x = x * 1.0001 + p * i\n"
         "    end\n"
         "    return p - h.lr * x\n"
         "  end,\n"
         "}\n"
         "-- end\n", "big.lua:7: expression graph too large"},
        {"return { hyper = { lr = 0.1 }, update = function (p, g, s, h)\n"
         "  local x = g\n"
         "  for i = 1, 1500 do x = x * 1.0001 + p end\n"
         "  return p - h.lr * x * sum(g) end }\n",
         "big.lua:3: expression graph too large for a kernel with sums"},
    };
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(8), *g = t_alloc(8);
    for (int i = 0; i < 2; i++) {
        jopt_optim *opt;
        double t0 = now_s();
        int rc = try_new(ctx, write_spec("big", specs[i][0], 0), NULL, p, g, 8, &opt);
        double dt = now_s() - t0;
        assert_int_equal(rc, JOPT_ESPEC);
        if (!strstr(jopt_errmsg(ctx), specs[i][1]))
            fail_msg("%s", jopt_errmsg(ctx));
        if (dt > 5)
            fail_msg("refused after %.1f s", dt);
    }
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* Spec mistakes that were taken silently or named without a line (a
 * second hostile pass, 2026-12-06): each is refused, naming the file and,
 * where Lua has one, the line. */
static void test_hostile_spec_mistakes_named(void **state)
{
    (void)state;
    char deep[4096] = "return { hyper = { lr = 0.1 }, update = function (p, g)\n"
                      "  return p - ";
    for (int i = 0; i < 250; i++)
        strcat(deep, "(g");
    for (int i = 0; i < 250; i++)
        strcat(deep, ")");
    strcat(deep, " end }\n");
    const char *const cases[][2] = {
        {"return { hyper = { lr = 0.1, seed = 3.0 },\n"
         "  update = function (p, g, s, h) return p - h.lr * h.seed * g end }\n",
         "mistake.lua: hyperparameter 'seed': the name is jopt's own option"},
        {"return { hyper = { lr = 0.1 }, update = function (p, g, s, h)\n"
         "  return p - h.lr * min(g, 1, -1) end }\n",
         "mistake.lua:2: min takes 2 arguments, got 3"},
        {"return { hyper = { lr = 0.1 }, update = function (p, g, s, h)\n"
         "  return p - h.lr * sqrt(g, p) end }\n",
         "mistake.lua:2: sqrt takes 1 argument, got 2"},
        {"return { hyper = { lr = 0.1 }, update = function (p, g, s, h)\n"
         "  return p - h.lr * g, p + h.lr * g end }\n",
         "mistake.lua:1: update() returns 2 values; it returns one"},
        {deep, "mistake.lua: nested too deeply for Lua's parser"},
    };
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(8), *g = t_alloc(8);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        jopt_optim *opt;
        int rc = try_new(ctx, write_spec("mistake", cases[i][0], 0), NULL, p, g, 8, &opt);
        assert_int_equal(rc, JOPT_ESPEC);
        assert_null(opt);
        if (!strstr(jopt_errmsg(ctx), cases[i][1]))
            fail_msg("case %zu: %s", i, jopt_errmsg(ctx));
    }
    /* products with a row sum: the line of the sum */
    jopt_spec *spec;
    T_OK(ctx, jopt_spec_open(ctx, write_spec("mistake",
        "return { hyper = { lr = 0.1 }, update = function (p, g, s, h)\n"
        "  local x = matmul(g, transpose(g))\n"
        "  return p - matmul(x, g) * sum(g, -1) end }\n", 0), NULL, &spec));
    int64_t shape[2] = {7, 9};
    T_OK(ctx, jopt_spec_set_shape(spec, 2, shape));
    const char *text;
    assert_int_equal(jopt_spec_emit(spec, NULL, "graph", &text), JOPT_ESPEC);
    if (!strstr(jopt_errmsg(ctx), "mistake.lua:3: matrix products cannot share"))
        fail_msg("%s", jopt_errmsg(ctx));
    jopt_spec_free(spec);
    /* an unknown method with no kernels: named as unknown */
    T_OK(ctx, jopt_spec_open(ctx, write_spec("mistake",
        "return { method = \"bogus\", hyper = { lr = 0.1 }, kernels = {} }\n", 0),
        NULL, &spec));
    assert_int_equal(jopt_spec_validate(spec), JOPT_ESPEC);
    if (!strstr(jopt_errmsg(ctx), "mistake.lua: unknown method 'bogus'"))
        fail_msg("%s", jopt_errmsg(ctx));
    jopt_spec_free(spec);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* What a second hostile pass over the C API found (2026-12-06): each call
 * fails with a message naming the thing and changes nothing. */
static void test_hostile_api_second_pass(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    enum { N = 64 };
    float *p = t_alloc(2 * N), *g = t_alloc(2 * N), *h = t_alloc(2 * N);
    jopt_optim *opt;
    /* a tuple's element is not an option to pass per step (the message was
     * read from an unwritten buffer) */
    T_OK(ctx, try_new(ctx, "adam", NULL, p, g, N, &opt));
    assert_int_equal(jopt_option_runtime(opt, 0, "betas[0]"), JOPT_EINVAL);
    if (!strstr(jopt_errmsg(ctx), "'betas[0]' is an element of 'betas'"))
        fail_msg("%s", jopt_errmsg(ctx));
    /* a scheduler refused at creation leaves no option switched to runtime */
    size_t n0, n1;
    unsigned char *b0 = save(ctx, opt, &n0);
    jopt_sched *sched = NULL;
    assert_int_equal(jopt_sched_new(opt, "onecycle", "max_lr=-1 total_steps=10", &sched),
                     JOPT_EINVAL);
    assert_null(sched);
    assert_int_equal(jopt_option_is_runtime(opt, 0, "betas"), 0);
    assert_int_equal(jopt_option_is_runtime(opt, 0, "lr"), 0);
    unsigned char *b1 = save(ctx, opt, &n1);
    assert_true(n0 == n1 && !memcmp(b0, b1, n0));
    free(b0), free(b1);
    jopt_optim_free(opt);
    /* an input that is another buffer of the optimizer, whole */
    jopt_param params[2] = {{p, g, N}, {p + N, g + N, N}};
    jopt_group group = {params, 2, NULL};
    T_OK(ctx, jopt_optim_new(ctx, "sophia", &group, 1, "update_period=1", &opt));
    float *const aliases[] = {p, g, p + N};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(jopt_set_input(opt, 0, 0, "hessian", aliases[i]), JOPT_EINVAL);
        if (!strstr(jopt_errmsg(ctx), "jopt_set_input: group 0 parameter 0: input "
                                      "'hessian' overlaps group 0 parameter"))
            fail_msg("%s", jopt_errmsg(ctx));
    }
    T_OK(ctx, jopt_set_input(opt, 0, 0, "hessian", h));
    T_OK(ctx, jopt_set_input(opt, 0, 0, "hessian", h)); /* the same again */
    assert_int_equal(jopt_set_input(opt, 0, 1, "hessian", h), JOPT_EINVAL);
    /* or one of its states, which jopt_state_get hands out */
    T_OK(ctx, jopt_set_input(opt, 0, 1, "hessian", h + N));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    const float *m;
    int64_t steps;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "momentum", &m, &steps));
    assert_non_null(m);
    assert_int_equal(jopt_set_input(opt, 0, 1, "hessian", (float *)m), JOPT_EINVAL);
    if (!strstr(jopt_errmsg(ctx), "parameter 0's state momentum"))
        fail_msg("%s", jopt_errmsg(ctx));
    /* a step skipped for loss scaling takes its inputs too: the caller may
     * free them once it returns */
    T_OK(ctx, jopt_set_input(opt, 0, 0, "hessian", h));
    T_OK(ctx, jopt_set_input(opt, 0, 1, "hessian", h + N));
    T_OK(ctx, jopt_set_grad_scale(opt, 1.0, 1));
    assert_int_equal(jopt_step(opt, NULL, NULL, NULL), JOPT_SKIPPED);
    assert_int_equal(jopt_step(opt, NULL, NULL, NULL), JOPT_EINVAL); /* none given */
    assert_non_null(strstr(jopt_errmsg(ctx), "give the estimate as input 'hessian'"));
    jopt_optim_free(opt);
    /* an empty parameter whose address lies inside an input overlaps nothing */
    jopt_param with_empty[2] = {{p, g, N}, {h + 10, g + N, 0}};
    jopt_group eg = {with_empty, 2, NULL};
    T_OK(ctx, jopt_optim_new(ctx, "sophia", &eg, 1, NULL, &opt));
    T_OK(ctx, jopt_set_input(opt, 0, 0, "hessian", h));
    jopt_optim_free(opt);
    /* a FIFO as a checkpoint or a spec: refused at once, not waited on */
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/fifo.lua", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    T_OK(ctx, try_new(ctx, "sgd", "lr=0.1", p, g, N, &opt));
    assert_int_equal(jopt_state_load(opt, fifo), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "not a regular file"));
    jopt_optim_free(opt);
    assert_int_equal(try_new(ctx, fifo, NULL, p, g, N, &opt), JOPT_ESPEC);
    assert_non_null(strstr(jopt_errmsg(ctx), "not a regular file"));
    unlink(fifo);
    /* OpenMP's runner without its entry points; a seed past 2^53 */
    assert_int_equal(jopt_ctx_set_parallel(ctx, jopt_parallel_openmp, NULL), JOPT_EINVAL);
    assert_int_equal(try_new(ctx, "adam", "seed=9007199254740993", p, g, N, &opt),
                     JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "9007199254740993 is more than 2^53"));
    assert_int_equal(try_new(ctx, "adam", "seed=9.007199254740993e15", p, g, N, &opt),
                     JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "is not below 2^53"));
    T_OK(ctx, try_new(ctx, "adam", "seed=9007199254740992", p, g, N, &opt));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g), free(h);
}

/* jopt_set_inputs: every parameter's input in one call, one check */
static void test_hostile_set_inputs(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    enum { N = 64 };
    float *p = t_alloc(3 * N), *g = t_alloc(3 * N), *h = t_alloc(3 * N);
    for (int i = 0; i < 3 * N; i++)
        g[i] = 0.5f, h[i] = 1.0f;
    jopt_param params[3] = {{p, g, N}, {p + N, g + N, N}, {p + 2 * N, g + 2 * N, N}};
    jopt_group groups[2] = {{params, 2, NULL}, {params + 2, 1, NULL}};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "sophia", groups, 2, "update_period=1", &opt));
    float *bad[][3] = {
        {h, h, h + 2 * N},          /* two the same */
        {h, h + N / 2, h + 2 * N},  /* two overlapping */
        {h, g + N + 3, h + 2 * N},  /* one inside a gradient */
    };
    const char *why[] = {"group 0 parameter 1's input 'hessian' overlaps group 0 "
                         "parameter 0's input 'hessian'",
                         "overlaps group 0 parameter 0's input 'hessian'",
                         "overlaps group 0 parameter 1's grad"};
    for (int c = 0; c < 3; c++) {
        assert_int_equal(jopt_set_inputs(opt, "hessian", bad[c], 3), JOPT_EINVAL);
        if (!strstr(jopt_errmsg(ctx), why[c]))
            fail_msg("case %d: %s", c, jopt_errmsg(ctx));
        /* nothing was given: the step wants its hessian */
        assert_int_equal(jopt_step(opt, NULL, NULL, NULL), JOPT_EINVAL);
    }
    float *none[3] = {h, NULL, h + 2 * N};
    assert_int_equal(jopt_set_inputs(opt, "hessian", none, 2), JOPT_EINVAL);
    assert_int_equal(jopt_set_inputs(opt, "hessain", none, 3), JOPT_EINVAL);
    float *good[3] = {h, h + N, h + 2 * N};
    T_OK(ctx, jopt_set_inputs(opt, "hessian", good, 3));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    /* the same as one jopt_set_input per parameter */
    jopt_optim *ref;
    float *q = t_alloc(3 * N);
    jopt_param rparams[3] = {{q, g, N}, {q + N, g + N, N}, {q + 2 * N, g + 2 * N, N}};
    jopt_group rgroups[2] = {{rparams, 2, NULL}, {rparams + 2, 1, NULL}};
    T_OK(ctx, jopt_optim_new(ctx, "sophia", rgroups, 2, "update_period=1", &ref));
    for (int i = 0; i < 3; i++)
        T_OK(ctx, jopt_set_input(ref, i / 2, i % 2, "hessian", h + i * N));
    T_OK(ctx, jopt_step(ref, NULL, NULL, NULL));
    assert_memory_equal(p, q, 3 * N * sizeof(float));
    jopt_optim_free(ref);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g), free(h), free(q);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--emit-graph")) { /* a child */
        char *g = emit_graph(argv[2]);
        if (g)
            fputs(g, stdout);
        free(g);
        return g ? 0 : 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_options_must_be_finite),
        cmocka_unit_test(test_hostile_checkpoint_values_must_be_finite),
        cmocka_unit_test(test_hostile_lbfgs_state_must_be_finite),
        cmocka_unit_test(test_hostile_nul_in_names),
        cmocka_unit_test(test_hostile_closure_cannot_reenter),
        cmocka_unit_test(test_hostile_closure_frees_its_optimizer),
        cmocka_unit_test(test_hostile_longjmp_out_of_closure),
        cmocka_unit_test(test_hostile_load_keeps_state_buffers),
        cmocka_unit_test(test_hostile_folder_fsync_error_reported),
        cmocka_unit_test(test_hostile_fnv_offset_basis),
        cmocka_unit_test(test_hostile_jit_errors_captured),
        cmocka_unit_test(test_hostile_kernel_same_in_every_process),
        cmocka_unit_test(test_hostile_no_addresses_reach_a_spec),
        cmocka_unit_test(test_hostile_compile_time_bounded),
        cmocka_unit_test(test_hostile_spec_mistakes_named),
        cmocka_unit_test(test_hostile_api_second_pass),
        cmocka_unit_test(test_hostile_set_inputs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
