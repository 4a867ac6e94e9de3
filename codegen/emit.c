/*
 * emit.c - a finished graph becomes LLVM IR.
 *
 * For each pass (pass 1 only with sums), the module has
 *
 *   void NAME[_late](const cg_task *tasks, i64 ntasks)
 *     the ABI the batch calls (cg_int.h): a loop over the task list, each
 *     task's arrays loaded and passed to
 *   internal alwaysinline void inner[_late](float *noalias a0, ...,
 *       i64 begin, i64 end, double *noalias u, double *noalias red)
 *     the loop over the elements of one range.  Each array is its own
 *     `noalias` pointer, so after inlining the loop vectorizer widens the
 *     loop with no runtime overlap checks (the runtime guarantees that no
 *     two arrays overlap).
 *
 * Uniform operands are read from u[] and rounded to float once, before the
 * loop.  Each node is the IR of its row in ops.h; no fast-math flags, so
 * each node is one IEEE operation, as in interp.c.
 */
#include <llvm-c/Core.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"

/* the outer function reads cg_task through this LLVM struct type: the C
 * layout it mirrors, checked here and against the target's data layout
 * when a module is built */
_Static_assert(offsetof(cg_task, arrays) == 0 && offsetof(cg_task, begin) == 8 &&
               offsetof(cg_task, end) == 16 && offsetof(cg_task, u) == 24 &&
               offsetof(cg_task, red) == 32 && sizeof(cg_task) == 40,
               "emit.c's task type mirrors cg_task: update task_type()");

typedef struct emitter {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef f32, f64, i1, i64, ptr;
    const cg_graph *g;
    LLVMValueRef *val;   /* per node */
    LLVMValueRef *array; /* per slot */
} emitter;

static LLVMValueRef intrinsic_t(emitter *e, const char *name, LLVMTypeRef t,
                                LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(e->mod, id, &t, 1);
    LLVMTypeRef ty = LLVMIntrinsicGetType(e->ctx, id, &t, 1);
    return LLVMBuildCall2(e->b, ty, fn, args, n, "");
}

/* ---- the IR of ops.h's rows ------------------------------------------------ */

static LLVMValueRef ir_call(emitter *e, const char *name, LLVMValueRef *a,
                           unsigned n)
{
    return intrinsic_t(e, name, e->f32, a, n);
}

static LLVMValueRef ir_fcmp(emitter *e, LLVMRealPredicate p, LLVMValueRef *a)
{
    return LLVMBuildFCmp(e->b, p, a[0], a[1], "");
}

static LLVMValueRef ir_sign(emitter *e, LLVMValueRef *a)
{
    LLVMValueRef zero = LLVMConstReal(e->f32, 0.0);
    LLVMValueRef lt[2] = {zero, a[0]}, gt[2] = {a[0], zero};
    LLVMValueRef pos = LLVMBuildUIToFP(e->b, ir_fcmp(e, LLVMRealOLT, lt), e->f32, "");
    LLVMValueRef neg = LLVMBuildUIToFP(e->b, ir_fcmp(e, LLVMRealOLT, gt), e->f32, "");
    return LLVMBuildFSub(e->b, pos, neg, "");
}

/* ATen: |w| < 0.5 ? fma(w, b-a, a) : fma(w-1, b-a, b) */
static LLVMValueRef ir_lerp(emitter *e, LLVMValueRef *a)
{
    LLVMBuilderRef b = e->b;
    LLVMValueRef d = LLVMBuildFSub(b, a[1], a[0], "");
    LLVMValueRef w = a[2];
    LLVMValueRef cmp[2] = {ir_call(e, "llvm.fabs", &w, 1), LLVMConstReal(e->f32, 0.5)};
    LLVMValueRef small = ir_fcmp(e, LLVMRealOLT, cmp);
    LLVMValueRef lo[3] = {w, d, a[0]};
    LLVMValueRef hi[3] = {LLVMBuildFSub(b, w, LLVMConstReal(e->f32, 1.0), ""), d, a[1]};
    return LLVMBuildSelect(b, small, ir_call(e, "llvm.fma", lo, 3),
                           ir_call(e, "llvm.fma", hi, 3), "");
}

