/*
 * test_oom.c - every allocation failure is JOPT_ENOMEM with nothing
 * changed and nothing leaked (issue 16, item 9; SQLite's test_malloc.c is
 * the model).
 *
 * A context made with jopt_ctx_new_ex takes a counting allocator that fails
 * its N-th allocation (a new block or a growing one).  Each operation runs
 * for N = 1, 2, ... until it makes fewer than N allocations, in two modes:
 * the N-th allocation alone fails ("once"; Lua retries after a collection,
 * so the operation may then succeed), or every one from the N-th on
 * ("persist").  After a failure:
 *   - the call returned JOPT_ENOMEM with a message, and handed out nothing;
 *   - the optimizer's checkpoint (options, state, step counts) and its
 *     parameters are byte for byte what they were before the call;
 *   - the optimizer still works: the same call without failures gives the
 *     numbers of a context that never failed;
 *   - once everything is freed, every block has been given back, with the
 *     sizes it was last given (the allocator checks lua_Alloc's osize).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

/* ---- the failing allocator ---------------------------------------------- */

typedef struct failer {
    long count;      /* new or growing blocks asked for */
    long fail_at;    /* the first to fail; 0: none */
    int persist;     /* every one from fail_at on fails */
    long failures;
    long blocks;     /* live */
    long long bytes; /* live, as the osizes given back say */
    int bad_osize;   /* a free or resize named a size never given */
} failer;

static void *fail_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    failer *f = ud;
    if (ptr && osize == 0)
        f->bad_osize = 1;
    if (nsize == 0) {
        if (ptr) {
            f->blocks--;
            f->bytes -= (long long)osize;
            free(ptr);
        }
        return NULL;
    }
    if (!ptr || nsize > osize) {
        f->count++;
        if (f->fail_at && (f->count == f->fail_at ||
                           (f->persist && f->count > f->fail_at))) {
            f->failures++;
            return NULL;
        }
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    if (!ptr) {
        f->blocks++;
        f->bytes += (long long)nsize;
    } else {
        f->bytes += (long long)nsize - (long long)osize;
    }
    return p;
}

/* from now on, the n-th allocation fails */
static void arm(failer *f, long n, int persist)
{
    f->fail_at = f->count + n;
    f->persist = persist;
    f->failures = 0;
}

static void disarm(failer *f)
{
    f->fail_at = 0;
}

static void check_nothing_live(const failer *f, const char *what, long n)
{
    if (f->blocks || f->bytes || f->bad_osize)
        fail_msg("%s, allocation %ld failing: %ld blocks, %lld bytes left%s",
                 what, n, f->blocks, f->bytes,
                 f->bad_osize ? "; a block came back with osize 0" : "");
}

/* ---- the problem: two groups of Adam, or L-BFGS on a quadratic --------- */

#define NA 37
#define NB 300

typedef struct problem {
    float *p[2], *g[2], *p0[2];
    int64_t n[2];
    int closure; /* L-BFGS: steps call quadratic() */
} problem;

static void problem_init(problem *pr)
{
    pr->n[0] = NA;
    pr->n[1] = NB;
    for (int i = 0; i < 2; i++) {
        pr->p[i] = t_alloc(pr->n[i]);
        pr->g[i] = t_alloc(pr->n[i]);
        pr->p0[i] = t_alloc(pr->n[i]);
        t_fill(pr->p0[i], pr->n[i], 11 + (uint64_t)i, 0);
        t_fill(pr->g[i], pr->n[i], 21 + (uint64_t)i, 0.1);
    }
}

static void problem_reset(problem *pr)
{
    for (int i = 0; i < 2; i++)
        memcpy(pr->p[i], pr->p0[i], (size_t)pr->n[i] * sizeof(float));
}

static void problem_free(problem *pr)
{
    for (int i = 0; i < 2; i++) {
        free(pr->p[i]);
        free(pr->g[i]);
        free(pr->p0[i]);
    }
}

/* f(x) = sum (i+1)/n (x_i - 1/2)^2 over both tensors, for L-BFGS */
static int quadratic(void *user, double *loss)
{
    problem *pr = user;
    double f = 0;
    for (int t = 0; t < 2; t++)
        for (int64_t i = 0; i < pr->n[t]; i++) {
            double a = (double)(i + 1) / (double)pr->n[t], d = pr->p[t][i] - 0.5;
            f += a * d * d;
            pr->g[t][i] = (float)(2 * a * d);
        }
    *loss = f;
    return 0;
}

