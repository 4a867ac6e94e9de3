/*
 * test_shard.c - an optimizer sharded across processes, without MPI: each
 * "process" is a thread with its own context, and the transport copies
 * between them behind a barrier (tests/mpi/ runs the same over MPI).
 *
 * The promise checked: N processes stepping with their own gradients give
 * every process the parameters, bit for bit, that one process gets when
 * it steps with the averaged gradients (the mean in double, in rank
 * order), for any N; each tensor's state lives on one process and equals
 * the single process's; a mismatch or a failure on one process fails the
 * call on every process with the same message and changes nothing.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define MAXR 4
#define STEPS 4

/* ---- the in-process transport ------------------------------------------- */

typedef struct world {
    int size;
    pthread_barrier_t bar;
    const void *send[MAXR];
    const size_t *scount[MAXR], *sdispl[MAXR];
    int fail_rank;   /* this rank's collective number fail_at fails */
    int fail_at;
    int calls[MAXR];
} world;

typedef struct proc {
    world *w;
    int rank;
    int released;
} proc;

static int t_allgatherv(void *user, const void *send, const size_t *counts,
                        void *recv)
{
    proc *p = user;
    world *w = p->w;
    int failing = p->rank == w->fail_rank && ++w->calls[p->rank] == w->fail_at;
    w->send[p->rank] = send;
    pthread_barrier_wait(&w->bar);
    size_t at = 0;
    for (int r = 0; r < w->size; r++) {
        memcpy((char *)recv + at, w->send[r], counts[r]);
        at += counts[r];
    }
    pthread_barrier_wait(&w->bar);
    return failing;
}

static int t_alltoallv(void *user, const void *send, const size_t *scounts,
                       const size_t *sdispls, void *recv, const size_t *rcounts,
                       const size_t *rdispls)
{
    proc *p = user;
    world *w = p->w;
    int failing = p->rank == w->fail_rank && ++w->calls[p->rank] == w->fail_at;
    w->send[p->rank] = send;
    w->scount[p->rank] = scounts;
    w->sdispl[p->rank] = sdispls;
    pthread_barrier_wait(&w->bar);
    for (int r = 0; r < w->size; r++) {
        if (w->scount[r][p->rank] != rcounts[r])
            failing = 1;
        else
            memcpy((char *)recv + rdispls[r],
                   (const char *)w->send[r] + w->sdispl[r][p->rank], rcounts[r]);
    }
    pthread_barrier_wait(&w->bar);
    return failing;
}

static void t_release(void *user) { ((proc *)user)->released++; }

/* a test may swap in an allgatherv that fails */
static int (*the_failing)(void *, const void *, const size_t *, void *);

/* 32 KiB of buffers: windows of 2048 to 1024 elements on 2 to 4
 * processes, so that a step takes many rounds and windows span tensors */
static jopt_comm comm_of(proc *p)
{
    return (jopt_comm){p->rank, p->w->size, p,
                       the_failing ? the_failing : t_allgatherv, t_alltoallv,
                       t_release, NULL, 32 << 10};
}

/* ---- runs of N processes ------------------------------------------------ */

typedef struct model {
    int ntensors;
    int64_t size[8];
    int group[8];          /* which of two groups */
    int ndim[8];
    int64_t shape[8][2];
    const char *spec, *defaults, *group1; /* group 1's own options */
    int absent_tensor, absent_step;       /* a gradient absent once */
    int change_lr_at;      /* jopt_option_set(lr) before that step, or -1 */
    int sched;             /* a cosine scheduler */
    int call_at;           /* jopt_optim_call("shrink") after that step */
} model;

typedef struct rank_run {
    const model *m;
    world *w;
    int rank;
    float *p[8], *g[8];
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_sched *sched;
    proc proc;
    char fail[512];       /* the first failed check */
    int rc_new;
    char msg[1024];
} rank_run;

static uint64_t grad_seed(int rank, int step, int t)
{
    return 1000003ull * (uint64_t)(rank + 1) + 7919ull * (uint64_t)step + (uint64_t)t;
}

static void fill_grads(const model *m, float *const *g, int rank, int step)
{
    for (int t = 0; t < m->ntensors; t++)
        t_fill(g[t], m->size[t], grad_seed(rank, step, t), 0.05);
}

static void init_params(const model *m, float *const *p)
{
    for (int t = 0; t < m->ntensors; t++)
        t_fill(p[t], m->size[t], 77 + (uint64_t)t, 0.0);
}

/* groups over the model's tensors: gparams[2][8] hold them */
static int make_groups(const model *m, float *const *p, float *const *g,
                       jopt_param gparams[2][8], jopt_group groups[2])
{
    int n[2] = {0, 0};
    for (int t = 0; t < m->ntensors; t++) {
        int k = m->group[t];
        gparams[k][n[k]++] = (jopt_param){p[t], g[t], m->size[t]};
    }
    groups[0] = (jopt_group){gparams[0], (size_t)n[0], NULL};
    groups[1] = (jopt_group){gparams[1], (size_t)n[1], m->group1};
    return n[1] ? 2 : 1;
}

