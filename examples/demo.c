/*
 * demo.c - train a small neural network in plain C with jopt, SGD and Adam
 * side by side; then fit a full-batch model with L-BFGS and conjugate
 * gradient beside full-batch Adam and SGD.
 *
 * The model is a two-layer perceptron (64 inputs -> 64 tanh units -> 10
 * classes, softmax cross-entropy) with a hand-written forward and backward
 * pass.  The data is the UCI handwritten digits set kept in the repository
 * (data/digits.bin, 1797 8x8 images; see data/README.md).  Both optimizers
 * start from the same weights and see the same minibatches in the same
 * order, so the table compares the update rules and nothing else.
 *
 * What it shows of the jopt API:
 *   - parameters as plain float buffers with their gradient buffers
 *     (jopt_param), in two parameter groups with their own options
 *     (weights with the optimizer-wide defaults, biases without weight
 *     decay) - torch's  optim.SGD([{"params": w}, {"params": b,
 *     "weight_decay": 0}], lr=0.1, momentum=0.9, weight_decay=1e-4);
 *   - the training loop: jopt_zero_grad, forward + backward, jopt_step;
 *   - the closure form of jopt_step (used for the last batch of each epoch);
 *   - reading back a group's options with jopt_option_get;
 *   - error handling: every call's status is checked and jopt_errmsg says
 *     what went wrong;
 *   - closure optimizers (part 2): L-BFGS with a strong-Wolfe line search
 *     and conjugate gradient evaluate the closure several times per
 *     jopt_step.  The problem is softmax regression with a little L2 over
 *     the whole training set, which is where these methods belong: the
 *     loss is deterministic, so line searches mean something.  Every
 *     optimizer there gets the same closure and the same budget of closure
 *     evaluations, which is the fair unit: an evaluation is a pass over the
 *     data, and costs far more than the optimizer's own work.
 *
 * Data-parallel mode (built where jopt found MPI): the same MLP, its
 * optimizer state sharded across processes (jopt_mpi.h), each process
 * computing the gradient of its part of every minibatch:
 *
 *   mpirun -np 2 jopt_demo --data-parallel   2 processes, half a batch each
 *   jopt_demo --data-parallel                1 process, the batch in 2
 *                                            halves (gradient accumulation)
 *
 * print the same losses and the same final parameters, bit for bit.
 *
 * Usage:  jopt_demo [--epochs N] [--evals N] [--svg FILE]
 *                   [--data-parallel [--parts P]] [path/to/digits.bin]
 *         (default: 10 epochs, 100 evaluations, data/digits.bin, i.e. run
 *         from the repo root)
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jopt.h"
#ifdef JOPT_DEMO_MPI
#include "jopt_mpi.h"
#endif

#define HIDDEN 64       /* hidden units */
#define BATCH 32        /* minibatch size */
#define SEED 20240601u  /* data shuffle, split and initial weights */
#define FEATURE_MAX 16  /* the digits' pixel values are 0..16 */
#define L2 1e-4         /* full batch: loss + L2/2 * |W|^2 */

/* ---- small helpers ------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        fprintf(stderr, "demo: out of memory\n");
        exit(EXIT_FAILURE);
    }
    return p;
}

/* Exits with jopt's message if a jopt call failed. */
static void check(int status, const jopt_ctx *ctx, const char *what)
{
    if (status != JOPT_OK) {
        const char *msg = ctx ? jopt_errmsg(ctx) : "";
        fprintf(stderr, "demo: %s failed: %s%s%s\n", what, jopt_strerror(status),
                *msg ? ": " : "", msg);
        exit(EXIT_FAILURE);
    }
}

/* splitmix64: a tiny, good-enough, seedable generator. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

static float rng_uniform(uint64_t *s, float lo, float hi) /* [lo, hi) */
{
    return lo + (hi - lo) * (float)((double)(rng_next(s) >> 40) * 0x1p-24);
}

static void shuffle(int *a, int n, uint64_t *s) /* Fisher-Yates */
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(rng_next(s) % (uint64_t)(i + 1));
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---- data --------------------------------------------------------------- */

typedef struct dataset {
    int n, d, k;  /* samples, features, classes */
    float *x;     /* n x d, scaled to [0, 1] */
    uint8_t *y;   /* n labels in 0..k-1 */
} dataset;

/* Loads the file written by data/make_digits.py: a header line
 * "digits <n> <d> <k>\n", n*d uint8 features, n uint8 labels. */
