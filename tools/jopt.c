/*
 * jopt.c - the jopt command: lists and describes the specs on the spec
 * path, checks the JIT against the reference interpreter (check.c), prints
 * a kernel's graph, IR or machine code, and runs the benchmark for one
 * spec.  It uses only jopt.h: everything it says about a spec comes from
 * the library's introspection (jopt_spec_*).  A spec with a `method` has
 * vector kernels instead of an update: show, check and compile work on
 * those.  (A command-line program: it prints, and exits non-zero on
 * errors.)
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char usage_text[] =
    "usage: jopt list\n"
    "       jopt show SPEC [--set k=v ...] [--shape AxB...]\n"
    "       jopt check SPEC [--set k=v ...] [--shape AxB...] [--kernel NAME]\n"
    "       jopt compile SPEC [--set k=v ...] [--shape AxB...] [--kernel NAME]\n"
    "                    [--emit graph|ir|asm|ptx]\n"
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
    "  compile  the validated expression graph, the optimised LLVM IR\n"
    "           (default) or machine code of the update, or of a closure\n"
    "           optimizer's vector kernel NAME (--kernel NAME is required\n"
    "           for those)\n"
    "  bench    runs bench_optim --quick SPEC:OPTIONS, if it was built; for\n"
    "           a closure optimizer (lbfgs, cg), bench_closure on 64K and 1M\n"
    "\n"
    "SPEC is a name on the spec path ($JOPT_SPEC_PATH, folders separated by\n"
    "':', else the built-in folders) or a path to a .lua file.  --shape\n"
    "shows the kernels for tensors of that shape (7x9: a 7x9 matrix), which\n"
    "a spec that multiplies matrices (muon) needs; check runs on tensors of\n"
    "that shape (without it: flat and 1-D to 3-D tensors, or matrices for a\n"
    "spec that refuses flat ones).\n";

int fail(const char *fmt, ...)
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

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *s = argv[i], *v = NULL;
        if (!strcmp(s, "--shape") || !strncmp(s, "--shape=", 8)) {
            const char *c = s[7] ? s + 8 : i + 1 < argc ? argv[++i] : "";
            for (a->ndim = 0; *c && a->ndim < 8; a->ndim++) {
                char *end;
                long long size = strtoll(c, &end, 10);
                if (end == c || size < 1 || (*end && (*end != 'x' || !end[1])))
                    return fail("--shape takes sizes like 7x9, not '%s'", c);
                a->shape[a->ndim] = size;
                c = *end ? end + 1 : end;
            }
            if (!a->ndim || *c)
                return fail("--shape takes 1 to 8 sizes like 7x9");
            continue;
        }
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

int open_spec(jopt_ctx *ctx, const args *a, jopt_spec **spec)
{
    if (jopt_spec_open(ctx, a->spec, a->options, spec))
        return fail("%s", jopt_errmsg(ctx));
    if (a->ndim && jopt_spec_set_shape(*spec, a->ndim, a->shape)) {
        fail("%s", jopt_errmsg(ctx));
        jopt_spec_free(*spec);
        return 1;
    }
    return 0;
}

void kernel_names(jopt_spec *spec, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (size_t i = 0; jopt_spec_method(spec) && i < jopt_spec_nkernels(spec); i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", l ? ", " : "",
                 jopt_spec_kernel_name(spec, i));
    }
    if (!buf[0])
        snprintf(buf, cap, "none");
}

int has_kernel(jopt_spec *spec, const char *name)
{
    for (size_t i = 0; jopt_spec_method(spec) && i < jopt_spec_nkernels(spec); i++)
        if (!strcmp(jopt_spec_kernel_name(spec, i), name))
            return 1;
    return 0;
}

/* ---- list ---------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* every .lua file on the spec path, an earlier folder's winning */
static int spec_files(const jopt_ctx *ctx, char ***out, size_t *count)
{
    char **names = NULL;
    size_t n = 0, cap = 0;
    char *path = strdup(jopt_ctx_spec_path(ctx));
    *out = NULL;
    *count = 0;
    if (!path)
        return fail("out of memory");
    for (char *dirname = strtok(path, ":"); dirname; dirname = strtok(NULL, ":")) {
        DIR *dir = opendir(dirname);
        if (!dir)
            continue;
        size_t first = n;
        for (struct dirent *e; (e = readdir(dir));) {
            size_t l = strlen(e->d_name);
            if (l <= 4 || strcmp(e->d_name + l - 4, ".lua"))
                continue;
            int seen = 0;
            for (size_t i = 0; i < first && !seen; i++)
                seen = !strcmp(strrchr(names[i], '/') + 1, e->d_name);
            if (seen)
                continue;
            size_t need = strlen(dirname) + l + 2;
            char **nn = n < cap ? names : realloc(names, (cap = cap ? 2 * cap : 32) * sizeof *nn);
            char *name = nn ? malloc(need) : NULL;
            if (!name) {
                closedir(dir);
                free(path);
                *out = nn ? nn : names;
                *count = n;
                return fail("out of memory");
            }
            names = nn;
            snprintf(name, need, "%s/%s", dirname, e->d_name);
            names[n++] = name;
        }
        closedir(dir);
        qsort(names + first, n - first, sizeof *names, cmp_str);
    }
    free(path);
    *out = names;
    *count = n;
    return 0;
}