/* tensor t's (group, index) */
static void place(const model *m, int t, size_t *g, size_t *i)
{
    *g = (size_t)m->group[t];
    *i = 0;
    for (int u = 0; u < t; u++)
        *i += m->group[u] == m->group[t];
}

static int set_shapes(const model *m, jopt_optim *opt)
{
    for (int t = 0; t < m->ntensors; t++) {
        if (m->ndim[t] < 2)
            continue;
        size_t g, i;
        place(m, t, &g, &i);
        int rc = jopt_set_shape(opt, g, i, m->ndim[t], m->shape[t]);
        if (rc)
            return rc;
    }
    return JOPT_OK;
}

/* the same calls around each step, for the reference and every rank */
static int before_step(const model *m, jopt_optim *opt, int step,
                       float *const *g, float **saved)
{
    if (step == m->change_lr_at) {
        int rc = jopt_option_set(opt, 0, "lr", 3e-3);
        if (rc)
            return rc;
    }
    for (int t = 0; t < m->ntensors; t++) {
        size_t gi, i;
        place(m, t, &gi, &i);
        int absent = t == m->absent_tensor && step == m->absent_step;
        int rc = jopt_set_grad(opt, gi, i, absent ? NULL : g[t]);
        if (rc)
            return rc;
        (void)saved;
    }
    return JOPT_OK;
}

static int after_step(const model *m, jopt_optim *opt, jopt_sched *s, int step)
{
    int rc = s ? jopt_sched_step(s) : JOPT_OK;
    if (rc == JOPT_OK && step == m->call_at)
        rc = jopt_optim_call(opt, "shrink");
    return rc;
}

/* The reference: one process, the averaged gradients (the mean over
 * ranks in double, in rank order, rounded once). */
typedef struct reference {
    float *p[8];
    jopt_ctx *ctx;
    jopt_optim *opt;
} reference;

static void reference_run(const model *m, int size, reference *ref)
{
    float *g[8], *gr[8];
    for (int t = 0; t < m->ntensors; t++) {
        ref->p[t] = t_alloc(m->size[t]);
        g[t] = t_alloc(m->size[t]);
        gr[t] = t_alloc(m->size[t]);
    }
    init_params(m, ref->p);
    T_OK(NULL, jopt_ctx_new(&ref->ctx));
    jopt_ctx_set_threads(ref->ctx, 1);
    T_OK(ref->ctx, jopt_ctx_set_spec_path(ref->ctx, JOPT_SOURCE_DIR "/specs:"
                                          JOPT_SOURCE_DIR "/tests/specs"));
    jopt_param gp[2][8];
    jopt_group groups[2];
    int ng = make_groups(m, ref->p, g, gp, groups);
    T_OK(ref->ctx, jopt_optim_new(ref->ctx, m->spec, groups, (size_t)ng,
                                  m->defaults, &ref->opt));
    T_OK(ref->ctx, set_shapes(m, ref->opt));
    jopt_sched *s = NULL;
    if (m->sched)
        T_OK(ref->ctx, jopt_sched_new(ref->opt, "cosine", "T_max=5", &s));
    for (int step = 0; step < STEPS; step++) {
        for (int t = 0; t < m->ntensors; t++) {
            double *acc = calloc((size_t)m->size[t] + 1, sizeof *acc);
            for (int r = 0; r < size; r++) {
                t_fill(gr[t], m->size[t], grad_seed(r, step, t), 0.05);
                for (int64_t e = 0; e < m->size[t]; e++)
                    acc[e] = r == 0 ? (double)gr[t][e] : acc[e] + (double)gr[t][e];
            }
            for (int64_t e = 0; e < m->size[t]; e++)
                g[t][e] = (float)(acc[e] / (double)size);
            free(acc);
        }
        T_OK(ref->ctx, before_step(m, ref->opt, step, g, NULL));
        T_OK(ref->ctx, jopt_step(ref->opt, NULL, NULL, NULL));
        T_OK(ref->ctx, after_step(m, ref->opt, s, step));
    }
    jopt_sched_free(s);
    for (int t = 0; t < m->ntensors; t++) {
        free(g[t]);
        free(gr[t]);
    }
}

static void reference_free(const model *m, reference *ref)
{
    jopt_optim_free(ref->opt);
    jopt_ctx_free(ref->ctx);
    for (int t = 0; t < m->ntensors; t++)
        free(ref->p[t]);
}

#define CHECK(r, cond, ...)                                                    \
    do {                                                                       \
        if (!(cond) && !(r)->fail[0])                                          \
            snprintf((r)->fail, sizeof (r)->fail, __VA_ARGS__);               \
    } while (0)

