/*
 * jopt.c - the jopt command: lists and describes the specs on the spec
 * path, checks the JIT against the reference interpreter, prints a kernel's
 * IR or machine code, and runs the benchmark for one spec.  It links the
 * static library, so it reaches codegen through codegen/cg.h, the
 * runtime's structures through runtime/rt.h, and the closure optimizers'
 * drivers (which kernels each needs) through runtime/closure.h.  A spec
 * with a `method` has vector kernels instead of an update: show, check and
 * compile work on those, and never build an optimizer.  (A command-line
 * program: it prints, and exits non-zero on errors.)
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "closure.h"
#include "rt.h"

static const char usage_text[] =
    "usage: jopt list\n"
    "       jopt show SPEC [--set k=v ...]\n"
    "       jopt check SPEC [--set k=v ...] [--kernel NAME]\n"
    "       jopt compile SPEC [--set k=v ...] [--kernel NAME] [--emit ir|asm]\n"
    "       jopt bench SPEC [--set k=v ...]\n"
    "\n"
    "  list     every spec on the spec path, with its doc line\n"
    "  show     a spec's hyperparameters, defaults and state; for a closure\n"
    "           optimizer (a spec with a `method`, like lbfgs), its method\n"
    "           and vector kernels\n"
    "  check    JIT against the reference interpreter, bit for bit, on\n"
    "           random data with zeros, subnormals, NaN and Inf (exit 1 if\n"
    "           anything differs): the update over several steps, or every\n"
    "           vector kernel of a closure optimizer (--kernel: just one)\n"
    "  compile  the optimised LLVM IR (default) or machine code of the\n"
    "           update, or of a closure optimizer's vector kernel NAME\n"
    "           (--kernel NAME is required for those)\n"
    "  bench    runs bench_optim --quick SPEC:OPTIONS, if it was built; for\n"
    "           a closure optimizer (lbfgs, cg), bench_closure on 64K and 1M\n"
    "\n"
    "SPEC is a name on the spec path ($JOPT_SPEC_PATH, folders separated by\n"
    "':', else the built-in folders) or a path to a .lua file.\n";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("jopt: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* ---- command line -------------------------------------------------------- */

typedef struct args {
    const char *cmd, *spec, *emit, *kernel;
    char options[4096]; /* the --set items, as an options string */
} args;

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i], *v = NULL;
        if (!strcmp(s, "--set") || !strcmp(s, "--emit") ||
            !strcmp(s, "--kernel")) {
            if (i + 1 >= argc)
                return fail("%s needs a value (see jopt --help)", s);
            v = argv[++i];
        } else if (!strncmp(s, "--set=", 6) || !strncmp(s, "--emit=", 7) ||
                   !strncmp(s, "--kernel=", 9)) {
            v = strchr(s, '=') + 1;
        }
        if (v && s[2] == 'k') {
            if (a->kernel)
                return fail("--kernel given twice");
            a->kernel = v;
        } else if (v && s[2] == 's') {
            size_t l = strlen(a->options);
            if (!strchr(v, '='))
                return fail("--set takes name=value, not '%s'", v);
            if (l + strlen(v) + 2 > sizeof a->options)
                return fail("too many --set options");
            snprintf(a->options + l, sizeof a->options - l, "%s%s",
                     l ? " " : "", v);
        } else if (v) {
            a->emit = v;
        } else if (s[0] == '-' && s[1]) {
            return fail("unknown option '%s' (see jopt --help)", s);
        } else if (!a->spec) {
            a->spec = s;
        } else {
            return fail("unexpected argument '%s' (see jopt --help)", s);
        }
    }
    return 0;
}

static void spec_path(const jopt_ctx *ctx, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (size_t i = 0; i < ctx->ndirs; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", i ? ":" : "", ctx->dirs[i]);
    }
}

/* Loads a spec from the context's path, and its values: the defaults
 * overlaid by `options`, checked by the spec.  Caller frees both. */
static int load(jopt_ctx *ctx, const char *name, const char *options,
                cg_spec **spec, double **values)
{
    char err[CG_ERRLEN];
    *values = NULL;
    if (cg_spec_load((const char *const *)ctx->dirs, ctx->ndirs, name, spec,
                     err))
        return fail("%s", err);
    size_t n = cg_spec_nvalues(*spec);
    *values = malloc((n ? n : 1) * sizeof **values);
    if (!*values) {
        cg_spec_free(*spec);
        return fail("out of memory");
    }
    memcpy(*values, cg_spec_defaults(*spec), n * sizeof **values);
    if (rt_options_parse(*spec, options, *values, err) ||
        cg_spec_check(*spec, *values, err)) {
        fail("%s: %s", cg_spec_name(*spec), err);
        free(*values);
        cg_spec_free(*spec);
        return 1;
    }
    return 0;
}

