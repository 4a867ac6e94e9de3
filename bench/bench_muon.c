/*
 * bench_muon.c - jopt's Muon step (specs/muon.lua) on a transformer's
 * matrices, and how much of it is spent outside the GEMMs.
 *
 *   bench_muon [--dim 768] [--blocks 1] [--ns bfloat16|float32] [--steps 3]
 *              [--threads 1] [--ns-steps 5]
 *
 * The tensors are GPT-2's per block (Hugging Face's Conv1D weights, in x
 * out): c_attn dim x 3dim, attn.c_proj dim x dim, mlp.c_fc dim x 4dim,
 * mlp.c_proj 4dim x dim; GPT-2 small is --dim 768 with 12 blocks.  Each
 * step is timed alone after one step that compiles the kernels; the
 * median is printed.
 *
 * The time in GEMMs is measured by ELF interposition, as probe.c does for
 * malloc: this executable defines cblas_sgemm and cblas_ssyrk (forwarding
 * to OpenBLAS's through dlsym) and exports them, so libjopt.so's calls land
 * here and are timed on the thread that makes them (the flops counted are
 * those computed: a symmetric product's mirrored half is not).  Outside-GEMM share = 1 - (seconds
 * in sgemm, summed over threads) / (threads x step seconds): on one thread
 * exactly the step's time outside the products.  Uses jopt.h alone.
 */
