/*
 * kernel.c - the kernel cache in front of trace and JIT.
 *
 * A kernel is keyed by everything that determines it: the spec's text, the
 * hyperparameter values it was specialised to, the variant (fresh or not,
 * a named kernel, the inputs given, the arrays' element types, stochastic
 * rounding, loss scaling), the tensors' rank when the spec looks at it
 * (their shape when it reads its sizes or multiplies matrices), and the
 * engine (the target is the host, fixed per process).  Two groups with
 * equal values share one kernel, and so do tensors of any rank when the
 * spec never asks for it.  Kernels are reference counted; an
 * unreferenced one stays cached until the cache is over CACHE_KEEP.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

#define CACHE_KEEP 64

struct cg_kernel {
    cg_jit *jit;
    int refs;
    unsigned char *key;
    size_t keylen;
    uint64_t hash;
    cg_graph *graph;
    double *scratch; /* the uniform pass's, so that step() never allocates */
    cg_layout layout;
    cg_kernel_fn *fn; /* per loop; NULL: the reference interpreter */
    void *tracker;
    cg_nvptx *gpu;   /* a GPU kernel's PTX and launches, or NULL */
    int shared_u;    /* its per-step values read nothing of the tensor */
    int native;      /* compiled for the host CPU (not the interpreter, a
                        GPU or a vector kernel): short rows get their own */
    cg_kernel *next;
};

struct cg_jit {
    cg_llvm *llvm; /* started by the first compile */
    cg_kernel *cache;
    size_t ncached, compiles, hits;
    unsigned long long serial;
};

/* LLJIT's C API is not safe for concurrent compilation, even across
 * instances: one lock for the process. */
static pthread_mutex_t jit_lock = PTHREAD_MUTEX_INITIALIZER;

int cg_jit_new(cg_jit **out, char *err)
{
    cg_jit *j = cg_calloc(1, sizeof *j);
    if (!j)
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    *out = j;
    return JOPT_OK;
}

static void kernel_destroy(cg_kernel *k)
{
    if (k->tracker)
        cg_llvm_remove(k->jit->llvm, k->tracker);
    cg_nvptx_free(k->gpu);
    cg_graph_free(k->graph);
    cg_free(k->fn);
    cg_free(k->scratch);
    cg_free(k->key);
    cg_free(k);
}

void cg_jit_free(cg_jit *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&jit_lock);
    for (cg_kernel *k = j->cache, *next; k; k = next) {
        next = k->next;
        kernel_destroy(k);
    }
    cg_llvm_free(j->llvm);
    pthread_mutex_unlock(&jit_lock);
    cg_free(j);
}

void cg_jit_stats(const cg_jit *j, size_t *compiles, size_t *hits)
{
    if (compiles)
        *compiles = j->compiles;
    if (hits)
        *hits = j->hits;
}

/* Short rows.  A kernel of row and column loops pays per row and per
 * matrix what a long row amortizes: the lanes' set-up, the tail's
 * branches, a division.  For a tensor whose last size is under CG_LANES
 * (a convolution's 3x3 or 1x1), the host kernel is built for that size, and
 * for the size before it when that is short too, as constants: LLVM then
 * unrolls the rows and folds the branches (bench/RESULTS.md, "Adafactor").
 * The same operations in the same order: the bits do not change.  ax[]:
 * the sizes, 0 for one left to the task. */
static int short_axes(int native, int rank, const int64_t *shape, int64_t ax[2])
{
    ax[0] = ax[1] = 0;
    if (!native || !shape || rank < 2 || shape[0] <= 0 || shape[0] >= CG_LANES)
        return 0;
    ax[0] = shape[0];
    ax[1] = shape[1] > 0 && shape[1] < CG_LANES ? shape[1] : 0;
    return 1;
}

static int is_native(const cg_request *r)
{
    return !r->arch && !r->reference && !r->vkernel;
}