static int load_digits(const char *path, dataset *ds)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "demo: cannot open %s: %s\n", path, strerror(errno));
        fprintf(stderr, "demo: run from the repository root, pass the path to "
                        "digits.bin, or regenerate it with "
                        "python3 data/make_digits.py\n");
        return -1;
    }

    char header[64];
    if (!fgets(header, sizeof header, f) || !strchr(header, '\n')) {
        fprintf(stderr, "demo: %s: no header line\n", path);
        fclose(f);
        return -1;
    }
    int n = 0, d = 0, k = 0, used = 0;
    if (sscanf(header, "digits %d %d %d\n%n", &n, &d, &k, &used) != 3 ||
        header[used] != '\0' || n < 12 || n > 1000000 || d < 1 || d > 4096 ||
        k < 2 || k > 256) {
        fprintf(stderr, "demo: %s: malformed header, expected "
                        "\"digits <n> <d> <k>\"\n", path);
        fclose(f);
        return -1;
    }

    size_t nx = (size_t)n * (size_t)d;
    uint8_t *raw = xcalloc(nx + (size_t)n + 1, 1);
    size_t got = fread(raw, 1, nx + (size_t)n + 1, f); /* +1 detects excess */
    int read_error = ferror(f);
    fclose(f);
    if (read_error || got != nx + (size_t)n) {
        if (read_error)
            fprintf(stderr, "demo: %s: read error\n", path);
        else
            fprintf(stderr, "demo: %s: wrong size: expected %zu bytes after "
                            "the header, found %s\n", path, nx + (size_t)n,
                    got > nx + (size_t)n ? "more" : "fewer");
        free(raw);
        return -1;
    }

    ds->n = n;
    ds->d = d;
    ds->k = k;
    ds->x = xcalloc(nx, sizeof(float));
    ds->y = xcalloc((size_t)n, 1);
    for (size_t i = 0; i < nx; i++) {
        if (raw[i] > FEATURE_MAX) {
            fprintf(stderr, "demo: %s: feature %zu is %d, outside 0..%d\n",
                    path, i, raw[i], FEATURE_MAX);
            goto bad;
        }
        ds->x[i] = (float)raw[i] / (float)FEATURE_MAX;
    }
    for (int i = 0; i < n; i++) {
        ds->y[i] = raw[nx + (size_t)i];
        if (ds->y[i] >= k) {
            fprintf(stderr, "demo: %s: label %d is %d, outside 0..%d\n", path,
                    i, ds->y[i], k - 1);
            goto bad;
        }
    }
    free(raw);
    return 0;

bad:
    free(raw);
    free(ds->x);
    free(ds->y);
    return -1;
}

/* ---- model: x (d) -> tanh(W1 x + b1) (HIDDEN) -> W2 h + b2 (k) ---------- */

typedef struct model {
    int d, k;
    float *w1, *b1, *w2, *b2;     /* parameters: HIDDEN x d, HIDDEN, k x HIDDEN, k */
    float *gw1, *gb1, *gw2, *gb2; /* their gradients */
    float *h;                     /* scratch: BATCH x HIDDEN activations */
    float *p;                     /* scratch: k probabilities */
    float *dh;                    /* scratch: HIDDEN */
} model;

static void model_init(model *m, int d, int k)
{
    m->d = d;
    m->k = k;
    m->w1 = xcalloc((size_t)HIDDEN * (size_t)d, sizeof(float));
    m->b1 = xcalloc(HIDDEN, sizeof(float));
    m->w2 = xcalloc((size_t)k * HIDDEN, sizeof(float));
    m->b2 = xcalloc((size_t)k, sizeof(float));
    m->gw1 = xcalloc((size_t)HIDDEN * (size_t)d, sizeof(float));
    m->gb1 = xcalloc(HIDDEN, sizeof(float));
    m->gw2 = xcalloc((size_t)k * HIDDEN, sizeof(float));
    m->gb2 = xcalloc((size_t)k, sizeof(float));
    m->h = xcalloc((size_t)BATCH * HIDDEN, sizeof(float));
    m->p = xcalloc((size_t)k, sizeof(float));
    m->dh = xcalloc(HIDDEN, sizeof(float));
}

static void model_free(model *m)
{
    float *bufs[] = {m->w1, m->b1, m->w2, m->b2, m->gw1, m->gb1,
                     m->gw2, m->gb2, m->h, m->p, m->dh};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
}

/* torch.nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static void model_randomize(model *m, uint64_t *s)
{
    float a1 = 1.0f / sqrtf((float)m->d), a2 = 1.0f / sqrtf((float)HIDDEN);
    for (int i = 0; i < HIDDEN * m->d; i++) m->w1[i] = rng_uniform(s, -a1, a1);
    for (int i = 0; i < HIDDEN; i++) m->b1[i] = rng_uniform(s, -a1, a1);
    for (int i = 0; i < m->k * HIDDEN; i++) m->w2[i] = rng_uniform(s, -a2, a2);
    for (int i = 0; i < m->k; i++) m->b2[i] = rng_uniform(s, -a2, a2);
}

static void model_copy_params(model *dst, const model *src)
{
    memcpy(dst->w1, src->w1, sizeof(float) * (size_t)HIDDEN * (size_t)src->d);
    memcpy(dst->b1, src->b1, sizeof(float) * HIDDEN);
    memcpy(dst->w2, src->w2, sizeof(float) * (size_t)src->k * HIDDEN);
    memcpy(dst->b2, src->b2, sizeof(float) * (size_t)src->k);
}

/* Forward pass over samples idx[0..count) (count <= BATCH): returns the mean
 * cross-entropy loss and adds the number of correct predictions to *correct
 * (if not NULL).  With backward != 0 it also ADDS the gradient of the mean
 * loss to the gradient buffers, as torch's backward() accumulates - which is
 * why each step starts with zero_grad. */