static LLVMValueRef load_elem(emitter *e, int slot, LLVMValueRef idx)
{
    LLVMValueRef p = LLVMBuildInBoundsGEP2(e->b, e->f32, e->array[slot], &idx, 1, "");
    return LLVMBuildLoad2(e->b, e->f32, p, "");
}

/* a per-element node: its row of ops.h (graph.c keeps per-step-only ops,
 * leaves other than loads and reductions out of per-element code) */
static LLVMValueRef emit_varying(emitter *e, const cg_node *x, LLVMValueRef idx)
{
    LLVMValueRef A[3] = {NULL, NULL, NULL};
    emitter *E = e;
    if (x->op == CG_LOAD)
        return load_elem(e, x->slot, idx);
    for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
        A[k] = e->val[x->arg[k]];
    switch ((cg_op)x->op) {
#define EMIT_OP(id, name, arity, flags, d, f, ir) case CG_##id: return (ir);
        CG_OPS(EMIT_OP)
#undef EMIT_OP
    case CG_NOPS: break;
    }
    return NULL;
}

/* the float (or i1) value of a uniform node, computed before the loop */
static LLVMValueRef emit_uniform(emitter *e, const cg_node *x, LLVMValueRef u)
{
    if (x->op == CG_CONST)
        return x->boolean ? LLVMConstInt(e->i1, x->value != 0, 0)
                          : LLVMConstReal(e->f32, (double)(float)x->value);
    if (x->uslot < 0)
        return NULL; /* not read by varying code */
    LLVMValueRef off = LLVMConstInt(e->i64, (unsigned long long)x->uslot, 0);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(e->b, e->f64, u, &off, 1, "");
    LLVMValueRef d = LLVMBuildLoad2(e->b, e->f64, p, "");
    if (x->boolean)
        return LLVMBuildFCmp(e->b, LLVMRealUNE, d, LLVMConstReal(e->f64, 0), "");
    return LLVMBuildFPTrunc(e->b, d, e->f32, "");
}

static void add_attr(LLVMContextRef ctx, LLVMValueRef fn, unsigned idx,
                     const char *name)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    LLVMAddAttributeAtIndex(fn, idx, LLVMCreateEnumAttribute(ctx, kind, 0));
}

static void add_str_attr(LLVMContextRef ctx, LLVMValueRef fn, const char *k,
                         const char *v)
{
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(ctx, k, (unsigned)strlen(k),
                                                      v, (unsigned)strlen(v)));
}

static void target_attrs(LLVMContextRef ctx, LLVMValueRef fn, const cg_target *t)
{
    add_str_attr(ctx, fn, "target-cpu", t->cpu);
    add_str_attr(ctx, fn, "target-features", t->features);
    add_str_attr(ctx, fn, "prefer-vector-width", t->vector_width);
    add_attr(ctx, fn, LLVMAttributeFunctionIndex, "nounwind");
}

/* One element: every varying node at `idx` into e->val, then the stores
 * of this pass (after all of the element's loads).  In pass 1 a value
 * pass 0 stored is read back rather than recomputed. */
static void emit_element(emitter *e, int pass, LLVMValueRef idx)
{
    const cg_graph *g = e->g;
    for (int k = 0; k < g->n; k++) {
        if (!g->nodes[k].varying)
            continue;
        if (pass == 1 && g->subst[k] >= 0) {
            e->val[k] = load_elem(e, g->subst[k], idx);
        } else {
            e->val[k] = emit_varying(e, &g->nodes[k], idx);
        }
    }
    for (int s = 0; s < g->nslots; s++) {
        if (g->store[s] < 0 || g->scalar[s] || g->late_store[s] != pass)
            continue;
        LLVMValueRef p = LLVMBuildInBoundsGEP2(e->b, e->f32, e->array[s], &idx, 1, "");
        LLVMBuildStore(e->b, e->val[g->store[s]], p);
    }
}

/* acc (+) x for reduction r, in double */
static LLVMValueRef reduce_op(emitter *e, int r, LLVMValueRef acc, LLVMValueRef x)
{
    if (e->g->reduce_kind[r] == CG_REDUCE_MAX) {
        LLVMValueRef mx[2] = {acc, x};
        return intrinsic_t(e, "llvm.maximum", e->f64, mx, 2);
    }
    return LLVMBuildFAdd(e->b, acc, x, "");
}

