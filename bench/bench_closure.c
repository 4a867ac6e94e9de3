/*
 * bench_closure.c - what the closure optimizers (lbfgs, cg) cost on their
 * own: jopt_step's time minus the time spent inside the closure, per closure
 * evaluation and per iteration, against the memory roof, and L-BFGS against
 * the same iteration written as unfused C loops (one loop per torch op).
 *
 * The problem is a cheap separable quadratic over two tensors,
 *     f(x) = sum_k a_k (x_k - 1)^2 / 2,   g_k = a_k (x_k - 1),
 * one pass in C (read x, write g; a_k from a 4096-entry table in cache, log-
 * spaced over [1e-3, 1] so that L-BFGS takes many iterations to converge).
 * Should a run converge anyway (loss under 1e-9 of the first, or not
 * finite), x goes back to its start outside the timed part; the resets are
 * counted and printed.
 *
 * One N-float pass is the time to move N floats once, measured with the
 * memory-only loop of membw.c (rw1: read a and g, write a: 3 passes; it
 * rotates over as many arrays as L-BFGS holds, up to 256 MiB) on 1
 * and 2 threads (the bench's own pool, static halves), in the same rounds.
 * An optimizer's own time over that is "passes" (measured); the passes its
 * kernels make by construction are "counted" (the fused L-BFGS iteration
 * with m = history_size full pairs: 8m + 13; the naive one: 10m + 29).
 *
 *   bench_closure [--sizes 64K,1M,16M] [--threads 1,2] [--budget S]
 *                 [--max-iter N] [--history M] [--smoke]
 *
 * --smoke: tiny sizes, a few steps, checks that jopt and the naive loops
 * take the same iterations (losses within 1e-3), times nothing.
 * Speed is reported, never asserted.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* ---- the problem ------------------------------------------------------------ */

#define ATAB 4096
static float a_tab[ATAB];

typedef struct prob {
    int64_t n[2];
    float *x[2], *g[2], *x0[2];
    double t_closure; /* seconds inside the closure */
    long evals;
    double first_loss;
} prob;

static int closure(void *user, double *loss)
{
    prob *p = user;
    double t0 = b_now();
    double s = 0;
    for (int k = 0; k < 2; k++) {
        const float *restrict x = p->x[k];
        float *restrict g = p->g[k];
        int64_t n = p->n[k];
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < n; i++) {
            float a = a_tab[i & (ATAB - 1)], r = x[i] - 1.0f;
            g[i] = a * r;
            s += (double)(a * r * r);
        }
    }
    *loss = 0.5 * s;
    p->evals++;
    p->t_closure += b_now() - t0;
    return 0;
}

static int prob_new(prob *p, int64_t total, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->n[0] = total / 3 * 2 + 5;
    if (p->n[0] > total - 1)
        p->n[0] = total - 1;
    p->n[1] = total - p->n[0];
    for (int k = 0; k < 2; k++) {
        p->x[k] = b_alloc(p->n[k]);
        p->g[k] = b_alloc(p->n[k]);
        p->x0[k] = b_alloc(p->n[k]);
        if (!p->x[k] || !p->g[k] || !p->x0[k])
            return -1;
        b_fill(p->x0[k], p->n[k], seed + (uint64_t)k);
        memcpy(p->x[k], p->x0[k], (size_t)p->n[k] * sizeof(float));
    }
    double l;
    closure(p, &l);
    p->first_loss = l;
    p->evals = 0;
    p->t_closure = 0;
    return 0;
}

static void prob_reset(prob *p)
{
    for (int k = 0; k < 2; k++)
        memcpy(p->x[k], p->x0[k], (size_t)p->n[k] * sizeof(float));
}

static void prob_free(prob *p)
{
    for (int k = 0; k < 2; k++) {
        free(p->x[k]);
        free(p->g[k]);
        free(p->x0[k]);
    }
}

/* ---- the naive L-BFGS: torch's lbfgs.py without line search, one C loop per
 * tensor op, temporaries preallocated (a caching allocator's steady state) -- */

typedef struct naive {
    prob *p;
    int64_t n;
    int m, max_iter, vec; /* vec: vectorized (reassociated) dots */
    int fused;            /* jopt's passes, hand-written, vectorized dots */
    double lr, tol_grad, tol_change;
    float *flat, *prev, *d, *q, *tmp, **ys_dirs, **ys_stps;
    double *ro, *al;
    int head, count, have_prev;
    double t, H_diag, prev_loss;
    long n_iter, func_evals;
} naive;

static double dot_ord(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)(a[i] * b[i]);
    return s;
}

static double dot_vec(const float *a, const float *b, int64_t n)
{
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++)
        s += (double)(a[i] * b[i]);
    return s;
}

