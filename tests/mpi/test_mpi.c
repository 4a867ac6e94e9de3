/*
 * test_mpi.c - the sharded optimizer over MPI (jopt_mpi.h), run by ctest
 * under mpirun -np 2 and -np 4.  Each process checks, and the first
 * failure aborts the job (MPI_Abort) so that nothing hangs:
 *
 *   - SGD, Adam (with a cosine scheduler), LAMB, Adafactor (shapes, rows
 *     and columns) and a spec with group sums, a group state and a named
 *     kernel: N processes stepping with their own gradients give every
 *     process the parameters, bit for bit, that one process gets stepping
 *     with the averaged gradients (the mean in double, in rank order),
 *     which each process computes on its own; each tensor's state lives
 *     on one process and equals the one process's;
 *   - a process with a mismatched layout: every process fails alike;
 *   - a checkpoint round trip (a set of shards, then the run goes on as
 *     if never stopped), and a set refused on another number of processes.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "jopt_mpi.h"

#define STEPS 4
#define NT 8

static int rank, size;

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "test_mpi: rank %d of %d: ", rank, size);          \
            fprintf(stderr, __VA_ARGS__);                                      \
            fprintf(stderr, " (%s:%d)\n", __FILE__, __LINE__);                 \
            MPI_Abort(MPI_COMM_WORLD, 1);                                      \
        }                                                                      \
    } while (0)
#define OK(ctx, call)                                                          \
    do {                                                                       \
        int rc_ = (call);                                                      \
        CHECK(rc_ == JOPT_OK, "%s -> %d: %s", #call, rc_, jopt_errmsg(ctx));   \
    } while (0)

typedef struct model {
    int ntensors;
    int64_t size[NT];
    int group[NT];
    int ndim[NT];
    int64_t shape[NT][2];
    const char *spec, *defaults, *group1;
    int sched;           /* a cosine scheduler */
    int call_at;         /* jopt_optim_call("shrink") after that step */
} model;

typedef struct run {
    const model *m;
    float *p[NT], *g[NT];
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_sched *sched;
} run;

static model mlp(const char *spec, const char *defaults, const char *group1)
{
    model m = {NT, {100003, 17, 131077, 0, 70001, 1, 4099, 65536},
               {0, 0, 0, 0, 1, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1}, {{0}},
               spec, defaults, group1, 0, -1};
    return m;
}

static void place(const model *m, int t, size_t *g, size_t *i)
{
    *g = (size_t)m->group[t];
    *i = 0;
    for (int u = 0; u < t; u++)
        *i += m->group[u] == m->group[t];
}

static void fill_grads(const model *m, float *const *g, int r, int step)
{
    for (int t = 0; t < m->ntensors; t++)
        t_fill(g[t], m->size[t], 1000003ull * (uint64_t)(r + 1) +
                                     7919ull * (uint64_t)step + (uint64_t)t, 0.05);
}

/* builds a run; sharded over `comm` unless it is MPI_COMM_NULL; with
 * small buffers (64 KiB), a step exchanges in many rounds whose windows
 * span tensors */
static int small_buffers;

static int build(run *r, const model *m, MPI_Comm comm)
{
    memset(r, 0, sizeof *r);
    r->m = m;
    for (int t = 0; t < m->ntensors; t++) {
        r->p[t] = t_alloc(m->size[t]);
        r->g[t] = t_alloc(m->size[t]);
        t_fill(r->p[t], m->size[t], 77 + (uint64_t)t, 0.0);
    }
    OK(NULL, jopt_ctx_new(&r->ctx));
    jopt_ctx_set_threads(r->ctx, 1);
    OK(r->ctx, jopt_ctx_set_spec_path(r->ctx, JOPT_SOURCE_DIR "/specs:"
                                      JOPT_SOURCE_DIR "/tests/specs"));
    jopt_param gp[2][NT];
    int n[2] = {0, 0};
    for (int t = 0; t < m->ntensors; t++)
        gp[m->group[t]][n[m->group[t]]++] = (jopt_param){r->p[t], r->g[t], m->size[t]};
    jopt_group groups[2] = {{gp[0], (size_t)n[0], NULL}, {gp[1], (size_t)n[1], m->group1}};
    size_t ng = n[1] ? 2 : 1;
    int rc;
    if (comm == MPI_COMM_NULL) {
        rc = jopt_optim_new(r->ctx, m->spec, groups, ng, m->defaults, &r->opt);
    } else if (small_buffers) {
        jopt_comm c;
        OK(NULL, jopt_mpi_comm(comm, &c));
        c.buffer_bytes = 64 << 10;
        rc = jopt_optim_new_sharded(r->ctx, m->spec, groups, ng, m->defaults, &c,
                                    &r->opt);
    } else {
        rc = jopt_mpi_optim_new(r->ctx, m->spec, groups, ng, m->defaults, comm,
                                &r->opt);
    }
    if (rc)
        return rc;
    for (int t = 0; t < m->ntensors; t++)
        if (m->ndim[t] > 1) {
            size_t g, i;
            place(m, t, &g, &i);
            OK(r->ctx, jopt_set_shape(r->opt, g, i, 2, m->shape[t]));
        }
    if (m->sched)
        OK(r->ctx, jopt_sched_new(r->opt, "cosine", "T_max=5", &r->sched));
    return JOPT_OK;
}