static double forward_backward(model *m, const dataset *ds, const int *idx,
                               int count, int backward, int *correct)
{
    const int d = m->d, k = m->k;
    double loss = 0.0;
    for (int i = 0; i < count; i++) {
        const float *x = ds->x + (size_t)idx[i] * (size_t)d;
        const int y = ds->y[idx[i]];
        float *h = m->h + (size_t)i * HIDDEN;

        for (int j = 0; j < HIDDEN; j++) {
            const float *w = m->w1 + (size_t)j * (size_t)d;
            float z = m->b1[j];
            for (int c = 0; c < d; c++) z += w[c] * x[c];
            h[j] = tanhf(z);
        }
        float zmax = -INFINITY;
        int best = 0;
        for (int c = 0; c < k; c++) {
            const float *w = m->w2 + (size_t)c * HIDDEN;
            float z = m->b2[c];
            for (int j = 0; j < HIDDEN; j++) z += w[j] * h[j];
            m->p[c] = z;
            if (z > zmax) {
                zmax = z;
                best = c;
            }
        }
        double sum = 0.0;
        for (int c = 0; c < k; c++) sum += exp((double)(m->p[c] - zmax));
        loss += log(sum) - (double)(m->p[y] - zmax); /* -log softmax[y] */
        if (correct && best == y) (*correct)++;
        if (!backward) continue;

        /* d(mean loss)/d(logit c) = (softmax_c - [c == y]) / count */
        for (int j = 0; j < HIDDEN; j++) m->dh[j] = 0.0f;
        for (int c = 0; c < k; c++) {
            float g = (float)(exp((double)(m->p[c] - zmax)) / sum);
            g = (g - (c == y ? 1.0f : 0.0f)) / (float)count;
            float *gw = m->gw2 + (size_t)c * HIDDEN;
            const float *w = m->w2 + (size_t)c * HIDDEN;
            for (int j = 0; j < HIDDEN; j++) {
                gw[j] += g * h[j];
                m->dh[j] += g * w[j];
            }
            m->gb2[c] += g;
        }
        for (int j = 0; j < HIDDEN; j++) {
            float g = m->dh[j] * (1.0f - h[j] * h[j]); /* tanh' */
            float *gw = m->gw1 + (size_t)j * (size_t)d;
            for (int c = 0; c < d; c++) gw[c] += g * x[c];
            m->gb1[j] += g;
        }
    }
    return loss / count;
}

/* Test-set accuracy, in batches of BATCH. */
static double accuracy(model *m, const dataset *ds, const int *idx, int n)
{
    int correct = 0;
    for (int i = 0; i < n; i += BATCH) {
        int count = n - i < BATCH ? n - i : BATCH;
        forward_backward(m, ds, idx + i, count, 0, &correct);
    }
    return (double)correct / n;
}

/* ---- one optimizer's training run --------------------------------------- */

typedef struct run {
    const char *name;     /* spec name: "sgd", "adam" */
    const char *defaults; /* optimizer-wide defaults */
    model m;
    jopt_param weights[2], biases[2];
    jopt_optim *opt;
    double build_s;       /* time in jopt_optim_new */
    double step_s;        /* total time in plain jopt_step calls */
    long steps;           /* number of plain jopt_step calls */
    double fb_s;          /* total time in forward + backward */
    long fbs;
    double epoch_loss;    /* sum of batch losses this epoch */
    double closure_loss;  /* loss the closure step returned this epoch */
} run;

static void run_build(run *r, jopt_ctx *ctx, const model *init)
{
    model *m = &r->m;
    model_init(m, init->d, init->k);
    model_copy_params(m, init); /* the same starting point for every run */

    r->weights[0] = (jopt_param){m->w1, m->gw1, (int64_t)HIDDEN * m->d};
    r->weights[1] = (jopt_param){m->w2, m->gw2, (int64_t)m->k * HIDDEN};
    r->biases[0] = (jopt_param){m->b1, m->gb1, HIDDEN};
    r->biases[1] = (jopt_param){m->b2, m->gb2, m->k};
    const jopt_group groups[2] = {
        {r->weights, 2, NULL},           /* weights: the defaults below */
        {r->biases, 2, "weight_decay=0"}, /* biases: no weight decay */
    };

    double t0 = now_s();
    int st = jopt_optim_new(ctx, r->name, groups, 2, r->defaults, &r->opt);
    r->build_s = now_s() - t0;
    char what[64];
    snprintf(what, sizeof what, "jopt_optim_new(\"%s\")", r->name);
    check(st, ctx, what);
}

typedef struct closure_data {
    run *r;
    const dataset *ds;
    const int *idx;
    int count;
} closure_data;

/* The closure form, as in torch:  def closure(): opt.zero_grad();
 * loss = f(model(x), y); loss.backward(); return loss */
static int closure(void *user_data, double *loss)
{
    closure_data *c = user_data;
    if (jopt_zero_grad(c->r->opt) != JOPT_OK) return -1;
    *loss = forward_backward(&c->r->m, c->ds, c->idx, c->count, 1, NULL);
    return 0;
}

/* One minibatch step. */
static void run_batch(run *r, jopt_ctx *ctx, const dataset *ds, const int *idx,
                      int count, int use_closure)
{
    if (use_closure) {
        closure_data c = {r, ds, idx, count};
        double loss = NAN;
        check(jopt_step(r->opt, closure, &c, &loss), ctx, "jopt_step (closure)");
        r->closure_loss = loss;
        r->epoch_loss += loss;
        return;
    }
    check(jopt_zero_grad(r->opt), ctx, "jopt_zero_grad");
    double t0 = now_s();
    r->epoch_loss += forward_backward(&r->m, ds, idx, count, 1, NULL);
    double t1 = now_s();
    int st = jopt_step(r->opt, NULL, NULL, NULL);
    double t2 = now_s();
    check(st, ctx, "jopt_step");
    r->fb_s += t1 - t0;
    r->fbs++;
    r->step_s += t2 - t1;
    r->steps++;
}

static void print_options(const run *r, jopt_ctx *ctx)
{
    static const char *const names[2] = {"weights W1 W2", "biases  b1 b2"};
    for (size_t g = 0; g < jopt_group_count(r->opt); g++) {
        double lr, wd;
        check(jopt_option_get(r->opt, g, "lr", &lr), ctx, "jopt_option_get");
        check(jopt_option_get(r->opt, g, "weight_decay", &wd), ctx,
              "jopt_option_get");
        printf("    group %zu (%s): lr=%g weight_decay=%g\n", g,
               g < 2 ? names[g] : "?", lr, wd);
    }
}

/* ---- part 2: full-batch softmax regression ------------------------------ */

/* x (d) -> W x + b (k), softmax cross-entropy, mean over the samples, plus
 * L2/2 |W|^2.  Convex, so every optimizer heads for the same minimum. */