/* the shortest %g that reads back as v */
static void fmt_num(char *buf, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) { /* 50, not 5e+01 */
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v || isnan(v))
            return;
    }
}

/* a hyperparameter's value as the options syntax writes it */
static void fmt_hyper(char *buf, size_t cap, const cg_hyper *h,
                      const double *values)
{
    buf[0] = '\0';
    for (int k = 0; k < h->len; k++) {
        size_t l = strlen(buf);
        char num[64];
        const double v = values[h->offset + k];
        if (h->kind == CG_HYPER_BOOL)
            snprintf(num, sizeof num, "%s", v != 0 ? "true" : "false");
        else if (h->kind == CG_HYPER_CHOICE)
            snprintf(num, sizeof num, "%s",
                     v >= 0 && v < h->nchoices && v == floor(v)
                         ? h->choices[(int)v] : "?");
        else if (h->optional && isnan(v))
            snprintf(num, sizeof num, "None");
        else
            fmt_num(num, sizeof num, v);
        snprintf(buf + l, cap - l, "%s%s", k ? "," : "", num);
    }
}

/* ---- list ---------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmd_list(jopt_ctx *ctx)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (size_t d = 0; d < ctx->ndirs; d++) {
        DIR *dir = opendir(ctx->dirs[d]);
        if (!dir)
            continue;
        size_t first = n;
        for (struct dirent *e; (e = readdir(dir));) {
            size_t l = strlen(e->d_name);
            if (l <= 4 || strcmp(e->d_name + l - 4, ".lua"))
                continue;
            int seen = 0; /* an earlier folder's spec of that name wins */
            for (size_t i = 0; i < first && !seen; i++) {
                const char *s = strrchr(names[i], '/') + 1;
                seen = !strcmp(s, e->d_name);
            }
            if (seen)
                continue;
            if (n == cap) {
                char **nn = realloc(names, (cap = cap ? 2 * cap : 32) * sizeof *nn);
                if (!nn) {
                    rc = fail("out of memory");
                    break;
                }
                names = nn;
            }
            size_t need = strlen(ctx->dirs[d]) + l + 2;
            if (!(names[n] = malloc(need))) {
                rc = fail("out of memory");
                break;
            }
            snprintf(names[n++], need, "%s/%s", ctx->dirs[d], e->d_name);
        }
        closedir(dir);
        qsort(names + first, n - first, sizeof *names, cmp_str);
        if (rc)
            break;
    }
    if (!rc && !n) {
        char path[2048];
        spec_path(ctx, path, sizeof path);
        rc = fail("no specs found (looked in: %s)", path);
    }
    int bad = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        cg_spec *spec;
        char err[CG_ERRLEN];
        if (cg_spec_load(NULL, 0, names[i], &spec, err)) {
            fail("%s", err); /* list the rest, fail at the end */
            bad = 1;
            continue;
        }
        printf("%-10s %s\n", cg_spec_name(spec), cg_spec_doc(spec));
        cg_spec_free(spec);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc || bad ? 1 : 0;
}

/* ---- closure optimizers -------------------------------------------------- */

/* the spec's kernel names, "a, b, c" */
static void kernel_names(const cg_spec *spec, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (size_t i = 0; i < cg_spec_nvkernels(spec); i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", i ? ", " : "",
                 cg_spec_vkernel(spec, i)->name);
    }
    if (!buf[0])
        snprintf(buf, cap, "none");
}

/* a kernel's arrays, "y x z" */
static void array_names(const cg_vkernel_sig *vk, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (int i = 0; i < vk->narrays; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", i ? " " : "", vk->arrays[i]);
    }
}

/* Prints a line for each kernel the method's driver needs that the spec
 * lacks or has with another shape (layouts[i]: spec kernel i's, or NULL if
 * it did not trace).  Returns how many. */
static int driver_mismatches(const cg_spec *spec, const cg_layout *const *layouts)
{
    const char *method = cg_spec_method(spec);
    const rt_driver *d = rt_driver_find(method);
    if (!d) {
        printf("  method '%s': no driver of that name in this build\n", method);
        return 1;
    }
    int bad = 0;
    for (int i = 0; i < d->nkernels; i++) {
        const cg_layout *l = NULL;
        int found = 0;
        for (size_t j = 0; j < cg_spec_nvkernels(spec); j++)
            if (!strcmp(cg_spec_vkernel(spec, j)->name, d->kernels[i].name)) {
                found = 1;
                l = layouts[j];
            }
        if (found && !l)
            continue; /* its trace error is reported already */
        char err[CG_ERRLEN];
        if (rt_driver_kernel_fits(d, i, spec, l, err)) {
            printf("  %s\n", err);
            bad++;
        }
    }
    return bad;
}

/* show's part for a spec with a method: its kernels, traced on the
 * reference engine (no LLVM) for their results and passes */
