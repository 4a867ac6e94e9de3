/*
 * gpu.c - optimizers on an NVIDIA GPU (docs/gpu.md).  A context's device
 * (rt_gpu) holds the CUDA device and the kernels loaded on it; an
 * optimizer's device side (rt_gopt) holds its stream, a block per group
 * (group states, their new values, group sums) and the step's work space.
 * A step, after step.c has chosen each parameter's kernel:
 *
 *   prepare  the stepping tensors of each group, by kernel (segments);
 *            sizes; modules loaded; work space and staging made big enough
 *   (step.c creates missing state: on the device)
 *   run      host image: tensor records, chunk tables (CG_CHUNK chunks for
 *            loops with sums, PLAIN_CHUNK for the others), each tensor's
 *            host values, equal ones shared --> a pinned staging buffer
 *            --> copied on the stream (records and tables only when they
 *            changed) --> per group and level, cg.h's launches: VALUES of
 *            each segment, GROUP, LOOP of each segment; COMMIT
 *
 * Nothing waits for the device: a staging buffer is reused only after the
 * event recorded behind its copies, RING buffers ahead.  State lives in
 * device memory; checkpoints, jopt_state_copy and group states read
 * through the host, after the stream.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cudadrv.h"
#include "rt.h"

#define RING 4             /* staging buffers: steps the host may run ahead */
#define PLAIN_CHUNK 16384  /* elements per block of a loop without sums */
#define RECENT 8           /* host-value profiles compared for sharing */

struct rt_gpu {
    int refs;
    rt_cuda *c;
    char name[32]; /* "cuda:0" */
    char arch[16]; /* "sm_90"; $JOPT_CUDA_ARCH overrides ("sim" for tests) */
    struct rt_gmod *mods;
};

struct rt_gmod {
    struct rt_gpu *gpu;
    const cg_kernel *k; /* kept alive by the kernel sets that use it */
    rt_cumod *m;
    rt_cufn fn[CG_GPU_MAX_LAUNCH];
    int refs;
    struct rt_gmod *next;
};

/* one kernel's stepping tensors in one group */
typedef struct seg {
    size_t group;
    const cg_kernel *k;
    const cg_gpu_info *info;
    struct rt_gmod *mod;
    size_t nrec, rec_off;     /* records: how many, byte offset in the image */
    size_t big0, nbig;        /* its chunks of the tables */
    size_t small0, nsmall;
    size_t d_off;             /* its records' device values (bytes) */
    int sums, plain;          /* it has loops with sums, without */
    int first;                /* it holds the group's first tensor */
} seg;

typedef struct staging {
    void *p;
    size_t cap;
    rt_cuevent ev;
    int pending;
} staging;

typedef struct gspan {
    size_t seg0, nseg, ntens;
    size_t gargs_off;         /* bytes */
} gspan;

struct rt_gopt {
    struct rt_gpu *gpu;
    rt_custream stream;
    int enqueued;      /* something was enqueued on the stream */
    rt_cuevent handoff; /* orders a new stream after the old one */
    rt_cuptr *gblock;  /* per group: CG_GPU_GRP_DOUBLES doubles */
    uint8_t *gup;      /* per group: the host's states are newer */
    uint8_t *gdown;    /* per group: the device's states are newer */
    size_t nblocks;
    rt_cuptr work;     /* the step's work space */
    size_t workcap;
    unsigned char *img, *prev; /* records, tables, host values; last upload */
    size_t imgcap, prevlen;
    staging ring[RING];
    int ring_at;
    seg *segs;
    size_t nseg, segcap;
    gspan *spans;
    size_t spancap;
    /* this step's layout */
    size_t fixed_len, h_off, h_len, partial_off, d_off, gargs_off, total;
    size_t nbig, nsmall;
    int put_failed;
    char put_err[CG_ERRLEN];
};

static rt_cuda *dev_of(const jopt_optim *opt) { return opt->gpu->gpu->c; }

/* a message into err (CG_ERRLEN bytes); returns status */
static int say(char *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int say(char *err, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, CG_ERRLEN, fmt, ap);
    va_end(ap);
    return status;
}

/* ---- devices ------------------------------------------------------------- */

JOPT_API int jopt_cuda_device_count(void)
{
    return rt_cuda_devices(NULL);
}

/* the architecture of the kernels for a device of compute capability cc */
static int arch_of(int cc, char *arch, size_t cap, char *err)
{
    const char *env = getenv("JOPT_CUDA_ARCH");
    if (env && *env) {
        snprintf(arch, cap, "%s", env);
        return JOPT_OK;
    }
    if (cc < 70)
        return say(err, JOPT_EDEVICE, "CUDA: the device has compute capability "
                       "%d.%d; jopt's GPU kernels need 7.0 or newer", cc / 10, cc % 10);
    /* LLVM 19 knows up to sm_90; newer GPUs run its PTX through the
     * driver's JIT */
    snprintf(arch, cap, "sm_%d", cc > 90 ? 90 : cc);
    return JOPT_OK;
}

