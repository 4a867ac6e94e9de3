/*
 * test_sched_resume.c - schedulers saved and loaded with the optimizer.
 *
 * For each kind: 300 steps straight, against 150 steps, a save of the
 * optimizer and the scheduler, a fresh optimizer and scheduler built the
 * same way, a load of both, and 150 more: every lr, momentum and parameter
 * must be the same bits.  Then truncated, flipped, resealed and foreign
 * scheduler files, each refused with JOPT_EINVAL and nothing changed; and
 * the optimizer checkpoint's scheduler keys.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

#define STEPS 300
#define HALF 150
#define NP 3 /* tensors: two in group 0, one in group 1 */

static const int64_t sizes[NP] = {5, 3, 4};

/* ---- an optimizer over two groups ----------------------------------------- */

typedef struct world {
    jopt_ctx *ctx;
    jopt_optim *opt;
    float p[NP][8], g[NP][8];
} world;

typedef struct rcase {
    const char *name;
    const char *spec, *defaults, *group1;
    jopt_sched *(*build)(world *w);
    int metric; /* ReduceLROnPlateau: steps on metric_at(.., metric) */
} rcase;

static void world_new(world *w, const rcase *c)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(jopt_ctx_new(&w->ctx), JOPT_OK);
    T_OK(w->ctx, jopt_ctx_set_engine(w->ctx, JOPT_ENGINE_REFERENCE));
    jopt_param params[NP];
    for (int t = 0; t < NP; t++) {
        for (int i = 0; i < sizes[t]; i++)
            w->p[t][i] = 0.5f - 0.1f * (float)(i + t);
        params[t] = (jopt_param){w->p[t], w->g[t], sizes[t]};
    }
    jopt_group groups[2] = {{params, 2, NULL}, {params + 2, 1, c->group1}};
    T_OK(w->ctx, jopt_optim_new(w->ctx, c->spec, groups, 2, c->defaults,
                                &w->opt));
}

static void world_free(world *w)
{
    jopt_optim_free(w->opt);
    jopt_ctx_free(w->ctx);
}

/* gradients that depend on the step and the parameters, so parameters
 * remember every lr they were stepped with */
static void train_step(world *w, int step)
{
    for (int t = 0; t < NP; t++)
        for (int i = 0; i < sizes[t]; i++)
            w->g[t][i] = 0.1f * (float)sin(0.37 * step + i + 3 * t) +
                         0.5f * w->p[t][i];
    T_OK(w->ctx, jopt_step(w->opt, NULL, NULL, NULL));
}

/* staircases, so that the plateau's state at step 150 matters.  1 (mode
 * min): better at steps 4, 24, ..., 144, 164, ...; at 150 the cooldown
 * after a cut at 149 runs.  2 (mode max): better at 4, 34, ..., 124, 154;
 * at 150, two bad epochs since the cooldown after a cut at 145, a cut due
 * at 153, and a best that the next metrics do not beat */
static double metric_at(int step, int kind)
{
    if (kind == 1)
        return 1.0 - 0.01 * (double)((step + 16) / 20);
    return 0.01 * (double)((step + 26) / 30);
}

static void sched_step(world *w, const rcase *c, jopt_sched *s, int step)
{
    if (c->metric)
        T_OK(w->ctx, jopt_sched_step_metric(s, metric_at(step, c->metric)));
    else
        T_OK(w->ctx, jopt_sched_step(s));
}

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

/* the lrs, momentums, last lrs, epochs and parameters of two runs */
static void same_run(const rcase *c, int step, world *a, jopt_sched *sa,
                     world *b, jopt_sched *sb)
{
    for (size_t g = 0; g < 2; g++) {
        double la, lb, ma = momentum_of(a->opt, g), mb = momentum_of(b->opt, g);
        T_OK(a->ctx, jopt_option_get(a->opt, g, "lr", &la));
        T_OK(b->ctx, jopt_option_get(b->opt, g, "lr", &lb));
        if (!same(la, lb) || !same(ma, mb))
            fail_msg("%s: step %d group %zu: lr %.17g momentum %.17g "
                     "straight, lr %.17g momentum %.17g resumed", c->name,
                     step, g, la, ma, lb, mb);
        T_OK(a->ctx, jopt_sched_last_lr(sa, g, &la));
        T_OK(b->ctx, jopt_sched_last_lr(sb, g, &lb));
        if (!same(la, lb))
            fail_msg("%s: step %d group %zu: last_lr %.17g straight, %.17g "
                     "resumed", c->name, step, g, la, lb);
    }
    assert_int_equal(jopt_sched_epoch(sa), jopt_sched_epoch(sb));
    for (int t = 0; t < NP; t++)
        if (memcmp(a->p[t], b->p[t], (size_t)sizes[t] * sizeof(float)))
            fail_msg("%s: step %d: tensor %d differs", c->name, step, t);
}

