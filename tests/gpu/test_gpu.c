/*
 * test_gpu.c - jopt on a GPU, against jopt on the CPU.
 *
 *   test_gpu ptx     every case's kernels (steady and fresh) as PTX for
 *                    sm_80 and sm_90: IEEE arithmetic only, assembled by
 *                    ptxas ($JOPT_PTXAS, else ptxas on PATH); what the GPU
 *                    back end refuses, refused with the spec's name.  Exit
 *                    77 (skipped) without ptxas.  Needs no GPU.
 *   test_gpu run [K/N]  every case (or every N-th from the K-th) as an
 *                    optimizer on "cuda" against the
 *                    reference interpreter on the CPU: two groups of six
 *                    tensors of odd sizes (one not 16-byte aligned), five
 *                    steps (a gradient absent in one; NaN and infinities in
 *                    the last; per-step hyperparameters changed between
 *                    steps where the case passes them per step), parameters
 *                    after each step and every state at the end, bit for
 *                    bit.  Exit 77 without a CUDA device.  With the fake
 *                    driver (tests/gpu/fake_cuda.c) and JOPT_CUDA_ARCH=sim
 *                    the kernels run on the host, so CI runs it too.
 *   test_gpu api     the rest of the API on a device: streams, zero_grad,
 *                    named kernels, checkpoints between GPU and CPU,
 *                    schedulers, add_param_group, what is refused
 *   test_gpu nodevice   with no device (FAKE_CUDA_DEVICES=0, or no
 *                    driver): clear errors
 *   test_gpu dump SPEC [OPTIONS [ARCH]]   prints a spec's PTX (a tool)
 *
 * The cases are the option sets of tests/test_kernels.c, and four specs
 * written here for what no shipped spec does yet: sums and maxima feeding
 * per-step values and a scalar state; group sums and group states over
 * five levels (clipping by the group's norm, a running d as Prodigy's, a
 * double scalar from a sum); a named kernel and an input; and exp of a
 * sum, which the GPU refuses.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cg.h"
#include "devmem.h"
#include "helpers.h"

/* ---- the cases ------------------------------------------------------------ */

typedef struct tcase {
    const char *spec;    /* a shipped spec, or "@name" for one below */
    const char *options;
    const char *runtime; /* hyperparameters passed per step, or NULL */
} tcase;

static const tcase family[] = {
    {"adadelta", "", NULL}, {"adadelta", "rho=0.5 eps=1e-4 weight_decay=0.1 maximize=true", NULL},
    {"adagrad", "", NULL}, {"adagrad", "lr_decay=0.01 initial_accumulator_value=0.5", NULL},
    {"adagrad", "eps=1e-3 weight_decay=0.1 maximize=true", NULL},
    {"adamax", "", NULL}, {"adamax", "betas=0.8,0.99 weight_decay=0.1 maximize=true", NULL},
    {"asgd", "", NULL}, {"asgd", "lambd=1e-2 alpha=0.5 t0=2", NULL},
    {"asgd", "weight_decay=0.1 maximize=true t0=1", NULL},
    {"nadam", "", NULL}, {"nadam", "momentum_decay=1e-2 weight_decay=0.1", NULL},
    {"nadam", "decoupled_weight_decay=true weight_decay=0.1 maximize=true", NULL},
    {"radam", "lr=0.01", NULL}, {"radam", "betas=0.8,0.9 weight_decay=0.1", NULL},
    {"radam", "decoupled_weight_decay=true weight_decay=0.1 maximize=true", NULL},
    {"rmsprop", "", NULL}, {"rmsprop", "centered=true", NULL}, {"rmsprop", "momentum=0.9", NULL},
    {"rmsprop", "centered=true momentum=0.5 weight_decay=0.1 maximize=true", NULL},
    {"rprop", "", NULL}, {"rprop", "etas=0.3,1.5 step_sizes=1e-4,0.1 maximize=true", NULL},
    {"lion", "", NULL}, {"lion", "betas=0.8,0.95 weight_decay=0.1 maximize=true", NULL},
    {"lamb", "", NULL}, {"lamb", "weight_decay=0.01 maximize=true", NULL},
    {"lamb", "lr=0.01", "lr,betas"},
    {"adam", "lr=0.01", "lr,betas,eps"},
    {"asgd", "lambd=1e-2", "lambd,alpha"},
    {"nadam", "lr=0.01", "lr,betas"},
    {"@reduce", "", NULL}, {"@reduce", "clip=0.5", "lr"},
    {"@group", "", NULL}, {"@group", "max_norm=1e9 beta=0.5", "lr"},
    {"@named", "", NULL}, {"@sums", "", NULL},
    {"adafactor", "", NULL}, {"adafactor", "lr=0.01 weight_decay=0.1 maximize=true", NULL},
};

/* sums and maxima feeding per-step values; min/max and where on them; a
 * scalar state beside them */
static const char reduce_spec[] =
    "-- test spec (tests/gpu/test_gpu.c): sums and maxima\n"
    "return {\n"
    "  doc = 'sums and maxima feeding per-step values',\n"
    "  hyper = { lr = 0.01, clip = 1.0 },\n"
    "  runtime = { 'lr' },\n"
    "  state = { m = 0, k = scalar(1) },\n"
    "  update = function (p, g, s, h, t)\n"
    "    local gmax = maxall(abs(g))\n"
    "    local gn = sqrt(sum(g * g))\n"
    "    local pmax = maxall(p)\n"
    "    local pmin = -maxall(-p)\n"
    "    s.m = lerp(s.m, g, 0.1)\n"
    "    local scale = where(gt(gn, h.clip), h.clip / gn, 1)\n"
    "    s.k = s.k * 0.5 + 1 / t\n"
    "    local w = max(min(pmax, 1), pmin) / (gmax + s.k)\n"
    "    return fma(min(p, 0), w * 1e-3, p - (h.lr * scale) * s.m)\n"
    "  end,\n"
    "}\n";

/* group sums (a norm over the group's tensors, as Adan's clipping) and
 * group states (a running d, as Prodigy's), over five levels; a double
 * scalar from a sum; t counts the group's steps */
static const char group_spec[] =
    "-- test spec (tests/gpu/test_gpu.c): group sums and group states\n"
    "return {\n"
    "  doc = 'clipping by the group norm, a running d',\n"
    "  hyper = { lr = 0.01, max_norm = 0.5, beta = 0.9 },\n"
    "  runtime = { 'lr' },\n"
    "  steps = 'group',\n"
    "  state = { m = 0, d = group(1e-3), num = group(0, 'float'), k = scalar(0, 'double') },\n"
    "  update = function (p, g, s, h, t)\n"
    "    local norm = sqrt(sum(g * g, 'group'))\n"
    "    local clip = min(h.max_norm / (norm + 1e-6), 1)\n"
    "    g = g * clip\n"
    "    s.m = lerp(s.m, g, 1 - h.beta)\n"
    "    local dot = sum(g * s.m)\n"
    "    s.num = s.num * h.beta + sum(abs(s.m), 'group') * s.d\n"
    "    s.d = max(s.d, s.num / (1 + t))\n"
    "    s.k = s.k + dot\n"
    "    return p - (h.lr * s.d) * s.m\n"
    "  end,\n"
    "}\n";