static int build(jopt_ctx *ctx, problem *pr, const char *spec, jopt_optim **out)
{
    jopt_param a = {pr->p[0], pr->g[0], pr->n[0]}, b = {pr->p[1], pr->g[1], pr->n[1]};
    pr->closure = !strcmp(spec, "lbfgs");
    if (pr->closure) {
        jopt_param both[2] = {a, b};
        jopt_group g = {both, 2, "history_size=20 max_iter=5"};
        return jopt_optim_new(ctx, spec, &g, 1, NULL, out);
    }
    jopt_group groups[2] = {{&a, 1, "lr=0.01"}, {&b, 1, "lr=0.02 weight_decay=0.1"}};
    return jopt_optim_new(ctx, spec, groups, 2, "betas=(0.8,0.95)", out);
}

static int step(jopt_optim *opt, problem *pr)
{
    double loss;
    return jopt_step(opt, pr->closure ? quadratic : NULL, pr, &loss);
}

/* ---- what an optimizer looks like: its checkpoint and its parameters ---- */

typedef struct snapshot {
    unsigned char *ckpt;
    size_t len;
    float *p[2];
} snapshot;

static void snap(jopt_ctx *ctx, jopt_optim *opt, const problem *pr, snapshot *s)
{
    T_OK(ctx, jopt_state_size(opt, &s->len));
    s->ckpt = malloc(s->len);
    assert_non_null(s->ckpt);
    T_OK(ctx, jopt_state_save_mem(opt, s->ckpt, s->len, &s->len));
    for (int i = 0; i < 2; i++) {
        s->p[i] = malloc((size_t)pr->n[i] * sizeof(float));
        assert_non_null(s->p[i]);
        memcpy(s->p[i], pr->p[i], (size_t)pr->n[i] * sizeof(float));
    }
}

static void snap_free(snapshot *s)
{
    free(s->ckpt);
    free(s->p[0]);
    free(s->p[1]);
}

static void expect_same(jopt_ctx *ctx, jopt_optim *opt, const problem *pr,
                        const snapshot *want, const char *what, long n)
{
    snapshot now;
    snap(ctx, opt, pr, &now);
    if (now.len != want->len || memcmp(now.ckpt, want->ckpt, now.len))
        fail_msg("%s, allocation %ld failing: the checkpoint changed", what, n);
    for (int i = 0; i < 2; i++)
        if (memcmp(now.p[i], want->p[i], (size_t)pr->n[i] * sizeof(float)))
            fail_msg("%s, allocation %ld failing: tensor %d changed", what, n, i);
    snap_free(&now);
}

static void expect_enomem(jopt_ctx *ctx, int rc, const char *what, long n)
{
    if (rc != JOPT_ENOMEM)
        fail_msg("%s, allocation %ld failing: status %d (%s), not JOPT_ENOMEM",
                 what, n, rc, jopt_errmsg(ctx));
    if (!*jopt_errmsg(ctx))
        fail_msg("%s, allocation %ld failing: JOPT_ENOMEM without a message", what, n);
}

/* ---- the operations ------------------------------------------------------ */

typedef enum op_kind {
    OP_STEP,         /* the first step (its state is made) */
    OP_OPTIONS,      /* options_set after a step: a new kernel */
    OP_SAVE_FILE,    /* jopt_state_save */
    OP_LOAD_MEM,     /* jopt_state_load_mem of a later checkpoint */
    OP_LOAD_FILE,    /* jopt_state_load of it */
    OP_SCHED,        /* jopt_sched_new */
    OP_LBFGS_FIRST,  /* L-BFGS's first step */
    OP_LBFGS_LATER   /* ... and its second, whose history grows */
} op_kind;

typedef struct op_case {
    const char *name;
    op_kind kind;
    const char *spec;
    int steps_before;
} op_case;

typedef struct env {
    char dir[64], ckpt_path[96], save_path[96];
    unsigned char *later; /* a checkpoint three steps on */
    size_t later_len;
} env;

/* runs the operation; *sched gets a scheduler to free */
static int run_op(const op_case *c, const env *e, jopt_optim *opt, problem *pr,
                  jopt_sched **sched)
{
    switch (c->kind) {
    case OP_STEP: return step(opt, pr);
    case OP_OPTIONS: return jopt_options_set(opt, 1, "lr=0.03 betas=(0.7,0.9) amsgrad=true");
    case OP_SAVE_FILE: return jopt_state_save(opt, e->save_path);
    case OP_LOAD_MEM: return jopt_state_load_mem(opt, e->later, e->later_len);
    case OP_LOAD_FILE: return jopt_state_load(opt, e->ckpt_path);
    case OP_SCHED:
        return jopt_sched_new(opt, "multistep", "milestones=[2,4] gamma=0.5", sched);
    case OP_LBFGS_FIRST:
    case OP_LBFGS_LATER: return step(opt, pr);
    }
    return JOPT_EINVAL;
}