static int cmd_list(jopt_ctx *ctx)
{
    char **names;
    size_t n;
    int rc = spec_files(ctx, &names, &n), bad = 0;
    if (!rc && !n)
        rc = fail("no specs found (looked in: %s)", jopt_ctx_spec_path(ctx));
    for (size_t i = 0; i < n && !rc; i++) {
        jopt_spec *spec;
        if (jopt_spec_open(ctx, names[i], NULL, &spec)) {
            fail("%s", jopt_errmsg(ctx)); /* list the rest, fail at the end */
            bad = 1;
            continue;
        }
        printf("%-10s %s\n", jopt_spec_name(spec), jopt_spec_doc(spec));
        jopt_spec_free(spec);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc || bad ? 1 : 0;
}

/* ---- show ---------------------------------------------------------------- */

/* a kernel's arrays, "y x z" */
static void array_names(const jopt_kernel_info *k, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (int i = 0; i < k->narrays; i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", i ? " " : "", k->arrays[i]);
    }
}

/* "one", or "two (1 maximum, 2 sums)": passes, and the reductions */
static void passes_text(const jopt_kernel_info *k, char *buf, size_t cap)
{
    char smax[32] = "", ssum[32] = "";
    if (!k->nsums && !k->nmaxima) {
        snprintf(buf, cap, "%s", k->npasses > 1 ? "two" : "one");
        return;
    }
    if (k->nmaxima)
        snprintf(smax, sizeof smax, "%d max%s", k->nmaxima, k->nmaxima > 1 ? "ima" : "");
    if (k->nsums)
        snprintf(ssum, sizeof ssum, "%d sum%s", k->nsums, k->nsums > 1 ? "s" : "");
    /* a second pass only when a stored value depends on a result */
    snprintf(buf, cap, "%s (%s%s%s)", k->npasses > 1 ? "two" : "one", smax,
             k->nmaxima && k->nsums ? ", " : "", ssum);
}

/* show's part for a spec with a method: its kernels, and whether they fit
 * the method's driver */
static int show_method(jopt_ctx *ctx, jopt_spec *spec)
{
    const char *method = jopt_spec_method(spec), *source = jopt_spec_method_source(spec);
    size_t nk = jopt_spec_nkernels(spec);
    int rc = 0;
    printf("\nmethod: %s, a closure optimizer: control flow in C (%s), step "
           "needs a closure\n", method, source ? source : "no driver of that "
           "name in this build");
    printf("\nvector kernels (over the group's tensors as one flat vector; "
           "the same for any options):\n");
    int w = 14, aw = 6;
    char names[1024], passes[256];
    for (size_t i = 0; i < nk; i++) {
        jopt_kernel_info k;
        if (jopt_spec_kernel(spec, i, &k))
            continue;
        if ((int)strlen(k.name) > w)
            w = (int)strlen(k.name);
        array_names(&k, names, sizeof names);
        if ((int)strlen(names) > aw)
            aw = (int)strlen(names);
    }
    printf("  %-*s %-*s %7s %7s  %s\n", w, "name", aw, "arrays", "scalars",
           "results", "passes");
    for (size_t i = 0; i < nk; i++) {
        jopt_kernel_info k;
        if (jopt_spec_kernel(spec, i, &k)) {
            printf("  %-*s (does not trace)\n", w, jopt_spec_kernel_name(spec, i));
            rc = fail("%s", jopt_errmsg(ctx));
            continue;
        }
        array_names(&k, names, sizeof names);
        passes_text(&k, passes, sizeof passes);
        printf("  %-*s %-*s %7d %7d  %s\n", w, k.name, aw, names, k.nscalars,
               k.nresults, passes);
    }
    if (!nk && !jopt_spec_validate(spec)) {
        printf("  (none)\n");
        rc = fail("%s: method '%s' but no kernels", jopt_spec_name(spec), method);
    } else if (jopt_spec_validate(spec)) {
        printf("  %s\n", jopt_errmsg(ctx));
        rc = 1;
    }
    return rc;
}

static void put_num(char *buf, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) { /* 50, not 5e+01 */
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static int cmd_show(jopt_ctx *ctx, const args *a)
{
    jopt_spec *spec;
    if (open_spec(ctx, a, &spec))
        return 1;
    printf("%s: %s\n", jopt_spec_name(spec), jopt_spec_doc(spec));
    printf("file: %s\n\n", jopt_spec_path(spec));
    printf("hyperparameters (%s; runtime: passed per step once changed):\n",
           a->options[0] ? "with the options given" : "defaults");
    const int is_method = jopt_spec_method(spec) != NULL;
    int w = 14; /* the name column */
    for (size_t i = 0; i < jopt_spec_nhyper(spec); i++) {
        jopt_hyper_info h;
        jopt_spec_hyper(spec, i, &h);
        w = (int)strlen(h.name) > w ? (int)strlen(h.name) : w;
    }
    for (size_t s = 0; s < jopt_spec_nstate(spec); s++) {
        jopt_state_info st;
        if (!jopt_spec_state(spec, s, &st))
            w = (int)strlen(st.name) > w ? (int)strlen(st.name) : w;
    }
    for (size_t i = 0; i < jopt_spec_nhyper(spec); i++) {
        jopt_hyper_info h;
        char v[1024], note[1024] = "";
        jopt_spec_hyper(spec, i, &h);
        jopt_spec_format(spec, i, v, sizeof v);
        if (h.runtime)
            snprintf(note, sizeof note, "runtime");
        if (h.kind == JOPT_KIND_CHOICE) {
            size_t l = strlen(note);
            snprintf(note + l, sizeof note - l, "%s(one of: ", l ? " " : "");
            for (int c = 0; c < h.nchoices; c++) {
                l = strlen(note);
                snprintf(note + l, sizeof note - l, "%s%s", c ? ", " : "",
                         h.choices[c]);
            }
            l = strlen(note);
            snprintf(note + l, sizeof note - l, ")");
        } else if (h.optional) {
            size_t l = strlen(note);
            snprintf(note + l, sizeof note - l, "%s(a number, or None)",
                     l ? " " : "");
        }
        int pad = 17 - (int)strlen(v);
        printf("  %-*s %s%*s%s\n", w, h.name, v, note[0] ? (pad > 1 ? pad : 1) : 0,
               "", note);
    }
    int rc = 0;
    if (is_method) {
        rc = show_method(ctx, spec);
        jopt_spec_free(spec);
        return rc;
    }
    printf("\nstate (%s):\n",
           a->options[0] ? "with the options given" : "with the defaults");
    for (size_t s = 0; s < jopt_spec_nstate(spec) && !rc; s++) {
        jopt_state_info st;
        if (jopt_spec_state(spec, s, &st)) {
            rc = fail("%s", jopt_errmsg(ctx));
            break;
        }
        char what[128], num[64] = "";
        if (!st.kept) {
            snprintf(what, sizeof what, "not kept");
        } else {
            if (!st.unset)
                put_num(num, sizeof num, st.init);
            static const char *const kinds[] = {
                "array", "per row (a 2-D or larger tensor)",
                "per column (a 2-D or larger tensor)", "scalar (one per tensor)",
                "per group"};
            snprintf(what, sizeof what, "%s%s, %s%s", kinds[st.kind],
                     st.f64 ? " in double" : "", st.unset ? "starts unset" : "starts at ",
                     num);
        }
        printf("  %-*s %s\n", w, st.name, what);
    }
    if (jopt_spec_ninputs(spec)) {
        printf("\ninputs (per element, given at a step with jopt_set_input):");
        for (size_t i = 0; i < jopt_spec_ninputs(spec); i++)
            printf(" %s", jopt_spec_input(spec, i));
        printf("\n");
    }
    if (jopt_spec_nkernels(spec) > 1) {
        printf("\nkernels (jopt_optim_call):");
        for (size_t i = 1; i < jopt_spec_nkernels(spec); i++)
            printf(" %s", jopt_spec_kernel_name(spec, i));
        printf("\n");
    }
    if (jopt_spec_steps_per_group(spec))
        printf("\nsteps are counted per group (t counts the group's steps)\n");
    jopt_kernel_info k;
    if (!rc && jopt_spec_kernel(spec, 0, &k))
        rc = fail("%s", jopt_errmsg(ctx));
    else if (!rc && k.npasses > 1)
        printf("\n%d passes over the data per step (%d sums and maxima: a "
               "stored value depends on them)\n", k.npasses, k.nsums + k.nmaxima);
    jopt_spec_free(spec);
    return rc;
}

/* ---- compile ------------------------------------------------------------- */

static int cmd_compile(jopt_ctx *ctx, const args *a)
{
    const char *what = a->emit ? a->emit : "ir";
    if (strcmp(what, "graph") && strcmp(what, "ir") && strcmp(what, "asm") &&
        strcmp(what, "ptx"))
        return fail("--emit takes graph, ir, asm or ptx, not '%s'", what);
    jopt_spec *spec;
    if (open_spec(ctx, a, &spec))
        return 1;
    const char *text, *method = jopt_spec_method(spec);
    char names[1024];
    kernel_names(spec, names, sizeof names);
    int rc = 1;
    if (method && !a->kernel)
        fail("%s is a closure optimizer (method '%s'): it has vector kernels, "
             "not an update; give --kernel NAME, one of: %s", jopt_spec_name(spec),
             method, names);
    else if (!method && a->kernel)
        fail("%s has an update, not vector kernels: --kernel is for closure "
             "optimizers (specs with a method)", jopt_spec_name(spec));
    else if (a->kernel && !has_kernel(spec, a->kernel))
        fail("%s has no kernel '%s' (its kernels: %s)", jopt_spec_name(spec),
             a->kernel, names);
    else if (jopt_spec_emit(spec, a->kernel, what, &text))
        fail("%s", jopt_errmsg(ctx));
    else
        rc = fputs(text, stdout) < 0;
    jopt_spec_free(spec);
    return rc;
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
static int bench_closure(const args *a, const char *name)
{
    if (a->options[0])
        return fail("%s: bench_closure runs the closure optimizers with its own "
                    "options; drop --set", name);
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
    jopt_spec *spec;
    if (open_spec(ctx, a, &spec)) /* fail early */
        return 1;
    if (jopt_spec_method(spec)) {
        char name[256];
        snprintf(name, sizeof name, "%s", jopt_spec_name(spec));
        jopt_spec_free(spec);
        return bench_closure(a, name);
    }
    jopt_spec_free(spec);
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
