/*
 * shard_step.c - a step of a sharded optimizer (docs/distributed.md):
 *
 *   closure -> kernels and new state for the tensors held here
 *     -> vote (every process fine, and agreeing on options, shapes and
 *        which tensors have gradients; else all fail, nothing changed)
 *     -> gradients: in rounds of a window per process, each process sends
 *        every other the window of its gradients for the tensors that one
 *        holds (an all-to-all), and each averages what it receives with its
 *        own, in rank order, in double: its tensors' gradients become the
 *        average
 *     -> the batch on the tensors held here; at a level with group
 *        reductions, the per-tensor values of every process are gathered
 *        and folded in the group's tensor order (the hook)
 *     -> parameters: in rounds, each process's window of its updated
 *        tensors goes to every process (an all-gather)
 *     -> group states, from the first process that stepped the group
 *
 * Every loop over processes, tensors and elements runs in a fixed order,
 * so a step gives the same bits for any number of processes as one
 * process stepping with the averaged gradients.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shard.h"

/* the tensors taking part in `op`, by holder, in order; each holder's
 * elements in sh->len */
static void make_lists(jopt_optim *opt, int op)
{
    rt_shard *sh = opt->shard;
    for (int r = 0; r <= sh->size; r++)
        sh->list_at[r] = 0;
    for (int r = 0; r < sh->size; r++)
        sh->len[r] = 0;
    for (size_t t = 0; t < sh->ntensors; t++) {
        const rt_param *p = rt_shard_param(opt, t, NULL);
        if (rt_shard_takes_part(p, op)) {
            sh->list_at[sh->owner[t] + 1]++;
            sh->len[sh->owner[t]] += p->n;
        }
    }
    for (int r = 0; r < sh->size; r++)
        sh->list_at[r + 1] += sh->list_at[r];
    for (int r = 0; r < sh->size; r++)
        sh->cur_i[r] = sh->list_at[r]; /* a fill cursor, for now */
    for (size_t t = 0; t < sh->ntensors; t++)
        if (rt_shard_takes_part(rt_shard_param(opt, t, NULL), op))
            sh->list[sh->cur_i[sh->owner[t]]++] = (uint32_t)t;
}

static void walk_reset(rt_shard *sh)
{
    for (int r = 0; r < sh->size; r++) {
        sh->cur_i[r] = sh->list_at[r];
        sh->cur_off[r] = 0;
    }
}

enum { GRAD_OUT, PARAM_OUT, PARAM_IN };

/* Copies the next `count` elements of holder r's tensors between their
 * gradients or parameters and buf (NULL: copies nothing), advancing r's
 * walk. */
static void walk_copy(jopt_optim *opt, int r, int64_t count, float *buf, int how)
{
    rt_shard *sh = opt->shard;
    while (count > 0) {
        rt_param *p = rt_shard_param(opt, sh->list[sh->cur_i[r]], NULL);
        int64_t off = sh->cur_off[r], n = p->n - off < count ? p->n - off : count;
        if (!buf)
            ;
        else if (how == GRAD_OUT)
            memcpy(buf, p->g + off, (size_t)n * sizeof(float));
        else if (how == PARAM_OUT)
            memcpy(buf, p->p + off, (size_t)n * sizeof(float));
        else
            memcpy(p->p + off, buf, (size_t)n * sizeof(float));
        buf = buf ? buf + n : NULL;
        count -= n;
        if ((sh->cur_off[r] = off + n) == p->n) {
            sh->cur_i[r]++;
            sh->cur_off[r] = 0;
        }
    }
}

/* The next `count` elements of holder r's tensors as one pointer, if they
 * lie in one tensor (the walk does not move); NULL otherwise. */
static const float *walk_span(jopt_optim *opt, int r, int64_t count)
{
    rt_shard *sh = opt->shard;
    rt_param *p = rt_shard_param(opt, sh->list[sh->cur_i[r]], NULL);
    return p->n - sh->cur_off[r] >= count ? p->p + sh->cur_off[r] : NULL;
}

/* the elements of window k of holder r */
static int64_t window_count(const rt_shard *sh, int r, int64_t k)
{
    int64_t left = sh->len[r] - k * sh->window;
    return left <= 0 ? 0 : left < sh->window ? left : sh->window;
}

static int64_t rounds(const rt_shard *sh)
{
    int64_t most = 0;
    for (int r = 0; r < sh->size; r++)
        most = sh->len[r] > most ? sh->len[r] : most;
    return (most + sh->window - 1) / sh->window;
}

