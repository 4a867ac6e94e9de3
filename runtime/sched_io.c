/*
 * sched_io.c - saving and loading a scheduler's state, for resuming: its
 * epochs, counters and lrs, its children's, and a hash of the options
 * each was made with, so that a state loads only into a scheduler made
 * the same way (docs/schedulers.md).  The optimizer's part, the lrs and
 * the scheduler keys, is saved with the optimizer (checkpoint.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched_int.h"

/* ---- what a saved state is valid for ----------------------------------- */

static uint64_t hash_i(uint64_t h, int64_t v) { return cg_fnv(h, &v, 8); }
static uint64_t hash_d(uint64_t h, double v) { return cg_fnv(h, &v, 8); }

static uint64_t hash_ds(uint64_t h, const double *a, size_t n)
{
    return a ? cg_fnv(hash_i(h, (int64_t)n), a, n * sizeof *a) : hash_i(h, -1);
}

/* FNV-1a of everything the constructor read or derived from its options
 * (fields a kind does not use are zero), and `pre`: cyclic's base_lr,
 * onecycle's max_lr.  A composite's children have their own.  LambdaLR's
 * callback is not part of it: it cannot be saved, as in torch. */
uint64_t rt_sched_options_hash(const jopt_sched *s, const double *pre)
{
    uint64_t h = CG_FNV_INIT;
    size_t ng = s->ngroups;
    h = hash_i(h, s->kind);
    h = hash_i(h, (int64_t)ng);
    h = hash_i(h, (int64_t)s->nchildren);
    h = hash_d(h, s->gamma);
    h = hash_d(h, s->factor);
    h = hash_d(h, s->start_factor);
    h = hash_d(h, s->end_factor);
    h = hash_d(h, s->eta_min);
    h = hash_d(h, s->power);
    h = hash_i(h, s->step_size);
    h = hash_i(h, s->T_max);
    h = hash_i(h, s->T_0);
    h = hash_i(h, s->T_mult);
    h = hash_i(h, s->total_iters);
    h = hash_i(h, (int64_t)s->nmilestones);
    for (size_t i = 0; i < s->nmilestones; i++)
        h = hash_i(h, s->milestones[i]);
    h = hash_i(h, s->total_steps);
    h = hash_d(h, s->div_factor);
    h = hash_d(h, s->final_div_factor);
    h = hash_i(h, s->nphases);
    for (int i = 0; i < s->nphases; i++) {
        const phase *ph = &s->phases[i];
        h = hash_d(h, ph->end_step);
        h = hash_i(h, ph->start_lr);
        h = hash_i(h, ph->end_lr);
        h = hash_i(h, ph->start_mom);
        h = hash_i(h, ph->end_mom);
    }
    h = hash_i(h, s->anneal_cos);
    h = hash_i(h, s->cycle_momentum);
    h = hash_i(h, s->use_beta1);
    h = hash_ds(h, s->max_lrs, ng);
    h = hash_ds(h, s->base_moms, ng);
    h = hash_ds(h, s->max_moms, ng);
    h = hash_d(h, s->total_size);
    h = hash_d(h, s->step_ratio);
    h = hash_i(h, s->cyc_mode);
    h = hash_i(h, s->mode_max);
    h = hash_i(h, s->thr_abs);
    h = hash_d(h, s->threshold);
    h = hash_d(h, s->eps);
    h = hash_ds(h, s->min_lrs, ng);
    h = hash_i(h, s->patience);
    h = hash_i(h, s->cooldown);
    return hash_ds(h, pre, pre ? ng : 0);
}

/* ---- saving and loading a scheduler's state ----------------------------- */

/* Format (version 1, little-endian, docs/schedulers.md):
 *   "JOPTSCHD" u32 version u32 reserved u32 ngroups
 *   the tree, depth first from the root; per scheduler:
 *     u32 len, torch class name; u64 options hash; u32 nchildren
 *     i64 last_epoch, step_count, T_cur, T_i; f64 best;
 *     i64 num_bad_epochs, cooldown_counter
 *     f64 base_lrs[ngroups], f64 last_lr[ngroups]
 *   u64 checksum (FNV-1a over every byte before it) */
#define SCHED_MAGIC "JOPTSCHD"
#define SCHED_VERSION 1u

static void put_node(rt_out *o, const jopt_sched *s)
{
    const sched_state *st = &s->st;
    rt_put_str(o, rt_sched_class_names[s->kind]);
    rt_put_u64(o, s->hash);
    rt_put_u32(o, (uint32_t)s->nchildren);
    rt_put_u64(o, (uint64_t)st->last_epoch);
    rt_put_u64(o, (uint64_t)st->step_count);
    rt_put_u64(o, (uint64_t)st->T_cur);
    rt_put_u64(o, (uint64_t)st->T_i);
    rt_put_f64(o, st->best);
    rt_put_u64(o, (uint64_t)st->num_bad);
    rt_put_u64(o, (uint64_t)st->cooldown_counter);
    rt_put(o, s->base_lrs, s->ngroups * sizeof(double));
    rt_put(o, s->last_lr, s->ngroups * sizeof(double));
    for (size_t i = 0; i < s->nchildren; i++)
        put_node(o, s->children[i]);
}