static double nv_dot(const naive *v, const float *a, const float *b)
{
    return v->vec ? dot_vec(a, b, v->n) : dot_ord(a, b, v->n);
}

static double nv_sum(const naive *v, const float *a)
{
    double s = 0;
    if (v->vec) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < v->n; i++)
            s += (double)a[i];
    } else {
        for (int64_t i = 0; i < v->n; i++)
            s += (double)a[i];
    }
    return s;
}

static float nv_max(const naive *v, const float *a)
{
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < v->n; i++)
        m = a[i] > m ? a[i] : m;
    return m;
}

static void nv_abs(const naive *v, float *restrict y, const float *restrict x)
{
    for (int64_t i = 0; i < v->n; i++)
        y[i] = fabsf(x[i]);
}

static void nv_gather(naive *v) /* flat_grad = cat(g.view(-1)) */
{
    memcpy(v->flat, v->p->g[0], (size_t)v->p->n[0] * sizeof(float));
    memcpy(v->flat + v->p->n[0], v->p->g[1], (size_t)v->p->n[1] * sizeof(float));
}

static float nv_absmax(naive *v, const float *x) /* x.abs().max() */
{
    nv_abs(v, v->tmp, x);
    return nv_max(v, v->tmp);
}

static int naive_new(naive *v, prob *p, int m, int max_iter, int vec)
{
    memset(v, 0, sizeof *v);
    v->p = p;
    v->n = p->n[0] + p->n[1];
    v->m = m;
    v->max_iter = max_iter;
    v->vec = vec;
    v->lr = 1;
    v->tol_grad = 1e-7;
    v->tol_change = 1e-9;
    v->H_diag = 1;
    float **arr[5] = {&v->flat, &v->prev, &v->d, &v->q, &v->tmp};
    for (int i = 0; i < 5; i++)
        if (!(*arr[i] = b_alloc(v->n)))
            return -1;
    v->ys_dirs = calloc((size_t)m + 1, sizeof *v->ys_dirs);
    v->ys_stps = calloc((size_t)m + 1, sizeof *v->ys_stps);
    v->ro = calloc((size_t)m + 1, sizeof *v->ro);
    v->al = calloc((size_t)m + 1, sizeof *v->al);
    if (!v->ys_dirs || !v->ys_stps || !v->ro || !v->al)
        return -1;
    /* one spare pair: a new pair is written before the oldest is dropped */
    for (int i = 0; i <= m; i++)
        if (!(v->ys_dirs[i] = b_alloc(v->n)) || !(v->ys_stps[i] = b_alloc(v->n)))
            return -1;
    return 0;
}

static void naive_free(naive *v)
{
    free(v->flat);
    free(v->prev);
    free(v->d);
    free(v->q);
    free(v->tmp);
    for (int i = 0; v->ys_dirs && i <= v->m; i++) {
        free(v->ys_dirs[i]);
        free(v->ys_stps[i]);
    }
    free(v->ys_dirs);
    free(v->ys_stps);
    free(v->ro);
    free(v->al);
}

#define NV_SLOT(v, i) (((v)->head + (i)) % ((v)->m + 1))