static LLVMValueRef reduce_identity(emitter *e, int r)
{
    return LLVMConstReal(e->f64, e->g->reduce_kind[r] == CG_REDUCE_MAX ? -INFINITY : 0.0);
}

/* A pass without reductions: one element per iteration; the loop
 * vectorizer widens it (the arrays are noalias). */
static void emit_plain_loop(emitter *e, LLVMValueRef fn, int pass,
                            LLVMBasicBlockRef entry, LLVMValueRef begin,
                            LLVMValueRef end)
{
    LLVMBuilderRef b = e->b;
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(e->ctx, fn, "loop");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, fn, "done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, begin, end, ""), loop, done);
    LLVMPositionBuilderAtEnd(b, loop);
    LLVMValueRef i = LLVMBuildPhi(b, e->i64, "i");
    emit_element(e, pass, i);
    LLVMValueRef next = LLVMBuildNSWAdd(b, i, LLVMConstInt(e->i64, 1, 0), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, end, ""), loop, done);
    LLVMBasicBlockRef in_b[2] = {entry, loop};
    LLVMValueRef in_v[2] = {begin, next};
    LLVMAddIncoming(i, in_v, in_b, 2);
    LLVMPositionBuilderAtEnd(b, done);
    LLVMBuildRetVoid(b);
}

/* Pass 0 with reductions.  Element i of the range adds into lane
 * (i - begin) % CG_LANES of each reduction; the lanes are then added to
 * red[] in lane order.  The order of every addition is fixed by the
 * element's place in its range, not by the vector width, so the JIT and
 * interp.c agree bit for bit, and independent lanes let the sums run at
 * the speed of memory.  The body is emitted CG_LANES times per block, one
 * copy per lane (the SLP vectorizer packs them), then once more for the
 * tail of fewer than CG_LANES elements. */