static int show_method(const cg_spec *spec)
{
    const char *method = cg_spec_method(spec);
    const rt_driver *d = rt_driver_find(method);
    size_t nk = cg_spec_nvkernels(spec);
    printf("\nmethod: %s, a closure optimizer: control flow in C (%s), step "
           "needs a closure\n", method, d ? d->source : "no driver of that name "
           "in this build");
    printf("\nvector kernels (over the group's tensors as one flat vector; "
           "the same for any options):\n");
    int w = 14, aw = 6;
    char names[1024];
    for (size_t i = 0; i < nk; i++) {
        const cg_vkernel_sig *vk = cg_spec_vkernel(spec, i);
        if ((int)strlen(vk->name) > w)
            w = (int)strlen(vk->name);
        array_names(vk, names, sizeof names);
        if ((int)strlen(names) > aw)
            aw = (int)strlen(names);
    }
    printf("  %-*s %-*s %7s %7s  %s\n", w, "name", aw, "arrays", "scalars",
           "results", "passes");
    cg_jit *jit = NULL;
    char err[CG_ERRLEN];
    int rc = cg_jit_new(&jit, err);
    if (rc)
        return fail("%s: %s", cg_spec_name(spec), err);
    cg_kernel **ks = calloc(nk + 1, sizeof *ks);
    const cg_layout **ls = calloc(nk + 1, sizeof *ls);
    if (!ks || !ls) {
        free(ks);
        free(ls);
        cg_jit_free(jit);
        return fail("out of memory");
    }
    for (size_t i = 0; i < nk; i++) {
        const cg_vkernel_sig *vk = cg_spec_vkernel(spec, i);
        cg_request req = {.spec = spec, .vkernel = vk->name, .reference = 1};
        array_names(vk, names, sizeof names);
        if (cg_kernel_get(jit, &req, &ks[i], err)) {
            printf("  %-*s %-*s %7d %7s  (does not trace)\n", w, vk->name, aw,
                   names, vk->nscalars, "?");
            fail("%s: kernel %s: %s", cg_spec_name(spec), vk->name, err);
            rc = 1;
            continue;
        }
        const cg_layout *l = ls[i] = cg_kernel_layout(ks[i]);
        char passes[256] = "one";
        if (l->nreduce) {
            int nsum = 0, nmax = 0;
            for (int r = 0; r < l->nreduce; r++)
                l->reduce_kind[r] == CG_REDUCE_MAX ? nmax++ : nsum++;
            char smax[32] = "", ssum[32] = "";
            if (nmax)
                snprintf(smax, sizeof smax, "%d max%s", nmax, nmax > 1 ? "ima" : "");
            if (nsum)
                snprintf(ssum, sizeof ssum, "%d sum%s", nsum, nsum > 1 ? "s" : "");
            /* a second pass only when a stored value depends on a result */
            snprintf(passes, sizeof passes, "%s (%s%s%s)",
                     l->has_late ? "two" : "one", smax, nmax && nsum ? ", " : "",
                     ssum);
        }
        printf("  %-*s %-*s %7d %7d  %s\n", w, vk->name, aw, names,
               l->nscalars, l->nresults, passes);
    }
    if (!nk) {
        printf("  (none)\n");
        rc = fail("%s: method '%s' but no kernels", cg_spec_name(spec), method);
    }
    if (driver_mismatches(spec, ls))
        rc = 1;
    for (size_t i = 0; i < nk; i++)
        cg_kernel_release(ks[i]);
    free(ks);
    free(ls);
    cg_jit_free(jit);
    return rc;
}

/* ---- show ---------------------------------------------------------------- */