/* one step() of torch.optim.LBFGS(lr=1, line_search_fn=None) */
static void naive_step(naive *v, double *loss_out)
{
    const int64_t n = v->n;
    double loss;
    closure(v->p, &loss);
    *loss_out = loss;
    v->func_evals++;
    int current_evals = 1;
    nv_gather(v);
    if (nv_absmax(v, v->flat) <= (float)v->tol_grad)
        return;
    int n_iter = 0;
    while (n_iter < v->max_iter) {
        n_iter++;
        v->n_iter++;
        float *restrict d = v->d, *restrict flat = v->flat, *restrict q = v->q;
        if (v->n_iter == 1) {
            for (int64_t i = 0; i < n; i++) /* d = flat_grad.neg() */
                d[i] = -flat[i];
            v->count = v->head = 0;
            v->H_diag = 1;
        } else {
            int w = NV_SLOT(v, v->count); /* the spare pair */
            float *restrict y = v->ys_dirs[w], *restrict s = v->ys_stps[w];
            const float *restrict prev = v->prev;
            float t = (float)v->t;
            for (int64_t i = 0; i < n; i++) /* y = flat_grad.sub(prev_flat_grad) */
                y[i] = flat[i] - prev[i];
            for (int64_t i = 0; i < n; i++) /* s = d.mul(t) */
                s[i] = d[i] * t;
            float ys = (float)nv_dot(v, y, s);
            if (ys > 1e-10f) {
                if (v->count == v->m) { /* old_dirs.pop(0) */
                    v->head = (v->head + 1) % (v->m + 1);
                    v->count--;
                }
                v->ro[NV_SLOT(v, v->count)] = (float)(1.0 / ys);
                v->count++;
                v->H_diag = (float)(ys / (float)nv_dot(v, y, y));
            }
            for (int64_t i = 0; i < n; i++) /* q = flat_grad.neg() */
                q[i] = -flat[i];
            for (int i = v->count - 1; i >= 0; i--) {
                int k = NV_SLOT(v, i);
                v->al[i] = (float)((float)nv_dot(v, v->ys_stps[k], q) * (float)v->ro[k]);
                const float *restrict yk = v->ys_dirs[k];
                float a = (float)-v->al[i];
                for (int64_t e = 0; e < n; e++) /* q.add_(old_dirs[i], alpha=-al[i]) */
                    q[e] += a * yk[e];
            }
            float h = (float)v->H_diag;
            for (int64_t i = 0; i < n; i++) /* d = r = torch.mul(q, H_diag) */
                d[i] = q[i] * h;
            for (int i = 0; i < v->count; i++) {
                int k = NV_SLOT(v, i);
                float be = (float)((float)nv_dot(v, v->ys_dirs[k], d) * (float)v->ro[k]);
                const float *restrict sk = v->ys_stps[k];
                float a = (float)(v->al[i] - be);
                for (int64_t e = 0; e < n; e++) /* r.add_(old_stps[i], alpha=al[i]-be_i) */
                    d[e] += a * sk[e];
            }
        }
        memcpy(v->prev, flat, (size_t)n * sizeof(float)); /* prev_flat_grad.copy_ */
        v->prev_loss = loss;
        if (v->n_iter == 1) { /* min(1., 1./flat_grad.abs().sum()) * lr */
            nv_abs(v, v->tmp, flat);
            double sa = (float)nv_sum(v, v->tmp);
            v->t = fmin(1.0, 1.0 / sa) * v->lr;
        } else {
            v->t = v->lr;
        }
        double gtd = (float)nv_dot(v, flat, d);
        if (gtd > -v->tol_change)
            break;
        int ls_func_evals = 0;
        float t = (float)v->t;
        for (int k = 0, off = 0; k < 2; off += (int)v->p->n[k], k++) { /* _add_grad */
            float *restrict x = v->p->x[k];
            const float *restrict dk = d + off;
            for (int64_t i = 0; i < v->p->n[k]; i++)
                x[i] += t * dk[i];
        }
        int opt_cond = 0;
        if (n_iter != v->max_iter) {
            closure(v->p, &loss);
            nv_gather(v);
            opt_cond = nv_absmax(v, flat) <= (float)v->tol_grad;
            ls_func_evals = 1;
        }
        current_evals += ls_func_evals;
        v->func_evals += ls_func_evals;
        if (n_iter == v->max_iter || current_evals >= v->max_iter * 5 / 4 || opt_cond)
            break;
        float *restrict tmp = v->tmp;
        for (int64_t i = 0; i < n; i++) /* d.mul(t) */
            tmp[i] = d[i] * t;
        if (nv_absmax(v, tmp) <= (float)v->tol_change) /* .abs().max() */
            break;
        if (fabs(loss - v->prev_loss) < v->tol_change)
            break;
    }
}


/* ---- the same iteration as jopt's kernels (the passes of specs/lbfgs.lua),
 * hand-fused C with vectorized (reassociated) double sums: what the fused
 * passes cost when the sums do not serialize ------------------------------- */

static double fz_gather(naive *v, float *restrict flat, double *sabs)
{
    float m = 0;
    double s = 0;
    for (int k = 0, off = 0; k < 2; off += (int)v->p->n[k], k++) {
        const float *restrict g = v->p->g[k];
        float *restrict f = flat + off;
#pragma omp simd reduction(max : m) reduction(+ : s)
        for (int64_t i = 0; i < v->p->n[k]; i++) {
            float a = fabsf(g[i]);
            f[i] = g[i];
            m = a > m ? a : m;
            s += (double)a;
        }
    }
    *sabs = s;
    return m;
}

/* y += a*x, then z.y */
static double fz_axpy_dot(float *restrict y, const float *restrict x,
                          const float *restrict z, float a, int64_t n)
{
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
        float t = fmaf(x[i], a, y[i]);
        y[i] = t;
        s += (double)(z[i] * t);
    }
    return s;
}

