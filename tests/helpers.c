/*
 * helpers.c - shared test helpers (see helpers.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "cg.h"

static int64_t ordered(float x)
{
    int32_t i;
    memcpy(&i, &x, sizeof i);
    return i < 0 ? (int64_t)INT32_MIN - i : i; /* monotone in x, -0 == +0 */
}

uint32_t t_ulp(float a, float b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b) ? 0 : UINT32_MAX;
    int64_t d = ordered(a) - ordered(b);
    return (uint32_t)(d < 0 ? -d : d);
}

uint32_t t_max_ulp(const float *a, const float *b, int64_t n, int64_t *where)
{
    uint32_t worst = 0;
    if (where)
        *where = -1;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = t_ulp(a[i], b[i]);
        if (u > worst) {
            worst = u;
            if (where)
                *where = i;
        }
    }
    return worst;
}

void t_fill(float *x, int64_t n, uint64_t seed, double zero_share)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        double u = (double)(s >> 11) / 9007199254740992.0; /* [0, 1) */
        x[i] = u < zero_share ? 0.0f : (float)(2 * u - 1);
    }
}

float *t_alloc(int64_t n)
{
    size_t bytes = ((size_t)(n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    assert_non_null(p);
    memset(p, 0, bytes);
    return p;
}

void t_reseal(unsigned char *buf, size_t len)
{
    uint64_t h = cg_fnv(CG_FNV_INIT, buf, len - 8); /* the checkpoints' seal */
    memcpy(buf + len - 8, &h, 8);
}

static void read_floats(FILE *f, float *dst, int64_t n, const char *name)
{
    if (fread(dst, sizeof(float), (size_t)n, f) != (size_t)n)
        fail_msg("fixture %s: truncated", name);
}

void t_fixture_load(t_fixture *fx, const char *name)
{
    char path[1024], line[1024];
    memset(fx, 0, sizeof *fx);
    snprintf(path, sizeof path, "%s/tests/fixtures/%s", JOPT_SOURCE_DIR, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open fixture %s", path);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "end"))
            break;
        if (!strncmp(line, "spec ", 5))
            snprintf(fx->spec, sizeof fx->spec, "%.63s", line + 5);
        else if (!strncmp(line, "options ", 8))
            snprintf(fx->options, sizeof fx->options, "%.511s", line + 8);
        else if (!strncmp(line, "record ", 7))
            snprintf(fx->record, sizeof fx->record, "%.63s", line + 7);
        else if (!strncmp(line, "torch ", 6))
            snprintf(fx->torch, sizeof fx->torch, "%.127s", line + 6);
        else if (!strncmp(line, "steps ", 6))
            fx->steps = atoi(line + 6);
        else if (!strncmp(line, "sizes ", 6)) {
            char *c = line + 6, *end;
            while (fx->ntensors < 16) {
                long long v = strtoll(c, &end, 10);
                if (end == c)
                    break;
                fx->sizes[fx->ntensors++] = v;
                fx->total += v;
                c = end;
            }
        }
    }
    if (!fx->ntensors || !fx->steps)
        fail_msg("fixture %s: bad header", name);
    fx->init = malloc((size_t)fx->total * sizeof(float));
    fx->mask = malloc((size_t)(fx->steps * fx->ntensors));
    fx->grads = calloc((size_t)(fx->steps * fx->total), sizeof(float));
    fx->params = malloc((size_t)(fx->steps * fx->total) * sizeof(float));
    assert_true(fx->init && fx->mask && fx->grads && fx->params);
    read_floats(f, fx->init, fx->total, name);
    for (int s = 0; s < fx->steps; s++) {
        unsigned char *m = fx->mask + s * fx->ntensors;
        if (fread(m, 1, (size_t)fx->ntensors, f) != (size_t)fx->ntensors)
            fail_msg("fixture %s: truncated", name);
        int64_t off = 0;
        for (int t = 0; t < fx->ntensors; t++) {
            if (m[t])
                read_floats(f, fx->grads + s * fx->total + off, fx->sizes[t], name);
            off += fx->sizes[t];
        }
        read_floats(f, fx->params + s * fx->total, fx->total, name);
    }
    if (fgetc(f) != EOF)
        fail_msg("fixture %s: trailing bytes", name);
    fclose(f);
}

void t_fixture_free(t_fixture *fx)
{
    free(fx->init);
    free(fx->mask);
    free(fx->grads);
    free(fx->params);
}

/* ---- jopt-fixture 2 ---------------------------------------------------------- */

static void read_bytes(FILE *f, void *dst, size_t n, const char *name)
{
    if (fread(dst, 1, n, f) != n)
        fail_msg("fixture %s: truncated", name);
}

/* "7x9" -> {7, 9}; "scalar" -> no sizes */
static int parse_dims(const char *w, int64_t *dims, int cap)
{
    int d = 0;
    if (!strcmp(w, "scalar"))
        return 0;
    for (const char *c = w; *c && d < cap;) {
        char *end;
        dims[d++] = strtoll(c, &end, 10);
        if (end == c || *end != 'x')
            break;
        c = end + 1;
    }
    return d;
}

void t_fixture2_load(t_fixture2 *fx, const char *dir, const char *name)
{
    char path[1024], line[4096];
    memset(fx, 0, sizeof *fx);
    snprintf(path, sizeof path, "%s/%s/%s", JOPT_SOURCE_DIR, dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open fixture %s", path);
    if (!fgets(line, sizeof line, f) || strcmp(line, "jopt-fixture 2\n"))
        fail_msg("fixture %s: not a jopt-fixture 2 file", name);
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strcmp(line, "end"))
            break;
        char *v = strchr(line, ' ');
        v = v ? v + 1 : line + strlen(line);
        if (!strncmp(line, "spec ", 5))
            snprintf(fx->spec, sizeof fx->spec, "%.63s", v);
        else if (!strncmp(line, "options", 7))
            snprintf(fx->options, sizeof fx->options, "%.511s", v);
        else if (!strncmp(line, "variant ", 8))
            snprintf(fx->variant, sizeof fx->variant, "%.*s", (int)strcspn(v, " "), v);
        else if (!strncmp(line, "reference ", 10))
            snprintf(fx->reference, sizeof fx->reference, "%.511s", v);
        else if (!strncmp(line, "steps ", 6))
            fx->steps = atoi(v);
        else if (!strncmp(line, "sizes ", 6)) {
            char *c = v, *end;
            while (fx->ntensors < T_FIX2_MAXT) {
                long long n = strtoll(c, &end, 10);
                if (end == c)
                    break;
                fx->sizes[fx->ntensors++] = n;
                fx->total += n;
                c = end;
            }
        } else if (!strncmp(line, "shapes ", 7)) {
            int t = 0;
            for (char *w = strtok(v, " "); w && t < T_FIX2_MAXT; w = strtok(NULL, " "))
                fx->ndim[t] = parse_dims(w, fx->shape[t], 8), t++;
        } else if (!strncmp(line, "inputs ", 7)) {
            for (char *w = strtok(v, " "); w && fx->ninputs < T_FIX2_MAXIN;
                 w = strtok(NULL, " "))
                snprintf(fx->inputs[fx->ninputs++], 32, "%.31s", w);
        } else if (!strncmp(line, "events ", 7)) {
            for (char *w = strtok(v, " "); w && fx->nevents < T_FIX2_MAXEV;
                 w = strtok(NULL, " ")) {
                char *colon = strchr(w, ':');
                if (!colon)
                    fail_msg("fixture %s: bad event '%s'", name, w);
                fx->ev_step[fx->nevents] = atoi(w);
                snprintf(fx->ev_kernel[fx->nevents++], 32, "%.31s", colon + 1);
            }
        } else if (!strncmp(line, "final ", 6)) {
            if (fx->nfinal == T_FIX2_MAXFINAL)
                fail_msg("fixture %s: too many final lines", name);
            t_final *fi = &fx->final[fx->nfinal++];
            char shape[64];
            if (sscanf(v, "%15s %47s %7s %63s", fi->owner, fi->name, fi->dtype, shape) != 4)
                fail_msg("fixture %s: bad final line '%s'", name, line);
            int64_t dims[8];
            int nd = parse_dims(shape, dims, 8);
            fi->count = 1;
            for (int d = 0; d < nd; d++)
                fi->count *= dims[d];
        }
    }
    if (!fx->ntensors || !fx->steps)
        fail_msg("fixture %s: bad header", name);
    size_t st = (size_t)fx->steps, tot = (size_t)fx->total;
    fx->init = malloc(tot * sizeof(float));
    fx->mask = malloc(st * (size_t)fx->ntensors);
    fx->grads = calloc(st * tot, sizeof(float));
    fx->imask = calloc(st * (size_t)(fx->ninputs * fx->ntensors) + 1, 1);
    fx->ivals = calloc(st * (size_t)fx->ninputs * tot + 1, sizeof(float));
    fx->params = malloc(st * tot * sizeof(float));
    fx->evparams = malloc(((size_t)fx->nevents * tot + 1) * sizeof(float));
    assert_true(fx->init && fx->mask && fx->grads && fx->imask && fx->ivals &&
                fx->params && fx->evparams);
    read_floats(f, fx->init, fx->total, name);
    for (int s = 0; s < fx->steps; s++) {
        unsigned char *m = fx->mask + s * fx->ntensors;
        read_bytes(f, m, (size_t)fx->ntensors, name);
        int64_t off = 0;
        for (int t = 0; t < fx->ntensors; t++) {
            if (m[t])
                read_floats(f, fx->grads + s * fx->total + off, fx->sizes[t], name);
            off += fx->sizes[t];
        }
        for (int i = 0; i < fx->ninputs; i++) {
            unsigned char *im = fx->imask + ((size_t)s * fx->ninputs + i) * fx->ntensors;
            float *iv = fx->ivals + ((size_t)s * fx->ninputs + i) * tot;
            read_bytes(f, im, (size_t)fx->ntensors, name);
            off = 0;
            for (int t = 0; t < fx->ntensors; t++) {
                if (im[t])
                    read_floats(f, iv + off, fx->sizes[t], name);
                off += fx->sizes[t];
            }
        }
        read_floats(f, fx->params + s * fx->total, fx->total, name);
        for (int e = 0; e < fx->nevents; e++)
            if (fx->ev_step[e] == s + 1)
                read_floats(f, fx->evparams + (size_t)e * tot, fx->total, name);
    }
    for (int k = 0; k < fx->nfinal; k++) {
        t_final *fi = &fx->final[k];
        fi->v = malloc((size_t)fi->count * sizeof(double) + 1);
        assert_non_null(fi->v);
        for (int64_t e = 0; e < fi->count; e++) {
            if (!strcmp(fi->dtype, "f32")) {
                float x;
                read_floats(f, &x, 1, name);
                fi->v[e] = x;
            } else if (!strcmp(fi->dtype, "f64")) {
                read_bytes(f, &fi->v[e], 8, name);
            } else if (!strcmp(fi->dtype, "i64")) {
                int64_t x;
                read_bytes(f, &x, 8, name);
                fi->v[e] = (double)x;
            } else if (!strcmp(fi->dtype, "u8")) {
                unsigned char x;
                read_bytes(f, &x, 1, name);
                fi->v[e] = x;
            } else {
                fail_msg("fixture %s: unknown dtype %s", name, fi->dtype);
            }
        }
    }
    if (fgetc(f) != EOF)
        fail_msg("fixture %s: trailing bytes", name);
    fclose(f);
}

void t_fixture2_free(t_fixture2 *fx)
{
    free(fx->init);
    free(fx->mask);
    free(fx->grads);
    free(fx->imask);
    free(fx->ivals);
    free(fx->params);
    free(fx->evparams);
    for (int k = 0; k < fx->nfinal; k++)
        free(fx->final[k].v);
}
