/*
 * bench_mixed.c - jopt's mixed-precision step against its float32 step and
 * against the memory-only loop of its own access pattern (issue 13).
 *
 *   bench_mixed [--quick] [--sizes 1M,4M,16M,64M] [--no-model]
 *               [--threads 1,2] [--optimizers adam,adamw,sgd]
 *               [--configs f32,bf16,bf16s,bf16s_sr,f16] [--budget S] [--csv FILE]
 *
 * Configurations (parameters and gradients / per-element state):
 *   f32       float32 / float32             (the baseline)
 *   bf16      bfloat16 / float32
 *   bf16s     bfloat16 / bfloat16            (rounded to nearest)
 *   bf16s_sr  bfloat16 / bfloat16, stochastic rounding
 *   f16       float16 / float32
 * Workloads: one tensor of each size, and ResNet-50's 161 parameter tensors
 * (resnet50.h, 25.6M elements).  Optimizers: Adam, AdamW (wd 1e-2), SGD
 * with momentum 0.9.
 *
 * Every measurement runs in a child process of its own (jopt's pool and the
 * memory loop's threads never share the machine), and reports the median
 * step time over repeated steps after warm-up (at least --budget seconds,
 * default 1, and 5 steps).  "mem" is one pass that reads and writes exactly
 * the bytes the step must (Adam: p, g, m, v read; p, m, v written, each in
 * its type; SGD: p, g, buf read; p, buf written) with an integer add per
 * element, on as many threads, cut as jopt cuts tensors, over the arrays
 * jopt's step uses (its own states): the roof for that configuration.
 * Uses jopt.h only.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jopt.h"
#include "resnet50.h"

typedef struct config {
    const char *name, *options;
    int dt, sdt; /* bytes of a parameter (and gradient), of a state element */
} config;

static const config configs[] = {
    {"f32", "", 4, 4},
    {"bf16", "dtype=bfloat16", 2, 4},
    {"bf16s", "dtype=bfloat16 state_dtype=bfloat16", 2, 2},
    {"bf16s_sr", "dtype=bfloat16 state_dtype=bfloat16 stochastic_rounding=true", 2, 2},
    {"f16", "dtype=float16", 2, 4},
};
#define NCONFIG (sizeof configs / sizeof configs[0])

typedef struct optimizer {
    const char *name, *spec, *options;
    int nstate; /* per-element states */
    const char *state[2];
} optimizer;

static const optimizer optimizers[] = {
    {"adam", "adam", "lr=1e-3", 2, {"exp_avg", "exp_avg_sq"}},
    {"adamw", "adamw", "lr=1e-3 weight_decay=1e-2", 2, {"exp_avg", "exp_avg_sq"}},
    {"sgd", "sgd", "lr=1e-3 momentum=0.9", 1, {"momentum_buffer", NULL}},
};
#define NOPT (sizeof optimizers / sizeof optimizers[0])

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *alloc(int64_t bytes, unsigned seed)
{
    size_t b = ((size_t)bytes + 63) & ~(size_t)63;
    unsigned char *p = aligned_alloc(64, b ? b : 64);
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < b; i += 2) { /* small finite values in any type */
        s ^= s << 13, s ^= s >> 17, s ^= s << 5;
        p[i] = (unsigned char)s;
        if (i + 1 < b)
            p[i + 1] = (unsigned char)(0x3c + (s >> 28) % 2); /* f16/bf16 exponent */
    }
    return p;
}

typedef struct workload {
    int n;
    const int64_t *numel;
    int64_t total;
    char name[32];
} workload;

/* ---- jopt's step ---------------------------------------------------------------- */