static int cmd_show(jopt_ctx *ctx, const args *a)
{
    cg_spec *spec;
    double *values;
    if (load(ctx, a->spec, a->options, &spec, &values))
        return 1;
    printf("%s: %s\n", cg_spec_name(spec), cg_spec_doc(spec));
    printf("file: %s\n\n", cg_spec_path(spec));
    printf("hyperparameters (%s; runtime: passed per step once changed):\n",
           a->options[0] ? "with the options given" : "defaults");
    const int is_method = cg_spec_method(spec) != NULL;
    int w = 14; /* the name column */
    for (size_t i = 0; i < cg_spec_nhyper(spec); i++)
        if ((int)strlen(cg_spec_hyper(spec, i)->name) > w)
            w = (int)strlen(cg_spec_hyper(spec, i)->name);
    for (size_t s = 0; s < cg_spec_nstate(spec) && !is_method; s++)
        if ((int)strlen(cg_spec_state_name(spec, s)) > w)
            w = (int)strlen(cg_spec_state_name(spec, s));
    for (size_t i = 0; i < cg_spec_nhyper(spec); i++) {
        const cg_hyper *h = cg_spec_hyper(spec, i);
        char v[1024], note[1024] = "";
        fmt_hyper(v, sizeof v, h, values);
        if (h->runtime_ok)
            snprintf(note, sizeof note, "runtime");
        if (h->kind == CG_HYPER_CHOICE) {
            size_t l = strlen(note);
            snprintf(note + l, sizeof note - l, "%s(one of: ", l ? " " : "");
            for (int c = 0; c < h->nchoices; c++) {
                l = strlen(note);
                snprintf(note + l, sizeof note - l, "%s%s", c ? ", " : "",
                         h->choices[c]);
            }
            l = strlen(note);
            snprintf(note + l, sizeof note - l, ")");
        } else if (h->optional) {
            size_t l = strlen(note);
            snprintf(note + l, sizeof note - l, "%s(a number, or None)",
                     l ? " " : "");
        }
        int pad = 17 - (int)strlen(v);
        printf("  %-*s %s%*s%s\n", w, h->name, v, note[0] ? (pad > 1 ? pad : 1) : 0,
               "", note);
    }
    if (is_method) {
        int rc = show_method(spec);
        free(values);
        cg_spec_free(spec);
        return rc;
    }
    /* trace once, on the reference engine (no LLVM), for the state layout */
    cg_jit *jit = NULL;
    cg_kernel *k = NULL;
    char err[CG_ERRLEN];
    cg_request req = {.spec = spec, .values = values, .reference = 1};
    int rc = cg_jit_new(&jit, err);
    if (!rc)
        rc = cg_kernel_get(jit, &req, &k, err);
    if (rc) {
        fail("%s: %s", cg_spec_name(spec), err);
    } else {
        const cg_layout *lay = cg_kernel_layout(k);
        printf("\nstate (%s):\n",
               a->options[0] ? "with the options given" : "with the defaults");
        for (size_t s = 0; s < cg_spec_nstate(spec); s++) {
            int slot = -1;
            for (int i = 0; i < lay->nstate; i++)
                if (lay->state[i] == (int)s)
                    slot = i;
            char what[128];
            if (slot < 0) {
                snprintf(what, sizeof what, "not kept");
            } else {
                char num[64] = "";
                if (lay->init[slot] == CG_INIT_CONST)
                    fmt_num(num, sizeof num, lay->init_value[slot]);
                snprintf(what, sizeof what, "%s, %s%s",
                         lay->scalar[slot] ? "scalar (one per tensor)" : "array",
                         lay->init[slot] == CG_INIT_UNSET ? "starts unset"
                                                          : "starts at ",
                         num);
            }
            printf("  %-*s %s\n", w, cg_spec_state_name(spec, s), what);
        }
        if (lay->nreduce)
            printf("\ntwo passes per step (%d sums over the tensor)\n",
                   lay->nreduce);
    }
    cg_kernel_release(k);
    cg_jit_free(jit);
    free(values);
    cg_spec_free(spec);
    return rc ? 1 : 0;
}