/* a named kernel (as Schedule-Free's eval and train), a state that starts
 * unset, and an input */
static const char named_spec[] =
    "-- test spec (tests/gpu/test_gpu.c): a named kernel and an input\n"
    "return {\n"
    "  doc = 'a named kernel',\n"
    "  hyper = { lr = 0.1 },\n"
    "  inputs = { 'hess' },\n"
    "  state = { z = unset },\n"
    "  update = function (p, g, s, h, t)\n"
    "    local hs = input('hess')\n"
    "    if hs ~= nil then g = fma(hs, 0.25, g) end\n"
    "    if s.z == nil then s.z = p end\n"
    "    s.z = s.z - h.lr * g\n"
    "    return lerp(p, s.z, 0.5)\n"
    "  end,\n"
    "  kernels = { swap = function (p, s, h, t) local z = s.z; s.z = p; return z end },\n"
    "}\n";

/* sums kept in double scalar states, so that their every bit shows (a
 * parameter rounds them to float first) */
static const char sums_spec[] =
    "-- test spec (tests/gpu/test_gpu.c): sums in double state\n"
    "return {\n"
    "  doc = 'sums in double state',\n"
    "  hyper = { lr = 1e-3 },\n"
    "  state = { a = scalar(0, 'double'), b = scalar(0, 'double'), c = scalar(0, 'double') },\n"
    "  update = function (p, g, s, h, t)\n"
    "    s.a = s.a + sum(g)\n"
    "    s.b = s.b + sum(g * g) / t\n"
    "    s.c = sum(abs(g), 'group') + maxall(g)\n"
    "    return p - h.lr * g\n"
    "  end,\n"
    "}\n";

/* refused on the GPU: exp of a value that depends on a sum */
static const char exp_spec[] =
    "return { doc = 'refused on the GPU', hyper = { lr = 0.1 }, state = {},\n"
    "  update = function (p, g, s, h, t)\n"
    "    return p - (h.lr * exp(-sum(g * g))) * g end }\n";

#define MAXCASES 160
static tcase cases[MAXCASES];
static char case_text[MAXCASES][256];
static size_t ncases;
static char specdir[64];

static void add_case(const char *spec, const char *options, const char *runtime)
{
    size_t i = ncases++;
    snprintf(case_text[i], sizeof case_text[0], "%s", options);
    cases[i] = (tcase){spec, case_text[i], runtime};
}

/* the option sets of tests/test_kernels.c, then the family's */
static void build_cases(void)
{
    static const char *const momentum[] = {"momentum=0", "momentum=0.9 dampening=0",
                                           "momentum=0.9 dampening=0.1",
                                           "momentum=0.9 nesterov=true"};
    char o[256];
    ncases = 0;
    for (int m = 0; m < 4; m++)
        for (int wd = 0; wd < 2; wd++)
            for (int max = 0; max < 2; max++) {
                snprintf(o, sizeof o, "lr=0.05 %s weight_decay=%s maximize=%s", momentum[m],
                         wd ? "0.01" : "0", max ? "true" : "false");
                add_case("sgd", o, NULL);
            }
    for (int bits = 0; bits < 16; bits++) {
        snprintf(o, sizeof o, "lr=0.01 betas=0.8,0.99 weight_decay=%s amsgrad=%s "
                 "maximize=%s decoupled_weight_decay=%s", bits & 1 ? "0.1" : "0",
                 bits & 2 ? "true" : "false", bits & 4 ? "true" : "false",
                 bits & 8 ? "true" : "false");
        add_case("adam", o, NULL);
    }
    for (int bits = 0; bits < 8; bits++) {
        snprintf(o, sizeof o, "weight_decay=%s amsgrad=%s maximize=%s",
                 bits & 1 ? "0.05" : "0", bits & 2 ? "true" : "false",
                 bits & 4 ? "true" : "false");
        add_case("adamw", o, NULL);
    }
    for (size_t i = 0; i < sizeof family / sizeof family[0]; i++)
        add_case(family[i].spec, family[i].options, family[i].runtime);
}

/* the test specs as files in a temporary folder; a case's spec as
 * jopt_optim_new takes it */
static void write_specs(void)
{
    static const struct { const char *name, *text; } specs[] = {
        {"reduce", reduce_spec}, {"group", group_spec}, {"named", named_spec},
        {"exp", exp_spec}, {"sums", sums_spec}};
    snprintf(specdir, sizeof specdir, "/tmp/jopt_gpu_specs_XXXXXX");
    assert_non_null(mkdtemp(specdir));
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s.lua", specdir, specs[i].name);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(specs[i].text, f);
        fclose(f);
    }
}

static void remove_specs(void)
{
    const char *names[] = {"reduce", "group", "named", "exp", "sums"};
    for (size_t i = 0; i < 5; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s.lua", specdir, names[i]);
        unlink(path);
    }
    rmdir(specdir);
}

static const char *spec_of(const char *spec, char *buf, size_t len)
{
    if (spec[0] != '@')
        return spec;
    snprintf(buf, len, "%s/%s.lua", specdir, spec + 1);
    return buf;
}

static void case_name(const tcase *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s \"%s\"%s%s", c->spec, c->options, c->runtime ? " runtime=" : "",
             c->runtime ? c->runtime : "");
}

static jopt_ctx *new_ctx(void)
{
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    char path[4200];
    snprintf(path, sizeof path, "%s/specs", JOPT_SOURCE_DIR);
    const char *env = getenv("JOPT_SPEC_PATH");
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, env && *env ? env : path));
    return ctx;
}

/* ---- ptx: IEEE arithmetic only, and ptxas takes it ------------------------ */

/* add/sub/mul without a rounding mode (ptxas may fuse those into fma),
 * flushing, approximate or fast division and sqrt, transcendental ops,
 * other rounding modes (rcp.rn.f32 is the correctly rounded 1/x) */
