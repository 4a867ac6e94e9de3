/*
 * bench_optim.c - jopt's step() against the memory bandwidth of its own
 * access pattern, and against naive kernels, for each optimizer named.
 *
 *   construction   first optimizer (LLVM start-up), cold compile, cache hit
 *   per optimizer  check: JIT == reference interpreter == unfused (bits),
 *                  hand-written loop within tolerance; per-step overheads
 *     per case     sizes 4K..64M, ResNet-50's 161 tensors, one tensor of the
 *                  same total; set up and touch, warm up, then time in
 *                  rounds (one sample of each kernel per round, so noise
 *                  falls on all alike): memory-only, JIT, hand-written,
 *                  unfused, reference; on 1 and 2 threads
 *   report         tables (medians, spread), CSV, SVG, targets
 *
 * Usage: bench_optim [--smoke] [--quick] [--sizes N,N,..] [--no-model]
 *                    [--max-unfused N] [--max-reference N] [--budget S]
 *                    [--csv FILE] [--svg FILE] [spec[:options] ...]
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "resnet50.h"

jopt_ctx *b_ctx1, *b_ctx2, *b_ctxr;
b_results b_res;
static b_pool *pool;

static const char *const default_specs[] = {
    "sgd:momentum=0.9", "adam", "adamw", "rmsprop", "adagrad", "lion"};
/* the smoke test adds the rest of the family and some options */
static const char *const smoke_extra[] = {
    "sgd", "sgd:momentum=0.9 nesterov=true weight_decay=0.01",
    "adam:amsgrad=true weight_decay=0.1", "adamax", "adadelta", "asgd",
    "nadam", "radam", "rprop", "lamb", "rmsprop:centered=true momentum=0.9"};

typedef struct config {
    int smoke, model, construction;
    int64_t sizes[32];
    int ndim[32];         /* 0: flat; else the case's shape, dims[] */
    int64_t dims[32][4];
    int nsizes;
    int64_t max_unfused, max_reference;
    double budget;
    const char *csv, *svg;
    const char *specs[64];
    int nspecs, ndefault;
} config;

static int64_t parse_count(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'K' || *end == 'k')
        v *= 1024;
    else if (*end == 'M' || *end == 'm')
        v *= 1024 * 1024;
    return (int64_t)v;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_optim [--smoke] [--quick] [--sizes N,N,..] "
                    "[--no-model] [--no-construction]\n"
                    "                   [--max-unfused N] [--max-reference N] "
                    "[--budget SECONDS] [--csv FILE] [--svg FILE]\n"
                    "                   [spec[:options] ...]\n"
                    "sizes take K and M suffixes (4K = 4096), or are shapes "
                    "(2048x2048: one tensor of that shape);\ndefault "
                    "4K,16K,..,64M and ResNet-50\n");
    return 2;
}

static int parse_args(int argc, char **argv, config *c)
{
    memset(c, 0, sizeof *c);
    c->model = c->construction = 1;
    c->max_unfused = 32 << 20;
    c->max_reference = 4 << 20;
    c->budget = 2.5;
    c->csv = "bench_optim.csv";
    c->svg = "bench_optim.svg";
    for (int64_t n = 4096; n <= (64 << 20); n *= 4)
        c->sizes[c->nsizes++] = n;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--smoke"))
            c->smoke = 1;
        else if (!strcmp(a, "--quick")) {
            c->nsizes = 0;
            for (int64_t n = 4096; n <= (4 << 20); n *= 16)
                c->sizes[c->nsizes++] = n;
            c->budget = 0.3;
        } else if (!strcmp(a, "--no-model"))
            c->model = 0;
        else if (!strcmp(a, "--no-construction"))
            c->construction = 0;
        else if (!strcmp(a, "--sizes") && v) {
            c->nsizes = 0;
            for (const char *s = v; *s && c->nsizes < 32;) {
                /* N, or a shape RxC[xD[xE]] (one shaped tensor) */
                int k = c->nsizes++, nd = 0;
                int64_t n = 1;
                for (const char *d = s; nd < 4;) {
                    char *end;
                    c->dims[k][nd++] = strtoll(d, &end, 10);
                    n *= c->dims[k][nd - 1];
                    if (*end != 'x')
                        break;
                    d = end + 1;
                }
                c->ndim[k] = nd > 1 ? nd : 0;
                c->sizes[k] = nd > 1 ? n : parse_count(s);
                const char *comma = strchr(s, ',');
                s = comma ? comma + 1 : s + strlen(s);
            }
            i++;
        } else if (!strcmp(a, "--max-unfused") && v) {
            c->max_unfused = parse_count(v);
            i++;
        } else if (!strcmp(a, "--max-reference") && v) {
            c->max_reference = parse_count(v);
            i++;
        } else if (!strcmp(a, "--budget") && v) {
            c->budget = atof(v);
            i++;
        } else if (!strcmp(a, "--csv") && v) {
            c->csv = v;
            i++;
        } else if (!strcmp(a, "--svg") && v) {
            c->svg = v;
            i++;
        } else if (a[0] == '-')
            return usage();
        else if (c->nspecs < 64)
            c->specs[c->nspecs++] = a;
    }
    c->ndefault = c->nspecs;
    if (!c->nspecs) {
        for (size_t k = 0; k < sizeof default_specs / sizeof *default_specs; k++)
            c->specs[c->nspecs++] = default_specs[k];
        c->ndefault = c->nspecs;
        if (c->smoke)
            for (size_t k = 0; k < sizeof smoke_extra / sizeof *smoke_extra; k++)
                c->specs[c->nspecs++] = smoke_extra[k];
    }
    return 0;
}

