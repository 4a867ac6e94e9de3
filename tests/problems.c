/*
 * problems.c - the fixture problems' closures.  The loops and their
 * operation order are the README's, in double, so that the float32 results
 * equal torch's recording bit for bit; keep them that way (and keep FP
 * contraction off: -std=c11 implies it for GCC, the pragma for others).
 */
#include "problems.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

enum { LOGREG_SAMPLES = 200 };

static void *alloc_aligned(size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    void *m = aligned_alloc(64, rounded ? rounded : 64);
    if (m)
        memset(m, 0, rounded ? rounded : 64);
    return m;
}

/* Reads the first nsamples of data/digits.bin (data/make_digits.py):
 * X = pixel/16, y = 1 for even labels. */
static int load_digits(t_problem *p, const char *source_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data/digits.bin", source_dir);
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    int n = 0, d = 0, k = 0, rc = -1;
    unsigned char *pix = NULL, *lab = NULL;
    if (fscanf(f, "digits %d %d %d", &n, &d, &k) != 3 || fgetc(f) != '\n' ||
        n < LOGREG_SAMPLES || d <= 0 || d > 4096)
        goto out;
    pix = malloc((size_t)n * (size_t)d);
    lab = malloc((size_t)n);
    if (!pix || !lab || fread(pix, 1, (size_t)n * (size_t)d, f) != (size_t)n * (size_t)d ||
        fread(lab, 1, (size_t)n, f) != (size_t)n)
        goto out;
    p->nsamples = LOGREG_SAMPLES;
    p->nfeatures = d;
    p->X = malloc(sizeof(double) * LOGREG_SAMPLES * (size_t)d);
    p->y = malloc(sizeof(double) * LOGREG_SAMPLES);
    p->r = malloc(sizeof(double) * LOGREG_SAMPLES);
    if (!p->X || !p->y || !p->r)
        goto out;
    for (int i = 0; i < LOGREG_SAMPLES; i++) {
        for (int j = 0; j < d; j++)
            p->X[(size_t)i * (size_t)d + (size_t)j] = pix[(size_t)i * (size_t)d + (size_t)j] / 16.0;
        p->y[i] = (lab[i] % 2 == 0) ? 1.0 : 0.0;
    }
    rc = 0;
out:
    free(pix);
    free(lab);
    fclose(f);
    return rc;
}

int t_problem_init(t_problem *p, const char *name, const char *source_dir)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    if (strcmp(name, "rosen2") == 0 || strcmp(name, "rosen100") == 0) {
        p->ntensors = 1;
        p->sizes[0] = strcmp(name, "rosen2") == 0 ? 2 : 100;
    } else if (strcmp(name, "logreg") == 0) {
        if (load_digits(p, source_dir) != 0) {
            t_problem_free(p);
            return -1;
        }
        p->ntensors = 2;
        p->sizes[0] = p->nfeatures;
        p->sizes[1] = 1;
    } else {
        return -1;
    }
    for (int k = 0; k < p->ntensors; k++) {
        p->n += p->sizes[k];
        p->params[k] = alloc_aligned(sizeof(float) * (size_t)p->sizes[k]);
        p->grads[k] = alloc_aligned(sizeof(float) * (size_t)p->sizes[k]);
        if (!p->params[k] || !p->grads[k]) {
            t_problem_free(p);
            return -1;
        }
    }
    p->xd = malloc(sizeof(double) * (size_t)p->n);
    p->gd = malloc(sizeof(double) * (size_t)p->n);
    if (!p->xd || !p->gd) {
        t_problem_free(p);
        return -1;
    }
    t_problem_reset(p);
    return 0;
}

void t_problem_reset(t_problem *p)
{
    for (int k = 0; k < p->ntensors; k++) {
        memset(p->params[k], 0, sizeof(float) * (size_t)p->sizes[k]);
        memset(p->grads[k], 0, sizeof(float) * (size_t)p->sizes[k]);
    }
    if (p->name[0] == 'r') { /* Rosenbrock: (-1.5, 2) or -1.2 / 1 alternating */
        if (p->n == 2) {
            p->params[0][0] = -1.5f;
            p->params[0][1] = 2.0f;
        } else {
            for (int64_t i = 0; i < p->n; i++)
                p->params[0][i] = (i % 2 == 0) ? -1.2f : 1.0f;
        }
    }
    p->calls = 0;
}