/* Own gradient g (n elements of this process's window, at `at` in the
 * window) becomes the mean over every process's: added in rank order, in
 * double, divided by the number of processes, rounded once. */
static void average(rt_shard *sh, float *g, int64_t n, int64_t at)
{
    enum { BLOCK = 256 };
    double acc[BLOCK];
    const double size = (double)sh->size;
    for (int64_t b = 0; b < n; b += BLOCK) {
        int64_t m = n - b < BLOCK ? n - b : BLOCK;
        for (int q = 0; q < sh->size; q++) {
            const float *src = q == sh->rank
                                   ? g + b
                                   : sh->recvbuf + (size_t)q * (size_t)sh->window +
                                         (size_t)(at + b);
            if (q == 0)
                for (int64_t j = 0; j < m; j++)
                    acc[j] = (double)src[j];
            else
                for (int64_t j = 0; j < m; j++)
                    acc[j] += (double)src[j];
        }
        for (int64_t j = 0; j < m; j++)
            g[b + j] = (float)(acc[j] / size);
    }
}

/* the own window's gradients, tensor by tensor, averaged */
static void average_window(jopt_optim *opt, int64_t count)
{
    rt_shard *sh = opt->shard;
    int r = sh->rank;
    int64_t at = 0;
    while (count > 0) {
        rt_param *p = rt_shard_param(opt, sh->list[sh->cur_i[r]], NULL);
        int64_t off = sh->cur_off[r], n = p->n - off < count ? p->n - off : count;
        average(sh, p->g + off, n, at);
        at += n;
        count -= n;
        if ((sh->cur_off[r] = off + n) == p->n) {
            sh->cur_i[r]++;
            sh->cur_off[r] = 0;
        }
    }
}

/* every process's gradients of the tensors held here, averaged into them
 * (a reduce-scatter as an all-to-all, so that the additions are ours) */
static int reduce_grads(jopt_optim *opt, const char *fn)
{
    rt_shard *sh = opt->shard;
    size_t w = (size_t)sh->window;
    int64_t nr = rounds(sh);
    walk_reset(sh);
    for (int64_t k = 0; k < nr; k++) {
        int64_t mine = window_count(sh, sh->rank, k);
        for (int q = 0; q < sh->size; q++) {
            int64_t c = q == sh->rank ? 0 : window_count(sh, q, k);
            walk_copy(opt, q, c, sh->sendbuf + (size_t)q * w, GRAD_OUT);
            sh->scount[q] = (size_t)c * sizeof(float);
            sh->sdispl[q] = (size_t)q * w * sizeof(float);
            sh->rcount[q] = q == sh->rank ? 0 : (size_t)mine * sizeof(float);
            sh->rdispl[q] = (size_t)q * w * sizeof(float);
        }
        if (rt_shard_alltoallv(sh, sh->sendbuf, sh->recvbuf))
            return rt_shard_comm_failed(opt, fn, "alltoallv of the gradients");
        average_window(opt, mine);
    }
    return JOPT_OK;
}

/* every process's updated parameters, from their holders */
static int gather_params(jopt_optim *opt, const char *fn)
{
    rt_shard *sh = opt->shard;
    int64_t nr = rounds(sh);
    walk_reset(sh);
    for (int64_t k = 0; k < nr; k++) {
        int64_t mine = window_count(sh, sh->rank, k);
        const float *send = mine ? walk_span(opt, sh->rank, mine) : sh->sendbuf;
        if (!send) {
            walk_copy(opt, sh->rank, mine, sh->sendbuf, PARAM_OUT);
            send = sh->sendbuf;
        } else if (mine) { /* sent from where it lies: the walk moves on */
            walk_copy(opt, sh->rank, mine, NULL, PARAM_OUT);
        }
        for (int q = 0; q < sh->size; q++)
            sh->rcount[q] = (size_t)window_count(sh, q, k) * sizeof(float);
        if (rt_shard_allgatherv(sh, send, sh->rcount, sh->recvbuf))
            return rt_shard_comm_failed(opt, fn, "allgatherv of the parameters");
        size_t at = 0;
        for (int q = 0; q < sh->size; q++) {
            if (q != sh->rank)
                walk_copy(opt, q, window_count(sh, q, k),
                          (float *)(void *)((char *)sh->recvbuf + at), PARAM_IN);
            at += sh->rcount[q];
        }
    }
    return JOPT_OK;
}