/* ---- the optimizer under test -------------------------------------------- */

static double option(jopt_optim *opt, const char *name)
{
    double v;
    return jopt_option_get(opt, 0, name, &v) == JOPT_OK ? v : NAN;
}

/* Picks the hand-written loop that computes the same update, if any. */
static void choose_hand(b_opt *o, jopt_optim *opt)
{
    const b_graph *g = o->graph;
    memset(&o->hand, 0, sizeof o->hand);
    const char *name = jopt_spec_name(o->js);
    if (!strcmp(name, "sgd") && g->nstate == 1 &&
        !strcmp(o->statename[0], "momentum_buffer") && option(opt, "dampening") == 0 &&
        option(opt, "nesterov") == 0 && option(opt, "weight_decay") == 0 &&
        option(opt, "maximize") == 0) {
        o->hand.kind = B_HAND_SGD;
        o->hand.momentum = (float)option(opt, "momentum");
    } else if ((!strcmp(name, "adam") || !strcmp(name, "adamw")) && g->nstate == 2 &&
               !strcmp(o->statename[0], "exp_avg") &&
               !strcmp(o->statename[1], "exp_avg_sq") && option(opt, "maximize") == 0) {
        int w = !strcmp(name, "adamw");
        if (!w && (option(opt, "weight_decay") != 0 ||
                   option(opt, "decoupled_weight_decay") != 0))
            return;
        o->hand.kind = w ? B_HAND_ADAMW : B_HAND_ADAM;
        o->hand.beta1 = (float)option(opt, "betas[0]");
        o->hand.beta2 = (float)option(opt, "betas[1]");
        o->hand.eps = (float)option(opt, "eps");
        o->hand.wd = w ? (float)option(opt, "weight_decay") : 0.0f;
    } else {
        return;
    }
    o->hand.lr = (float)option(opt, "lr");
}

static void opt_free(b_opt *o)
{
    b_graph_free(o->graph);
    jopt_spec_free(o->js);
    o->graph = NULL;
    o->js = NULL;
}