void t_problem_get_x(const t_problem *p, float *out)
{
    for (int k = 0; k < p->ntensors; k++) {
        memcpy(out, p->params[k], sizeof(float) * (size_t)p->sizes[k]);
        out += p->sizes[k];
    }
}

void t_problem_set_x(t_problem *p, const float *in)
{
    for (int k = 0; k < p->ntensors; k++) {
        memcpy(p->params[k], in, sizeof(float) * (size_t)p->sizes[k]);
        in += p->sizes[k];
    }
}

void t_problem_get_g(const t_problem *p, float *out)
{
    for (int k = 0; k < p->ntensors; k++) {
        memcpy(out, p->grads[k], sizeof(float) * (size_t)p->sizes[k]);
        out += p->sizes[k];
    }
}

static double rosen(int64_t n, const double *x, double *g)
{
    double f = 0;
    for (int64_t k = 0; k < n; k++)
        g[k] = 0;
    for (int64_t i = 0; i + 1 < n; i++) {
        double a = x[i + 1] - x[i] * x[i];
        double b = 1 - x[i];
        f = f + (((100 * a) * a) + (b * b));
        g[i] = g[i] + (((-400 * x[i]) * a) - (2 * b));
        g[i + 1] = g[i + 1] + 200 * a;
    }
    return f;
}

/* x = w (d) then b; g likewise */
static double logreg(t_problem *p, const double *x, double *g)
{
    const int n = p->nsamples, d = p->nfeatures;
    const double *w = x, b = x[d];
    double L = 0;
    for (int i = 0; i < n; i++) {
        const double *Xi = p->X + (size_t)i * (size_t)d;
        double s = 0;
        for (int j = 0; j < d; j++)
            s += Xi[j] * w[j];
        double z = s + b;
        double e = exp(-fabs(z));
        double prob = (z >= 0) ? 1 / (1 + e) : e / (1 + e);
        L = L + ((log1p(e) + ((z > 0) ? z : 0)) - p->y[i] * z);
        p->r[i] = prob - p->y[i];
    }
    double R = 0;
    for (int j = 0; j < d; j++)
        R += w[j] * w[j];
    for (int j = 0; j < d; j++) {
        double acc = 0;
        for (int i = 0; i < n; i++)
            acc += p->r[i] * p->X[(size_t)i * (size_t)d + (size_t)j];
        g[j] = acc / n + 0.01 * w[j];
    }
    double acc = 0;
    for (int i = 0; i < n; i++)
        acc += p->r[i];
    g[d] = acc / n;
    return L / n + 0.005 * R;
}

void t_problem_eval(t_problem *p, double *loss)
{
    int64_t o = 0;
    for (int k = 0; k < p->ntensors; k++)
        for (int64_t i = 0; i < p->sizes[k]; i++)
            p->xd[o++] = p->params[k][i];
    double f = p->X ? logreg(p, p->xd, p->gd) : rosen(p->n, p->xd, p->gd);
    o = 0;
    for (int k = 0; k < p->ntensors; k++)
        for (int64_t i = 0; i < p->sizes[k]; i++)
            p->grads[k][i] = (float)p->gd[o++];
    *loss = (float)f;
}

int t_problem_closure(void *user_data, double *loss)
{
    t_problem *p = user_data;
    p->calls++;
    if (p->fail_at != 0 && p->calls == p->fail_at)
        return 1;
    t_problem_eval(p, loss);
    return 0;
}

void t_problem_free(t_problem *p)
{
    for (int k = 0; k < T_PROBLEM_MAXT; k++) {
        free(p->params[k]);
        free(p->grads[k]);
        p->params[k] = p->grads[k] = NULL;
    }
    free(p->xd);
    free(p->gd);
    free(p->X);
    free(p->y);
    free(p->r);
    p->xd = p->gd = p->X = p->y = p->r = NULL;
}

double t_problem_loss(t_problem *p)
{
    double f;
    t_problem_eval(p, &f);
    return f;
}

double t_problem_dist_to_one(const t_problem *p)
{
    double m = 0;
    for (int t = 0; t < p->ntensors; t++)
        for (int64_t k = 0; k < p->sizes[t]; k++)
            m = fmax(m, fabs((double)p->params[t][k] - 1.0));
    return m;
}