static unsigned char *sched_bytes(world *w, const jopt_sched *s, size_t *len)
{
    T_OK(w->ctx, jopt_sched_state_size(s, len));
    unsigned char *buf = malloc(*len);
    assert_non_null(buf);
    T_OK(w->ctx, jopt_sched_save_mem(s, buf, *len, NULL));
    return buf;
}

static unsigned char *opt_bytes(world *w, size_t *len)
{
    T_OK(w->ctx, jopt_state_size(w->opt, len));
    unsigned char *buf = malloc(*len);
    assert_non_null(buf);
    T_OK(w->ctx, jopt_state_save_mem(w->opt, buf, *len, NULL));
    return buf;
}

static void resume(const rcase *c, int via_file)
{
    world a, b, r;
    world_new(&a, c);
    world_new(&b, c);
    jopt_sched *sa = c->build(&a), *sb = c->build(&b);
    for (int t = 1; t <= HALF; t++) {
        train_step(&a, t);
        sched_step(&a, c, sa, t);
        train_step(&b, t);
        sched_step(&b, c, sb, t);
    }
    /* stop: save b, keep its parameters (the caller's to save), free it */
    char opath[] = "/tmp/jopt_opt_XXXXXX", spath[] = "/tmp/jopt_sched_XXXXXX";
    unsigned char *ob = NULL, *sbuf = NULL;
    size_t olen = 0, slen = 0;
    if (via_file) {
        int fd = mkstemp(opath);
        assert_true(fd >= 0);
        close(fd);
        assert_true((fd = mkstemp(spath)) >= 0);
        close(fd);
        T_OK(b.ctx, jopt_state_save(b.opt, opath));
        T_OK(b.ctx, jopt_sched_save(sb, spath));
    } else {
        ob = opt_bytes(&b, &olen);
        sbuf = sched_bytes(&b, sb, &slen);
    }
    float saved[NP][8];
    memcpy(saved, b.p, sizeof saved);
    jopt_sched_free(sb);
    world_free(&b);

    /* resume: the same construction, then both loads */
    world_new(&r, c);
    memcpy(r.p, saved, sizeof saved);
    jopt_sched *sr = c->build(&r);
    if (via_file) {
        /* the scheduler first: the order does not matter */
        T_OK(r.ctx, jopt_sched_load(sr, spath));
        T_OK(r.ctx, jopt_state_load(r.opt, opath));
        unlink(opath);
        unlink(spath);
    } else {
        T_OK(r.ctx, jopt_state_load_mem(r.opt, ob, olen));
        T_OK(r.ctx, jopt_sched_load_mem(sr, sbuf, slen));
    }
    same_run(c, HALF, &a, sa, &r, sr);
    for (int t = HALF + 1; t <= STEPS; t++) {
        train_step(&a, t);
        sched_step(&a, c, sa, t);
        train_step(&r, t);
        sched_step(&r, c, sr, t);
        same_run(c, t, &a, sa, &r, sr);
    }
    /* and the same state to save again */
    size_t la, lr_;
    unsigned char *xa = sched_bytes(&a, sa, &la), *xr = sched_bytes(&r, sr, &lr_);
    assert_int_equal(la, lr_);
    assert_memory_equal(xa, xr, la);
    free(xa), free(xr);
    xa = opt_bytes(&a, &la);
    xr = opt_bytes(&r, &lr_);
    assert_int_equal(la, lr_);
    assert_memory_equal(xa, xr, la);
    free(xa), free(xr), free(ob), free(sbuf);
    jopt_sched_free(sa);
    jopt_sched_free(sr);
    world_free(&a);
    world_free(&r);
}

/* ---- the cases ------------------------------------------------------------- */

static jopt_sched *make(world *w, const char *kind, const char *options)
{
    jopt_sched *s;
    T_OK(w->ctx, jopt_sched_new(w->opt, kind, options, &s));
    return s;
}