static int opt_init(b_opt *o, const char *arg)
{
    memset(o, 0, sizeof *o);
    snprintf(o->label, sizeof o->label, "%s", arg);
    snprintf(o->spec, sizeof o->spec, "%s", arg);
    /* spec[:options]: the first ':' that has an '=' after it */
    for (char *c = o->spec; (c = strchr(c, ':')); c++)
        if (strchr(c, '=')) {
            snprintf(o->options, sizeof o->options, "%s", c + 1);
            *c = 0;
            break;
        }
    float p[16] = {0}, g[16] = {0};
    jopt_param param = {p, g, 16};
    jopt_group group = {&param, 1, NULL};
    jopt_optim *opt;
    if (jopt_optim_new(b_ctx1, o->spec, &group, 1, o->options, &opt) != JOPT_OK) {
        fprintf(stderr, "bench_optim: %s: %s\n", arg, jopt_errmsg(b_ctx1));
        return -1;
    }
    /* the spec under the same options: the steady kernel's graph and its
     * access pattern */
    const char *text;
    char err[256], inputs[256] = "";
    if (jopt_spec_open(b_ctx1, o->spec, o->options, &o->js) == JOPT_OK) {
        /* the spec's inputs are given at every step (Sophia's Hessian) */
        for (size_t k = 0; k < jopt_spec_ninputs(o->js) && k < 8; k++) {
            o->inputname[o->ninput++] = jopt_spec_input(o->js, k);
            size_t l = strlen(inputs);
            snprintf(inputs + l, sizeof inputs - l, "%s%s", k ? " " : "",
                     jopt_spec_input(o->js, k));
        }
    }
    if (!o->js || jopt_spec_set_variant(o->js, 2, inputs) != JOPT_OK ||
        b_pattern_of(o->js, &o->pat2) != 0 ||
        jopt_spec_set_variant(o->js, 1, inputs) != JOPT_OK ||
        jopt_spec_emit(o->js, NULL, "graph", &text) != JOPT_OK) {
        fprintf(stderr, "bench_optim: %s: %s\n", arg, jopt_errmsg(b_ctx1));
        goto fail;
    }
    if (b_graph_parse(text, o->js, &o->graph, err, sizeof err)) {
        fprintf(stderr, "bench_optim: %s: %s\n", arg, err);
        goto fail;
    }
    if (b_pattern_of(o->js, &o->pat) || o->pat.nslots != o->graph->nslots) {
        fprintf(stderr, "bench_optim: %s: %s\n", arg,
                o->pat.nslots ? "the kernel's arrays are not the graph's slots"
                              : jopt_errmsg(b_ctx1));
        goto fail;
    }
    for (int s = 0; s < o->graph->nstate; s++)
        o->statename[s] = o->graph->name[2 + s];
    choose_hand(o, opt);
    jopt_optim_free(opt);
    return 0;
fail:
    jopt_optim_free(opt);
    opt_free(o);
    return -1;
}

/* ---- one case: an optimizer's buffers under each engine -------------------- */

typedef struct bset {
    const b_opt *o;
    int n;
    const int64_t *numel;
    int ndim;             /* a one-tensor case with a shape: its dims */
    const int64_t *dims;
    const b_pattern *pat; /* the memory-only pattern of this case */
    int64_t total, maxn;
    float **p, **g, **in;
    jopt_optim *o1, *o2, *oref;
    float ***a1, ***a2; /* per tensor, the slots of o1 and o2 */
    b_unfused *unf;
    int t_hand, t_unf;
} bset;

static jopt_optim *make_optim(jopt_ctx *ctx, const b_opt *o, bset *b)
{
    jopt_param *params = calloc((size_t)b->n, sizeof *params);
    if (!params)
        return NULL;
    for (int i = 0; i < b->n; i++)
        params[i] = (jopt_param){b->p[i], b->g[i], b->numel[i]};
    jopt_group group = {params, (size_t)b->n, NULL};
    jopt_optim *opt = NULL;
    if (jopt_optim_new(ctx, o->spec, &group, 1, o->options, &opt) != JOPT_OK)
        fprintf(stderr, "bench_optim: %s: %s\n", o->label, jopt_errmsg(ctx));
    free(params);
    if (opt && b->ndim && jopt_set_shape(opt, 0, 0, b->ndim, b->dims) != JOPT_OK) {
        fprintf(stderr, "bench_optim: %s: %s\n", o->label, jopt_errmsg(ctx));
        jopt_optim_free(opt);
        opt = NULL;
    }
    /* the first step creates the state (and runs the fresh variant) */
    if (opt)
        b_give_inputs(o, opt, b->in, b->n);
    if (opt && jopt_step(opt, NULL, NULL, NULL) != JOPT_OK) {
        fprintf(stderr, "bench_optim: %s: %s\n", o->label, jopt_errmsg(ctx));
        jopt_optim_free(opt);
        opt = NULL;
    }
    return opt;
}

static float ***slots_of(const b_opt *o, bset *b, jopt_optim *opt)
{
    float ***a = calloc((size_t)b->n, sizeof *a);
    for (int i = 0; a && i < b->n; i++) {
        a[i] = calloc(B_MAX_SLOTS, sizeof **a);
        if (!a[i]) { /* none or all: the 2-thread loops run on every a[i] */
            while (i-- > 0)
                free(a[i]);
            free(a);
            return NULL;
        }
        a[i][0] = b->p[i];
        a[i][1] = b->g[i];
        for (int s = 0; s < o->graph->nstate; s++) {
            const float *d = NULL;
            jopt_state_get(opt, 0, (size_t)i, o->statename[s], &d, NULL);
            a[i][2 + s] = (float *)d;
        }
        for (int k = 0; k < o->ninput; k++)
            a[i][2 + o->graph->nstate + k] = b->in[i];
    }
    return a;
}

