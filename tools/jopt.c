/*
 * jopt.c - the jopt command: lists and describes the specs on the spec
 * path, checks the JIT against the reference interpreter, prints a kernel's
 * IR or machine code, and runs the benchmark for one spec.  It links the
 * static library, so it reaches codegen through codegen/cg.h and the
 * runtime's structures through runtime/rt.h.  (A command-line program: it
 * prints, and exits non-zero on errors.)
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt.h"

static const char usage_text[] =
    "usage: jopt list\n"
    "       jopt show SPEC [--set k=v ...]\n"
    "       jopt check SPEC [--set k=v ...]\n"
    "       jopt compile SPEC [--set k=v ...] [--emit ir|asm]\n"
    "       jopt bench SPEC [--set k=v ...]\n"
    "\n"
    "  list     every spec on the spec path, with its doc line\n"
    "  show     a spec's hyperparameters, defaults and state\n"
    "  check    JIT against the reference interpreter, bit for bit, on\n"
    "           random data with zeros, subnormals, NaN and Inf (exit 1 if\n"
    "           anything differs)\n"
    "  compile  the optimised LLVM IR (default) or machine code of a kernel\n"
    "  bench    runs bench_optim --quick SPEC:OPTIONS, if it was built\n"
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
    const char *cmd, *spec, *emit;
    char options[4096]; /* the --set items, as an options string */
} args;

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i], *v = NULL;
        if (!strcmp(s, "--set") || !strcmp(s, "--emit")) {
            if (i + 1 >= argc)
                return fail("%s needs a value (see jopt --help)", s);
            v = argv[++i];
        } else if (!strncmp(s, "--set=", 6) || !strncmp(s, "--emit=", 7)) {
            v = strchr(s, '=') + 1;
        }
        if (v && s[2] == 's') {
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
    int w = 14; /* the name column */
    for (size_t i = 0; i < cg_spec_nhyper(spec); i++)
        if ((int)strlen(cg_spec_hyper(spec, i)->name) > w)
            w = (int)strlen(cg_spec_hyper(spec, i)->name);
    for (size_t s = 0; s < cg_spec_nstate(spec); s++)
        if ((int)strlen(cg_spec_state_name(spec, s)) > w)
            w = (int)strlen(cg_spec_state_name(spec, s));
    for (size_t i = 0; i < cg_spec_nhyper(spec); i++) {
        const cg_hyper *h = cg_spec_hyper(spec, i);
        char v[1024];
        fmt_hyper(v, sizeof v, h, values);
        int pad = 17 - (int)strlen(v);
        printf("  %-*s %s%*s%s\n", w, h->name, v, h->runtime_ok ? (pad > 1 ? pad : 1) : 0,
               "", h->runtime_ok ? "runtime" : "");
    }
    /* trace once, on the reference engine (no LLVM), for the state layout */
    cg_jit *jit = NULL;
    cg_kernel *k = NULL;
    char err[CG_ERRLEN];
    cg_request req = {spec, values, NULL, 0, 1};
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
    cg_request req = {spec, values, NULL, 0, 0};
    char err[CG_ERRLEN], *text = NULL;
    int rc = cg_emit_text(ctx->jit, &req, what, &text, err);
    if (rc)
        fail("%s: %s", cg_spec_name(spec), err);
    else
        fputs(text, stdout);
    free(text);
    free(values);
    cg_spec_free(spec);
    return rc ? 1 : 0;
}

/* ---- bench --------------------------------------------------------------- */

/* bench_optim next to this program, else on PATH; caller frees */
static char *find_bench(void)
{
    char self[4096];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l > 0) {
        self[l] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            slash[1] = '\0';
            size_t need = strlen(self) + sizeof "bench_optim";
            char *p = malloc(need);
            if (p) {
                snprintf(p, need, "%sbench_optim", self);
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
        char *p = malloc(len + sizeof "/bench_optim");
        if (!p)
            return NULL;
        snprintf(p, len + sizeof "/bench_optim", "%.*s/bench_optim", (int)len, c);
        if (len && !access(p, X_OK))
            return p;
        free(p);
        if (!e)
            break;
        c = e + 1;
    }
    return NULL;
}

static int cmd_bench(jopt_ctx *ctx, const args *a)
{
    cg_spec *spec;
    double *values;
    if (load(ctx, a->spec, a->options, &spec, &values)) /* fail early */
        return 1;
    free(values);
    cg_spec_free(spec);
    char *bench = find_bench();
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