int rt_gpu_open(jopt_ctx *ctx, const char *device, struct rt_gpu **out)
{
    static const char fn[] = "jopt_ctx_set_device";
    char err[CG_ERRLEN];
    *out = NULL;
    if (!strcmp(device, "cpu"))
        return JOPT_OK;
    long ordinal = 0;
    char *end = NULL;
    if (!strcmp(device, "cuda"))
        ordinal = 0;
    else if (!strncmp(device, "cuda:", 5) && device[5] >= '0' && device[5] <= '9' &&
             (ordinal = strtol(device + 5, &end, 10), !*end) && ordinal < 1024)
        ;
    else
        return rt_fail(ctx, JOPT_EINVAL, "%s: unknown device '%s' (\"cpu\", \"cuda\" "
                       "or \"cuda:N\")", fn, device);
    struct rt_gpu *g = cg_calloc(1, sizeof *g);
    if (!g)
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    int rc = rt_cuda_open((int)ordinal, &g->c, err);
    if (rc == JOPT_OK)
        rc = arch_of(rt_cuda_cc(g->c), g->arch, sizeof g->arch, err);
    if (rc) {
        rt_cuda_close(g->c);
        cg_free(g);
        return rt_fail(ctx, rc, "%s: %s: %s", fn, device, err);
    }
    g->refs = 1;
    snprintf(g->name, sizeof g->name, "cuda:%ld", ordinal);
    *out = g;
    return JOPT_OK;
}

void rt_gpu_put(struct rt_gpu *g)
{
    if (!g || --g->refs > 0)
        return;
    for (struct rt_gmod *m = g->mods, *next; m; m = next) { /* none, normally */
        next = m->next;
        rt_cuda_unload(m->m);
        cg_free(m);
    }
    rt_cuda_close(g->c);
    cg_free(g);
}

JOPT_API int jopt_ctx_set_device(jopt_ctx *ctx, const char *device)
{
    RT_API_SCOPE(ctx);
    if (!ctx)
        return JOPT_EINVAL;
    if (!device)
        return rt_fail(ctx, JOPT_EINVAL, "jopt_ctx_set_device: device is NULL");
    struct rt_gpu *g;
    int rc = rt_gpu_open(ctx, device, &g);
    if (rc)
        return rc;
    rt_gpu_put(ctx->gpu);
    ctx->gpu = g;
    return JOPT_OK;
}

/* ---- kernels on the device ----------------------------------------------- */

static int gmod_get(struct rt_gpu *g, const cg_kernel *k, struct rt_gmod **out, char *err)
{
    for (struct rt_gmod *m = g->mods; m; m = m->next)
        if (m->k == k) {
            m->refs++;
            *out = m;
            return JOPT_OK;
        }
    const cg_gpu_info *info = cg_kernel_gpu(k);
    struct rt_gmod *m = cg_calloc(1, sizeof *m);
    if (!m)
        return say(err, JOPT_ENOMEM, "out of memory");
    int rc = rt_cuda_load(g->c, info->text, &m->m, err);
    for (int i = 0; i < info->nlaunch && rc == JOPT_OK; i++)
        rc = rt_cuda_fn(m->m, info->launch[i].name, &m->fn[i], err);
    if (rc) {
        rt_cuda_unload(m->m);
        cg_free(m);
        return rc;
    }
    m->gpu = g;
    m->k = k;
    m->refs = 1;
    m->next = g->mods;
    g->mods = m;
    *out = m;
    return JOPT_OK;
}