static void emit_lane_loop(emitter *e, LLVMValueRef fn, LLVMBasicBlockRef entry,
                           LLVMValueRef begin, LLVMValueRef end, LLVMValueRef red)
{
    const cg_graph *g = e->g;
    LLVMBuilderRef b = e->b;
    int nr = g->nreduce;
    int32_t arg[CG_MAX_REDUCE];
    for (int i = 0; i < g->n; i++)
        if (g->nodes[i].op == CG_SUM || g->nodes[i].op == CG_MAXALL)
            arg[g->nodes[i].slot] = g->nodes[i].arg[0];
    LLVMValueRef acc_in[CG_MAX_REDUCE];
    for (int r = 0; r < nr; r++) {
        LLVMValueRef off = LLVMConstInt(e->i64, (unsigned long long)r, 0);
        acc_in[r] = LLVMBuildLoad2(b, e->f64, LLVMBuildInBoundsGEP2(b, e->f64, red, &off, 1, ""), "");
    }
    /* blk_end = begin + (max(end - begin, 0) rounded down to CG_LANES) */
    LLVMValueRef zero = LLVMConstInt(e->i64, 0, 0);
    LLVMValueRef n = LLVMBuildSub(b, end, begin, "");
    n = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, ""), n, zero, "");
    LLVMValueRef blk_end = LLVMBuildAdd(b, begin, LLVMBuildAnd(b, n,
                                        LLVMConstInt(e->i64, ~(unsigned long long)(CG_LANES - 1), 0), ""), "");
    LLVMBasicBlockRef block = LLVMAppendBasicBlockInContext(e->ctx, fn, "block");
    LLVMBasicBlockRef tailck = LLVMAppendBasicBlockInContext(e->ctx, fn, "tailck");
    LLVMBasicBlockRef tail = LLVMAppendBasicBlockInContext(e->ctx, fn, "tail");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, fn, "done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, begin, blk_end, ""), block, tailck);

    LLVMValueRef lane[CG_MAX_REDUCE][CG_LANES], next[CG_MAX_REDUCE][CG_LANES],
        at_tail[CG_MAX_REDUCE][CG_LANES], tl[CG_MAX_REDUCE][CG_LANES],
        tl_next[CG_MAX_REDUCE][CG_LANES];
    /* the blocks of CG_LANES elements */
    LLVMPositionBuilderAtEnd(b, block);
    LLVMValueRef i = LLVMBuildPhi(b, e->i64, "i");
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < CG_LANES; j++)
            lane[r][j] = LLVMBuildPhi(b, e->f64, "");
    for (int j = 0; j < CG_LANES; j++) {
        emit_element(e, 0, LLVMBuildNSWAdd(b, i, LLVMConstInt(e->i64, (unsigned long long)j, 0), ""));
        for (int r = 0; r < nr; r++)
            next[r][j] = reduce_op(e, r, lane[r][j], LLVMBuildFPExt(b, e->val[arg[r]], e->f64, ""));
    }
    LLVMValueRef inext = LLVMBuildNSWAdd(b, i, LLVMConstInt(e->i64, CG_LANES, 0), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, inext, blk_end, ""), block, tailck);
    LLVMBasicBlockRef from2[2] = {entry, block};
    LLVMValueRef iv[2] = {begin, inext};
    LLVMAddIncoming(i, iv, from2, 2);
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < CG_LANES; j++) {
            LLVMValueRef v[2] = {reduce_identity(e, r), next[r][j]};
            LLVMAddIncoming(lane[r][j], v, from2, 2);
        }

    /* the lanes after the blocks; the tail, one element per iteration,
     * element t of it going to lane t */
    LLVMPositionBuilderAtEnd(b, tailck);
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < CG_LANES; j++) {
            at_tail[r][j] = LLVMBuildPhi(b, e->f64, "");
            LLVMValueRef v[2] = {reduce_identity(e, r), next[r][j]};
            LLVMAddIncoming(at_tail[r][j], v, from2, 2);
        }
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, blk_end, end, ""), tail, done);
    LLVMPositionBuilderAtEnd(b, tail);
    LLVMValueRef it = LLVMBuildPhi(b, e->i64, "it");
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < CG_LANES; j++)
            tl[r][j] = LLVMBuildPhi(b, e->f64, "");
    emit_element(e, 0, it);
    LLVMValueRef t = LLVMBuildSub(b, it, blk_end, "");
    for (int r = 0; r < nr; r++) {
        LLVMValueRef x = LLVMBuildFPExt(b, e->val[arg[r]], e->f64, "");
        for (int j = 0; j < CG_LANES; j++) {
            LLVMValueRef is = LLVMBuildICmp(b, LLVMIntEQ, t,
                                            LLVMConstInt(e->i64, (unsigned long long)j, 0), "");
            tl_next[r][j] = LLVMBuildSelect(b, is, reduce_op(e, r, tl[r][j], x), tl[r][j], "");
        }
    }
    LLVMValueRef itnext = LLVMBuildNSWAdd(b, it, LLVMConstInt(e->i64, 1, 0), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, itnext, end, ""), tail, done);
    LLVMBasicBlockRef from3[2] = {tailck, tail};
    LLVMValueRef itv[2] = {blk_end, itnext};
    LLVMAddIncoming(it, itv, from3, 2);
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < CG_LANES; j++) {
            LLVMValueRef v[2] = {at_tail[r][j], tl_next[r][j]};
            LLVMAddIncoming(tl[r][j], v, from3, 2);
        }

    /* red[r] (+)= lane 0 (+) lane 1 ... in lane order */
    LLVMPositionBuilderAtEnd(b, done);
    LLVMValueRef fin[CG_MAX_REDUCE][CG_LANES];
    for (int r = 0; r < nr; r++)
        for (int j = 0; j < CG_LANES; j++) {
            fin[r][j] = LLVMBuildPhi(b, e->f64, "");
            LLVMValueRef v[2] = {at_tail[r][j], tl_next[r][j]};
            LLVMAddIncoming(fin[r][j], v, from3, 2);
        }
    for (int r = 0; r < nr; r++) {
        LLVMValueRef acc = acc_in[r];
        for (int j = 0; j < CG_LANES; j++)
            acc = reduce_op(e, r, acc, fin[r][j]);
        LLVMValueRef off = LLVMConstInt(e->i64, (unsigned long long)r, 0);
        LLVMBuildStore(b, acc, LLVMBuildInBoundsGEP2(b, e->f64, red, &off, 1, ""));
    }
    LLVMBuildRetVoid(b);
}

