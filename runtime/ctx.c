/*
 * ctx.c - the context: spec search path, the JIT and its kernel cache, the
 * engine choice and the last error message.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

#ifndef JOPT_SPEC_DIR
#define JOPT_SPEC_DIR "specs"
#endif
/* the default spec path: the source tree's specs, then the installed ones
 * (<prefix>/share/jopt/specs), so an installed library needs no setup */
#ifdef JOPT_SPEC_INSTALL_DIR
#define JOPT_SPEC_DEFAULT JOPT_SPEC_DIR ":" JOPT_SPEC_INSTALL_DIR
#else
#define JOPT_SPEC_DEFAULT JOPT_SPEC_DIR
#endif

JOPT_API const char *jopt_strerror(int status)
{
    switch (status) {
    case JOPT_OK: return "JOPT_OK: success";
    case JOPT_EINVAL: return "JOPT_EINVAL: invalid argument";
    case JOPT_ENOMEM: return "JOPT_ENOMEM: out of memory";
    case JOPT_ESPEC: return "JOPT_ESPEC: bad optimizer spec";
    case JOPT_ECOMPILE: return "JOPT_ECOMPILE: kernel compilation failed";
    case JOPT_ECLOSURE: return "JOPT_ECLOSURE: the closure reported an error";
    case JOPT_SKIPPED: return "JOPT_SKIPPED: a NaN or infinite gradient: the step "
                              "was skipped and nothing changed";
    case JOPT_ECOMM: return "JOPT_ECOMM: the transport between processes failed";
    case JOPT_EDEVICE: return "JOPT_EDEVICE: no GPU, a CUDA driver error, or not runnable on the GPU";
    default: return "unknown jopt status";
    }
}

int rt_fail(jopt_ctx *ctx, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return status;
}

int rt_fail_cg(jopt_ctx *ctx, int status, const char *where, const char *err)
{
    return rt_fail(ctx, status, "%s: %s", where, err);
}

static void free_dirs(jopt_ctx *ctx)
{
    for (size_t i = 0; i < ctx->ndirs; i++)
        cg_free(ctx->dirs[i]);
    cg_free(ctx->dirs);
    cg_free(ctx->path);
    ctx->dirs = NULL;
    ctx->path = NULL;
    ctx->ndirs = 0;
}

/* splits "a:b:c" into a fresh list; only then replaces the old one */
static int set_dirs(jopt_ctx *ctx, const char *folders)
{
    size_t n = 1;
    for (const char *c = folders; *c; c++)
        n += *c == ':';
    char **dirs = cg_calloc(n, sizeof *dirs);
    char *path = cg_malloc(strlen(folders) + 1);
    if (!dirs || !path) {
        cg_free(dirs);
        cg_free(path);
        return JOPT_ENOMEM;
    }
    path[0] = 0;
    size_t k = 0;
    for (const char *c = folders;;) {
        const char *e = strchr(c, ':');
        size_t len = e ? (size_t)(e - c) : strlen(c);
        if (len) {
            if (!(dirs[k] = cg_strndup(c, len))) {
                for (size_t i = 0; i < k; i++)
                    cg_free(dirs[i]);
                cg_free(dirs);
                cg_free(path);
                return JOPT_ENOMEM;
            }
            if (k)
                strcat(path, ":");
            strcat(path, dirs[k]);
            k++;
        }
        if (!e)
            break;
        c = e + 1;
    }
    free_dirs(ctx);
    ctx->dirs = dirs;
    ctx->path = path;
    ctx->ndirs = k;
    return JOPT_OK;
}

JOPT_API int jopt_ctx_new(jopt_ctx **out)
{
    return jopt_ctx_new_ex(out, NULL, NULL);
}

JOPT_API int jopt_ctx_new_ex(jopt_ctx **out, jopt_alloc_fn alloc, void *ud)
{
    if (!out)
        return JOPT_EINVAL;
    cg_allocator a = alloc ? (cg_allocator){alloc, ud} : cg_mem_libc;
    /* the context holds its allocator, so it is the one block without a
     * header (cg_mem.h): jopt_ctx_free gives it back by hand */
    jopt_ctx *ctx = cg_mem_call(&a, NULL, 0, sizeof *ctx);
    if (!ctx)
        return JOPT_ENOMEM;
    memset(ctx, 0, sizeof *ctx);
    ctx->alloc = a;
    CG_MEM_SCOPE(&ctx->alloc);
    const char *env = getenv("JOPT_SPEC_PATH");
    char err[CG_ERRLEN];
    if (set_dirs(ctx, env && *env ? env : JOPT_SPEC_DEFAULT) ||
        cg_jit_new(&ctx->jit, err)) {
        jopt_ctx_free(ctx);
        return JOPT_ENOMEM;
    }
    *out = ctx;
    return JOPT_OK;
}

int rt_spec_get(jopt_ctx *ctx, const char *name, cg_spec **out, char *err)
{
    char *path, *text;
    size_t len, tl;
    int rc = cg_spec_read((const char *const *)ctx->dirs, ctx->ndirs, name, &path,
                          &text, &len, err);
    if (rc)
        return rc;
    for (rt_spec_entry *e = ctx->specs; e; e = e->next) {
        const char *t = cg_spec_text(e->spec, &tl);
        if (tl == len && !memcmp(t, text, len) && !strcmp(cg_spec_path(e->spec), path)) {
            e->refs++;
            cg_free(path);
            cg_free(text);
            *out = e->spec;
            return JOPT_OK;
        }
    }
    rt_spec_entry *e = cg_calloc(1, sizeof *e);
    if (!e) {
        cg_free(path);
        cg_free(text);
        return JOPT_ENOMEM;
    }
    if ((rc = cg_spec_parse(path, text, len, &e->spec, err))) {
        cg_free(e);
        return rc;
    }
    e->refs = 1;
    e->next = ctx->specs;
    ctx->specs = e;
    *out = e->spec;
    return JOPT_OK;
}