void rt_gmod_put(struct rt_gmod *m)
{
    if (!m || --m->refs > 0)
        return;
    for (struct rt_gmod **p = &m->gpu->mods; *p; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    rt_cuda_unload(m->m);
    cg_free(m);
}

/* ---- an optimizer's device side ------------------------------------------ */

int rt_gopt_new(jopt_optim *opt, const char *fn)
{
    struct rt_gpu *g = opt->ctx->gpu;
    if (cg_spec_method(opt->spec))
        return rt_fail(opt->ctx, JOPT_EDEVICE, "%s: spec '%s' is a closure optimizer "
                       "(method '%s'): its line searches run on the CPU, so it does "
                       "not run on %s", fn, cg_spec_name(opt->spec),
                       cg_spec_method(opt->spec), g->name);
    if (opt->engine == JOPT_ENGINE_REFERENCE)
        return rt_fail(opt->ctx, JOPT_EDEVICE, "%s: the reference engine runs on the "
                       "CPU only; make optimizers on %s with JOPT_ENGINE_JIT", fn, g->name);
    if (cg_spec_nstate(opt->spec) > CG_MAX_SLOTS) /* a group block's room */
        return rt_fail(opt->ctx, JOPT_EDEVICE, "%s: spec '%s' declares %zu states; "
                       "on %s at most %d", fn, cg_spec_name(opt->spec),
                       cg_spec_nstate(opt->spec), g->name, CG_MAX_SLOTS);
    struct rt_gopt *o = cg_calloc(1, sizeof *o);
    if (!o)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    g->refs++;
    o->gpu = g;
    opt->gpu = o;
    return JOPT_OK;
}

void rt_gpu_drain(const jopt_optim *opt)
{
    if (opt->gpu)
        rt_cuda_sync(dev_of(opt), opt->gpu->stream, NULL);
}

void rt_gopt_free(jopt_optim *opt)
{
    struct rt_gopt *o = opt->gpu;
    if (!o)
        return;
    rt_cuda *c = o->gpu->c;
    rt_cuda_sync(c, o->stream, NULL);
    for (size_t g = 0; g < o->nblocks; g++)
        rt_cuda_free(c, o->gblock[g]);
    rt_cuda_free(c, o->work);
    for (int i = 0; i < RING; i++) {
        rt_cuda_host_free(c, o->ring[i].p);
        rt_cuda_event_free(c, o->ring[i].ev);
    }
    rt_cuda_event_free(c, o->handoff);
    cg_free(o->gblock);
    cg_free(o->gup);
    cg_free(o->gdown);
    cg_free(o->img);
    cg_free(o->prev);
    cg_free(o->segs);
    cg_free(o->spans);
    rt_gpu_put(o->gpu);
    cg_free(o);
    opt->gpu = NULL;
}

const char *rt_gpu_arch(const jopt_optim *opt)
{
    return opt->gpu ? opt->gpu->gpu->arch : NULL;
}

JOPT_API const char *jopt_optim_device(const jopt_optim *opt)
{
    RT_API_SCOPE(opt);
    return !opt ? "" : opt->gpu ? opt->gpu->gpu->name : "cpu";
}

JOPT_API int jopt_set_stream(jopt_optim *opt, void *stream)
{
    RT_API_SCOPE(opt);
    if (!opt)
        return JOPT_EINVAL;
    if (!opt->gpu)
        return rt_fail(opt->ctx, JOPT_EINVAL, "jopt_set_stream: the optimizer is on "
                       "the CPU (jopt_ctx_set_device makes optimizers on a GPU)");
    struct rt_gopt *o = opt->gpu;
    if (stream != o->stream && o->enqueued) {
        /* what the new stream gets runs after what the old one holds: they
         * share the state and the work space */
        char err[CG_ERRLEN];
        int rc = o->handoff ? JOPT_OK : rt_cuda_event_new(dev_of(opt), 0, &o->handoff, err);
        if (rc == JOPT_OK)
            rc = rt_cuda_record(dev_of(opt), o->handoff, o->stream, err);
        if (rc == JOPT_OK)
            rc = rt_cuda_wait_event(dev_of(opt), stream, o->handoff, err);
        if (rc)
            return rt_fail(opt->ctx, rc, "jopt_set_stream: %s", err);
    }
    o->stream = stream;
    return JOPT_OK;
}

JOPT_API int jopt_synchronize(jopt_optim *opt)
{
    RT_API_SCOPE(opt);
    if (!opt)
        return JOPT_EINVAL;
    if (!opt->gpu)
        return JOPT_OK;
    char err[CG_ERRLEN];
    int rc = rt_cuda_sync(dev_of(opt), opt->gpu->stream, err);
    return rc ? rt_fail(opt->ctx, rc, "jopt_synchronize: %s", err) : JOPT_OK;
}

int rt_gpu_check_buffer(jopt_optim *opt, const char *fn, const void *p,
                        size_t group, size_t index, const char *what)
{
    if (!p || rt_cuda_is_device_ptr(dev_of(opt), p))
        return JOPT_OK;
    return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: %s is not "
                   "memory of %s (an optimizer on a GPU takes device pointers: "
                   "cudaMalloc, or torch CUDA tensors)", fn, group, index, what,
                   opt->gpu->gpu->name);
}

int rt_gpu_check_groups(jopt_optim *opt, const char *fn, size_t from)
{
    for (size_t g = from; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            const rt_param *p = &opt->groups[g].params[i];
            int rc;
            if (p->n && ((rc = rt_gpu_check_buffer(opt, fn, p->p, g, i, "param")) ||
                         (rc = rt_gpu_check_buffer(opt, fn, p->g, g, i, "grad"))))
                return rc;
        }
    return JOPT_OK;
}