static void bset_free(bset *b)
{
    jopt_optim_free(b->o1);
    jopt_optim_free(b->o2);
    jopt_optim_free(b->oref);
    for (int i = 0; i < b->n; i++) {
        if (b->p)
            free(b->p[i]);
        if (b->g)
            free(b->g[i]);
        if (b->in)
            free(b->in[i]);
        if (b->a1)
            free(b->a1[i]);
        if (b->a2)
            free(b->a2[i]);
    }
    free(b->p);
    free(b->g);
    free(b->in);
    free(b->a1);
    free(b->a2);
    b_unfused_free(b->unf);
    memset(b, 0, sizeof *b);
}

static int bset_new(bset *b, const b_opt *o, const int64_t *numel, int n,
                    int ndim, const int64_t *dims, int want_ref, int want_unf)
{
    memset(b, 0, sizeof *b);
    b->o = o;
    b->n = n;
    b->numel = numel;
    b->ndim = n == 1 ? ndim : 0;
    b->dims = dims;
    b->pat = b->ndim ? &o->pat2 : &o->pat;
    for (int i = 0; i < n; i++) {
        b->total += numel[i];
        b->maxn = numel[i] > b->maxn ? numel[i] : b->maxn;
    }
    size_t cnt = n > 0 ? (size_t)n : 1;
    b->p = calloc(cnt, sizeof *b->p);
    b->g = calloc(cnt, sizeof *b->g);
    b->in = calloc(cnt, sizeof *b->in);
    if (!b->p || !b->g || !b->in)
        goto fail;
    for (int i = 0; i < n; i++) {
        if (!(b->p[i] = b_alloc(numel[i])) || !(b->g[i] = b_alloc(numel[i])))
            goto fail;
        b_fill(b->p[i], numel[i], 1 + (uint64_t)i);
        b_fill(b->g[i], numel[i], 1000 + (uint64_t)i);
        if (o->ninput) { /* positive, as a Hessian estimate's EMA would be */
            if (!(b->in[i] = b_alloc(numel[i])))
                goto fail;
            b_fill(b->in[i], numel[i], 2000 + (uint64_t)i);
            for (int64_t e = 0; e < numel[i]; e++)
                b->in[i][e] = 0.5f + fabsf(b->in[i][e]);
        }
    }
    if (!(b->o1 = make_optim(b_ctx1, o, b)) || !(b->o2 = make_optim(b_ctx2, o, b)))
        goto fail;
    if (want_ref && !(b->oref = make_optim(b_ctxr, o, b)))
        goto fail;
    if (!(b->a1 = slots_of(o, b, b->o1)) || !(b->a2 = slots_of(o, b, b->o2)))
        goto fail;
    if (want_unf && b_unfused_new(o->graph, b->maxn, &b->unf))
        goto fail; /* run_shapes wants none where the graph is not modelled */
    b->t_hand = b->t_unf = 2;
    return 0;
fail:
    fprintf(stderr, "bench_optim: %s: could not set up %lld elements\n", o->label,
            (long long)b->total);
    bset_free(b);
    return -1;
}

/* ---- what is timed ----------------------------------------------------------- */

void b_give_inputs(const b_opt *o, jopt_optim *opt, float *const *in, int n)
{
    for (int k = 0; k < o->ninput; k++)
        for (int i = 0; i < n; i++)
            jopt_set_input(opt, 0, (size_t)i, o->inputname[k], in[i]);
}

static void step(bset *b, jopt_optim *opt)
{
    b_give_inputs(b->o, opt, b->in, b->n);
    jopt_step(opt, NULL, NULL, NULL);
}

static void run_jit1(bset *b) { step(b, b->o1); }
static void run_jit2(bset *b) { step(b, b->o2); }
static void run_ref(bset *b) { step(b, b->oref); }

/* The arrays of the optimizer the JIT runs on as many threads: o1's state
 * for 1 thread, o2's for 2.  Where an array's pages fall moves a fused
 * loop's speed on this VM by up to 2x (bench/RESULTS.md), so a roof timed
 * on other arrays than the kernel's is no roof. */
static float *const *slots_for(const bset *b, int i, int nt)
{
    return nt > 1 ? b->a2[i] : b->a1[i];
}

static void membw_task(void *arg, int t, int nt)
{
    bset *b = arg;
    for (int i = 0; i < b->n; i++) {
        int64_t lo, hi;
        b_split(b->numel[i], t, nt, &lo, &hi);
        b_membw(b->pat, slots_for(b, i, nt), lo, hi);
    }
}

