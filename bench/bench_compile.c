/*
 * bench_compile.c - what building an optimizer costs: the first compile in
 * the process (LLVM starting up), a cold compile (trace, O3, machine code,
 * for values never seen), and a kernel-cache hit (the same values again).
 *
 * Usage: bench_compile [spec ...]      (default: sgd adam adamw)
 * Prints medians and the spread (min..max) over REPS runs.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "jopt.h"

#define REPS 21

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* builds one optimizer over one small tensor; returns ms, or -1 */
static double build(jopt_ctx *ctx, const char *spec, const char *options,
                    jopt_param *param)
{
    jopt_group group = {param, 1, NULL};
    jopt_optim *opt;
    double t0 = now_ms();
    int rc = jopt_optim_new(ctx, spec, &group, 1, options, &opt);
    double t = now_ms() - t0;
    if (rc != JOPT_OK) {
        fprintf(stderr, "bench_compile: %s: %s\n", spec, jopt_errmsg(ctx));
        return -1;
    }
    jopt_optim_free(opt);
    return t;
}

static void report(const char *spec, const char *what, double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    printf("%-8s %-26s median %8.3f ms   (min %.3f, max %.3f, n=%d)\n", spec,
           what, t[n / 2], t[0], t[n - 1], n);
}

int main(int argc, char **argv)
{
    static const char *const defaults[] = {"sgd", "adam", "adamw"};
    const char *const *specs = argc > 1 ? (const char *const *)argv + 1 : defaults;
    int nspecs = argc > 1 ? argc - 1 : 3;
    float p[64] = {0}, g[64] = {0};
    jopt_param param = {p, g, 64};
    jopt_ctx *ctx;
    if (jopt_ctx_new(&ctx) != JOPT_OK)
        return 1;
    double first = build(ctx, specs[0], "lr=0.5", &param);
    if (first < 0)
        return 1;
    printf("first optimizer in the process (%s, LLVM start-up included): %.3f ms\n\n",
           specs[0], first);
    for (int s = 0; s < nspecs; s++) {
        double cold[REPS], hit[REPS];
        char options[64];
        for (int r = 0; r < REPS; r++) {
            /* a new lr each time: a value the cache has never seen */
            snprintf(options, sizeof options, "lr=%g", 1e-3 * (r + 2 + 100 * s));
            if ((cold[r] = build(ctx, specs[s], options, &param)) < 0)
                return 1;
            if ((hit[r] = build(ctx, specs[s], options, &param)) < 0)
                return 1;
        }
        report(specs[s], "cold (trace + O3 + JIT)", cold, REPS);
        report(specs[s], "cache hit", hit, REPS);
    }
    size_t compiles, hits;
    jopt_ctx_stats(ctx, &compiles, &hits);
    printf("\nkernels compiled: %zu, cache hits: %zu\n", compiles, hits);
    printf("(a cache hit still loads and checks the spec in a Lua sandbox)\n");
    jopt_ctx_free(ctx);
    return 0;
}