int cg_kernel_serves(const cg_kernel *k, const int64_t *shape, int rank)
{
    int64_t ax[2];
    if (!short_axes(k->native, rank, shape, ax))
        return !k->layout.fixed_cols;
    if (k->layout.fixed_cols)
        return ax[0] == k->layout.fixed_cols && ax[1] == k->layout.fixed_rows;
    return !k->graph->two_d || k->graph->shaped;
}

/* The key: variant, engine, rank (-1: any), the shape (for a kernel of
 * one shape) or its short last sizes, the element types, the values
 * folded into the kernel (a value passed at run time counts only as
 * "runtime"), the kernel's name, the GPU architecture, and the spec's
 * text. */
static unsigned char *make_key(const cg_request *r, int rank, const int64_t *shape,
                               const int64_t *axes, size_t *len, uint64_t *hash)
{
    /* a vector kernel depends on its name, not on the values */
    size_t srclen, nv = r->vkernel ? 0 : cg_spec_nvalues(r->spec);
    size_t nh = r->vkernel ? 0 : cg_spec_nhyper(r->spec);
    const char *name = r->vkernel ? r->vkernel : r->named ? r->named : "";
    const char *arch = r->arch ? r->arch : "";
    size_t namelen = strlen(name) + 1, archlen = strlen(arch) + 1;
    const char *src = cg_spec_text(r->spec, &srclen);
    /* the lengths first: no two different requests share a key */
    size_t ns = shape ? (size_t)rank : 0;
    /* the element types and stores (zero for a vector kernel: float32) */
    int64_t prec = r->vkernel ? 0 : r->dtype | r->grad_dtype << 4 | r->state_dtype << 8 |
                                    (r->stochastic != 0) << 12 | (r->grad_scale != 0) << 13;
    int64_t head[12] = {(int64_t)nh, (int64_t)nv, (int64_t)namelen,
                        (int64_t)srclen, rank, r->vkernel ? 0 : r->fresh,
                        (int64_t)r->inputs * 4 + r->reference * 2 + (r->vkernel != NULL),
                        (int64_t)ns, prec, (int64_t)archlen,
                        axes ? axes[0] : 0, axes ? axes[1] : 0};
    size_t sl = ns * sizeof(int64_t);
    *len = sizeof head + sl + nh + nv * sizeof(double) + namelen + archlen + srclen;
    unsigned char *key = cg_malloc(*len);
    if (!key)
        return NULL;
    memcpy(key, head, sizeof head);
    if (sl)
        memcpy(key + sizeof head, shape, sl);
    unsigned char *flags = key + sizeof head + sl, *vals = flags + nh;
    if (nv)
        memcpy(vals, r->values, nv * sizeof(double));
    for (size_t i = 0; i < nh; i++) {
        const cg_hyper *h = cg_spec_hyper(r->spec, i);
        flags[i] = r->runtime && r->runtime[i] && h->runtime_ok;
        if (flags[i])
            memset(vals + (size_t)h->offset * sizeof(double), 0,
                   (size_t)h->len * sizeof(double));
    }
    memcpy(vals + nv * sizeof(double), name, namelen);
    memcpy(vals + nv * sizeof(double) + namelen, arch, archlen);
    memcpy(vals + nv * sizeof(double) + namelen + archlen, src, srclen);
    *hash = cg_fnv(CG_FNV_INIT, key, *len);
    return key;
}

/* Traces the spec into k: Lua only, no lock held (a slow spec must not
 * hold up other contexts' compiles). */
static int trace_request(const cg_request *r, cg_graph **g, char *err)
{
    if (r->dtype >= CG_NDT || r->grad_dtype >= CG_NDT || r->state_dtype >= CG_NDT)
        return cg_fail(err, JOPT_EINVAL, "element type %d is not float32 (0), "
                       "bfloat16 (1) or float16 (2)",
                       r->dtype >= CG_NDT ? r->dtype : r->grad_dtype >= CG_NDT
                       ? r->grad_dtype : r->state_dtype);
    if (r->vkernel)
        return cg_trace_vkernel(r->spec, r->vkernel, g, err);
    if (cg_spec_method(r->spec))
        return cg_fail(err, JOPT_ESPEC, "spec %s has method '%s' and vector "
                       "kernels, not an update", cg_spec_path(r->spec),
                       cg_spec_method(r->spec));
    return cg_trace(r->spec, r, g, err);
}