/* ---- check --------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* mostly ordinary values, with zeros, subnormals, NaN and infinities */
static float random_value(float scale)
{
    uint64_t r = rng();
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
static const int64_t check_sizes[NTENSOR] = {1, 3, 17, 255, 1027, 70001};

/* ---- check: a closure optimizer's vector kernels ------------------------- */

/* per-call scalars: ordinary magnitudes, with zeros, values that round to
 * float subnormals or overflow float, NaN and infinities */
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
 * arrays with NaN and Inf, each with ordinary scalars or random ones */
#define VK_ROUNDS 4
static const int64_t vk_sizes[] = {0, 1, 3, 17, 255, 1027, 70001, 2 * RT_CHUNK + 5};
#define VK_NSIZES ((int)(sizeof vk_sizes / sizeof vk_sizes[0]))

/* One call of a vector kernel over [0, n), cut into RT_CHUNK ranges as the
 * runtime cuts it, with the ranges' reductions merged in order. */
static void vk_call(const cg_kernel *k, float *const *arrays, int64_t n,
                    const double *scalars, double *u, double (*red)[CG_MAX_REDUCE],
                    cg_task *tasks, double *results)
{
    const cg_layout *l = cg_kernel_layout(k);
    int64_t nt = 0;
    for (int64_t b = 0; b < n; b += RT_CHUNK, nt++) {
        cg_reduce_init(l, red[nt]);
        tasks[nt] = (cg_task){arrays, b, b + RT_CHUNK < n ? b + RT_CHUNK : n, u,
                              red[nt]};
    }
    cg_kernel_prologue(k, 0, scalars, NULL, u);
    cg_kernel_pass(k, 0, tasks, nt);
    if (l->nreduce) {
        double acc[CG_MAX_REDUCE];
        cg_reduce_init(l, acc);
        for (int64_t t = 0; t < nt; t++)
            cg_reduce_merge(l, acc, red[t]);
        cg_kernel_epilogue(k, 0, scalars, NULL, acc, u);
        cg_kernel_pass(k, 1, tasks, nt);
    }
    cg_kernel_results(k, u, results);
}

/* JIT against the reference interpreter for each vector kernel of a spec
 * with a method (or just a->kernel).  Builds no optimizer. */
static int check_method(const cg_spec *spec, const args *a)
{
    size_t nk = cg_spec_nvkernels(spec);
    char names[1024];
    kernel_names(spec, names, sizeof names);
    if (!nk)
        return fail("%s: method '%s' but no kernels", cg_spec_name(spec),
                    cg_spec_method(spec));
    if (a->kernel && !cg_spec_find_vkernel(spec, a->kernel))
        return fail("%s has no kernel '%s' (its kernels: %s)", cg_spec_name(spec),
                    a->kernel, names);
    const int64_t maxn = vk_sizes[VK_NSIZES - 1];
    const int64_t maxtasks = (maxn + RT_CHUNK - 1) / RT_CHUNK + 1;
    cg_jit *jit[2] = {NULL, NULL};
    cg_kernel *k[2] = {NULL, NULL};
    float *buf[2][CG_MAX_SLOTS] = {{NULL}};
    double *u[2] = {NULL, NULL};
    double (*red)[CG_MAX_REDUCE] = calloc((size_t)maxtasks, sizeof *red);
    cg_task *tasks = calloc((size_t)maxtasks, sizeof *tasks);
    const cg_layout **ls = calloc(nk + 1, sizeof *ls);
    cg_kernel **keep = calloc(nk + 1, sizeof *keep);
    char err[CG_ERRLEN];
    int rc = 1, bad = 0, broken = 0, misfit = 0;
    if (!red || !tasks || !ls || !keep) {
        fail("out of memory");
        goto done;
    }
    for (int e = 0; e < 2; e++)
        if (cg_jit_new(&jit[e], err)) {
            fail("%s", err);
            goto done;
        }
    int maxarrays = 0;
    for (size_t i = 0; i < nk; i++)
        if (cg_spec_vkernel(spec, i)->narrays > maxarrays)
            maxarrays = cg_spec_vkernel(spec, i)->narrays;
    for (int e = 0; e < 2; e++)
        for (int s = 0; s < maxarrays && s < CG_MAX_SLOTS; s++)
            if (!(buf[e][s] = malloc((size_t)maxn * sizeof(float)))) {
                fail("out of memory");
                goto done;
            }
    printf("check %s: JIT against the reference interpreter, %s%s%s, on "
           "vectors of %lld..%lld elements, %d calls each (finite or with NaN "
           "and Inf; ordinary or random scalars)\n",
           cg_spec_name(spec), a->kernel ? "kernel " : "every vector kernel (",
           a->kernel ? a->kernel : names, a->kernel ? "" : ")",
           (long long)vk_sizes[0], (long long)maxn, VK_ROUNDS);
    if (a->options[0])
        printf("(the options do not change vector kernels)\n");
    for (size_t i = 0; i < nk; i++) {
        const cg_vkernel_sig *vk = cg_spec_vkernel(spec, i);
        if (a->kernel && strcmp(vk->name, a->kernel))
            continue;
        for (int e = 0; e < 2; e++) {
            cg_request req = {.spec = spec, .vkernel = vk->name, .reference = e};
            if (cg_kernel_get(jit[e], &req, &k[e], err)) {
                fail("%s: kernel %s (%s): %s", cg_spec_name(spec), vk->name,
                     e ? "reference" : "JIT", err);
                broken++;
                break;
            }
        }
        if (!k[0] || !k[1]) {
            cg_kernel_release(k[0]);
            cg_kernel_release(k[1]);
            k[0] = k[1] = NULL;
            continue;
        }
        const cg_layout *l0 = cg_kernel_layout(k[0]), *l1 = cg_kernel_layout(k[1]);
        ls[i] = l1;
        keep[i] = k[1];
        if (l0->narrays != vk->narrays || l0->narrays != l1->narrays ||
            l0->nscalars != l1->nscalars ||
            l0->nresults != l1->nresults || l0->nreduce != l1->nreduce) {
            printf("  %-16s the engines' layouts differ (arrays %d/%d, scalars "
                   "%d/%d, results %d/%d, reductions %d/%d)\n", vk->name,
                   l0->narrays, l1->narrays, l0->nscalars, l1->nscalars,
                   l0->nresults, l1->nresults, l0->nreduce, l1->nreduce);
            bad++;
            cg_kernel_release(k[0]);
            k[0] = k[1] = NULL;
            continue;
        }
        for (int e = 0; e < 2; e++) {
            int nu = cg_kernel_layout(k[e])->nuniform + 1;
            if (!(u[e] = calloc((size_t)nu, sizeof(double)))) {
                fail("out of memory");
                cg_kernel_release(k[0]);
                goto done;
            }
        }
        tally ta = {vk->name, 0, 0, 0, 0}, tr = {vk->name, 0, 0, 0, 0};
        for (int z = 0; z < VK_NSIZES; z++) {
            const int64_t n = vk_sizes[z];
            for (int round = 0; round < VK_ROUNDS; round++) {
                double sc[CG_MAX_UNIFORMS / 16 + 1] = {0}; /* the spec's limit */
                double res[2][CG_MAX_RESULTS];
                for (int s = 0; s < l0->nscalars && s <= CG_MAX_UNIFORMS / 16; s++)
                    sc[s] = random_scalar(!(round & 1));
                for (int s = 0; s < l0->narrays; s++)
                    for (int64_t j = 0; j < n; j++) {
                        float v = random_value(1.0f);
                        while (round < 2 && !isfinite(v))
                            v = random_value(1.0f);
                        buf[0][s][j] = buf[1][s][j] = v;
                    }
                for (int e = 0; e < 2; e++) {
                    for (int r = 0; r < CG_MAX_RESULTS; r++)
                        res[e][r] = 0;
                    vk_call(k[e], buf[e], n, sc, u[e], red, tasks, res[e]);
                }
                for (int s = 0; s < l0->narrays; s++) {
                    char where[256]; /* for compare's messages */
                    snprintf(where, sizeof where, "%s: array %s of %lld",
                             vk->name, vk->arrays[s], (long long)n);
                    ta.name = where;
                    compare(&ta, buf[0][s], buf[1][s], n);
                    ta.name = vk->name;
                }
                compare_d(&tr, res[0], res[1], l0->nresults, vk->name, n);
            }
        }
        free(u[0]);
        free(u[1]);
        u[0] = u[1] = NULL;
        cg_kernel_release(k[0]);
        k[0] = k[1] = NULL;
        char ua[24], ur[24];
        fmt_ulp(ua, sizeof ua, ta.maxulp);
        fmt_ulp(ur, sizeof ur, tr.maxulp);
        printf("  %-16s %9lld array values max ulp %-4s %3lld results max ulp "
               "%-4s %lld differ  %lld NaN (both)\n", vk->name,
               (long long)ta.compared, ua, (long long)tr.compared, ur,
               (long long)(ta.differ + tr.differ), (long long)(ta.nans + tr.nans));
        bad += ta.differ + tr.differ ? 1 : 0;
    }
    if (!a->kernel)
        misfit = driver_mismatches(spec, ls);
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
    for (size_t i = 0; keep && i < nk; i++)
        cg_kernel_release(keep[i]);
    for (int e = 0; e < 2; e++) {
        free(u[e]);
        for (int s = 0; s < CG_MAX_SLOTS; s++)
            free(buf[e][s]);
        cg_jit_free(jit[e]);
    }
    free(keep);
    free(ls);
    free(tasks);
    free(red);
    return rc;
}

static int cmd_check(const args *a)
{
    jopt_ctx *ctx[2] = {NULL, NULL};
    jopt_optim *opt[2] = {NULL, NULL};
    float *buf[2][NTENSOR][2] = {{{NULL}}};
    tally *tl = NULL;
    int rc = 1;
    for (int e = 0; e < 2; e++) {
        if (jopt_ctx_new(&ctx[e]) ||
            jopt_ctx_set_engine(ctx[e], e ? JOPT_ENGINE_REFERENCE : JOPT_ENGINE_JIT)) {
            fail("cannot create a context");
            goto done;
        }
    }
    cg_spec *spec0; /* the spec and options first, for plain messages */
    double *values0;
    if (load(ctx[0], a->spec, a->options, &spec0, &values0))
        goto done;
    free(values0);
    if (cg_spec_method(spec0)) { /* a closure optimizer: its kernels only */
        rc = check_method(spec0, a);
        cg_spec_free(spec0);
        goto done;
    }
    if (a->kernel) {
        fail("%s has an update, not vector kernels: --kernel is for closure "
             "optimizers (specs with a method)", cg_spec_name(spec0));
        cg_spec_free(spec0);
        goto done;
    }
    cg_spec_free(spec0);
    jopt_param params[2][NTENSOR];
    for (int t = 0; t < NTENSOR; t++)
        for (int e = 0; e < 2; e++) {
            for (int b = 0; b < 2; b++)
                if (!(buf[e][t][b] = malloc(check_sizes[t] * sizeof(float)))) {
                    fail("out of memory");
                    goto done;
                }
            params[e][t] = (jopt_param){buf[e][t][0], buf[e][t][1], check_sizes[t]};
        }
    for (int t = 0; t < NTENSOR; t++)
        for (int64_t i = 0; i < check_sizes[t]; i++)
            buf[0][t][0][i] = buf[1][t][0][i] = random_value(1.0f);
    for (int e = 0; e < 2; e++) {
        jopt_group g = {params[e], NTENSOR, NULL};
        if (jopt_optim_new(ctx[e], a->spec, &g, 1, a->options, &opt[e])) {
            fail("%s", jopt_errmsg(ctx[e]));
            goto done;
        }
    }
    for (int s = 0; s < NSTEPS; s++) {
        for (int t = 0; t < NTENSOR; t++)
            for (int64_t i = 0; i < check_sizes[t]; i++)
                buf[0][t][1][i] = buf[1][t][1][i] = random_value(0.1f);
        for (int e = 0; e < 2; e++)
            if (jopt_step(opt[e], NULL, NULL, NULL)) {
                fail("step %d: %s", s + 1, jopt_errmsg(ctx[e]));
                goto done;
            }
    }
    const cg_spec *spec = opt[0]->spec;
    size_t nstate = cg_spec_nstate(spec);
    if (!(tl = calloc(nstate + 1, sizeof *tl))) {
        fail("out of memory");
        goto done;
    }
    printf("check %s%s%s: JIT against the reference interpreter, %d tensors "
           "of %lld..%lld elements, %d steps\n",
           cg_spec_name(spec), a->options[0] ? " " : "", a->options, NTENSOR,
           (long long)check_sizes[0], (long long)check_sizes[NTENSOR - 1], NSTEPS);
    tl[0].name = "param";
    int mismatch = 0;
    for (int t = 0; t < NTENSOR; t++)
        compare(&tl[0], buf[0][t][0], buf[1][t][0], check_sizes[t]);
    for (size_t s = 0; s < nstate; s++) {
        const char *name = cg_spec_state_name(spec, s);
        tl[s + 1].name = name;
        for (int t = 0; t < NTENSOR; t++) {
            const float *d[2];
            int64_t st[2];
            int r0 = jopt_state_get(opt[0], 0, t, name, &d[0], &st[0]);
            int r1 = jopt_state_get(opt[1], 0, t, name, &d[1], &st[1]);
            if (r0 != r1 || !d[0] != !d[1] || (!r0 && st[0] != st[1])) {
                printf("  %s of tensor %d: exists in one engine only\n", name, t);
                mismatch++;
                continue;
            }
            if (r0 || !d[0])
                continue;
            int scalar = (opt[0]->groups[0].params[t].scalar_mask >> s) & 1;
            compare(&tl[s + 1], d[0], d[1], scalar ? 1 : check_sizes[t]);
        }
    }
    int64_t differ = mismatch;
    for (size_t s = 0; s <= nstate; s++) {
        if (!tl[s].compared) {
            printf("  %-16s not kept\n", tl[s].name);
            continue;
        }
        differ += tl[s].differ;
        char ulp[24];
        if (tl[s].maxulp == INT64_MAX)
            snprintf(ulp, sizeof ulp, "NaN");
        else
            snprintf(ulp, sizeof ulp, "%lld", (long long)tl[s].maxulp);
        printf("  %-16s %8lld values  max ulp %-4s %lld differ  %lld NaN (both)\n",
               tl[s].name, (long long)tl[s].compared, ulp,
               (long long)tl[s].differ, (long long)tl[s].nans);
    }
    printf("%s: %s\n", differ ? "FAIL" : "PASS",
           differ ? "the JIT and the reference interpreter differ"
                  : "JIT == reference, bit for bit");
    rc = differ ? 1 : 0;
done:
    free(tl);
    for (int e = 0; e < 2; e++) {
        jopt_optim_free(opt[e]);
        jopt_ctx_free(ctx[e]);
        for (int t = 0; t < NTENSOR; t++)
            for (int b = 0; b < 2; b++)
                free(buf[e][t][b]);
    }
    return rc;
}

/* ---- compile ------------------------------------------------------------- */

static int cmd_compile(jopt_ctx *ctx, const args *a)
{
    const char *what = a->emit ? a->emit : "ir";
    if (strcmp(what, "ir") && strcmp(what, "asm"))
        return fail("--emit takes ir or asm, not '%s'", what);
    cg_spec *spec;
    double *values;
    if (load(ctx, a->spec, a->options, &spec, &values))
        return 1;
    cg_request req = {.spec = spec, .values = values, .vkernel = a->kernel};
    char err[CG_ERRLEN], *text = NULL, names[1024];
    kernel_names(spec, names, sizeof names);
    int rc = 1;
    if (cg_spec_method(spec) && !a->kernel) {
        fail("%s is a closure optimizer (method '%s'): it has vector kernels, "
             "not an update; give --kernel NAME, one of: %s", cg_spec_name(spec),
             cg_spec_method(spec), names);
    } else if (!cg_spec_method(spec) && a->kernel) {
        fail("%s has an update, not vector kernels: --kernel is for closure "
             "optimizers (specs with a method)", cg_spec_name(spec));
    } else if (a->kernel && !cg_spec_find_vkernel(spec, a->kernel)) {
        fail("%s has no kernel '%s' (its kernels: %s)", cg_spec_name(spec),
             a->kernel, names);
    } else if ((rc = cg_emit_text(ctx->jit, &req, what, &text, err))) {
        fail("%s%s%s: %s", cg_spec_name(spec), a->kernel ? ": kernel " : "",
             a->kernel ? a->kernel : "", err);
    } else {
        fputs(text, stdout);
    }
    free(text);
    free(values);
    cg_spec_free(spec);
    return rc ? 1 : 0;
}

/* ---- bench --------------------------------------------------------------- */

/* the program `name` next to this one, else on PATH; caller frees */
static char *find_tool(const char *name)
{
    char self[4096];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l > 0) {
        self[l] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            slash[1] = '\0';
            size_t need = strlen(self) + strlen(name) + 1;
            char *p = malloc(need);
            if (p) {
                snprintf(p, need, "%s%s", self, name);
                if (!access(p, X_OK))
                    return p;
                free(p);
            }
        }
    }
    const char *path = getenv("PATH");
    for (const char *c = path; c && *c;) {
        const char *e = strchr(c, ':');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        size_t need = len + strlen(name) + 2;
        char *p = malloc(need);
        if (!p)
            return NULL;
        snprintf(p, need, "%.*s/%s", (int)len, c, name);
        if (len && !access(p, X_OK))
            return p;
        free(p);
        if (!e)
            break;
        c = e + 1;
    }
    return NULL;
}

