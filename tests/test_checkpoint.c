/*
 * test_checkpoint.c - save and load: resuming gives the same bits as never
 * stopping; every corrupt, truncated or foreign checkpoint is refused with
 * nothing changed; files are replaced atomically; add_param_group.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"
#include "problems.h"

static const int64_t sizes[] = {257, 1, 7001};
#define NT 3

typedef struct model {
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_param params[NT];
} model;

/* two groups: tensors 0-1 with the defaults, tensor 2 with its own lr */
static void model_new(model *m, const char *spec, const char *defaults)
{
    assert_int_equal(jopt_ctx_new(&m->ctx), JOPT_OK);
    for (int t = 0; t < NT; t++) {
        m->params[t].numel = sizes[t];
        m->params[t].param = t_alloc(sizes[t]);
        m->params[t].grad = t_alloc(sizes[t]);
        t_fill(m->params[t].param, sizes[t], 40 + (uint64_t)t, 0.0);
    }
    jopt_group groups[2] = {{m->params, 2, NULL}, {m->params + 2, 1, "lr=0.003"}};
    T_OK(m->ctx, jopt_optim_new(m->ctx, spec, groups, 2, defaults, &m->opt));
}

static void model_free(model *m)
{
    jopt_optim_free(m->opt);
    jopt_ctx_free(m->ctx);
    for (int t = 0; t < NT; t++) {
        free(m->params[t].param);
        free(m->params[t].grad);
    }
}

static void model_step(model *m, int s)
{
    for (int t = 0; t < NT; t++)
        t_fill(m->params[t].grad, sizes[t], 500 + 10 * (uint64_t)s + t, 0.05);
    /* tensor 1 has no gradient at step 2: its state is created later */
    T_OK(m->ctx, jopt_set_grad(m->opt, 0, 1, s == 2 ? NULL : m->params[1].grad));
    T_OK(m->ctx, jopt_step(m->opt, NULL, NULL, NULL));
}

static unsigned char *snapshot(model *m, size_t *len)
{
    T_OK(m->ctx, jopt_state_size(m->opt, len));
    unsigned char *buf = malloc(*len);
    assert_non_null(buf);
    T_OK(m->ctx, jopt_state_save_mem(m->opt, buf, *len, NULL));
    return buf;
}

static void same_params(const model *a, const model *b)
{
    for (int t = 0; t < NT; t++)
        assert_memory_equal(a->params[t].param, b->params[t].param,
                            (size_t)sizes[t] * sizeof(float));
}

/* Runs 8 steps straight, and 4 + save + load into a new optimizer + 4:
 * the same bits, params and checkpoint alike. */
