/*
 * checkpoint.c - saving and loading everything needed to resume.
 *
 * Format (version 2, little-endian, see docs/checkpoint.md):
 *   "JOPTCKPT" u32 version u32 reserved
 *   u32 len, spec name; u64 spec text hash
 *   u32 nvalues u32 nhyper u32 nstate; per state: u32 len, name
 *   u32 nkeys; per scheduler key: u32 len, name
 *   u32 ngroups; per group: u32 nparams, f64 values[nvalues], u8 runtime[nhyper],
 *     f64 keys[nkeys] (NaN: unset), u64 group step, u64 group-state set
 *     (bit per state), f64 per group state, u8 state_dtype,
 *     u8 stochastic_rounding, u64 seed,
 *     per parameter: i64 numel, u32 ndim, i64 sizes[ndim], i64 step,
 *       u64 present (bit per state), per present state: u64 count,
 *       u8 dtype, data[count] (4 or 2 bytes each, by dtype)
 *   closure optimizers only: u64 steps, u64 len, the driver's state
 *     (rt_closure_save)
 *   u64 checksum (FNV-1a over every byte before it)
 *
 * A sharded optimizer's file wraps this in a shard's header and a second
 * checksum (shard.c, rt_shard_put and rt_shard_open).
 *
 * Loading reads the whole file (no more than it holds), checks everything
 * (checksum first, then every length and name against the optimizer)
 * before it allocates state or changes anything, and builds the kernels
 * for the loaded values before it swaps anything in.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "closure.h"
#include "shard.h"

#define MAGIC "JOPTCKPT"
#define VERSION 3u /* versions 1 (no shapes, no group state) and 2 (no
                      element types: all float32) still load */
#define MAX_STATES 62 /* CG_MAX_SLOTS - 2: one presence bit each in a u64 */

/* ---- writing ------------------------------------------------------------ */

/* the spec text's hash; files of jopt before issue 16 used another
 * FNV offset basis (CG_FNV_INIT_OLD) */
static uint64_t spec_hash(const cg_spec *s, uint64_t basis)
{
    size_t len;
    const char *src = cg_spec_text(s, &len);
    return cg_fnv(basis, src, len);
}

static void serialise(const jopt_optim *opt, rt_out *o)
{
    const cg_spec *s = opt->spec;
    size_t ns = cg_spec_nstate(s), nh = cg_spec_nhyper(s), nv = cg_spec_nvalues(s);
    rt_put(o, MAGIC, 8);
    rt_put_u32(o, VERSION);
    rt_put_u32(o, 0);
    rt_put_str(o, cg_spec_name(s));
    rt_put_u64(o, spec_hash(s, CG_FNV_INIT));
    rt_put_u32(o, (uint32_t)nv);
    rt_put_u32(o, (uint32_t)nh);
    rt_put_u32(o, (uint32_t)ns);
    for (size_t i = 0; i < ns; i++)
        rt_put_str(o, cg_spec_state_name(s, i));
    rt_put_u32(o, RT_NKEYS);
    for (size_t k = 0; k < RT_NKEYS; k++)
        rt_put_str(o, rt_key_names[k]);
    rt_put_u32(o, (uint32_t)opt->ngroups);
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        rt_put_u32(o, (uint32_t)gr->n);
        rt_put(o, gr->values, nv * sizeof(double));
        rt_put(o, gr->runtime, nh);
        rt_put(o, gr->keys, RT_NKEYS * sizeof(double));
        rt_put_u64(o, (uint64_t)gr->step);
        uint64_t gset = 0;
        for (size_t k = 0; k < ns; k++)
            gset |= (uint64_t)(gr->gstate && gr->gstate[k] == gr->gstate[k]) << k;
        rt_put_u64(o, gset);
        for (size_t k = 0; k < ns; k++)
            if (gset >> k & 1)
                rt_put_f64(o, gr->gstate[k]);
        uint8_t prec[2] = {gr->prec.state_dtype, gr->prec.stochastic};
        rt_put(o, prec, 2);
        rt_put_u64(o, gr->prec.seed);
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            uint64_t present = 0;
            for (size_t k = 0; k < ns; k++)
                present |= (uint64_t)(p->state[k] != NULL) << k;
            rt_put_u64(o, (uint64_t)p->n);
            rt_put_u32(o, (uint32_t)p->rank);
            for (int d = p->rank - 1; d >= 0; d--) /* torch's order */
                rt_put_u64(o, (uint64_t)p->shape[d]);
            rt_put_u64(o, (uint64_t)p->step);
            rt_put_u64(o, present);
            for (size_t k = 0; k < ns; k++) {
                if (!p->state[k])
                    continue;
                uint64_t count = (uint64_t)p->state_n[k];
                rt_put_u64(o, count);
                rt_put(o, &p->state_dt[k], 1);
                rt_put_state(opt, o, p->state[k], count * (size_t)cg_dt_size(p->state_dt[k]));
            }
        }
    }
    if (opt->closure)
        rt_closure_save(opt->closure, o);
    rt_put_seal(o);
}