static int rank_build(rank_run *r, const char *spec, const char *defaults)
{
    const model *m = r->m;
    for (int t = 0; t < m->ntensors; t++) {
        r->p[t] = t_alloc(m->size[t]);
        r->g[t] = t_alloc(m->size[t]);
    }
    init_params(m, r->p);
    if (jopt_ctx_new(&r->ctx))
        return JOPT_ENOMEM;
    jopt_ctx_set_threads(r->ctx, 1);
    jopt_ctx_set_spec_path(r->ctx, JOPT_SOURCE_DIR "/specs:" JOPT_SOURCE_DIR
                                   "/tests/specs");
    r->proc = (proc){r->w, r->rank, 0};
    jopt_comm comm = comm_of(&r->proc);
    jopt_param gp[2][8];
    jopt_group groups[2];
    int ng = make_groups(m, r->p, r->g, gp, groups);
    int rc = jopt_optim_new_sharded(r->ctx, spec ? spec : m->spec, groups,
                                    (size_t)ng, defaults ? defaults : m->defaults,
                                    &comm, &r->opt);
    snprintf(r->msg, sizeof r->msg, "%s", rc ? jopt_errmsg(r->ctx) : "");
    r->rc_new = rc;
    if (rc == JOPT_OK && (rc = set_shapes(m, r->opt)))
        CHECK(r, 0, "set_shapes: %s", jopt_errmsg(r->ctx));
    return rc;
}

static void rank_free(rank_run *r)
{
    jopt_sched_free(r->sched);
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    for (int t = 0; t < r->m->ntensors; t++) {
        free(r->p[t]);
        free(r->g[t]);
    }
}

/* runs fn on `size` threads, one per rank */
static void run_ranks(world *w, rank_run *runs, void *(*fn)(void *))
{
    pthread_t th[MAXR];
    pthread_barrier_init(&w->bar, NULL, (unsigned)w->size);
    for (int r = 0; r < w->size; r++)
        pthread_create(&th[r], NULL, fn, &runs[r]);
    for (int r = 0; r < w->size; r++)
        pthread_join(th[r], NULL);
    pthread_barrier_destroy(&w->bar);
    for (int r = 0; r < w->size; r++)
        if (runs[r].fail[0])
            fail_msg("rank %d of %d: %s", r, w->size, runs[r].fail);
}

static void *train(void *arg)
{
    rank_run *r = arg;
    const model *m = r->m;
    if (rank_build(r, NULL, NULL)) {
        CHECK(r, 0, "jopt_optim_new_sharded: %.400s", r->msg);
        return NULL;
    }
    if (m->sched && jopt_sched_new(r->opt, "cosine", "T_max=5", &r->sched))
        CHECK(r, 0, "jopt_sched_new: %s", jopt_errmsg(r->ctx));
    for (int step = 0; step < STEPS && !r->fail[0]; step++) {
        fill_grads(m, r->g, r->rank, step);
        int rc = before_step(m, r->opt, step, r->g, NULL);
        if (rc == JOPT_OK)
            rc = jopt_step(r->opt, NULL, NULL, NULL);
        if (rc == JOPT_OK)
            rc = after_step(m, r->opt, r->sched, step);
        CHECK(r, rc == JOPT_OK, "step %d: %s", step, jopt_errmsg(r->ctx));
    }
    return NULL;
}

/* every rank's parameters and its tensors' state against the reference */
static void compare(const model *m, rank_run *runs, int size, const reference *ref)
{
    for (int r = 0; r < size; r++) {
        rank_run *run = &runs[r];
        jopt_shard_info info;
        T_OK(run->ctx, jopt_shard_info_get(run->opt, &info));
        assert_int_equal(info.rank, r);
        assert_int_equal(info.size, size);
        for (int t = 0; t < m->ntensors; t++) {
            int64_t at = 0;
            uint32_t ulp = t_max_ulp(run->p[t], ref->p[t], m->size[t], &at);
            if (ulp)
                fail_msg("%s on %d: rank %d tensor %d element %lld: %u ulp from "
                         "one process", m->spec, size, r, t, (long long)at, ulp);
            size_t g, i;
            place(m, t, &g, &i);
            int owner = jopt_shard_owner(run->opt, g, i);
            assert_true(owner >= 0 && owner < size);
            const char *names[] = {"exp_avg", "exp_avg_sq", "momentum_buffer",
                                   "max_exp_avg_sq", "row_var", "col_var", "variance"};
            for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
                const float *mine, *want;
                int64_t sm = -1, sw = -1, n = 0;
                if (jopt_state_get(run->opt, g, i, names[k], &mine, &sm))
                    continue; /* the spec has no such state */
                T_OK(ref->ctx, jopt_state_get(ref->opt, g, i, names[k], &want, &sw));
                assert_int_equal(sm, sw); /* step counts on every process */
                if (owner != r) {
                    assert_null(mine);
                    continue;
                }
                assert_true((mine == NULL) == (want == NULL));
                if (!mine)
                    continue;
                T_OK(ref->ctx, jopt_state_numel(ref->opt, g, i, names[k], &n));
                if (t_max_ulp(mine, want, n, &at))
                    fail_msg("%s on %d: rank %d tensor %d state %s differs at %lld",
                             m->spec, size, r, t, names[k], (long long)at);
            }
        }
        double gn, want;
        if (jopt_group_state(run->opt, 0, "total_norm", &gn) == JOPT_OK) {
            T_OK(ref->ctx, jopt_group_state(ref->opt, 0, "total_norm", &want));
            assert_memory_equal(&gn, &want, sizeof gn);
        }
    }
}

