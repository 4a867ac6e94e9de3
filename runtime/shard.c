/*
 * shard.c - an optimizer sharded across processes: construction, which
 * process holds which tensor, and the votes that make every process fail
 * alike instead of hanging or diverging (docs/distributed.md).
 *
 *   jopt_optim_new_sharded: jopt_optim_new (every group, every tensor)
 *       -> the partition (whole tensors, largest first, to the process
 *          holding the fewest elements) -> the exchange's buffers
 *       -> a vote: every process's status and digests of its spec,
 *          options and tensors; all fine and equal, or all fail alike
 *
 * Before every collective call (a step, a named kernel, a checkpoint) the
 * processes vote again, after everything that can fail locally and before
 * anything changes.  A vote is a fixed-size record; when a digest differs,
 * a second exchange finds what differs, so the message can name it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard.h"

/* send and receive buffers of the exchange, together, unless the
 * transport says (jopt_comm.buffer_bytes): the window of elements
 * exchanged per process per round follows from it */
#define BUFFER_BUDGET ((size_t)16 << 20)
#define MIN_WINDOW 1024

/* ---- the transport -------------------------------------------------------- */

int rt_shard_allgatherv(rt_shard *sh, const void *send, const size_t *counts,
                        void *recv)
{
    sh->exchanges++;
    sh->bytes_sent += (uint64_t)counts[sh->rank] * (uint64_t)(sh->size - 1);
    return sh->last = sh->comm.allgatherv(sh->comm.user, send, counts, recv);
}

int rt_shard_allgather(rt_shard *sh, const void *send, size_t len, void *recv)
{
    for (int r = 0; r < sh->size; r++)
        sh->rcount[r] = len;
    return rt_shard_allgatherv(sh, send, sh->rcount, recv);
}

int rt_shard_alltoallv(rt_shard *sh, const void *send, void *recv)
{
    sh->exchanges++;
    for (int r = 0; r < sh->size; r++)
        if (r != sh->rank)
            sh->bytes_sent += sh->scount[r];
    return sh->last = sh->comm.alltoallv(sh->comm.user, send, sh->scount,
                                         sh->sdispl, recv, sh->rcount, sh->rdispl);
}

/* the transport's own words for its last failure, or "" */
static const char *why(const rt_shard *sh)
{
    const char *s = sh->comm.errstr && sh->last ? sh->comm.errstr(sh->comm.user, sh->last)
                                                : NULL;
    return s ? s : "";
}

void rt_shard_comm_text(const rt_shard *sh, const char *what, char *buf,
                       size_t cap)
{
    const char *s = why(sh);
    snprintf(buf, cap, "the transport failed (%s%s%s); the processes may no "
             "longer agree: free the optimizer and resume from a checkpoint",
             what, *s ? ": " : "", s);
}

int rt_shard_comm_failed(jopt_optim *opt, const char *fn, const char *what)
{
    char text[512];
    rt_shard_comm_text(opt->shard, what, text, sizeof text);
    return rt_fail(opt->ctx, JOPT_ECOMM, "%s: %s", fn, text);
}

rt_param *rt_shard_param(jopt_optim *opt, size_t t, size_t *group)
{
    const rt_shard *sh = opt->shard;
    size_t g = 0;
    while (g + 1 < opt->ngroups && sh->first[g + 1] <= t)
        g++;
    if (group)
        *group = g;
    return &opt->groups[g].params[t - sh->first[g]];
}

/* ---- votes ------------------------------------------------------------------ */

static const char *op_name(int op)
{
    switch (op) {
    case RT_OP_NEW: return "jopt_optim_new_sharded";
    case RT_OP_STEP: return "jopt_step";
    case RT_OP_CALL: return "jopt_optim_call";
    case RT_OP_SAVE: return "jopt_state_save";
    case RT_OP_LOAD: return "jopt_state_load";
    default: return "an unknown call";
    }
}

