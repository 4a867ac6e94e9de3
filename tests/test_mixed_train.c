/*
 * test_mixed_train.c - the demo's MLP (64 -> 64 tanh -> 10, softmax
 * cross-entropy, on data/digits.bin) trained with Adam in float32 and in
 * mixed precision, each from 6 seeds (initial weights and minibatch
 * order): bfloat16 weights and gradients rounded stochastically, with
 * float32 state and with bfloat16 state, must train as float32 does (their
 * mean curve within 3 standard errors of float32's, epoch by epoch).
 * Rounding to nearest, and float16, are shown: bfloat16 weights rounded to
 * nearest lose the updates below half their spacing, and train slower.
 *
 * Mixed precision as a framework runs it: the forward and backward passes
 * read the 16-bit weights widened to float32 and produce float32
 * gradients, stored rounded to the gradients' type; jopt updates the
 * 16-bit weights in place.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "helpers.h"
#include "mixed_helpers.h"

#define HIDDEN 64
#define BATCH 32
#define EPOCHS 6
#define SEEDS 6

typedef struct data {
    int n, d, k;
    float *x;
    uint8_t *y;
} data;

static void load(data *ds)
{
    FILE *f = fopen(JOPT_SOURCE_DIR "/data/digits.bin", "rb");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "digits %d %d %d\n", &ds->n, &ds->d, &ds->k), 3);
    size_t nx = (size_t)ds->n * (size_t)ds->d;
    uint8_t *raw = malloc(nx);
    ds->x = malloc(nx * sizeof(float));
    ds->y = malloc((size_t)ds->n);
    assert_int_equal(fread(raw, 1, nx, f), nx);
    assert_int_equal(fread(ds->y, 1, (size_t)ds->n, f), (size_t)ds->n);
    fclose(f);
    for (size_t i = 0; i < nx; i++)
        ds->x[i] = raw[i] / 16.0f;
    free(raw);
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

/* the four tensors: W1 (HIDDEN x d), b1, W2 (k x HIDDEN), b2 */
typedef struct net {
    int dt, gdt;
    int64_t n[4];
    void *w[4], *g[4];    /* jopt's buffers, of dt and gdt */
    float *fw[4], *fg[4]; /* float32 views for the passes */
} net;

static void net_new(net *m, const data *ds, int dt, int gdt, uint64_t seed)
{
    m->dt = dt, m->gdt = gdt;
    int64_t n[4] = {(int64_t)HIDDEN * ds->d, HIDDEN, (int64_t)ds->k * HIDDEN, ds->k};
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int t = 0; t < 4; t++) {
        m->n[t] = n[t];
        m->w[t] = m_alloc(dt, n[t]);
        m->g[t] = m_alloc(gdt, n[t]);
        m->fw[t] = t_alloc(n[t]);
        m->fg[t] = t_alloc(n[t]);
        double a = 1 / sqrt(t < 2 ? ds->d : HIDDEN); /* torch.nn.Linear's */
        for (int64_t i = 0; i < n[t]; i++)
            m->fw[t][i] = (float)(a * (2.0 * (double)(next(&s) >> 11) / 0x1p53 - 1));
        for (int64_t i = 0; i < n[t]; i++) /* the same start, rounded */
            cg_dt_fill((char *)m->w[t] + (size_t)i * (size_t)cg_dt_size(dt), dt, 1,
                       m->fw[t][i]);
    }
}

static void net_free(net *m)
{
    for (int t = 0; t < 4; t++)
        free(m->w[t]), free(m->g[t]), free(m->fw[t]), free(m->fg[t]);
}

/* the mean loss of a batch; its gradient into m->g, rounded to gdt */
static double pass(net *m, const data *ds, const int *idx, int count)
{
    int d = ds->d, k = ds->k;
    for (int t = 0; t < 4; t++) {
        m_widen(m->fw[t], m->w[t], m->dt, m->n[t]);
        memset(m->fg[t], 0, (size_t)m->n[t] * sizeof(float));
    }
    float h[HIDDEN], z[16], dh[HIDDEN];
    double loss = 0;
    for (int b = 0; b < count; b++) {
        const float *x = ds->x + (size_t)idx[b] * (size_t)d;
        for (int j = 0; j < HIDDEN; j++) {
            float a = m->fw[1][j];
            for (int c = 0; c < d; c++)
                a += m->fw[0][j * d + c] * x[c];
            h[j] = tanhf(a);
        }
        float zmax = -INFINITY;
        for (int c = 0; c < k; c++) {
            float a = m->fw[3][c];
            for (int j = 0; j < HIDDEN; j++)
                a += m->fw[2][c * HIDDEN + j] * h[j];
            z[c] = a;
            zmax = a > zmax ? a : zmax;
        }
        double sum = 0;
        for (int c = 0; c < k; c++)
            sum += exp((double)(z[c] - zmax));
        loss += log(sum) - (z[ds->y[idx[b]]] - zmax);
        memset(dh, 0, sizeof dh);
        for (int c = 0; c < k; c++) {
            float g = (float)(exp((double)(z[c] - zmax)) / sum) - (c == ds->y[idx[b]]);
            g /= (float)count;
            for (int j = 0; j < HIDDEN; j++) {
                m->fg[2][c * HIDDEN + j] += g * h[j];
                dh[j] += g * m->fw[2][c * HIDDEN + j];
            }
            m->fg[3][c] += g;
        }
        for (int j = 0; j < HIDDEN; j++) {
            float g = dh[j] * (1 - h[j] * h[j]);
            for (int c = 0; c < d; c++)
                m->fg[0][j * d + c] += g * x[c];
            m->fg[1][j] += g;
        }
    }
    for (int t = 0; t < 4; t++)
        for (int64_t i = 0; i < m->n[t]; i++)
            cg_dt_fill((char *)m->g[t] + (size_t)i * (size_t)cg_dt_size(m->gdt), m->gdt, 1,
                       m->fg[t][i]);
    return loss / count;
}