static jopt_sched *b_cosine(world *w)
{
    return make(w, "cosine", "T_max=70 eta_min=0.001");
}

static jopt_sched *b_warm(world *w)
{
    return make(w, "cosine_warm_restarts", "T_0=20 T_mult=2 eta_min=1e-4");
}

static jopt_sched *b_onecycle(world *w)
{
    return make(w, "onecycle", "max_lr=0.01,0.02 total_steps=300 "
                "three_phase=true");
}

static jopt_sched *b_onecycle_sgd(world *w)
{
    return make(w, "onecycle", "max_lr=0.05 total_steps=320 "
                "anneal_strategy=linear base_momentum=0.8,0.7");
}

static jopt_sched *b_cyclic(world *w)
{
    return make(w, "cyclic", "base_lr=0.001,0.002 max_lr=0.01 "
                "step_size_up=40 step_size_down=25 mode=triangular2");
}

static jopt_sched *b_plateau(world *w)
{
    return make(w, "plateau", "patience=4 cooldown=3 factor=0.9 "
                "min_lr=1e-6,2e-6");
}

static jopt_sched *b_plateau_max(world *w)
{
    return make(w, "plateau", "mode=max threshold_mode=abs threshold=1e-3 "
                "patience=4 cooldown=3 factor=0.9 min_lr=1e-6");
}

static jopt_sched *b_sequential(world *w)
{
    jopt_sched *kids[3] = {
        make(w, "linear", "start_factor=0.1 total_iters=20"),
        make(w, "cosine", "T_max=120"),
        make(w, "cosine_warm_restarts", "T_0=25 T_mult=2")};
    int64_t ms[2] = {20, 180};
    jopt_sched *s;
    T_OK(w->ctx, jopt_sched_new_sequential(w->opt, kids, 3, ms, &s));
    return s;
}

static jopt_sched *b_chained(world *w)
{
    jopt_sched *kids[3] = {make(w, "step", "step_size=50 gamma=0.5"),
                           make(w, "cosine", "T_max=70"),
                           make(w, "linear", "start_factor=0.5 "
                                "total_iters=200")};
    jopt_sched *s;
    T_OK(w->ctx, jopt_sched_new_chained(w->opt, kids, 3, &s));
    return s;
}

static double decay(void *user, int64_t epoch, size_t group)
{
    (void)user;
    return group ? 0.999 : 1.0 - 0.002 * (double)(epoch % 100);
}

static jopt_sched *b_multiplicative(world *w)
{
    jopt_sched *s;
    T_OK(w->ctx, jopt_sched_new_lambda(w->opt, decay, NULL, 1, &s));
    return s;
}

static const rcase cases[] = {
    {"cosine", "sgd", "lr=0.05 momentum=0.9", "lr=0.02", b_cosine, 0},
    {"warm_restarts", "adamw", "lr=0.01", "lr=0.003", b_warm, 0},
    {"onecycle_adam", "adam", "lr=0.01", NULL, b_onecycle, 0},
    {"onecycle_sgd", "sgd", "lr=0.01 momentum=0.9", NULL, b_onecycle_sgd, 0},
    {"cyclic", "sgd", "lr=0.01 momentum=0.9", NULL, b_cyclic, 0},
    {"plateau", "adam", "lr=0.01", "lr=0.02", b_plateau, 1},
    {"plateau_max", "sgd", "lr=0.01", "lr=0.02", b_plateau_max, 2},
    {"sequential", "sgd", "lr=0.05 momentum=0.9", "lr=0.02", b_sequential, 0},
    {"chained", "adam", "lr=0.01", "lr=0.005", b_chained, 0},
    {"multiplicative", "sgd", "lr=0.05", "lr=0.01", b_multiplicative, 0},
};
#define NCASES (sizeof cases / sizeof cases[0])
#define PLATEAU 5
#define SEQ 7

static void test_sched_resume_same_bits(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++)
        resume(&cases[i], (int)(i % 2));
    print_message("%zu scheduler runs resumed at step %d, bit for bit\n",
                  NCASES, HALF);
}

/* the cases do what they are meant to: the plateau reduces after the
 * resume, onecycle cycles momentum */
