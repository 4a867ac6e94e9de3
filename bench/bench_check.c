/*
 * bench_check.c - what bench_optim checks and measures besides throughput:
 * that every kernel it times computes the same thing (JIT == reference
 * interpreter == unfused, bit for bit; the hand-written loops within a
 * tolerance), what constructing an optimizer costs (cold compile, kernel-
 * cache hit, and what jopt.h lets the bench time of their parts), and what
 * one step costs besides the kernel (per call, per tensor).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ---- comparisons ---------------------------------------------------------- */

/* first element whose bits differ (NaNs of any payload are equal), or -1 */
static int64_t differ(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) && !(isnan(a[i]) && isnan(b[i])))
            return i;
    return -1;
}

/* The hand-written loops round differently (llm.c computes 1 - beta2 in
 * float: 0.0010000467 where torch has 0.001, 4.7e-5 apart), so: the largest
 * difference relative to max(|b|, 1e-2 of the array's largest value; an
 * interpolation that cancels is exact only relative to its inputs).  Within
 * tolerance below 1e-4. */
static double rel_diff(const float *a, const float *b, int64_t n)
{
    float scale = 0;
    for (int64_t i = 0; i < n; i++)
        scale = fabsf(b[i]) > scale ? fabsf(b[i]) : scale;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double ref = fmax(fabs((double)b[i]), 1e-2 * scale);
        double r = d == 0 ? 0 : ref > 0 ? d / ref : INFINITY;
        if (!(r <= worst))
            worst = r; /* NaN too */
    }
    return worst;
}

/* ---- JIT == reference == unfused; hand-written within tolerance -------------- */

typedef struct tensors {
    int n;
    const int64_t *numel;
    float **p, **pr, **g, **in;
    float ***u, ***h; /* the unfused and hand-written runs' own slots */
} tensors;

static float *dup(const float *x, int64_t n)
{
    float *y = b_alloc(n);
    if (y && x)
        memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}

static void tensors_free(tensors *t, int nslots)
{
    for (int i = 0; i < t->n; i++) {
        free(t->p[i]);
        free(t->pr[i]);
        free(t->g[i]);
        if (t->in)
            free(t->in[i]);
        for (int s = 0; s < nslots; s++) {
            if (s != 1 && t->u && t->u[i])
                free(t->u[i][s]);
            if (s != 1 && t->h && t->h[i])
                free(t->h[i][s]);
        }
        if (t->u)
            free(t->u[i]);
        if (t->h)
            free(t->h[i]);
    }
    free(t->p);
    free(t->pr);
    free(t->g);
    free(t->in);
    free(t->u);
    free(t->h);
}

static jopt_optim *optim_over(jopt_ctx *ctx, const b_opt *o, float **p, float **g,
                              const int64_t *numel, int n)
{
    jopt_param *params = calloc((size_t)n, sizeof *params);
    jopt_optim *opt = NULL;
    for (int i = 0; params && i < n; i++)
        params[i] = (jopt_param){p[i], g[i], numel[i]};
    jopt_group group = {params, (size_t)n, NULL};
    if (!params || jopt_optim_new(ctx, o->spec, &group, 1, o->options, &opt))
        fprintf(stderr, "  %s: %s\n", o->label, jopt_errmsg(ctx));
    free(params);
    return opt;
}

static const float *state(jopt_optim *opt, const b_opt *o, int i, int s)
{
    const float *d = NULL;
    jopt_state_get(opt, 0, (size_t)i, o->statename[s], &d, NULL);
    return d;
}

