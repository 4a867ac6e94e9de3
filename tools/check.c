/*
 * check.c - `jopt check`: the JIT against the reference interpreter, bit for
 * bit, on random data with zeros, subnormals, NaN and infinities.  An update
 * runs in two optimizers (one per engine) over several tensors and steps; a
 * closure optimizer's vector kernels run through jopt_kernel_run on both
 * engines, cut into tasks as a step cuts them.  Only jopt.h is used.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* mostly ordinary values, with zeros, subnormals, NaN and infinities (or
 * without the last two, for updates: a NaN in one tensor's sum makes a
 * spec with sums over the group all NaN, and the check vacuous) */
static int finite_only;
static float random_value(float scale)
{
    uint64_t r = rng();
    while (finite_only && r % 128 >= 4 && r % 128 <= 6)
        r = rng();
    double u = (double)(r >> 11) / 9007199254740992.0 * 2 - 1;
    switch (r % 128) {
    case 0: return 0.0f;
    case 1: return -0.0f;
    case 2: return (float)u * 1e-39f;  /* subnormal */
    case 3: return 1.4e-45f;           /* the smallest */
    case 4: return NAN;
    case 5: return INFINITY;
    case 6: return -INFINITY;
    default: return (float)u * scale;
    }
}

/* float bits on a line: the distance in ulps between a and b */
static int64_t ordered(float f)
{
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? (int64_t)INT32_MIN - i : i;
}

typedef struct tally {
    const char *name;
    int64_t maxulp, differ, nans, compared;
} tally;

static void compare(tally *t, const float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        t->compared++;
        if (isnan(x[i]) && isnan(y[i])) {
            t->nans++;
            continue;
        }
        if (!memcmp(&x[i], &y[i], sizeof x[i]))
            continue;
        t->differ++;
        int64_t d = isnan(x[i]) || isnan(y[i]) ? INT64_MAX
                                               : llabs(ordered(x[i]) - ordered(y[i]));
        if (d > t->maxulp)
            t->maxulp = d;
        if (t->differ <= 5)
            printf("  %s: element %lld: JIT %a, reference %a\n", t->name,
                   (long long)i, x[i], y[i]);
    }
}

#define NTENSOR 6
#define NSTEPS 4

static double random_scalar(int ordinary)
{
    uint64_t r = rng();
    double u = (double)(r >> 11) / 9007199254740992.0 * 2 - 1;
    double scale = pow(10.0, (double)(int)(rng() % 9) - 4); /* 1e-4..1e4 */
    switch (ordinary ? 127 : r % 32) {
    case 0: return 0.0;
    case 1: return -0.0;
    case 2: return u * 1e-40;
    case 3: return u * 1e39;
    case 4: return NAN;
    case 5: return INFINITY;
    case 6: return -INFINITY;
    default: return u * scale;
    }
}

/* doubles on a line, as `ordered` does floats */
static int64_t ordered_d(double f)
{
    int64_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? INT64_MIN - i : i;
}

static void compare_d(tally *t, const double *x, const double *y, int n,
                      const char *kernel, int64_t size)
{
    for (int i = 0; i < n; i++) {
        t->compared++;
        if (isnan(x[i]) && isnan(y[i])) {
            t->nans++;
            continue;
        }
        if (!memcmp(&x[i], &y[i], sizeof x[i]))
            continue;
        t->differ++;
        int64_t d = INT64_MAX; /* NaN against a number */
        if (!isnan(x[i]) && !isnan(y[i])) {
            int64_t ox = ordered_d(x[i]), oy = ordered_d(y[i]);
            uint64_t ud = ox > oy ? (uint64_t)ox - (uint64_t)oy
                                  : (uint64_t)oy - (uint64_t)ox;
            d = ud >= (uint64_t)INT64_MAX ? INT64_MAX - 1 : (int64_t)ud;
        }
        if (d > t->maxulp)
            t->maxulp = d;
        if (t->differ <= 5)
            printf("  %s: result %d (vectors of %lld): JIT %a, reference %a\n",
                   kernel, i, (long long)size, x[i], y[i]);
    }
}

static void fmt_ulp(char *buf, size_t cap, int64_t ulp)
{
    if (ulp == INT64_MAX)
        snprintf(buf, cap, "NaN");
    else
        snprintf(buf, cap, "%lld", (long long)ulp);
}