static int trace_into(const cg_request *r, cg_kernel *k, char *err)
{
    int rc = trace_request(r, &k->graph, err);
    if (rc)
        return rc;
    cg_graph *g = k->graph;
    cg_layout *l = &k->layout;
    /* per-step values that read neither the tensor's scalar states, shape
     * or sums, nor make its stochastic-rounding keys or scalar stores, are
     * the same for every tensor at the same step: the batch computes them
     * once for a run of such calls (the pow()s of bias corrections) */
    k->shared_u = 1;
    for (int i = 0; i < g->n; i++) {
        cg_op op = (cg_op)g->nodes[i].op;
        if (!cg_dom_varying(g->nodes[i].dom) &&
            (op == CG_SCALAR || op == CG_SHAPE || op == CG_SUM || op == CG_MAXALL))
            k->shared_u = 0;
    }
    for (int s = 0; s < g->nslots; s++)
        if (g->sr[s] || (g->store[s] >= 0 && (g->kind[s] == CG_KIND_SCALAR ||
                                              g->kind[s] == CG_KIND_SCALAR64)))
            k->shared_u = 0;
    if (!(k->scratch = cg_malloc(((size_t)g->n + 1) * sizeof *k->scratch)) ||
        !(k->fn = cg_calloc((size_t)g->nloops + 1, sizeof *k->fn)))
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    l->nstate = g->nstate;
    l->state = g->state;
    l->init = g->init;
    l->init_value = g->init_value;
    l->kind = g->kind + 2; /* by state, as the other fields */
    l->ninput = g->ninput;
    l->input = g->input;
    l->ngstate = g->ngstate;
    l->gstate = g->gstate;
    l->gstate_f32 = g->gstate_f32;
    l->ginit = g->ginit;
    l->nuniform = g->nuniform + g->nextra;
    l->dtype = g->dtype;
    l->nreduce = g->nreduce + g->nrowred + g->ncolred + g->ngred;
    for (int i = 0; i < g->nreduce; i++)
        *(g->reduce_kind[i] == CG_REDUCE_MAX ? &l->nmaxima : &l->nsums) += 1;
    for (int i = 0; i < g->nrowred; i++)
        *(g->row_kind[i] == CG_REDUCE_MAX ? &l->nmaxima : &l->nsums) += 1;
    for (int i = 0; i < g->ncolred; i++)
        *(g->col_kind[i] == CG_REDUCE_MAX ? &l->nmaxima : &l->nsums) += 1;
    for (int i = 0; i < g->ngred; i++)
        *(g->gred_kind[i] == CG_REDUCE_MAX ? &l->nmaxima : &l->nsums) += 1;
    l->npasses = 0;
    for (int i = 0; i < g->nloops; i++) /* passes over the tensor's elements */
        l->npasses += g->loops[i].kind >= CG_LOOP_COLS && g->loops[i].space == 0;
    if (!l->npasses)
        l->npasses = 1;
    l->rank = g->shaped ? r->rank : g->rank;
    l->shaped = g->shaped;
    l->read = g->read;
    l->npass = g->npass;
    l->pass_read = g->pass_read;
    l->pass_written = g->pass_written;
    l->ngemm = g->ngemm;
    l->scratch = g->scratch;
    for (int i = 0; i < g->nloops; i++) { /* a matrix call's tasks, at most */
        const cg_space *sp = &g->spaces[g->loops[i].space];
        size_t n = g->ngemm ? (size_t)((sp->rows * sp->cols + CG_CHUNK - 1) / CG_CHUNK) : 0;
        l->mtasks = n > l->mtasks ? n : l->mtasks;
    }
    for (int lv = 0; lv < g->nlevels && g->ngemm; lv++) {
        size_t n = 0;
        for (int i = 0; i < g->ngemm; i++) {
            const cg_gemm *m = &g->gemm[i];
            n += m->level == lv ? cg_gemm_ntasks(m) : 0;
            l->gemm_flops += m->level == lv ? (m->sym ? 1.0 : 2.0) * (double)m->m *
                                                  (double)m->n * (double)m->k : 0;
        }
        l->mtasks = n > l->mtasks ? n : l->mtasks;
    }
    if (g->ngemm)
        cg_gemm_init();
    l->nlevels = g->nlevels;
    for (int i = 0; i < g->ngred; i++)
        l->glevels |= 1u << g->nodes[g->gred_arg[i]].level;
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] >= 0)
            l->written |= 1ull << s;
    if (r->vkernel) {
        l->narrays = g->nslots;
        l->nscalars = cg_spec_find_vkernel(r->spec, r->vkernel)->nscalars;
        l->nresults = g->nresult;
    }
    l->has_scalar = g->ngstate > 0;
    for (int i = 0; i < g->nstate; i++) {
        l->has_unset |= g->init[i] == CG_INIT_UNSET;
        l->has_scalar |= g->kind[2 + i] == CG_KIND_SCALAR ||
                         g->kind[2 + i] == CG_KIND_SCALAR64;
    }
    return JOPT_OK;
}