static void check_model(const model *m)
{
    for (int size = 1; size <= MAXR; size++) {
        reference ref;
        reference_run(m, size, &ref);
        world w = {.size = size, .fail_rank = -1};
        rank_run runs[MAXR];
        memset(runs, 0, sizeof runs);
        for (int r = 0; r < size; r++)
            runs[r] = (rank_run){.m = m, .w = &w, .rank = r};
        run_ranks(&w, runs, train);
        compare(m, runs, size, &ref);
        int64_t held = 0;
        for (int r = 0; r < size; r++) {
            jopt_shard_info info;
            T_OK(runs[r].ctx, jopt_shard_info_get(runs[r].opt, &info));
            held += info.numel;
            if (size > 1)
                assert_true(info.bytes_sent > 0);
            rank_free(&runs[r]);
            assert_int_equal(runs[r].proc.released, 1);
        }
        int64_t all = 0;
        for (int t = 0; t < m->ntensors; t++)
            all += m->size[t];
        assert_int_equal(held, all); /* every tensor held once */
        reference_free(m, &ref);
    }
}

/* tensors of odd sizes in two groups, two of them more than the 65,536
 * elements of a task */
static model mlp(const char *spec, const char *defaults, const char *group1)
{
    model m = {.ntensors = 8,
               .size = {100003, 17, 13077, 0, 70001, 1, 4099, 6536},
               .group = {0, 0, 0, 0, 1, 1, 1, 1},
               .spec = spec, .defaults = defaults, .group1 = group1,
               .absent_tensor = 2, .absent_step = 1, .change_lr_at = 2,
               .sched = 0, .call_at = -1};
    for (int t = 0; t < 8; t++)
        m.ndim[t] = 1;
    return m;
}

static void test_shard_sgd_matches_one_process(void **state)
{
    (void)state;
    model m = mlp("sgd", "lr=0.01 momentum=0.9 nesterov=true", "weight_decay=0.01");
    check_model(&m);
}

static void test_shard_adam_matches_one_process(void **state)
{
    (void)state;
    model m = mlp("adam", "lr=1e-3 amsgrad=true", "weight_decay=0.1");
    m.sched = 1;
    check_model(&m);
}

static void test_shard_lamb_matches_one_process(void **state)
{
    (void)state;
    model m = mlp("lamb", "lr=0.01 weight_decay=0.01", NULL);
    check_model(&m);
}

static void test_shard_group_sums_match_one_process(void **state)
{
    (void)state;
    model m = mlp("clipped_sgd", "lr=0.05 max_norm=50", "max_norm=200");
    m.call_at = 2; /* a named kernel: parameters change, are gathered */
    check_model(&m);
}

static void test_shard_adafactor_matches_one_process(void **state)
{
    (void)state;
    model m = {.ntensors = 5, .size = {96 * 1303, 1303, 64 * 3 * 49, 10, 600},
               .group = {0, 0, 0, 1, 1}, .ndim = {2, 1, 2, 1, 2},
               .shape = {{96, 1303}, {1303, 0}, {192, 49}, {10, 0}, {20, 30}},
               .spec = "adafactor", .defaults = "lr=0.01", .group1 = "weight_decay=0.1",
               .absent_tensor = 1, .absent_step = 2, .change_lr_at = 1,
               .sched = 0, .call_at = -1};
    check_model(&m);
}

/* ---- disagreement and failures: the same error everywhere ------------------ */

typedef struct scenario {
    model m;
    const char *spec[MAXR], *defaults[MAXR]; /* per rank, NULL: the model's */
    int64_t size1;       /* rank 1's size of tensor 0, if not 0 */
    void (*after)(rank_run *r); /* what each rank does once built */
} scenario;

static const scenario *the_scenario;

static void *build_only(void *arg)
{
    rank_run *r = arg;
    const scenario *sc = the_scenario;
    if (r->rank == 1 && sc->size1) { /* rank 1 sees another model */
        model *m = malloc(sizeof *m);
        *m = *r->m;
        m->size[0] = sc->size1;
        r->m = m;
    }
    rank_build(r, sc->spec[r->rank], sc->defaults[r->rank]);
    if (r->rc_new == JOPT_OK && sc->after)
        sc->after(r);
    return NULL;
}

/* every rank gets `status` and the same message, containing `want` */
static void expect_all(rank_run *runs, int size, int status, const char *want)
{
    for (int r = 0; r < size; r++) {
        if (runs[r].rc_new != status)
            fail_msg("rank %d: status %d, not %d: %s", r, runs[r].rc_new, status,
                     runs[r].msg);
        if (!strstr(runs[r].msg, want))
            fail_msg("rank %d: '%s' does not say '%s'", r, runs[r].msg, want);
        assert_string_equal(runs[r].msg, runs[0].msg);
    }
}

static void run_scenario(const scenario *sc, int size, int status, const char *want)
{
    world w = {.size = size, .fail_rank = -1};
    rank_run runs[MAXR];
    memset(runs, 0, sizeof runs);
    for (int r = 0; r < size; r++)
        runs[r] = (rank_run){.m = &sc->m, .w = &w, .rank = r};
    the_scenario = sc;
    run_ranks(&w, runs, build_only);
    expect_all(runs, size, status, want);
    for (int r = 0; r < size; r++) {
        const model *m = runs[r].m;
        rank_free(&runs[r]);
        assert_int_equal(runs[r].proc.released, 1);
        if (m != &sc->m)
            free((void *)m);
    }
}

