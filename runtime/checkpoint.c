/*
 * checkpoint.c - saving and loading everything needed to resume.
 *
 * Format (version 1, little-endian, see docs/checkpoint.md):
 *   "JOPTCKPT" u32 version u32 reserved
 *   u32 len, spec name; u64 spec text hash
 *   u32 nvalues u32 nhyper u32 nstate; per state: u32 len, name
 *   u32 ngroups; per group: u32 nparams, f64 values[nvalues], u8 runtime[nhyper],
 *     per parameter: i64 numel, i64 step, u32 present (bit per state),
 *       per present state: u64 count, f32 data[count]
 *   u64 checksum (FNV-1a over every byte before it)
 *
 * Loading reads the whole file (no more than it holds), checks everything
 * (checksum first, then every length and name against the optimizer)
 * before it allocates state or changes anything, and builds the kernels
 * for the loaded values before it swaps anything in.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rt.h"

#define MAGIC "JOPTCKPT"
#define VERSION 1u
#define MAX_STATES 62 /* CG_MAX_SLOTS - 2: one presence bit each in a u64 */

/* ---- writing ------------------------------------------------------------ */

typedef struct out {
    unsigned char *buf; /* NULL: only count */
    size_t len, cap;
} out;

static void put(out *o, const void *p, size_t n)
{
    if (o->buf && o->len + n <= o->cap)
        memcpy(o->buf + o->len, p, n);
    o->len += n;
}

static void put_u32(out *o, uint32_t v) { put(o, &v, 4); }
static void put_u64(out *o, uint64_t v) { put(o, &v, 8); }

static void put_str(out *o, const char *s)
{
    put_u32(o, (uint32_t)strlen(s));
    put(o, s, strlen(s));
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static uint64_t spec_hash(const cg_spec *s)
{
    size_t len;
    const char *src = cg_spec_text(s, &len);
    return fnv((const unsigned char *)src, len);
}

static void serialise(const jopt_optim *opt, out *o)
{
    const cg_spec *s = opt->spec;
    size_t ns = cg_spec_nstate(s), nh = cg_spec_nhyper(s), nv = cg_spec_nvalues(s);
    put(o, MAGIC, 8);
    put_u32(o, VERSION);
    put_u32(o, 0);
    put_str(o, cg_spec_name(s));
    put_u64(o, spec_hash(s));
    put_u32(o, (uint32_t)nv);
    put_u32(o, (uint32_t)nh);
    put_u32(o, (uint32_t)ns);
    for (size_t i = 0; i < ns; i++)
        put_str(o, cg_spec_state_name(s, i));
    put_u32(o, (uint32_t)opt->ngroups);
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        put_u32(o, (uint32_t)gr->n);
        put(o, gr->values, nv * sizeof(double));
        put(o, gr->runtime, nh);
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            uint64_t present = 0;
            for (size_t k = 0; k < ns; k++)
                present |= (uint64_t)(p->state[k] != NULL) << k;
            put_u64(o, (uint64_t)p->n);
            put_u64(o, (uint64_t)p->step);
            put_u64(o, present);
            for (size_t k = 0; k < ns; k++) {
                if (!p->state[k])
                    continue;
                uint64_t count = p->scalar_mask >> k & 1 ? 1 : (uint64_t)p->n;
                put_u64(o, count);
                put(o, p->state[k], count * sizeof(float));
            }
        }
    }
    uint64_t sum = o->buf ? fnv(o->buf, o->len) : 0;
    put_u64(o, sum);
}

JOPT_API int jopt_state_size(const jopt_optim *opt, size_t *len)
{
    if (!opt)
        return JOPT_EINVAL;
    if (!len)
        return rt_fail(opt->ctx, JOPT_EINVAL, "jopt_state_size: len is NULL");
    out o = {NULL, 0, 0};
    serialise(opt, &o);
    *len = o.len;
    return JOPT_OK;
}

JOPT_API int jopt_state_save_mem(const jopt_optim *opt, void *buf, size_t cap,
                                 size_t *len)
{
    static const char fn[] = "jopt_state_save_mem";
    if (!opt)
        return JOPT_EINVAL;
    size_t need;
    jopt_state_size(opt, &need);
    if (len)
        *len = need;
    if (!buf)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: buf is NULL", fn);
    if (cap < need)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: the buffer holds %zu bytes; "
                       "the checkpoint needs %zu (jopt_state_size)", fn, cap, need);
    out o = {buf, 0, cap};
    serialise(opt, &o);
    return JOPT_OK;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* temporary file, fsync, rename, fsync of the folder: a crash or a failed
 * write leaves the previous file as it was */