/* The bytes jopt_state_save writes: the checkpoint, or for a sharded
 * optimizer the checkpoint inside its shard's header and checksum. */
static size_t file_len(const jopt_optim *opt)
{
    rt_out o = {NULL, 0, 0};
    serialise(opt, &o);
    return o.len + (opt->shard ? RT_SHARD_HEAD + 8 : 0);
}

static void file_write(const jopt_optim *opt, unsigned char *buf, size_t len)
{
    size_t head = opt->shard ? RT_SHARD_HEAD : 0;
    rt_out o = {buf + head, 0, len - head};
    serialise(opt, &o);
    if (opt->shard) {
        rt_out h = {buf, 0, head};
        rt_shard_put(opt, &h);
        rt_out seal = {buf, len - 8, len};
        rt_put_seal(&seal);
    }
}

JOPT_API int jopt_state_size(const jopt_optim *opt, size_t *len)
{
    RT_API_SCOPE(opt);
    if (!opt)
        return JOPT_EINVAL;
    if (!len)
        return rt_fail(opt->ctx, JOPT_EINVAL, "jopt_state_size: len is NULL");
    int rc = opt->gpu ? rt_gpu_pull(opt, "jopt_state_size") : JOPT_OK;
    if (rc)
        return rc;
    *len = file_len(opt);
    return JOPT_OK;
}

JOPT_API int jopt_state_save_mem(const jopt_optim *opt, void *buf, size_t cap,
                                 size_t *len)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_state_save_mem";
    if (!opt)
        return JOPT_EINVAL;
    size_t need;
    int rc = jopt_state_size(opt, &need);
    if (rc)
        return rc;
    if (len)
        *len = need;
    if (!buf)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: buf is NULL", fn);
    if (cap < need)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: the buffer holds %zu bytes; "
                       "the checkpoint needs %zu (jopt_state_size)", fn, cap, need);
    if (rt_closure_savable(opt->closure, fn))
        return JOPT_EINVAL;
    file_write(opt, buf, need);
    return rt_gpu_put_status(opt, fn);
}

/* written atomically: if anything fails, the previous file is intact */
JOPT_API int jopt_state_save(const jopt_optim *opt, const char *path)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_state_save";
    if (!opt)
        return JOPT_EINVAL;
    int rc = JOPT_OK;
    if (!path || !*path)
        rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: path is %s", fn,
                     path ? "empty" : "NULL");
    else if (rt_closure_savable(opt->closure, fn))
        rc = JOPT_EINVAL;
    /* a sharded optimizer's processes agree to save (options, steps), and
     * then on whether every one has (the votes count the exchange: the
     * optimizer is const to its user, not to its transport) */
    if (opt->shard)
        rc = rt_shard_gate((jopt_optim *)opt, fn, RT_OP_SAVE, rc, 0);
    if (rc)
        return rc;
    size_t len;
    unsigned char *buf = NULL;
    rc = jopt_state_size(opt, &len);
    if (rc == JOPT_OK)
        buf = cg_malloc(len);
    if (!buf && rc == JOPT_OK)
        rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    if (rc == JOPT_OK) {
        file_write(opt, buf, len);
        rc = rt_gpu_put_status(opt, fn);
        if (rc == JOPT_OK)
            rc = rt_write_atomic(opt->ctx, fn, path, buf, len);
    }
    cg_free(buf);
    if (opt->shard)
        rc = rt_shard_gate((jopt_optim *)opt, fn, RT_OP_SAVE, rc, 0);
    return rc;
}