static void resume(const char *spec, const char *defaults, int via_file)
{
    model a, b;
    model_new(&a, spec, defaults);
    model_new(&b, spec, defaults);
    T_OK(a.ctx, jopt_option_set(a.opt, 1, "lr", 0.002)); /* changed: kept */
    for (int s = 0; s < 4; s++)
        model_step(&a, s);
    char path[] = "/tmp/jopt_ckpt_XXXXXX";
    size_t len;
    unsigned char *mem = NULL;
    if (via_file) {
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        T_OK(a.ctx, jopt_state_save(a.opt, path));
    } else {
        mem = snapshot(&a, &len);
    }
    for (int t = 0; t < NT; t++) /* the parameters are the caller's to save */
        memcpy(b.params[t].param, a.params[t].param, (size_t)sizes[t] * sizeof(float));
    T_OK(b.ctx, via_file ? jopt_state_load(b.opt, path)
                         : jopt_state_load_mem(b.opt, mem, len));
    double lr;
    T_OK(b.ctx, jopt_option_get(b.opt, 1, "lr", &lr));
    assert_true(lr == 0.002);
    for (int s = 4; s < 8; s++) {
        model_step(&a, s);
        model_step(&b, s);
        same_params(&a, &b);
    }
    size_t la, lb;
    unsigned char *sa = snapshot(&a, &la), *sb = snapshot(&b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(sa, sb, la);
    free(sa), free(sb), free(mem);
    if (via_file)
        unlink(path);
    model_free(&a);
    model_free(&b);
}

static void test_checkpoint_resume_same_bits(void **state)
{
    (void)state;
    resume("adam", "lr=0.01 amsgrad=true", 0);
    resume("adam", "lr=0.01 amsgrad=true", 1);
    resume("sgd", "lr=0.01 momentum=0.9 dampening=0.1", 1); /* unset state */
    resume("asgd", "t0=2 lambd=0.01", 0);                   /* scalar state */
    resume("lamb", "weight_decay=0.01", 0);                 /* sums */
    resume("rprop", "", 1);
}

/* Checkpoints of format 1 (jopt before group steps and shapes; written by
 * tests/fixtures/checkpoint/make_v1.c at commit d7c48a0) still load: the
 * model of resume() after 3 steps, loaded into a model stepped 3 times
 * here, steps on exactly as one that never stopped, and saves as format 3. */
static void test_checkpoint_reads_format_1(void **state)
{
    (void)state;
    const char *cases[][2] = {{"adam", "lr=0.01 amsgrad=true"},
                              {"asgd", "lr=0.01 t0=1"}};
    for (int k = 0; k < 2; k++) {
        model a, b;
        model_new(&a, cases[k][0], cases[k][1]);
        model_new(&b, cases[k][0], cases[k][1]);
        for (int s = 0; s < 3; s++) {
            model_step(&a, s);
            model_step(&b, s);
        }
        /* b forgets its state: everything it has comes from the file */
        model c;
        model_new(&c, cases[k][0], cases[k][1]);
        size_t len0;
        unsigned char *fresh = snapshot(&c, &len0);
        T_OK(b.ctx, jopt_state_load_mem(b.opt, fresh, len0));
        free(fresh);
        model_free(&c);
        char path[512];
        snprintf(path, sizeof path, "%s/tests/fixtures/checkpoint/v1-%s.ckpt",
                 JOPT_SOURCE_DIR, cases[k][0]);
        T_OK(b.ctx, jopt_state_load(b.opt, path));
        size_t la, lb;
        unsigned char *sa = snapshot(&a, &la), *sb = snapshot(&b, &lb);
        assert_int_equal(la, lb);
        assert_memory_equal(sa, sb, la);
        free(sa), free(sb);
        for (int s = 3; s < 6; s++) {
            model_step(&a, s);
            model_step(&b, s);
            same_params(&a, &b);
        }
        model_free(&a);
        model_free(&b);
    }
}

/* A model stepped twice, whose checkpoint every failing load must leave
 * exactly as it was: its checkpoint bytes, and the next step. */
typedef struct victim {
    model m;
    unsigned char *before;
    size_t len;
} victim;

static void victim_new(victim *v, const char *spec)
{
    model_new(&v->m, spec, "lr=0.01");
    model_step(&v->m, 0);
    model_step(&v->m, 1);
    v->before = snapshot(&v->m, &v->len);
}

static void victim_unchanged(victim *v)
{
    size_t len;
    unsigned char *now = snapshot(&v->m, &len);
    assert_int_equal(len, v->len);
    assert_memory_equal(now, v->before, len);
    free(now);
}

static void victim_free(victim *v)
{
    free(v->before);
    model_free(&v->m);
}

static void refused(victim *v, const void *buf, size_t len, const char *needle)
{
    int rc = jopt_state_load_mem(v->m.opt, buf, len);
    if (rc != JOPT_EINVAL || !strstr(jopt_errmsg(v->m.ctx), needle))
        fail_msg("load of %zu bytes: got %d \"%s\", want JOPT_EINVAL with \"%s\"",
                 len, rc, jopt_errmsg(v->m.ctx), needle);
    victim_unchanged(v);
}

static void test_checkpoint_truncated_at_every_offset(void **state)
{
    (void)state;
    victim v;
    victim_new(&v, "adam");
    unsigned char *good = snapshot(&v.m, &v.len);
    /* every length from 0 to the whole file minus one: every byte near
     * the ends (headers, the last state, the checksum) and a stride
     * through the middle */
    for (size_t n = 0; n < v.len; n += n < 4096 || n > v.len - 4096 ? 1 : 97) {
        unsigned char *cut = malloc(n + 1);
        memcpy(cut, good, n);
        int rc = jopt_state_load_mem(v.m.opt, cut, n);
        assert_int_equal(rc, JOPT_EINVAL);
        free(cut);
    }
    victim_unchanged(&v);
    free(good);
    victim_free(&v);
}

static void test_checkpoint_bit_flips_refused(void **state)
{
    (void)state;
    victim v;
    victim_new(&v, "sgd");
    unsigned char *buf = snapshot(&v.m, &v.len);
    for (size_t i = 0; i < v.len; i += i < 2048 || i > v.len - 2048 ? 1 : 89) {
        for (int bit = 0; bit < 8; bit += 3) {
            buf[i] ^= (unsigned char)(1u << bit);
            assert_int_equal(jopt_state_load_mem(v.m.opt, buf, v.len), JOPT_EINVAL);
            buf[i] ^= (unsigned char)(1u << bit);
        }
    }
    victim_unchanged(&v);
    T_OK(v.m.ctx, jopt_state_load_mem(v.m.opt, buf, v.len)); /* intact: loads */
    victim_unchanged(&v);
    free(buf);
    victim_free(&v);
}

static void test_checkpoint_wrong_header_refused(void **state)
{
    (void)state;
    victim v;
    victim_new(&v, "adam");
    unsigned char *buf = snapshot(&v.m, &v.len);
    refused(&v, buf, v.len - 1, "checksum");
    buf[0] = 'X';
    refused(&v, buf, v.len, "wrong magic");
    buf[0] = 'J';
    buf[8] = 4; /* version 4, resealed: this jopt reads 1 to 3 */
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "version 4");
    buf[8] = 3;
    t_reseal(buf, v.len);
    refused(&v, buf, 3, "too short");
    /* a lying count: 2^40 floats claimed, checksum fixed up: refused by
     * the length checks, without allocating what it claims (the count,
     * the element type, the data) */
    size_t off = v.len - 8 - (size_t)sizes[2] * 4 - 1 - 8;
    uint64_t count, lie = 1ull << 40;
    memcpy(&count, buf + off, 8);
    assert_int_equal(count, (uint64_t)sizes[2]);
    memcpy(buf + off, &lie, 8);
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "values, more than");
    free(buf);
    victim_free(&v);
}