/* which tensors take part: a gradient for a step, state for a named
 * kernel (p->step counts on every process, not only the holder's) */
int rt_shard_takes_part(const rt_param *p, int op)
{
    return p->n && (op == RT_OP_STEP ? p->g != NULL : p->step > 0);
}

void rt_shard_vote(const jopt_optim *opt, int op, rt_vote *v)
{
    const rt_shard *sh = opt->shard;
    memset(v, 0, sizeof *v);
    v->rank = sh->rank;
    v->size = sh->size;
    v->op = op;
    size_t len, nv = cg_spec_nvalues(opt->spec);
    const char *text = cg_spec_text(opt->spec, &len), *name = cg_spec_name(opt->spec);
    v->spec = cg_fnv(cg_fnv(CG_FNV_INIT, name, strlen(name) + 1), text, len);
    uint64_t lay = cg_fnv(CG_FNV_INIT, &opt->ngroups, sizeof opt->ngroups);
    uint64_t val = CG_FNV_INIT, pres = CG_FNV_INIT;
    v->ngroups = opt->ngroups;
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        lay = cg_fnv(lay, &gr->n, sizeof gr->n);
        val = cg_fnv(cg_fnv(val, gr->values, nv * sizeof(double)), &gr->step,
                     sizeof gr->step);
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            lay = cg_fnv(cg_fnv(cg_fnv(lay, &p->n, sizeof p->n), &p->rank,
                                sizeof p->rank),
                         p->shape, (size_t)p->rank * sizeof(int64_t));
            uint8_t in = (uint8_t)rt_shard_takes_part(p, op);
            pres = cg_fnv(pres, &in, 1);
            v->ntensors++;
            v->numel += (uint64_t)p->n;
        }
    }
    v->layout = lay;
    v->values = val;
    v->present = op == RT_OP_STEP || op == RT_OP_CALL ? pres : 0;
}

/* The first place where some process's `len` bytes differ from rank 0's:
 * 1 with *rank and *at set, 0 if none, -1 if the transport failed. */
static int first_diff(rt_shard *sh, const void *mine, size_t len, size_t unit,
                      int *rank, size_t *at)
{
    if (rt_shard_allgather(sh, mine, len, sh->detail))
        return -1;
    for (int r = 1; r < sh->size; r++)
        for (size_t k = 0; k + unit <= len; k += unit)
            if (memcmp(sh->detail + (size_t)r * len + k, sh->detail + k, unit)) {
                *rank = r;
                *at = k / unit;
                return 1;
            }
    return 0;
}

/* "lr", "betas[1]": the hyperparameter at `off` of the value vector */
static void hyper_at(const cg_spec *spec, size_t off, char *buf, size_t cap)
{
    for (size_t i = 0; i < cg_spec_nhyper(spec); i++) {
        const cg_hyper *h = cg_spec_hyper(spec, i);
        if (off < (size_t)h->offset || off >= (size_t)(h->offset + h->len))
            continue;
        if (h->tuple)
            snprintf(buf, cap, "%s[%zu]", h->name, off - (size_t)h->offset);
        else
            snprintf(buf, cap, "%s", h->name);
        return;
    }
    snprintf(buf, cap, "step count");
}

/* a second exchange, to name what differs: options, shapes, gradients
 * (into the detail buffer's last slot, allocated with the shard, so that
 * no process can fail to take part) */