/* the mean training loss of each epoch */
static void train(const data *ds, const char *options, int dt, int gdt, uint64_t seed,
                  double *curve)
{
    net m;
    net_new(&m, ds, dt, gdt, seed);
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    jopt_param ps[4];
    for (int t = 0; t < 4; t++)
        ps[t] = (jopt_param){m.w[t], m.g[t], m.n[t]};
    char opts[256];
    snprintf(opts, sizeof opts, "lr=2e-3 seed=%llu %s", (unsigned long long)seed, options);
    jopt_group grp = {ps, 4, opts};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, NULL, &opt));
    int *order = malloc((size_t)ds->n * sizeof *order);
    for (int i = 0; i < ds->n; i++)
        order[i] = i;
    uint64_t s = seed + 12345;
    for (int e = 0; e < EPOCHS; e++) {
        for (int i = ds->n - 1; i > 0; i--) {
            int j = (int)(next(&s) % (uint64_t)(i + 1)), tmp = order[i];
            order[i] = order[j], order[j] = tmp;
        }
        double sum = 0;
        int batches = 0;
        for (int b = 0; b + BATCH <= ds->n; b += BATCH, batches++) {
            sum += pass(&m, ds, order + b, BATCH);
            T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
        }
        curve[e] = sum / batches;
    }
    free(order);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    net_free(&m);
}

typedef struct variant {
    const char *name, *options;
    int dt, gdt, asserted;
    double curve[SEEDS][EPOCHS];
} variant;

static void test_mixed_mlp_trains_as_float32(void **state)
{
    (void)state;
    data ds;
    load(&ds);
    static variant v[] = {
        {"float32", "", 0, 0, 0, {{0}}},
        {"bf16 p+g, f32 state, stochastic", "dtype=bfloat16 stochastic_rounding=true",
         1, 1, 1, {{0}}},
        {"bf16 p+g, bf16 state, stochastic", "dtype=bfloat16 state_dtype=bfloat16 "
         "stochastic_rounding=true", 1, 1, 1, {{0}}},
        {"bf16 p+g, f32 state, nearest", "dtype=bfloat16", 1, 1, 0, {{0}}},
        {"bf16 p+g, bf16 state, nearest", "dtype=bfloat16 state_dtype=bfloat16", 1, 1, 0, {{0}}},
        {"f16 p+g, f32 state, nearest", "dtype=float16", 2, 2, 0, {{0}}},
    };
    size_t nv = sizeof v / sizeof v[0];
    for (size_t k = 0; k < nv; k++)
        for (int s = 0; s < SEEDS; s++)
            train(&ds, v[k].options, v[k].dt, v[k].gdt, (uint64_t)s + 1, v[k].curve[s]);
    print_message("mean training loss per epoch over %d seeds (± standard error):\n", SEEDS);
    for (size_t k = 0; k < nv; k++) {
        char line[1024];
        int at = snprintf(line, sizeof line, "%-36s", v[k].name);
        for (int e = 0; e < EPOCHS; e++) {
            double mean = 0, var = 0, m0 = 0, v0 = 0;
            for (int s = 0; s < SEEDS; s++)
                mean += v[k].curve[s][e] / SEEDS, m0 += v[0].curve[s][e] / SEEDS;
            for (int s = 0; s < SEEDS; s++) {
                var += pow(v[k].curve[s][e] - mean, 2) / (SEEDS - 1);
                v0 += pow(v[0].curve[s][e] - m0, 2) / (SEEDS - 1);
            }
            double se = sqrt(var / SEEDS + v0 / SEEDS);
            at += snprintf(line + at, sizeof line - (size_t)at, " %.4f±%.4f", mean,
                           sqrt(var / SEEDS));
            if (v[k].asserted && fabs(mean - m0) > 3 * se)
                fail_msg("%s, epoch %d: mean loss %.5f, float32's %.5f (3 standard "
                         "errors: %.5f)", v[k].name, e + 1, mean, m0, 3 * se);
        }
        print_message("%s\n", line);
    }
    free(ds.x), free(ds.y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_mlp_trains_as_float32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
