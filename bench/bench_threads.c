/*
 * bench_threads.c - jopt's step on the CPU at 1, 2, 4, 8, 16 threads (or
 * --threads LIST): time per step, GB/s for the optimizer's own access
 * pattern, and the same pattern's memory-only loop at that many threads
 * (the roof), so the scaling of a many-core machine shows in one short run.
 *
 *   bench_threads [--threads 1,2,4,8,16] [--sizes 64M] [--no-model]
 *                 [--budget SECONDS] [spec[:options] ...]
 *
 * Defaults: adam, sgd:momentum=0.9 and lamb on 64M elements and on
 * ResNet-50's 161 tensors; 0.4 s of samples per measurement (median of
 * its rounds).  Each run is checked first: the step at the largest thread
 * count gives the bits of the one-thread step.  Uses jopt.h alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "resnet50.h"

#define MAXT 16
#define MAXS 8

typedef struct job {
    const b_pattern *pat;
    float **arrays;
    int64_t n;
} job;

static void membw_share(void *arg, int t, int nt)
{
    job *j = arg;
    int64_t lo, hi;
    b_split(j->n, t, nt, &lo, &hi);
    b_membw(j->pat, j->arrays, lo, hi);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median seconds per call of fn over rounds filling `budget` seconds */
typedef void (*call_fn)(void *);
static double median_time(call_fn fn, void *arg, double budget)
{
    double ts[64];
    int n = 0;
    fn(arg); /* warm */
    double t0 = b_now();
    while (n < 64 && (n < 3 || b_now() - t0 < budget)) {
        double a = b_now();
        fn(arg);
        ts[n++] = b_now() - a;
    }
    qsort(ts, (size_t)n, sizeof ts[0], cmp_double);
    return ts[n / 2];
}

typedef struct stepper {
    jopt_optim *opt;
    jopt_ctx *ctx;
} stepper;

static void do_step(void *arg)
{
    stepper *s = arg;
    if (jopt_step(s->opt, NULL, NULL, NULL)) {
        fprintf(stderr, "jopt_step: %s\n", jopt_errmsg(s->ctx));
        exit(1);
    }
}

typedef struct membw_arg {
    b_pool *pool;
    int threads;
    job *jobs;
    int njobs;
} membw_arg;

static void do_membw(void *arg)
{
    membw_arg *m = arg;
    for (int i = 0; i < m->njobs; i++)
        b_pool_run(m->pool, m->threads, membw_share, &m->jobs[i]);
}

static int parse_list(const char *s, int64_t *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        char *end;
        double v = strtod(s, &end);
        if (*end == 'K' || *end == 'k')
            v *= 1024, end++;
        else if (*end == 'M' || *end == 'm')
            v *= 1 << 20, end++;
        out[n++] = (int64_t)v;
        s = *end == ',' ? end + 1 : end;
        if (end == s && *s)
            break;
    }
    return n;
}