static int name_values(jopt_ctx *ctx, rt_shard *sh, jopt_optim *opt, const char *fn)
{
    size_t nv = cg_spec_nvalues(opt->spec), per = nv + 1;
    double *mine = (double *)(void *)(sh->detail + (size_t)sh->size * sh->detail_len);
    for (size_t g = 0; g < opt->ngroups; g++) {
        memcpy(mine + g * per, opt->groups[g].values, nv * sizeof(double));
        mine[g * per + nv] = (double)opt->groups[g].step;
    }
    int r = 0;
    size_t at = 0, len = opt->ngroups * per * sizeof(double);
    int d = first_diff(sh, mine, len, sizeof(double), &r, &at);
    if (d < 0)
        return rt_shard_comm_failed(opt, fn, "allgatherv");
    if (d == 0)
        return rt_fail(ctx, JOPT_EINVAL, "%s: the processes' options differ "
                       "(a digest; the values read alike)", fn);
    size_t g = at / per, off = at % per;
    const double *v0 = (const double *)(void *)sh->detail;
    const double *vr = (const double *)(void *)(sh->detail + (size_t)r * len);
    char name[96];
    if (off == nv)
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu has taken %.0f steps on "
                       "rank %d and %.0f on rank 0 (every process must step, "
                       "load and build alike)", fn, g, vr[at], r, v0[at]);
    hyper_at(opt->spec, off, name, sizeof name);
    return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu's option '%s' is %.17g on "
                   "rank %d and %.17g on rank 0 (every process must pass the "
                   "same options and make the same changes)", fn, g, name,
                   vr[at], r, v0[at]);
}

static int name_param(jopt_ctx *ctx, rt_shard *sh, jopt_optim *opt,
                      const char *fn, int op, int shapes)
{
    size_t nt = sh->ntensors, unit = shapes ? sizeof(uint64_t) : 1;
    unsigned char *mine = sh->detail + (size_t)sh->size * sh->detail_len;
    for (size_t t = 0; t < nt; t++) {
        const rt_param *p = rt_shard_param(opt, t, NULL);
        if (!shapes) {
            mine[t] = (unsigned char)rt_shard_takes_part(p, op);
            continue;
        }
        uint64_t h = cg_fnv(cg_fnv(CG_FNV_INIT, &p->rank, sizeof p->rank), p->shape,
                            (size_t)p->rank * sizeof(int64_t));
        memcpy(mine + t * unit, &h, sizeof h);
    }
    int r = 0;
    size_t at = 0, g;
    int d = first_diff(sh, mine, nt * unit, unit, &r, &at);
    if (d < 0)
        return rt_shard_comm_failed(opt, fn, "allgatherv");
    if (d == 0)
        return rt_fail(ctx, JOPT_EINVAL, "%s: the processes' %s differ (a "
                       "digest; they read alike)", fn, shapes ? "shapes" : "gradients");
    rt_param *p = rt_shard_param(opt, at, &g);
    size_t i = (size_t)(p - opt->groups[g].params);
    if (shapes)
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu has "
                       "another shape on rank %d than on rank 0 (jopt_set_shape "
                       "must be called alike on every process)", fn, g, i, r);
    int yes = sh->detail[(size_t)r * nt + at] ? r : 0, no = yes ? 0 : r;
    if (op == RT_OP_STEP)
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu has a "
                       "gradient on rank %d and none on rank %d (every process "
                       "must give the same parameters a gradient)", fn, g, i,
                       yes, no);
    return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu has stepped "
                   "on rank %d and not on rank %d", fn, g, i, yes, no);
}