static void sched_serialise(const jopt_sched *s, rt_out *o)
{
    rt_put(o, SCHED_MAGIC, 8);
    rt_put_u32(o, SCHED_VERSION);
    rt_put_u32(o, 0);
    rt_put_u32(o, (uint32_t)s->ngroups);
    put_node(o, s);
    rt_put_seal(o);
}

JOPT_API int jopt_sched_state_size(const jopt_sched *s, size_t *len)
{
    RT_API_SCOPE(s);
    if (!s)
        return JOPT_EINVAL;
    if (!len)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "jopt_sched_state_size: len "
                       "is NULL");
    rt_out o = {NULL, 0, 0};
    sched_serialise(s, &o);
    *len = o.len;
    return JOPT_OK;
}

JOPT_API int jopt_sched_save_mem(const jopt_sched *s, void *buf, size_t cap,
                                 size_t *len)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_sched_save_mem";
    if (!s)
        return JOPT_EINVAL;
    size_t need;
    jopt_sched_state_size(s, &need);
    if (len)
        *len = need;
    if (!buf)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: buf is NULL", fn);
    if (cap < need)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: the buffer holds %zu "
                       "bytes; the scheduler's state needs %zu "
                       "(jopt_sched_state_size)", fn, cap, need);
    rt_out o = {buf, 0, cap};
    sched_serialise(s, &o);
    return JOPT_OK;
}

/* written atomically: if anything fails, the previous file is intact */
JOPT_API int jopt_sched_save(const jopt_sched *s, const char *path)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_sched_save";
    if (!s)
        return JOPT_EINVAL;
    if (!path || !*path)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: path is %s", fn,
                       path ? "empty" : "NULL");
    size_t len;
    jopt_sched_state_size(s, &len);
    unsigned char *buf = cg_malloc(len);
    if (!buf)
        return rt_fail(s->opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    rt_out o = {buf, 0, len};
    sched_serialise(s, &o);
    int rc = rt_write_atomic(s->opt->ctx, fn, path, buf, len);
    cg_free(buf);
    return rc;
}

/* integers a run reaches: counters from -1 (a SequentialLR's waiting
 * child) up to 2^53; beyond, a file is not one jopt wrote */
static int count_ok(int64_t v, int64_t lo)
{
    return v >= lo && v <= MAX_INT_OPTION;
}

typedef struct loader {
    jopt_ctx *ctx;
    const char *fn;
    rt_in r;
    int apply; /* 0: check only; 1: copy into the tree (cannot fail) */
} loader;

#define LFAIL(...) (rt_fail(L->ctx, JOPT_EINVAL, __VA_ARGS__), 0)

/* one scheduler of the tree and its children; `path` is its place in the
 * tree, "" for the root, "1.0" for the first child of the second child */