/* ---- reading ------------------------------------------------------------ */

/* One pass over the file: with `opt` checks it against the optimizer;
 * with `apply`, also copies state into the new arrays. */
typedef struct loaded {
    double *values;  /* ngroups x nvalues */
    uint8_t *runtime; /* ngroups x nhyper */
    double *keys;    /* ngroups x RT_NKEYS */
    float ***state;  /* per group, per param: ns arrays (NULL if absent) */
    int64_t **steps; /* per group, per param */
    int64_t **count; /* per group, per param: ns element counts */
    uint8_t **dt;    /* per group, per param: ns element types */
    int64_t *gstep;  /* per group */
    rt_prec *prec;   /* per group: the state type, rounding and seed */
    double *gstate;  /* ngroups x nstate (NaN: absent) */
    const void *closure; /* a closure optimizer's part, and its length */
    size_t closure_len;
} loaded;

#define FAIL(...) (rt_fail(opt->ctx, JOPT_EINVAL, __VA_ARGS__), 0)

static int parse(jopt_optim *opt, rt_in *r, loaded *L, const char *fn)
{
    const cg_spec *s = opt->spec;
    size_t ns = cg_spec_nstate(s), nh = cg_spec_nhyper(s), nv = cg_spec_nvalues(s);
    const void *magic = rt_take(r, 8);
    if (!magic || memcmp(magic, MAGIC, 8) != 0)
        return FAIL("%s: not a jopt checkpoint (wrong magic)", fn);
    uint32_t version = rt_get_u32(r);
    uint32_t reserved = rt_get_u32(r);
    if (version < 1 || version > VERSION)
        return FAIL("%s: checkpoint version %u; this jopt reads versions 1 to "
                    "%u", fn, version, VERSION);
    if (reserved != 0)
        return FAIL("%s: the checkpoint's reserved field is %u, not 0 (a "
                    "newer format, or corrupt)", fn, reserved);
    if (!rt_get_str_eq(r, cg_spec_name(s)))
        return FAIL("%s: the checkpoint is not of spec '%s' (another "
                    "optimizer's file?)", fn, cg_spec_name(s));
    uint64_t hash = rt_get_u64(r);
    if (hash != spec_hash(s, CG_FNV_INIT) && hash != spec_hash(s, CG_FNV_INIT_OLD))
        return FAIL("%s: the checkpoint was made with a different text of spec "
                    "'%s' (%s)", fn, cg_spec_name(s), cg_spec_path(s));
    if (rt_get_u32(r) != nv || rt_get_u32(r) != nh || rt_get_u32(r) != ns)
        return FAIL("%s: the checkpoint's hyperparameter or state layout is not "
                    "spec '%s''s", fn, cg_spec_name(s));
    for (size_t k = 0; k < ns; k++)
        if (!rt_get_str_eq(r, cg_spec_state_name(s, k)))
            return FAIL("%s: the checkpoint's state %zu is not '%s'", fn, k,
                        cg_spec_state_name(s, k));
    if (rt_get_u32(r) != RT_NKEYS)
        return FAIL("%s: the checkpoint's scheduler keys are not this jopt's",
                    fn);
    for (size_t k = 0; k < RT_NKEYS; k++)
        if (!rt_get_str_eq(r, rt_key_names[k]))
            return FAIL("%s: the checkpoint's scheduler key %zu is not '%s'",
                        fn, k, rt_key_names[k]);
    uint32_t ng = rt_get_u32(r);
    if (!r->bad && ng != opt->ngroups)
        return FAIL("%s: loaded state dict has a different number of parameter "
                    "groups (%u in the checkpoint, %zu here)", fn, ng, opt->ngroups);
    for (size_t g = 0; g < opt->ngroups && !r->bad; g++) {
        const rt_group *gr = &opt->groups[g];
        uint32_t np = rt_get_u32(r);
        if (!r->bad && np != gr->n)
            return FAIL("%s: loaded state dict contains a parameter group that "
                        "doesn't match the size of optimizer's group (group %zu: "
                        "%u parameters in the checkpoint, %zu here)", fn, g, np, gr->n);
        const void *vals = rt_take(r, nv * sizeof(double));
        const uint8_t *rt = rt_take(r, nh);
        const void *keys = rt_take(r, RT_NKEYS * sizeof(double));
        for (size_t h = 0; rt && h < nh; h++)
            if (rt[h] > 1 || (rt[h] && !cg_spec_hyper(s, h)->runtime_ok))
                return FAIL("%s: group %zu: corrupt run-time flag for '%s'", fn, g,
                            cg_spec_hyper(s, h)->name);
        /* a scheduler key is unset (NaN) or a finite number: an lr that
         * reached infinity would fill the parameters with NaN */
        for (size_t k = 0; keys && k < RT_NKEYS; k++) {
            double v;
            memcpy(&v, (const char *)keys + k * sizeof v, sizeof v);
            if (isinf(v))
                return FAIL("%s: group %zu: scheduler key '%s' is %g, not a "
                            "finite number", fn, g, rt_key_names[k], v);
        }
        if (L && vals && rt && keys) {
            memcpy(L->values + g * nv, vals, nv * sizeof(double));
            memcpy(L->runtime + g * nh, rt, nh);
            memcpy(L->keys + g * RT_NKEYS, keys, RT_NKEYS * sizeof(double));
        }
        if (version >= 2) {
            int64_t gstep = (int64_t)rt_get_u64(r);
            uint64_t gset = rt_get_u64(r);
            if (!r->bad && (gstep < 0 || gstep > (int64_t)1 << 53 ||
                            (ns < 64 && gset >> ns)))
                return FAIL("%s: group %zu: corrupt group step or state set", fn, g);
            if (L)
                L->gstep[g] = gstep;
            for (size_t k = 0; k < ns; k++) {
                double v = gset >> k & 1 ? rt_get_f64(r) : NAN;
                if (L)
                    L->gstate[g * ns + k] = v;
            }
        } else if (L) {
            for (size_t k = 0; k < ns; k++)
                L->gstate[g * ns + k] = NAN;
        }
        /* version 3: the group's precision options; before, float32 state
         * and the group's own rounding and seed */
        rt_prec prec = gr->prec;
        prec.state_dtype = CG_DT_F32;
        if (version >= 3) {
            const uint8_t *pb = rt_take(r, 2);
            uint64_t seed = rt_get_u64(r);
            if (pb && !r->bad) {
                if (pb[0] >= CG_NDT || pb[1] > 1 || seed > (uint64_t)1 << 53)
                    return FAIL("%s: group %zu: corrupt state type, rounding or "
                                "seed", fn, g);
                prec.state_dtype = pb[0];
                prec.stochastic = pb[1];
                prec.seed = seed;
            }
        }
        if (!r->bad && prec.state_dtype != gr->prec.state_dtype)
            return FAIL("%s: group %zu: the checkpoint's per-element state is %s; "
                        "this optimizer keeps %s (its state_dtype option)", fn, g,
                        cg_dt_name(prec.state_dtype), cg_dt_name(gr->prec.state_dtype));
        if (L)
            L->prec[g] = prec;
        for (size_t i = 0; i < gr->n && !r->bad; i++) {
            const rt_param *p = &gr->params[i];
            int64_t n = (int64_t)rt_get_u64(r);
            if (!r->bad && n != p->n)
                return FAIL("%s: group %zu parameter %zu has %lld elements in the "
                            "checkpoint, %lld here", fn, g, i, (long long)n,
                            (long long)p->n);
            if (version >= 2) {
                uint32_t rank = rt_get_u32(r);
                int same = rank == (uint32_t)p->rank;
                for (uint32_t d = 0; d < rank && rank <= CG_MAX_RANK && !r->bad; d++)
                    same &= (int64_t)rt_get_u64(r) == p->shape[rank - 1 - d];
                if (!r->bad && !same)
                    return FAIL("%s: group %zu parameter %zu has another shape in "
                                "the checkpoint", fn, g, i);
            }
            int64_t step = (int64_t)rt_get_u64(r);
            uint64_t present = rt_get_u64(r);
            if (r->bad)
                break;
            if (step < 0 || step > (int64_t)1 << 53 || (ns < 64 && present >> ns))
                return FAIL("%s: group %zu parameter %zu: corrupt step count or "
                            "state set", fn, g, i);
            if (L)
                L->steps[g][i] = step;
            for (size_t k = 0; k < ns && !r->bad; k++) {
                if (!(present >> k & 1))
                    continue;
                uint64_t count = rt_get_u64(r);
                if (count > (uint64_t)n && count > 2)
                    return FAIL("%s: group %zu parameter %zu: state '%s' has %llu "
                                "values, more than the parameter's %lld", fn, g,
                                i, cg_spec_state_name(s, k),
                                (unsigned long long)count, (long long)n);
                const uint8_t *dtp = version >= 3 ? rt_take(r, 1) : NULL;
                int dt = dtp ? *dtp : CG_DT_F32;
                if (dt >= CG_NDT)
                    return FAIL("%s: group %zu parameter %zu: state '%s' has a corrupt "
                                "element type", fn, g, i, cg_spec_state_name(s, k));
                size_t size = (size_t)count * (size_t)cg_dt_size(dt);
                const void *data = rt_take(r, size);
                if (L && data) {
                    L->count[g][i * ns + k] = (int64_t)count;
                    L->dt[g][i * ns + k] = (uint8_t)dt;
                    if (!(L->state[g][i * ns + k] = rt_state_alloc(p, k, size)))
                        return (rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory",
                                        fn), 0);
                    memcpy(L->state[g][i * ns + k], data, size);
                }
            }
            /* version 1 kept no group step: the group has stepped at least
             * as often as its busiest parameter */
            if (L && version < 2 && L->steps[g][i] > L->gstep[g])
                L->gstep[g] = L->steps[g][i];
        }
    }
    if (opt->closure && !r->bad) { /* its step count and driver state */
        size_t at = r->pos;
        rt_get_u64(r);
        const void *blob = rt_take(r, rt_get_u64(r));
        if (L && blob) {
            L->closure = r->p + at;
            L->closure_len = r->pos - at;
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
            cg_free(L->state[g][k]);
        cg_free(L->state[g]);
        if (L->steps)
            cg_free(L->steps[g]);
        if (L->count)
            cg_free(L->count[g]);
        if (L->dt)
            cg_free(L->dt[g]);
    }
    cg_free(L->state);
    cg_free(L->steps);
    cg_free(L->count);
    cg_free(L->dt);
    cg_free(L->prec);
    cg_free(L->gstep);
    cg_free(L->gstate);
    cg_free(L->values);
    cg_free(L->runtime);
    cg_free(L->keys);
}

