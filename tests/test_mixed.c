/*
 * test_mixed.c - bfloat16 and float16 parameters against recorded torch
 * 2.13 runs (tests/fixtures/mixed, README there), with both engines:
 *
 *   fused         torch's fused=True kernel as run: Adam and AdamW bit for
 *                 bit; SGD and Adagrad bit for bit in each tensor's scalar
 *                 tail (their vector loops are broken in torch 2.13 for
 *                 16-bit types: docs/fidelity.md), the rest measured
 *   fused_scalar  every element through the fused kernel's scalar loop:
 *                 SGD and Adagrad bit for bit
 *   fused_vector  Adagrad's vector loop (constants rounded to 16 bits):
 *                 measured only
 *   forloop       torch's for-loop on float32 copies rounded after each
 *                 step, with float32 state or (.lpstate) state rounded the
 *                 same way: bit for bit against the .ieee-sqrt twin where
 *                 there is one, else the file; stock torch measured
 *
 * amp files run GradScaler's protocol: a per-step scale and found_inf
 * (jopt_set_grad_scale); the gradients written back are compared too.
 * Prints one line per file (docs/fidelity.md has the table).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include "cg.h"
#include "helpers.h"

#define MAXT 8

typedef struct mfix {
    char name[256], spec[64], options[512], dtype[16], impl[32], sdtype[16];
    char trailer[8][64];
    int ntrailer, ntensors, steps, amp, ieee;
    int64_t sizes[MAXT], total;
    int dt, sdt;            /* CG_DT_* */
    unsigned char *buf;     /* the whole file */
    size_t len, data;       /* where the binary part starts */
} mfix;

static int dt_of(const char *s)
{
    return !strcmp(s, "bfloat16") ? CG_DT_BF16 : !strcmp(s, "float16") ? CG_DT_F16 : CG_DT_F32;
}

static void mfix_load(mfix *f, const char *dir, const char *name)
{
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "rb");
    if (!fp)
        fail_msg("cannot open %s", path);
    fseek(fp, 0, SEEK_END);
    f->len = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    f->buf = malloc(f->len);
    assert_int_equal(fread(f->buf, 1, f->len, fp), f->len);
    fclose(fp);
    f->ieee = strstr(name, ".ieee-sqrt.") != NULL;
    char *line = (char *)f->buf;
    for (;;) {
        char *nl = memchr(line, '\n', f->len - (size_t)(line - (char *)f->buf));
        assert_non_null(nl);
        *nl = 0;
        char *val = strchr(line, ' ');
        if (val)
            *val++ = 0;
        if (!strcmp(line, "end")) {
            f->data = (size_t)(nl + 1 - (char *)f->buf);
            break;
        }
        if (!strcmp(line, "spec"))
            snprintf(f->spec, sizeof f->spec, "%s", val);
        else if (!strcmp(line, "options"))
            snprintf(f->options, sizeof f->options, "%s", val ? val : "");
        else if (!strcmp(line, "dtype"))
            snprintf(f->dtype, sizeof f->dtype, "%s", val);
        else if (!strcmp(line, "impl"))
            snprintf(f->impl, sizeof f->impl, "%s", val);
        else if (!strcmp(line, "state-dtype"))
            snprintf(f->sdtype, sizeof f->sdtype, "%s", val);
        else if (!strcmp(line, "amp"))
            f->amp = 1;
        else if (!strcmp(line, "steps"))
            f->steps = atoi(val);
        else if (!strcmp(line, "sizes") || !strcmp(line, "trailer")) {
            int tr = line[0] == 't';
            for (char *tok = strtok(val, " "); tok; tok = strtok(NULL, " "))
                if (tr)
                    snprintf(f->trailer[f->ntrailer++], 64, "%s", tok);
                else
                    f->total += f->sizes[f->ntensors++] = atoll(tok);
        }
        line = nl + 1;
    }
    f->dt = dt_of(f->dtype);
    f->sdt = dt_of(f->sdtype);
}

/* reads n elements of dtype dt at the cursor into a 2-byte (or 4) buffer */
static const unsigned char *take(const mfix *f, size_t *at, size_t bytes)
{
    if (*at + bytes > f->len)
        fail_msg("%s: truncated", f->name);
    const unsigned char *p = f->buf + *at;
    *at += bytes;
    return p;
}