/* a block for every group (new ones take the host's group states) */
static int ensure_blocks(jopt_optim *opt, char *err)
{
    struct rt_gopt *o = opt->gpu;
    if (o->nblocks >= opt->ngroups)
        return JOPT_OK;
    size_t n = opt->ngroups;
    rt_cuptr *b = cg_realloc(o->gblock, n * sizeof *b);
    if (b)
        o->gblock = b;
    uint8_t *up = cg_realloc(o->gup, n), *down = up ? cg_realloc(o->gdown, n) : NULL;
    if (up)
        o->gup = up;
    if (down)
        o->gdown = down;
    if (!b || !up || !down)
        return say(err, JOPT_ENOMEM, "out of memory");
    for (size_t g = o->nblocks; g < n; g++) {
        int rc = rt_cuda_alloc(dev_of(opt), CG_GPU_GRP_DOUBLES * sizeof(double),
                               &o->gblock[g], err);
        if (rc)
            return rc;
        o->gup[g] = 1;
        o->gdown[g] = 0;
        o->nblocks = g + 1;
    }
    return JOPT_OK;
}

void rt_gpu_gstate_changed(jopt_optim *opt, size_t group)
{
    if (opt->gpu && group < opt->gpu->nblocks) {
        opt->gpu->gup[group] = 1;
        opt->gpu->gdown[group] = 0;
    }
}

/* ---- state --------------------------------------------------------------- */

int rt_gpu_state_new(jopt_optim *opt, int64_t n, int kind, double v, float **out)
{
    rt_cuda *c = dev_of(opt);
    opt->gpu->enqueued = 1;
    rt_custream s = opt->gpu->stream;
    rt_cuptr p;
    size_t bytes = (size_t)(n < 2 ? 2 : n) * sizeof(float);
    if (rt_cuda_alloc(c, bytes, &p, NULL))
        return JOPT_ENOMEM;
    int rc;
    if (kind == CG_KIND_SCALAR64) {
        uint32_t w[2];
        memcpy(w, &v, sizeof v);
        rc = rt_cuda_memset32(c, p, w[0], 1, s, NULL) ||
             rt_cuda_memset32(c, p + 4, w[1], 1, s, NULL);
    } else {
        float f = (float)v;
        uint32_t w;
        memcpy(&w, &f, sizeof w);
        rc = rt_cuda_memset32(c, p, w, (size_t)n, s, NULL);
    }
    if (rc) {
        rt_cuda_free(c, p);
        return JOPT_ENOMEM;
    }
    *out = (float *)(uintptr_t)p;
    return JOPT_OK;
}

void rt_state_free(const jopt_optim *opt, float *state)
{
    if (opt->gpu)
        rt_cuda_free(dev_of(opt), (rt_cuptr)(uintptr_t)state);
    else
        cg_free(state);
}

int rt_gpu_read(const jopt_optim *opt, const char *fn, void *dst, const void *src,
                size_t bytes)
{
    char err[CG_ERRLEN];
    int rc = rt_cuda_dtoh(dev_of(opt), dst, (rt_cuptr)(uintptr_t)src, bytes,
                          opt->gpu->stream, err);
    return rc ? rt_fail(opt->ctx, rc, "%s: %s", fn, err) : JOPT_OK;
}

int rt_gpu_pull(const jopt_optim *opt, const char *fn)
{
    struct rt_gopt *o = opt->gpu;
    char err[CG_ERRLEN];
    int rc = rt_cuda_sync(dev_of(opt), o->stream, err);
    size_t ns = cg_spec_nstate(opt->spec);
    for (size_t g = 0; g < o->nblocks && rc == JOPT_OK; g++) {
        if (!o->gdown[g])
            continue;
        rc = rt_cuda_dtoh(dev_of(opt), opt->groups[g].gstate, o->gblock[g],
                          ns * sizeof(double), o->stream, err);
        if (rc == JOPT_OK)
            o->gdown[g] = 0;
    }
    return rc ? rt_fail(opt->ctx, rc, "%s: %s", fn, err) : JOPT_OK;
}

void rt_put_state(const jopt_optim *opt, rt_out *o, const float *p, size_t bytes)
{
    if (!opt->gpu) {
        rt_put(o, p, bytes);
        return;
    }
    struct rt_gopt *g = opt->gpu;
    if (o->buf && o->len + bytes <= o->cap && !g->put_failed &&
        rt_cuda_dtoh(dev_of(opt), o->buf + o->len, (rt_cuptr)(uintptr_t)p, bytes,
                     g->stream, g->put_err))
        g->put_failed = 1;
    o->len += bytes;
}

int rt_gpu_put_status(const jopt_optim *opt, const char *fn)
{
    struct rt_gopt *g = opt->gpu;
    if (!g || !g->put_failed)
        return JOPT_OK;
    g->put_failed = 0;
    return rt_fail(opt->ctx, JOPT_EDEVICE, "%s: %s", fn, g->put_err);
}