static void hand_task(void *arg, int t, int nt)
{
    bset *b = arg;
    for (int i = 0; i < b->n; i++) {
        int64_t lo, hi;
        b_split(b->numel[i], t, nt, &lo, &hi);
        b_hand_step(&b->o->hand, b->t_hand, slots_for(b, i, nt), lo, hi);
    }
}

static void run_membw1(bset *b) { b_pool_run(pool, 1, membw_task, b); }
static void run_membw2(bset *b) { b_pool_run(pool, 2, membw_task, b); }
static void run_hand1(bset *b) { b_pool_run(pool, 1, hand_task, b); b->t_hand++; }
static void run_hand2(bset *b) { b_pool_run(pool, 2, hand_task, b); b->t_hand++; }

static void run_unfused(bset *b)
{
    for (int i = 0; i < b->n; i++)
        b_unfused_step(b->unf, b->t_unf, b->a1[i], b->numel[i]);
    b->t_unf++;
}

typedef struct runner {
    bset *b;
    const char *impl;
    int threads;
    void (*fn)(bset *);
    int inner;
    double est, samples[128];
} runner;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Warms each kernel up, sizes its samples to >= 2 ms, then takes rounds of
 * one sample of each until the budget is spent (at least min_rounds), so
 * that the machine's noise falls on every kernel alike. */
static int measure(runner *rs, int nr, double budget, int min_rounds)
{
    double round = 0;
    for (int r = 0; r < nr; r++) {
        rs[r].fn(rs[r].b); /* warm-up */
        int calls = 0;
        double t0 = b_now(), t;
        do {
            rs[r].fn(rs[r].b);
            calls++;
        } while ((t = b_now() - t0) < 0.01 && calls < 100000);
        rs[r].est = t / calls;
        rs[r].inner = rs[r].est >= 2e-3 ? 1 : (int)ceil(2e-3 / rs[r].est);
        round += rs[r].inner * rs[r].est;
    }
    int rounds = (int)(budget / round);
    rounds = rounds < min_rounds ? min_rounds : rounds > 101 ? 101 : rounds;
    for (int k = 0; k < rounds; k++)
        for (int r = 0; r < nr; r++) {
            double t0 = b_now();
            for (int i = 0; i < rs[r].inner; i++)
                rs[r].fn(rs[r].b);
            rs[r].samples[k] = (b_now() - t0) / rs[r].inner;
        }
    return rounds;
}

/* the streamed arrays hold numbers (a shaped case's small states are
 * checked by the tests) */
static int all_finite(const bset *b)
{
    for (int i = 0; i < b->n; i++)
        for (int s = 0; s < b->pat->nslots; s++) {
            if (!(b->pat->read[s] || b->pat->written[s]))
                continue;
            for (int k = 0; k < 2; k++) { /* o1's arrays, and o2's */
                const float *x = (k ? b->a2 : b->a1)[i][s];
                for (int64_t e = 0; x && e < b->numel[i]; e++)
                    if (!isfinite(x[e]))
                        return 0;
            }
        }
    return 1;
}

/* one tensor list to time: its name and sizes (and a one-tensor case's
 * shape, ndim 0 for flat) */
typedef struct shape {
    const char *name;
    const int64_t *numel;
    int n;
    int ndim;
    const int64_t *dims;
} shape;

static int add_runners(runner *rs, bset *b, int want_unf, int want_ref)
{
    const b_opt *o = b->o;
    int nr = 0;
    rs[nr++] = (runner){b, "membw", 1, run_membw1, 0, 0, {0}};
    rs[nr++] = (runner){b, "jit", 1, run_jit1, 0, 0, {0}};
    if (o->hand.kind)
        rs[nr++] = (runner){b, "hand", 1, run_hand1, 0, 0, {0}};
    if (want_unf)
        rs[nr++] = (runner){b, "unfused", 1, run_unfused, 0, 0, {0}};
    if (want_ref)
        rs[nr++] = (runner){b, "reference", 1, run_ref, 0, 0, {0}};
    rs[nr++] = (runner){b, "membw", 2, run_membw2, 0, 0, {0}};
    rs[nr++] = (runner){b, "jit", 2, run_jit2, 0, 0, {0}};
    if (o->hand.kind)
        rs[nr++] = (runner){b, "hand", 2, run_hand2, 0, 0, {0}};
    return nr;
}

/* Times the shapes together (ResNet-50 and one tensor of its size are
 * timed in the same rounds, so their ratio sees the same machine). */