static void test_sched_resume_cases_move(void **state)
{
    (void)state;
    world w;
    world_new(&w, &cases[PLATEAU]);
    jopt_sched *s = b_plateau(&w);
    double lr150 = 0, lr300, m0, m150 = 0;
    for (int t = 1; t <= STEPS; t++) {
        train_step(&w, t);
        sched_step(&w, &cases[PLATEAU], s, t);
        if (t == HALF)
            T_OK(w.ctx, jopt_option_get(w.opt, 0, "lr", &lr150));
    }
    T_OK(w.ctx, jopt_option_get(w.opt, 0, "lr", &lr300));
    assert_true(lr150 < 0.01 && lr300 < lr150);
    jopt_sched_free(s);
    world_free(&w);
    world_new(&w, &cases[2]);
    s = b_onecycle(&w);
    m0 = momentum_of(w.opt, 0);
    for (int t = 1; t <= HALF; t++)
        T_OK(w.ctx, jopt_sched_step(s));
    m150 = momentum_of(w.opt, 0);
    assert_true(m0 > 0.9499 && m0 < 0.9501 && m150 < m0);
    jopt_sched_free(s);
    world_free(&w);
}

/* ---- refused files ----------------------------------------------------------- */

/* a sequential scheduler 150 steps in, whose saved bytes and lrs every
 * refused load must leave as they were */
typedef struct victim {
    world w;
    jopt_sched *s;
    unsigned char *before;
    size_t len;
    double lr[2];
} victim;

static void victim_new(victim *v)
{
    world_new(&v->w, &cases[SEQ]);
    v->s = b_sequential(&v->w);
    for (int t = 1; t <= HALF; t++)
        T_OK(v->w.ctx, jopt_sched_step(v->s));
    v->before = sched_bytes(&v->w, v->s, &v->len);
    for (size_t g = 0; g < 2; g++)
        T_OK(v->w.ctx, jopt_option_get(v->w.opt, g, "lr", &v->lr[g]));
}

static void victim_unchanged(victim *v)
{
    size_t len;
    unsigned char *now = sched_bytes(&v->w, v->s, &len);
    assert_int_equal(len, v->len);
    assert_memory_equal(now, v->before, len);
    free(now);
    for (size_t g = 0; g < 2; g++) {
        double lr;
        T_OK(v->w.ctx, jopt_option_get(v->w.opt, g, "lr", &lr));
        assert_true(same(lr, v->lr[g]));
    }
    assert_int_equal(jopt_sched_epoch(v->s), HALF);
}

static void victim_free(victim *v)
{
    free(v->before);
    jopt_sched_free(v->s);
    world_free(&v->w);
}

static void refused(victim *v, const void *buf, size_t len, const char *needle)
{
    int rc = jopt_sched_load_mem(v->s, buf, len);
    if (rc != JOPT_EINVAL || !strstr(jopt_errmsg(v->w.ctx), needle))
        fail_msg("load of %zu bytes: got %d \"%s\", want JOPT_EINVAL with "
                 "\"%s\"", len, rc, jopt_errmsg(v->w.ctx), needle);
    victim_unchanged(v);
}

static void test_sched_resume_truncated_refused(void **state)
{
    (void)state;
    victim v;
    victim_new(&v);
    unsigned char *good = sched_bytes(&v.w, v.s, &v.len);
    for (size_t n = 0; n < v.len; n++) {
        unsigned char *cut = malloc(n + 1);
        memcpy(cut, good, n);
        assert_int_equal(jopt_sched_load_mem(v.s, cut, n), JOPT_EINVAL);
        free(cut);
    }
    /* and one byte too many */
    unsigned char *longer = calloc(v.len + 1, 1);
    memcpy(longer, good, v.len);
    assert_int_equal(jopt_sched_load_mem(v.s, longer, v.len + 1), JOPT_EINVAL);
    free(longer);
    victim_unchanged(&v);
    T_OK(v.w.ctx, jopt_sched_load_mem(v.s, good, v.len)); /* whole: loads */
    victim_unchanged(&v);
    free(good);
    victim_free(&v);
}

static void test_sched_resume_bit_flips_refused(void **state)
{
    (void)state;
    victim v;
    victim_new(&v);
    unsigned char *buf = sched_bytes(&v.w, v.s, &v.len);
    for (size_t i = 0; i < v.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (unsigned char)(1u << bit);
            assert_int_equal(jopt_sched_load_mem(v.s, buf, v.len), JOPT_EINVAL);
            buf[i] ^= (unsigned char)(1u << bit);
        }
    }
    victim_unchanged(&v);
    free(buf);
    victim_free(&v);
}