static const char *bad_ptx(const char *ptx)
{
    static const char *const bad[] = {
        "add.f32", "sub.f32", "mul.f32", "add.f64", "sub.f64", "mul.f64", "mad.",
        ".ftz", ".approx", "div.full", "rsqrt", "ex2.", "lg2.", "sin.", "cos.",
        ".rz.", ".rm.", ".rp.", ".sat"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (strstr(ptx, bad[i]))
            return bad[i];
    return NULL;
}

static char ptxas[4096];

static int find_ptxas(void)
{
    const char *env = getenv("JOPT_PTXAS");
    if (env && *env) {
        snprintf(ptxas, sizeof ptxas, "%s", env);
        return access(ptxas, X_OK) == 0;
    }
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) {
        size_t len = strcspn(p, ":");
        snprintf(ptxas, sizeof ptxas, "%.*s/ptxas", (int)len, p);
        if (len && access(ptxas, X_OK) == 0)
            return 1;
        p += len + (p[len] == ':');
    }
    return 0;
}

/* ptxas -arch=ARCH on the text: 0 when it assembles, else its output */
static int assemble(const char *text, const char *arch, char *out, size_t outlen)
{
    char file[] = "/tmp/jopt_ptx_XXXXXX";
    int fd = mkstemp(file);
    if (fd < 0) {
        snprintf(out, outlen, "mkstemp failed");
        return -1;
    }
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "'%s' -arch=%s -o /dev/null %s 2>&1", ptxas, arch, file);
    FILE *pipe = popen(cmd, "r");
    size_t n = pipe ? fread(out, 1, outlen - 1, pipe) : 0;
    out[n] = 0;
    int status = pipe ? pclose(pipe) : -1;
    unlink(file);
    return status;
}

/* a case's kernel (fresh or steady) for arch, through the kernel cache */
typedef struct tspec {
    cg_spec *spec;
    double *values;
    uint8_t *runtime;
} tspec;

static int open_case(const tcase *c, tspec *t, char *err)
{
    memset(t, 0, sizeof *t);
    char buf[256], dir[4200];
    const char *env = getenv("JOPT_SPEC_PATH");
    snprintf(dir, sizeof dir, "%s/specs", JOPT_SOURCE_DIR);
    if (env && *env)
        snprintf(dir, sizeof dir, "%.*s", (int)strcspn(env, ":"), env);
    const char *d = dir;
    int rc = cg_spec_load(&d, 1, spec_of(c->spec, buf, sizeof buf), &t->spec, err);
    if (rc)
        return rc;
    size_t nv = cg_spec_nvalues(t->spec), nh = cg_spec_nhyper(t->spec);
    t->values = malloc((nv + 1) * sizeof *t->values);
    t->runtime = calloc(nh + 1, 1);
    memcpy(t->values, cg_spec_defaults(t->spec), nv * sizeof *t->values);
    if ((rc = cg_options_parse(t->spec, c->options, t->values, err)))
        return rc;
    for (const char *r = c->runtime; r && *r;) {
        size_t len = strcspn(r, ",");
        for (size_t i = 0; i < nh; i++)
            if (strlen(cg_spec_hyper(t->spec, i)->name) == len &&
                !strncmp(cg_spec_hyper(t->spec, i)->name, r, len))
                t->runtime[i] = 1;
        r += len + (r[len] == ',');
    }
    return JOPT_OK;
}

static void close_case(tspec *t)
{
    free(t->values);
    free(t->runtime);
    cg_spec_free(t->spec);
}

static void test_gpu_ptx_assembles(void **state)
{
    (void)state;
    static const char *const archs[] = {"sm_80", "sm_90"};
    char err[CG_ERRLEN], name[512], out[8192];
    int failures = 0, modules = 0;
    cg_jit *jit;
    assert_int_equal(cg_jit_new(&jit, err), JOPT_OK);
    for (size_t i = 0; i < ncases; i++) {
        tspec t;
        case_name(&cases[i], name, sizeof name);
        if (open_case(&cases[i], &t, err)) {
            print_error("%s: %s\n", name, err);
            failures++;
            close_case(&t);
            continue;
        }
        for (int fresh = 0; fresh < 2; fresh++)
            for (int a = 0; a < 2; a++) {
                cg_request req = {.spec = t.spec, .values = t.values, .runtime = t.runtime,
                                  .fresh = fresh, .rank = 1, .arch = archs[a],
                                  .inputs = !strcmp(cases[i].spec, "@named")};
                cg_kernel *k;
                if (cg_kernel_get(jit, &req, &k, err)) {
                    print_error("%s (%s%s): %s\n", name, archs[a], fresh ? ", fresh" : "", err);
                    failures++;
                    continue;
                }
                if (fresh && !cg_kernel_layout(k)->has_unset) {
                    cg_kernel_release(k); /* no fresh variant: the same kernel */
                    continue;
                }
                const cg_gpu_info *g = cg_kernel_gpu(k);
                const char *bad = bad_ptx(g->text);
                if (bad) {
                    print_error("%s (%s): the PTX has '%s'\n", name, archs[a], bad);
                    failures++;
                } else if (assemble(g->text, archs[a], out, sizeof out)) {
                    print_error("%s (%s): ptxas: %s\n", name, archs[a], out);
                    failures++;
                }
                modules++;
                cg_kernel_release(k);
            }
        close_case(&t);
    }
    print_message("%d modules (%zu cases, steady and fresh, sm_80 and sm_90) assembled "
                  "by %s\n", modules, ncases, ptxas);
    cg_jit_free(jit);
    assert_int_equal(failures, 0);
}

/* what the GPU back end cannot run is refused when the optimizer is made
 * (here through cg.h, which needs no device), naming the spec and why */
static void expect_refused_as(cg_jit *jit, const char *spec, const char *options,
                              uint8_t dtype, const int64_t *shape, const char *want)
{
    char err[CG_ERRLEN], name[256];
    tcase c = {spec, options, NULL};
    tspec t;
    case_name(&c, name, sizeof name);
    assert_int_equal(open_case(&c, &t, err), JOPT_OK);
    cg_request req = {.spec = t.spec, .values = t.values, .rank = 2, .arch = "sm_90",
                      .dtype = dtype, .shape = shape};
    cg_kernel *k = NULL;
    int rc = cg_kernel_get(jit, &req, &k, err);
    if (rc != JOPT_EDEVICE || !strstr(err, want))
        fail_msg("%s: status %d, \"%s\" (want JOPT_EDEVICE and \"%s\")", name, rc, err, want);
    close_case(&t);
}

static void expect_refused(cg_jit *jit, const char *spec, const char *options,
                           const char *want)
{
    expect_refused_as(jit, spec, options, CG_DT_F32, NULL, want);
}