int b_check(const b_opt *o, const int64_t *numel, int n, int threads, int steps)
{
    const b_graph *gr = o->graph;
    int nslots = 2 + gr->nstate, bad = 0; /* the inputs after them: given */
    int64_t total = 0, maxn = 0;
    for (int i = 0; i < n; i++) {
        total += numel[i];
        maxn = numel[i] > maxn ? numel[i] : maxn;
    }
    tensors t = {n, numel, calloc((size_t)n, sizeof(float *)),
                 calloc((size_t)n, sizeof(float *)), calloc((size_t)n, sizeof(float *)),
                 NULL, calloc((size_t)n, sizeof(float **)),
                 calloc((size_t)n, sizeof(float **))};
    jopt_optim *oj = NULL, *orf = NULL;
    b_unfused *unf = NULL;
    b_probe probe = {0, 0, 0, ""};
    double hand_rel = 0;
    char what[160] = "";
    t.in = calloc((size_t)n, sizeof(float *));
    if (!t.p || !t.pr || !t.g || !t.u || !t.h || !t.in) {
        bad = 1;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        t.p[i] = b_alloc(numel[i]);
        t.g[i] = b_alloc(numel[i]);
        if (!t.p[i] || !t.g[i]) {
            bad = 1;
            goto done;
        }
        b_fill(t.p[i], numel[i], 7 + (uint64_t)i);
        t.pr[i] = dup(t.p[i], numel[i]);
        if (o->ninput && (t.in[i] = b_alloc(numel[i]))) {
            b_fill(t.in[i], numel[i], 9 + (uint64_t)i);
            for (int64_t e = 0; e < numel[i]; e++)
                t.in[i][e] = 0.5f + fabsf(t.in[i][e]);
        }
    }
    oj = optim_over(threads > 1 ? b_ctx2 : b_ctx1, o, t.p, t.g, numel, n);
    orf = optim_over(b_ctxr, o, t.pr, t.g, numel, n);
    if (!oj || !orf || (!gr->unmodelled[0] && b_unfused_new(gr, maxn, &unf))) {
        bad = 1;
        goto done;
    }
    for (int k = 1; k <= steps && !bad; k++) {
        for (int i = 0; i < n; i++)
            b_fill(t.g[i], numel[i], 100 * (uint64_t)k + (uint64_t)i);
        if (k == steps && k > 1)
            b_probe_begin();
        b_give_inputs(o, oj, t.in, n);
        int rc = jopt_step(oj, NULL, NULL, NULL);
        if (k == steps && k > 1)
            b_probe_end(&probe);
        b_give_inputs(o, orf, t.in, n);
        if (rc || jopt_step(orf, NULL, NULL, NULL)) {
            snprintf(what, sizeof what, "step failed");
            bad = 1;
            break;
        }
        if (k == 1) { /* the others start from the JIT's state after step 1 */
            for (int i = 0; i < n; i++) {
                t.u[i] = calloc(B_MAX_SLOTS, sizeof(float *));
                t.h[i] = calloc(B_MAX_SLOTS, sizeof(float *));
                t.u[i][0] = dup(t.p[i], numel[i]);
                t.h[i][0] = dup(t.p[i], numel[i]);
                t.u[i][1] = t.h[i][1] = t.g[i];
                for (int s = 0; s < gr->nstate; s++) {
                    int64_t m = gr->scalar[2 + s] ? 1 : numel[i];
                    t.u[i][2 + s] = dup(state(oj, o, i, s), m);
                    t.h[i][2 + s] = dup(state(oj, o, i, s), m);
                }
            }
        } else {
            for (int i = 0; i < n; i++) {
                if (unf)
                    b_unfused_step(unf, k, t.u[i], numel[i]);
                if (o->hand.kind)
                    b_hand_step(&o->hand, k, t.h[i], 0, numel[i]);
            }
        }
        for (int i = 0; i < n && !bad; i++) {
            for (int s = 0; s < nslots && !bad; s++) {
                if (s == 1)
                    continue;
                int64_t m = gr->scalar[s] ? 1 : numel[i];
                const float *j = s ? state(oj, o, i, s - 2) : t.p[i];
                const float *r = s ? state(orf, o, i, s - 2) : t.pr[i];
                const char *name = s ? o->statename[s - 2] : "param";
                int64_t e;
                if (!j || !r) {
                    snprintf(what, sizeof what, "tensor %d has no %s", i, name);
                    bad = 1;
                    break;
                }
                if ((e = differ(j, r, m)) >= 0) {
                    snprintf(what, sizeof what, "step %d tensor %d %s[%lld]: jit %.9g, "
                             "reference %.9g", k, i, name, (long long)e, (double)j[e],
                             (double)r[e]);
                    bad = 1;
                } else if (k > 1 && unf && (e = differ(t.u[i][s], j, m)) >= 0) {
                    snprintf(what, sizeof what, "step %d tensor %d %s[%lld]: unfused "
                             "%.9g, jit %.9g", k, i, name, (long long)e,
                             (double)t.u[i][s][e], (double)j[e]);
                    bad = 1;
                } else if (k > 1 && o->hand.kind) {
                    double rd = rel_diff(t.h[i][s], j, m);
                    if (!(rd < 1e-4)) {
                        snprintf(what, sizeof what, "step %d tensor %d %s: hand-written "
                                 "loop %.2g from the jit (tolerance 1e-4)", k, i, name, rd);
                        bad = 1;
                    }
                    hand_rel = rd > hand_rel ? rd : hand_rel;
                }
            }
        }
    }
done:
    printf("  check %-24s %2d tensors %7lld elements, JIT on %d thread%s, %d steps: ",
           o->label, n, (long long)total, threads, threads > 1 ? "s" : "", steps);
    if (bad)
        printf("FAILED: %s\n", what[0] ? what : "could not set up");
    else {
        if (unf)
            printf("jit == reference == unfused (bits)");
        else
            printf("jit == reference (bits; unfused not modelled: %s)", gr->unmodelled);
        if (o->hand.kind)
            printf(", hand-written within %.1e", hand_rel);
        if (probe.allocs >= 0)
            printf("; step(): %ld allocations, %ld libm calls%s%s%s", probe.allocs,
                   probe.libm, probe.libm ? " (" : "", probe.libm_names,
                   probe.libm ? ")" : "");
        printf("\n");
    }
    fflush(stdout);
    jopt_optim_free(oj);
    jopt_optim_free(orf);
    b_unfused_free(unf);
    tensors_free(&t, nslots);
    return bad;
}