static void run_free(run *r)
{
    jopt_sched_free(r->sched);
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    for (int t = 0; t < r->m->ntensors; t++) {
        free(r->p[t]);
        free(r->g[t]);
    }
}

/* one step; `nranks` > 0: the reference, with the mean of every rank's
 * gradients (in double, in rank order, rounded once) */
static void step(run *r, int s, int nranks)
{
    const model *m = r->m;
    if (nranks) {
        float *tmp[NT];
        for (int t = 0; t < m->ntensors; t++)
            tmp[t] = t_alloc(m->size[t]);
        double *acc[NT];
        for (int t = 0; t < m->ntensors; t++)
            acc[t] = calloc((size_t)m->size[t] + 1, sizeof(double));
        for (int q = 0; q < nranks; q++) {
            fill_grads(m, tmp, q, s);
            for (int t = 0; t < m->ntensors; t++)
                for (int64_t e = 0; e < m->size[t]; e++)
                    acc[t][e] = q == 0 ? (double)tmp[t][e] : acc[t][e] + (double)tmp[t][e];
        }
        for (int t = 0; t < m->ntensors; t++) {
            for (int64_t e = 0; e < m->size[t]; e++)
                r->g[t][e] = (float)(acc[t][e] / nranks);
            free(acc[t]);
        }
        for (int t = 0; t < m->ntensors; t++)
            free(tmp[t]);
    } else {
        fill_grads(m, r->g, rank, s);
    }
    if (s == 2)
        OK(r->ctx, jopt_option_set(r->opt, 0, "lr", 3e-3));
    size_t g, i; /* one gradient absent at step 1 */
    place(m, 2, &g, &i);
    OK(r->ctx, jopt_set_grad(r->opt, g, i, s == 1 ? NULL : r->g[2]));
    OK(r->ctx, jopt_step(r->opt, NULL, NULL, NULL));
    if (r->sched)
        OK(r->ctx, jopt_sched_step(r->sched));
    if (s == m->call_at)
        OK(r->ctx, jopt_optim_call(r->opt, "shrink"));
}

static void compare(const run *a, const run *ref, const char *what)
{
    const model *m = a->m;
    static const char *const names[] = {"exp_avg", "exp_avg_sq", "momentum_buffer",
                                        "row_var", "col_var", "variance"};
    for (int t = 0; t < m->ntensors; t++) {
        int64_t at = 0;
        uint32_t ulp = t_max_ulp(a->p[t], ref->p[t], m->size[t], &at);
        CHECK(ulp == 0, "%s %s: tensor %d element %lld is %u ulp from one process",
              what, m->spec, t, (long long)at, ulp);
        size_t g, i;
        place(m, t, &g, &i);
        int owner = jopt_shard_owner(a->opt, g, i);
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            const float *mine, *want;
            int64_t n = 0, sm, sw;
            if (jopt_state_get(a->opt, g, i, names[k], &mine, &sm) != JOPT_OK)
                continue;
            OK(ref->ctx, jopt_state_get(ref->opt, g, i, names[k], &want, &sw));
            CHECK(sm == sw, "%s: tensor %d: step %lld, not %lld", what, t,
                  (long long)sm, (long long)sw);
            if (owner != rank) {
                CHECK(!mine, "%s: tensor %d has state away from its holder", what, t);
                continue;
            }
            CHECK(!mine == !want, "%s: tensor %d: state %s", what, t, names[k]);
            if (!mine)
                continue;
            jopt_state_numel(ref->opt, g, i, names[k], &n);
            CHECK(t_max_ulp(mine, want, n, &at) == 0, "%s %s: tensor %d state %s "
                  "differs at %lld", what, m->spec, t, names[k], (long long)at);
        }
    }
}

