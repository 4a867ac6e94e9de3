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