/* ---- construction -------------------------------------------------------------- */

#define CREPS 21

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return x[n / 2];
}

static void row(const char *opt, const char *cs, const char *impl, double *x, int n,
                const char *note)
{
    b_row *r = b_results_add(&b_res);
    if (!r)
        return;
    snprintf(r->optimizer, sizeof r->optimizer, "%s", opt);
    snprintf(r->casename, sizeof r->casename, "%s", cs);
    snprintf(r->impl, sizeof r->impl, "%s", impl);
    snprintf(r->note, sizeof r->note, "%s", note ? note : "");
    r->threads = 1;
    r->reps = n;
    r->inner = 1;
    r->med = median(x, n);
    r->min = x[0];
    r->max = x[n - 1];
}

static double build(jopt_ctx *ctx, const b_opt *o, const char *options)
{
    float p[64] = {0}, g[64] = {0};
    jopt_param param = {p, g, 64};
    jopt_group group = {&param, 1, NULL};
    jopt_optim *opt;
    double t0 = b_now();
    int rc = jopt_optim_new(ctx, o->spec, &group, 1, options, &opt);
    double t = b_now() - t0;
    if (rc) {
        fprintf(stderr, "  %s: %s\n", o->label, jopt_errmsg(ctx));
        return NAN;
    }
    jopt_optim_free(opt);
    return t;
}