typedef struct softreg {
    int d, k;
    float *w, *b, *gw, *gb; /* parameters k x d, k; their gradients */
    double *acc;            /* scratch: k x d + k gradient sums */
    float *z;               /* scratch: k logits */
} softreg;

static void softreg_init(softreg *m, int d, int k)
{
    m->d = d;
    m->k = k;
    m->w = xcalloc((size_t)k * (size_t)d, sizeof(float)); /* zeros: the start */
    m->b = xcalloc((size_t)k, sizeof(float));
    m->gw = xcalloc((size_t)k * (size_t)d, sizeof(float));
    m->gb = xcalloc((size_t)k, sizeof(float));
    m->acc = xcalloc((size_t)k * (size_t)(d + 1), sizeof(double));
    m->z = xcalloc((size_t)k, sizeof(float));
}

static void softreg_free(softreg *m)
{
    free(m->w);
    free(m->b);
    free(m->gw);
    free(m->gb);
    free(m->acc);
    free(m->z);
}

/* The loss over samples idx[0..n), counting correct predictions into
 * *correct if not NULL.  With grad != 0 it WRITES the gradient (a closure
 * must leave the gradient of this evaluation alone in the buffers); the
 * sums are kept in double, so that a line search late in the run compares
 * losses and slopes that are not mostly rounding. */
static double softreg_eval(softreg *m, const dataset *ds, const int *idx, int n,
                           int grad, int *correct)
{
    const int d = m->d, k = m->k;
    double loss = 0.0;
    if (grad)
        memset(m->acc, 0, sizeof(double) * (size_t)k * (size_t)(d + 1));
    for (int i = 0; i < n; i++) {
        const float *x = ds->x + (size_t)idx[i] * (size_t)d;
        const int y = ds->y[idx[i]];
        float zmax = -INFINITY;
        int best = 0;
        for (int c = 0; c < k; c++) {
            const float *w = m->w + (size_t)c * (size_t)d;
            float z = m->b[c];
            for (int j = 0; j < d; j++) z += w[j] * x[j];
            m->z[c] = z;
            if (z > zmax) {
                zmax = z;
                best = c;
            }
        }
        double sum = 0.0;
        for (int c = 0; c < k; c++) sum += exp((double)(m->z[c] - zmax));
        loss += log(sum) - (double)(m->z[y] - zmax);
        if (correct && best == y) (*correct)++;
        if (!grad) continue;
        for (int c = 0; c < k; c++) {
            double g = exp((double)(m->z[c] - zmax)) / sum - (c == y);
            double *a = m->acc + (size_t)c * (size_t)(d + 1);
            for (int j = 0; j < d; j++) a[j] += g * x[j];
            a[d] += g;
        }
    }
    double wsq = 0.0;
    for (int i = 0; i < k * d; i++) wsq += (double)m->w[i] * m->w[i];
    if (grad)
        for (int c = 0; c < k; c++) {
            const double *a = m->acc + (size_t)c * (size_t)(d + 1);
            for (int j = 0; j < d; j++) {
                size_t e = (size_t)c * (size_t)d + (size_t)j;
                m->gw[e] = (float)(a[j] / n + L2 * m->w[e]);
            }
            m->gb[c] = (float)(a[d] / n);
        }
    return loss / n + 0.5 * L2 * wsq;
}

/* One optimizer's full-batch run. */
typedef struct fbrun {
    const char *name, *options;
    softreg m;
    jopt_param params[2];
    jopt_optim *opt;
    const dataset *ds;
    const int *idx;
    int n;
    double *curve;  /* the loss of each closure evaluation, in order */
    int evals, cap; /* evaluations made, room in curve */
    long steps;     /* jopt_step calls */
    double closure_s, total_s;
} fbrun;

/* What L-BFGS and CG call several times per step: the loss and gradient at
 * the parameters as they are now.  First-order optimizers call it once. */
static int fb_closure(void *user_data, double *loss)
{
    fbrun *r = user_data;
    double t0 = now_s();
    *loss = softreg_eval(&r->m, r->ds, r->idx, r->n, 1, NULL);
    r->closure_s += now_s() - t0;
    if (r->evals == r->cap) {
        int cap = 2 * r->cap + 64;
        double *c = realloc(r->curve, sizeof(double) * (size_t)cap);
        if (!c) return -1; /* jopt puts the parameters back */
        r->curve = c;
        r->cap = cap;
    }
    r->curve[r->evals++] = *loss;
    return 0;
}

/* Steps until the run has used `budget` evaluations.  An L-BFGS or CG step
 * makes up to max_eval evaluations (25 with the default max_iter=20), so
 * near the end of the budget max_eval is lowered to what is left.  L-BFGS
 * checks max_eval between iterations, not inside a line search, so it may
 * still go over by a few: the table says how many each run really made. */