static void fused_step(naive *v, double *loss_out)
{
    const int64_t n = v->n;
    double loss, sabs;
    closure(v->p, &loss);
    *loss_out = loss;
    v->func_evals++;
    int current_evals = 1;
    if (fz_gather(v, v->flat, &sabs) <= (float)v->tol_grad)
        return;
    int n_iter = 0;
    while (n_iter < v->max_iter) {
        n_iter++;
        v->n_iter++;
        float *restrict d = v->d, *restrict flat = v->flat;
        double gtd = 0;
        if (v->n_iter == 1) {
            v->count = v->head = 0;
            v->H_diag = 1;
#pragma omp simd reduction(+ : gtd)
            for (int64_t i = 0; i < n; i++) {
                d[i] = -flat[i];
                gtd += (double)(flat[i] * d[i]);
            }
        } else {
            int w = NV_SLOT(v, v->count);
            float *restrict y = v->ys_dirs[w], *restrict s = v->ys_stps[w];
            const float *restrict prev = v->prev;
            float t = (float)v->t;
            double ys = 0, yy = 0;
#pragma omp simd reduction(+ : ys, yy)
            for (int64_t i = 0; i < n; i++) { /* curvature */
                float yi = flat[i] - prev[i], si = d[i] * t;
                y[i] = yi;
                s[i] = si;
                ys += (double)(yi * si);
                yy += (double)(yi * yi);
            }
            if ((float)ys > 1e-10f) {
                if (v->count == v->m) {
                    v->head = (v->head + 1) % (v->m + 1);
                    v->count--;
                }
                v->ro[NV_SLOT(v, v->count)] = (float)(1.0 / (float)ys);
                v->count++;
                v->H_diag = (float)((float)ys / (float)yy);
            }
            int c = v->count;
            double dot = 0;
            const float *restrict s_last = v->ys_stps[NV_SLOT(v, c - 1)];
#pragma omp simd reduction(+ : dot)
            for (int64_t i = 0; i < n; i++) { /* neg_dot */
                d[i] = -flat[i];
                dot += (double)(s_last[i] * d[i]);
            }
            for (int i = c - 1; i >= 1; i--) {
                v->al[i] = (float)((float)dot * (float)v->ro[NV_SLOT(v, i)]);
                dot = fz_axpy_dot(d, v->ys_dirs[NV_SLOT(v, i)],
                                  v->ys_stps[NV_SLOT(v, i - 1)], (float)-v->al[i], n);
            }
            v->al[0] = (float)((float)dot * (float)v->ro[NV_SLOT(v, 0)]);
            const float *restrict y0 = v->ys_dirs[NV_SLOT(v, 0)];
            float a0 = (float)-v->al[0], h = (float)v->H_diag;
            dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t i = 0; i < n; i++) { /* axpy_scale_dot */
                float q = fmaf(y0[i], a0, d[i]) * h;
                d[i] = q;
                dot += (double)(y0[i] * q);
            }
            for (int i = 0; i < c; i++) {
                float be = (float)((float)dot * (float)v->ro[NV_SLOT(v, i)]);
                const float *z = i + 1 < c ? v->ys_dirs[NV_SLOT(v, i + 1)] : flat;
                dot = fz_axpy_dot(d, v->ys_stps[NV_SLOT(v, i)], z,
                                  (float)(v->al[i] - be), n);
            }
            gtd = dot;
        }
        /* prev_flat_grad = flat_grad: a swap, as jopt shares the buffer */
        float *sw = v->prev;
        v->prev = v->flat;
        v->flat = sw;
        v->prev_loss = loss;
        v->t = v->n_iter == 1 ? fmin(1.0, 1.0 / (float)sabs) * v->lr : v->lr;
        if ((float)gtd > -v->tol_change)
            break;
        int ls_func_evals = 0;
        float t = (float)v->t;
        for (int k = 0, off = 0; k < 2; off += (int)v->p->n[k], k++) {
            float *restrict x = v->p->x[k];
            const float *restrict dk = d + off;
            for (int64_t i = 0; i < v->p->n[k]; i++)
                x[i] = fmaf(dk[i], t, x[i]);
        }
        int opt_cond = 0;
        if (n_iter != v->max_iter) {
            closure(v->p, &loss);
            opt_cond = fz_gather(v, v->flat, &sabs) <= (float)v->tol_grad;
            ls_func_evals = 1;
        }
        current_evals += ls_func_evals;
        v->func_evals += ls_func_evals;
        if (n_iter == v->max_iter || current_evals >= v->max_iter * 5 / 4 || opt_cond)
            break;
        float m = 0;
#pragma omp simd reduction(max : m)
        for (int64_t i = 0; i < n; i++) { /* amax_scaled */
            float a = fabsf(d[i] * t);
            m = a > m ? a : m;
        }
        if (m <= (float)v->tol_change)
            break;
        if (fabs(loss - v->prev_loss) < v->tol_change)
            break;
    }
}

/* ---- the memory roof: membw.c's rw1 loop (read a and g, write a) ------------ */