/* ulps between two 16-bit (or 32-bit) patterns of a type, NaNs equal */
static uint32_t ulp_dt(int dt, const void *a, const void *b, int64_t i)
{
    double x = cg_dt_get(a, dt, i), y = cg_dt_get(b, dt, i);
    if (isnan(x) && isnan(y))
        return 0;
    if (isnan(x) || isnan(y))
        return UINT32_MAX;
    if (dt == CG_DT_F32)
        return t_ulp((float)x, (float)y);
    uint16_t p, q; /* the file image's elements need not be aligned */
    memcpy(&p, (const unsigned char *)a + i * 2, 2);
    memcpy(&q, (const unsigned char *)b + i * 2, 2);
    int32_t u = p & 0x8000 ? -(int32_t)(p & 0x7fff) : p, v = q & 0x8000 ? -(int32_t)(q & 0x7fff) : q;
    return (uint32_t)abs(u - v);
}

typedef struct result {
    uint32_t param, grad, state, tail, body;
    int steps_ok;
} result;

/* Which elements must match bit for bit: all, or only each tensor's last
 * numel % 16 (torch's scalar tail) for SGD's and Adagrad's `fused`. */
static int tail_only(const mfix *f)
{
    return !strcmp(f->impl, "fused") && (!strcmp(f->spec, "sgd") || !strcmp(f->spec, "adagrad"));
}

static int in_tail(const mfix *f, int64_t i)
{
    for (int t = 0; t < f->ntensors; t++) {
        if (i < f->sizes[t])
            return i >= f->sizes[t] - f->sizes[t] % 16;
        i -= f->sizes[t];
    }
    return 0;
}

/* Replays the file with one engine; the worst ulps seen. */
static result replay(const mfix *f, jopt_engine engine)
{
    result r = {0, 0, 0, 0, 0, 1};
    size_t es = (size_t)cg_dt_size(f->dt), at = f->data;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    T_OK(ctx, jopt_ctx_set_engine(ctx, engine));
    unsigned char *p = calloc((size_t)f->total + 1, es), *g = calloc((size_t)f->total + 1, es);
    memcpy(p, take(f, &at, (size_t)f->total * es), (size_t)f->total * es);
    jopt_param params[MAXT];
    int64_t off[MAXT + 1] = {0};
    for (int t = 0; t < f->ntensors; t++) {
        off[t + 1] = off[t] + f->sizes[t];
        params[t] = (jopt_param){(float *)(void *)(p + off[t] * es),
                                 (float *)(void *)(g + off[t] * es), f->sizes[t]};
    }
    char options[1024];
    snprintf(options, sizeof options, "%s dtype=%s state_dtype=%s%s", f->options, f->dtype,
             f->sdtype, !strcmp(f->spec, "sgd") && strncmp(f->impl, "fused", 5) == 0
                        ? " fused=true" : "");
    jopt_group group = {params, (size_t)f->ntensors, options};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, f->spec, &group, 1, NULL, &opt));
    for (int s = 0; s < f->steps; s++) {
        const unsigned char *mask = take(f, &at, (size_t)f->ntensors);
        float scale = 1, found = 0;
        if (f->amp) {
            memcpy(&scale, take(f, &at, 4), 4);
            memcpy(&found, take(f, &at, 4), 4);
        }
        for (int t = 0; t < f->ntensors; t++) {
            if (mask[t])
                memcpy(g + off[t] * es, take(f, &at, (size_t)f->sizes[t] * es),
                       (size_t)f->sizes[t] * es);
            T_OK(ctx, jopt_set_grad(opt, 0, (size_t)t, mask[t] ? params[t].grad : NULL));
        }
        if (f->amp)
            T_OK(ctx, jopt_set_grad_scale(opt, scale, found == 1.0f));
        int rc = jopt_step(opt, NULL, NULL, NULL);
        if (rc != (f->amp && found == 1.0f ? JOPT_SKIPPED : JOPT_OK))
            fail_msg("%s step %d: %d %s", f->name, s + 1, rc, jopt_errmsg(ctx));
        const unsigned char *want = take(f, &at, (size_t)f->total * es);
        for (int64_t i = 0; i < f->total; i++) {
            uint32_t u = ulp_dt(f->dt, p, want, i);
            uint32_t *slot = !tail_only(f) ? &r.param : in_tail(f, i) ? &r.tail : &r.body;
            *slot = u > *slot ? u : *slot;
        }
        for (int t = 0; f->amp && t < f->ntensors; t++) {
            if (!mask[t])
                continue;
            const unsigned char *gw = take(f, &at, (size_t)f->sizes[t] * es);
            for (int64_t i = 0; i < f->sizes[t]; i++) {
                uint32_t u = ulp_dt(f->dt, g + off[t] * es, gw, i);
                if (!tail_only(f) || in_tail(f, off[t] + i))
                    r.grad = u > r.grad ? u : r.grad;
            }
        }
    }
    const char *first = f->trailer[0]; /* a state, to read step counts by */
    for (int k = 0; k < f->ntrailer; k++) {
        int step = !strcmp(f->trailer[k], "step");
        size_t ses = step ? 4 : (size_t)cg_dt_size(f->sdt);
        const unsigned char *want = take(f, &at, step ? (size_t)f->ntensors * 4
                                                      : (size_t)f->total * ses);
        for (int t = 0; t < f->ntensors; t++) {
            const float *data;
            int64_t steps;
            T_OK(ctx, jopt_state_get(opt, 0, (size_t)t, step ? first : f->trailer[k],
                                     &data, &steps));
            if (step) { /* a float32 count per tensor; ASGD keeps `ax` */
                float w;
                memcpy(&w, want + 4 * t, 4);
                r.steps_ok &= (double)w == (double)steps;
                continue;
            }
            jopt_dtype sd;
            T_OK(ctx, jopt_state_dtype(opt, 0, (size_t)t, f->trailer[k], &sd));
            assert_int_equal((int)sd, f->sdt);
            for (int64_t i = 0; i < f->sizes[t]; i++) {
                uint32_t u = data ? ulp_dt(f->sdt, data, want + (size_t)off[t] * ses, i)
                                  : cg_dt_get(want + (size_t)off[t] * ses, f->sdt, i) != 0;
                if (!tail_only(f) || in_tail(f, off[t] + i))
                    r.state = u > r.state ? u : r.state;
            }
        }
    }
    assert_int_equal(at, f->len);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p);
    free(g);
    return r;
}