static void fb_run(fbrun *r, jopt_ctx *ctx, const dataset *ds, const int *idx,
                   int n, int budget)
{
    softreg_init(&r->m, ds->d, ds->k);
    r->ds = ds;
    r->idx = idx;
    r->n = n;
    r->params[0] = (jopt_param){r->m.w, r->m.gw, (int64_t)ds->k * ds->d};
    r->params[1] = (jopt_param){r->m.b, r->m.gb, ds->k};
    /* one group: L-BFGS and CG see the tensors as one vector, as torch's */
    const jopt_group group = {r->params, 2, NULL};
    char what[64];
    snprintf(what, sizeof what, "jopt_optim_new(\"%s\")", r->name);
    check(jopt_optim_new(ctx, r->name, &group, 1, r->options, &r->opt), ctx, what);

    double t0 = now_s();
    int closure_method = !strcmp(r->name, "lbfgs") || !strcmp(r->name, "cg");
    while (r->evals < budget) {
        double loss;
        if (closure_method && budget - r->evals < 25)
            check(jopt_option_set(r->opt, 0, "max_eval", budget - r->evals), ctx,
                  "jopt_option_set(max_eval)");
        check(jopt_step(r->opt, fb_closure, r, &loss), ctx, "jopt_step (closure)");
        r->steps++;
    }
    r->total_s = now_s() - t0;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: jopt_demo [--epochs N] [--evals N] [--svg FILE]\n"
               "                 [--data-parallel [--parts P]] [path/to/digits.bin]\n"
               "  --epochs N  minibatch epochs of the MLP (default 10)\n"
               "  --evals N   closure evaluations per full-batch optimizer (default 100)\n"
               "  --svg FILE  where to draw the loss curves (default jopt_demo_loss.svg)\n"
               "  --data-parallel  the MLP alone, data-parallel over MPI, with sharded\n"
               "              optimizer state: under mpirun -np P, each process takes 1/P\n"
               "              of every batch; alone, it takes all P parts in turn\n"
               "  --parts P   the parts of a batch (default 2)\n");
}

/* ---- the SVG: one chart per part, side by side ---------------------------- */

typedef struct series {
    const char *name;
    const double *y; /* y[i] is plotted at x = i + 1 */
    int n;
} series;

enum { PANEL_W = 640, PANEL_H = 400 };

static double pos_x(double x, int xmax, double left, double right)
{
    return left + (right - left) * (xmax > 1 ? (x - 1) / (xmax - 1) : 0.5);
}

/* One chart with its left edge at x0: a line per series, y on a linear
 * scale from 0 or, with logy, a log scale over the data's range. */
static void svg_panel(FILE *f, double x0, const char *title, const char *xlabel,
                      const series *s, int ns, int logy)
{
    static const char *const colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
    const double L = x0 + 60, R = 20, T = 30, B = 50, H = PANEL_H;
    const double right = x0 + PANEL_W - R;
    int xmax = 1;
    double lo = INFINITY, hi = 0;
    for (int r = 0; r < ns; r++) {
        xmax = s[r].n > xmax ? s[r].n : xmax;
        for (int i = 0; i < s[r].n; i++) {
            lo = s[r].y[i] < lo ? s[r].y[i] : lo;
            hi = s[r].y[i] > hi ? s[r].y[i] : hi;
        }
    }
    if (!logy || !(lo > 0)) {
        logy = 0;
        lo = 0;
        hi = hi > 0 ? hi * 1.05 : 1;
    } else {
        lo = log10(lo) - 0.05;
        hi = log10(hi) + 0.05;
    }
#define PY(v) (H - B - (H - T - B) * ((logy ? log10(v) : (v)) - lo) / (hi - lo))
    fprintf(f, "<text x=\"%.0f\" y=\"18\" text-anchor=\"middle\">%s</text>\n",
            x0 + PANEL_W / 2.0, title);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
            L, H - B, right, H - B);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
            L, T, L, H - B);
    if (logy) { /* ticks at 1, 2, 5 times a power of ten */
        for (int e = (int)floor(lo); e <= (int)ceil(hi); e++)
            for (int m = 1; m <= 5; m += m == 2 ? 3 : 1) {
                double v = m * pow(10, e);
                if (log10(v) >= lo && log10(v) <= hi)
                    fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                            L - 6, PY(v) + 4, v);
            }
    } else {
        for (int k = 0; k <= 4; k++) {
            double v = hi * k / 4;
            fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                    L - 6, PY(v) + 4, v);
        }
    }
    int step = 1; /* at most 10 x ticks, at multiples of 1, 2, 5, 10, 20, ... */
    for (int p = 1; step == 1 && xmax > 10; p *= 10)
        for (int m = 1; m <= 5; m += m == 2 ? 3 : 1)
            if (step == 1 && xmax / (m * p) <= 10)
                step = m * p;
    for (int x = 1; x <= xmax; x++)
        if (x == 1 || x % step == 0)
            fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n",
                    pos_x(x, xmax, L, right), H - B + 16, x);
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%s</text>\n",
            (L + right) / 2, H - 12, xlabel);
    for (int r = 0; r < ns; r++) {
        const char *c = colours[r % 4];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
        for (int i = 0; i < s[r].n; i++)
            fprintf(f, "%.1f,%.1f ", pos_x(i + 1, xmax, L, right), PY(s[r].y[i]));
        fprintf(f, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n",
                right - 80, T + 16 + 16 * r, c, s[r].name);
    }
#undef PY
}

static int write_svg(const char *path, const series *mlp, int nmlp, const series *fb,
                     int nfb)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", 2 * PANEL_W, PANEL_H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    svg_panel(f, 0, "digits MLP, minibatches: training loss per epoch", "epoch",
              mlp, nmlp, 0);
    svg_panel(f, PANEL_W, "softmax regression, full batch: loss (log scale)",
              "closure evaluation", fb, nfb, 1);
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- data-parallel mode: the MLP over MPI, optimizer state sharded -------- */