int rt_shard_agree(jopt_ctx *ctx, rt_shard *sh, jopt_optim *opt,
                   const char *fn, rt_vote *mine)
{
    if (mine->status) { /* the message, cut to the vote's room */
        size_t n = strnlen(ctx->err, sizeof mine->msg - 1);
        memcpy(mine->msg, ctx->err, n);
        mine->msg[n] = 0;
    }
    if (rt_shard_allgather(sh, mine, sizeof *mine, sh->votes)) {
        const char *s = why(sh);
        return rt_fail(ctx, JOPT_ECOMM, "%s: the transport failed (allgatherv "
                       "of the votes%s%s)", fn, *s ? ": " : "", s);
    }
    const rt_vote *v = sh->votes, *v0 = &sh->votes[0];
    for (int r = 0; r < sh->size; r++)
        if (v[r].rank != r || v[r].size != sh->size)
            return rt_fail(ctx, JOPT_EINVAL, "%s: the transport's ranks are not "
                           "0 to %d in order (place %d holds rank %d of %d)", fn,
                           sh->size - 1, r, v[r].rank, v[r].size);
    for (int r = 0; r < sh->size; r++)
        if (v[r].status) {
            char msg[RT_SHARD_MSG];
            memcpy(msg, v[r].msg, sizeof msg);
            msg[sizeof msg - 1] = 0;
            return rt_fail(ctx, v[r].status, "%s: rank %d failed: %s", fn, r, msg);
        }
    for (int r = 1; r < sh->size; r++) {
        if (v[r].op != v0->op || v[r].name != v0->name)
            return rt_fail(ctx, JOPT_EINVAL, "%s: rank %d called %s%s where rank "
                           "0 called %s (every process makes the same calls in "
                           "the same order)", fn, r, op_name(v[r].op),
                           v[r].op == v0->op ? " with another kernel" : "",
                           op_name(v0->op));
        if (v[r].spec != v0->spec)
            return rt_fail(ctx, JOPT_EINVAL, "%s: rank %d built its optimizer "
                           "from another spec than rank 0's (name or text)", fn, r);
        if (v[r].layout != v0->layout &&
            (mine->op == RT_OP_NEW || v[r].ntensors != v0->ntensors ||
             v[r].numel != v0->numel || v[r].ngroups != v0->ngroups))
            return rt_fail(ctx, JOPT_EINVAL, "%s: rank %d's parameters are not "
                           "rank 0's: %llu groups, %llu tensors, %llu elements "
                           "against %llu, %llu, %llu%s", fn, r,
                           (unsigned long long)v[r].ngroups,
                           (unsigned long long)v[r].ntensors,
                           (unsigned long long)v[r].numel,
                           (unsigned long long)v0->ngroups,
                           (unsigned long long)v0->ntensors,
                           (unsigned long long)v0->numel,
                           v[r].ngroups == v0->ngroups && v[r].ntensors == v0->ntensors &&
                                   v[r].numel == v0->numel
                               ? " (the same counts, other sizes or order)" : "");
    }
    /* the rest names what differs with a second exchange, which every
     * process makes, since every process sees the same votes */
    for (int r = 1; r < sh->size; r++)
        if (v[r].layout != v0->layout)
            return name_param(ctx, sh, opt, fn, mine->op, 1);
    for (int r = 1; r < sh->size; r++)
        if (v[r].values != v0->values)
            return name_values(ctx, sh, opt, fn);
    for (int r = 1; r < sh->size; r++)
        if (v[r].present != v0->present)
            return name_param(ctx, sh, opt, fn, mine->op, 0);
    for (int r = 1; r < sh->size; r++)
        if (memcmp(v[r].extra, v0->extra, sizeof v0->extra))
            return rt_fail(ctx, JOPT_EINVAL, "%s: rank %d's checkpoint is not "
                           "from the same save as rank 0's (a set of shards "
                           "loads together: each process its own rank's file, "
                           "all from one jopt_state_save)", fn, r);
    return JOPT_OK;
}

int rt_shard_gate(jopt_optim *opt, const char *fn, int op, int status,
                  uint64_t id)
{
    rt_vote mine;
    rt_shard_vote(opt, op, &mine);
    mine.status = status;
    mine.extra[0] = id;
    int rc = rt_shard_agree(opt->ctx, opt->shard, opt, fn, &mine);
    if (rc == JOPT_OK && op == RT_OP_SAVE && status == JOPT_OK)
        opt->shard->saves++; /* a new save: a new id (save_id) */
    return rc;
}

/* ---- construction --------------------------------------------------------- */