/* calls per size: finite arrays (so that sums and maxima are numbers) or
 * arrays with NaN and Inf, each with ordinary scalars or random ones; the
 * last size spans several of the library's 65,536-element tasks */
#define VK_ROUNDS 4
static const int64_t vk_sizes[] = {0, 1, 3, 17, 255, 1027, 70001, 2 * 65536 + 5};
#define VK_NSIZES ((int)(sizeof vk_sizes / sizeof vk_sizes[0]))
#define VK_MAX 64 /* arrays, scalars and results a checked kernel may have */

/* one kernel on both engines over the sizes; returns 1 if any bit differs,
 * -1 if it cannot run */
static int check_kernel(jopt_kernel *const k[2], const jopt_kernel_info *info,
                        float *const buf[2][VK_MAX])
{
    tally ta = {info->name, 0, 0, 0, 0}, tr = {info->name, 0, 0, 0, 0};
    for (int z = 0; z < VK_NSIZES; z++) {
        const int64_t n = vk_sizes[z];
        for (int round = 0; round < VK_ROUNDS; round++) {
            double sc[VK_MAX] = {0}, res[2][VK_MAX];
            for (int s = 0; s < info->nscalars; s++)
                sc[s] = random_scalar(!(round & 1));
            for (int s = 0; s < info->narrays; s++)
                for (int64_t j = 0; j < n; j++) {
                    float v = random_value(1.0f);
                    while (round < 2 && !isfinite(v))
                        v = random_value(1.0f);
                    buf[0][s][j] = buf[1][s][j] = v;
                }
            for (int e = 0; e < 2; e++) {
                memset(res[e], 0, sizeof res[e]);
                if (jopt_kernel_run(k[e], buf[e], n, sc, res[e]))
                    return -1;
            }
            for (int s = 0; s < info->narrays; s++) {
                char where[256]; /* for compare's messages */
                snprintf(where, sizeof where, "%s: array %s of %lld",
                         info->name, info->arrays[s], (long long)n);
                ta.name = where;
                compare(&ta, buf[0][s], buf[1][s], n);
                ta.name = info->name;
            }
            compare_d(&tr, res[0], res[1], info->nresults, info->name, n);
        }
    }
    char ua[24], ur[24];
    fmt_ulp(ua, sizeof ua, ta.maxulp);
    fmt_ulp(ur, sizeof ur, tr.maxulp);
    printf("  %-16s %9lld array values max ulp %-4s %3lld results max ulp "
           "%-4s %lld differ  %lld NaN (both)\n", info->name,
           (long long)ta.compared, ua, (long long)tr.compared, ur,
           (long long)(ta.differ + tr.differ), (long long)(ta.nans + tr.nans));
    return ta.differ + tr.differ ? 1 : 0;
}

/* JIT against the reference interpreter for each vector kernel of a spec
 * with a method (or just a->kernel).  Builds no optimizer. */