#define ROOF_MAXARR 30
typedef struct roof_arg {
    b_pattern pat;
    float *buf[ROOF_MAXARR]; /* rotated through: the footprint of L-BFGS's vectors */
    int nbuf, j;
    int64_t n;
} roof_arg;

static void roof_part(void *arg, int t, int nt)
{
    roof_arg *r = arg;
    float *arr[2] = {r->buf[r->j % r->nbuf], r->buf[(r->j + 1) % r->nbuf]};
    int64_t lo, hi;
    b_split(r->n, t, nt, &lo, &hi);
    b_membw(&r->pat, arr, lo, hi);
}

/* ---- configurations and rounds ------------------------------------------------ */

enum { C_LBFGS, C_WOLFE, C_CG, C_NAIVE_ORD, C_NAIVE_VEC, C_FUSED_VEC, C_COUNT };
static const char *const cname[C_COUNT] = {"lbfgs", "lbfgs+wolfe", "cg",
                                           "naive (ordered dots)",
                                           "naive (vector dots)",
                                           "fused C (vector dots)"};

#define MAXS 4096
typedef struct series {
    double own_eval[MAXS], own_iter[MAXS], own_step[MAXS], step[MAXS], clos[MAXS];
    double evals_step[MAXS], iters_step[MAXS];
    int ns;
} series;

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
    if (n <= 0)
        return NAN;
    double *c = malloc(sizeof *c * (size_t)n);
    memcpy(c, v, sizeof *c * (size_t)n);
    qsort(c, (size_t)n, sizeof *c, cmp_d);
    double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

typedef struct runner {
    int kind;
    prob p;
    jopt_optim *opt; /* jopt configurations */
    naive nv;        /* naive ones */
    long resets;
    double last_loss;
    int steps_per_sample[3];
} runner;

static double n_iter_of(runner *r)
{
    if (r->kind >= C_NAIVE_ORD)
        return (double)r->nv.n_iter;
    if (r->kind == C_CG)
        return NAN;
    const float *data = NULL;
    int64_t numel = 0;
    if (jopt_state_get(r->opt, 0, 0, "n_iter", &data, &numel) != JOPT_OK || !data)
        return 0;
    (void)numel;
    return *data;
}

static int runner_step(runner *r)
{
    double loss;
    if (r->kind == C_FUSED_VEC) {
        fused_step(&r->nv, &loss);
    } else if (r->kind >= C_NAIVE_ORD) {
        naive_step(&r->nv, &loss);
    } else if (jopt_step(r->opt, closure, &r->p, &loss) != JOPT_OK) {
        return -1;
    }
    r->last_loss = loss;
    return 0;
}

/* converged or diverged: back to the start (outside the timing) */
static void runner_maybe_reset(runner *r)
{
    if (!(r->last_loss >= 1e-9 * r->p.first_loss) || !isfinite(r->last_loss)) {
        prob_reset(&r->p);
        r->resets++;
    }
}

/* one sample: `steps` steps; adds its figures to s */
static int sample(runner *r, int steps, series *s)
{
    double it0 = n_iter_of(r);
    long ev0 = r->p.evals;
    r->p.t_closure = 0;
    double t0 = b_now();
    for (int i = 0; i < steps; i++)
        if (runner_step(r))
            return -1;
    double t = b_now() - t0;
    double evals = (double)(r->p.evals - ev0), iters = n_iter_of(r) - it0;
    double own = t - r->p.t_closure;
    if (s->ns < MAXS) {
        int k = s->ns++;
        s->own_eval[k] = evals > 0 ? own / evals : NAN;
        s->own_iter[k] = iters > 0 ? own / iters : NAN;
        s->own_step[k] = own / steps;
        s->step[k] = t / steps;
        s->clos[k] = r->p.t_closure / steps;
        s->evals_step[k] = evals / steps;
        s->iters_step[k] = iters / steps;
    }
    runner_maybe_reset(r);
    return 0;
}

static int64_t parse_size(const char *s)
{
    char *e;
    double v = strtod(s, &e);
    if (*e == 'K' || *e == 'k')
        v *= 1024;
    else if (*e == 'M' || *e == 'm')
        v *= 1024 * 1024;
    return (int64_t)v;
}