/* LLVM's half, under the lock */
static int compile_locked(cg_jit *j, const cg_request *r, cg_kernel *k, char *err)
{
    int rc;
    if (r->arch) {
        if (r->reference)
            return cg_fail(err, JOPT_EDEVICE, "the reference interpreter runs on "
                           "the CPU only, not on a GPU");
        if (r->vkernel)
            return cg_fail(err, JOPT_EDEVICE, "%s: vector kernels (closure "
                           "optimizers) do not run on the GPU", cg_spec_path(r->spec));
        rc = cg_nvptx_compile(k->graph, r->arch, cg_spec_path(r->spec), &k->gpu, err);
        if (rc == JOPT_OK)
            j->compiles++;
        return rc;
    }
    if (r->reference)
        return JOPT_OK;
    if (!j->llvm && (rc = cg_llvm_new(&j->llvm, err)))
        return rc;
    char name[64];
    snprintf(name, sizeof name, "jopt_kernel_%llu", ++j->serial);
    rc = cg_llvm_compile(j->llvm, k->graph, name, k->fn, &k->tracker, err);
    if (rc == JOPT_OK)
        j->compiles++;
    return rc;
}

/* under the lock: a cached kernel for the key, with a reference taken;
 * for a tensor with short rows, not a kernel of row and column loops built
 * for any size (short_axes) */
static cg_kernel *lookup_locked(cg_jit *j, const unsigned char *key, size_t len,
                                uint64_t hash, int short_rows)
{
    for (cg_kernel *k = j->cache; k; k = k->next)
        if (k->hash == hash && k->keylen == len && !memcmp(k->key, key, len) &&
            !(short_rows && k->graph->two_d)) {
            k->refs++;
            j->hits++;
            return k;
        }
    return NULL;
}