static int get_node(loader *L, jopt_sched *s, const char *path)
{
    rt_in *r = &L->r;
    char where[64];
    snprintf(where, sizeof where, "%s%s", path[0] ? "child " : "the scheduler",
             path);
    const char *cls = rt_sched_class_names[s->kind];
    uint32_t n = rt_get_u32(r);
    const char *name = rt_take(r, n);
    if (!name)
        return 1; /* truncated: reported by the caller */
    if (n != strlen(cls) || memcmp(name, cls, n) != 0) {
        int printable = n > 0 && n <= 40;
        for (uint32_t i = 0; i < n && printable; i++)
            printable = name[i] >= 'A' && name[i] <= 'z';
        return LFAIL("%s: the file holds the state of %s%.*s; %s is %s %s",
                     L->fn, !printable ? "another kind of scheduler"
                            : strchr("AEIOU", name[0]) ? "an " : "a ",
                     printable ? (int)n : 0, name, where,
                     strchr("AEIOU", cls[0]) ? "an" : "a", cls);
    }
    uint64_t hash = rt_get_u64(r);
    uint32_t nc = rt_get_u32(r);
    if (!r->bad && nc != s->nchildren)
        return LFAIL("%s: the file's %s has %u schedulers; %s has %zu", L->fn,
                     cls, nc, where, s->nchildren);
    if (!r->bad && hash != s->hash)
        return LFAIL("%s: the file's %s was made with other options than %s "
                     "(or for another optimizer)", L->fn, cls, where);
    sched_state st;
    st.last_epoch = (int64_t)rt_get_u64(r);
    st.step_count = (int64_t)rt_get_u64(r);
    st.T_cur = (int64_t)rt_get_u64(r);
    st.T_i = (int64_t)rt_get_u64(r);
    st.best = rt_get_f64(r);
    st.num_bad = (int64_t)rt_get_u64(r);
    st.cooldown_counter = (int64_t)rt_get_u64(r);
    const void *base = rt_take(r, s->ngroups * sizeof(double));
    const void *last = rt_take(r, s->ngroups * sizeof(double));
    if (r->bad)
        return 1;
    if (!count_ok(st.last_epoch, -1) || !count_ok(st.step_count, 0) ||
        !count_ok(st.num_bad, 0) || !count_ok(st.cooldown_counter, 0) ||
        (s->kind == K_WARM &&
         (!count_ok(st.T_i, 1) || st.T_cur < -1 || st.T_cur >= st.T_i)))
        return LFAIL("%s: the file's state of %s is corrupt (an epoch or "
                     "counter out of range)", L->fn, where);
    /* lrs are finite; plateau's best starts at +-inf and never turns NaN */
    if (isnan(st.best))
        return LFAIL("%s: the file's state of %s is corrupt (best is NaN)",
                     L->fn, where);
    for (size_t g = 0; g < 2 * s->ngroups; g++) {
        double v;
        memcpy(&v, (const char *)(g < s->ngroups ? base : last) +
                       (g % s->ngroups) * sizeof v, sizeof v);
        if (!isfinite(v))
            return LFAIL("%s: the file's state of %s is corrupt (group %zu's "
                         "%s is %g, not a finite number)", L->fn, where,
                         g % s->ngroups, g < s->ngroups ? "base_lr" : "last_lr",
                         v);
    }
    if (L->apply) {
        s->st = st;
        memcpy(s->base_lrs, base, s->ngroups * sizeof(double));
        memcpy(s->last_lr, last, s->ngroups * sizeof(double));
    }
    for (size_t i = 0; i < s->nchildren && !r->bad; i++) {
        char sub[48];
        snprintf(sub, sizeof sub, "%.24s%s%zu", path, path[0] ? "." : "", i);
        if (!get_node(L, s->children[i], sub))
            return 0;
    }
    return 1;
}

static int sched_parse(loader *L, jopt_sched *s)
{
    rt_in *r = &L->r;
    const void *magic = rt_take(r, 8);
    if (!magic || memcmp(magic, SCHED_MAGIC, 8) != 0)
        return LFAIL("%s: not a jopt scheduler state (wrong magic)", L->fn);
    uint32_t version = rt_get_u32(r);
    uint32_t reserved = rt_get_u32(r);
    if (version != SCHED_VERSION)
        return LFAIL("%s: scheduler state version %u; this jopt reads "
                     "version %u", L->fn, version, SCHED_VERSION);
    if (reserved != 0)
        return LFAIL("%s: the scheduler state's reserved field is %u, not 0 "
                     "(a newer format, or corrupt)", L->fn, reserved);
    uint32_t ng = rt_get_u32(r);
    if (!r->bad && ng != s->ngroups)
        return LFAIL("%s: the file's scheduler was made for %u parameter "
                     "groups; this one for %zu", L->fn, ng, s->ngroups);
    if (!r->bad && !get_node(L, s, ""))
        return 0;
    if (r->bad || r->pos != r->len)
        return LFAIL("%s: scheduler state is truncated or malformed at byte "
                     "%zu", L->fn, r->pos);
    return 1;
}

JOPT_API int jopt_sched_load_mem(jopt_sched *s, const void *buf, size_t len)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_sched_load";
    if (!s)
        return JOPT_EINVAL;
    jopt_ctx *ctx = s->opt->ctx;
    if (!buf)
        return rt_fail(ctx, JOPT_EINVAL, "%s: buf is NULL", fn);
    /* the checksum covers everything: flipped bits and cut files stop here */
    if (len < 28 || memcmp(buf, SCHED_MAGIC, 8) != 0)
        return rt_fail(ctx, JOPT_EINVAL, "%s: not a jopt scheduler state (%s)",
                       fn, len < 28 ? "too short" : "wrong magic");
    if (!rt_sealed(buf, len))
        return rt_fail(ctx, JOPT_EINVAL, "%s: checksum mismatch: the scheduler "
                       "state is truncated or corrupt", fn);
    loader L = {ctx, fn, {buf, len - 8, 0, 0}, 0};
    if (!sched_parse(&L, s))
        return JOPT_EINVAL;
    /* everything checks: copy it in (nothing below can fail) */
    L = (loader){ctx, fn, {buf, len - 8, 0, 0}, 1};
    sched_parse(&L, s);
    return JOPT_OK;
}

JOPT_API int jopt_sched_load(jopt_sched *s, const char *path)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_sched_load";
    if (!s)
        return JOPT_EINVAL;
    if (!path)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: path is NULL", fn);
    unsigned char *buf;
    size_t len;
    int rc = rt_read_file(s->opt->ctx, fn, path, &buf, &len);
    if (rc)
        return rc;
    rc = jopt_sched_load_mem(s, buf, len);
    cg_free(buf);
    return rc;
}