void rt_shard_free(rt_shard *sh)
{
    if (!sh)
        return;
    if (sh->comm.release)
        sh->comm.release(sh->comm.user);
    cg_free(sh->first);
    cg_free(sh->owner);
    cg_free(sh->votes);
    cg_free(sh->sendbuf);
    cg_free(sh->recvbuf);
    cg_free(sh->scount);
    cg_free(sh->sdispl);
    cg_free(sh->rcount);
    cg_free(sh->rdispl);
    cg_free(sh->detail);
    cg_free(sh->list);
    cg_free(sh->list_at);
    cg_free(sh->len);
    cg_free(sh->call_tensor);
    cg_free(sh->rec);
    cg_free(sh->rec_all);
    cg_free(sh->at);
    cg_free(sh->cur_i);
    cg_free(sh->cur_off);
    cg_free(sh->gbuf);
    cg_free(sh);
}

/* what the votes need, before anything else can fail */
static rt_shard *shard_alloc(const jopt_comm *comm)
{
    rt_shard *sh = cg_calloc(1, sizeof *sh);
    if (!sh)
        return NULL;
    sh->comm = *comm;
    sh->rank = comm->rank;
    sh->size = comm->size;
    size_t n = (size_t)comm->size;
    sh->votes = cg_calloc(n, sizeof *sh->votes);
    sh->scount = cg_calloc(n, sizeof(size_t));
    sh->sdispl = cg_calloc(n, sizeof(size_t));
    sh->rcount = cg_calloc(n, sizeof(size_t));
    sh->rdispl = cg_calloc(n, sizeof(size_t));
    sh->list_at = cg_calloc(n + 1, sizeof(size_t));
    sh->len = cg_calloc(n, sizeof(int64_t));
    sh->cur_i = cg_calloc(n, sizeof(size_t));
    sh->cur_off = cg_calloc(n, sizeof(int64_t));
    if (!sh->votes || !sh->scount || !sh->sdispl || !sh->rcount ||
        !sh->rdispl || !sh->list_at || !sh->len || !sh->cur_i || !sh->cur_off) {
        sh->comm.release = NULL; /* the caller releases */
        rt_shard_free(sh);
        return NULL;
    }
    return sh;
}

typedef struct sized {
    int64_t n;
    size_t t;
} sized;

static int cmp_sized(const void *a, const void *b)
{
    const sized *x = a, *y = b;
    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return x->t < y->t ? -1 : x->t > y->t;
}

/* Whole tensors, largest first (ties: the earlier tensor), each to the
 * process holding the fewest elements so far (ties: the lowest rank):
 * torch's ZeroRedundancyOptimizer's rule, over every group at once.  The
 * same on every process, since it depends only on the sizes. */
static int partition(jopt_optim *opt, rt_shard *sh)
{
    size_t nt = 0;
    sh->first = cg_calloc(opt->ngroups + 1, sizeof(size_t));
    if (!sh->first)
        return JOPT_ENOMEM;
    for (size_t g = 0; g < opt->ngroups; g++) {
        sh->first[g] = nt;
        nt += opt->groups[g].n;
    }
    sh->ntensors = nt;
    sh->owner = cg_calloc(nt + 1, sizeof(int));
    sized *order = cg_calloc(nt + 1, sizeof *order);
    int64_t *load = cg_calloc((size_t)sh->size, sizeof(int64_t));
    if (!sh->owner || !order || !load) {
        cg_free(order);
        cg_free(load);
        return JOPT_ENOMEM;
    }
    for (size_t t = 0; t < nt; t++)
        order[t] = (sized){rt_shard_param(opt, t, NULL)->n, t};
    qsort(order, nt, sizeof *order, cmp_sized);
    uint64_t h = CG_FNV_INIT;
    for (size_t k = 0; k < nt; k++) {
        int best = 0;
        for (int r = 1; r < sh->size; r++)
            if (load[r] < load[best])
                best = r;
        sh->owner[order[k].t] = best;
        load[best] += order[k].n;
    }
    for (size_t t = 0; t < nt; t++) {
        rt_param *p = rt_shard_param(opt, t, NULL);
        p->foreign = sh->owner[t] != sh->rank;
        int64_t rec[2] = {p->n, sh->owner[t]};
        h = cg_fnv(h, rec, sizeof rec);
    }
    sh->partition = h;
    int64_t most = 0;
    for (int r = 0; r < sh->size; r++)
        most = load[r] > most ? load[r] : most;
    cg_free(order);
    cg_free(load);
    /* a window of elements per process per round of the exchange */
    size_t budget = sh->comm.buffer_bytes ? sh->comm.buffer_bytes : BUFFER_BUDGET;
    int64_t w = (int64_t)(budget / (2 * sizeof(float) * (size_t)sh->size));
    w -= w % 16;
    if (w > most)
        w = most;
    if (w < MIN_WINDOW)
        w = MIN_WINDOW;
    sh->window = w;
    return JOPT_OK;
}