static void test_checkpoint_foreign_refused(void **state)
{
    (void)state;
    victim v;
    victim_new(&v, "adam");
    /* another optimizer's file */
    model other;
    model_new(&other, "adamw", NULL);
    model_step(&other, 0);
    size_t len;
    unsigned char *buf = snapshot(&other, &len);
    refused(&v, buf, len, "not of spec 'adam'");
    free(buf);
    model_free(&other);
    /* same spec, other shapes: a group less, a parameter less, other sizes */
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float *p = t_alloc(300), *g = t_alloc(300), *p2 = t_alloc(300), *g2 = t_alloc(300);
    jopt_param one[2] = {{p, g, 257}, {p + 260, g + 260, 1}};
    jopt_param big = {p2, g2, 300};
    struct { jopt_group groups[2]; size_t n; const char *needle; } cases[] = {
        {{{one, 2, NULL}}, 1, "different number of parameter groups"},
        {{{one, 1, NULL}, {&big, 1, NULL}}, 2, "doesn't match the size"},
        {{{one, 2, NULL}, {&big, 1, NULL}}, 2, "elements in the checkpoint"},
    };
    for (size_t c = 0; c < 3; c++) {
        jopt_optim *o;
        T_OK(ctx, jopt_optim_new(ctx, "adam", cases[c].groups, cases[c].n, NULL, &o));
        T_OK(ctx, jopt_step(o, NULL, NULL, NULL));
        T_OK(ctx, jopt_state_size(o, &len));
        buf = malloc(len);
        T_OK(ctx, jopt_state_save_mem(o, buf, len, NULL));
        refused(&v, buf, len, cases[c].needle);
        free(buf);
        jopt_optim_free(o);
    }
    jopt_ctx_free(ctx);
    free(p), free(g), free(p2), free(g2);
    /* a file that is not there, a folder */
    assert_int_equal(jopt_state_load(v.m.opt, "/nonexistent/x.ckpt"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(v.m.ctx), "/nonexistent/x.ckpt"));
    assert_int_equal(jopt_state_load(v.m.opt, "/tmp"), JOPT_EINVAL);
    victim_unchanged(&v);
    /* too small a buffer to save into */
    unsigned char small[16];
    assert_int_equal(jopt_state_save_mem(v.m.opt, small, sizeof small, &len), JOPT_EINVAL);
    assert_int_equal(len, v.len);
    victim_free(&v);
}