static void test_gpu_refuses(void **state)
{
    (void)state;
    char err[CG_ERRLEN];
    cg_jit *jit;
    assert_int_equal(cg_jit_new(&jit, err), JOPT_OK);
    expect_refused(jit, "adafactor", "", "adafactor.lua: per-row or per-column values");
    expect_refused(jit, "@exp", "", "exp.lua:3: exp of a value that depends on a sum");
    /* what the CPU runs and the GPU does not yet: 16-bit arrays, atan2,
     * matrix products */
    expect_refused_as(jit, "adam", "", CG_DT_BF16, NULL, "bfloat16 and float16 arrays "
                      "do not run on the GPU");
    expect_refused(jit, "prodigy", "eps=None", "atan2 does not run on the GPU");
    static const int64_t shape[2] = {8, 8};
    expect_refused_as(jit, "muon", "", CG_DT_F32, shape, "matrix products (matmul) "
                      "do not run on the GPU");
    cg_jit_free(jit);
}

/* ---- run: the GPU against the CPU ------------------------------------------ */

#define NT 6
static const int64_t sizes[NT] = {1, 17, 4099, 65553, 131072, 20000};
static const int misalign[NT] = {0, 0, 1, 0, 0, 0}; /* floats off 16-byte alignment */
#define NSTEPS 5

static uint64_t rng = 88172645463325252ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static int same_bits(float a, float b)
{
    return (isnan(a) && isnan(b)) || !memcmp(&a, &b, sizeof a);
}

/* the first difference of n floats, or -1 */
static int64_t first_diff(const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!same_bits(a[i], b[i]))
            return i;
    return -1;
}

typedef struct side {
    jopt_ctx *ctx;
    jopt_optim *opt;
    float *p[NT], *g[NT], *in[NT]; /* device or host */
    void *mem[NT][3];              /* allocations (device: misaligned inside) */
} side;

static void *side_alloc(int dev, size_t bytes)
{
    void *p = dev ? dm_alloc(bytes) : malloc(bytes);
    assert_non_null(p);
    return p;
}

static void side_put(int dev, float *dst, const float *src, int64_t n)
{
    if (dev)
        assert_int_equal(dm_put(dst, src, (size_t)n * sizeof(float)), 0);
    else
        memcpy(dst, src, (size_t)n * sizeof(float));
}

static void side_get(int dev, float *dst, const float *src, int64_t n)
{
    if (dev)
        assert_int_equal(dm_get(dst, src, (size_t)n * sizeof(float)), 0);
    else
        memcpy(dst, src, (size_t)n * sizeof(float));
}

/* an optimizer over two groups (tensors 0-3, 4-5) on the GPU or the CPU
 * (the reference engine) */
static int side_new(side *s, int dev, const tcase *c, const float *const *p0, char *err)
{
    memset(s, 0, sizeof *s);
    s->ctx = new_ctx();
    if (dev)
        T_OK(s->ctx, jopt_ctx_set_device(s->ctx, "cuda"));
    else
        T_OK(s->ctx, jopt_ctx_set_engine(s->ctx, JOPT_ENGINE_REFERENCE));
    jopt_param params[NT];
    for (int i = 0; i < NT; i++) {
        for (int k = 0; k < 3; k++)
            s->mem[i][k] = side_alloc(dev, (size_t)(sizes[i] + 4) * sizeof(float));
        s->p[i] = (float *)s->mem[i][0] + misalign[i];
        s->g[i] = (float *)s->mem[i][1] + misalign[i];
        s->in[i] = (float *)s->mem[i][2] + misalign[i];
        side_put(dev, s->p[i], p0[i], sizes[i]);
        params[i] = (jopt_param){s->p[i], s->g[i], sizes[i]};
    }
    jopt_group groups[2] = {{params, 4, NULL}, {params + 4, 2, NULL}};
    char buf[256];
    int rc = jopt_optim_new(s->ctx, spec_of(c->spec, buf, sizeof buf), groups, 2,
                            c->options, &s->opt);
    if (rc) {
        snprintf(err, CG_ERRLEN, "%s", jopt_errmsg(s->ctx));
        return rc;
    }
    for (const char *r = c->runtime; r && *r;) {
        char name[64];
        size_t len = strcspn(r, ",");
        snprintf(name, sizeof name, "%.*s", (int)len, r);
        for (size_t gi = 0; gi < 2; gi++)
            T_OK(s->ctx, jopt_option_runtime(s->opt, gi, name));
        r += len + (r[len] == ',');
    }
    return JOPT_OK;
}

static void side_free(side *s, int dev)
{
    jopt_optim_free(s->opt);
    jopt_ctx_free(s->ctx);
    for (int i = 0; i < NT; i++)
        for (int k = 0; k < 3; k++) {
            if (dev)
                dm_free(s->mem[i][k]);
            else
                free(s->mem[i][k]);
        }
}

/* a state of parameter i: the GPU's (copied) against the CPU's */
static int compare_state(side *gpu, side *cpu, const char *name, int64_t *at, float *a,
                         float *b)
{
    size_t gi = 0, pi = 0;
    for (size_t g = 0, k = 0; g < 2; g++)
        for (size_t i = 0; i < (g ? 2u : 4u); i++, k++)
            if (k == (size_t)*at) {
                gi = g;
                pi = i;
            }
    const float *cd;
    int64_t n = 0, gn = 0;
    T_OK(cpu->ctx, jopt_state_get(cpu->opt, gi, pi, name, &cd, NULL));
    T_OK(cpu->ctx, jopt_state_numel(cpu->opt, gi, pi, name, &n));
    T_OK(gpu->ctx, jopt_state_numel(gpu->opt, gi, pi, name, &gn));
    if (n != gn)
        return 1;
    if (!n)
        return 0;
    T_OK(gpu->ctx, jopt_state_copy(gpu->opt, gi, pi, name, a, n));
    memcpy(b, cd, (size_t)n * sizeof(float));
    *at = first_diff(a, b, n);
    return *at >= 0;
}

/* every state of every parameter, and the group states: 0 when the same */
static int compare_states(side *s, const tcase *c, int step, float *host, float *other,
                          char *why, size_t whylen)
{
    jopt_spec *sp;
    char buf[256];
    int bad = 0;
    T_OK(s[1].ctx, jopt_spec_open(s[1].ctx, spec_of(c->spec, buf, sizeof buf), c->options, &sp));
    size_t ns = jopt_spec_nstate(sp);
    for (size_t k = 0; k < ns && !bad; k++) {
        jopt_state_info si;
        T_OK(s[1].ctx, jopt_spec_state(sp, k, &si));
        if (si.kind == JOPT_STATE_GROUP) {
            for (size_t gi = 0; gi < 2 && !bad; gi++) {
                double a, b;
                T_OK(s[0].ctx, jopt_group_state(s[0].opt, gi, si.name, &a));
                T_OK(s[1].ctx, jopt_group_state(s[1].opt, gi, si.name, &b));
                if (memcmp(&a, &b, sizeof a) && !(isnan(a) && isnan(b))) {
                    snprintf(why, whylen, "step %d: group %zu state '%s': GPU %a, CPU %a",
                             step, gi, si.name, a, b);
                    bad = 1;
                }
            }
            continue;
        }
        for (int64_t i = 0; i < NT && !bad; i++) {
            int64_t at = i;
            if (compare_state(&s[0], &s[1], si.name, &at, host, other)) {
                snprintf(why, whylen, "step %d: parameter %lld state '%s' element %lld: "
                         "GPU %a, CPU %a", step, (long long)i, si.name, (long long)at,
                         at >= 0 ? host[at] : 0.0f, at >= 0 ? other[at] : 0.0f);
                bad = 1;
            }
        }
    }
    jopt_spec_free(sp);
    return bad;
}