void b_bench_construction(const b_opt *opts, int nopts, double first_s)
{
    printf("Construction (jopt_optim_new over one tensor; medians of %d; ms)\n", CREPS);
    printf("  first optimizer in the process (adam, LLVM start-up included): %.2f ms\n",
           first_s * 1e3);
    double one = first_s;
    row("adam", "construct", "first-optimizer", &one, 1, NULL);
    printf("  %-24s %7s %9s %9s %8s %9s | %8s %9s %8s\n", "optimizer", "kernels",
           "cold", "/kernel", "trace", "LLVM/k", "hit", "spec open", "rest");
    b_probe probe_free;
    for (int k = 0; k < nopts; k++) {
        /* a context each: the cache keeps 64 unused kernels, and the cold
         * builds would push the ones the hits want out of a shared one */
        jopt_ctx *ctx;
        if (jopt_ctx_new(&ctx))
            return;
        const b_opt *o = &opts[k];
        double cold[CREPS], hit[CREPS], perk[CREPS], open[CREPS], trace[CREPS];
        char options[256];
        size_t kernels = 0;
        for (int r = 0; r < CREPS; r++) {
            /* an lr the cache has never seen */
            snprintf(options, sizeof options, "%s lr=%.17g", o->options,
                     1e-3 * (r + 2 + 100 * k) + 1e-9);
            size_t c0, c1;
            jopt_ctx_stats(ctx, &c0, NULL);
            cold[r] = build(ctx, o, options);
            jopt_ctx_stats(ctx, &c1, NULL);
            kernels = c1 - c0;
            perk[r] = cold[r] / (double)(kernels ? kernels : 1);
            hit[r] = build(ctx, o, options);
        }
        /* the parts jopt.h can time: hold one optimizer so its spec and
         * kernel stay cached; opening the spec under the same options is a
         * hit's spec work (read and compare the file, parse the options,
         * check() in the kept sandbox); printing the graph traces it anew
         * each time (a cold build's trace, plus the printing) */
        float p[64] = {0}, g[64] = {0};
        jopt_param param = {p, g, 64};
        jopt_group group = {&param, 1, NULL};
        jopt_optim *held = NULL;
        jopt_optim_new(ctx, o->spec, &group, 1, o->options, &held);
        for (int r = 0; r < CREPS; r++) {
            jopt_spec *sp = NULL;
            const char *text;
            double t0 = b_now();
            int rc = jopt_spec_open(ctx, o->spec, o->options, &sp);
            open[r] = b_now() - t0;
            t0 = b_now();
            rc = rc ? rc : jopt_spec_emit(sp, NULL, "graph", &text);
            trace[r] = b_now() - t0;
            if (rc) {
                fprintf(stderr, "  %s: %s\n", o->label, jopt_errmsg(ctx));
                open[r] = trace[r] = NAN;
            }
            jopt_spec_free(sp);
        }
        b_probe pr;
        b_probe_begin();
        double th = b_now();
        jopt_optim *again = NULL;
        jopt_optim_new(ctx, o->spec, &group, 1, o->options, &again);
        th = b_now() - th;
        b_probe_end(&pr);
        b_probe_begin();
        jopt_optim_free(again);
        b_probe_end(&probe_free);
        if (pr.allocs >= 0 && k == 0)
            printf("  a cache hit (%s, %.3f ms): %ld Lua states started, %ld "
                   "allocations, %ld libm calls; jopt_optim_free: %ld allocations\n",
                   o->label, th * 1e3, pr.lua_states, pr.allocs, pr.libm,
                   probe_free.allocs);
        jopt_optim_free(held);
        jopt_ctx_free(ctx);
        row(o->label, "construct", "compile-cold", cold, CREPS, NULL);
        row(o->label, "construct", "compile-per-kernel", perk, CREPS, NULL);
        row(o->label, "construct", "cache-hit", hit, CREPS, NULL);
        row(o->label, "construct", "hit:spec-open", open, CREPS,
            "jopt_spec_open on a context holding the spec");
        row(o->label, "construct", "cold:trace", trace, CREPS,
            "jopt_spec_emit graph: trace and print");
        double mc = median(cold, CREPS), mk = median(perk, CREPS), mh = median(hit, CREPS);
        double mo = median(open, CREPS), mt = median(trace, CREPS);
        printf("  %-24s %7zu %9.3f %9.3f %8.3f %9.3f | %8.3f %9.3f %8.3f\n", o->label,
               kernels, mc * 1e3, mk * 1e3, mt * 1e3, (mk - mt) * 1e3, mh * 1e3,
               mo * 1e3, (mh - mo) * 1e3);
    }
    printf("  (cold: a new lr each time, so a trace and a compile per kernel; trace: "
           "jopt_spec_emit's graph,\n   which traces the update and prints it; hit: "
           "the same options again; spec open: jopt_spec_open\n   with those options "
           "on the same context (read and compare the file, parse, check()); rest:\n"
           "   the cache lookup and the rest of jopt_optim_new)\n");
    fflush(stdout);
}

