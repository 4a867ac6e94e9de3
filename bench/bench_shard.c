/*
 * bench_shard.c - data-parallel optimizer steps over MPI on ResNet-50's or
 * GPT-2's tensors: jopt's sharded optimizer (jopt_mpi.h, ZeRO stage 1)
 * beside the unsharded one that every process runs whole after an
 * MPI_Allreduce of the gradients (what DDP does).  Run one configuration
 * per mpirun, as bench_shard.sh does:
 *
 *   mpirun -np N bench_shard --model resnet50|gpt2 --mode sharded|replicated
 *          [--spec adam] [--options "lr=1e-3"] [--steps 5] [--threads 1]
 *
 * Rank 0 prints one line: the median over the timed steps of the slowest
 * process's step (gradient exchange, update, parameter exchange), the
 * most bytes a process sends per step, and per process the optimizer's
 * state, the exchange's buffers and the peak resident memory (which also
 * holds the model's parameters and gradients, the same in both modes), and
 * the largest process's elements over an even split's (the balance).
 * Bytes: what Open MPI's collective monitoring counts this process sending
 * to the others in collectives (bench_shard.sh sets
 * OMPI_MCA_pml_monitoring_enable=1; MPI_T's coll_monitoring_messages_size),
 * so MPI's own allreduce algorithm is what is measured; and for the sharded
 * optimizer also what it hands MPI for the other processes
 * (jopt_shard_info), which should agree.  Without the monitoring, only the
 * latter, and "-" for the replicated one.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "gpt2.h"
#include "jopt_mpi.h"
#include "resnet50.h"

static int rank, size;

static void die(const char *what, const jopt_ctx *ctx)
{
    fprintf(stderr, "bench_shard: rank %d: %s%s%s\n", rank, what, ctx ? ": " : "",
            ctx ? jopt_errmsg(ctx) : "");
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Open MPI's collective monitoring through MPI_T: bytes sent to every
 * other process in collectives; -1 where it is not there */
static MPI_T_pvar_session mon_session;
static MPI_T_pvar_handle mon_handle;
static int mon_count = -1;
static unsigned long long *mon_values;

static void monitor_start(void)
{
    int provided, num;
    if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS ||
        MPI_T_pvar_get_num(&num) != MPI_SUCCESS)
        return;
    for (int i = 0; i < num; i++) {
        char name[128], desc[256];
        int nl = sizeof name, dl = sizeof desc, verbosity, cls, bind, ro, cont, atomic;
        MPI_Datatype type;
        MPI_T_enum en;
        if (MPI_T_pvar_get_info(i, name, &nl, &verbosity, &cls, &type, &en, desc, &dl,
                                &bind, &ro, &cont, &atomic) != MPI_SUCCESS ||
            strcmp(name, "coll_monitoring_messages_size") || bind != MPI_T_BIND_MPI_COMM)
            continue;
        MPI_Comm world = MPI_COMM_WORLD;
        int count;
        if (MPI_T_pvar_session_create(&mon_session) != MPI_SUCCESS)
            return;
        if (MPI_T_pvar_handle_alloc(mon_session, i, &world, &mon_handle, &count) ||
            (!cont && MPI_T_pvar_start(mon_session, mon_handle)) ||
            !(mon_values = calloc((size_t)count, sizeof *mon_values)))
            return;
        mon_count = count;
        return;
    }
}