/* State k of p becomes the loaded buffer *in of n elements of type dt
 * (NULL: absent).
 * jopt.h promises that the buffers jopt_state_get handed out stay valid
 * until the optimizer is freed, so the data is copied into the buffer p
 * has (or a kept one) when the sizes in bytes match, and a buffer taken out is kept
 * (rt_spare_keep), never freed. */
static void install_state(jopt_optim *opt, rt_param *p, size_t k, float **in,
                          int64_t n, int dt)
{
    float *old = p->state[k];
    int64_t bytes = n * cg_dt_size(dt), had = p->state_n[k] * cg_dt_size(p->state_dt[k]);
    if (old && (!*in || had != bytes)) { /* taken out: kept */
        rt_spare_keep(opt, p, k, old, had);
        old = NULL;
    }
    if (!old && *in)
        old = rt_spare_take(p, k, bytes);
    if (old && *in) {
        memcpy(old, *in, (size_t)bytes);
        cg_free(*in);
        *in = NULL;
    }
    p->state[k] = old ? old : *in;
    *in = NULL;
}

/* The load; for a sharded optimizer, *gated says whether it reached the
 * vote before the swap (every process votes once: jopt_state_load_mem
 * votes for a load that failed before). */
static int load_mem(jopt_optim *opt, const void *buf, size_t len, int *gated)
{
    static const char fn[] = "jopt_state_load";
    if (rt_busy(opt, fn))
        return JOPT_EINVAL;
    if (!buf)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: buf is NULL", fn);
    /* a shard's file: its header checked, then the checkpoint inside; the
     * id of its save (or of an unsharded file) is what the vote compares */
    uint64_t id = 0;
    int rc = rt_shard_open(opt, fn, &buf, &len, &id);
    if (rc)
        return rc;
    /* the checksum covers everything: flipped bits and cut files stop here */
    if (len < 16 || memcmp(buf, MAGIC, 8) != 0)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: not a jopt checkpoint (%s)", fn,
                       len < 16 ? "too short" : "wrong magic");
    if (!rt_sealed(buf, len))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: checksum mismatch: the "
                       "checkpoint is truncated or corrupt", fn);
    rt_in r = {buf, len - 8, 0, 0};
    if (!parse(opt, &r, NULL, fn))
        return JOPT_EINVAL;
    if (opt->gpu && rt_gpu_pull(opt, fn)) /* the device's group states, and quiet */
        return JOPT_EDEVICE;

    /* everything checks: now build the new state and kernels aside */
    size_t ns = cg_spec_nstate(opt->spec), nh = cg_spec_nhyper(opt->spec);
    size_t nv = cg_spec_nvalues(opt->spec), ng = opt->ngroups;
    loaded L = {.values = cg_calloc(ng * nv + 1, sizeof(double)),
                .runtime = cg_calloc(ng * nh + 1, 1),
                .keys = cg_calloc(ng * RT_NKEYS + 1, sizeof(double)),
                .state = cg_calloc(ng, sizeof(float **)),
                .steps = cg_calloc(ng, sizeof(int64_t *)),
                .count = cg_calloc(ng, sizeof(int64_t *)),
                .dt = cg_calloc(ng, sizeof(uint8_t *)),
                .prec = cg_calloc(ng + 1, sizeof(rt_prec)),
                .gstep = cg_calloc(ng + 1, sizeof(int64_t)),
                .gstate = cg_calloc(ng * ns + 1, sizeof(double))};
    rt_kset *kernels = cg_calloc(ng + 1, sizeof *kernels);
    if (!L.values || !L.runtime || !L.keys || !L.state || !L.steps ||
        !L.count || !L.dt || !L.prec || !L.gstep || !L.gstate || !kernels)
        goto oom;
    for (size_t g = 0; g < ng; g++) {
        L.state[g] = cg_calloc(opt->groups[g].n * ns + 1, sizeof(float *));
        L.steps[g] = cg_calloc(opt->groups[g].n + 1, sizeof(int64_t));
        L.count[g] = cg_calloc(opt->groups[g].n * ns + 1, sizeof(int64_t));
        L.dt[g] = cg_calloc(opt->groups[g].n * ns + 1, 1);
        if (!L.state[g] || !L.steps[g] || !L.count[g] || !L.dt[g])
            goto oom;
    }
    r = (rt_in){buf, len - 8, 0, 0};
    if (!parse(opt, &r, &L, fn)) {
        rc = JOPT_ENOMEM; /* the file checked once; only memory can fail */
        goto done;
    }
    for (size_t g = 0; g < ng; g++) {
        char where[96];
        snprintf(where, sizeof where, "%s: group %zu", fn, g);
        if ((rc = rt_check_values(opt, where, L.values + g * nv)))
            goto done;
        if (opt->closure)
            continue;
        rt_kset none = {NULL, 0, 0, 0, 0};
        const rt_group *gr = &opt->groups[g];
        if ((rc = rt_kset_rebuild(opt, gr, where, L.values + g * nv,
                                  L.runtime + g * nh, &L.prec[g], &none, 0, &kernels[g])))
            goto done;
        if (rt_reserve_uniforms(opt, rt_kset_uniforms(&kernels[g])))
            goto oom;
        /* each saved state must be of the size the kernel for the saved
         * values gives it, and group states must be the spec's */
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            const cg_kernel *k;
            rt_variant v = rt_update_variant(p);
            if ((rc = rt_kset_get(opt, &kernels[g], where, L.values + g * nv,
                                  L.runtime + g * nh, &v, &k)))
                goto done;
            int bad = rt_state_misfit(k, p, L.count[g] + i * ns, L.dt[g] + i * ns);
            if (bad >= 0) {
                rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: "
                             "state '%s' has the wrong size or element type for spec '%s'", fn, g,
                             i, cg_spec_state_name(opt->spec, (size_t)bad),
                             cg_spec_name(opt->spec));
                goto done;
            }
        }
    }
    void *cstate = NULL;
    int64_t csteps = 0;
    if (opt->closure && (rc = rt_closure_load(opt->closure, L.closure,
                                              L.closure_len, fn, &cstate, &csteps)))
        goto done;
    if (opt->shard) { /* every process has come this far, or none swaps */
        *gated = 1;
        if ((rc = rt_shard_gate(opt, fn, RT_OP_LOAD, JOPT_OK, id)))
            goto done;
    }
    if (opt->closure)
        rt_closure_adopt(opt->closure, cstate, csteps);
    /* on a GPU: the loaded state goes to the device, all of it or none */
    for (size_t g = 0; opt->gpu && g < ng; g++)
        if ((rc = rt_gpu_adopt(opt, fn, L.state[g], L.count[g], opt->groups[g].n * ns))) {
            for (size_t h = 0; h < g; h++) /* what went over comes back */
                for (size_t k = 0; k < opt->groups[h].n * ns; k++) {
                    rt_state_free(opt, L.state[h][k]);
                    L.state[h][k] = NULL;
                }
            goto done;
        }
    /* swap in: nothing below can fail */
    for (size_t g = 0; g < ng; g++) {
        rt_group *gr = &opt->groups[g];
        memcpy(gr->values, L.values + g * nv, nv * sizeof(double));
        memcpy(gr->runtime, L.runtime + g * nh, nh);
        memcpy(gr->keys, L.keys + g * RT_NKEYS, RT_NKEYS * sizeof(double));
        if (!opt->closure) {
            rt_kset_free(&gr->ks);
            gr->ks = kernels[g];
            memset(&kernels[g], 0, sizeof kernels[g]);
        }
        gr->step = L.gstep[g];
        gr->prec = L.prec[g];
        for (size_t k = 0; k < ns; k++) /* saved group states; the others as made */
            if (L.gstate[g * ns + k] == L.gstate[g * ns + k])
                gr->gstate[k] = L.gstate[g * ns + k];
        rt_gpu_gstate_changed(opt, g);
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            for (size_t k = 0; k < ns; k++) {
                float **in = &L.state[g][i * ns + k];
                if (p->foreign) { /* another process holds its state */
                    cg_free(*in);
                    *in = NULL;
                }
                if (opt->gpu) { /* device buffers (rt_gpu_adopt) */
                    rt_state_free(opt, p->state[k]);
                    p->state[k] = *in;
                    *in = NULL;
                } else {
                    install_state(opt, p, k, in, L.count[g][i * ns + k],
                                  L.dt[g][i * ns + k]);
                }
                p->state_n[k] = p->state[k] ? L.count[g][i * ns + k] : 0;
                p->state_dt[k] = L.dt[g][i * ns + k];
            }
            p->step = L.steps[g][i];
            p->fresh = 0;
        }
    }
    goto done;