static void test_shard_construction_mismatch(void **state)
{
    (void)state;
    scenario sc = {.m = mlp("sgd", "lr=0.01", NULL)};
    sc.size1 = 100001; /* a mismatched layout */
    run_scenario(&sc, 2, JOPT_EINVAL, "jopt_optim_new_sharded: rank 1's parameters "
                 "are not rank 0's: 2 groups, 8 tensors, 193732 elements against "
                 "2, 8, 193734");
    sc.size1 = 0;
    sc.spec[2] = "adam";
    run_scenario(&sc, 3, JOPT_EINVAL, "rank 2 built its optimizer from another spec");
    sc.spec[2] = NULL;
    sc.defaults[1] = "lr=0.02";
    run_scenario(&sc, 2, JOPT_EINVAL, "group 0's option 'lr' is 0.02 on rank 1 "
                 "and 0.01 on rank 0");
    sc.defaults[1] = "lr=-1"; /* fails on rank 1 alone, before any exchange */
    run_scenario(&sc, 4, JOPT_EINVAL, "jopt_optim_new_sharded: rank 1 failed: "
                 "jopt_optim_new: group 0: Invalid learning rate: -1");
    sc.defaults[1] = NULL;
    sc.spec[0] = "lbfgs";
    sc.spec[1] = "lbfgs";
    run_scenario(&sc, 2, JOPT_EINVAL, "rank 0 failed: jopt_optim_new: LBFGS doesn't "
                 "support per-parameter options");
    sc.m = mlp("lbfgs", NULL, NULL);
    sc.m.group[4] = sc.m.group[5] = sc.m.group[6] = sc.m.group[7] = 0;
    run_scenario(&sc, 2, JOPT_EINVAL, "is a closure optimizer (method 'lbfgs')");
    /* the exchange moves float32: 16-bit parameters are refused */
    scenario bf = {.m = mlp("adam", "lr=0.01 dtype=bfloat16", NULL)};
    run_scenario(&bf, 2, JOPT_EINVAL, "group 0 parameter 0 is not float32 (dtype, "
                 "grad_dtype): a sharded optimizer takes float32 parameters and "
                 "gradients only");
}

/* a process's whole state, as a checkpoint in memory */
static unsigned char *snapshot(rank_run *r, size_t *len)
{
    if (jopt_state_size(r->opt, len))
        return NULL;
    unsigned char *buf = malloc(*len);
    if (buf && jopt_state_save_mem(r->opt, buf, *len, len)) {
        free(buf);
        return NULL;
    }
    return buf;
}

static int closure_fails(void *user, double *loss)
{
    (void)user;
    *loss = 0;
    return 7;
}

/* each call: a step (or call) that must fail on every rank with the same
 * message, and change nothing */
static void expect_step_fails(rank_run *r, int status, const char *want,
                              int (*call)(rank_run *))
{
    size_t len0, len1;
    unsigned char *before = snapshot(r, &len0);
    float *p0 = t_alloc(r->m->size[0]);
    memcpy(p0, r->p[0], (size_t)r->m->size[0] * sizeof(float));
    int rc = call(r);
    CHECK(r, rc == status, "status %d, not %d: %s", rc, status, jopt_errmsg(r->ctx));
    CHECK(r, strstr(jopt_errmsg(r->ctx), want), "'%.300s' does not say '%s'",
          jopt_errmsg(r->ctx), want);
    snprintf(r->msg, sizeof r->msg, "%s", jopt_errmsg(r->ctx));
    unsigned char *after = snapshot(r, &len1);
    CHECK(r, before && after && len0 == len1 && !memcmp(before, after, len0),
          "the state changed (%s)", want);
    CHECK(r, !memcmp(p0, r->p[0], (size_t)r->m->size[0] * sizeof(float)),
          "the parameters changed (%s)", want);
    free(before);
    free(after);
    free(p0);
}

static int do_step(rank_run *r) { return jopt_step(r->opt, NULL, NULL, NULL); }
static int do_call(rank_run *r) { return jopt_optim_call(r->opt, "shrink"); }
static int do_step_or_call(rank_run *r)
{
    return r->rank == 1 ? do_call(r) : do_step(r);
}
static int do_bad_call(rank_run *r)
{
    return jopt_optim_call(r->opt, r->rank == 2 ? "shrunk" : "shrink");
}
static int do_closure_step(rank_run *r)
{
    double loss;
    return jopt_step(r->opt, r->rank == 0 ? closure_fails : NULL, NULL, &loss);
}