static void test_checkpoint_save_is_atomic(void **state)
{
    (void)state;
    victim v;
    victim_new(&v, "adam");
    char dir[] = "/tmp/jopt_dir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], sub[256];
    snprintf(path, sizeof path, "%s/opt.ckpt", dir);
    T_OK(v.m.ctx, jopt_state_save(v.m.opt, path));
    /* saving over a folder fails at the rename: the folder is untouched
     * and no temporary file is left behind */
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(jopt_state_save(v.m.opt, sub), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(v.m.ctx), "rename"));
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    /* a path under a file cannot be created: the earlier file stays good */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/x", path);
    assert_int_equal(jopt_state_save(v.m.opt, bad), JOPT_EINVAL);
    T_OK(v.m.ctx, jopt_state_load(v.m.opt, path));
    victim_unchanged(&v);
    /* only the file and the folder are there */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 2", dir);
    assert_int_equal(system(cmd), 0);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
    victim_free(&v);
}

static void test_checkpoint_add_param_group(void **state)
{
    (void)state;
    model m;
    model_new(&m, "sgd", "lr=0.1 momentum=0.9");
    model_step(&m, 0);
    float *p = t_alloc(100), *g = t_alloc(100), *p0 = t_alloc(100);
    t_fill(p, 100, 3, 0.0);
    t_fill(g, 100, 4, 0.0);
    memcpy(p0, p, 100 * sizeof(float));
    jopt_param extra = {p, g, 100};
    jopt_group group = {&extra, 1, "momentum=0"};
    /* an overlapping group, a bad option: refused, nothing changed */
    jopt_param clash = {m.params[0].param + 3, g, 10};
    jopt_group bad = {&clash, 1, NULL};
    assert_int_equal(jopt_add_param_group(m.opt, &bad), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(m.ctx), "overlap"));
    jopt_group bad_lr = {&extra, 1, "lr=-1"};
    assert_int_equal(jopt_add_param_group(m.opt, &bad_lr), JOPT_EINVAL);
    assert_int_equal(jopt_group_count(m.opt), 2);
    T_OK(m.ctx, jopt_add_param_group(m.opt, &group));
    assert_int_equal(jopt_group_count(m.opt), 3);
    double lr;
    T_OK(m.ctx, jopt_option_get(m.opt, 2, "lr", &lr)); /* the defaults' lr */
    assert_true(lr == 0.1);
    model_step(&m, 1);
    for (int i = 0; i < 100; i++)
        assert_true(p[i] == fmaf(g[i], -0.1f, p0[i]));
    model_free(&m);
    free(p), free(g), free(p0);
}

/* ---- closure optimizers ------------------------------------------------------ */

typedef struct crun {
    t_problem p;
    jopt_ctx *ctx;
    jopt_optim *opt;
} crun;

static void crun_new(crun *r, const char *problem, const char *spec,
                     const char *options)
{
    assert_int_equal(t_problem_init(&r->p, problem, JOPT_SOURCE_DIR), 0);
    assert_int_equal(jopt_ctx_new(&r->ctx), JOPT_OK);
    T_OK(r->ctx, jopt_ctx_set_spec_path(r->ctx, JOPT_SOURCE_DIR "/specs"));
    jopt_param prm[T_PROBLEM_MAXT];
    for (int t = 0; t < r->p.ntensors; t++)
        prm[t] = (jopt_param){r->p.params[t], r->p.grads[t], r->p.sizes[t]};
    jopt_group g = {prm, (size_t)r->p.ntensors, options};
    T_OK(r->ctx, jopt_optim_new(r->ctx, spec, &g, 1, NULL, &r->opt));
}

static void crun_free(crun *r)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    t_problem_free(&r->p);
}

static void csteps(crun *r, int n, double *losses)
{
    for (int s = 0; s < n; s++)
        T_OK(r->ctx, jopt_step(r->opt, t_problem_closure, &r->p, &losses[s]));
}

/* the offset of the closure optimizer's driver part: it ends just before
 * the checksum and is preceded by its u64 length */
static size_t driver_part(const unsigned char *buf, size_t len)
{
    /* from the longest: zeros at the end of the state would match short
     * lengths */
    for (size_t l = len - 24; l + 1 > 0; l--) {
        uint64_t stored;
        memcpy(&stored, buf + len - 8 - l - 8, 8);
        if (stored == l)
            return len - 8 - l;
    }
    fail_msg("no driver part found");
    return 0;
}