static int check_method(jopt_ctx *const ctx[2], jopt_spec *spec, const args *a)
{
    size_t nk = jopt_spec_nkernels(spec);
    char names[1024];
    kernel_names(spec, names, sizeof names);
    if (jopt_spec_validate(spec)) /* an unknown method, a kernel it lacks */
        return fail("%s", jopt_errmsg(ctx[0]));
    if (!nk)
        return fail("%s: method '%s' but no kernels", jopt_spec_name(spec),
                    jopt_spec_method(spec));
    if (a->kernel && !has_kernel(spec, a->kernel))
        return fail("%s has no kernel '%s' (its kernels: %s)", jopt_spec_name(spec),
                    a->kernel, names);
    const int64_t maxn = vk_sizes[VK_NSIZES - 1];
    float *buf[2][VK_MAX] = {{NULL}};
    int rc = 1, bad = 0, broken = 0, misfit = 0;
    for (int e = 0; e < 2; e++)
        for (int s = 0; s < VK_MAX; s++)
            if (!(buf[e][s] = malloc((size_t)maxn * sizeof(float)))) {
                fail("out of memory");
                goto done;
            }
    printf("check %s: JIT against the reference interpreter, %s%s%s, on "
           "vectors of %lld..%lld elements, %d calls each (finite or with NaN "
           "and Inf; ordinary or random scalars)\n",
           jopt_spec_name(spec), a->kernel ? "kernel " : "every vector kernel (",
           a->kernel ? a->kernel : names, a->kernel ? "" : ")",
           (long long)vk_sizes[0], (long long)maxn, VK_ROUNDS);
    if (a->options[0])
        printf("(the options do not change vector kernels)\n");
    for (size_t i = 0; i < nk; i++) {
        const char *name = jopt_spec_kernel_name(spec, i);
        if (a->kernel && strcmp(name, a->kernel))
            continue;
        jopt_kernel_info info;
        jopt_kernel *k[2] = {NULL, NULL};
        int built = !jopt_spec_kernel(spec, i, &info);
        if (built && (info.narrays > VK_MAX || info.nscalars > VK_MAX ||
                      info.nresults > VK_MAX)) {
            fail("%s: kernel %s has more than %d arrays, scalars or results",
                 jopt_spec_name(spec), name, VK_MAX);
            built = 0;
        } else if (!built) {
            fail("%s", jopt_errmsg(ctx[0]));
        }
        for (int e = 0; e < 2 && built; e++)
            if (jopt_kernel_new(ctx[e], jopt_spec_path(spec), name, &k[e])) {
                fail("%s (%s)", jopt_errmsg(ctx[e]), e ? "reference" : "JIT");
                built = 0;
            }
        int r = built ? check_kernel(k, &info, buf) : -1;
        if (r < 0 && built)
            fail("%s", jopt_errmsg(ctx[0]));
        broken += r < 0;
        bad += r > 0;
        jopt_kernel_free(k[0]);
        jopt_kernel_free(k[1]);
    }
    if (!a->kernel && jopt_spec_validate(spec)) {
        printf("  %s\n", jopt_errmsg(ctx[0]));
        misfit = 1;
    }
    if (!bad && !broken && !misfit)
        printf("PASS: JIT == reference, bit for bit\n");
    else
        printf("FAIL:%s%s%s%s%s\n",
               bad ? " the JIT and the reference interpreter differ" : "",
               bad && (broken || misfit) ? ";" : "",
               broken ? " a kernel fails to build" : "",
               broken && misfit ? ";" : "",
               misfit ? " the kernels do not fit the method's driver" : "");
    rc = bad || broken || misfit ? 1 : 0;
done:
    for (int e = 0; e < 2; e++)
        for (int s = 0; s < VK_MAX; s++)
            free(buf[e][s]);
    return rc;
}

/* The tensors an update is checked on: flat (no shape given), or each with
 * a shape (a spec that looks at dim() and size() gets its kernels for 2-D
 * and 3-D tensors; one that multiplies matrices, for each matrix). */
typedef struct layout {
    const char *what;
    int ndim[NTENSOR];          /* 0: flat */
    int64_t shape[NTENSOR][8];  /* outermost first */
    int64_t numel[NTENSOR];
} layout;

static const layout flat = {
    "flat tensors", {0}, {{0}}, {1, 3, 17, 255, 1027, 70070}};
/* the same sizes in 1 to 3 dimensions */
static const layout mixed = {
    "tensors of 1 to 3 dimensions", {1, 2, 1, 2, 2, 3},
    {{1}, {1, 3}, {17}, {15, 17}, {13, 79}, {7, 10, 1001}},
    {1, 3, 17, 255, 1027, 70070}};
/* for a spec that refuses flat tensors (Muon takes matrices only) */
static const layout matrices = {
    "matrices", {2, 2, 2, 2, 2, 2},
    {{1, 3}, {3, 1}, {15, 17}, {17, 15}, {13, 79}, {64, 33}},
    {3, 3, 255, 255, 1027, 2112}};

/* How the update is checked: its options folded into the kernel, or those
 * the spec lists as `runtime` passed per step (a spec that branches on one
 * of those would pass a check with them folded and fail at the first
 * jopt_option_set, mid-training), on tensors of a layout. */
typedef struct config {
    int runtime, nonfinite;
    const layout *lay;
} config;

/* turns on per-step passing of every option the spec lists as runtime;
 * returns how many */
static int runtime_on(jopt_optim *opt, jopt_spec *spec, char *names, size_t cap)
{
    int n = 0;
    names[0] = 0;
    for (size_t i = 0; i < jopt_spec_nhyper(spec); i++) {
        jopt_hyper_info h;
        if (jopt_spec_hyper(spec, i, &h) || !h.runtime)
            continue;
        if (jopt_option_runtime(opt, 0, h.name))
            return -1;
        size_t l = strlen(names);
        snprintf(names + l, cap - l, "%s%s", n ? " " : "", h.name);
        n++;
    }
    return n;
}