/* The loop over the elements for one pass; the inner function's
 * parameters are the arrays (0..nslots-1), begin, end, u and red. */
static void emit_inner(emitter *e, LLVMValueRef fn, int pass)
{
    const cg_graph *g = e->g;
    LLVMBuilderRef b = e->b;
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(e->ctx, fn, "entry");
    for (int s = 0; s < g->nslots; s++)
        e->array[s] = LLVMGetParam(fn, (unsigned)s);
    LLVMValueRef begin = LLVMGetParam(fn, (unsigned)g->nslots);
    LLVMValueRef end = LLVMGetParam(fn, (unsigned)g->nslots + 1);
    LLVMValueRef u = LLVMGetParam(fn, (unsigned)g->nslots + 2);
    LLVMValueRef red = LLVMGetParam(fn, (unsigned)g->nslots + 3);
    LLVMPositionBuilderAtEnd(b, entry);
    for (int i = 0; i < g->n; i++)
        if (!g->nodes[i].varying)
            e->val[i] = emit_uniform(e, &g->nodes[i], u);
    if (pass == 0 && g->nreduce)
        emit_lane_loop(e, fn, entry, begin, end, red);
    else
        emit_plain_loop(e, fn, pass, entry, begin, end);
}

/* cg_task as an LLVM struct: {ptr arrays, i64 begin, i64 end, ptr u,
 * ptr red}; 0 if the target lays it out unlike the C compiler did */
static LLVMTypeRef task_type(emitter *e, const cg_target *t)
{
    LLVMTypeRef fields[5] = {e->ptr, e->i64, e->i64, e->ptr, e->ptr};
    static const size_t offsets[5] = {
        offsetof(cg_task, arrays), offsetof(cg_task, begin),
        offsetof(cg_task, end), offsetof(cg_task, u), offsetof(cg_task, red)};
    LLVMTypeRef ty = LLVMStructTypeInContext(e->ctx, fields, 5, 0);
    for (unsigned f = 0; f < 5; f++)
        if (LLVMOffsetOfElement(t->layout, ty, f) != offsets[f])
            return NULL;
    if (LLVMABISizeOfType(t->layout, ty) != sizeof(cg_task))
        return NULL;
    return ty;
}

/* outer: the ABI the batch calls, a loop over the task list that calls
 * `inner` on each task's arrays and range */
static void emit_outer(emitter *e, const cg_target *t, LLVMTypeRef task_ty,
                       LLVMValueRef inner, LLVMTypeRef inner_ty,
                       const char *fname, LLVMValueRef *args)
{
    const cg_graph *g = e->g;
    LLVMBuilderRef b = e->b;
    LLVMTypeRef outer_params[2] = {e->ptr, e->i64};
    LLVMTypeRef outer_ty = LLVMFunctionType(LLVMVoidTypeInContext(e->ctx),
                                            outer_params, 2, 0);
    LLVMValueRef outer = LLVMAddFunction(e->mod, fname, outer_ty);
    target_attrs(e->ctx, outer, t);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(e->ctx, outer, "entry");
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(e->ctx, outer, "task");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, outer, "done");
    LLVMValueRef tasks = LLVMGetParam(outer, 0), ntasks = LLVMGetParam(outer, 1);
    LLVMPositionBuilderAtEnd(b, entry);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, ntasks,
                                     LLVMConstInt(e->i64, 0, 0), ""), loop, done);
    LLVMPositionBuilderAtEnd(b, loop);
    LLVMValueRef ti = LLVMBuildPhi(b, e->i64, "t");
    LLVMValueRef task = LLVMBuildInBoundsGEP2(b, task_ty, tasks, &ti, 1, "");
    LLVMTypeRef field_ty[5] = {e->ptr, e->i64, e->i64, e->ptr, e->ptr};
    LLVMValueRef fields[5];
    for (unsigned f = 0; f < 5; f++)
        fields[f] = LLVMBuildLoad2(b, field_ty[f],
                                   LLVMBuildStructGEP2(b, task_ty, task, f, ""), "");
    for (int sl = 0; sl < g->nslots; sl++) {
        LLVMValueRef off = LLVMConstInt(e->i64, (unsigned long long)sl, 0);
        LLVMValueRef p = LLVMBuildInBoundsGEP2(b, e->ptr, fields[0], &off, 1, "");
        args[sl] = LLVMBuildLoad2(b, e->ptr, p, "");
    }
    for (int k = 0; k < 4; k++)
        args[g->nslots + k] = fields[k + 1];
    LLVMBuildCall2(b, inner_ty, inner, args, (unsigned)g->nslots + 4, "");
    LLVMValueRef tnext = LLVMBuildNSWAdd(b, ti, LLVMConstInt(e->i64, 1, 0), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, tnext, ntasks, ""), loop, done);
    LLVMValueRef tin[2] = {LLVMConstInt(e->i64, 0, 0), tnext};
    LLVMBasicBlockRef tbb[2] = {entry, loop};
    LLVMAddIncoming(ti, tin, tbb, 2);
    LLVMPositionBuilderAtEnd(b, done);
    LLVMBuildRetVoid(b);
}