/* Closure optimizers: bench_closure, which times both (lbfgs, cg) on a
 * fixed problem with their own options, against naive loops. */
static int bench_closure(const args *a, const cg_spec *spec)
{
    if (a->options[0])
        return fail("%s: bench_closure runs the closure optimizers with its own "
                    "options; drop --set", cg_spec_name(spec));
    char *bench = find_tool("bench_closure");
    if (!bench)
        return fail("bench_closure was not built (looked next to jopt and on "
                    "PATH); build it with: cmake --build build --target "
                    "bench_closure");
    char *argv[] = {"bench_closure", "--sizes", "64K,1M", "--budget", "1", NULL};
    fflush(stdout);
    execv(bench, argv);
    int rc = fail("cannot run %s: %s", bench, strerror(errno));
    free(bench);
    return rc;
}

static int cmd_bench(jopt_ctx *ctx, const args *a)
{
    cg_spec *spec;
    double *values;
    if (load(ctx, a->spec, a->options, &spec, &values)) /* fail early */
        return 1;
    free(values);
    if (cg_spec_method(spec)) {
        int rc = bench_closure(a, spec);
        cg_spec_free(spec);
        return rc;
    }
    cg_spec_free(spec);
    char *bench = find_tool("bench_optim");
    if (!bench)
        return fail("bench_optim was not built (looked next to jopt and on "
                    "PATH); build it with: cmake --build build --target "
                    "bench_optim");
    size_t need = strlen(a->spec) + strlen(a->options) + 2;
    char *item = malloc(need);
    if (!item) {
        free(bench);
        return fail("out of memory");
    }
    snprintf(item, need, "%s%s%s", a->spec, a->options[0] ? ":" : "", a->options);
    char *argv[] = {"bench_optim", "--quick", item, NULL};
    fflush(stdout);
    execv(bench, argv);
    int rc = fail("cannot run %s: %s", bench, strerror(errno));
    free(item);
    free(bench);
    return rc;
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    args a;
    if (parse_args(argc, argv, &a))
        return 2;
    int known = !strcmp(a.cmd, "list") || !strcmp(a.cmd, "show") ||
                !strcmp(a.cmd, "check") || !strcmp(a.cmd, "compile") ||
                !strcmp(a.cmd, "bench");
    if (!known)
        return fail("unknown command '%s' (see jopt --help)", a.cmd), 2;
    if (!strcmp(a.cmd, "list") ? a.spec != NULL : a.spec == NULL)
        return fail("%s %s (see jopt --help)", a.cmd,
                    a.spec ? "takes no spec" : "needs a SPEC"), 2;
    if (a.emit && strcmp(a.cmd, "compile"))
        return fail("--emit is for jopt compile"), 2;
    if (a.kernel && strcmp(a.cmd, "compile") && strcmp(a.cmd, "check"))
        return fail("--kernel is for jopt compile and jopt check"), 2;
    if (!strcmp(a.cmd, "check"))
        return cmd_check(&a);
    jopt_ctx *ctx;
    if (jopt_ctx_new(&ctx))
        return fail("cannot create a context (out of memory)");
    int rc = !strcmp(a.cmd, "list")    ? cmd_list(ctx)
             : !strcmp(a.cmd, "show")  ? cmd_show(ctx, &a)
             : !strcmp(a.cmd, "compile") ? cmd_compile(ctx, &a)
                                         : cmd_bench(ctx, &a);
    jopt_ctx_free(ctx);
    return rc;
}