static void disagree(rank_run *r)
{
    fill_grads(r->m, r->g, r->rank, 0);
    if (r->rank == 1) { /* a shape on one process only (before any state) */
        int64_t shape[2] = {1, 70001};
        jopt_set_shape(r->opt, 1, 0, 2, shape);
    }
    expect_step_fails(r, JOPT_EINVAL, "group 1 parameter 0 has another shape on "
                      "rank 1", do_step);
    int64_t flat = 70001;
    CHECK(r, jopt_set_shape(r->opt, 1, 0, 1, &flat) == JOPT_OK, "set_shape: %s",
          jopt_errmsg(r->ctx));
    CHECK(r, do_step(r) == JOPT_OK, "first step: %s", jopt_errmsg(r->ctx));
    if (r->rank == 1) /* a gradient absent on one process only */
        jopt_set_grad(r->opt, 1, 2, NULL);
    expect_step_fails(r, JOPT_EINVAL, "jopt_step: group 1 parameter 2 has a "
                      "gradient on rank 0 and none on rank 1", do_step);
    jopt_set_grad(r->opt, 1, 2, r->g[6]);
    if (r->rank == 2) /* an option changed on one process only */
        jopt_option_set(r->opt, 1, "lr", 0.5);
    expect_step_fails(r, JOPT_EINVAL, "group 1's option 'lr' is 0.5 on rank 2",
                      do_step);
    jopt_option_set(r->opt, 1, "lr", 0.05);
    expect_step_fails(r, JOPT_ECLOSURE, "jopt_step: rank 0 failed: jopt_step: the "
                      "closure returned 7", do_closure_step);
    expect_step_fails(r, JOPT_EINVAL, "rank 1 called jopt_optim_call where rank 0 "
                      "called jopt_step", do_step_or_call);
    expect_step_fails(r, JOPT_EINVAL, "rank 2 failed: jopt_optim_call: spec "
                      "'clipped_sgd' has no kernel 'shrunk'", do_bad_call);
    CHECK(r, jopt_add_param_group(r->opt, &(jopt_group){NULL, 0, NULL}) == JOPT_EINVAL,
          "add_param_group");
    r->rc_new = JOPT_EINVAL;
}

static void test_shard_step_disagreement(void **state)
{
    (void)state;
    scenario sc = {.m = mlp("clipped_sgd", "lr=0.05", "lr=0.05"), .after = disagree};
    world w = {.size = 3, .fail_rank = -1};
    rank_run runs[MAXR];
    memset(runs, 0, sizeof runs);
    for (int r = 0; r < 3; r++)
        runs[r] = (rank_run){.m = &sc.m, .w = &w, .rank = r};
    the_scenario = &sc;
    run_ranks(&w, runs, build_only);
    for (int r = 0; r < 3; r++)
        rank_free(&runs[r]);
}
/* ---- checkpoints: a set of shards round trips; wrong sets are refused ------- */

typedef struct ckpt_test {
    int phase;
    char dir[64];
    float *saved[MAXR][8];    /* each rank's parameters at the save */
    float *final[MAXR][8];    /* and after the steps that follow */
    unsigned char *state[MAXR]; /* its state at the end, per tensor held */
} ckpt_test;

static ckpt_test ck;

static void path_of(char *buf, size_t cap, int rank, const char *tag)
{
    snprintf(buf, cap, "%s/shard-%s-%d.ckpt", ck.dir, tag, rank);
}

static int train_steps(rank_run *r, int from, int to)
{
    for (int step = from; step < to; step++) {
        fill_grads(r->m, r->g, r->rank, step);
        int rc = before_step(r->m, r->opt, step, r->g, NULL);
        if (rc == JOPT_OK)
            rc = jopt_step(r->opt, NULL, NULL, NULL);
        if (rc)
            return rc;
    }
    return JOPT_OK;
}