oom:
    rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
done:
    for (size_t g = 0; kernels && g < ng; g++)
        rt_kset_free(&kernels[g]);
    cg_free(kernels);
    loaded_free(opt, &L);
    return rc;
}

JOPT_API int jopt_state_load_mem(jopt_optim *opt, const void *buf, size_t len)
{
    RT_API_SCOPE(opt);
    if (!opt)
        return JOPT_EINVAL;
    int gated = 0, rc = load_mem(opt, buf, len, &gated);
    if (opt->shard && !gated) /* failed here: the others must hear of it */
        rc = rt_shard_gate(opt, "jopt_state_load", RT_OP_LOAD, rc, 0);
    return rc;
}

JOPT_API int jopt_state_load(jopt_optim *opt, const char *path)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_state_load";
    if (!opt)
        return JOPT_EINVAL;
    unsigned char *buf;
    size_t len;
    int rc = !path ? rt_fail(opt->ctx, JOPT_EINVAL, "%s: path is NULL", fn)
                   : rt_read_file(opt->ctx, fn, path, &buf, &len);
    if (rc)
        return opt->shard ? rt_shard_gate(opt, fn, RT_OP_LOAD, rc, 0) : rc;
    rc = jopt_state_load_mem(opt, buf, len);
    cg_free(buf);
    return rc;
}