#ifdef JOPT_DEMO_MPI
static void dp_check(int status, const jopt_ctx *ctx, const char *what)
{
    if (status != JOPT_OK) {
        fprintf(stderr, "demo: %s failed: %s: %s\n", what, jopt_strerror(status),
                jopt_errmsg(ctx));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}

/* FNV-1a of the parameters: equal runs print equal checksums */
static uint64_t params_hash(const model *m)
{
    const float *bufs[] = {m->w1, m->b1, m->w2, m->b2};
    size_t lens[] = {(size_t)HIDDEN * (size_t)m->d, HIDDEN,
                     (size_t)m->k * HIDDEN, (size_t)m->k};
    uint64_t h = 1469598103934665603ull;
    for (int b = 0; b < 4; b++) {
        const unsigned char *p = (const unsigned char *)bufs[b];
        for (size_t i = 0; i < lens[b] * sizeof(float); i++)
            h = (h ^ p[i]) * 1099511628211ull;
    }
    return h;
}

/* Part k of P of a batch of `count` samples at idx: [lo, hi). */
static void part_of(int count, int k, int parts, int *lo, int *hi)
{
    *lo = (int)((int64_t)count * k / parts);
    *hi = (int)((int64_t)count * (k + 1) / parts);
}

/* One optimizer's data-parallel run.  With as many processes as parts,
 * process r computes part r's gradient (the mean over its samples) and
 * jopt_step averages them across processes.  Alone, the process computes
 * every part in turn and averages them itself the way jopt does (in
 * double, in order, divided once): the same bits. */
static void dp_train(run *r, jopt_ctx *ctx, const dataset *ds, int *train,
                     int ntrain, const int *test, int ntest, int epochs,
                     int parts, int rank, int size, uint64_t seed)
{
    model *m = &r->m;
    float *g[4] = {m->gw1, m->gb1, m->gw2, m->gb2};
    size_t len[4] = {(size_t)HIDDEN * (size_t)m->d, HIDDEN, (size_t)m->k * HIDDEN,
                     (size_t)m->k};
    double *acc[4];
    for (int t = 0; t < 4; t++)
        acc[t] = xcalloc(len[t], sizeof(double));
    const int nbatches = (ntrain + BATCH - 1) / BATCH;
    if (rank == 0)
        printf("%-4s \"%s\"\nepoch   train loss (mean of the parts'; all digits)  "
               "test acc\n", r->name, r->defaults);
    double step_s = 0;
    for (int e = 1; e <= epochs; e++) {
        shuffle(train, ntrain, &seed); /* the same order on every process */
        double epoch_loss = 0;
        for (int b = 0; b < nbatches; b++) {
            int start = b * BATCH;
            int count = ntrain - start < BATCH ? ntrain - start : BATCH;
            double losses[64];
            for (int k = size == 1 ? 0 : rank; k < (size == 1 ? parts : rank + 1); k++) {
                int lo, hi;
                part_of(count, k, parts, &lo, &hi);
                dp_check(jopt_zero_grad(r->opt), ctx, "jopt_zero_grad");
                losses[k] = forward_backward(m, ds, train + start + lo, hi - lo, 1, NULL);
                for (int t = 0; size == 1 && t < 4; t++)
                    for (size_t i = 0; i < len[t]; i++)
                        acc[t][i] = k == 0 ? (double)g[t][i] : acc[t][i] + (double)g[t][i];
            }
            for (int t = 0; size == 1 && t < 4; t++)
                for (size_t i = 0; i < len[t]; i++)
                    g[t][i] = (float)(acc[t][i] / parts);
            if (size > 1) /* every part's loss, by rank */
                MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, losses, 1,
                              MPI_DOUBLE, MPI_COMM_WORLD);
            double loss = 0;
            for (int k = 0; k < parts; k++)
                loss += losses[k];
            epoch_loss += loss / parts;
            double t0 = now_s();
            dp_check(jopt_step(r->opt, NULL, NULL, NULL), ctx, "jopt_step");
            step_s += now_s() - t0;
        }
        if (rank == 0)
            printf("%5d   %.17g  %9.2f%%\n", e, epoch_loss / nbatches,
                   100.0 * accuracy(m, ds, test, ntest));
    }
    /* what each process holds and sent, printed by rank 0 */
    jopt_shard_info info;
    dp_check(jopt_shard_info_get(r->opt, &info), ctx, "jopt_shard_info_get");
    uint64_t steps = (uint64_t)epochs * (uint64_t)nbatches;
    double mine[5] = {(double)info.tensors, (double)info.numel, (double)info.state_bytes,
                      (double)info.bytes_sent / (double)steps, 1e6 * step_s / (double)steps};
    double *all = xcalloc((size_t)size * 5, sizeof(double));
    MPI_Gather(mine, 5, MPI_DOUBLE, all, 5, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    for (int q = 0; rank == 0 && q < size; q++) {
        const double *v = all + 5 * q;
        printf("  rank %d of %d: holds %.0f of 4 tensors (%.0f of %lld elements), "
               "%.0f bytes of optimizer state; sent %.0f bytes per step; "
               "jopt_step %.1f us\n", q, size, v[0], v[1], (long long)info.numel_all,
               v[2], v[3], v[4]);
    }
    free(all);
    if (rank == 0)
        printf("  parameters' FNV-1a: %016llx\n\n", (unsigned long long)params_hash(m));
    for (int t = 0; t < 4; t++)
        free(acc[t]);
}

static int data_parallel(int *argc, char ***argv, const dataset *ds, int *train,
                         int ntrain, const int *test, int ntest, const model *init,
                         uint64_t seed, int epochs, int parts)
{
    MPI_Init(argc, argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 1 && size != parts) {
        if (rank == 0)
            fprintf(stderr, "demo: --data-parallel with %d parts runs on 1 process "
                    "or on %d, not %d\n", parts, parts, size);
        MPI_Finalize();
        return EXIT_FAILURE;
    }
    if (rank == 0)
        printf("jopt demo, data-parallel: the %d-%d-%d MLP, minibatch %d in %d parts, "
               "on %d process%s%s\n\n", ds->d, HIDDEN, ds->k, BATCH, parts, size,
               size == 1 ? "" : "es", size == 1 ? " (which takes every part in turn)"
                                                : " (each takes one part)");
    jopt_ctx *ctx = NULL;
    dp_check(jopt_ctx_new(&ctx), NULL, "jopt_ctx_new");
    run runs[2] = {
        {.name = "sgd", .defaults = "lr=0.1 momentum=0.9 weight_decay=1e-4"},
        {.name = "adam", .defaults = "lr=3e-3 weight_decay=1e-4"},
    };
    for (int r = 0; r < 2; r++) {
        model *m = &runs[r].m;
        model_init(m, init->d, init->k);
        model_copy_params(m, init);
        runs[r].weights[0] = (jopt_param){m->w1, m->gw1, (int64_t)HIDDEN * m->d};
        runs[r].weights[1] = (jopt_param){m->w2, m->gw2, (int64_t)m->k * HIDDEN};
        runs[r].biases[0] = (jopt_param){m->b1, m->gb1, HIDDEN};
        runs[r].biases[1] = (jopt_param){m->b2, m->gb2, m->k};
        const jopt_group groups[2] = {{runs[r].weights, 2, NULL},
                                      {runs[r].biases, 2, "weight_decay=0"}};
        dp_check(jopt_mpi_optim_new(ctx, runs[r].name, groups, 2, runs[r].defaults,
                                    MPI_COMM_WORLD, &runs[r].opt),
                 ctx, "jopt_mpi_optim_new");
        dp_train(&runs[r], ctx, ds, train, ntrain, test, ntest, epochs, parts,
                 rank, size, seed);
        jopt_optim_free(runs[r].opt);
        model_free(m);
    }
    jopt_ctx_free(ctx);
    MPI_Finalize();
    return EXIT_SUCCESS;
}
#endif

int main(int argc, char **argv)
{
    const char *path = "data/digits.bin", *svg = "jopt_demo_loss.svg";
    int epochs = 10, budget = 100, dp = 0, parts = 2;
    for (int i = 1; i < argc; i++) {
        int is_epochs = strcmp(argv[i], "--epochs") == 0;
        if (strcmp(argv[i], "--data-parallel") == 0) {
            dp = 1;
            continue;
        }
        if (strcmp(argv[i], "--parts") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 16) {
                fprintf(stderr, "demo: --parts wants a number 1..16\n");
                return EXIT_FAILURE;
            }
            parts = (int)v;
            continue;
        }
        if ((is_epochs || strcmp(argv[i], "--evals") == 0) && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 10000) {
                fprintf(stderr, "demo: %s wants a number 1..10000\n", argv[i - 1]);
                return EXIT_FAILURE;
            }
            *(is_epochs ? &epochs : &budget) = (int)v;
        } else if (strcmp(argv[i], "--svg") == 0 && i + 1 < argc) {
            svg = argv[++i];
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return EXIT_SUCCESS;
        } else if (argv[i][0] == '-') {
            usage(stderr);
            return EXIT_FAILURE;
        } else {
            path = argv[i];
        }
    }

    dataset ds;
    if (load_digits(path, &ds) != 0) return EXIT_FAILURE;

    /* A fixed shuffle, then the first 5/6 to train and the rest to test. */
    uint64_t seed = SEED;
    int *order = xcalloc((size_t)ds.n, sizeof(int));
    for (int i = 0; i < ds.n; i++) order[i] = i;
    shuffle(order, ds.n, &seed);
    const int ntest = ds.n / 6, ntrain = ds.n - ntest;
    int *train = order, *test = order + ntrain;

    model init;
    model_init(&init, ds.d, ds.k);
    model_randomize(&init, &seed);
    if (dp) {
#ifdef JOPT_DEMO_MPI
        int rc = data_parallel(&argc, &argv, &ds, train, ntrain, test, ntest,
                               &init, seed, epochs, parts);
#else
        fprintf(stderr, "demo: this jopt_demo was built without MPI, so it has "
                        "no --data-parallel (install libopenmpi-dev and rebuild)\n");
        int rc = EXIT_FAILURE;
        (void)parts;
#endif
        model_free(&init);
        free(order);
        free(ds.x);
        free(ds.y);
        return rc;
    }

    printf("jopt demo, part 1: a %d-%d-%d MLP (tanh, softmax cross-entropy) on "
           "handwritten digits\n", ds.d, HIDDEN, ds.k);
    printf("data: %s, %d samples: %d train / %d test, %d features, "
           "%d classes\n", path, ds.n, ntrain, ntest, ds.d, ds.k);
    printf("model: %d parameters in 4 tensors, minibatch %d, %d epochs;\n"
           "both optimizers start from the same weights and see the same "
           "batches\n\n",
           HIDDEN * ds.d + HIDDEN + ds.k * HIDDEN + ds.k, BATCH, epochs);

    jopt_ctx *ctx = NULL;
    check(jopt_ctx_new(&ctx), NULL, "jopt_ctx_new");

    run runs[2] = {
        {.name = "sgd", .defaults = "lr=0.1 momentum=0.9 weight_decay=1e-4"},
        {.name = "adam", .defaults = "lr=3e-3 weight_decay=1e-4"},
    };
    enum { NRUNS = sizeof runs / sizeof runs[0] };
    for (int r = 0; r < NRUNS; r++) {
        run_build(&runs[r], ctx, &init);
        printf("%-4s  \"%s\"  built in %.2f ms\n", runs[r].name,
               runs[r].defaults, 1e3 * runs[r].build_s);
        print_options(&runs[r], ctx);
    }
    size_t compiles = 0, hits = 0;
    jopt_ctx_stats(ctx, &compiles, &hits);
    printf("kernels compiled: %zu, kernel cache hits: %zu\n\n", compiles, hits);

    /* Columns per optimizer: "   %10s %13s %10s" (38 characters). */
    printf("     ");
    for (int r = 0; r < NRUNS; r++) {
        int len = (int)strlen(runs[r].name) + 2, left = (35 - len) / 2;
        printf("   %.*s %s %.*s", left, "------------------", runs[r].name,
               35 - len - left, "------------------");
    }
    printf("\nepoch");
    for (int r = 0; r < NRUNS; r++)
        printf("   %10s %13s %10s", "train loss", "closure loss", "test acc");
    printf("\n");

    const int nbatches = (ntrain + BATCH - 1) / BATCH;
    double *curve = xcalloc((size_t)(NRUNS * epochs), sizeof(double));
    for (int e = 1; e <= epochs; e++) {
        shuffle(train, ntrain, &seed); /* one order, used by both runs */
        for (int r = 0; r < NRUNS; r++) runs[r].epoch_loss = 0.0;
        for (int b = 0; b < nbatches; b++) {
            int start = b * BATCH;
            int count = ntrain - start < BATCH ? ntrain - start : BATCH;
            int use_closure = b == nbatches - 1; /* show the closure form */
            for (int r = 0; r < NRUNS; r++)
                run_batch(&runs[r], ctx, &ds, train + start, count, use_closure);
        }
        printf("%5d", e);
        for (int r = 0; r < NRUNS; r++)
            curve[r * epochs + e - 1] = runs[r].epoch_loss / nbatches;
        for (int r = 0; r < NRUNS; r++)
            printf("   %10.4f %13.4f %9.2f%%", runs[r].epoch_loss / nbatches,
                   runs[r].closure_loss,
                   100.0 * accuracy(&runs[r].m, &ds, test, ntest));
        printf("\n");
    }

    printf("\n(train loss: mean over the epoch's minibatches; closure loss: "
           "what jopt_step\n returned for the epoch's last batch, taken with "
           "a closure)\n\n");
    for (int r = 0; r < NRUNS; r++)
        if (runs[r].steps > 0)
            printf("%-4s  mean jopt_step: %7.2f us over %ld steps  "
                   "(forward+backward of a batch: %.1f us)\n",
                   runs[r].name, 1e6 * runs[r].step_s / (double)runs[r].steps,
                   runs[r].steps, 1e6 * runs[r].fb_s / (double)runs[r].fbs);


    /* ---- part 2 ---- */
    fbrun fbs[] = {
        {.name = "lbfgs", .options = "line_search_fn=strong_wolfe history_size=10"},
        {.name = "cg", .options = NULL},
        /* lr: the best of a small sweep at 100 evaluations (Adam 0.02 to
         * 0.5, SGD 0.2 to 6); L-BFGS and CG run at their defaults */
        {.name = "adam", .options = "lr=0.3"},
        {.name = "sgd", .options = "lr=3 momentum=0.9"},
    };
    enum { NFB = sizeof fbs / sizeof fbs[0] };
    printf("\npart 2: softmax regression, %d -> %d (%d parameters in 2 tensors), "
           "full batch:\ncross-entropy + %g/2 |W|^2 over all %d training samples, "
           "loss and gradient\ncomputed by a C closure. Each optimizer starts from "
           "zero weights and steps until\nit has used %d closure evaluations "
           "(L-BFGS and CG make several per jopt_step):\n", ds.d, ds.k,
           ds.k * ds.d + ds.k, L2, ntrain, budget);
    for (int r = 0; r < NFB; r++) {
        fb_run(&fbs[r], ctx, &ds, train, ntrain, budget);
        printf("  %-5s  \"%s\"\n", fbs[r].name, fbs[r].options ? fbs[r].options : "");
    }
    printf("\n%-9s %6s %6s %11s %10s %9s %8s %8s\n", "optimizer", "evals", "steps",
           "final loss", "train acc", "test acc", "time ms", "jopt ms");
    for (int r = 0; r < NFB; r++) {
        fbrun *f = &fbs[r];
        int right_train = 0, right_test = 0;
        double loss = softreg_eval(&f->m, &ds, train, ntrain, 0, &right_train);
        softreg_eval(&f->m, &ds, test, ntest, 0, &right_test);
        printf("%-9s %6d %6ld %11.6f %9.2f%% %8.2f%% %8.1f %8.2f\n", f->name, f->evals,
               f->steps, loss, 100.0 * right_train / ntrain, 100.0 * right_test / ntest,
               1e3 * f->total_s, 1e3 * (f->total_s - f->closure_s));
    }
    printf("\n(final loss: at the parameters the run ended with; time ms: all its "
           "jopt_step\n calls; jopt ms: that minus the time spent in the closure)\n");

    series mlp[NRUNS], fb[NFB];
    for (int r = 0; r < NRUNS; r++)
        mlp[r] = (series){runs[r].name, curve + r * epochs, epochs};
    for (int r = 0; r < NFB; r++)
        fb[r] = (series){fbs[r].name, fbs[r].curve, fbs[r].evals};
    if (write_svg(svg, mlp, NRUNS, fb, NFB) == 0)
        printf("\nloss curves: %s\n", svg);
    else
        fprintf(stderr, "demo: cannot write %s\n", svg);
    free(curve);
    for (int r = 0; r < NFB; r++) {
        jopt_optim_free(fbs[r].opt);
        softreg_free(&fbs[r].m);
        free(fbs[r].curve);
    }

    for (int r = 0; r < NRUNS; r++) {
        jopt_optim_free(runs[r].opt);
        model_free(&runs[r].m);
    }
    jopt_ctx_free(ctx);
    model_free(&init);
    free(order);
    free(ds.x);
    free(ds.y);
    return EXIT_SUCCESS;
}