static void run_shapes(const config *c, const b_opt *o, const shape *sh, int nsh)
{
    bset b[2];
    runner rs[16];
    int nr = 0, ok = 1, want_unf[2], want_ref[2];
    int64_t total[2] = {0, 0}, most = 0;
    double t0 = b_now();
    for (int k = 0; k < nsh; k++) {
        for (int i = 0; i < sh[k].n; i++)
            total[k] += sh[k].numel[i];
        most = total[k] > most ? total[k] : most;
        want_ref[k] = total[k] <= c->max_reference;
        want_unf[k] = total[k] <= c->max_unfused && !o->graph->unmodelled[0] && !sh[k].ndim;
        if (bset_new(&b[k], o, sh[k].numel, sh[k].n, sh[k].ndim, sh[k].dims, want_ref[k],
                     want_unf[k])) {
            for (int j = 0; j < k; j++)
                bset_free(&b[j]);
            return;
        }
        nr += add_runners(rs + nr, &b[k], want_unf[k], want_ref[k]);
    }
    int rounds = measure(rs, nr, c->budget * nsh, most >= (32 << 20) ? 7 : 9);
    size_t first = b_res.n; /* rows by index: b_results_add may move them */
    double roof[2][3] = {{0}};
    for (int r = 0; r < nr; r++) {
        int k = rs[r].b == &b[0] ? 0 : 1;
        qsort(rs[r].samples, (size_t)rounds, sizeof(double), cmp_double);
        b_row *x = b_results_add(&b_res);
        if (!x)
            break;
        snprintf(x->optimizer, sizeof x->optimizer, "%s", o->label);
        snprintf(x->casename, sizeof x->casename, "%s", sh[k].name);
        snprintf(x->impl, sizeof x->impl, "%s", rs[r].impl);
        x->numel = total[k];
        x->ntensors = sh[k].n;
        x->threads = rs[r].threads;
        x->reps = rounds;
        x->inner = rs[r].inner;
        x->med = rs[r].samples[rounds / 2];
        x->min = rs[r].samples[0];
        x->max = rs[r].samples[rounds - 1];
        x->bytes = b_pattern_bytes(b[k].pat) * (double)total[k];
        if (!strcmp(rs[r].impl, "membw"))
            roof[k][rs[r].threads] = x->med;
        if (!strcmp(rs[r].impl, "jit") && rs[r].threads == 2 && total[k] < B_PARALLEL_MIN)
            snprintf(x->note, sizeof x->note, "runs on the caller (< %d elements)",
                     B_PARALLEL_MIN);
        if (!strcmp(rs[r].impl, "hand"))
            snprintf(x->note, sizeof x->note, "%s", b_hand_name(o->hand.kind));
    }
    /* the roof for t threads: the faster memory-only run on <= t threads */
    for (size_t i = first; i < b_res.n; i++) {
        b_row *x = &b_res.rows[i];
        int k = nsh > 1 && !strcmp(x->casename, sh[1].name);
        double r1 = roof[k][1], r2 = roof[k][2];
        x->roof = x->threads >= 2 && r2 > 0 && r2 < r1 ? r2 : r1;
    }
    for (int k = 0; k < nsh; k++) {
        ok &= all_finite(&b[k]);
        printf("  %-14s %3d tensors %10lld elements: %d rounds%s%s%s\n", sh[k].name,
               sh[k].n, (long long)total[k], rounds,
               want_unf[k] ? "" : o->graph->unmodelled[0] || sh[k].ndim
                                  ? " (unfused: not modelled)" : " (unfused skipped)",
               want_ref[k] ? "" : " (reference skipped)", ok ? "" : " NON-FINITE VALUES");
        bset_free(&b[k]);
    }
    printf("  %*s(%.1f s)\n", 2, "", b_now() - t0);
    fflush(stdout);
}

/* ---- targets ----------------------------------------------------------------- */

static const b_row *find_row(const char *opt, const char *cs, int threads,
                             const char *impl)
{
    for (size_t i = 0; i < b_res.n; i++) {
        const b_row *x = &b_res.rows[i];
        if (!strcmp(x->optimizer, opt) && !strcmp(x->casename, cs) &&
            x->threads == threads && !strcmp(x->impl, impl))
            return x;
    }
    return NULL;
}

