/*
 * test_muon.c - Muon (specs/muon.lua), the spec that multiplies matrices:
 * torch 2.13's recorded runs replayed (tests/fixtures/spec2/muon_*.fix:
 * Newton-Schulz in bfloat16 as torch runs it, and the .ns-f32 twins in
 * float32), the JIT against the reference engine and one thread against
 * two bit for bit, shapes and values refused with torch's messages with
 * nothing changed, and a checkpoint round trip.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* ---- a jopt-fixture 2 file (tests/fixtures/spec2/README.md), as Muon's
 * are: shapes, no inputs or events, the final momentum buffers ---------- */

#define MAXT 8

typedef struct fix2 {
    char options[512];
    int nt, steps;
    int64_t size[MAXT], shape[MAXT][2], total;
    float *init, *grads, *params, *final; /* final: the buffers, total */
    unsigned char *mask;                  /* steps x nt */
} fix2;

static void fix2_load(fix2 *f, const char *name)
{
    char path[1024], line[1024];
    memset(f, 0, sizeof *f);
    snprintf(path, sizeof path, "%s/tests/fixtures/spec2/%s", JOPT_SOURCE_DIR, name);
    FILE *in = fopen(path, "rb");
    if (!in)
        fail_msg("cannot open %s", path);
    int nfinal = 0;
    while (fgets(line, sizeof line, in)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "end"))
            break;
        if (!strncmp(line, "options ", 8))
            snprintf(f->options, sizeof f->options, "%.500s", line + 8);
        else if (!strncmp(line, "steps ", 6))
            f->steps = atoi(line + 6);
        else if (!strncmp(line, "final ", 6))
            nfinal++;
        else if (!strncmp(line, "shapes ", 7)) {
            char *c = line + 7;
            for (f->nt = 0; *c && f->nt < MAXT; f->nt++) {
                long long r, k = 1;
                int used;
                if (sscanf(c, "%lldx%lld%n", &r, &k, &used) < 2)
                    fail_msg("%s: a shape that is not 2-D", name);
                f->shape[f->nt][0] = r;
                f->shape[f->nt][1] = k;
                f->size[f->nt] = r * k;
                f->total += r * k;
                c += used;
                while (*c == ' ')
                    c++;
            }
        }
    }
    assert_true(f->nt > 0 && f->steps > 0 && nfinal == f->nt);
    f->init = malloc((size_t)f->total * sizeof(float));
    f->grads = calloc((size_t)(f->steps * f->total), sizeof(float));
    f->params = malloc((size_t)(f->steps * f->total) * sizeof(float));
    f->final = malloc((size_t)f->total * sizeof(float));
    f->mask = malloc((size_t)(f->steps * f->nt));
    assert_true(f->init && f->grads && f->params && f->final && f->mask);
    size_t n = (size_t)f->total;
    assert_true(fread(f->init, sizeof(float), n, in) == n);
    for (int s = 0; s < f->steps; s++) {
        unsigned char *m = f->mask + s * f->nt;
        assert_true(fread(m, 1, (size_t)f->nt, in) == (size_t)f->nt);
        int64_t off = 0;
        for (int t = 0; t < f->nt; off += f->size[t++])
            if (m[t])
                assert_true(fread(f->grads + s * f->total + off, sizeof(float),
                                  (size_t)f->size[t], in) == (size_t)f->size[t]);
        assert_true(fread(f->params + s * f->total, sizeof(float), n, in) == n);
    }
    assert_true(fread(f->final, sizeof(float), n, in) == n);
    assert_true(fgetc(in) == EOF);
    fclose(in);
}

static void fix2_free(fix2 *f)
{
    free(f->init);
    free(f->grads);
    free(f->params);
    free(f->final);
    free(f->mask);
}

/* ---- a Muon run over shaped tensors ----------------------------------------- */

typedef struct run {
    jopt_ctx *ctx;
    jopt_optim *opt;
    int nt;
    jopt_param params[MAXT];
} run;