int rt_gpu_adopt(jopt_optim *opt, const char *fn, float **state, const int64_t *count,
                 size_t n)
{
    rt_cuda *c = dev_of(opt);
    char err[CG_ERRLEN];
    float **dev = cg_calloc(n + 1, sizeof *dev);
    if (!dev)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    int rc = rt_cuda_sync(c, opt->gpu->stream, err);
    for (size_t k = 0; k < n && rc == JOPT_OK; k++) {
        if (!state[k])
            continue;
        size_t bytes = (size_t)count[k] * sizeof(float);
        rt_cuptr p;
        rc = rt_cuda_alloc(c, bytes < 8 ? 8 : bytes, &p, err);
        if (rc == JOPT_OK) {
            dev[k] = (float *)(uintptr_t)p;
            rc = rt_cuda_htod(c, p, state[k], bytes, opt->gpu->stream, err);
        }
    }
    if (rc == JOPT_OK) /* the host copies are read before they go */
        rc = rt_cuda_sync(c, opt->gpu->stream, err);
    for (size_t k = 0; k < n; k++) {
        if (!dev[k])
            continue;
        if (rc) {
            rt_cuda_free(c, (rt_cuptr)(uintptr_t)dev[k]);
        } else {
            cg_free(state[k]);
            state[k] = dev[k];
        }
    }
    cg_free(dev);
    return rc ? rt_fail(opt->ctx, rc, "%s: %s", fn, err) : JOPT_OK;
}

JOPT_API int jopt_state_copy(const jopt_optim *opt, size_t group, size_t index,
                             const char *name, float *out, int64_t cap)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_state_copy";
    if (!opt)
        return JOPT_EINVAL;
    const float *data;
    int64_t n;
    int rc = jopt_state_get(opt, group, index, name, &data, NULL);
    if (rc == JOPT_OK)
        rc = jopt_state_numel(opt, group, index, name, &n);
    if (rc)
        return rc;
    if (!data)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu has no "
                       "state '%s' yet", fn, group, index, name);
    if (!out || cap < n)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: state '%s' holds %lld floats; "
                       "out %s", fn, name, (long long)n, out ? "is too small" : "is NULL");
    if (!opt->gpu) {
        memcpy(out, data, (size_t)n * sizeof(float));
        return JOPT_OK;
    }
    return rt_gpu_read(opt, fn, out, data, (size_t)n * sizeof(float));
}

int rt_gpu_zero_grad(jopt_optim *opt)
{
    char err[CG_ERRLEN];
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            if (!p->g || !p->n)
                continue;
            opt->gpu->enqueued = 1;
            int rc = rt_cuda_memset32(dev_of(opt), (rt_cuptr)(uintptr_t)p->g, 0,
                                      (size_t)p->n, opt->gpu->stream, err);
            if (rc)
                return rt_fail(opt->ctx, rc, "jopt_zero_grad: %s", err);
        }
    return JOPT_OK;
}

/* ---- a step: segments and sizes ------------------------------------------ */

static size_t ceil_div(int64_t a, int64_t b) { return (size_t)(a / b + (a % b != 0)); }

static size_t rec_bytes(const cg_gpu_info *info)
{
    return (size_t)(CG_GPU_REC_HEAD + info->nslots) * 8;
}

static rt_kentry *entry_of(rt_kset *ks, const cg_kernel *k)
{
    for (size_t i = 0; i < ks->n; i++)
        if (ks->e[i].k == k)
            return &ks->e[i];
    return NULL;
}

static int grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = need + need / 2 + 4;
    void *q = cg_realloc(*p, n * size);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int same_group_sums(const cg_gpu_info *a, const cg_gpu_info *b)
{
    return a->ngred == b->ngred && !memcmp(a->gred_kind, b->gred_kind, (size_t)a->ngred) &&
           !memcmp(a->gred_level, b->gred_level, (size_t)a->ngred);
}

/* the step's segments, their sizes and the work space's layout; loads the
 * kernels and makes room, changing nothing the user sees */