int cg_emit_module(LLVMContextRef ctx, const cg_target *t, const cg_graph *g,
                   const char *name, LLVMModuleRef *out, char *err)
{
    int rc = JOPT_OK;
    unsigned np = (unsigned)g->nslots + 4;
    emitter e;
    memset(&e, 0, sizeof e);
    e.ctx = ctx;
    e.g = g;
    e.f32 = LLVMFloatTypeInContext(ctx);
    e.f64 = LLVMDoubleTypeInContext(ctx);
    e.i1 = LLVMInt1TypeInContext(ctx);
    e.i64 = LLVMInt64TypeInContext(ctx);
    e.ptr = LLVMPointerTypeInContext(ctx, 0);
    e.val = calloc((size_t)g->n + 1, sizeof *e.val);
    e.array = calloc((size_t)g->nslots + 1, sizeof *e.array);
    LLVMTypeRef *params = calloc(np, sizeof *params);
    LLVMValueRef *args = calloc(np, sizeof *args);
    if (!e.val || !e.array || !params || !args) {
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory emitting IR");
        goto done;
    }
    e.mod = LLVMModuleCreateWithNameInContext(name, ctx);
    LLVMSetTarget(e.mod, t->triple);
    LLVMSetModuleDataLayout(e.mod, t->layout);
    e.b = LLVMCreateBuilderInContext(ctx);
    LLVMTypeRef task_ty = task_type(&e, t);
    if (!task_ty) {
        rc = cg_fail(err, JOPT_ECOMPILE, "internal error: the target lays out "
                     "cg_task unlike the C compiler");
        goto done;
    }

    /* inner: (ptr noalias a0, ..., i64 begin, i64 end, ptr noalias u,
     *         ptr noalias red) */
    for (int s = 0; s < g->nslots; s++)
        params[s] = e.ptr;
    params[g->nslots] = e.i64;
    params[g->nslots + 1] = e.i64;
    params[g->nslots + 2] = e.ptr;
    params[g->nslots + 3] = e.ptr;
    LLVMTypeRef inner_ty = LLVMFunctionType(LLVMVoidTypeInContext(ctx), params, np, 0);
    for (int pass = 0; pass < (g->nreduce ? 2 : 1); pass++) {
        char fname[160];
        snprintf(fname, sizeof fname, "%s%s", name, pass ? "_late" : "");
        LLVMValueRef inner = LLVMAddFunction(e.mod, pass ? "inner_late" : "inner",
                                             inner_ty);
        LLVMSetLinkage(inner, LLVMInternalLinkage);
        target_attrs(ctx, inner, t);
        add_attr(ctx, inner, LLVMAttributeFunctionIndex, "alwaysinline");
        for (unsigned k = 0; k < np; k++)
            if (k != (unsigned)g->nslots && k != (unsigned)g->nslots + 1)
                add_attr(ctx, inner, k + 1, "noalias");
        emit_inner(&e, inner, pass);
        emit_outer(&e, t, task_ty, inner, inner_ty, fname, args);
    }
done:
    if (e.b)
        LLVMDisposeBuilder(e.b);
    if (rc && e.mod)
        LLVMDisposeModule(e.mod);
    else
        *out = e.mod;
    free(args);
    free(e.val);
    free(e.array);
    free(params);
    return rc;
}