static int has_twin(const char *dir, const char *name)
{
    char twin[512], path[1024];
    const char *dot = strstr(name, ".fix");
    snprintf(twin, sizeof twin, "%.*s.ieee-sqrt.fix", (int)(dot - name), name);
    snprintf(path, sizeof path, "%s/%s", dir, twin);
    FILE *fp = fopen(path, "rb");
    if (fp)
        fclose(fp);
    return fp != NULL;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_mixed_every_fixture(void **state)
{
    (void)state;
    const char *dir = JOPT_SOURCE_DIR "/tests/fixtures/mixed";
    DIR *d = opendir(dir);
    assert_non_null(d);
    char *names[512];
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 512;)
        if (strstr(e->d_name, ".fix"))
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    size_t exact = 0, measured = 0;
    for (size_t k = 0; k < n; k++) {
        mfix f;
        mfix_load(&f, dir, names[k]);
        result jit = replay(&f, JOPT_ENGINE_JIT), ref = replay(&f, JOPT_ENGINE_REFERENCE);
        if (memcmp(&jit, &ref, sizeof jit))
            fail_msg("%s: the engines differ (jit %u/%u/%u, reference %u/%u/%u)", f.name,
                     jit.param, jit.grad, jit.state, ref.param, ref.grad, ref.state);
        /* must be exact: the twin, or a file without one; a twin's plain
         * file and Adagrad's fused_vector are measured */
        int must = !strstr(f.name, "fused_vector") && (f.ieee || !has_twin(dir, f.name));
        int ok = jit.param == 0 && jit.grad == 0 && jit.state == 0 && jit.tail == 0 &&
                 jit.steps_ok;
        char body[64] = "";
        if (tail_only(&f))
            snprintf(body, sizeof body, " in the tail (the body, torch's vector loop: %u)",
                     jit.body);
        char pu[16];
        snprintf(pu, sizeof pu, jit.param == UINT32_MAX ? "NaN" : "%u",
                 tail_only(&f) ? jit.tail : jit.param);
        print_message("%-52s %s param %s%s grad %u state %u ulp%s\n", f.name,
                      must ? (ok ? "exact   " : "DIFFERS ") : "measured", pu, body,
                      jit.grad, jit.state, jit.steps_ok ? "" : ", step counts differ");
        if (must && !ok)
            fail_msg("%s is not bit for bit", f.name);
        exact += must;
        measured += !must;
        free(f.buf);
        free(names[k]);
    }
    print_message("%zu files bit for bit, %zu measured\n", exact, measured);
    assert_true(exact > 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixed_every_fixture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