/* ---- group reductions across processes ------------------------------------ */

/* The hook (cg.h): this process's calls' values for the level's group
 * reductions go to every process, and each folds every group it steps
 * over all the group's tensors in their order, as one process would. */
static int fold_groups(void *arg, int level, const cg_call *calls,
                       const cg_gpart *parts, size_t ncalls, char *err)
{
    jopt_optim *opt = arg;
    rt_shard *sh = opt->shard;
    size_t n = 0;
    for (size_t c = 0; c < ncalls; c++) {
        if (!(cg_kernel_layout(calls[c].k)->glevels >> level & 1))
            continue;
        rt_grec *rec = &sh->rec[n++];
        rec->tensor = sh->call_tensor[c];
        rec->mask = parts[c].mask;
        memcpy(rec->kind, parts[c].kind, sizeof rec->kind);
        memcpy(rec->v, parts[c].v, sizeof rec->v);
    }
    size_t total = 0;
    for (int q = 0; q < sh->size; q++) {
        sh->rcount[q] = sh->agreed[q].nrec[level] * sizeof(rt_grec);
        total += sh->agreed[q].nrec[level];
    }
    if (n != sh->agreed[sh->rank].nrec[level] || total > sh->ntensors) {
        snprintf(err, CG_ERRLEN, "internal error: %zu group-reduction records "
                 "at level %d, %u voted", n, level, sh->agreed[sh->rank].nrec[level]);
        return JOPT_EINVAL;
    }
    if (rt_shard_allgatherv(sh, sh->rec, sh->rcount, sh->rec_all)) {
        rt_shard_comm_text(sh, "allgatherv of the group reductions", err, CG_ERRLEN);
        return JOPT_ECOMM;
    }
    for (size_t i = 0; i < total; i++)
        sh->at[sh->rec_all[i].tensor] = &sh->rec_all[i];
    for (size_t c = 0; c < ncalls; c++) {
        if (c > 0 && calls[c - 1].gred == calls[c].gred)
            continue; /* a group's calls are consecutive: fold it once */
        size_t g;
        rt_shard_param(opt, sh->call_tensor[c], &g);
        size_t lo = sh->first[g], hi = lo + opt->groups[g].n;
        uint32_t mask = 0;
        for (size_t t = lo; t < hi; t++)
            mask |= sh->at[t] ? sh->at[t]->mask : 0;
        for (int r = 0; r < CG_MAX_REDUCE; r++) {
            if (!(mask >> r & 1))
                continue;
            int kind = -1;
            double acc = 0;
            for (size_t t = lo; t < hi; t++) {
                const rt_grec *rec = sh->at[t];
                if (!rec || !(rec->mask >> r & 1))
                    continue;
                if (kind < 0)
                    acc = cg_fold_identity(kind = rec->kind[r]);
                acc = cg_fold(kind, acc, rec->v[r]);
            }
            calls[c].gred[r] = acc;
        }
    }
    for (size_t i = 0; i < total; i++)
        sh->at[sh->rec_all[i].tensor] = NULL;
    return JOPT_OK;
}

/* what this process's kernels need of the exchange, for its vote */
static void count_levels(jopt_optim *opt, rt_vote *v)
{
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            const rt_param *p = &opt->groups[g].params[i];
            if (!p->k)
                continue;
            const cg_layout *l = cg_kernel_layout(p->k);
            v->glevels |= l->glevels;
            v->gsync |= l->ngstate > 0;
            for (int lv = 0; lv < RT_SHARD_LEVELS; lv++)
                v->nrec[lv] += l->glevels >> lv & 1;
        }
}

/* the batch on the tensors held here, with group reductions across
 * processes where any process has them */
static int run_batch(jopt_optim *opt, const char *fn)
{
    rt_shard *sh = opt->shard;
    int64_t total;
    size_t nc = rt_step_plan(opt, &total), c = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++)
            if (opt->groups[g].params[i].k)
                sh->call_tensor[c++] = (uint32_t)(sh->first[g] + i);
    unsigned levels = 0;
    for (int q = 0; q < sh->size; q++)
        levels |= sh->agreed[q].glevels;
    cg_batch_hook hook = {fold_groups, opt, levels};
    cg_batch_set_hook(opt->batch, levels ? &hook : NULL);
    int rc = rt_step_run(opt, fn, nc, total);
    cg_batch_set_hook(opt->batch, NULL);
    return rc;
}