static int prepare(jopt_optim *opt, const char *fn)
{
    struct rt_gopt *o = opt->gpu;
    char err[CG_ERRLEN];
    int rc = ensure_blocks(opt, err);
    if (rc)
        return rt_fail(opt->ctx, rc, "%s: %s", fn, err);
    if (grow((void **)&o->spans, &o->spancap, opt->ngroups, sizeof *o->spans))
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    o->nseg = 0;
    size_t recb = 0, hcap = 0, dbytes = 0, gbytes = 0;
    o->nbig = o->nsmall = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        gspan *sp = &o->spans[g];
        *sp = (gspan){o->nseg, 0, 0, 0};
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            if (!p->k)
                continue;
            seg *s = NULL;
            for (size_t k = sp->seg0; k < o->nseg; k++)
                if (o->segs[k].k == p->k)
                    s = &o->segs[k];
            if (!s) {
                if (grow((void **)&o->segs, &o->segcap, o->nseg + 1, sizeof *o->segs))
                    return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
                s = &o->segs[o->nseg++];
                *s = (seg){.group = g, .k = p->k, .info = cg_kernel_gpu(p->k),
                           .first = sp->ntens == 0};
                for (int l = 0; l < s->info->nlaunch; l++)
                    if (s->info->launch[l].kind == CG_GPU_LOOP)
                        *(s->info->launch[l].sums ? &s->sums : &s->plain) = 1;
                rt_kentry *e = entry_of(&gr->ks, p->k);
                if (!e->mod && (rc = gmod_get(o->gpu, p->k, &e->mod, err)))
                    return rt_fail(opt->ctx, rc, "%s: group %zu: loading the GPU "
                                   "kernel: %s", fn, g, err);
                s->mod = e->mod;
                if (!same_group_sums(s->info, o->segs[sp->seg0].info))
                    return rt_fail(opt->ctx, JOPT_EDEVICE, "%s: group %zu: its tensors "
                                   "need kernels with different group sums this step, "
                                   "which the GPU does not run together", fn, g);
            }
            s->nrec++;
            if (s->sums)
                o->nbig += ceil_div(p->n, CG_CHUNK);
            if (s->plain)
                o->nsmall += ceil_div(p->n, PLAIN_CHUNK);
            hcap += (size_t)s->info->nh * sizeof(double);
            dbytes += (size_t)s->info->nd * sizeof(double);
            sp->ntens++;
        }
        sp->nseg = o->nseg - sp->seg0;
        sp->gargs_off = gbytes;
        if (sp->nseg)
            gbytes += sp->ntens * (size_t)o->segs[sp->seg0].info->ngred * sizeof(double);
    }
    /* the image: records (by segment), big chunks, small chunks, host
     * values; then device-only: partial sums, device values, group operands */
    for (size_t k = 0; k < o->nseg; k++) {
        seg *s = &o->segs[k];
        s->rec_off = recb;
        recb += s->nrec * rec_bytes(s->info);
    }
    o->fixed_len = recb + 16 * (o->nbig + o->nsmall);
    o->h_off = o->fixed_len;
    o->partial_off = (o->h_off + hcap + 255) & ~(size_t)255;
    o->d_off = o->partial_off + o->nbig * CG_MAX_REDUCE * sizeof(double);
    o->gargs_off = o->d_off + dbytes;
    o->total = o->gargs_off + gbytes + 8;
    if (o->total > o->workcap) {
        rt_cuptr w;
        size_t cap = o->total + o->total / 2;
        /* the old space may still be read by the steps before */
        if ((rc = rt_cuda_sync(dev_of(opt), o->stream, err)) ||
            (rc = rt_cuda_alloc(dev_of(opt), cap, &w, err)))
            return rt_fail(opt->ctx, rc, "%s: %s", fn, err);
        rt_cuda_free(dev_of(opt), o->work);
        o->work = w;
        o->workcap = cap;
        o->prevlen = 0;
    }
    size_t need = o->h_off + hcap;
    if (need > o->imgcap) {
        unsigned char *img = cg_malloc(need + need / 2), *prev = cg_malloc(need + need / 2);
        if (!img || !prev) {
            cg_free(img);
            cg_free(prev);
            return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        }
        cg_free(o->img);
        cg_free(o->prev);
        o->img = img;
        o->prev = prev;
        o->imgcap = need + need / 2;
        o->prevlen = 0;
    }
    return JOPT_OK;
}

int rt_gpu_prepare(jopt_optim *opt, const char *fn)
{
    return prepare(opt, fn);
}

/* ---- a step: the image --------------------------------------------------- */

typedef struct profile {
    const cg_kernel *k;
    double t;
    const rt_param *p; /* whose shape it was computed for */
    size_t off;        /* in the image */
} profile;

static int same_shape(const rt_param *a, const rt_param *b)
{
    return a->n == b->n && a->rank == b->rank &&
           !memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0]);
}

/* the host values of parameter p under kernel k at step t: an equal
 * profile computed this step, or a new one */
static size_t host_values(jopt_optim *opt, const rt_group *gr, const rt_param *p,
                          const cg_kernel *k, double t, profile *recent, int *nrecent)
{
    struct rt_gopt *o = opt->gpu;
    const cg_gpu_info *info = cg_kernel_gpu(k);
    for (int i = 0; i < *nrecent; i++) {
        const profile *q = &recent[i];
        if (q->k == k && q->t == t && (!info->h_shape || same_shape(q->p, p)))
            return q->off;
    }
    size_t off = o->h_off + o->h_len;
    cg_env_host env = {t, gr->values, p->shape, p->rank, p->n};
    cg_kernel_host_values(k, &env, (double *)(void *)(o->img + off));
    o->h_len += (size_t)info->nh * sizeof(double);
    profile q = {k, t, p, off};
    if (*nrecent < RECENT)
        recent[(*nrecent)++] = q;
    else {
        memmove(recent, recent + 1, (RECENT - 1) * sizeof *recent);
        recent[RECENT - 1] = q;
    }
    return off;
}