static void run_new(run *r, jopt_engine engine, int threads, const char *options,
                    int nt, const int64_t (*shape)[2], const float *init)
{
    memset(r, 0, sizeof *r);
    T_OK(NULL, jopt_ctx_new(&r->ctx));
    T_OK(r->ctx, jopt_ctx_set_engine(r->ctx, engine));
    T_OK(r->ctx, jopt_ctx_set_threads(r->ctx, threads));
    r->nt = nt;
    int64_t off = 0;
    for (int t = 0; t < nt; t++) {
        int64_t n = shape[t][0] * shape[t][1];
        r->params[t] = (jopt_param){t_alloc(n), t_alloc(n), n};
        if (init)
            memcpy(r->params[t].param, init + off, (size_t)n * sizeof(float));
        else
            t_fill(r->params[t].param, n, 100 + (uint64_t)t, 0.0);
        off += n;
    }
    jopt_group group = {r->params, (size_t)nt, options};
    T_OK(r->ctx, jopt_optim_new(r->ctx, "muon", &group, 1, NULL, &r->opt));
    for (int t = 0; t < nt; t++)
        T_OK(r->ctx, jopt_set_shape(r->opt, 0, (size_t)t, 2, shape[t]));
}

static void run_free(run *r)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    for (int t = 0; t < r->nt; t++) {
        free(r->params[t].param);
        free(r->params[t].grad);
    }
}

/* one step with the fixture's gradients of step s (absent ones NULL) */
static void fixture_step(run *r, const fix2 *f, int s)
{
    int64_t off = 0;
    for (int t = 0; t < f->nt; off += f->size[t++]) {
        int present = f->mask[s * f->nt + t];
        if (present)
            memcpy(r->params[t].grad, f->grads + s * f->total + off,
                   (size_t)f->size[t] * sizeof(float));
        T_OK(r->ctx, jopt_set_grad(r->opt, 0, (size_t)t,
                                   present ? r->params[t].grad : NULL));
    }
    T_OK(r->ctx, jopt_step(r->opt, NULL, NULL, NULL));
}

typedef struct diff {
    int64_t n, differ;  /* floats compared, floats not bit-equal */
    double max_rel;     /* max |jopt - torch| / max(|torch|, tiny) */
    double sq, ref_sq;  /* sum of squared differences, of squared values */
} diff;

static void diff_add(diff *d, const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        d->n++;
        if (memcmp(&got[i], &want[i], sizeof(float)))
            d->differ++;
        double e = fabs((double)got[i] - (double)want[i]);
        double rel = e / fmax(fabs((double)want[i]), 1e-30);
        d->max_rel = rel > d->max_rel ? rel : d->max_rel;
        d->sq += e * e;
        d->ref_sq += (double)want[i] * want[i];
    }
}

/* replays fixture `name`; the parameters after every step and the final
 * buffers compared, into *d (NULL: none) */
static void replay(const char *name, const char *extra, diff *params, diff *bufs)
{
    fix2 f;
    fix2_load(&f, name);
    char options[600];
    snprintf(options, sizeof options, "%s %s", f.options, extra);
    run r;
    run_new(&r, JOPT_ENGINE_JIT, 1, options, f.nt, (const int64_t (*)[2])f.shape, f.init);
    for (int s = 0; s < f.steps; s++) {
        fixture_step(&r, &f, s);
        int64_t off = 0;
        for (int t = 0; t < f.nt; off += f.size[t++]) {
            int64_t before = params->differ;
            diff_add(params, r.params[t].param, f.params + s * f.total + off, f.size[t]);
            if (getenv("MUON_DEBUG") && before == 0 && params->differ)
                print_message("first difference: step %d tensor %d\n", s + 1, t);
        }
    }
    int64_t off = 0;
    for (int t = 0; t < f.nt; off += f.size[t++]) {
        const float *buf;
        T_OK(r.ctx, jopt_state_get(r.opt, 0, (size_t)t, "momentum_buffer", &buf, NULL));
        diff_add(bufs, buf, f.final + off, f.size[t]);
    }
    run_free(&r);
    fix2_free(&f);
}

static const char *const cases[] = {"muon_default", "muon_lr_nonesterov",
                                    "muon_match_rms_adamw", "muon_ns3_original"};

static void test_muon_fixtures(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int twin = 0; twin < 2; twin++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s", cases[c], twin ? ".ns-f32.fix" : ".fix");
            diff p = {0}, b = {0};
            replay(name, twin ? "ns_dtype=float32" : "", &p, &b);
            print_message("%-32s params %5lld/%lld differ, max rel %.3g, rms rel "
                          "%.3g; buffers %lld/%lld differ\n", name, (long long)p.differ,
                          (long long)p.n, p.max_rel, sqrt(p.sq / p.ref_sq),
                          (long long)b.differ, (long long)b.n);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_muon_fixtures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