static int runner_new(runner *r, jopt_ctx *ctx, int kind, int64_t n, int m,
                      int max_iter)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    if (prob_new(&r->p, n, 7))
        return -1;
    if (kind >= C_NAIVE_ORD)
    {
        int rc = naive_new(&r->nv, &r->p, m, max_iter, kind != C_NAIVE_ORD);
        r->nv.fused = kind == C_FUSED_VEC;
        return rc;
    }
    jopt_param ps[2] = {{r->p.x[0], r->p.g[0], r->p.n[0]},
                        {r->p.x[1], r->p.g[1], r->p.n[1]}};
    jopt_group g = {ps, 2, NULL};
    char opts[200];
    if (kind == C_CG)
        snprintf(opts, sizeof opts, "max_iter=%d", max_iter);
    else
        snprintf(opts, sizeof opts, "history_size=%d max_iter=%d line_search_fn=%s",
                 m, max_iter, kind == C_WOLFE ? "strong_wolfe" : "none");
    if (jopt_optim_new(ctx, kind == C_CG ? "cg" : "lbfgs", &g, 1, opts, &r->opt) != JOPT_OK) {
        fprintf(stderr, "jopt_optim_new(%s, %s): %s\n", cname[kind], opts,
                jopt_errmsg(ctx));
        return -1;
    }
    return 0;
}

static void runner_free(runner *r)
{
    if (r->kind >= C_NAIVE_ORD)
        naive_free(&r->nv);
    jopt_optim_free(r->opt);
    prob_free(&r->p);
}

/* ---- the smoke test ------------------------------------------------------------ */

static int smoke(jopt_ctx *ctx)
{
    int bad = 0;
    int64_t sizes[2] = {4099, 70000}; /* the second crosses a 64K range */
    for (int si = 0; si < 2; si++) {
        runner r[C_COUNT];
        for (int k = 0; k < C_COUNT; k++)
            if (runner_new(&r[k], ctx, k, sizes[si], 10, 10))
                return 1;
        for (int step = 0; step < 3; step++) {
            for (int k = 0; k < C_COUNT; k++) {
                jopt_ctx_set_threads(ctx, 1 + step % 2);
                if (runner_step(&r[k])) {
                    fprintf(stderr, "%s: step failed: %s\n", cname[k], jopt_errmsg(ctx));
                    return 1;
                }
                if (!isfinite(r[k].last_loss)) {
                    fprintf(stderr, "%s: loss %g\n", cname[k], r[k].last_loss);
                    bad = 1;
                }
            }
            /* the same iteration: jopt's lbfgs against the naive loops */
            for (int k = C_NAIVE_ORD; k <= C_FUSED_VEC; k++) {
                double a = r[C_LBFGS].last_loss, b = r[k].last_loss;
                double rel = fabs(a - b) / fmax(fabs(a), 1e-30);
                printf("n=%lld step %d: lbfgs loss %.9g, %s %.9g (rel %.1e)\n",
                       (long long)sizes[si], step + 1, a, cname[k], b, rel);
                if (!(rel < 1e-3) || n_iter_of(&r[C_LBFGS]) != n_iter_of(&r[k])) {
                    fprintf(stderr, "mismatch: %s against lbfgs (iterations %g, %g)\n",
                            cname[k], n_iter_of(&r[k]), n_iter_of(&r[C_LBFGS]));
                    bad = 1;
                }
            }
            if (!(r[C_WOLFE].last_loss <= r[C_WOLFE].p.first_loss) ||
                !(r[C_CG].last_loss <= r[C_CG].p.first_loss)) {
                fprintf(stderr, "lbfgs+wolfe or cg went uphill\n");
                bad = 1;
            }
        }
        for (int k = 0; k < C_COUNT; k++)
            runner_free(&r[k]);
    }
    printf(bad ? "bench_closure smoke: FAILED\n" : "bench_closure smoke: ok\n");
    return bad;
}