/* save after 3 steps, run 3 more; a new optimizer over the parameters as
 * they were at the save, loaded, runs the same 3 steps bit for bit */
static void test_checkpoint_closure_optimizers_resume(void **state)
{
    (void)state;
    static const char *const cases[][3] = {
        {"rosen100", "lbfgs", "line_search_fn=strong_wolfe history_size=3 max_iter=5"},
        {"logreg", "lbfgs", "max_iter=4"},
        {"rosen100", "cg", "max_iter=10"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        crun a, b;
        double la[6], lb[3];
        crun_new(&a, cases[c][0], cases[c][1], cases[c][2]);
        csteps(&a, 3, la);
        size_t len;
        T_OK(a.ctx, jopt_state_size(a.opt, &len));
        unsigned char *buf = malloc(len);
        T_OK(a.ctx, jopt_state_save_mem(a.opt, buf, len, NULL));
        float x_mid[128], xa[128], xb[128];
        t_problem_get_x(&a.p, x_mid);
        csteps(&a, 3, la + 3);
        t_problem_get_x(&a.p, xa);

        crun_new(&b, cases[c][0], cases[c][1], cases[c][2]);
        t_problem_set_x(&b.p, x_mid);
        if (!strcmp(cases[c][1], "lbfgs")) { /* a bad driver part: refused */
            unsigned char *bad = malloc(len);
            memcpy(bad, buf, len);
            size_t at = driver_part(bad, len);
            uint64_t wrong = (uint64_t)a.p.n - 1;
            memcpy(bad + at, &wrong, 8);
            t_reseal(bad, len);
            assert_int_equal(jopt_state_load_mem(b.opt, bad, len), JOPT_EINVAL);
            assert_non_null(strstr(jopt_errmsg(b.ctx), "parameters of another size"));
            free(bad);
        }
        if (!strcmp(cases[c][1], "lbfgs")) { /* counters without a direction */
            crun f;
            crun_new(&f, cases[c][0], cases[c][1], cases[c][2]);
            size_t flen;
            T_OK(f.ctx, jopt_state_size(f.opt, &flen));
            unsigned char *forged = malloc(flen);
            T_OK(f.ctx, jopt_state_save_mem(f.opt, forged, flen, NULL));
            double n_iter = 3; /* numel, t, H_diag, prev_loss, func_evals, n_iter */
            memcpy(forged + driver_part(forged, flen) + 8 + 4 * 8, &n_iter, 8);
            t_reseal(forged, flen);
            assert_int_equal(jopt_state_load_mem(b.opt, forged, flen), JOPT_EINVAL);
            assert_non_null(strstr(jopt_errmsg(b.ctx), "corrupt counters"));
            free(forged);
            crun_free(&f);
        }
        T_OK(b.ctx, jopt_state_load_mem(b.opt, buf, len));
        csteps(&b, 3, lb);
        t_problem_get_x(&b.p, xb);
        assert_memory_equal(xa, xb, (size_t)a.p.n * sizeof(float));
        assert_memory_equal(la + 3, lb, sizeof lb);
        if (!strcmp(cases[c][1], "lbfgs")) {
            const float *na, *nb;
            int64_t sa, sb;
            T_OK(a.ctx, jopt_state_get(a.opt, 0, 0, "n_iter", &na, &sa));
            T_OK(b.ctx, jopt_state_get(b.opt, 0, 0, "n_iter", &nb, &sb));
            assert_true(*na == *nb && sa == sb && sa == 6);
        }
        free(buf);
        crun_free(&a);
        crun_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checkpoint_resume_same_bits),
        cmocka_unit_test(test_checkpoint_reads_format_1),
        cmocka_unit_test(test_checkpoint_truncated_at_every_offset),
        cmocka_unit_test(test_checkpoint_bit_flips_refused),
        cmocka_unit_test(test_checkpoint_wrong_header_refused),
        cmocka_unit_test(test_checkpoint_foreign_refused),
        cmocka_unit_test(test_checkpoint_save_is_atomic),
        cmocka_unit_test(test_checkpoint_add_param_group),
        cmocka_unit_test(test_checkpoint_closure_optimizers_resume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