static void check_model(const model *m)
{
    run ref, sh;
    OK(NULL, build(&ref, m, MPI_COMM_NULL));
    int rc = build(&sh, m, MPI_COMM_WORLD);
    CHECK(rc == JOPT_OK, "jopt_mpi_optim_new(%s): %s", m->spec, jopt_errmsg(sh.ctx));
    for (int s = 0; s < STEPS; s++) {
        step(&ref, s, size);
        step(&sh, s, 0);
    }
    compare(&sh, &ref, "bit-identity");
    jopt_shard_info info;
    OK(sh.ctx, jopt_shard_info_get(sh.opt, &info));
    CHECK(info.rank == rank && info.size == size, "info");
    int64_t held = info.numel, all = 0;
    MPI_Allreduce(MPI_IN_PLACE, &held, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    for (int t = 0; t < m->ntensors; t++)
        all += m->size[t];
    CHECK(held == all, "%lld elements held in all, of %lld", (long long)held,
          (long long)all);
    if (rank == 0)
        printf("test_mpi: %s on %d processes: the same bits as one process "
               "(%llu bytes sent by rank 0)\n", m->spec, size,
               (unsigned long long)info.bytes_sent);
    run_free(&sh);
    run_free(&ref);
}

/* every process of `comm` got `status` and the same message, which says
 * `want` */
static void expect_all(MPI_Comm comm, int rc, const jopt_ctx *ctx, int status,
                       const char *want)
{
    const char *msg = jopt_errmsg(ctx);
    CHECK(rc == status, "status %d, not %d: %s", rc, status, msg);
    CHECK(strstr(msg, want), "'%s' does not say '%s'", msg, want);
    char mine[512] = "", first[512];
    snprintf(mine, sizeof mine, "%s", msg);
    memcpy(first, mine, sizeof first);
    MPI_Bcast(first, sizeof first, MPI_CHAR, 0, comm);
    CHECK(!strcmp(first, mine), "'%s' is not rank 0's '%s'", mine, first);
}

static void check_mismatch(void)
{
    model m = mlp("sgd", "lr=0.01", NULL);
    if (rank == size - 1)
        m.size[4] = 70000;
    run r;
    int rc = build(&r, &m, MPI_COMM_WORLD);
    char want[160];
    snprintf(want, sizeof want, "jopt_optim_new_sharded: rank %d's parameters "
             "are not rank 0's: 2 groups, 8 tensors, 370733 elements against "
             "2, 8, 370734", size - 1);
    expect_all(MPI_COMM_WORLD, rc, r.ctx, JOPT_EINVAL, want);
    CHECK(!r.opt, "an optimizer despite the mismatch");
    run_free(&r);
    if (rank == 0)
        printf("test_mpi: a mismatched layout fails alike on %d processes\n", size);
}

static void check_checkpoint(void)
{
    model m = mlp("adam", "lr=1e-2 amsgrad=true", "weight_decay=0.1");
    char dir[64] = "/tmp/jopt_test_mpi.XXXXXX", path[128];
    if (rank == 0)
        CHECK(mkdtemp(dir), "mkdtemp");
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    snprintf(path, sizeof path, "%s/rank%d.ckpt", dir, rank);
    run a, b;
    OK(NULL, build(&a, &m, MPI_COMM_WORLD));
    step(&a, 0, 0);
    step(&a, 1, 0);
    OK(a.ctx, jopt_state_save(a.opt, path));
    OK(NULL, build(&b, &m, MPI_COMM_WORLD));
    for (int t = 0; t < m.ntensors; t++)
        memcpy(b.p[t], a.p[t], (size_t)m.size[t] * sizeof(float));
    OK(b.ctx, jopt_state_load(b.opt, path));
    for (int s = 2; s < STEPS; s++) {
        step(&a, s, 0);
        step(&b, s, 0);
    }
    compare(&b, &a, "checkpoint");
    run_free(&b);
    /* on half as many processes (one, when two saved): refused alike */
    MPI_Comm half;
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
    OK(NULL, build(&b, &m, half));
    int rc = jopt_state_load(b.opt, path);
    char want[160];
    snprintf(want, sizeof want, "is sharded over %d (a set of shards loads onto "
             "as many processes as saved it)", size / 2);
    expect_all(half, rc, b.ctx, JOPT_EINVAL, want);
    run_free(&b);
    MPI_Comm_free(&half);
    run_free(&a);
    MPI_Barrier(MPI_COMM_WORLD);
    remove(path);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        rmdir(dir);
        printf("test_mpi: a set of %d shards round trips, and is refused on %d "
               "processes\n", size, size / 2);
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    model m = mlp("sgd", "lr=0.01 momentum=0.9 nesterov=true", "weight_decay=0.01");
    check_model(&m);
    small_buffers = 1; /* the rest in many rounds; SGD in one */
    m = mlp("adam", "lr=1e-3 amsgrad=true", "weight_decay=0.1");
    m.sched = 1;
    check_model(&m);
    m = mlp("lamb", "lr=0.01 weight_decay=0.01", NULL);
    check_model(&m);
    m = mlp("clipped_sgd", "lr=0.05 max_norm=50", "max_norm=200");
    m.call_at = 2;
    check_model(&m);
    model af = {5, {128 * 1303, 1303, 64 * 3 * 49, 10, 600}, {0, 0, 0, 1, 1},
                {2, 1, 2, 1, 2}, {{128, 1303}, {1303, 0}, {192, 49}, {10, 0}, {20, 30}},
                "adafactor", "lr=0.01", "weight_decay=0.1", 0, -1};
    check_model(&af);
    small_buffers = 0;
    check_mismatch();
    check_checkpoint();
    if (rank == 0)
        printf("test_mpi: OK (%d processes)\n", size);
    MPI_Finalize();
    return 0;
}