/* one case: NSTEPS steps on both sides; 0 when the same bits */
static int run_case(const tcase *c, char *why, size_t whylen)
{
    char err[CG_ERRLEN];
    float *p0[NT], *host = malloc(200000 * sizeof(float)), *other = malloc(200000 * sizeof(float));
    assert_non_null(host);
    assert_non_null(other);
    for (int i = 0; i < NT; i++) {
        p0[i] = malloc((size_t)sizes[i] * sizeof(float));
        for (int64_t e = 0; e < sizes[i]; e++)
            p0[i][e] = frand();
    }
    side s[2]; /* 0: the GPU, 1: the CPU */
    int rc = side_new(&s[0], 1, c, (const float *const *)p0, err);
    if (rc == JOPT_OK)
        rc = side_new(&s[1], 0, c, (const float *const *)p0, err);
    int bad = 0;
    if (rc) {
        snprintf(why, whylen, "construction: %.900s", err);
        bad = 1;
    }
    int named = !strcmp(c->spec, "@named");
    for (int step = 0; step < NSTEPS && !bad; step++) {
        for (int i = 0; i < NT; i++) {
            for (int64_t e = 0; e < sizes[i]; e++) {
                /* tensors 3 and 4 over 60 binades: their sums in double
                 * are inexact, so every order of addition shows */
                host[e] = frand() * (i == 3 || i == 4 ? ldexpf(1.0f, (int)(e * 7 % 61) - 30)
                                                      : 0.1f);
                if (step == NSTEPS - 1 && e % 101 == 7) /* the last: NaN, inf */
                    host[e] = e % 3 ? INFINITY : e % 2 ? -INFINITY : NAN;
            }
            int absent = step == 1 && i == 1; /* a gradient absent this step */
            for (int d = 0; d < 2; d++) {
                side_put(!d, s[d].g[i], host, sizes[i]);
                T_OK(s[d].ctx, jopt_set_grad(s[d].opt, i < 4 ? 0 : 1, i < 4 ? (size_t)i : (size_t)i - 4,
                                             absent ? NULL : s[d].g[i]));
                if (named && step % 2) { /* an input, some steps */
                    side_put(!d, s[d].in[i], host, sizes[i]);
                    T_OK(s[d].ctx, jopt_set_input(s[d].opt, i < 4 ? 0 : 1,
                                                  i < 4 ? (size_t)i : (size_t)i - 4, "hess",
                                                  s[d].in[i]));
                }
            }
        }
        if (c->runtime && step >= 2) /* as a scheduler would */
            for (int d = 0; d < 2; d++)
                for (size_t gi = 0; gi < 2; gi++) {
                    double lr;
                    const char *h = !strncmp(c->runtime, "lambd", 5) ? "lambd" : "lr";
                    T_OK(s[d].ctx, jopt_option_get(s[d].opt, gi, h, &lr));
                    T_OK(s[d].ctx, jopt_option_set(s[d].opt, gi, h, lr * 0.5));
                }
        for (int d = 0; d < 2 && !bad; d++)
            if (jopt_step(s[d].opt, NULL, NULL, NULL)) {
                snprintf(why, whylen, "step %d on %s: %s", step + 1, d ? "the CPU" : "the GPU",
                         jopt_errmsg(s[d].ctx));
                bad = 1;
            }
        if (named && step == 2 && !bad)
            for (int d = 0; d < 2; d++)
                T_OK(s[d].ctx, jopt_optim_call(s[d].opt, "swap"));
        if (!bad)
            bad = compare_states(s, c, step + 1, host, other, why, whylen);
        for (int i = 0; i < NT && !bad; i++) {
            side_get(1, host, s[0].p[i], sizes[i]);
            int64_t at = first_diff(host, s[1].p[i], sizes[i]);
            if (at >= 0) {
                snprintf(why, whylen, "step %d: parameter %d element %lld: GPU %a, CPU %a",
                         step + 1, i, (long long)at, host[at], s[1].p[i][at]);
                bad = 1;
            }
        }
    }
    if (s[0].opt || s[0].ctx)
        side_free(&s[0], 1);
    if (s[1].opt || s[1].ctx)
        side_free(&s[1], 0);
    for (int i = 0; i < NT; i++)
        free(p0[i]);
    free(host);
    free(other);
    return bad;
}

static size_t shard = 0, shards = 1; /* run K/N: the cases i with i % N == K */

static void test_gpu_matches_cpu(void **state)
{
    (void)state;
    char name[512], why[2048];
    int failures = 0;
    const char *only = getenv("TEST_GPU_ONLY"); /* a spec name: its cases */
    size_t ran = 0;
    for (size_t i = 0; i < ncases; i++) {
        if ((only && *only && strcmp(cases[i].spec, only)) || i % shards != shard)
            continue;
        ran++;
        case_name(&cases[i], name, sizeof name);
        why[0] = 0;
        if (run_case(&cases[i], why, sizeof why)) {
            print_error("DIFFERS: %s: %s\n", name, why);
            failures++;
        } else {
            print_message("same bits: %s (%d steps, %d tensors in 2 groups)\n", name,
                          NSTEPS, NT);
        }
    }
    print_message("%zu cases on the GPU against the CPU: %d differ\n", ran, failures);
    assert_int_equal(failures, 0);
}

/* ---- api ------------------------------------------------------------------ */

typedef struct small {
    jopt_ctx *ctx;
    jopt_optim *opt;
    float *p, *g; /* device */
    int64_t n;
} small;