/* the outcome of the operation on a context that never fails */
static void reference(const op_case *c, const env *e, problem *pr, snapshot *want)
{
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_sched *sched = NULL;
    T_OK(NULL, jopt_ctx_new(&ctx));
    T_OK(ctx, jopt_ctx_set_threads(ctx, 1));
    problem_reset(pr);
    T_OK(ctx, build(ctx, pr, c->spec, &opt));
    for (int s = 0; s < c->steps_before; s++)
        T_OK(ctx, step(opt, pr));
    T_OK(ctx, run_op(c, e, opt, pr, &sched));
    snap(ctx, opt, pr, want);
    if (c->kind == OP_SAVE_FILE)
        unlink(e->save_path);
    jopt_sched_free(sched);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
}

static void check_op(const op_case *c, const env *e, int persist)
{
    problem pr;
    problem_init(&pr);
    snapshot want;
    reference(c, e, &pr, &want);

    failer f = {0};
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new_ex(&ctx, fail_alloc, &f));
    T_OK(ctx, jopt_ctx_set_threads(ctx, 1));
    long tried = 0, failed = 0;
    for (long n = 1;; n++) {
        jopt_optim *opt;
        jopt_sched *sched = NULL;
        disarm(&f);
        problem_reset(&pr);
        T_OK(ctx, build(ctx, &pr, c->spec, &opt));
        for (int s = 0; s < c->steps_before; s++)
            T_OK(ctx, step(opt, &pr));
        snapshot before;
        snap(ctx, opt, &pr, &before);
        long start = f.count;
        arm(&f, n, persist);
        int rc = run_op(c, e, opt, &pr, &sched);
        disarm(&f);
        tried++;
        if (f.count - start < n) { /* it never reached the n-th */
            T_OK(ctx, rc);
            expect_same(ctx, opt, &pr, &want, c->name, n);
            jopt_sched_free(sched);
            snap_free(&before);
            jopt_optim_free(opt);
            break;
        }
        if (rc == JOPT_OK) { /* a failure that was recovered from */
            expect_same(ctx, opt, &pr, &want, c->name, n);
        } else {
            failed++;
            expect_enomem(ctx, rc, c->name, n);
            if (sched)
                fail_msg("%s, allocation %ld failing: a scheduler handed out", c->name, n);
            expect_same(ctx, opt, &pr, &before, c->name, n);
            if (c->kind == OP_SAVE_FILE && access(e->save_path, F_OK) == 0)
                fail_msg("%s, allocation %ld failing: a file was left", c->name, n);
            /* and the optimizer still works: the same call succeeds */
            T_OK(ctx, run_op(c, e, opt, &pr, &sched));
            expect_same(ctx, opt, &pr, &want, c->name, n);
        }
        if (c->kind == OP_SAVE_FILE)
            unlink(e->save_path);
        jopt_sched_free(sched);
        snap_free(&before);
        jopt_optim_free(opt);
    }
    jopt_ctx_free(ctx);
    check_nothing_live(&f, c->name, 0);
    print_message("  %-22s %-7s %4ld allocations failed in turn, %ld calls refused\n",
                  c->name, persist ? "persist" : "once", tried - 1, failed);
    if (!failed)
        fail_msg("%s: no failure was ever reported: is the allocator used?", c->name);
    snap_free(&want);
    problem_free(&pr);
}

static env E;

static const op_case CASES[] = {
    {"first step", OP_STEP, "adam", 0},
    {"option change", OP_OPTIONS, "adam", 1},
    {"checkpoint save", OP_SAVE_FILE, "adam", 1},
    {"checkpoint load (mem)", OP_LOAD_MEM, "adam", 1},
    {"checkpoint load (file)", OP_LOAD_FILE, "adam", 1},
    {"scheduler", OP_SCHED, "adam", 1},
    {"L-BFGS first step", OP_LBFGS_FIRST, "lbfgs", 0},
    {"L-BFGS second step", OP_LBFGS_LATER, "lbfgs", 1},
};

static void test_operations(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        check_op(&CASES[i], &E, 0);
        check_op(&CASES[i], &E, 1);
    }
}