void rt_spec_put(jopt_ctx *ctx, cg_spec *spec)
{
    for (rt_spec_entry *e = ctx->specs; e; e = e->next)
        if (e->spec == spec) {
            e->refs--;
            return;
        }
}

JOPT_API void jopt_ctx_free(jopt_ctx *ctx)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return;
    for (rt_spec_entry *e = ctx->specs, *next; e; e = next) {
        next = e->next;
        cg_spec_free(e->spec);
        cg_free(e);
    }
    rt_pool_free(ctx->pool);
    rt_gpu_put(ctx->gpu);
    cg_jit_free(ctx->jit);
    free_dirs(ctx);
    cg_allocator a = ctx->alloc;
    cg_mem_call(&a, ctx, sizeof *ctx, 0);
}

const cg_allocator *rt_alloc_of_ctx(const jopt_ctx *ctx)
{
    return ctx ? &ctx->alloc : NULL;
}

const cg_allocator *rt_alloc_of_optim(const jopt_optim *opt)
{
    return opt ? &opt->ctx->alloc : NULL;
}

JOPT_API const char *jopt_errmsg(const jopt_ctx *ctx)
{
    RT_API_SCOPE(ctx);
    return ctx ? ctx->err : "no context (NULL)";
}

JOPT_API int jopt_ctx_set_spec_path(jopt_ctx *ctx, const char *folders)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return JOPT_EINVAL;
    if (!folders)
        return rt_fail(ctx, JOPT_EINVAL, "jopt_ctx_set_spec_path: folders is NULL");
    if (set_dirs(ctx, folders))
        return rt_fail(ctx, JOPT_ENOMEM, "jopt_ctx_set_spec_path: out of memory");
    return JOPT_OK;
}

JOPT_API int jopt_ctx_set_engine(jopt_ctx *ctx, jopt_engine engine)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return JOPT_EINVAL;
    if (engine != JOPT_ENGINE_JIT && engine != JOPT_ENGINE_REFERENCE)
        return rt_fail(ctx, JOPT_EINVAL, "jopt_ctx_set_engine: unknown engine %d",
                       (int)engine);
    ctx->engine = engine;
    return JOPT_OK;
}

int rt_ctx_pool(jopt_ctx *ctx)
{
    if (ctx->run) /* no threads of jopt's own */
        return JOPT_OK;
    int want = ctx->threads ? ctx->threads : rt_pool_default_threads();
    if (ctx->pool && rt_pool_threads(ctx->pool) == want)
        return JOPT_OK;
    rt_pool *p;
    if (want <= 1 || rt_pool_new(want, &p) != 0)
        p = NULL;
    rt_pool_free(ctx->pool);
    ctx->pool = p;
    return JOPT_OK;
}

static void par_run(void *arg, size_t n, cg_range_fn fn, void *fn_arg)
{
    const rt_par *p = arg;
    if (p->run)
        rt_pool_run_external(p->run, p->run_user, n, fn, fn_arg, p->flush);
    else
        rt_pool_run(p->pool, n, fn, fn_arg, p->flush);
}

cg_parallel rt_ctx_parallel(const jopt_ctx *ctx, int64_t total, rt_par *par)
{
    par->pool = total >= RT_PARALLEL_MIN ? ctx->pool : NULL;
    par->run = total >= JOPT_PARALLEL_MIN_RUNNER ? ctx->run : NULL;
    par->run_user = ctx->run_user;
    par->flush = ctx->flush;
    return (cg_parallel){par_run, par};
}

JOPT_API int jopt_ctx_set_threads(jopt_ctx *ctx, int threads)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return JOPT_EINVAL;
    if (threads < 0 || threads > 1024)
        return rt_fail(ctx, JOPT_EINVAL, "jopt_ctx_set_threads: %d threads "
                       "(give 1 to 1024, or 0 for every core)", threads);
    ctx->threads = threads;
    ctx->run = NULL; /* back to jopt's own pool */
    ctx->run_user = NULL;
    return rt_ctx_pool(ctx);
}

JOPT_API int jopt_ctx_threads(const jopt_ctx *ctx)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return 0;
    return ctx->pool ? rt_pool_threads(ctx->pool) : 1;
}

JOPT_API int jopt_ctx_set_parallel(jopt_ctx *ctx, jopt_parallel_fn run, void *user)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return JOPT_EINVAL;
    if (run == jopt_parallel_openmp && !user)
        return rt_fail(ctx, JOPT_EINVAL, "jopt_ctx_set_parallel: jopt_parallel_openmp "
                       "needs its jopt_openmp (the OpenMP entry points) as user");
    ctx->run = run;
    ctx->run_user = run ? user : NULL;
    if (run) { /* no threads of jopt's own while another pool runs steps */
        rt_pool_free(ctx->pool);
        ctx->pool = NULL;
        return JOPT_OK;
    }
    return rt_ctx_pool(ctx);
}

JOPT_API int jopt_ctx_set_flush_denormals(jopt_ctx *ctx, int on)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return JOPT_EINVAL;
    ctx->flush = on != 0;
    return JOPT_OK;
}

JOPT_API void jopt_ctx_stats(const jopt_ctx *ctx, size_t *compiles,
                             size_t *cache_hits)
{
    RT_API_SCOPE(ctx);
    if (ctx)
        cg_jit_stats(ctx->jit, compiles, cache_hits);
}
