/*
 * bench_schedule.c - a scheduled learning rate costs no recompile storm:
 * Adam over 1M elements for 1000 steps with a fixed lr, then with a cosine
 * lr set before every step (jopt_option_set, as a scheduler does).  Prints
 * the kernels compiled and the median step time of each.
 *
 * Usage: bench_schedule [threads]      (default 1)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* M_PI */
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "jopt.h"

#define N (1 << 20)
#define STEPS 1000

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median step time in seconds; *compiles gets the kernels compiled */
static double run(int threads, int scheduled, float *p, float *g, size_t *compiles)
{
    static double t[STEPS];
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_param param = {p, g, N};
    jopt_group group = {&param, 1, NULL};
    if (jopt_ctx_new(&ctx) != JOPT_OK || jopt_ctx_set_threads(ctx, threads) != JOPT_OK ||
        jopt_optim_new(ctx, "adam", &group, 1, "lr=0.01", &opt) != JOPT_OK) {
        fprintf(stderr, "bench_schedule: %s\n", ctx ? jopt_errmsg(ctx) : "no context");
        exit(1);
    }
    for (int s = 0; s < STEPS; s++) {
        double t0 = now();
        if (scheduled) { /* torch's CosineAnnealingLR, closed form */
            double lr = 0.001 + 0.5 * (0.01 - 0.001) * (1 + cos(M_PI * s / STEPS));
            if (jopt_option_set(opt, 0, "lr", lr) != JOPT_OK)
                exit(1);
        }
        if (jopt_step(opt, NULL, NULL, NULL) != JOPT_OK)
            exit(1);
        t[s] = now() - t0;
    }
    jopt_ctx_stats(ctx, compiles, NULL);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    qsort(t, STEPS, sizeof t[0], cmp);
    return t[STEPS / 2];
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    float *p = aligned_alloc(64, N * sizeof(float)), *g = aligned_alloc(64, N * sizeof(float));
    if (!p || !g)
        return 1;
    for (int i = 0; i < N; i++) {
        p[i] = 0.001f * (float)(i % 1000);
        g[i] = 0.01f * (float)((i * 7) % 13 - 6);
    }
    size_t cf, cs;
    run(threads, 0, p, g, &cf); /* warm up */
    double fixed = run(threads, 0, p, g, &cf);
    double sched = run(threads, 1, p, g, &cs);
    printf("Adam, %d elements, %d steps, %d thread%s\n", N, STEPS, threads,
           threads == 1 ? "" : "s");
    printf("  fixed lr:   %zu kernels compiled, median step %.1f us\n", cf, fixed * 1e6);
    printf("  cosine lr:  %zu kernels compiled, median option_set + step %.1f us "
           "(%.3fx the fixed lr)\n", cs, sched * 1e6, sched / fixed);
    free(p);
    free(g);
    return 0;
}