/* Group states (Prodigy's d) are written by the batch of a process that
 * stepped one of the group's tensors: every process takes them from the
 * first such. */
static int sync_gstate(jopt_optim *opt, const char *fn)
{
    rt_shard *sh = opt->shard;
    size_t ns = cg_spec_nstate(opt->spec), per = ns + 1, len = opt->ngroups * per;
    double *mine = sh->gbuf + (size_t)sh->size * len;
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        int stepped = 0;
        for (size_t i = 0; i < gr->n; i++)
            stepped |= gr->params[i].k != NULL;
        mine[g * per] = stepped;
        memcpy(mine + g * per + 1, gr->gstate, ns * sizeof(double));
    }
    if (rt_shard_allgather(sh, mine, len * sizeof(double), sh->gbuf))
        return rt_shard_comm_failed(opt, fn, "allgatherv of the group states");
    for (size_t g = 0; g < opt->ngroups; g++)
        for (int q = 0; q < sh->size; q++) {
            const double *from = sh->gbuf + (size_t)q * len + g * per;
            if (from[0] != 0) {
                memcpy(opt->groups[g].gstate, from + 1, ns * sizeof(double));
                break;
            }
        }
    return JOPT_OK;
}

/* ---- the calls ------------------------------------------------------------ */

static int any_gsync(const rt_shard *sh)
{
    for (int q = 0; q < sh->size; q++)
        if (sh->agreed[q].gsync)
            return 1;
    return 0;
}

int rt_shard_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                  double *loss)
{
    static const char fn[] = "jopt_step";
    rt_shard *sh = opt->shard;
    double l = NAN;
    int rc = JOPT_OK;
    unsigned char *created = NULL;
    if (closure) {
        int crc = closure(user_data, &l);
        if (crc != 0)
            rc = rt_fail(opt->ctx, JOPT_ECLOSURE, "%s: the closure returned %d; "
                         "the step was not taken", fn, crc);
    }
    if (rc == JOPT_OK)
        rc = rt_step_choose(opt, fn, -1);
    if (rc == JOPT_OK)
        rc = rt_step_state(opt, &created);
    rt_vote mine;
    rt_shard_vote(opt, RT_OP_STEP, &mine);
    mine.status = rc;
    if (rc == JOPT_OK)
        count_levels(opt, &mine);
    if ((rc = rt_shard_agree(opt->ctx, sh, opt, fn, &mine))) {
        rt_step_unstate(opt, created);
        return rc;
    }
    cg_free(created); /* from here on only the transport can fail */
    sh->agreed = sh->votes;
    make_lists(opt, RT_OP_STEP);
    if (sh->size > 1 && (rc = reduce_grads(opt, fn)))
        return rc;
    if ((rc = run_batch(opt, fn)))
        return rc;
    rt_step_count(opt);
    for (size_t t = 0; t < sh->ntensors; t++) { /* step counts everywhere */
        rt_param *p = rt_shard_param(opt, t, NULL);
        if (p->foreign && rt_shard_takes_part(p, RT_OP_STEP))
            p->step++;
    }
    if (sh->size > 1 && (rc = gather_params(opt, fn)))
        return rc;
    if (any_gsync(sh) && (rc = sync_gstate(opt, fn)))
        return rc;
    if (loss)
        *loss = l;
    return JOPT_OK;
}

int rt_shard_call(jopt_optim *opt, const char *kernel, int named, int status)
{
    static const char fn[] = "jopt_optim_call";
    rt_shard *sh = opt->shard;
    int rc = status;
    if (rc == JOPT_OK)
        rc = rt_step_choose(opt, fn, named);
    rt_vote mine;
    rt_shard_vote(opt, RT_OP_CALL, &mine);
    mine.status = rc;
    mine.name = kernel ? cg_fnv(CG_FNV_INIT, kernel, strlen(kernel)) : 0;
    if (rc == JOPT_OK)
        count_levels(opt, &mine);
    if ((rc = rt_shard_agree(opt->ctx, sh, opt, fn, &mine)))
        return rc;
    sh->agreed = sh->votes;
    make_lists(opt, RT_OP_CALL);
    if ((rc = run_batch(opt, fn)))
        return rc;
    if (sh->size > 1 && (rc = gather_params(opt, fn)))
        return rc;
    if (any_gsync(sh) && (rc = sync_gstate(opt, fn)))
        return rc;
    return JOPT_OK;
}