int cg_kernel_get(cg_jit *j, const cg_request *r, cg_kernel **out, char *err)
{
    int rank = r->vkernel ? 1 : r->rank > 0 ? r->rank : 1;
    const int64_t *shape = r->vkernel ? NULL : r->shape;
    /* keys: for any rank, this rank, this shape, this rank with these short
     * last sizes; looked up in the order 0, 2, 3, 1 */
    int64_t ax[2];
    int fix = short_axes(is_native(r), rank, shape, ax);
    size_t len[4];
    uint64_t hash[4];
    unsigned char *key[4] = {make_key(r, -1, NULL, NULL, &len[0], &hash[0]),
                             make_key(r, rank, NULL, NULL, &len[1], &hash[1]),
                             shape ? make_key(r, rank, shape, NULL, &len[2], &hash[2]) : NULL,
                             fix ? make_key(r, rank, NULL, ax, &len[3], &hash[3]) : NULL};
    if (!key[0] || !key[1] || (shape && !key[2]) || (fix && !key[3])) {
        for (int i = 0; i < 4; i++)
            cg_free(key[i]);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    static const int order[4] = {0, 2, 3, 1};
    pthread_mutex_lock(&jit_lock);
    cg_kernel *hit = NULL;
    for (int i = 0; i < 4 && !hit; i++) {
        int w = order[i];
        hit = key[w] ? lookup_locked(j, key[w], len[w], hash[w], w == 1 && fix) : NULL;
    }
    pthread_mutex_unlock(&jit_lock);
    if (hit) {
        for (int i = 0; i < 4; i++)
            cg_free(key[i]);
        *out = hit;
        return JOPT_OK;
    }
    cg_request req = *r;
    req.rank = rank;
    req.shape = shape;
    cg_kernel *k = cg_calloc(1, sizeof *k);
    int rc = k ? trace_into(&req, k, err) : cg_fail(err, JOPT_ENOMEM, "out of memory");
    int which = 0; /* its key */
    if (rc == JOPT_OK) {
        cg_graph *g = k->graph;
        k->native = is_native(r);
        which = g->shaped ? 2 : fix && g->two_d ? 3 : g->rank >= 0;
        if (which == 3) {
            k->layout.fixed_cols = g->fixed_cols = ax[0];
            k->layout.fixed_rows = g->fixed_rows = ax[1];
        }
    }
    for (int i = 0; i < 4; i++)
        if (i != which)
            cg_free(key[i]);
    pthread_mutex_lock(&jit_lock);
    if (rc == JOPT_OK && (hit = lookup_locked(j, key[which], len[which], hash[which], 0)) == NULL)
        rc = compile_locked(j, &req, k, err);
    if (rc || hit) {
        if (k) {
            k->jit = j;
            kernel_destroy(k);
        }
        pthread_mutex_unlock(&jit_lock);
        cg_free(key[which]);
        if (hit)
            *out = hit;
        return rc;
    }
    k->jit = j;
    k->refs = 1;
    k->key = key[which];
    k->keylen = len[which];
    k->hash = hash[which];
    k->next = j->cache;
    j->cache = k;
    j->ncached++;
    pthread_mutex_unlock(&jit_lock);
    *out = k;
    return JOPT_OK;
}

void cg_kernel_release(cg_kernel *k)
{
    if (!k)
        return;
    pthread_mutex_lock(&jit_lock);
    cg_jit *j = k->jit;
    if (--k->refs == 0 && j->ncached > CACHE_KEEP) {
        for (cg_kernel **p = &j->cache; *p; p = &(*p)->next)
            if (*p == k) {
                *p = k->next;
                break;
            }
        j->ncached--;
        kernel_destroy(k);
    }
    pthread_mutex_unlock(&jit_lock);
}

const cg_layout *cg_kernel_layout(const cg_kernel *k) { return &k->layout; }

const cg_gpu_info *cg_kernel_gpu(const cg_kernel *k)
{
    return k->gpu ? cg_nvptx_info(k->gpu) : NULL;
}

void cg_kernel_host_values(const cg_kernel *k, const cg_env_host *env, double *h)
{
    cg_nvptx_host_values(k->gpu, k->graph, env, h, k->scratch);
}
const cg_graph *cg_kernel_graph(const cg_kernel *k) { return k->graph; }

void cg_kernel_uniforms(const cg_kernel *k, const cg_env *env, double *u)
{
    cg_interp_uniforms(k->graph, env, u, k->scratch);
}

int cg_kernel_uniforms_shared(const cg_kernel *k) { return k->shared_u; }

void cg_kernel_loop(const cg_kernel *k, int loop, const cg_task *tasks,
                    int64_t ntasks)
{
    if (k->fn[loop]) {
        k->fn[loop](tasks, ntasks);
        return;
    }
    for (int64_t i = 0; i < ntasks; i++)
        cg_interp_run(k->graph, &k->graph->loops[loop], &tasks[i]);
}

int64_t cg_kind_numel(int kind, int64_t n, const int64_t *shape, int rank)
{
    int64_t rows = rank >= 2 ? shape[1] : 1, cols = rank >= 1 ? shape[0] : n;
    switch (kind) {
    case CG_KIND_ROW: return cols ? n / cols : 0;
    case CG_KIND_COL: return rows ? n / rows : 0;
    case CG_KIND_SCALAR: return 1;
    case CG_KIND_SCALAR64: return 2;
    default: return n;
    }
}

size_t cg_call_work(const cg_kernel *k, int64_t n, const int64_t *shape, int rank)
{
    const cg_graph *g = k->graph;
    if (!g->two_d || rank < 2)
        return 0;
    return (size_t)(g->nrowred * cg_kind_numel(CG_KIND_ROW, n, shape, rank) +
                    g->ncolred * cg_kind_numel(CG_KIND_COL, n, shape, rank));
}

void cg_kernel_results(const cg_kernel *k, const double *u, double *out)
{
    const cg_graph *g = k->graph;
    for (int r = 0; r < g->nresult; r++) {
        const cg_node *x = &g->nodes[g->result[r]];
        out[r] = x->op == CG_CONST ? x->value : u[x->uslot];
    }
}

int cg_kernel_guard(const cg_kernel *k, double t, const double *values,
                    const int64_t *shape, int rank, int64_t numel,
                    const double *gstate, char *err)
{
    const cg_graph *g = k->graph;
    if (!g->nguard)
        return JOPT_OK;
    int32_t last = 0;
    for (int r = 0; r < g->nguard; r++)
        last = g->guard[r] > last ? g->guard[r] : last;
    double *val = k->scratch; /* the graph's leaves and ops up to the last
                                 condition; nothing a condition cannot read
                                 (cg_graph_finish checked) is evaluated */
    for (int32_t i = 0; i <= last; i++) {
        const cg_node *x = &g->nodes[i];
        double v = NAN;
        if (cg_dom_varying(x->dom)) {
            val[i] = NAN;
            continue;
        }
        switch ((cg_op)x->op) {
        case CG_CONST: v = x->value; break;
        case CG_STEP: v = t; break;
        case CG_HYPER: v = values[x->slot]; break;
        case CG_GSTATE: v = gstate ? gstate[x->slot] : NAN; break;
        case CG_SHAPE:
            v = x->slot == 0 ? (double)numel
                : x->slot <= rank && shape ? (double)shape[x->slot - 1] : NAN;
            break;
        default:
            if (!(cg_op_flags((cg_op)x->op) & (CG_F_LEAF | CG_F_REDUCE)))
                v = cg_eval_double((cg_op)x->op,
                                   x->arg[0] >= 0 ? val[x->arg[0]] : 0,
                                   x->arg[1] >= 0 ? val[x->arg[1]] : 0,
                                   x->arg[2] >= 0 ? val[x->arg[2]] : 0);
        }
        val[i] = v;
    }
    for (int r = 0; r < g->nguard; r++)
        if (val[g->guard[r]] == 0)
            return cg_fail(err, JOPT_EINVAL, "%s", g->guard_msg[r]);
    return JOPT_OK;
}

/* The names `cg_graph_print` shows: each array slot's, and each value a
 * hyper node reads (a hyperparameter, "betas[1]", or a kernel scalar). */
static int print_graph(const cg_request *r, const cg_graph *g, char **text,
                       char *err)
{
    const cg_spec *spec = r->spec;
    const cg_vkernel_sig *vk = r->vkernel ? cg_spec_find_vkernel(spec, r->vkernel) : NULL;
    size_t nv = vk ? (size_t)vk->nscalars : cg_spec_nvalues(spec);
    const char **slots = cg_calloc(CG_MAX_SLOTS, sizeof *slots);
    const char *gnames[CG_MAX_GSTATE];
    char **hyper = cg_calloc(nv + 1, sizeof *hyper);
    char title[256];
    int rc = JOPT_OK;
    if (!slots || !hyper) {
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory printing the graph");
        goto done;
    }
    for (int s = 0; s < g->nslots; s++)
        slots[s] = vk ? vk->arrays[s]
                   : s == 0 ? "param"
                   : s == 1 ? "grad"
                   : s - 2 < g->nstate ? cg_spec_state_name(spec, (size_t)g->state[s - 2])
                   : s - 2 - g->nstate < g->ninput
                       ? cg_spec_input(spec, (size_t)g->input[s - 2 - g->nstate])
                       : "work";
    for (int i = 0; i < g->ngstate; i++)
        gnames[i] = cg_spec_state_name(spec, (size_t)g->gstate[i]);
    for (size_t i = 0; vk && i < nv; i++)
        hyper[i] = (char *)vk->scalars[i];
    for (size_t i = 0; !vk && i < cg_spec_nhyper(spec); i++) {
        const cg_hyper *h = cg_spec_hyper(spec, i);
        for (int k = 0; k < h->len; k++) {
            size_t need = strlen(h->name) + 16;
            if (!(hyper[h->offset + k] = cg_malloc(need))) {
                rc = cg_fail(err, JOPT_ENOMEM, "out of memory printing the graph");
                goto done;
            }
            if (h->tuple)
                snprintf(hyper[h->offset + k], need, "%s[%d]", h->name, k);
            else
                snprintf(hyper[h->offset + k], need, "%s", h->name);
        }
    }
    snprintf(title, sizeof title, "%s %s%s%s", cg_spec_name(spec),
             vk || r->named ? "kernel " : "update", vk ? vk->name : r->named ? r->named : "",
             r->fresh && !vk ? " (fresh)" : "");
    rc = cg_graph_print(g, title, slots, gnames, (const char *const *)hyper, text, err);
done:
    for (size_t i = 0; !vk && hyper && i < nv; i++)
        cg_free(hyper[i]);
    cg_free(hyper);
    cg_free(slots);
    return rc;
}

int cg_emit_text(cg_jit *j, const cg_request *r, const char *what, char **text,
                 char *err)
{
    if (strcmp(what, "graph") && strcmp(what, "ir") && strcmp(what, "asm") &&
        strcmp(what, "ptx"))
        return cg_fail(err, JOPT_EINVAL, "unknown output '%s' (graph, ir, asm "
                       "or ptx)", what);
    cg_graph *g;
    int rc = trace_request(r, &g, err);
    if (rc)
        return rc;
    int64_t ax[2]; /* the kernel cg_kernel_get would build for this shape */
    if (!g->shaped && g->two_d && short_axes(is_native(r), r->rank, r->shape, ax)) {
        g->fixed_cols = ax[0];
        g->fixed_rows = ax[1];
    }
    if (!strcmp(what, "graph")) {
        rc = print_graph(r, g, text, err);
        cg_graph_free(g);
        return rc;
    }
    pthread_mutex_lock(&jit_lock);
    if (!strcmp(what, "ptx")) { /* the GPU kernels, for r->arch or sm_90 */
        cg_nvptx *p = NULL;
        rc = r->vkernel ? cg_fail(err, JOPT_EDEVICE, "%s: vector kernels (closure "
                                  "optimizers) do not run on the GPU",
                                  cg_spec_path(r->spec))
                        : cg_nvptx_compile(g, r->arch ? r->arch : "sm_90",
                                           cg_spec_path(r->spec), &p, err);
        if (rc == JOPT_OK && !(*text = cg_strdup(cg_nvptx_info(p)->text)))
            rc = cg_fail(err, JOPT_ENOMEM, "out of memory");
        cg_nvptx_free(p);
    } else {
        if (!j->llvm)
            rc = cg_llvm_new(&j->llvm, err);
        if (rc == JOPT_OK)
            rc = cg_llvm_text(j->llvm, g, what, text, err);
    }
    pthread_mutex_unlock(&jit_lock);
    cg_graph_free(g);
    return rc;
}