/* every held tensor's states, in order */
static size_t held_state(rank_run *r, float *out)
{
    const char *names[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    size_t k = 0;
    for (int t = 0; t < r->m->ntensors; t++) {
        size_t g, i;
        place(r->m, t, &g, &i);
        for (int s = 0; s < 3; s++) {
            const float *d;
            int64_t n = 0;
            if (jopt_state_get(r->opt, g, i, names[s], &d, NULL) || !d)
                continue;
            jopt_state_numel(r->opt, g, i, names[s], &n);
            if (out)
                memcpy(out + k, d, (size_t)n * sizeof(float));
            k += (size_t)n;
        }
    }
    return k;
}

static void *ckpt_rank(void *arg)
{
    rank_run *r = arg;
    const model *m = r->m;
    char path[128], other[128];
    if (rank_build(r, NULL, NULL)) {
        CHECK(r, 0, "build: %.300s", r->msg);
        return NULL;
    }
    int rc = JOPT_OK;
    switch (ck.phase) {
    case 0: /* train, save, train on */
        path_of(path, sizeof path, r->rank, "a");
        rc = train_steps(r, 0, 2);
        if (rc == JOPT_OK)
            rc = jopt_state_save(r->opt, path);
        for (int t = 0; t < m->ntensors; t++) {
            ck.saved[r->rank][t] = t_alloc(m->size[t]);
            memcpy(ck.saved[r->rank][t], r->p[t], (size_t)m->size[t] * sizeof(float));
        }
        if (rc == JOPT_OK) /* a second save, one step later: another set */
            rc = train_steps(r, 2, 3);
        path_of(path, sizeof path, r->rank, "b");
        if (rc == JOPT_OK)
            rc = jopt_state_save(r->opt, path);
        if (rc == JOPT_OK)
            rc = train_steps(r, 3, 5);
        CHECK(r, rc == JOPT_OK, "phase 0: %.300s", jopt_errmsg(r->ctx));
        for (int t = 0; t < m->ntensors; t++) {
            ck.final[r->rank][t] = t_alloc(m->size[t]);
            memcpy(ck.final[r->rank][t], r->p[t], (size_t)m->size[t] * sizeof(float));
        }
        ck.state[r->rank] = malloc(held_state(r, NULL) * sizeof(float) + 1);
        held_state(r, (float *)(void *)ck.state[r->rank]);
        break;
    case 1: /* the set loads back: the same run from there */
        for (int t = 0; t < m->ntensors; t++)
            memcpy(r->p[t], ck.saved[r->rank][t], (size_t)m->size[t] * sizeof(float));
        path_of(path, sizeof path, r->rank, "a");
        rc = jopt_state_load(r->opt, path);
        if (rc == JOPT_OK)
            rc = train_steps(r, 2, 5);
        CHECK(r, rc == JOPT_OK, "phase 1: %.300s", jopt_errmsg(r->ctx));
        for (int t = 0; t < m->ntensors; t++)
            CHECK(r, !memcmp(r->p[t], ck.final[r->rank][t],
                             (size_t)m->size[t] * sizeof(float)),
                  "tensor %d differs after the round trip", t);
        size_t n = held_state(r, NULL);
        float *mine = malloc(n * sizeof(float) + 1);
        held_state(r, mine);
        CHECK(r, !memcmp(mine, ck.state[r->rank], n * sizeof(float)),
              "state differs after the round trip");
        free(mine);
        break;
    case 2: /* another rank's file */
        path_of(path, sizeof path, (r->rank + 1) % r->w->size, "a");
        rc = jopt_state_load(r->opt, path);
        break;
    case 3: /* files of two saves */
        path_of(path, sizeof path, r->rank, r->rank == 1 ? "b" : "a");
        rc = jopt_state_load(r->opt, path);
        break;
    case 4: /* onto another number of processes (a missing file, past them) */
        path_of(path, sizeof path, r->rank, "a");
        rc = jopt_state_load(r->opt, path);
        break;
    case 5: /* a corrupt file on one process */
        path_of(path, sizeof path, r->rank, "a");
        if (r->rank == 1) {
            path_of(other, sizeof other, r->rank, "bad");
            FILE *f = fopen(other, "wb");
            fputs("JOPTCKPT not a checkpoint", f);
            fclose(f);
            rc = jopt_state_load(r->opt, other);
        } else {
            rc = jopt_state_load(r->opt, path);
        }
        break;
    }
    if (ck.phase >= 2) {
        snprintf(r->msg, sizeof r->msg, "%s", jopt_errmsg(r->ctx));
        r->rc_new = rc;
    }
    return NULL;
}

static void ckpt_world(const model *m, int size, int phase)
{
    world w = {.size = size, .fail_rank = -1};
    rank_run runs[MAXR];
    memset(runs, 0, sizeof runs);
    for (int r = 0; r < size; r++)
        runs[r] = (rank_run){.m = m, .w = &w, .rank = r};
    ck.phase = phase;
    run_ranks(&w, runs, ckpt_rank);
    static const char *const want[] = {
        NULL, NULL, "each process loads the file its own rank saved",
        "rank 1's checkpoint is not from the same save as rank 0's",
        "a set of shards loads onto as many processes as saved it",
        "rank 1 failed: jopt_state_load: checksum mismatch"};
    if (want[phase])
        expect_all(runs, size, JOPT_EINVAL, want[phase]);
    for (int r = 0; r < size; r++)
        rank_free(&runs[r]);
}

static void test_shard_checkpoint_round_trip(void **state)
{
    (void)state;
    model m = mlp("adam", "lr=1e-2 amsgrad=true", "weight_decay=0.1");
    m.change_lr_at = 3;
    snprintf(ck.dir, sizeof ck.dir, "/tmp/jopt_test_shard.XXXXXX");
    assert_non_null(mkdtemp(ck.dir));
    for (int size = 2; size <= 3; size++) {
        ckpt_world(&m, size, 0);
        ckpt_world(&m, size, 1);
        ckpt_world(&m, size, 2);
        ckpt_world(&m, size, 3);
        ckpt_world(&m, size == 2 ? 3 : 2, 4);
        ckpt_world(&m, size, 5);
        for (int r = 0; r < size; r++) {
            for (int t = 0; t < m.ntensors; t++) {
                free(ck.saved[r][t]);
                free(ck.final[r][t]);
            }
            free(ck.state[r]);
        }
        memset(ck.saved, 0, sizeof ck.saved);
        memset(ck.final, 0, sizeof ck.final);
        memset(ck.state, 0, sizeof ck.state);
    }
    /* a shard's file does not load into an optimizer that is not sharded */
    char path[128];
    path_of(path, sizeof path, 1, "a");
    reference ref;
    reference_run(&m, 1, &ref);
    assert_int_equal(jopt_state_load(ref.opt, path), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ref.ctx), "the checkpoint is rank 1's shard "
                           "of an optimizer sharded over 3 processes"));
    reference_free(&m, &ref);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", ck.dir);
    assert_int_equal(system(cmd), 0);
}