/* One configuration: the update over NTENSOR tensors and NSTEPS steps on
 * both engines (the spec's inputs given at odd steps), then each named
 * kernel.  `out` (if not NULL) gets the JIT's parameters, `cmp` (if not
 * NULL) holds another configuration's to compare with: a runtime option
 * must give the bits its folded value gives.  1 if anything differs. */
static int check_update(jopt_ctx *const ctx[2], jopt_spec *spec, const args *a,
                        const config *cf, float *out, const float *cmp)
{
    jopt_optim *opt[2] = {NULL, NULL};
    float *buf[2][NTENSOR][2] = {{{NULL}}};
    float *input[NTENSOR] = {NULL};
    tally *tl = NULL;
    int rc = 1;
    jopt_param params[2][NTENSOR];
    const int64_t *check_sizes = cf->lay->numel;
    char what[160];
    snprintf(what, sizeof what, "%s, %s%s", cf->runtime ? "runtime options" :
             "options folded", cf->lay->what, cf->nonfinite ? ", data with NaN and Inf" : "");
    rng_state = 0x9e3779b97f4a7c15ull; /* the same data in every configuration */
    finite_only = !cf->nonfinite;
    for (int t = 0; t < NTENSOR; t++) {
        if (!(input[t] = malloc(check_sizes[t] * sizeof(float)))) {
            fail("out of memory");
            goto done;
        }
        for (int e = 0; e < 2; e++) {
            for (int b = 0; b < 2; b++)
                if (!(buf[e][t][b] = malloc(check_sizes[t] * sizeof(float)))) {
                    fail("out of memory");
                    goto done;
                }
            params[e][t] = (jopt_param){buf[e][t][0], buf[e][t][1], check_sizes[t]};
        }
    }
    for (int t = 0; t < NTENSOR; t++)
        for (int64_t i = 0; i < check_sizes[t]; i++)
            buf[0][t][0][i] = buf[1][t][0][i] = random_value(1.0f);
    char rnames[512] = "";
    int nrt = 0;
    for (int e = 0; e < 2; e++) {
        jopt_group g = {params[e], NTENSOR, NULL};
        if (jopt_optim_new(ctx[e], a->spec, &g, 1, a->options, &opt[e])) {
            fail("%s", jopt_errmsg(ctx[e]));
            goto done;
        }
        for (int t = 0; cf->lay->ndim[0] && t < NTENSOR; t++)
            if (jopt_set_shape(opt[e], 0, (size_t)t, cf->lay->ndim[t], cf->lay->shape[t])) {
                fail("%s (%s)", jopt_errmsg(ctx[e]), what);
                goto done;
            }
        if (cf->runtime && (nrt = runtime_on(opt[e], spec, rnames, sizeof rnames)) < 0) {
            fail("%s (%s): the spec lists it as runtime, but its kernel cannot "
                 "take it per step", jopt_errmsg(ctx[e]), what);
            goto done;
        }
    }
    if (cf->runtime && !nrt) {
        printf("  %s: the spec lists no runtime option\n", what);
        rc = 0;
        goto done;
    }
    size_t ninputs = jopt_spec_ninputs(spec);
    for (int s = 0; s < NSTEPS; s++) {
        for (int t = 0; t < NTENSOR; t++)
            for (int64_t i = 0; i < check_sizes[t]; i++) {
                buf[0][t][1][i] = buf[1][t][1][i] = random_value(0.1f);
                input[t][i] = random_value(1.0f);
            }
        for (int e = 0; e < 2; e++) {
            for (size_t in = 0; s % 2 == 0 && in < ninputs; in++)
                for (int t = 0; t < NTENSOR; t++)
                    if (jopt_set_input(opt[e], 0, (size_t)t, jopt_spec_input(spec, in),
                                       input[t])) {
                        fail("%s", jopt_errmsg(ctx[e]));
                        goto done;
                    }
            if (jopt_step(opt[e], NULL, NULL, NULL)) {
                fail("step %d (%s): %s", s + 1, what, jopt_errmsg(ctx[e]));
                goto done;
            }
        }
    }
    size_t nstate = jopt_spec_nstate(spec);
    if (!(tl = calloc(nstate + 8, sizeof *tl))) {
        fail("out of memory");
        goto done;
    }
    printf("  %s%s%s:\n", what, nrt ? ", per step: " : "", rnames);
    tl[0].name = "param";
    int mismatch = 0;
    for (int t = 0; t < NTENSOR; t++)
        compare(&tl[0], buf[0][t][0], buf[1][t][0], check_sizes[t]);
    /* the named kernels, after the steps, in their order */
    size_t ntl = nstate + 1;
    for (size_t k = 1; k < jopt_spec_nkernels(spec) && ntl < nstate + 8; k++) {
        const char *name = jopt_spec_kernel_name(spec, k);
        tally *kt = &tl[ntl++];
        kt->name = name;
        for (int e = 0; e < 2; e++)
            if (jopt_optim_call(opt[e], name)) {
                fail("kernel %s (%s): %s", name, what, jopt_errmsg(ctx[e]));
                goto done;
            }
        for (int t = 0; t < NTENSOR; t++)
            compare(kt, buf[0][t][0], buf[1][t][0], check_sizes[t]);
    }
    for (size_t s = 0; s < nstate; s++) {
        jopt_state_info st;
        if (jopt_spec_state(spec, s, &st)) {
            fail("%s", jopt_errmsg(ctx[0]));
            goto done;
        }
        tl[s + 1].name = st.name;
        if (st.kind == JOPT_STATE_GROUP) {
            double v[2];
            if (jopt_group_state(opt[0], 0, st.name, &v[0]) ||
                jopt_group_state(opt[1], 0, st.name, &v[1]))
                continue;
            float f[2] = {(float)v[0], (float)v[1]};
            compare(&tl[s + 1], &f[0], &f[1], 1);
            if (!isnan(v[0]) && v[0] != v[1] && !tl[s + 1].differ) /* a double */
                tl[s + 1].differ = 1, tl[s + 1].maxulp = 1;
            continue;
        }
        for (int t = 0; t < NTENSOR; t++) {
            const float *d[2];
            int64_t st_step[2], numel = 0;
            int r0 = jopt_state_get(opt[0], 0, t, st.name, &d[0], &st_step[0]);
            int r1 = jopt_state_get(opt[1], 0, t, st.name, &d[1], &st_step[1]);
            if (r0 != r1 || !d[0] != !d[1] || (!r0 && st_step[0] != st_step[1])) {
                printf("  %s of tensor %d: exists in one engine only\n", st.name, t);
                mismatch++;
                continue;
            }
            if (r0 || !d[0] || jopt_state_numel(opt[0], 0, t, st.name, &numel))
                continue;
            compare(&tl[s + 1], d[0], d[1], numel);
        }
    }
    int64_t differ = mismatch;
    for (size_t s = 0; s < ntl; s++) {
        if (!tl[s].compared) {
            printf("    %-16s not kept\n", tl[s].name);
            continue;
        }
        differ += tl[s].differ;
        char ulp[24];
        fmt_ulp(ulp, sizeof ulp, tl[s].maxulp);
        printf("    %-16s %8lld values  max ulp %-4s %lld differ  %lld NaN (both)%s\n",
               tl[s].name, (long long)tl[s].compared, ulp,
               (long long)tl[s].differ, (long long)tl[s].nans,
               s > nstate ? "  (named kernel)" : "");
    }
    /* the parameters after the steps and kernels, against another
     * configuration's: passing an option per step must not change a bit */
    int64_t off = 0, moved = 0;
    for (int t = 0; t < NTENSOR; t++) {
        for (int64_t i = 0; cmp && i < check_sizes[t]; i++)
            moved += memcmp(&cmp[off + i], &buf[0][t][0][i], sizeof(float)) &&
                     !(isnan(cmp[off + i]) && isnan(buf[0][t][0][i]));
        if (out)
            memcpy(out + off, buf[0][t][0], (size_t)check_sizes[t] * sizeof(float));
        off += check_sizes[t];
    }
    if (moved)
        printf("    %lld parameters differ from the options folded: the spec "
               "branches on a runtime option (a traced value in `if`, `and`, `or`, "
               "`~=`?)\n", (long long)moved);
    rc = differ || moved ? 1 : 0;
done:
    free(tl);
    for (int e = 0; e < 2; e++) {
        jopt_optim_free(opt[e]);
        for (int t = 0; t < NTENSOR; t++)
            for (int b = 0; b < 2; b++)
                free(buf[e][t][b]);
    }
    for (int t = 0; t < NTENSOR; t++)
        free(input[t]);
    return rc;
}