/* ---- per-step overheads --------------------------------------------------------- */

static double time_steps(jopt_optim *opt, int per_sample, double *samples, int n)
{
    for (int i = 0; i < 50; i++)
        jopt_step(opt, NULL, NULL, NULL);
    for (int s = 0; s < n; s++) {
        double t0 = b_now();
        for (int i = 0; i < per_sample; i++)
            jopt_step(opt, NULL, NULL, NULL);
        samples[s] = (b_now() - t0) / per_sample;
    }
    return median(samples, n);
}

/* What the kernel's machine code holds: calls (to libm or anything) and
 * 512-bit vector instructions. */
static void kernel_code(const b_opt *o)
{
    const char *text = NULL;
    if (jopt_spec_emit(o->js, NULL, "asm", &text) != JOPT_OK) {
        printf("  kernel code: %s\n", jopt_errmsg(b_ctx1));
        return;
    }
    int calls = 0, zmm = 0, lines = 0;
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[256];
        snprintf(line, sizeof line, "%.*s", (int)(len < 255 ? len : 255), l);
        if (line[0] == '\t' && line[1] != '.')
            lines++;
        if (strstr(line, "\tcall"))
            calls++;
        if (strstr(line, "%zmm"))
            zmm++;
    }
    printf("  kernel code: %d instructions, %d calls, %d with zmm (512-bit) "
           "registers\n", lines, calls, zmm);
}

void b_bench_overhead(const b_opt *o)
{
    kernel_code(o);
    enum { NT = 161, NS = 15 };
    double s1[NS], s161[NS];
    float *p[NT], *g[NT];
    jopt_param params[NT];
    for (int i = 0; i < NT; i++) {
        p[i] = b_alloc(16);
        g[i] = b_alloc(16);
        b_fill(g[i], 16, (uint64_t)i);
        params[i] = (jopt_param){p[i], g[i], 16};
    }
    jopt_group one = {params, 1, NULL}, many = {params, NT, NULL};
    jopt_optim *o1 = NULL, *om = NULL;
    b_probe probe = {0, 0, 0, ""};
    if (jopt_optim_new(b_ctx1, o->spec, &one, 1, o->options, &o1) == JOPT_OK &&
        jopt_optim_new(b_ctx1, o->spec, &many, 1, o->options, &om) == JOPT_OK) {
        double t1 = time_steps(o1, 2000, s1, NS);
        double tm = time_steps(om, 100, s161, NS);
        b_probe_begin();
        jopt_step(om, NULL, NULL, NULL);
        b_probe_end(&probe);
        row(o->label, "1x16", "step-overhead", s1, NS, "one tensor of 16 elements");
        row(o->label, "161x16", "step-overhead", s161, NS, "161 tensors of 16 elements");
        printf("  step() overhead: %.2f us per call (1 tensor of 16), %.2f us per call "
               "(161 tensors of 16) = %.3f us per extra tensor;\n"
               "  the graph: %d nodes, %d per step, %d per-step values read per "
               "element; one step over 161 tensors: %ld allocations, %ld libm "
               "calls%s%s%s\n",
               t1 * 1e6, tm * 1e6, (tm - t1) / (NT - 1) * 1e6, o->graph->n,
               o->graph->nstep, o->graph->nuniform, probe.allocs, probe.libm,
               probe.libm ? " (" : "", probe.libm_names, probe.libm ? ")" : "");
    }
    jopt_optim_free(o1);
    jopt_optim_free(om);
    for (int i = 0; i < NT; i++) {
        free(p[i]);
        free(g[i]);
    }
    fflush(stdout);
}