/* room for one process's part of a second exchange: every group's values
 * and step, or a hash of each tensor's shape (or a byte: its gradient) */
static size_t detail_len(const jopt_optim *opt, size_t nt)
{
    size_t values = opt->ngroups * (cg_spec_nvalues(opt->spec) + 1) * sizeof(double);
    size_t shapes = nt * sizeof(uint64_t);
    return values > shapes ? values : shapes;
}

static int shard_buffers(jopt_optim *opt, rt_shard *sh)
{
    size_t n = (size_t)sh->size, nt = sh->ntensors, w = (size_t)sh->window;
    if (sh->size > 1) {
        sh->sendbuf = cg_malloc(n * w * sizeof(float));
        sh->recvbuf = cg_malloc(n * w * sizeof(float));
        if (!sh->sendbuf || !sh->recvbuf)
            return JOPT_ENOMEM;
    }
    sh->detail_len = detail_len(opt, nt);
    sh->detail = cg_malloc((n + 1) * sh->detail_len + 1); /* the last: this
                                                          process's own */
    sh->list = cg_calloc(nt + 1, sizeof(uint32_t));
    sh->call_tensor = cg_calloc(nt + 1, sizeof(uint32_t));
    sh->rec = cg_calloc(nt + 1, sizeof(rt_grec));
    sh->rec_all = cg_calloc(nt + 1, sizeof(rt_grec)); /* a tensor is held once */
    sh->at = cg_calloc(nt + 1, sizeof(rt_grec *));
    sh->gbuf = cg_calloc((n + 1) * opt->ngroups * (cg_spec_nstate(opt->spec) + 1) + 1,
                      sizeof(double));
    if (!sh->detail || !sh->list || !sh->call_tensor || !sh->rec ||
        !sh->rec_all || !sh->at || !sh->gbuf)
        return JOPT_ENOMEM;
    return JOPT_OK;
}

static int check_comm(jopt_ctx *ctx, const char *fn, const jopt_comm *comm)
{
    if (!comm)
        return rt_fail(ctx, JOPT_EINVAL, "%s: comm is NULL", fn);
    if (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size)
        return rt_fail(ctx, JOPT_EINVAL, "%s: rank %d of %d processes (a rank "
                       "is 0 to size - 1)", fn, comm->rank, comm->size);
    if (!comm->allgatherv || !comm->alltoallv)
        return rt_fail(ctx, JOPT_EINVAL, "%s: the transport's %s is NULL", fn,
                       !comm->allgatherv ? "allgatherv" : "alltoallv");
    return JOPT_OK;
}