/* offsets in the victim's file: header 20 bytes; the root node is
 * "SequentialLR" (u32 + 12), hash, nchildren, 7 counters, 2 x 2 lrs */
#define OFF_VERSION 8
#define OFF_NGROUPS 16
#define OFF_ROOT 20
#define NODE_FIXED (8 + 4 + 7 * 8 + 4 * 8)
#define OFF_CHILD0 (OFF_ROOT + 4 + 12 + NODE_FIXED) /* "LinearLR" */
#define OFF_CHILD1 (OFF_CHILD0 + 4 + 8 + NODE_FIXED) /* "CosineAnnealingLR" */
#define OFF_CHILD2 (OFF_CHILD1 + 4 + 17 + NODE_FIXED)

static void test_sched_resume_resealed_refused(void **state)
{
    (void)state;
    victim v;
    victim_new(&v);
    unsigned char *buf = sched_bytes(&v.w, v.s, &v.len);
    assert_memory_equal(buf + OFF_CHILD2 + 4, "CosineAnnealingWarmRestarts", 27);
    refused(&v, buf, v.len - 1, "checksum mismatch");
    refused(&v, buf, 5, "too short");
    buf[0] = 'X';
    refused(&v, buf, v.len, "wrong magic");
    buf[0] = 'J';
    buf[OFF_VERSION] = 2;
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "scheduler state version 2; this jopt reads "
            "version 1");
    buf[OFF_VERSION] = 1;
    buf[OFF_NGROUPS] = 3;
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "made for 3 parameter groups; this one for 2");
    buf[OFF_NGROUPS] = 2;
    /* another class name, same length: "SequentialLR" -> "SequentialLX" */
    buf[OFF_ROOT + 4 + 11] = 'X';
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "the file holds the state of a SequentialLX; the "
            "scheduler is a SequentialLR");
    buf[OFF_ROOT + 4 + 11] = 'R';
    /* the root's options hash */
    buf[OFF_ROOT + 4 + 12] ^= 1;
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "the file's SequentialLR was made with other "
            "options than the scheduler");
    buf[OFF_ROOT + 4 + 12] ^= 1;
    /* the second child's options */
    buf[OFF_CHILD1 + 4 + 17] ^= 1;
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "the file's CosineAnnealingLR was made with other "
            "options than child 1");
    buf[OFF_CHILD1 + 4 + 17] ^= 1;
    /* the root's child count */
    buf[OFF_ROOT + 4 + 12 + 8] = 2;
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "the file's SequentialLR has 2 schedulers; the "
            "scheduler has 3");
    buf[OFF_ROOT + 4 + 12 + 8] = 3;
    /* counters out of range: a last_epoch of -2, warm restarts' T_i of 0 */
    size_t le = OFF_CHILD0 + 4 + 8 + 12;
    int64_t bad = -2, good;
    memcpy(&good, buf + le, 8);
    memcpy(buf + le, &bad, 8);
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "state of child 0 is corrupt");
    memcpy(buf + le, &good, 8);
    size_t ti = OFF_CHILD2 + 4 + 27 + 12 + 24;
    bad = 0;
    memcpy(&good, buf + ti, 8);
    assert_int_equal(good, 25); /* T_0 */
    memcpy(buf + ti, &bad, 8);
    t_reseal(buf, v.len);
    refused(&v, buf, v.len, "state of child 2 is corrupt");
    memcpy(buf + ti, &good, 8);
    t_reseal(buf, v.len);
    T_OK(v.w.ctx, jopt_sched_load_mem(v.s, buf, v.len)); /* restored: loads */
    victim_unchanged(&v);
    free(buf);
    victim_free(&v);
}

static void foreign(victim *v, jopt_sched *other, world *w, const char *needle)
{
    size_t len;
    unsigned char *buf = sched_bytes(w, other, &len);
    refused(v, buf, len, needle);
    free(buf);
}