static double median(double *t, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

#define MAXSTEPS 1000

static void free_optim(jopt_optim *opt, jopt_ctx *ctx, jopt_param *ps, const workload *w)
{
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    for (int i = 0; ps && i < w->n; i++)
        free(ps[i].param), free(ps[i].grad);
    free(ps);
}

/* The workload's tensors and gradients, allocated as a program would, and
 * the optimizer over them after one step (its states made where jopt puts
 * them).  NULL on failure, said on stderr, with everything freed. */
static jopt_optim *make_optim(const optimizer *o, const config *c, const workload *w,
                              int threads, jopt_ctx **ctx, jopt_param **params)
{
    jopt_optim *opt = NULL;
    jopt_param *ps = calloc((size_t)w->n, sizeof *ps);
    *params = ps;
    if (!ps || jopt_ctx_new(ctx) || jopt_ctx_set_threads(*ctx, threads)) {
        free_optim(NULL, *ctx, ps, w);
        return NULL;
    }
    for (int t = 0; t < w->n; t++)
        ps[t] = (jopt_param){alloc(w->numel[t] * c->dt, 1 + (unsigned)t),
                             alloc(w->numel[t] * c->dt, 1000 + (unsigned)t), w->numel[t]};
    char opts[256];
    snprintf(opts, sizeof opts, "%s %s", o->options, c->options);
    jopt_group g = {ps, (size_t)w->n, opts};
    if (jopt_optim_new(*ctx, o->spec, &g, 1, NULL, &opt) ||
        jopt_step(opt, NULL, NULL, NULL)) {
        fprintf(stderr, "bench_mixed: %s\n", jopt_errmsg(*ctx));
        free_optim(opt, *ctx, ps, w);
        return NULL;
    }
    return opt;
}

static double time_jopt(const optimizer *o, const config *c, const workload *w, int threads,
                        double budget)
{
    jopt_ctx *ctx = NULL;
    jopt_param *ps = NULL;
    jopt_optim *opt = make_optim(o, c, w, threads, &ctx, &ps);
    if (!opt)
        return -1;
    double t[MAXSTEPS];
    int n = 0;
    for (int i = 0; i < 2; i++) /* warm-up: pages touched */
        jopt_step(opt, NULL, NULL, NULL);
    for (double start = now(); n < MAXSTEPS && (n < 5 || now() - start < budget); n++) {
        double t0 = now();
        jopt_step(opt, NULL, NULL, NULL);
        t[n] = now() - t0;
    }
    free_optim(opt, ctx, ps, w);
    return median(t, n);
}

/* ---- the memory-only loop -------------------------------------------------------- */

typedef struct memjob {
    int narr, tid, nthreads;
    int es[4];                  /* bytes per element of each array */
    void **arrays[4];           /* per tensor */
    const workload *w;
    pthread_barrier_t *bar;
    double *out;
    int steps;
} memjob;

/* One pass over the elements, as the kernel makes it: each element of p,
 * g and the states read, p and the states written (an integer add, which
 * the compiler vectorizes), for each combination of element sizes. */
#define MEM_LOOP(TP, TS)                                                       \
    do {                                                                       \
        TP *p = (TP *)j->arrays[0][t] + lo, *g = (TP *)j->arrays[1][t] + lo;   \
        TS *s1 = (TS *)j->arrays[2][t] + lo;                                   \
        TS *s2 = j->narr > 3 ? (TS *)j->arrays[3][t] + lo : NULL;              \
        int64_t n = hi - lo;                                                   \
        if (s2)                                                                \
            for (int64_t i = 0; i < n; i++) {                                  \
                TP x = (TP)(p[i] + g[i]);                                      \
                s1[i] = (TS)(s1[i] + x);                                       \
                s2[i] = (TS)(s2[i] ^ x);                                       \
                p[i] = x;                                                      \
            }                                                                  \
        else                                                                   \
            for (int64_t i = 0; i < n; i++) {                                  \
                TP x = (TP)(p[i] + g[i]);                                      \
                s1[i] = (TS)(s1[i] + x);                                       \
                p[i] = x;                                                      \
            }                                                                  \
    } while (0)

static void mem_range(memjob *j, int t, int64_t lo, int64_t hi)
{
    if (j->es[0] == 4 && j->es[2] == 4)
        MEM_LOOP(uint32_t, uint32_t);
    else if (j->es[0] == 2 && j->es[2] == 4)
        MEM_LOOP(uint16_t, uint32_t);
    else if (j->es[0] == 2)
        MEM_LOOP(uint16_t, uint16_t);
    else
        MEM_LOOP(uint32_t, uint16_t);
}

static void *mem_thread(void *arg)
{
    memjob *j = arg;
    for (int s = 0; s < j->steps; s++) {
        pthread_barrier_wait(j->bar);
        double t0 = now();
        int64_t k = 0; /* the ranges of all tensors, dealt in contiguous shares */
        int64_t nranges = 0;
        for (int t = 0; t < j->w->n; t++)
            nranges += (j->w->numel[t] + 65535) / 65536;
        int64_t lo = nranges * j->tid / j->nthreads, hi = nranges * (j->tid + 1) / j->nthreads;
        for (int t = 0; t < j->w->n; t++)
            for (int64_t r = 0; r < j->w->numel[t]; r += 65536, k++)
                if (k >= lo && k < hi)
                    mem_range(j, t, r, r + 65536 < j->w->numel[t] ? r + 65536 : j->w->numel[t]);
        pthread_barrier_wait(j->bar);
        if (j->tid == 0)
            j->out[s] = now() - t0;
    }
    return NULL;
}

static double time_mem(const optimizer *o, const config *c, const workload *w, int threads,
                       double budget)
{
    /* arrays: p, g, then the states: the very arrays jopt's step uses, laid
     * out as in time_jopt (where the states fall moves a streaming loop's
     * speed by up to 2x: bench/RESULTS.md, "Where the arrays fall") */
    int narr = 2 + o->nstate;
    void **arrays[4];
    int es[4] = {c->dt, c->dt, c->sdt, c->sdt};
    jopt_ctx *ctx = NULL;
    jopt_param *ps = NULL;
    jopt_optim *opt = make_optim(o, c, w, threads, &ctx, &ps);
    if (!opt)
        return -1;
    for (int a = 0; a < narr; a++)
        if (!(arrays[a] = calloc((size_t)w->n, sizeof(void *))))
            return -1; /* a child process: exit frees */
    for (int a = 0; a < narr; a++)
        for (int t = 0; t < w->n; t++) {
            const float *d = NULL;
            if (a < 2)
                d = a ? ps[t].grad : ps[t].param;
            else if (jopt_state_get(opt, 0, (size_t)t, o->state[a - 2], &d, NULL) || !d) {
                fprintf(stderr, "bench_mixed: %s has no state '%s'\n", o->name,
                        o->state[a - 2]);
                return -1;
            }
            arrays[a][t] = (void *)(uintptr_t)d;
        }
    /* steps: enough for the budget, from one timed pass */
    double est = 0;
    {
        memjob j = {.narr = narr, .nthreads = 1, .w = w};
        memcpy(j.es, es, sizeof es);
        memcpy(j.arrays, arrays, sizeof arrays);
        double t0 = now();
        for (int t = 0; t < w->n; t++)
            mem_range(&j, t, 0, w->numel[t]);
        est = now() - t0;
    }
    int steps = (int)(budget / (est / threads + 1e-9)) + 5;
    steps = steps > MAXSTEPS ? MAXSTEPS : steps;
    double *out = calloc((size_t)steps, sizeof *out);
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    memjob jobs[8];
    pthread_t tids[8];
    for (int k = 0; k < threads; k++) {
        jobs[k] = (memjob){.narr = narr, .tid = k, .nthreads = threads,
                           .w = w, .bar = &bar, .out = out, .steps = steps};
        memcpy(jobs[k].es, es, sizeof es);
        memcpy(jobs[k].arrays, arrays, sizeof arrays);
    }
    for (int k = 1; k < threads; k++)
        pthread_create(&tids[k], NULL, mem_thread, &jobs[k]);
    mem_thread(&jobs[0]);
    for (int k = 1; k < threads; k++)
        pthread_join(tids[k], NULL);
    pthread_barrier_destroy(&bar);
    double m = median(out + 1, steps - 1);
    free(out);
    for (int a = 0; a < narr; a++)
        free(arrays[a]);
    free_optim(opt, ctx, ps, w);
    return m;
}

/* ---- driver: one child process per measurement ----------------------------------- */

static double in_child(int mem, const optimizer *o, const config *c, const workload *w,
                       int threads, double budget)
{
    int fd[2];
    if (pipe(fd))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        double t = mem ? time_mem(o, c, w, threads, budget)
                       : time_jopt(o, c, w, threads, budget);
        if (write(fd[1], &t, sizeof t) != sizeof t)
            _exit(1);
        _exit(0);
    }
    close(fd[1]);
    double t = -1;
    if (read(fd[0], &t, sizeof t) != sizeof t)
        t = -1;
    close(fd[0]);
    waitpid(pid, NULL, 0);
    return t;
}