#include <cblas.h>
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jopt.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static _Atomic long long gemm_ns, gemm_calls;
static _Atomic double gemm_flops;

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint,
                         const blasint, const float, const float *, const blasint,
                         const float *, const blasint, const float, float *,
                         const blasint);

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
                 const enum CBLAS_TRANSPOSE tb, const blasint m, const blasint n,
                 const blasint k, const float alpha, const float *a,
                 const blasint lda, const float *b, const blasint ldb,
                 const float beta, float *c, const blasint ldc)
{
    static sgemm_fn real;
    if (!real)
        real = (sgemm_fn)dlsym(RTLD_NEXT, "cblas_sgemm");
    double t0 = now();
    real(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    atomic_fetch_add(&gemm_ns, (long long)((now() - t0) * 1e9));
    atomic_fetch_add(&gemm_calls, 1);
    double f = 2.0 * m * n * k, old = atomic_load(&gemm_flops);
    while (!atomic_compare_exchange_weak(&gemm_flops, &old, old + f))
        ;
}

typedef void (*ssyrk_fn)(const enum CBLAS_ORDER, const enum CBLAS_UPLO,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint,
                         const float, const float *, const blasint, const float,
                         float *, const blasint);

/* X Xᵀ's diagonal blocks (codegen/gemm.c) */
void cblas_ssyrk(const enum CBLAS_ORDER order, const enum CBLAS_UPLO uplo,
                 const enum CBLAS_TRANSPOSE t, const blasint n, const blasint k,
                 const float alpha, const float *a, const blasint lda,
                 const float beta, float *c, const blasint ldc)
{
    static ssyrk_fn real;
    if (!real)
        real = (ssyrk_fn)dlsym(RTLD_NEXT, "cblas_ssyrk");
    double t0 = now();
    real(order, uplo, t, n, k, alpha, a, lda, beta, c, ldc);
    atomic_fetch_add(&gemm_ns, (long long)((now() - t0) * 1e9));
    atomic_fetch_add(&gemm_calls, 1);
    double f = 1.0 * n * (n + 1) * k, old = atomic_load(&gemm_flops);
    while (!atomic_compare_exchange_weak(&gemm_flops, &old, old + f))
        ;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int die(jopt_ctx *ctx, const char *what)
{
    fprintf(stderr, "bench_muon: %s: %s\n", what, ctx ? jopt_errmsg(ctx) : "");
    return 1;
}

int main(int argc, char **argv)
{
    int dim = 768, blocks = 1, steps = 3, threads = 1, ns_steps = 5;
    const char *ns = "bfloat16";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--dim") && v)
            dim = atoi(v), i++;
        else if (!strcmp(argv[i], "--blocks") && v)
            blocks = atoi(v), i++;
        else if (!strcmp(argv[i], "--steps") && v)
            steps = atoi(v), i++;
        else if (!strcmp(argv[i], "--threads") && v)
            threads = atoi(v), i++;
        else if (!strcmp(argv[i], "--ns-steps") && v)
            ns_steps = atoi(v), i++;
        else if (!strcmp(argv[i], "--ns") && v)
            ns = v, i++;
        else {
            fprintf(stderr, "usage: bench_muon [--dim 768] [--blocks 1] [--ns "
                            "bfloat16|float32] [--steps 3] [--threads 1] "
                            "[--ns-steps 5]\n");
            return 2;
        }
    }
    if (dim < 1 || blocks < 1 || steps < 1 || threads < 1 || steps > 1000)
        return die(NULL, "bad arguments");
    int nt = 4 * blocks;
    int64_t (*shape)[2] = calloc((size_t)nt, sizeof *shape);
    jopt_param *params = calloc((size_t)nt, sizeof *params);
    double *times = calloc((size_t)steps, sizeof *times);
    if (!shape || !params || !times)
        return die(NULL, "out of memory");
    int64_t total = 0;
    for (int t = 0; t < nt; t++) {
        static const int in[4] = {1, 1, 1, 4}, out[4] = {3, 1, 4, 1};
        shape[t][0] = (int64_t)dim * in[t % 4];
        shape[t][1] = (int64_t)dim * out[t % 4];
        int64_t n = shape[t][0] * shape[t][1];
        float *p = aligned_alloc(64, ((size_t)n * 4 + 63) & ~(size_t)63);
        float *g = aligned_alloc(64, ((size_t)n * 4 + 63) & ~(size_t)63);
        if (!p || !g)
            return die(NULL, "out of memory");
        uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(t + 1);
        for (int64_t e = 0; e < n; e++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            p[e] = 0.02f * (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
            g[e] = (float)((double)(s & 0xffffff) / 16777216.0 - 0.5);
        }
        params[t] = (jopt_param){p, g, n};
        total += n;
    }
    jopt_ctx *ctx;
    jopt_optim *opt;
    char options[128];
    snprintf(options, sizeof options, "ns_dtype=%s ns_steps=%d", ns, ns_steps);
    jopt_group group = {params, (size_t)nt, options};
    if (jopt_ctx_new(&ctx))
        return die(NULL, "jopt_ctx_new");
    if (jopt_ctx_set_threads(ctx, threads) ||
        jopt_optim_new(ctx, "muon", &group, 1, NULL, &opt))
        return die(ctx, "jopt_optim_new");
    for (int t = 0; t < nt; t++)
        if (jopt_set_shape(opt, 0, (size_t)t, 2, shape[t]))
            return die(ctx, "jopt_set_shape");
    double t0 = now();
    if (jopt_step(opt, NULL, NULL, NULL)) /* builds the kernels */
        return die(ctx, "jopt_step");
    double first = now() - t0;
    double gemm_s = 0, flops = 0;
    for (int s = 0; s < steps; s++) {
        long long ns0 = atomic_load(&gemm_ns);
        double f0 = atomic_load(&gemm_flops);
        t0 = now();
        if (jopt_step(opt, NULL, NULL, NULL))
            return die(ctx, "jopt_step");
        times[s] = now() - t0;
        gemm_s += (double)(atomic_load(&gemm_ns) - ns0) * 1e-9;
        flops += atomic_load(&gemm_flops) - f0;
    }
    double mean = 0;
    for (int s = 0; s < steps; s++)
        mean += times[s] / steps;
    qsort(times, (size_t)steps, sizeof *times, cmp_double);
    double med = times[steps / 2];
    gemm_s /= steps;
    flops /= steps;
    printf("jopt muon: dim %d, %d blocks (%d matrices, %.1fM elements), ns_dtype=%s "
           "ns_steps=%d, %d thread%s\n", dim, blocks, nt, (double)total / 1e6, ns,
           ns_steps, jopt_ctx_threads(ctx), jopt_ctx_threads(ctx) == 1 ? "" : "s");
    printf("  first step (compiles) %.3f s; step median %.4f s (min %.4f, max %.4f, "
           "%d steps)\n", first, med, times[0], times[steps - 1], steps);
    printf("  GEMMs: %.1f GFLOP per step, %.4f thread-s in sgemm (%.1f GFLOP/s per "
           "thread), %lld calls\n", flops / 1e9, gemm_s, flops / 1e9 / gemm_s,
           (long long)(atomic_load(&gemm_calls) / (steps + 1)));
    printf("  outside the GEMMs: %.1f %% of the step's thread time\n",
           100.0 * (1.0 - gemm_s / (jopt_ctx_threads(ctx) * mean)));
    printf("RESULT jopt %s %d %d %d %.6f %.6f\n", ns, dim, blocks,
           jopt_ctx_threads(ctx), med, 1.0 - gemm_s / (jopt_ctx_threads(ctx) * mean));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    for (int t = 0; t < nt; t++)
        free(params[t].param), free(params[t].grad);
    free(params);
    free(shape);
    free(times);
    return 0;
}