static void test_sched_resume_foreign_refused(void **state)
{
    (void)state;
    victim v;
    victim_new(&v);
    world w;
    world_new(&w, &cases[SEQ]);
    jopt_sched *s = make(&w, "step", "step_size=3");
    foreign(&v, s, &w, "the file holds the state of a StepLR; the scheduler "
            "is a SequentialLR");
    jopt_sched_free(s);
    /* the same children, other milestones */
    jopt_sched *kids[3] = {make(&w, "linear", "start_factor=0.1 total_iters=20"),
                           make(&w, "cosine", "T_max=120"),
                           make(&w, "cosine_warm_restarts", "T_0=25 T_mult=2")};
    int64_t ms[2] = {20, 181};
    T_OK(w.ctx, jopt_sched_new_sequential(w.opt, kids, 3, ms, &s));
    foreign(&v, s, &w, "SequentialLR was made with other options");
    jopt_sched_free(s);
    /* a child made with another option */
    kids[0] = make(&w, "linear", "start_factor=0.1 total_iters=20");
    kids[1] = make(&w, "cosine", "T_max=120 eta_min=1e-9");
    kids[2] = make(&w, "cosine_warm_restarts", "T_0=25 T_mult=2");
    ms[1] = 180;
    T_OK(w.ctx, jopt_sched_new_sequential(w.opt, kids, 3, ms, &s));
    foreign(&v, s, &w, "the file's CosineAnnealingLR was made with other "
            "options than child 1");
    jopt_sched_free(s);
    /* other children */
    kids[0] = make(&w, "linear", "start_factor=0.1 total_iters=20");
    kids[1] = make(&w, "cosine", "T_max=120");
    kids[2] = make(&w, "exponential", "gamma=0.9");
    T_OK(w.ctx, jopt_sched_new_sequential(w.opt, kids, 3, ms, &s));
    foreign(&v, s, &w, "the file holds the state of an ExponentialLR; child "
            "2 is a CosineAnnealingWarmRestarts");
    jopt_sched_free(s);
    /* an optimizer's checkpoint */
    size_t len;
    unsigned char *buf = opt_bytes(&w, &len);
    refused(&v, buf, len, "not a jopt scheduler state (wrong magic)");
    free(buf);
    world_free(&w);
    /* the same kind and options over one group */
    jopt_ctx *ctx;
    jopt_optim *opt;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float p[4] = {0}, g[4] = {0};
    jopt_param one = {p, g, 4};
    jopt_group grp = {&one, 1, NULL};
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, "lr=0.05 momentum=0.9", &opt));
    jopt_sched *k1[3];
    T_OK(ctx, jopt_sched_new(opt, "linear", "start_factor=0.1 total_iters=20",
                             &k1[0]));
    T_OK(ctx, jopt_sched_new(opt, "cosine", "T_max=120", &k1[1]));
    T_OK(ctx, jopt_sched_new(opt, "cosine_warm_restarts", "T_0=25 T_mult=2",
                             &k1[2]));
    T_OK(ctx, jopt_sched_new_sequential(opt, k1, 3, ms, &s));
    T_OK(ctx, jopt_sched_state_size(s, &len));
    buf = malloc(len);
    T_OK(ctx, jopt_sched_save_mem(s, buf, len, NULL));
    refused(&v, buf, len, "made for 1 parameter groups; this one for 2");
    /* a scheduler's file is not an optimizer's checkpoint */
    assert_int_equal(jopt_state_load_mem(opt, buf, len), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "wrong magic"));
    free(buf);
    jopt_sched_free(s);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    victim_free(&v);
}

static void test_sched_resume_bad_arguments(void **state)
{
    (void)state;
    victim v;
    victim_new(&v);
    jopt_ctx *ctx = v.w.ctx;
    size_t len;
    unsigned char small[16];
    assert_int_equal(jopt_sched_state_size(NULL, &len), JOPT_EINVAL);
    assert_int_equal(jopt_sched_state_size(v.s, NULL), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "len is NULL"));
    assert_int_equal(jopt_sched_save_mem(v.s, small, sizeof small, &len),
                     JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "the buffer holds 16 bytes; the "
                           "scheduler's state needs"));
    assert_int_equal(len, v.len);
    assert_int_equal(jopt_sched_save_mem(v.s, NULL, 0, &len), JOPT_EINVAL);
    assert_int_equal(jopt_sched_save_mem(NULL, small, 16, &len), JOPT_EINVAL);
    assert_int_equal(jopt_sched_load_mem(NULL, small, 16), JOPT_EINVAL);
    assert_int_equal(jopt_sched_load_mem(v.s, NULL, 16), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "jopt_sched_load: buf is NULL"));
    assert_int_equal(jopt_sched_save(v.s, NULL), JOPT_EINVAL);
    assert_int_equal(jopt_sched_save(v.s, ""), JOPT_EINVAL);
    assert_int_equal(jopt_sched_load(v.s, NULL), JOPT_EINVAL);
    assert_int_equal(jopt_sched_load(v.s, "/nonexistent/x.sched"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "cannot read '/nonexistent/"
                           "x.sched'"));
    assert_int_equal(jopt_sched_load(v.s, "/tmp"), JOPT_EINVAL);
    victim_unchanged(&v);
    victim_free(&v);
}