/* An unsharded checkpoint loads into a sharded optimizer (each process
 * keeps its tensors' state), and the run goes on as the unsharded one. */
typedef struct full_test {
    char path[96];
    const reference *ref;
} full_test;

static full_test full;

static void *full_rank(void *arg)
{
    rank_run *r = arg;
    const model *m = r->m;
    if (rank_build(r, NULL, NULL)) {
        CHECK(r, 0, "build: %.300s", r->msg);
        return NULL;
    }
    for (int t = 0; t < m->ntensors; t++) /* the parameters saved with it */
        memcpy(r->p[t], full.ref->p[t], (size_t)m->size[t] * sizeof(float));
    int rc = jopt_state_load(r->opt, full.path);
    CHECK(r, rc == JOPT_OK, "load: %.300s", jopt_errmsg(r->ctx));
    r->rc_new = rc;
    return NULL;
}

static void test_shard_loads_unsharded_checkpoint(void **state)
{
    (void)state;
    model m = mlp("adam", "lr=1e-2", NULL);
    reference ref;
    reference_run(&m, 2, &ref); /* STEPS steps, averaged over 2 */
    snprintf(full.path, sizeof full.path, "/tmp/jopt_test_shard_full.%d", (int)getpid());
    T_OK(ref.ctx, jopt_state_save(ref.opt, full.path));
    full.ref = &ref;
    world w = {.size = 2, .fail_rank = -1};
    rank_run runs[MAXR];
    memset(runs, 0, sizeof runs);
    for (int r = 0; r < 2; r++)
        runs[r] = (rank_run){.m = &m, .w = &w, .rank = r};
    run_ranks(&w, runs, full_rank);
    compare(&m, runs, 2, &ref); /* the state of each tensor, where it is held */
    for (int r = 0; r < 2; r++)
        rank_free(&runs[r]);
    remove(full.path);
    reference_free(&m, &ref);
}

/* a transport that fails: JOPT_ECOMM, on every process */
static void *fail_rank(void *arg)
{
    rank_run *r = arg;
    if (rank_build(r, NULL, NULL)) {
        CHECK(r, 0, "build: %.300s", r->msg);
        return NULL;
    }
    fill_grads(r->m, r->g, r->rank, 0);
    pthread_barrier_wait(&r->w->bar); /* every rank built */
    if (r->rank == 0)
        r->w->fail_rank = -2; /* from now on, the 2nd allgatherv fails */
    pthread_barrier_wait(&r->w->bar);
    r->rc_new = jopt_step(r->opt, NULL, NULL, NULL);
    snprintf(r->msg, sizeof r->msg, "%s", jopt_errmsg(r->ctx));
    return NULL;
}

static int failing_allgatherv(void *user, const void *send, const size_t *counts,
                              void *recv)
{
    proc *p = user;
    int rc = t_allgatherv(user, send, counts, recv);
    return rc || (p->w->fail_rank == -2 && ++p->w->calls[p->rank] == 2);
}

static void test_shard_transport_failure(void **state)
{
    (void)state;
    model m = mlp("clipped_sgd", "lr=0.01", NULL);
    world w = {.size = 2, .fail_rank = -1};
    rank_run runs[MAXR];
    memset(runs, 0, sizeof runs);
    for (int r = 0; r < 2; r++)
        runs[r] = (rank_run){.m = &m, .w = &w, .rank = r};
    /* the vote, then the gradients, then the group sums' exchange fails */
    the_failing = failing_allgatherv;
    run_ranks(&w, runs, fail_rank);
    the_failing = NULL;
    expect_all(runs, 2, JOPT_ECOMM, "jopt_step: the transport failed "
               "(allgatherv of the group reductions)");
    for (int r = 0; r < 2; r++)
        rank_free(&runs[r]);
}
/* two tensors on up to four processes: some hold nothing, and still take
 * part in every exchange (group sums, group state, a named kernel) */
static void test_shard_idle_processes(void **state)
{
    (void)state;
    model m = {.ntensors = 3, .size = {5000, 0, 300}, .group = {0, 0, 0},
               .ndim = {1, 1, 1}, .spec = "clipped_sgd", .defaults = "lr=0.1 max_norm=2",
               .absent_tensor = 2, .absent_step = 1, .change_lr_at = 2,
               .sched = 1, .call_at = 1};
    check_model(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_sgd_matches_one_process),
        cmocka_unit_test(test_shard_adam_matches_one_process),
        cmocka_unit_test(test_shard_lamb_matches_one_process),
        cmocka_unit_test(test_shard_group_sums_match_one_process),
        cmocka_unit_test(test_shard_adafactor_matches_one_process),
        cmocka_unit_test(test_shard_idle_processes),
        cmocka_unit_test(test_shard_construction_mismatch),
        cmocka_unit_test(test_shard_step_disagreement),
        cmocka_unit_test(test_shard_checkpoint_round_trip),
        cmocka_unit_test(test_shard_loads_unsharded_checkpoint),
        cmocka_unit_test(test_shard_transport_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