JOPT_API int jopt_optim_new_sharded(jopt_ctx *ctx, const char *spec,
                                    const jopt_group *groups, size_t ngroups,
                                    const char *defaults, const jopt_comm *comm,
                                    jopt_optim **out)
{
    RT_API_SCOPE(ctx);
    static const char fn[] = "jopt_optim_new_sharded";
    if (!ctx)
        return JOPT_EINVAL;
    int rc = check_comm(ctx, fn, comm);
    if (rc == JOPT_OK && !out)
        rc = rt_fail(ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    if (rc) {
        if (comm && comm->release)
            comm->release(comm->user);
        return rc;
    }
    rt_shard *sh = shard_alloc(comm);
    if (!sh) {
        if (comm->release)
            comm->release(comm->user);
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    /* what can fail here, fails before the vote, which tells the others */
    jopt_optim *opt = NULL;
    rc = jopt_optim_new(ctx, spec, groups, ngroups, defaults, &opt);
    if (rc == JOPT_OK && opt->closure)
        rc = rt_fail(ctx, JOPT_EINVAL, "%s: spec '%s' is a closure optimizer "
                     "(method '%s'): its line search needs the whole vector, "
                     "so it cannot be sharded", fn, cg_spec_name(opt->spec),
                     cg_spec_method(opt->spec));
    if (rc == JOPT_OK && opt->gpu)
        rc = rt_fail(ctx, JOPT_EINVAL, "%s: a GPU optimizer cannot be sharded yet "
                     "(the exchange moves host memory)", fn);
    for (size_t g = 0; rc == JOPT_OK && g < opt->ngroups; g++)
        for (size_t i = 0; rc == JOPT_OK && i < opt->groups[g].n; i++) {
            const rt_param *p = &opt->groups[g].params[i];
            if (p->dtype || p->grad_dtype) /* the exchange moves float32 */
                rc = rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu is not "
                             "float32 (dtype, grad_dtype): a sharded optimizer takes "
                             "float32 parameters and gradients only", fn, g, i);
        }
    if (rc == JOPT_OK) {
        opt->shard = sh;
        if (partition(opt, sh) || shard_buffers(opt, sh))
            rc = rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    rt_vote mine;
    if (opt && rc == JOPT_OK) {
        rt_shard_vote(opt, RT_OP_NEW, &mine);
    } else {
        memset(&mine, 0, sizeof mine);
        mine.rank = comm->rank;
        mine.size = comm->size;
        mine.op = RT_OP_NEW;
    }
    mine.status = rc;
    if (opt)
        opt->shard = sh;
    rc = rt_shard_agree(ctx, sh, opt, fn, &mine);
    if (rc) {
        if (opt)
            opt->shard = NULL;
        jopt_optim_free(opt);
        rt_shard_free(sh);
        return rc;
    }
    *out = opt;
    return JOPT_OK;
}

/* ---- what a process holds -------------------------------------------------- */

JOPT_API int jopt_shard_owner(const jopt_optim *opt, size_t group, size_t index)
{
    RT_API_SCOPE(opt);
    if (!opt || group >= opt->ngroups || index >= opt->groups[group].n)
        return -1;
    const rt_shard *sh = opt->shard;
    return sh ? sh->owner[sh->first[group] + index] : 0;
}

JOPT_API int jopt_shard_info_get(const jopt_optim *opt, jopt_shard_info *out)
{
    RT_API_SCOPE(opt);
    if (!opt)
        return JOPT_EINVAL;
    if (!out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "jopt_shard_info_get: out is NULL");
    const rt_shard *sh = opt->shard;
    memset(out, 0, sizeof *out);
    out->rank = sh ? sh->rank : 0;
    out->size = sh ? sh->size : 1;
    size_t ns = opt->closure ? 0 : cg_spec_nstate(opt->spec);
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            const rt_param *p = &opt->groups[g].params[i];
            out->numel_all += p->n;
            if (p->foreign)
                continue;
            out->tensors++;
            out->numel += p->n;
            for (size_t k = 0; k < ns; k++)
                if (p->state[k])
                    out->state_bytes += ((size_t)p->state_n[k] * sizeof(float) + 63) & ~(size_t)63;
        }
    if (sh) {
        size_t n = (size_t)sh->size, nt = sh->ntensors;
        out->buffer_bytes = (sh->sendbuf ? 2 * n * (size_t)sh->window * sizeof(float) : 0) +
                            (n + 1) * sh->detail_len + 2 * nt * sizeof(rt_grec) +
                            n * sizeof(rt_vote);
        out->bytes_sent = sh->bytes_sent;
        out->exchanges = sh->exchanges;
    }
    return JOPT_OK;
}

/* ---- checkpoints ------------------------------------------------------------
 * A sharded optimizer's file is its checkpoint (the usual format, with
 * every tensor and the state of those it holds) inside a header and a
 * second checksum:
 *   "JOPTSHRD" u32 version (1) u32 rank u32 processes u32 reserved (0)
 *   u64 partition u64 save id | the checkpoint | u64 FNV-1a of all before
 * Every process's file of one jopt_state_save has the same save id. */

#define SHARD_MAGIC "JOPTSHRD"
#define SHARD_VERSION 1u

static uint64_t save_id(const jopt_optim *opt)
{
    rt_vote v;
    rt_shard_vote(opt, RT_OP_SAVE, &v);
    uint64_t h = cg_fnv(CG_FNV_INIT, &opt->shard->partition, sizeof(uint64_t));
    h = cg_fnv(h, &v.values, sizeof v.values);
    return cg_fnv(h, &opt->shard->saves, sizeof(uint64_t));
}

void rt_shard_put(const jopt_optim *opt, rt_out *o)
{
    const rt_shard *sh = opt->shard;
    rt_put(o, SHARD_MAGIC, 8);
    rt_put_u32(o, SHARD_VERSION);
    rt_put_u32(o, (uint32_t)sh->rank);
    rt_put_u32(o, (uint32_t)sh->size);
    rt_put_u32(o, 0);
    rt_put_u64(o, sh->partition);
    rt_put_u64(o, save_id(opt));
}

int rt_shard_open(jopt_optim *opt, const char *fn, const void **buf,
                  size_t *len, uint64_t *id)
{
    const rt_shard *sh = opt->shard;
    int wrapped = *len >= 8 && !memcmp(*buf, SHARD_MAGIC, 8);
    if (!wrapped) { /* an unsharded checkpoint: every process reads one */
        *id = sh ? cg_fnv(CG_FNV_INIT, *buf, *len) : 0;
        return JOPT_OK;
    }
    if (*len < RT_SHARD_HEAD + 8 + 16 || !rt_sealed(*buf, *len))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: a shard's checkpoint, "
                       "truncated or corrupt (checksum mismatch)", fn);
    rt_in r = {*buf, RT_SHARD_HEAD, 0, 0};
    rt_take(&r, 8);
    uint32_t version = rt_get_u32(&r), rank = rt_get_u32(&r);
    uint32_t size = rt_get_u32(&r), reserved = rt_get_u32(&r);
    uint64_t part = rt_get_u64(&r);
    *id = rt_get_u64(&r);
    if (version != SHARD_VERSION || reserved)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: a shard's checkpoint of "
                       "version %u; this jopt reads version %u", fn, version,
                       SHARD_VERSION);
    if (!sh)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: the checkpoint is rank %u's "
                       "shard of an optimizer sharded over %u processes: it "
                       "loads only into that rank's sharded optimizer", fn,
                       rank, size);
    if (size != (uint32_t)sh->size)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: the checkpoint is rank %u's "
                       "shard of %u processes; this optimizer is sharded over "
                       "%d (a set of shards loads onto as many processes as "
                       "saved it)", fn, rank, size, sh->size);
    if (rank != (uint32_t)sh->rank)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: the checkpoint is rank %u's "
                       "shard; this is rank %d (each process loads the file "
                       "its own rank saved)", fn, rank, sh->rank);
    if (part != sh->partition)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: the checkpoint's tensors "
                       "were held by other processes than they are here", fn);
    *buf = (const unsigned char *)*buf + RT_SHARD_HEAD;
    *len -= RT_SHARD_HEAD + 8;
    return JOPT_OK;
}