/* jopt_sched_save writes atomically, through the same code as
 * jopt_state_save: a failed save leaves the earlier file and no
 * temporary file */
static void test_sched_resume_save_is_atomic(void **state)
{
    (void)state;
    victim v;
    victim_new(&v);
    char dir[] = "/tmp/jopt_sdir_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], sub[256], bad[300];
    snprintf(path, sizeof path, "%s/s.sched", dir);
    T_OK(v.w.ctx, jopt_sched_save(v.s, path));
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(jopt_sched_save(v.s, sub), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(v.w.ctx), "jopt_sched_save: cannot "
                           "rename"));
    snprintf(bad, sizeof bad, "%s/x", path);
    assert_int_equal(jopt_sched_save(v.s, bad), JOPT_EINVAL);
    T_OK(v.w.ctx, jopt_sched_load(v.s, path));
    victim_unchanged(&v);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 2", dir);
    assert_int_equal(system(cmd), 0);
    unlink(path);
    rmdir(sub);
    rmdir(dir);
    victim_free(&v);
}

/* ---- the optimizer's checkpoint holds the scheduler keys ----------------- */

static double one_fn(void *user, int64_t epoch, size_t group)
{
    (void)user, (void)epoch, (void)group;
    return 1.0;
}

static double lr_after_lambda(world *w, size_t g)
{
    jopt_sched *s;
    double lr;
    T_OK(w->ctx, jopt_sched_new_lambda(w->opt, one_fn, NULL, 0, &s));
    T_OK(w->ctx, jopt_option_get(w->opt, g, "lr", &lr));
    jopt_sched_free(s);
    return lr;
}

static void test_sched_resume_optimizer_keys(void **state)
{
    (void)state;
    const rcase c = {"keys", "sgd", "lr=0.1", "lr=0.05", NULL, 0};
    world a, b, k;
    world_new(&a, &c);
    world_new(&b, &c);
    world_new(&k, &c);
    jopt_sched *s;
    T_OK(a.ctx, jopt_sched_new(a.opt, "exponential", "gamma=0.5", &s));
    for (int t = 0; t < 3; t++)
        T_OK(a.ctx, jopt_sched_step(s));
    jopt_sched_free(s);
    size_t len, klen;
    unsigned char *buf = opt_bytes(&a, &len), *keyless;
    /* b has no scheduler keys: the load brings initial_lr (0.1, 0.05) and
     * the lr now (0.1 / 8); LambdaLR(1) starts from initial_lr */
    T_OK(b.ctx, jopt_state_load_mem(b.opt, buf, len));
    double lr;
    T_OK(b.ctx, jopt_option_get(b.opt, 1, "lr", &lr));
    assert_true(lr == 0.05 * 0.5 * 0.5 * 0.5);
    assert_true(lr_after_lambda(&b, 0) == 0.1);
    assert_true(lr_after_lambda(&b, 1) == 0.05);
    /* a checkpoint without keys takes them away, as torch's load replaces
     * the param groups: LambdaLR(1) then starts from the lr */
    T_OK(k.ctx, jopt_options_set(k.opt, 0, "lr=0.3"));
    keyless = opt_bytes(&k, &klen);
    T_OK(a.ctx, jopt_state_load_mem(a.opt, keyless, klen));
    assert_true(lr_after_lambda(&a, 0) == 0.3);
    free(buf);
    free(keyless);
    world_free(&a);
    world_free(&b);
    world_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sched_resume_same_bits),
        cmocka_unit_test(test_sched_resume_cases_move),
        cmocka_unit_test(test_sched_resume_truncated_refused),
        cmocka_unit_test(test_sched_resume_bit_flips_refused),
        cmocka_unit_test(test_sched_resume_resealed_refused),
        cmocka_unit_test(test_sched_resume_foreign_refused),
        cmocka_unit_test(test_sched_resume_bad_arguments),
        cmocka_unit_test(test_sched_resume_save_is_atomic),
        cmocka_unit_test(test_sched_resume_optimizer_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