JOPT_API int jopt_state_save(const jopt_optim *opt, const char *path)
{
    static const char fn[] = "jopt_state_save";
    if (!opt)
        return JOPT_EINVAL;
    if (!path || !*path)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: path is %s", fn,
                       path ? "empty" : "NULL");
    size_t len;
    jopt_state_size(opt, &len);
    unsigned char *buf = malloc(len);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    if (!buf || !tmp) {
        free(buf);
        free(tmp);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    out o = {buf, 0, len};
    serialise(opt, &o);
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int rc = JOPT_OK, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const char *what = "create";
    if (fd < 0)
        goto fail;
    what = "write";
    if (write_all(fd, buf, len) != 0)
        goto fail;
    what = "fsync";
    if (fsync(fd) != 0)
        goto fail;
    what = "close";
    int c = close(fd);
    fd = -1;
    if (c != 0)
        goto fail;
    what = "rename";
    if (rename(tmp, path) != 0)
        goto fail;
    /* make the rename itself durable */
    char *dir = strdup(path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        const char *d = slash ? (slash == dir ? "/" : (*slash = 0, dir)) : ".";
        int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    free(buf);
    free(tmp);
    return JOPT_OK;
fail:
    rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: cannot %s '%s': %s (the previous "
                 "file, if any, is unchanged)", fn, what,
                 strcmp(what, "rename") ? tmp : path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    free(buf);
    free(tmp);
    return rc;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct in {
    const unsigned char *p;
    size_t len, pos;
    int bad;
} in;

static const void *take(in *r, size_t n)
{
    if (r->bad || n > r->len - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const void *p = r->p + r->pos;
    r->pos += n;
    return p;
}

static uint32_t get_u32(in *r)
{
    uint32_t v = 0;
    const void *p = take(r, 4);
    if (p)
        memcpy(&v, p, 4);
    return v;
}

static uint64_t get_u64(in *r)
{
    uint64_t v = 0;
    const void *p = take(r, 8);
    if (p)
        memcpy(&v, p, 8);
    return v;
}

/* a length-prefixed string equal to `want` */
static int get_str_eq(in *r, const char *want)
{
    uint32_t n = get_u32(r);
    const char *p = take(r, n);
    return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

/* One pass over the file: with `opt` checks it against the optimizer;
 * with `apply`, also copies state into the new arrays. */
typedef struct loaded {
    double *values;  /* ngroups x nvalues */
    uint8_t *runtime; /* ngroups x nhyper */
    float ***state;  /* per group, per param: ns arrays (NULL if absent) */
    int64_t **steps; /* per group, per param */
    uint64_t **scalar; /* per group, per param: states of one float */
} loaded;

#define FAIL(...) (rt_fail(opt->ctx, JOPT_EINVAL, __VA_ARGS__), 0)

static int parse(jopt_optim *opt, in *r, loaded *L, const char *fn)
{
    const cg_spec *s = opt->spec;
    size_t ns = cg_spec_nstate(s), nh = cg_spec_nhyper(s), nv = cg_spec_nvalues(s);
    const void *magic = take(r, 8);
    if (!magic || memcmp(magic, MAGIC, 8) != 0)
        return FAIL("%s: not a jopt checkpoint (wrong magic)", fn);
    uint32_t version = get_u32(r);
    get_u32(r);
    if (version != VERSION)
        return FAIL("%s: checkpoint version %u; this jopt reads version %u", fn,
                    version, VERSION);
    if (!get_str_eq(r, cg_spec_name(s)))
        return FAIL("%s: the checkpoint is not of spec '%s' (another "
                    "optimizer's file?)", fn, cg_spec_name(s));
    if (get_u64(r) != spec_hash(s))
        return FAIL("%s: the checkpoint was made with a different text of spec "
                    "'%s' (%s)", fn, cg_spec_name(s), cg_spec_path(s));
    if (get_u32(r) != nv || get_u32(r) != nh || get_u32(r) != ns)
        return FAIL("%s: the checkpoint's hyperparameter or state layout is not "
                    "spec '%s''s", fn, cg_spec_name(s));
    for (size_t k = 0; k < ns; k++)
        if (!get_str_eq(r, cg_spec_state_name(s, k)))
            return FAIL("%s: the checkpoint's state %zu is not '%s'", fn, k,
                        cg_spec_state_name(s, k));
    uint32_t ng = get_u32(r);
    if (!r->bad && ng != opt->ngroups)
        return FAIL("%s: loaded state dict has a different number of parameter "
                    "groups (%u in the checkpoint, %zu here)", fn, ng, opt->ngroups);
    for (size_t g = 0; g < opt->ngroups && !r->bad; g++) {
        const rt_group *gr = &opt->groups[g];
        uint32_t np = get_u32(r);
        if (!r->bad && np != gr->n)
            return FAIL("%s: loaded state dict contains a parameter group that "
                        "doesn't match the size of optimizer's group (group %zu: "
                        "%u parameters in the checkpoint, %zu here)", fn, g, np, gr->n);
        const void *vals = take(r, nv * sizeof(double));
        const uint8_t *rt = take(r, nh);
        if (L && vals && rt) {
            memcpy(L->values + g * nv, vals, nv * sizeof(double));
            memcpy(L->runtime + g * nh, rt, nh);
        }
        for (size_t i = 0; i < gr->n && !r->bad; i++) {
            const rt_param *p = &gr->params[i];
            int64_t n = (int64_t)get_u64(r), step = (int64_t)get_u64(r);
            uint64_t present = get_u64(r);
            if (r->bad)
                break;
            if (n != p->n)
                return FAIL("%s: group %zu parameter %zu has %lld elements in the "
                            "checkpoint, %lld here", fn, g, i, (long long)n,
                            (long long)p->n);
            if (step < 0 || (ns < 64 && present >> ns))
                return FAIL("%s: group %zu parameter %zu: corrupt step count or "
                            "state set", fn, g, i);
            if (L)
                L->steps[g][i] = step;
            for (size_t k = 0; k < ns && !r->bad; k++) {
                if (!(present >> k & 1))
                    continue;
                uint64_t count = get_u64(r);
                if (count != (uint64_t)n && count != 1)
                    return FAIL("%s: group %zu parameter %zu: state '%s' has %llu "
                                "values, not %lld or 1", fn, g, i,
                                cg_spec_state_name(s, k), (unsigned long long)count,
                                (long long)n);
                const void *data = take(r, count * sizeof(float));
                if (L && data && count == 1)
                    L->scalar[g][i] |= 1ull << k;
                if (L && data) {
                    size_t bytes = ((size_t)count * sizeof(float) + 63) & ~(size_t)63;
                    if (!(L->state[g][i * ns + k] = aligned_alloc(64, bytes)))
                        return (rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory",
                                        fn), 0);
                    memcpy(L->state[g][i * ns + k], data, count * sizeof(float));
                }
            }
        }
    }
    if (r->bad || r->pos != r->len)
        return FAIL("%s: checkpoint is truncated or malformed at byte %zu", fn,
                    r->pos);
    return 1;
}

static void loaded_free(jopt_optim *opt, loaded *L)
{
    size_t ns = cg_spec_nstate(opt->spec);
    for (size_t g = 0; L->state && g < opt->ngroups; g++) {
        for (size_t k = 0; L->state[g] && k < opt->groups[g].n * ns; k++)
            free(L->state[g][k]);
        free(L->state[g]);
        if (L->steps)
            free(L->steps[g]);
        if (L->scalar)
            free(L->scalar[g]);
    }
    free(L->state);
    free(L->steps);
    free(L->scalar);
    free(L->values);
    free(L->runtime);
}

JOPT_API int jopt_state_load_mem(jopt_optim *opt, const void *buf, size_t len)
{
    static const char fn[] = "jopt_state_load";
    if (!opt)
        return JOPT_EINVAL;
    if (!buf)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: buf is NULL", fn);
    /* the checksum covers everything: flipped bits and cut files stop here */
    if (len < 16 || memcmp(buf, MAGIC, 8) != 0)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: not a jopt checkpoint (%s)", fn,
                       len < 16 ? "too short" : "wrong magic");
    uint64_t sum;
    memcpy(&sum, (const unsigned char *)buf + len - 8, 8);
    if (fnv(buf, len - 8) != sum)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: checksum mismatch: the "
                       "checkpoint is truncated or corrupt", fn);
    in r = {buf, len - 8, 0, 0};
    if (!parse(opt, &r, NULL, fn))
        return JOPT_EINVAL;

    /* everything checks: now build the new state and kernels aside */
    size_t ns = cg_spec_nstate(opt->spec), nh = cg_spec_nhyper(opt->spec);
    size_t nv = cg_spec_nvalues(opt->spec), ng = opt->ngroups;
    loaded L = {calloc(ng * nv + 1, sizeof(double)), calloc(ng * nh + 1, 1),
                calloc(ng, sizeof(float **)), calloc(ng, sizeof(int64_t *)),
                calloc(ng, sizeof(uint64_t *))};
    cg_kernel **kernels = calloc(2 * ng + 1, sizeof *kernels);
    int rc = JOPT_OK;
    if (!L.values || !L.runtime || !L.state || !L.steps || !L.scalar || !kernels)
        goto oom;
    for (size_t g = 0; g < ng; g++) {
        L.state[g] = calloc(opt->groups[g].n * ns + 1, sizeof(float *));
        L.steps[g] = calloc(opt->groups[g].n + 1, sizeof(int64_t));
        L.scalar[g] = calloc(opt->groups[g].n + 1, sizeof(uint64_t));
        if (!L.state[g] || !L.steps[g] || !L.scalar[g])
            goto oom;
    }
    r = (in){buf, len - 8, 0, 0};
    if (!parse(opt, &r, &L, fn)) {
        rc = JOPT_ENOMEM; /* the file checked once; only memory can fail */
        goto done;
    }
    for (size_t g = 0; g < ng; g++) {
        char where[96];
        snprintf(where, sizeof where, "%s: group %zu", fn, g);
        if ((rc = rt_check_values(opt, where, L.values + g * nv)) ||
            (rc = rt_group_kernels(opt, where, L.values + g * nv,
                                   L.runtime + g * nh, &kernels[2 * g],
                                   &kernels[2 * g + 1])))
            goto done;
        size_t need = rt_uniforms_needed(kernels[2 * g], kernels[2 * g + 1]);
        if (rt_reserve_uniforms(opt, need))
            goto oom;
    }
    /* swap in: nothing below can fail */
    for (size_t g = 0; g < ng; g++) {
        rt_group *gr = &opt->groups[g];
        memcpy(gr->values, L.values + g * nv, nv * sizeof(double));
        memcpy(gr->runtime, L.runtime + g * nh, nh);
        cg_kernel_release(gr->steady);
        cg_kernel_release(gr->fresh);
        gr->steady = kernels[2 * g];
        gr->fresh = kernels[2 * g + 1];
        kernels[2 * g] = kernels[2 * g + 1] = NULL;
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            for (size_t k = 0; k < ns; k++) {
                free(p->state[k]);
                p->state[k] = L.state[g][i * ns + k];
                L.state[g][i * ns + k] = NULL;
            }
            p->step = L.steps[g][i];
            p->scalar_mask = L.scalar[g][i];
            p->fresh = 0;
        }
    }
    goto done;
oom:
    rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
done:
    for (size_t k = 0; kernels && k < 2 * ng; k++)
        cg_kernel_release(kernels[k]);
    free(kernels);
    loaded_free(opt, &L);
    return rc;
}

JOPT_API int jopt_state_load(jopt_optim *opt, const char *path)
{
    static const char fn[] = "jopt_state_load";
    if (!opt)
        return JOPT_EINVAL;
    if (!path)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: path is NULL", fn);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = fd < 0 ? errno : EISDIR;
        if (fd >= 0)
            close(fd);
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: cannot read '%s': %s", fn,
                       path, strerror(e));
    }
    /* never more than the file holds, whatever its lengths say */
    size_t len = (size_t)st.st_size;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory reading '%s'",
                       fn, path);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    int rc = got == len ? jopt_state_load_mem(opt, buf, len)
                        : rt_fail(opt->ctx, JOPT_EINVAL, "%s: cannot read '%s'",
                                  fn, path);
    free(buf);
    return rc;
}