static void small_new(small *m, const char *spec, const char *options, int64_t n)
{
    m->ctx = new_ctx();
    T_OK(m->ctx, jopt_ctx_set_device(m->ctx, "cuda:0"));
    m->n = n;
    m->p = dm_alloc((size_t)n * sizeof(float));
    m->g = dm_alloc((size_t)n * sizeof(float));
    float *h = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        h[i] = (float)i / (float)n;
    dm_put(m->p, h, (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        h[i] = 0.5f;
    dm_put(m->g, h, (size_t)n * sizeof(float));
    free(h);
    jopt_param prm = {m->p, m->g, n};
    jopt_group grp = {&prm, 1, NULL};
    T_OK(m->ctx, jopt_optim_new(m->ctx, spec, &grp, 1, options, &m->opt));
}

static void small_free(small *m)
{
    jopt_optim_free(m->opt);
    jopt_ctx_free(m->ctx);
    dm_free(m->p);
    dm_free(m->g);
}

static void test_gpu_api_basics(void **state)
{
    (void)state;
    small m;
    small_new(&m, "adam", "lr=0.1", 1000);
    assert_string_equal(jopt_optim_device(m.opt), "cuda:0");
    T_OK(m.ctx, jopt_set_stream(m.opt, NULL));
    T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
    T_OK(m.ctx, jopt_synchronize(m.opt));
    const float *dev;
    int64_t step, n;
    T_OK(m.ctx, jopt_state_get(m.opt, 0, 0, "exp_avg", &dev, &step));
    assert_non_null(dev);
    assert_int_equal(step, 1);
    T_OK(m.ctx, jopt_state_numel(m.opt, 0, 0, "exp_avg", &n));
    assert_int_equal(n, 1000);
    float m1[1000];
    T_OK(m.ctx, jopt_state_copy(m.opt, 0, 0, "exp_avg", m1, 1000));
    assert_true(m1[10] == 0.5f * 0.1f);          /* lerp(0, 0.5, 0.1): exact */
    assert_int_equal(jopt_state_copy(m.opt, 0, 0, "exp_avg", m1, 999), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(m.ctx), "holds 1000 floats"));
    /* a step with no gradient present changes nothing */
    float before[1000], after[1000];
    dm_get(before, m.p, sizeof before);
    T_OK(m.ctx, jopt_set_grad(m.opt, 0, 0, NULL));
    T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
    dm_get(after, m.p, sizeof after);
    assert_memory_equal(before, after, sizeof before);
    T_OK(m.ctx, jopt_state_get(m.opt, 0, 0, "exp_avg", &dev, &step));
    assert_int_equal(step, 1);
    T_OK(m.ctx, jopt_set_grad(m.opt, 0, 0, m.g));
    /* zero_grad on the device */
    T_OK(m.ctx, jopt_zero_grad(m.opt));
    float g[1000];
    dm_get(g, m.g, sizeof g);
    assert_true(g[0] == 0 && g[999] == 0);
    /* a host pointer is refused */
    float hostbuf[1000];
    assert_int_equal(jopt_set_grad(m.opt, 0, 0, hostbuf), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(m.ctx), "grad is not memory of cuda:0"));
    small_free(&m);
    /* a CPU optimizer has no stream */
    jopt_ctx *ctx = new_ctx();
    float p[4] = {0}, gg[4] = {0};
    jopt_param prm = {p, gg, 4};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *cpu;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, "lr=0.1", &cpu));
    assert_string_equal(jopt_optim_device(cpu), "cpu");
    assert_int_equal(jopt_set_stream(cpu, NULL), JOPT_EINVAL);
    T_OK(ctx, jopt_synchronize(cpu));
    /* a GPU optimizer refuses host memory */
    T_OK(ctx, jopt_ctx_set_device(ctx, "cuda"));
    jopt_optim *bad = NULL;
    assert_int_equal(jopt_optim_new(ctx, "sgd", &grp, 1, "lr=0.1", &bad), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "param is not memory of cuda:0"));
    assert_int_equal(jopt_ctx_set_device(ctx, "gpu"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "unknown device 'gpu'"));
    assert_int_equal(jopt_ctx_set_device(ctx, "cuda:7"), JOPT_EDEVICE);
    assert_non_null(strstr(jopt_errmsg(ctx), "no device 7"));
    jopt_optim_free(cpu);
    jopt_ctx_free(ctx);
}

/* steps on streams that change between steps give the bits of steps on
 * one stream: the new stream waits for the old */
static void test_gpu_api_streams(void **state)
{
    (void)state;
    small a, b;
    small_new(&a, "lamb", "lr=0.01", 200000);
    small_new(&b, "lamb", "lr=0.01", 200000);
    void *s1 = dm_stream(), *s2 = dm_stream();
    assert_non_null(s1);
    assert_non_null(s2);
    for (int i = 0; i < 6; i++) {
        T_OK(a.ctx, jopt_set_stream(a.opt, i % 3 == 2 ? NULL : i % 2 ? s1 : s2));
        T_OK(a.ctx, jopt_step(a.opt, NULL, NULL, NULL));
        T_OK(b.ctx, jopt_step(b.opt, NULL, NULL, NULL));
    }
    T_OK(a.ctx, jopt_synchronize(a.opt));
    float *x = malloc(200000 * sizeof(float)), *y = malloc(200000 * sizeof(float));
    dm_get(x, a.p, 200000 * sizeof(float));
    dm_get(y, b.p, 200000 * sizeof(float));
    assert_int_equal(first_diff(x, y, 200000), -1);
    free(x);
    free(y);
    small_free(&a);
    small_free(&b);
}

/* sums added in order over many chunks (one tensor of 33 chunks) and many
 * tensors (a group of 41), where the GPU loads them 32 at a time */
static void test_gpu_api_long_sums(void **state)
{
    (void)state;
    enum { NTENS = 41 };
    const int64_t big = 33 * 65536 + 5;
    char buf[256];
    jopt_ctx *ctx[2];
    jopt_optim *opt[2];
    float *p[2][NTENS], *g[2][NTENS];
    jopt_param params[2][NTENS];
    float *host = malloc((size_t)big * sizeof(float)), *other = malloc((size_t)big * sizeof(float));
    for (int d = 0; d < 2; d++) {
        ctx[d] = new_ctx();
        if (d == 0)
            T_OK(ctx[d], jopt_ctx_set_device(ctx[d], "cuda"));
        else
            T_OK(ctx[d], jopt_ctx_set_engine(ctx[d], JOPT_ENGINE_REFERENCE));
        rng = 12345;
        for (int i = 0; i < NTENS; i++) {
            int64_t n = i ? 100 : big;
            for (int64_t e = 0; e < n; e++)
                host[e] = frand() * ldexpf(1.0f, (int)(e * 7 % 61) - 30);
            p[d][i] = side_alloc(!d, (size_t)n * sizeof(float));
            g[d][i] = side_alloc(!d, (size_t)n * sizeof(float));
            side_put(!d, p[d][i], host, n);
            side_put(!d, g[d][i], host, n);
            params[d][i] = (jopt_param){p[d][i], g[d][i], n};
        }
        jopt_group grp = {params[d], NTENS, NULL};
        T_OK(ctx[d], jopt_optim_new(ctx[d], spec_of("@sums", buf, sizeof buf), &grp, 1, NULL,
                                    &opt[d]));
        for (int k = 0; k < 2; k++)
            T_OK(ctx[d], jopt_step(opt[d], NULL, NULL, NULL));
    }
    static const char *const names[] = {"a", "b", "c"};
    for (int i = 0; i < NTENS; i++) {
        int64_t n = i ? 100 : big;
        side_get(1, host, p[0][i], n);
        assert_int_equal(first_diff(host, p[1][i], n), -1);
        for (int k = 0; k < 3; k++) {
            double a, b;
            T_OK(ctx[0], jopt_state_scalar(opt[0], 0, (size_t)i, names[k], &a));
            T_OK(ctx[1], jopt_state_scalar(opt[1], 0, (size_t)i, names[k], &b));
            if (memcmp(&a, &b, sizeof a))
                fail_msg("tensor %d state %s: GPU %a, CPU %a", i, names[k], a, b);
        }
    }
    for (int d = 0; d < 2; d++) {
        jopt_optim_free(opt[d]);
        jopt_ctx_free(ctx[d]);
        for (int i = 0; i < NTENS; i++) {
            if (d) {
                free(p[d][i]);
                free(g[d][i]);
            } else {
                dm_free(p[d][i]);
                dm_free(g[d][i]);
            }
        }
    }
    free(host);
    free(other);
}