static void fill(jopt_optim *opt)
{
    struct rt_gopt *o = opt->gpu;
    int group_steps = cg_spec_group_steps(opt->spec);
    size_t big = 0, small = 0, dcur = o->d_off;
    unsigned char *bigt = o->img + o->fixed_len - 16 * (o->nbig + o->nsmall);
    unsigned char *smallt = bigt + 16 * o->nbig;
    o->h_len = 0;
    for (size_t k = 0; k < o->nseg; k++) {
        seg *s = &o->segs[k];
        const rt_group *gr = &opt->groups[s->group];
        const cg_layout *lay = cg_kernel_layout(s->k);
        profile recent[RECENT];
        int nrecent = 0;
        s->big0 = big;
        s->small0 = small;
        s->d_off = dcur;
        size_t r = 0, pos = 0;
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            if (!p->k)
                continue;
            if (p->k != s->k) {
                pos++;
                continue;
            }
            double t = (double)((group_steps ? gr->step : p->step) + 1);
            size_t hoff = host_values(opt, gr, p, s->k, t, recent, &nrecent);
            int64_t *rec = (int64_t *)(void *)(o->img + s->rec_off + r * rec_bytes(s->info));
            rec[0] = p->n;
            rec[1] = (int64_t)big;
            rec[2] = (int64_t)pos;
            rec[3] = (int64_t)(o->work + hoff);
            rec[4] = (int64_t)(o->work + dcur);
            float *arrays[CG_MAX_SLOTS];
            arrays[0] = p->p;
            arrays[1] = p->g;
            for (int q = 0; q < lay->nstate; q++)
                arrays[2 + q] = p->state[lay->state[q]];
            for (int q = 0; q < lay->ninput; q++)
                arrays[2 + lay->nstate + q] = p->input[lay->input[q]];
            for (int q = 0; q < s->info->nslots; q++)
                rec[CG_GPU_REC_HEAD + q] = (int64_t)(uintptr_t)arrays[q];
            for (int64_t at = 0; s->sums && at < p->n; at += CG_CHUNK, big++) {
                int64_t e[2] = {(int64_t)r, at};
                memcpy(bigt + 16 * big, e, sizeof e);
            }
            for (int64_t at = 0; s->plain && at < p->n; at += PLAIN_CHUNK, small++) {
                int64_t e[2] = {(int64_t)r, at};
                memcpy(smallt + 16 * small, e, sizeof e);
            }
            dcur += (size_t)s->info->nd * sizeof(double);
            r++;
            pos++;
        }
        s->nbig = big - s->big0;
        s->nsmall = small - s->small0;
    }
}

/* the image to the device through the next staging buffer: records and
 * tables when they changed, host values always, and the groups' states
 * the host changed */
static int upload(jopt_optim *opt, char *err)
{
    struct rt_gopt *o = opt->gpu;
    rt_cuda *c = dev_of(opt);
    size_t ns = cg_spec_nstate(opt->spec);
    int changed = o->fixed_len != o->prevlen || memcmp(o->img, o->prev, o->fixed_len);
    size_t ngup = 0;
    for (size_t g = 0; g < o->nblocks; g++)
        ngup += o->gup[g];
    size_t need = (changed ? o->fixed_len : 0) + o->h_len + ngup * ns * sizeof(double) + 8;
    staging *st = &o->ring[o->ring_at];
    o->ring_at = (o->ring_at + 1) % RING;
    int rc;
    if (st->pending && (rc = rt_cuda_event_sync(c, st->ev, err)))
        return rc;
    st->pending = 0;
    if (!st->ev && (rc = rt_cuda_event_new(c, 0, &st->ev, err)))
        return rc;
    if (need > st->cap) {
        void *p;
        if ((rc = rt_cuda_host_alloc(c, need + need / 2, &p, err)))
            return rc;
        rt_cuda_host_free(c, st->p);
        st->p = p;
        st->cap = need + need / 2;
    }
    unsigned char *at = st->p;
    if (changed && o->fixed_len) {
        memcpy(at, o->img, o->fixed_len);
        if ((rc = rt_cuda_htod(c, o->work, at, o->fixed_len, o->stream, err)))
            return rc;
        at += o->fixed_len;
    }
    memcpy(at, o->img + o->h_off, o->h_len);
    if (o->h_len && (rc = rt_cuda_htod(c, o->work + o->h_off, at, o->h_len, o->stream, err)))
        return rc;
    at += o->h_len;
    for (size_t g = 0; g < o->nblocks; g++) {
        if (!o->gup[g])
            continue;
        memcpy(at, opt->groups[g].gstate, ns * sizeof(double));
        if ((rc = rt_cuda_htod(c, o->gblock[g], at, ns * sizeof(double), o->stream, err)))
            return rc;
        at += ns * sizeof(double);
        o->gup[g] = 0;
    }
    if ((rc = rt_cuda_record(c, st->ev, o->stream, err)))
        return rc;
    st->pending = 1;
    if (changed) {
        memcpy(o->prev, o->img, o->fixed_len);
        o->prevlen = o->fixed_len;
    }
    return JOPT_OK;
}