/* Construction from nothing: the context, the spec's Lua states, the
 * trace, the graph, the kernel cache and the optimizer.  With `warm`, the
 * context is made once and kept: kernels that compiled stay in its cache,
 * so later rounds reach the steps after them without compiling again
 * (L-BFGS has several kernels; compiling them all in each of thousands of
 * rounds would take many minutes). */
static void check_construction(const char *spec, int persist, int warm)
{
    problem pr;
    problem_init(&pr);
    long failed = 0, n;
    failer f = {0};
    jopt_ctx *ctx = NULL;
    if (warm)
        T_OK(NULL, jopt_ctx_new_ex(&ctx, fail_alloc, &f));
    for (n = 1;; n++) {
        long start = f.count;
        arm(&f, n, persist);
        jopt_optim *opt = NULL;
        int rc = warm ? JOPT_OK : jopt_ctx_new_ex(&ctx, fail_alloc, &f);
        if (rc == JOPT_OK)
            rc = build(ctx, &pr, spec, &opt);
        else if (ctx)
            fail_msg("construction, allocation %ld failing: a context handed out", n);
        disarm(&f);
        if (rc != JOPT_OK) {
            failed++;
            if (ctx)
                expect_enomem(ctx, rc, "construction", n);
            else if (rc != JOPT_ENOMEM)
                fail_msg("jopt_ctx_new_ex, allocation %ld failing: status %d", n, rc);
            if (opt)
                fail_msg("construction, allocation %ld failing: an optimizer handed out", n);
        }
        long count = f.count - start;
        jopt_optim_free(opt);
        if (!warm) {
            jopt_ctx_free(ctx);
            ctx = NULL;
            check_nothing_live(&f, "construction", n);
        }
        if (count < n) {
            if (rc != JOPT_OK)
                fail_msg("construction without failures: status %d", rc);
            break;
        }
    }
    jopt_ctx_free(ctx);
    check_nothing_live(&f, "construction", n);
    print_message("  construction of %-6s %-7s%s %4ld allocations failed in turn, "
                  "%ld refused\n", spec, persist ? "persist" : "once",
                  warm ? " (warm)" : "", n - 1, failed);
    assert_true(failed > 0);
    problem_free(&pr);
}

static void test_construction(void **state)
{
    (void)state;
    check_construction("adam", 0, 0);
    check_construction("adam", 1, 0);
    check_construction("lbfgs", 1, 1);
}

/* The allocator gets every block, and lua_Alloc's contract: a NULL
 * allocator is the C library's; the context is freed through it too. */
static void test_allocator_sees_everything(void **state)
{
    (void)state;
    failer f = {0};
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new_ex(NULL, fail_alloc, &f), JOPT_EINVAL);
    T_OK(NULL, jopt_ctx_new_ex(&ctx, fail_alloc, &f));
    assert_true(f.blocks > 0);
    problem pr;
    problem_init(&pr);
    problem_reset(&pr);
    jopt_optim *opt;
    T_OK(ctx, build(ctx, &pr, "adam", &opt));
    long after_build = f.count;
    T_OK(ctx, step(opt, &pr));
    assert_true(f.count > after_build); /* the state came from it */
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    check_nothing_live(&f, "a context's life", 0);
    problem_free(&pr);

    T_OK(NULL, jopt_ctx_new_ex(&ctx, NULL, NULL));
    jopt_ctx_free(ctx);
}

static int setup(void **state)
{
    (void)state;
    snprintf(E.dir, sizeof E.dir, "/tmp/jopt_oom_XXXXXX");
    if (!mkdtemp(E.dir))
        return -1;
    snprintf(E.ckpt_path, sizeof E.ckpt_path, "%s/later.ckpt", E.dir);
    snprintf(E.save_path, sizeof E.save_path, "%s/save.ckpt", E.dir);
    /* the checkpoint the load cases read: Adam three steps on */
    problem pr;
    problem_init(&pr);
    problem_reset(&pr);
    jopt_ctx *ctx;
    jopt_optim *opt;
    if (jopt_ctx_new(&ctx) || build(ctx, &pr, "adam", &opt))
        return -1;
    for (int s = 0; s < 3; s++)
        step(opt, &pr);
    jopt_state_size(opt, &E.later_len);
    E.later = malloc(E.later_len);
    if (!E.later || jopt_state_save_mem(opt, E.later, E.later_len, &E.later_len) ||
        jopt_state_save(opt, E.ckpt_path))
        return -1;
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    problem_free(&pr);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(E.ckpt_path);
    unlink(E.save_path);
    rmdir(E.dir);
    free(E.later);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocator_sees_everything),
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_construction),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