static void test_gpu_api_refusals(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    T_OK(ctx, jopt_ctx_set_device(ctx, "cuda"));
    float *p = dm_alloc(64 * sizeof(float)), *g = dm_alloc(64 * sizeof(float));
    jopt_param prm = {p, g, 64};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *opt = NULL;
    assert_int_equal(jopt_optim_new(ctx, "lbfgs", &grp, 1, NULL, &opt), JOPT_EDEVICE);
    assert_non_null(strstr(jopt_errmsg(ctx), "closure optimizer"));
    /* Adafactor on a vector runs; on a matrix its row and column state
     * does not (yet), and the step says so, changing nothing */
    T_OK(ctx, jopt_optim_new(ctx, "adafactor", &grp, 1, NULL, &opt));
    int64_t shape[2] = {8, 8};
    T_OK(ctx, jopt_set_shape(opt, 0, 0, 2, shape));
    assert_int_equal(jopt_step(opt, NULL, NULL, NULL), JOPT_EDEVICE);
    assert_non_null(strstr(jopt_errmsg(ctx), "adafactor.lua: per-row or per-column values"));
    const float *none;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "row_var", &none, NULL));
    assert_null(none);
    jopt_optim_free(opt);
    opt = NULL;
    T_OK(ctx, jopt_ctx_set_engine(ctx, JOPT_ENGINE_REFERENCE));
    assert_int_equal(jopt_optim_new(ctx, "adam", &grp, 1, NULL, &opt), JOPT_EDEVICE);
    assert_non_null(strstr(jopt_errmsg(ctx), "reference engine runs on the CPU only"));
    assert_null(opt);
    jopt_ctx_free(ctx);
    dm_free(p);
    dm_free(g);
}

/* a checkpoint of a GPU optimizer loads into a CPU one and back, and
 * stepping on gives the same bits on both; a cosine schedule runs
 * unchanged on the GPU (lr passed per step: one kernel) */
static void test_gpu_api_checkpoint_and_schedule(void **state)
{
    (void)state;
    const int64_t n = 70001;
    small m;
    small_new(&m, "lamb", "lr=0.01 weight_decay=0.1", n);
    jopt_sched *sched;
    T_OK(m.ctx, jopt_sched_new(m.opt, "cosine", "T_max=10", &sched));
    size_t compiles0;
    jopt_ctx_stats(m.ctx, &compiles0, NULL);
    for (int i = 0; i < 3; i++) {
        T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
        T_OK(m.ctx, jopt_sched_step(sched));
    }
    size_t compiles;
    jopt_ctx_stats(m.ctx, &compiles, NULL);
    assert_true(compiles <= compiles0 + 1); /* lr became a per-step value once */
    size_t len;
    T_OK(m.ctx, jopt_state_size(m.opt, &len));
    void *ck = malloc(len);
    T_OK(m.ctx, jopt_state_save_mem(m.opt, ck, len, &len));
    /* the same on the CPU from the checkpoint */
    jopt_ctx *cctx = new_ctx();
    float *cp = malloc((size_t)n * sizeof(float)), *cg = malloc((size_t)n * sizeof(float));
    float *gp = malloc((size_t)n * sizeof(float));
    dm_get(cp, m.p, (size_t)n * sizeof(float));
    dm_get(cg, m.g, (size_t)n * sizeof(float));
    jopt_param prm = {cp, cg, n};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *cpu;
    T_OK(cctx, jopt_optim_new(cctx, "lamb", &grp, 1, "lr=0.01 weight_decay=0.1", &cpu));
    T_OK(cctx, jopt_state_load_mem(cpu, ck, len));
    /* and the checkpoint back into the GPU optimizer (a no-op, checked) */
    T_OK(m.ctx, jopt_state_load_mem(m.opt, ck, len));
    for (int i = 0; i < 2; i++) {
        T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
        T_OK(cctx, jopt_step(cpu, NULL, NULL, NULL));
    }
    dm_get(gp, m.p, (size_t)n * sizeof(float));
    assert_int_equal(first_diff(gp, cp, n), -1);
    float *gs = malloc((size_t)n * sizeof(float));
    const float *cs;
    T_OK(m.ctx, jopt_state_copy(m.opt, 0, 0, "exp_avg_sq", gs, n));
    T_OK(cctx, jopt_state_get(cpu, 0, 0, "exp_avg_sq", &cs, NULL));
    assert_int_equal(first_diff(gs, cs, n), -1);
    /* a CPU checkpoint into the GPU optimizer */
    T_OK(cctx, jopt_state_save_mem(cpu, ck, len, &len));
    T_OK(m.ctx, jopt_state_load_mem(m.opt, ck, len));
    dm_put(m.p, cp, (size_t)n * sizeof(float));
    T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
    T_OK(cctx, jopt_step(cpu, NULL, NULL, NULL));
    dm_get(gp, m.p, (size_t)n * sizeof(float));
    assert_int_equal(first_diff(gp, cp, n), -1);
    jopt_sched_free(sched);
    jopt_optim_free(cpu);
    jopt_ctx_free(cctx);
    small_free(&m);
    free(ck);
    free(cp);
    free(cg);
    free(gp);
    free(gs);
}