static double monitor_read(void)
{
    if (mon_count < 0 || MPI_T_pvar_read(mon_session, mon_handle, mon_values))
        return -1;
    double sum = 0;
    for (int i = 0; i < mon_count; i++)
        if (i != rank)
            sum += (double)mon_values[i];
    return sum;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* deterministic, small, different on every process */
static void fill(float *x, int64_t n, uint64_t seed, float scale)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = scale * ((float)(s >> 40) * 0x1p-24f - 0.5f);
    }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *model = "resnet50", *mode = "sharded", *spec = "adam";
    const char *options = "lr=1e-3";
    int steps = 5, threads = 1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--model")) model = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--mode")) mode = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--spec")) spec = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--options")) options = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--steps")) steps = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
        else die("usage: bench_shard --model resnet50|gpt2 --mode sharded|replicated "
                 "[--spec S] [--options O] [--steps N] [--threads T]", NULL);
    }
    int sharded = !strcmp(mode, "sharded");
    if (!sharded && strcmp(mode, "replicated"))
        die("--mode is sharded or replicated", NULL);
    const b_shape *shapes = !strcmp(model, "gpt2") ? gpt2 : resnet50;
    int nt = shapes == gpt2 ? GPT2_TENSORS : RESNET50_TENSORS;
    if (shapes == resnet50 && strcmp(model, "resnet50"))
        die("--model is resnet50 or gpt2", NULL);
    if (steps < 1 || threads < 0)
        die("--steps wants 1 or more, --threads 0 or more", NULL);

    /* the model: one buffer of parameters and one of gradients (one
     * allreduce for the replicated optimizer), tensors 64-byte aligned */
    int64_t total = 0, *at = calloc((size_t)nt, sizeof(int64_t));
    for (int t = 0; t < nt; t++) {
        at[t] = total;
        total += (shapes[t].numel + 15) / 16 * 16;
    }
    float *p = aligned_alloc(64, (size_t)total * sizeof(float));
    float *g = aligned_alloc(64, (size_t)total * sizeof(float));
    jopt_param *params = calloc((size_t)nt, sizeof *params);
    if (!at || !p || !g || !params)
        die("out of memory", NULL);
    fill(p, total, 1, 0.2f);
    fill(g, total, 2 + (uint64_t)rank, 0.01f);
    for (int t = 0; t < nt; t++)
        params[t] = (jopt_param){p + at[t], g + at[t], shapes[t].numel};
    int64_t numel = shapes == gpt2 ? GPT2_NUMEL : RESNET50_NUMEL;

    jopt_ctx *ctx;
    if (jopt_ctx_new(&ctx))
        die("jopt_ctx_new", NULL);
    jopt_ctx_set_threads(ctx, threads);
    jopt_optim *opt;
    jopt_group group = {params, (size_t)nt, NULL};
    int rc = sharded ? jopt_mpi_optim_new(ctx, spec, &group, 1, options, MPI_COMM_WORLD, &opt)
                     : jopt_optim_new(ctx, spec, &group, 1, options, &opt);
    if (rc)
        die("building the optimizer", ctx);

    jopt_shard_info before, after;
    double *times = calloc((size_t)steps, sizeof(double));
    double mon0 = 0;
    monitor_start();
    for (int s = -1; s < steps; s++) { /* step -1: warm-up, makes the state */
        MPI_Barrier(MPI_COMM_WORLD);
        if (s == 0) {
            jopt_shard_info_get(opt, &before);
            mon0 = monitor_read();
        }
        double t0 = now_s();
        if (!sharded && size > 1) { /* DDP: the sum everywhere, then the mean */
            MPI_Allreduce(MPI_IN_PLACE, g, (int)total, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            float inv = 1.0f / (float)size;
            for (int64_t i = 0; i < total; i++)
                g[i] *= inv;
        }
        if (jopt_step(opt, NULL, NULL, NULL))
            die("jopt_step", ctx);
        double dt = now_s() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (s >= 0)
            times[s] = dt;
        MPI_Barrier(MPI_COMM_WORLD); /* its bytes outside the monitored ones */
        fill(g, total, 2 + (uint64_t)rank + 7 * (uint64_t)(s + 2), 0.01f);
    }
    jopt_shard_info_get(opt, &after);
    double mon1 = monitor_read();
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    /* bytes per step, as MPI counts them (with the bench's own barriers
     * and 8-byte allreduce of the time, a few dozen bytes) and as jopt does */
    double mpi_bytes = mon0 >= 0 && mon1 >= 0 ? (mon1 - mon0) / steps : -1;
    double bytes = sharded ? (double)(after.bytes_sent - before.bytes_sent) / steps : -1;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double mine[6] = {mpi_bytes, bytes, (double)after.state_bytes,
                      (double)after.buffer_bytes, (double)ru.ru_maxrss * 1024.0,
                      (double)after.numel};
    double most[6];
    MPI_Reduce(mine, most, 6, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    char mpi[16] = "       -", ours[16] = "       -", balance[16] = "    -";
    if (most[0] >= 0)
        snprintf(mpi, sizeof mpi, "%8.1f", most[0] / 1e6);
    if (sharded) { /* the largest shard against an even split */
        snprintf(ours, sizeof ours, "%8.1f", most[1] / 1e6);
        snprintf(balance, sizeof balance, "%5.2f", most[5] / ((double)numel / size));
    }
    if (rank == 0)
        printf("%-8s %-10s %2d  %9.2f ms  %s MB  %s MB  %8.1f MB  %6.1f MB  "
               "%8.1f MB  %s\n", model, mode, size, 1e3 * times[steps / 2], mpi,
               ours, most[2] / 1e6, most[3] / 1e6, most[4] / 1e6, balance);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    if (mon_count >= 0) {
        MPI_T_pvar_handle_free(mon_session, &mon_handle);
        MPI_T_pvar_session_free(&mon_session);
    }
    MPI_T_finalize();
    free(mon_values);
    free(times);
    free(params);
    free(p);
    free(g);
    free(at);
    MPI_Finalize();
    return 0;
}