static void print_targets(const config *c, const b_opt *opts, int nopts)
{
    printf("\nTargets (reported, not asserted)\n");
    for (int k = 0; k < nopts; k++) {
        const b_opt *o = &opts[k];
        const char *name = jopt_spec_name(o->js);
        for (int t = 1; t <= 2; t++) {
            double worst = 1e9, wn = 0, unf = 1e9;
            for (int s = 0; s < c->nsizes; s++) {
                char cs[32];
                snprintf(cs, sizeof cs, "n=%lld", (long long)c->sizes[s]);
                const b_row *j = find_row(o->label, cs, t, "jit");
                const b_row *u = find_row(o->label, cs, 1, "unfused");
                if (!j)
                    continue;
                if (c->sizes[s] >= (4 << 20) && j->roof > 0 && j->roof / j->med < worst) {
                    worst = j->roof / j->med;
                    wn = (double)c->sizes[s];
                }
                if (t == 1 && u && u->med / j->med < unf)
                    unf = u->med / j->med;
            }
            if (worst < 1e9 && (!strcmp(name, "adam") || !strcmp(name, "sgd") ||
                                !strcmp(name, "adamw")))
                printf("  %-22s %d thr: >= 90%% of memory-only from 4M up: worst %.0f%% "
                       "(at %.0fM) %s\n", o->label, t, 100 * worst, wn / (1 << 20),
                       worst >= 0.9 ? "MET" : "MISSED");
            else if (worst < 1e9)
                printf("  %-22s %d thr: share of memory-only from 4M up: worst %.0f%% "
                       "(at %.0fM)\n", o->label, t, 100 * worst, wn / (1 << 20));
            if (t == 1 && unf < 1e9)
                printf("  %-22s 1 thr: >= 4x the unfused kernel: least %.1fx %s\n",
                       o->label, unf, unf >= 4 ? "MET" : "MISSED");
            const b_row *m = find_row(o->label, "resnet50", t, "jit");
            const b_row *f = find_row(o->label, "resnet50-flat", t, "jit");
            if (m && f)
                printf("  %-22s %d thr: 161 tensors within 1.15x of one tensor: "
                       "%.3fx %s\n", o->label, t, m->med / f->med,
                       m->med / f->med <= 1.15 ? "MET" : "MISSED");
        }
    }
}

/* the machine is shared: say how busy it was */
static void print_load(const char *when)
{
    char buf[128] = "";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = 0;
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = 0;
    printf("load average at %s: %s\n", when, buf[0] ? buf : "unknown");
}

/* ---- main ---------------------------------------------------------------------- */

static int64_t resnet_numel[RESNET50_TENSORS];