/* groups added later; ASGD's scalar states read back as scalars */
static void test_gpu_api_groups_and_scalars(void **state)
{
    (void)state;
    small m;
    small_new(&m, "asgd", "lr=0.1", 300);
    float *p2 = dm_alloc(50 * sizeof(float)), *g2 = dm_alloc(50 * sizeof(float));
    float h[50];
    for (int i = 0; i < 50; i++)
        h[i] = 1.0f;
    dm_put(p2, h, sizeof h);
    dm_put(g2, h, sizeof h);
    jopt_param prm = {p2, g2, 50};
    jopt_group grp = {&prm, 1, "lr=0.2"};
    T_OK(m.ctx, jopt_add_param_group(m.opt, &grp));
    T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
    T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
    double eta, mu;
    T_OK(m.ctx, jopt_state_scalar(m.opt, 1, 0, "eta", &eta));
    T_OK(m.ctx, jopt_state_scalar(m.opt, 1, 0, "mu", &mu));
    /* torch: eta = lr / (1 + lambd * lr * step) ** alpha, in float32 */
    assert_true(eta == (double)(float)(0.2 / pow(1 + 1e-4 * 0.2 * 2, 0.75)));
    assert_true(mu == 1.0);
    small_free(&m);
    dm_free(p2);
    dm_free(g2);
}

/* ---- no device ------------------------------------------------------------- */

static void test_gpu_no_device(void **state)
{
    (void)state;
    jopt_ctx *ctx = new_ctx();
    assert_int_equal(jopt_cuda_device_count(), 0);
    assert_int_equal(jopt_ctx_set_device(ctx, "cuda"), JOPT_EDEVICE);
    const char *msg = jopt_errmsg(ctx);
    if (!strstr(msg, "CUDA_ERROR_NO_DEVICE") && !strstr(msg, "cannot be loaded"))
        fail_msg("no clear reason: %s", msg);
    /* the context still makes CPU optimizers */
    float p[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1};
    jopt_param prm = {p, g, 4};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, "lr=0.5", &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    assert_true(p[0] == 0.5f);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
}

/* ---- the driver's failures (fake driver only) ---------------------------------- */

static void test_gpu_driver_failures(void **state)
{
    (void)state;
    small m;
    small_new(&m, "adam", NULL, 100);
    /* an allocation that fails at the first step: nothing changes */
    setenv("FAKE_CUDA_ALLOC_FAIL", "1", 1);
    assert_int_equal(jopt_step(m.opt, NULL, NULL, NULL), JOPT_ENOMEM);
    unsetenv("FAKE_CUDA_ALLOC_FAIL");
    const float *data;
    int64_t step;
    T_OK(m.ctx, jopt_state_get(m.opt, 0, 0, "exp_avg", &data, &step));
    assert_null(data);
    assert_int_equal(step, 0);
    /* a launch that fails names the driver's error */
    setenv("FAKE_CUDA_LAUNCH_FAIL", "1", 1);
    assert_int_equal(jopt_step(m.opt, NULL, NULL, NULL), JOPT_EDEVICE);
    assert_non_null(strstr(jopt_errmsg(m.ctx), "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"));
    unsetenv("FAKE_CUDA_LAUNCH_FAIL");
    T_OK(m.ctx, jopt_state_get(m.opt, 0, 0, "exp_avg", &data, &step));
    assert_int_equal(step, 0);
    T_OK(m.ctx, jopt_step(m.opt, NULL, NULL, NULL));
    small_free(&m);
    /* PTX where the fake driver takes only sim kernels: the JIT's log */
    setenv("JOPT_CUDA_ARCH", "sm_90", 1);
    small_new(&m, "sgd", "lr=0.1", 10);
    assert_int_equal(jopt_step(m.opt, NULL, NULL, NULL), JOPT_ECOMPILE);
    assert_non_null(strstr(jopt_errmsg(m.ctx), "CUDA_ERROR_INVALID_PTX"));
    assert_non_null(strstr(jopt_errmsg(m.ctx), "not PTX"));
    small_free(&m);
    setenv("JOPT_CUDA_ARCH", "sim", 1);
}

/* ---- main ---------------------------------------------------------------- */

static int dump(int argc, char **argv)
{
    tcase c = {argv[2], argc > 3 ? argv[3] : "", NULL};
    tspec t;
    char err[CG_ERRLEN];
    write_specs();
    int rc = open_case(&c, &t, err);
    cg_jit *jit;
    cg_kernel *k = NULL;
    cg_jit_new(&jit, err);
    if (rc == JOPT_OK) {
        cg_request req = {.spec = t.spec, .values = t.values, .rank = 1,
                          .arch = argc > 4 ? argv[4] : "sm_90"};
        rc = cg_kernel_get(jit, &req, &k, err);
    }
    if (rc)
        fprintf(stderr, "%s\n", err);
    else
        fputs(cg_kernel_gpu(k)->text, stdout);
    cg_kernel_release(k);
    cg_jit_free(jit);
    close_case(&t);
    remove_specs();
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "run";
    if (!strcmp(mode, "dump") && argc > 2)
        return dump(argc, argv);
    build_cases();
    write_specs();
    int rc;
    char why[256];
    if (!strcmp(mode, "ptx")) {
        if (!find_ptxas()) {
            fprintf(stderr, "no ptxas ($JOPT_PTXAS or PATH): skipped\n");
            remove_specs();
            return 77;
        }
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_gpu_refuses),
                                           cmocka_unit_test(test_gpu_ptx_assembles)};
        rc = cmocka_run_group_tests(tests, NULL, NULL);
    } else if (!strcmp(mode, "nodevice")) {
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_gpu_no_device)};
        rc = cmocka_run_group_tests(tests, NULL, NULL);
    } else if (jopt_cuda_device_count() < 1 || dm_open(why)) {
        fprintf(stderr, "no CUDA device: skipped\n");
        rc = 77;
    } else if (!strcmp(mode, "run")) {
        if (argc > 2 && (sscanf(argv[2], "%zu/%zu", &shard, &shards) != 2 || !shards ||
                         shard >= shards)) {
            fprintf(stderr, "test_gpu run K/N: K < N\n");
            return 2;
        }
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_gpu_matches_cpu)};
        rc = cmocka_run_group_tests(tests, NULL, NULL);
    } else if (!strcmp(mode, "api")) {
        const char *arch = getenv("JOPT_CUDA_ARCH");
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_gpu_api_basics),
            cmocka_unit_test(test_gpu_api_streams),
            cmocka_unit_test(test_gpu_api_long_sums),
            cmocka_unit_test(test_gpu_api_refusals),
            cmocka_unit_test(test_gpu_api_checkpoint_and_schedule),
            cmocka_unit_test(test_gpu_api_groups_and_scalars),
            cmocka_unit_test(test_gpu_driver_failures)};
        /* the driver's failures are the fake driver's to make */
        size_t n = arch && !strcmp(arch, "sim") ? 7 : 6;
        rc = _cmocka_run_group_tests("test_gpu api", tests, n, NULL, NULL);
    } else {
        fprintf(stderr, "usage: test_gpu [run [K/N]|api|ptx|nodevice|dump SPEC [OPTIONS [ARCH]]]\n");
        rc = 2;
    }
    remove_specs();
    return rc;
}