/* one optimizer on one tensor list at each thread count */
static int run(const char *label, const int64_t *numel, int ntens, const char *casename,
               const int64_t *threads, int nthreads, double budget, b_pool *pool)
{
    char spec[160], *options;
    snprintf(spec, sizeof spec, "%s", label);
    options = strchr(spec, ':');
    if (options)
        *options++ = 0;
    jopt_ctx *ctx;
    jopt_ctx_new(&ctx);
    jopt_spec *sp;
    b_pattern pat;
    if (jopt_spec_open(ctx, spec, options, &sp) || b_pattern_of(sp, &pat)) {
        fprintf(stderr, "%s: %s\n", label, jopt_errmsg(ctx));
        jopt_ctx_free(ctx);
        return 1;
    }
    jopt_spec_free(sp);
    int64_t total = 0;
    jopt_param *params = calloc((size_t)ntens, sizeof *params);
    job *jobs = calloc((size_t)ntens, sizeof *jobs);
    float ***arrays = calloc((size_t)ntens, sizeof *arrays);
    for (int i = 0; i < ntens; i++) {
        arrays[i] = calloc((size_t)pat.nslots, sizeof **arrays);
        for (int s = 0; s < pat.nslots; s++) {
            arrays[i][s] = b_alloc(numel[i]);
            b_fill(arrays[i][s], numel[i], (uint64_t)(i * 64 + s + 1));
        }
        params[i] = (jopt_param){arrays[i][0], arrays[i][1], numel[i]};
        jobs[i] = (job){&pat, arrays[i], numel[i]};
        total += numel[i];
    }
    jopt_group group = {params, (size_t)ntens, NULL};
    /* the check: the most threads give the bits of one thread */
    float *p1 = malloc((size_t)numel[0] * sizeof(float));
    float *copy = malloc((size_t)numel[0] * sizeof(float));
    memcpy(copy, arrays[0][0], (size_t)numel[0] * sizeof(float));
    int same = 1;
    for (int pass = 0; pass < 2; pass++) {
        jopt_optim *opt;
        jopt_ctx_set_threads(ctx, pass ? (int)threads[nthreads - 1] : 1);
        memcpy(arrays[0][0], copy, (size_t)numel[0] * sizeof(float));
        if (jopt_optim_new(ctx, spec, &group, 1, options, &opt) ||
            jopt_step(opt, NULL, NULL, NULL)) {
            fprintf(stderr, "%s: %s\n", label, jopt_errmsg(ctx));
            return 1;
        }
        if (!pass)
            memcpy(p1, arrays[0][0], (size_t)numel[0] * sizeof(float));
        else
            same = !memcmp(p1, arrays[0][0], (size_t)numel[0] * sizeof(float));
        jopt_optim_free(opt);
    }
    char pt[64];
    printf("%-22s %-9s %s, %.0f B/elem; %d threads give the bits of 1: %s\n", label, casename,
           b_pattern_text(&pat, pt, sizeof pt), b_pattern_bytes(&pat) * pat.passes,
           (int)threads[nthreads - 1], same ? "yes" : "NO");
    double bytes = b_pattern_bytes(&pat) * (double)total, t1 = 0;
    for (int k = 0; k < nthreads; k++) {
        int t = (int)threads[k];
        jopt_ctx_set_threads(ctx, t);
        jopt_optim *opt;
        if (jopt_optim_new(ctx, spec, &group, 1, options, &opt)) {
            fprintf(stderr, "%s: %s\n", label, jopt_errmsg(ctx));
            return 1;
        }
        stepper st = {opt, ctx};
        double tj = median_time(do_step, &st, budget);
        membw_arg m = {pool, t, jobs, ntens};
        double tr = median_time(do_membw, &m, budget);
        if (!k)
            t1 = tj;
        printf("  %2d threads (pool %2d): jopt %8.3f ms %7.1f GB/s (x%4.1f)   memory-only "
               "%8.3f ms %7.1f GB/s   jopt at %5.1f %% of it\n", t, jopt_ctx_threads(ctx),
               tj * 1e3, bytes / tj / 1e9, t1 / tj, tr * 1e3, bytes / tr / 1e9, 100 * tr / tj);
        fflush(stdout);
        jopt_optim_free(opt);
    }
    for (int i = 0; i < ntens; i++) {
        for (int s = 0; s < pat.nslots; s++)
            free(arrays[i][s]);
        free(arrays[i]);
    }
    free(arrays);
    free(jobs);
    free(params);
    free(p1);
    free(copy);
    jopt_ctx_free(ctx);
    return !same;
}

int main(int argc, char **argv)
{
    int64_t threads[MAXT] = {1, 2, 4, 8, 16}, sizes[MAXS] = {64 << 20};
    int nthreads = 5, nsizes = 1, model = 1;
    double budget = 0.4;
    const char *labels[16];
    int nlabels = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--threads") && v) {
            nthreads = parse_list(v, threads, MAXT);
            i++;
        } else if (!strcmp(a, "--sizes") && v) {
            nsizes = parse_list(v, sizes, MAXS);
            i++;
        } else if (!strcmp(a, "--budget") && v) {
            budget = atof(v);
            i++;
        } else if (!strcmp(a, "--no-model")) {
            model = 0;
        } else if (a[0] == '-' || nlabels == 16) {
            fprintf(stderr, "usage: bench_threads [--threads 1,2,4,8,16] [--sizes 64M] "
                            "[--no-model] [--budget SECONDS] [spec[:options] ...]\n");
            return 2;
        } else {
            labels[nlabels++] = a;
        }
    }
    if (!nlabels) {
        labels[nlabels++] = "adam";
        labels[nlabels++] = "sgd:momentum=0.9";
        labels[nlabels++] = "lamb";
    }
    int most = 1;
    for (int k = 0; k < nthreads; k++)
        most = threads[k] > most ? (int)threads[k] : most;
    b_pool *pool = b_pool_new(most);
    printf("bench_threads: jopt's CPU step against the memory-only loop of its access "
           "pattern, at %d thread counts; median of %.1f s of samples each\n", nthreads,
           budget);
    int rc = 0;
    for (int l = 0; l < nlabels; l++) {
        for (int s = 0; s < nsizes; s++) {
            char name[32];
            snprintf(name, sizeof name, "%lldM", (long long)(sizes[s] >> 20));
            rc |= run(labels[l], &sizes[s], 1, name, threads, nthreads, budget, pool);
        }
        if (model) {
            int64_t numel[RESNET50_TENSORS];
            for (int i = 0; i < RESNET50_TENSORS; i++)
                numel[i] = resnet50[i].numel;
            rc |= run(labels[l], numel, RESNET50_TENSORS, "resnet50", threads, nthreads, budget,
                      pool);
        }
    }
    b_pool_free(pool);
    return rc;
}