/* ---- main ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *sizes_s = "64K,1M,16M";
    int threads[2] = {1, 2}, nthreads = 2, max_iter = 10, m = 10, do_smoke = 0;
    double budget = 6.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
            sizes_s = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            const char *t = argv[++i];
            nthreads = 0;
            while (*t && nthreads < 2) {
                threads[nthreads++] = atoi(t);
                t = strchr(t, ',');
                t = t ? t + 1 : "";
            }
        } else if (!strcmp(argv[i], "--budget") && i + 1 < argc)
            budget = atof(argv[++i]);
        else if (!strcmp(argv[i], "--max-iter") && i + 1 < argc)
            max_iter = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--history") && i + 1 < argc)
            m = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--smoke"))
            do_smoke = 1;
        else {
            fprintf(stderr, "usage: %s [--sizes 64K,1M,16M] [--threads 1,2] "
                    "[--budget S] [--max-iter N] [--history M] [--smoke]\n", argv[0]);
            return 2;
        }
    }
    for (int j = 0; j < ATAB; j++) { /* log-spaced in [1e-3, 1], shuffled */
        double u = fmod(j * 0.6180339887498949, 1.0);
        a_tab[j] = (float)pow(10.0, -3.0 + 3.0 * u);
    }
    jopt_ctx *ctx;
    if (jopt_ctx_new(&ctx) != JOPT_OK) {
        fprintf(stderr, "jopt_ctx_new failed\n");
        return 1;
    }
    if (do_smoke) {
        int rc = smoke(ctx);
        jopt_ctx_free(ctx);
        return rc;
    }
    b_pool *pool = b_pool_new(2);
    printf("bench_closure: f = sum a_k (x_k - 1)^2 / 2 over 2 tensors, a_k log-spaced in "
           "[1e-3, 1]\nlbfgs: history_size=%d max_iter=%d lr=1; cg: max_iter=%d; "
           "own = jopt_step (or the naive step) minus the closure's time; medians of "
           "samples; budget %.1f s per size\n", m, max_iter, max_iter, budget);
    printf("counted passes per iteration, m=%d pairs: fused lbfgs %d (+2 per step: "
           "the undo snapshot), naive %d\n\n", m, 8 * m + 13, 10 * m + 29);

    char buf[64];
    strncpy(buf, sizes_s, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        int64_t n = parse_size(tok);
        if (n < 16)
            continue;
        runner r[C_COUNT];
        int ok = 1;
        for (int k = 0; k < C_COUNT && ok; k++)
            ok = runner_new(&r[k], ctx, k, n, m, max_iter) == 0;
        if (!ok) {
            fprintf(stderr, "setup failed at n=%lld\n", (long long)n);
            return 1;
        }
        /* the roof's arrays: as many as L-BFGS holds (2m + ~8, at most 30)
         * unless fewer already make 256 MiB, so that the roof sees the same
         * level of the memory hierarchy as the optimizer */
        roof_arg ra;
        memset(&ra, 0, sizeof ra);
        ra.n = n;
        ra.pat.nslots = 2;
        ra.pat.read[0] = ra.pat.read[1] = ra.pat.written[0] = 1;
        ra.pat.reads = 2;
        ra.pat.writes = 1;
        int64_t want = ((int64_t)256 << 20) / (4 * n) + 1;
        ra.nbuf = want < 2 ? 2 : want > ROOF_MAXARR ? ROOF_MAXARR : (int)want;
        if (ra.nbuf > 2 * m + 8)
            ra.nbuf = 2 * m + 8 > 2 ? 2 * m + 8 : 2;
        for (int i = 0; i < ra.nbuf; i++) {
            if (!(ra.buf[i] = b_alloc(n)))
                return 1;
            b_fill(ra.buf[i], n, 3 + (uint64_t)i);
        }
        /* warm up: fill every history, size the samples to >= 20 ms */
        for (int ti = 0; ti < nthreads; ti++) {
            jopt_ctx_set_threads(ctx, threads[ti]);
            for (int k = 0; k < C_COUNT; k++) {
                if (k >= C_NAIVE_ORD && threads[ti] != 1) {
                    r[k].steps_per_sample[ti] = 0;
                    continue;
                }
                int steps = 0;
                double t0 = b_now();
                do {
                    if (runner_step(&r[k])) {
                        fprintf(stderr, "%s: %s\n", cname[k], jopt_errmsg(ctx));
                        return 1;
                    }
                    steps++;
                    runner_maybe_reset(&r[k]);
                } while (steps < 3 || b_now() - t0 < 0.02);
                double per = (b_now() - t0) / steps;
                int sp = (int)ceil(0.02 / per);
                r[k].steps_per_sample[ti] = sp < 1 ? 1 : sp;
            }
        }
        series *s = calloc((size_t)C_COUNT * 2, sizeof *s);
        double roof[2][MAXS];
        int nroof[2] = {0, 0};
        int reps = n >= (1 << 22) ? 20 : n >= (1 << 18) ? 200 : 2000;
        double t_start = b_now();
        int rounds = 0;
        while (rounds < 3 || (b_now() - t_start < budget && rounds < MAXS)) {
            for (int ti = 0; ti < nthreads; ti++) {
                jopt_ctx_set_threads(ctx, threads[ti]);
                for (int k = 0; k < C_COUNT; k++)
                    if (r[k].steps_per_sample[ti] &&
                        sample(&r[k], r[k].steps_per_sample[ti], &s[k * 2 + ti])) {
                        fprintf(stderr, "%s: %s\n", cname[k], jopt_errmsg(ctx));
                        return 1;
                    }
                double t0 = b_now();
                for (int i = 0; i < reps; i++, ra.j++)
                    b_pool_run(pool, threads[ti], roof_part, &ra);
                if (nroof[ti] < MAXS)
                    roof[ti][nroof[ti]++] = (b_now() - t0) / reps / 3.0;
            }
            rounds++;
        }
        printf("== %lld elements (tensors of %lld and %lld), %d rounds, %.1f s\n",
               (long long)n, (long long)r[0].p.n[0], (long long)r[0].p.n[1], rounds,
               b_now() - t_start);
        double pass[2];
        for (int ti = 0; ti < nthreads; ti++) {
            pass[ti] = median(roof[ti], nroof[ti]);
            printf("one N-float pass, %d thr: %.1f us (%.1f GB/s; memory-only loop 2R/1W "
                   "rotating over %d arrays, %.0f MiB)\n", threads[ti], pass[ti] * 1e6,
                   4.0 * (double)n / pass[ti] * 1e-9, ra.nbuf,
                   4.0 * (double)n * ra.nbuf / (1 << 20));
        }
        if (n < (1 << 20))
            printf("(under 1M elements jopt's kernels run on the caller: passes on 2 thr "
                   "are counted in 1-thread passes)\n");
        printf("%-21s %3s %6s %6s %9s %8s %11s %11s %9s %9s %7s\n", "optimizer", "thr",
               "ev/st", "it/st", "step ms", "closure", "own us/ev", "own us/it",
               "passes/it", "counted", "resets");
        double own_it[C_COUNT][2];
        for (int k = 0; k < C_COUNT; k++)
            for (int ti = 0; ti < nthreads; ti++) {
                series *x = &s[k * 2 + ti];
                own_it[k][ti] = NAN;
                if (!x->ns)
                    continue;
                double st = median(x->step, x->ns), cl = median(x->clos, x->ns);
                double oe = median(x->own_eval, x->ns), oi = median(x->own_iter, x->ns);
                double es = median(x->evals_step, x->ns), is = median(x->iters_step, x->ns);
                own_it[k][ti] = oi;
                char cnt[16] = "-", pit[16] = "-", its[16] = "-", oit[16] = "-";
                if (k == C_LBFGS)
                    snprintf(cnt, sizeof cnt, "%d", 8 * m + 13);
                if (k == C_FUSED_VEC)
                    snprintf(cnt, sizeof cnt, "%d", 8 * m + 13);
                else if (k >= C_NAIVE_ORD)
                    snprintf(cnt, sizeof cnt, "%d", 10 * m + 29);
                if (k != C_CG) {
                    snprintf(its, sizeof its, "%.1f", is);
                    snprintf(oit, sizeof oit, "%.1f", oi * 1e6);
                    /* under 1M elements jopt runs on the caller alone */
                    double ps = n < (1 << 20) ? pass[0] : pass[ti];
                    snprintf(pit, sizeof pit, "%.1f", oi / ps);
                }
                printf("%-21s %3d %6.1f %6s %9.3f %7.1f%% %11.1f %11s %9s %9s %7ld\n",
                       cname[k], threads[ti], es, its, st * 1e3, 100.0 * cl / st,
                       oe * 1e6, oit, pit, cnt, r[k].resets);
            }
        double ord = own_it[C_NAIVE_ORD][0] / own_it[C_LBFGS][0];
        double vec = own_it[C_NAIVE_VEC][0] / own_it[C_LBFGS][0];
        printf("naive / jopt lbfgs, own time per iteration, 1 thr: %.2fx (ordered dots, "
               "same arithmetic), %.2fx (vectorized dots); traffic ratio %.2fx\n",
               ord, vec, (10.0 * m + 29) / (8.0 * m + 13));
        printf("naive / fused C, both with vectorized dots, 1 thr: %.2fx; jopt lbfgs / "
               "fused C: %.2fx\n", own_it[C_NAIVE_VEC][0] / own_it[C_FUSED_VEC][0],
               own_it[C_LBFGS][0] / own_it[C_FUSED_VEC][0]);
        if (nthreads == 2)
            printf("jopt 1 thr / 2 thr, own time per eval: lbfgs %.2fx, lbfgs+wolfe %.2fx, "
                   "cg %.2fx\n",
                   median(s[C_LBFGS * 2].own_eval, s[C_LBFGS * 2].ns) /
                       median(s[C_LBFGS * 2 + 1].own_eval, s[C_LBFGS * 2 + 1].ns),
                   median(s[C_WOLFE * 2].own_eval, s[C_WOLFE * 2].ns) /
                       median(s[C_WOLFE * 2 + 1].own_eval, s[C_WOLFE * 2 + 1].ns),
                   median(s[C_CG * 2].own_eval, s[C_CG * 2].ns) /
                       median(s[C_CG * 2 + 1].own_eval, s[C_CG * 2 + 1].ns));
        printf("\n");
        fflush(stdout);
        free(s);
        for (int i = 0; i < ra.nbuf; i++)
            free(ra.buf[i]);
        for (int k = 0; k < C_COUNT; k++)
            runner_free(&r[k]);
    }
    b_pool_free(pool);
    jopt_ctx_free(ctx);
    return 0;
}