int main(int argc, char **argv)
{
    config c;
    if (parse_args(argc, argv, &c))
        return 2;
    if (jopt_ctx_new(&b_ctx1) || jopt_ctx_new(&b_ctx2) || jopt_ctx_new(&b_ctxr))
        return 1;
    jopt_ctx_set_threads(b_ctx1, 1);
    jopt_ctx_set_threads(b_ctx2, 2);
    jopt_ctx_set_threads(b_ctxr, 1);
    jopt_ctx_set_engine(b_ctxr, JOPT_ENGINE_REFERENCE);
    pool = b_pool_new(2);

    /* the first optimizer in the process pays for LLVM's start-up */
    double first = 0;
    if (!c.smoke) {
        jopt_ctx *ctx;
        float p[16] = {0}, g[16] = {0};
        jopt_param param = {p, g, 16};
        jopt_group group = {&param, 1, NULL};
        jopt_optim *opt;
        jopt_ctx_new(&ctx);
        double t0 = b_now();
        if (jopt_optim_new(ctx, "adam", &group, 1, NULL, &opt) == JOPT_OK) {
            first = b_now() - t0;
            jopt_optim_free(opt);
        }
        jopt_ctx_free(ctx);
    }

    b_opt *opts = calloc((size_t)c.nspecs, sizeof *opts);
    int nopts = 0, bad = 0;
    for (int k = 0; k < c.nspecs; k++) {
        if (opt_init(&opts[nopts], c.specs[k]) == 0)
            nopts++;
        else
            bad++;
    }
    char pt[32];
    printf("bench_optim: %d optimizers; patterns:", nopts);
    for (int k = 0; k < nopts; k++)
        printf(" %s %s%s", opts[k].label, b_pattern_text(&opts[k].pat, pt, sizeof pt),
               k + 1 < nopts ? "," : "\n");
    printf("probes: %s\n\n", b_probe_available() ? "allocations and libm calls counted"
                                                 : "off (sanitizer build)");

    if (c.smoke) {
        /* small tensors around the vector width, a chunk boundary, and
         * enough in all for the thread pool */
        static const int64_t sizes[] = {1, 17, 4099, 65539, 200003};
        for (int k = 0; k < nopts; k++) {
            bad += b_check(&opts[k], sizes, 5, 2, 3) != 0;
            if (k < c.ndefault) /* and on one thread */
                bad += b_check(&opts[k], sizes, 3, 1, 2) != 0;
        }
        printf("\nbench_optim --smoke: %d optimizers, %s\n", nopts,
               bad ? "FAILED" : "all results agree");
        for (int k = 0; k < nopts; k++)
            opt_free(&opts[k]);
        free(opts);
        b_pool_free(pool);
        jopt_ctx_free(b_ctx1);
        jopt_ctx_free(b_ctx2);
        jopt_ctx_free(b_ctxr);
        return bad ? 1 : 0;
    }

    double t_start = b_now();
    print_load("start");
    if (c.construction)
        b_bench_construction(opts, nopts, first);
    for (int i = 0; i < RESNET50_TENSORS; i++)
        resnet_numel[i] = resnet50[i].numel;
    for (int k = 0; k < nopts; k++) {
        const b_opt *o = &opts[k];
        char pt2[64];
        b_pattern_text(&o->pat2, pt2, sizeof pt2);
        printf("\n== %s: %s, %.0f bytes per element per step (a 2-D tensor: %s, %.0f); "
               "hand-written: %s%s\n", o->label, b_pattern_text(&o->pat, pt, sizeof pt),
               b_pattern_bytes(&o->pat), pt2, b_pattern_bytes(&o->pat2),
               b_hand_name(o->hand.kind),
               b_membw_fused(&o->pat) && b_membw_fused(&o->pat2)
                   ? "" : "; memory-only roof: arrays streamed in blocks, not fused");
        /* results first: a few steps on odd sizes (chunk edges, the pool),
         * and on ResNet-50's first tensors */
        static const int64_t sizes[] = {3, 4099, 65539, 300007};
        int64_t model[12];
        for (int i = 0; i < 12; i++)
            model[i] = resnet50[i].numel;
        if (b_check(o, sizes, 4, 2, 4) || b_check(o, model, 12, 1, 3)) {
            printf("  results differ: %s not timed\n", o->label);
            bad++;
            continue;
        }
        b_bench_overhead(o);
        for (int s = 0; s < c.nsizes; s++) {
            char cs[32];
            if (c.ndim[s]) {
                int at = 0;
                for (int d = 0; d < c.ndim[s]; d++)
                    at += snprintf(cs + at, sizeof cs - (size_t)at, "%s%lld", d ? "x" : "",
                                   (long long)c.dims[s][d]);
            } else {
                snprintf(cs, sizeof cs, "n=%lld", (long long)c.sizes[s]);
            }
            shape one = {cs, &c.sizes[s], 1, c.ndim[s], c.dims[s]};
            run_shapes(&c, o, &one, 1);
        }
        if (c.model) {
            static const int64_t flat = RESNET50_NUMEL;
            shape two[2] = {{"resnet50", resnet_numel, RESNET50_TENSORS, 0, NULL},
                            {"resnet50-flat", &flat, 1, 0, NULL}};
            run_shapes(&c, o, two, 2);
        }
        /* the memory-only rows name the pattern (the tables' headers) */
        for (size_t i = 0; i < b_res.n; i++)
            if (!strcmp(b_res.rows[i].optimizer, o->label) &&
                !strcmp(b_res.rows[i].impl, "membw"))
                b_pattern_text(&o->pat, b_res.rows[i].note, sizeof b_res.rows[i].note);
    }
    printf("\nTimes are medians of the rounds; spread = fastest/slowest sample against "
           "the median.\nroof = memory-only GB/s at <= that many threads, for the "
           "optimizer's own pattern.\n");
    b_print_tables(&b_res, stdout);
    print_targets(&c, opts, nopts);
    if (b_write_csv(&b_res, c.csv) == 0)
        printf("\nwrote %s\n", c.csv);
    if (b_write_svg(&b_res, c.svg, "jopt step() throughput against size, "
                                   "1 and 2 threads (bench_optim)") == 0)
        printf("wrote %s\n", c.svg);
    print_load("end");
    printf("total %.0f s\n", b_now() - t_start);
    for (int k = 0; k < nopts; k++)
        opt_free(&opts[k]);
    free(opts);
    b_results_free(&b_res);
    b_pool_free(pool);
    jopt_ctx_free(b_ctx1);
    jopt_ctx_free(b_ctx2);
    jopt_ctx_free(b_ctxr);
    return bad ? 1 : 0;
}