/* ---- a step: the launches ------------------------------------------------- */

static int launch(jopt_optim *opt, const seg *s, int li, unsigned grid, unsigned block,
                  void **args, char *err)
{
    return rt_cuda_launch(dev_of(opt), s->mod->fn[li], grid, block, opt->gpu->stream,
                          args, err);
}

static int run_group(jopt_optim *opt, size_t g, char *err)
{
    struct rt_gopt *o = opt->gpu;
    const gspan *sp = &o->spans[g];
    rt_cuptr grp = o->gblock[g], gargs = o->work + o->gargs_off + sp->gargs_off;
    rt_cuptr partial = o->work + o->partial_off;
    int64_t ntens = (int64_t)sp->ntens;
    int levels = 0, rc = JOPT_OK;
    for (size_t k = sp->seg0; k < sp->seg0 + sp->nseg; k++)
        levels = o->segs[k].info->nlevels > levels ? o->segs[k].info->nlevels : levels;
    for (int lv = 0; lv < levels && rc == JOPT_OK; lv++) {
        for (int kind = CG_GPU_VALUES; kind <= CG_GPU_LOOP && rc == JOPT_OK; kind++) {
            for (size_t k = sp->seg0; k < sp->seg0 + sp->nseg && rc == JOPT_OK; k++) {
                const seg *s = &o->segs[k];
                for (int li = 0; li < s->info->nlaunch && rc == JOPT_OK; li++) {
                    const cg_gpu_launch *la = &s->info->launch[li];
                    if (la->kind != kind || la->level != lv)
                        continue;
                    rt_cuptr tl = o->work + s->rec_off;
                    int64_t nrec = (int64_t)s->nrec;
                    if (kind == CG_GPU_VALUES) {
                        void *args[] = {&tl, &nrec, &partial, &grp, &gargs, NULL};
                        rc = launch(opt, s, li, (unsigned)ceil_div(nrec, CG_GPU_VBLOCK),
                                    CG_GPU_VBLOCK, args, err);
                    } else if (kind == CG_GPU_GROUP) {
                        void *args[] = {&grp, &gargs, &ntens, NULL, NULL, NULL};
                        rc = launch(opt, s, li, 1, 32, args, err);
                    } else {
                        int64_t n = (int64_t)(la->sums ? s->nbig : s->nsmall);
                        int64_t chunk = la->sums ? CG_CHUNK : PLAIN_CHUNK;
                        rt_cuptr ct = o->work + o->fixed_len - 16 * (o->nbig + o->nsmall) +
                                      16 * (la->sums ? s->big0 : o->nbig + s->small0);
                        rt_cuptr part = partial + (la->sums ? s->big0 * CG_MAX_REDUCE * 8 : 0);
                        void *args[] = {&tl, &ct, &n, &chunk, &part, NULL};
                        rc = launch(opt, s, li, (unsigned)n, CG_GPU_BLOCK, args, err);
                    }
                }
                if (kind == CG_GPU_GROUP)
                    break; /* one group launch, from the first segment */
            }
        }
    }
    for (size_t k = sp->seg0; k < sp->seg0 + sp->nseg && rc == JOPT_OK; k++) {
        const seg *s = &o->segs[k];
        for (int li = 0; s->first && li < s->info->nlaunch && rc == JOPT_OK; li++)
            if (s->info->launch[li].kind == CG_GPU_COMMIT) {
                void *args[] = {&grp, NULL, NULL, NULL, NULL, NULL};
                rc = launch(opt, s, li, 1, 64, args, err);
                o->gdown[g] = 1;
            }
    }
    return rc;
}

int rt_gpu_run(jopt_optim *opt, const char *fn)
{
    char err[CG_ERRLEN];
    fill(opt);
    opt->gpu->enqueued = 1;
    int rc = upload(opt, err);
    for (size_t g = 0; g < opt->ngroups && rc == JOPT_OK; g++)
        if (opt->gpu->spans[g].nseg)
            rc = run_group(opt, g, err);
    return rc ? rt_fail(opt->ctx, rc, "%s: %s", fn, err) : JOPT_OK;
}
