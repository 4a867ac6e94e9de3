/*
 * demo.c - train a small neural network in plain C with jopt, SGD and Adam
 * side by side.
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
 *     what went wrong.
 *
 * Usage:  jopt_demo [--epochs N] [path/to/digits.bin]
 *         (default: 10 epochs, data/digits.bin, i.e. run from the repo root)
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

#define HIDDEN 64       /* hidden units */
#define BATCH 32        /* minibatch size */
#define SEED 20240601u  /* data shuffle, split and initial weights */
#define FEATURE_MAX 16  /* the digits' pixel values are 0..16 */

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

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: jopt_demo [--epochs N] [--svg FILE] [path/to/digits.bin]\n"
               "  --svg FILE  where to draw the loss curves (default jopt_demo_loss.svg)\n");
}

/* The training loss per epoch, one line per optimizer, as an SVG chart. */
static int write_svg(const char *path, const char *const *names, const double *loss,
                     int nruns, int epochs)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const double W = 640, H = 400, L = 60, R = 20, T = 30, B = 50;
    double top = 0;
    for (int i = 0; i < nruns * epochs; i++)
        top = loss[i] > top ? loss[i] : top;
    top = top > 0 ? top * 1.05 : 1;
    static const char *const colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"18\" text-anchor=\"middle\">jopt demo: training loss "
               "per epoch (digits MLP)</text>\n", W / 2);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
            L, H - B, W - R, H - B);
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"black\"/>\n",
            L, T, L, H - B);
    for (int k = 0; k <= 4; k++) { /* loss ticks */
        double v = top * k / 4, y = H - B - (H - T - B) * k / 4;
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                L - 6, y + 4, v);
    }
    for (int e = 1; e <= epochs; e++) { /* epoch ticks */
        double x = L + (W - L - R) * (epochs > 1 ? (double)(e - 1) / (epochs - 1) : 0.5);
        if (epochs <= 20 || e % (epochs / 10) == 0)
            fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n",
                    x, H - B + 16, e);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">epoch</text>\n",
            (L + W - R) / 2, H - 12);
    for (int r = 0; r < nruns; r++) {
        const char *c = colours[r % 4];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
        for (int e = 0; e < epochs; e++) {
            double x = L + (W - L - R) * (epochs > 1 ? (double)e / (epochs - 1) : 0.5);
            double y = H - B - (H - T - B) * loss[r * epochs + e] / top;
            fprintf(f, "%.1f,%.1f ", x, y);
        }
        fprintf(f, "\"/>\n<text x=\"%.0f\" y=\"%.0f\" fill=\"%s\">%s</text>\n",
                W - R - 80, T + 16 + 16 * r, c, names[r]);
    }
    fprintf(f, "</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *path = "data/digits.bin", *svg = "jopt_demo_loss.svg";
    int epochs = 10;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--epochs") == 0 && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 10000) {
                fprintf(stderr, "demo: --epochs wants a number 1..10000\n");
                return EXIT_FAILURE;
            }
            epochs = (int)v;
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

    printf("jopt demo: %d-%d-%d MLP (tanh, softmax cross-entropy) on "
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

    const char *names[NRUNS];
    for (int r = 0; r < NRUNS; r++)
        names[r] = runs[r].name;
    if (write_svg(svg, names, curve, NRUNS, epochs) == 0)
        printf("\nloss curves: %s\n", svg);
    else
        fprintf(stderr, "demo: cannot write %s\n", svg);
    free(curve);

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