/* Every configuration: folded and flat (the reference for the others),
 * runtime options per step, shaped tensors, and both; with --shape, every
 * tensor of that shape instead; for a spec that refuses flat tensors,
 * matrices instead. */
static int check_updates(jopt_ctx *const ctx[2], jopt_spec *spec, const args *a)
{
    layout given = {"tensors of the shape given", {0}, {{0}}, {0}};
    const layout *first = &flat, *second = &mixed;
    if (a->ndim) {
        for (int t = 0; t < NTENSOR; t++) {
            given.ndim[t] = a->ndim;
            given.numel[t] = 1;
            for (int d = 0; d < a->ndim; d++) {
                given.shape[t][d] = a->shape[d];
                given.numel[t] *= a->shape[d];
            }
        }
        first = second = &given;
    } else if (jopt_spec_set_shape(spec, 1, flat.numel + 2)) {
        printf("%s refuses flat tensors (%s): checked on matrices\n",
               jopt_spec_name(spec), jopt_errmsg(ctx[0]));
        first = second = &matrices;
        if (jopt_spec_set_shape(spec, 2, matrices.shape[2])) /* its states' names */
            return fail("%s", jopt_errmsg(ctx[0]));
    } else if (jopt_spec_set_variant(spec, 1, NULL)) {
        return fail("%s", jopt_errmsg(ctx[0]));
    }
    int64_t total = 0, most = 0;
    for (int t = 0; t < NTENSOR; t++) {
        total += first->numel[t];
        most = first->numel[t] > most ? first->numel[t] : most;
    }
    float *folded = malloc((size_t)total * sizeof(float));
    float *shaped = malloc((size_t)total * sizeof(float));
    if (!folded || !shaped) {
        free(folded);
        free(shaped);
        return fail("out of memory");
    }
    printf("check %s%s%s: JIT against the reference interpreter, %d tensors "
           "of %lld..%lld elements, %d steps, then each named kernel; data with "
           "zeros and subnormals\n",
           jopt_spec_name(spec), a->options[0] ? " " : "", a->options, NTENSOR,
           (long long)first->numel[0], (long long)most, NSTEPS);
    const config cfs[5] = {{0, 0, first}, {1, 0, first}, {0, 0, second},
                           {1, 0, second}, {0, 1, first}};
    int bad = 0;
    for (int c = 0; c < 5; c++) {
        if (second == first && (c == 2 || c == 3))
            continue; /* one layout: the same configurations */
        bad |= check_update(ctx, spec, a, &cfs[c], c == 0 ? folded : c == 2 ? shaped : NULL,
                            c == 1 ? folded : c == 3 ? shaped : NULL);
    }
    free(folded);
    free(shaped);
    printf("%s: %s\n", bad ? "FAIL" : "PASS",
           bad ? "see above" : "JIT == reference, bit for bit; runtime options == "
                               "folded ones");
    return bad;
}

int cmd_check(const args *a)
{
    jopt_ctx *ctx[2] = {NULL, NULL};
    jopt_spec *spec = NULL;
    int rc = 1;
    for (int e = 0; e < 2; e++) {
        if (jopt_ctx_new(&ctx[e]) ||
            jopt_ctx_set_engine(ctx[e], e ? JOPT_ENGINE_REFERENCE : JOPT_ENGINE_JIT)) {
            fail("cannot create a context");
            goto done;
        }
    }
    if (open_spec(ctx[0], a, &spec)) /* the spec and options first */
        goto done;
    if (jopt_spec_method(spec))
        rc = check_method(ctx, spec, a);
    else if (a->kernel)
        fail("%s has an update, not vector kernels: --kernel is for closure "
             "optimizers (specs with a method)", jopt_spec_name(spec));
    else
        rc = check_updates(ctx, spec, a);
done:
    jopt_spec_free(spec);
    for (int e = 0; e < 2; e++)
        jopt_ctx_free(ctx[e]);
    return rc;
}