static int64_t count(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    return (int64_t)(v * (*end == 'M' ? 1 << 20 : *end == 'K' ? 1 << 10 : *end == 'G' ? 1 << 30 : 1));
}

static int listed(const char *list, const char *name)
{
    if (!list)
        return 1;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || !p[n]))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    const char *sizes = "1M,4M,16M,64M", *threads = "1,2", *opts = NULL, *cfgs = NULL,
               *csv = NULL;
    int model = 1;
    double budget = 1.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick"))
            sizes = "1M,16M", budget = 0.3;
        else if (!strcmp(argv[i], "--no-model"))
            model = 0;
        else if (i + 1 < argc && !strcmp(argv[i], "--sizes"))
            sizes = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--threads"))
            threads = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--optimizers"))
            opts = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--configs"))
            cfgs = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--budget"))
            budget = atof(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "--csv"))
            csv = argv[++i];
        else {
            fprintf(stderr, "usage: bench_mixed [--quick] [--sizes 1M,4M] [--no-model] "
                            "[--threads 1,2] [--optimizers adam,adamw,sgd] [--configs "
                            "f32,bf16,bf16s,bf16s_sr,f16] [--budget S] [--csv FILE]\n");
            return 2;
        }
    }
    workload ws[16];
    int nw = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", sizes);
    static int64_t one[16];
    for (char *tok = strtok(buf, ","); tok && nw < 15; tok = strtok(NULL, ","), nw++) {
        one[nw] = count(tok);
        ws[nw] = (workload){1, &one[nw], one[nw], ""};
        snprintf(ws[nw].name, sizeof ws[nw].name, "%s", tok);
    }
    static int64_t r50[RESNET50_TENSORS];
    if (model) {
        for (int t = 0; t < RESNET50_TENSORS; t++)
            r50[t] = resnet50[t].numel;
        ws[nw++] = (workload){RESNET50_TENSORS, r50, RESNET50_NUMEL, "resnet50"};
    }
    FILE *out = csv ? fopen(csv, "w") : NULL;
    if (out)
        fprintf(out, "optimizer,workload,threads,config,jopt_ms,mem_ms,vs_f32,vs_mem\n");
    printf("%-6s %-9s %3s %-9s %10s %10s %8s %8s %9s\n", "opt", "workload", "thr", "config",
           "jopt ms", "mem ms", "vs f32", "of mem", "GB/s");
    for (size_t oi = 0; oi < NOPT; oi++) {
        const optimizer *o = &optimizers[oi];
        if (!listed(opts, o->name))
            continue;
        for (int wi = 0; wi < nw; wi++)
            for (const char *tp = threads; *tp; tp += strcspn(tp, ",") + (tp[strcspn(tp, ",")] != 0)) {
                int th = atoi(tp);
                double f32 = 0;
                for (size_t ci = 0; ci < NCONFIG; ci++) {
                    const config *c = &configs[ci];
                    if (ci && !listed(cfgs, c->name))
                        continue;
                    double tj = in_child(0, o, c, &ws[wi], th, budget);
                    double tm = in_child(1, o, c, &ws[wi], th, budget);
                    if (ci == 0)
                        f32 = tj;
                    /* bytes: p, g read; p written; states read and written */
                    double bytes = (double)ws[wi].total *
                                   (3.0 * c->dt + 2.0 * o->nstate * c->sdt);
                    printf("%-6s %-9s %3d %-9s %10.3f %10.3f %8.2f %7.0f%% %9.1f\n", o->name,
                           ws[wi].name, th, c->name, 1e3 * tj, 1e3 * tm, f32 / tj,
                           100 * tm / tj, bytes / tj * 1e-9);
                    fflush(stdout);
                    if (out)
                        fprintf(out, "%s,%s,%d,%s,%.4f,%.4f,%.3f,%.3f\n", o->name,
                                ws[wi].name, th, c->name, 1e3 * tj, 1e3 * tm, f32 / tj,
                                tm / tj);
                }
            }
    }
    if (out)
        fclose(out);
    return 0;
}
