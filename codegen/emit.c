/*
 * emit.c - a finished graph becomes LLVM IR.
 *
 * For each loop of the graph's plan (cg_loop: a level and a kind), the
 * module has
 *
 *   void NAME_<i>(const cg_task *tasks, i64 ntasks)
 *     the ABI the batch calls (cg_int.h): a loop over the task list, each
 *     task's arrays loaded and passed to
 *   internal alwaysinline void inner_<i>(float *noalias a0, ...,
 *       double *noalias axis0, ..., i64 begin, i64 end, double *noalias u,
 *       double *noalias red, i64 rows, i64 cols, i64 base, i64 nmat,
 *       double *noalias cpart)
 *     the loop over the elements of one task.  Each array is its own
 *     `noalias` pointer, so after inlining the loop vectorizer widens the
 *     loop with no runtime overlap checks (the runtime guarantees that no
 *     two arrays overlap).
 *
 * Loops: flat (elements of a 1-D kernel, rows or columns of a 2-D one):
 * one index; 2-D elements: rows [begin, end), each row's columns; column
 * blocks: columns [begin, end) of `nmat` matrices from row `base`, row by
 * row.
 * Per-step operands are read from u[] and rounded to float once, before
 * the loop.  Each node is the IR of its row in ops.h; no fast-math flags,
 * so each node is one IEEE operation, as in interp.c, and every sum is
 * added in interp.c's order.
 */
#include <llvm-c/Core.h>
#include <llvm-c/DebugInfo.h> /* LLVMTemporaryMDNode: a loop's self-reference */
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
               offsetof(cg_task, red) == 32 && offsetof(cg_task, axis) == 40 &&
               offsetof(cg_task, rows) == 48 && offsetof(cg_task, cols) == 56 &&
               offsetof(cg_task, base) == 64 && offsetof(cg_task, nmat) == 72 &&
               offsetof(cg_task, cpart) == 80 && sizeof(cg_task) == 88,
               "emit.c's task type mirrors cg_task: update task_type()");

#define NFIELDS 11

typedef struct emitter {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef f32, f64, i1, i64, ptr, i16, i32, f16;
    unsigned vwidth;       /* float lanes of the target's vector width */
    const cg_graph *g;
    const cg_loop *loop;
    uint8_t *how;          /* the current loop's plan */
    uint8_t *rowc;         /* per node: the same along a row (find_rowc) */
    LLVMValueRef *val;     /* per node */
    LLVMValueRef fn;       /* the inner function being built */
    LLVMValueRef array[CG_MAX_SLOTS];
    LLVMValueRef axis[2 * CG_MAX_AXISRED];
    LLVMValueRef begin, end, u, red, rows, cols, base, nmat, cpart;
    LLVMValueRef at_e, at_row, at_col; /* the element's indices */
    LLVMValueRef srkey[CG_MAX_SLOTS];  /* a stochastic store's 32-bit key */
    /* pairs of bfloat16 elements (emit_pair_loop): 1 the even element, 2
     * the odd; each array's 32-bit word and the even half to store */
    int pair;
    LLVMValueRef word[CG_MAX_SLOTS], half[CG_MAX_SLOTS];
} emitter;

static void add_attr(LLVMContextRef ctx, LLVMValueRef fn, unsigned idx,
                     const char *name);

static LLVMValueRef intrinsic_t(emitter *e, const char *name, LLVMTypeRef t,
                                LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(e->mod, id, &t, 1);
    LLVMTypeRef ty = LLVMIntrinsicGetType(e->ctx, id, &t, 1);
    return LLVMBuildCall2(e->b, ty, fn, args, n, "");
}

static LLVMValueRef i64c(emitter *e, long long v)
{
    return LLVMConstInt(e->i64, (unsigned long long)v, 1);
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

/* a float function of the C library (atan2f), called: the JIT's result is
 * then the interpreter's, bit for bit */
static LLVMValueRef ir_libm(emitter *e, const char *name, LLVMValueRef *a,
                            unsigned n)
{
    LLVMTypeRef params[3] = {e->f32, e->f32, e->f32};
    LLVMTypeRef ty = LLVMFunctionType(e->f32, params, n, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(e->mod, name);
    if (!fn) {
        fn = LLVMAddFunction(e->mod, name, ty);
        add_attr(e->ctx, fn, LLVMAttributeFunctionIndex, "nounwind");
        add_attr(e->ctx, fn, LLVMAttributeFunctionIndex, "willreturn");
    }
    return LLVMBuildCall2(e->b, ty, fn, a, n, "");
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

/* c10::BFloat16's rounding on the bits, (u + 0x7fff + (u >> 16 & 1)) with
 * the low half cleared, NaN kept: integer ops vectorize at full width
 * where `fptrunc to bfloat` would not (docs/design.md) */
static LLVMValueRef ir_bf16(emitter *e, LLVMValueRef *a)
{
    LLVMBuilderRef b = e->b;
    LLVMTypeRef i32 = LLVMInt32TypeInContext(e->ctx);
    LLVMValueRef u = LLVMBuildBitCast(b, a[0], i32, "");
    LLVMValueRef odd = LLVMBuildAnd(b, LLVMBuildLShr(b, u, LLVMConstInt(i32, 16, 0), ""),
                                    LLVMConstInt(i32, 1, 0), "");
    LLVMValueRef r = LLVMBuildAdd(b, u, LLVMBuildAdd(b, odd, LLVMConstInt(i32, 0x7fff, 0), ""), "");
    r = LLVMBuildAnd(b, r, LLVMConstInt(i32, 0xffff0000u, 0), "");
    LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, a[0], a[0], "");
    return LLVMBuildSelect(b, nan, a[0], LLVMBuildBitCast(b, r, e->f32, ""), "");
}

/* ---- values ------------------------------------------------------------------ */

static LLVMValueRef gep(emitter *e, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef i)
{
    return LLVMBuildInBoundsGEP2(e->b, t, base, &i, 1, "");
}

/* a row or column reduction's value, rounded to float */
static LLVMValueRef axis_value(emitter *e, const cg_node *x)
{
    int to = cg_reduce_dom((cg_op)x->op);
    LLVMValueRef p = to == CG_DOM_ROW ? gep(e, e->f64, e->axis[x->slot], e->at_row)
                                      : gep(e, e->f64, e->axis[e->g->nrowred + x->slot],
                                            e->at_col);
    return LLVMBuildFPTrunc(e->b, LLVMBuildLoad2(e->b, e->f64, p, ""), e->f32, "");
}

/* ---- element types: loads widen to float, stores round once ------------------
 * bfloat16 by integer arithmetic (full vector width on every x86 target;
 * `fptrunc to bfloat` would be a libcall per element without AVX512-BF16),
 * float16 by fpext/fptrunc (F16C's vcvtph2ps/vcvtps2ph).  interp.c computes
 * the same on integers. */

static LLVMValueRef u32c(emitter *e, unsigned v)
{
    return LLVMConstInt(e->i32, v, 0);
}

static LLVMValueRef elem_ptr(emitter *e, int s)
{
    int k = e->g->kind[s];
    LLVMValueRef at = k == CG_KIND_ROW ? e->at_row : k == CG_KIND_COL ? e->at_col : e->at_e;
    LLVMTypeRef t = e->g->dtype[s] == CG_DT_BF16 ? e->i16 : e->g->dtype[s] == CG_DT_F16
                    ? e->f16 : e->f32;
    return gep(e, t, e->array[s], at);
}

static LLVMValueRef load_slot(emitter *e, int s)
{
    LLVMBuilderRef b = e->b;
    if (e->pair) { /* the even element: the word's low half, shifted up */
        if (!e->word[s]) {
            LLVMValueRef w = LLVMBuildLoad2(b, e->i32, elem_ptr(e, s), "");
            LLVMSetAlignment(w, 2);
            e->word[s] = w;
        }
        LLVMValueRef w = e->pair == 1 ? LLVMBuildShl(b, e->word[s], u32c(e, 16), "")
                                      : LLVMBuildAnd(b, e->word[s], u32c(e, 0xffff0000u), "");
        return LLVMBuildBitCast(b, w, e->f32, "");
    }
    switch (e->g->dtype[s]) {
    case CG_DT_BF16: {
        LLVMValueRef h = LLVMBuildLoad2(b, e->i16, elem_ptr(e, s), "");
        LLVMValueRef w = LLVMBuildShl(b, LLVMBuildZExt(b, h, e->i32, ""), u32c(e, 16), "");
        return LLVMBuildBitCast(b, w, e->f32, "");
    }
    case CG_DT_F16:
        return LLVMBuildFPExt(b, LLVMBuildLoad2(b, e->f16, elem_ptr(e, s), ""), e->f32, "");
    default:
        return LLVMBuildLoad2(b, e->f32, elem_ptr(e, s), "");
    }
}

/* interp.c's cg_sr_bits of the element's index */
static LLVMValueRef sr_bits(emitter *e, LLVMValueRef key)
{
    LLVMBuilderRef b = e->b;
    LLVMValueRef lo = LLVMBuildTrunc(b, e->at_e, e->i32, "");
    LLVMValueRef hi = LLVMBuildTrunc(b, LLVMBuildLShr(b, e->at_e, i64c(e, 32), ""), e->i32, "");
    LLVMValueRef x = LLVMBuildAdd(b, LLVMBuildAdd(b, LLVMBuildMul(b, lo, u32c(e, 0x9e3779b9u), ""),
                                                  LLVMBuildMul(b, hi, u32c(e, 0x7feb352du), ""), ""),
                                  key, "");
    static const unsigned shift[3] = {16, 15, 16}, mul[2] = {0x7feb352du, 0x846ca68bu};
    for (int k = 0; k < 3; k++) {
        x = LLVMBuildXor(b, x, LLVMBuildLShr(b, x, u32c(e, shift[k]), ""), "");
        if (k < 2)
            x = LLVMBuildMul(b, x, u32c(e, mul[k]), "");
    }
    return x;
}

static void store_slot(emitter *e, int s, LLVMValueRef v)
{
    LLVMBuilderRef b = e->b;
    if (e->g->dtype[s] == CG_DT_F16) {
        LLVMBuildStore(b, LLVMBuildFPTrunc(b, v, e->f16, ""), elem_ptr(e, s));
        return;
    }
    if (e->g->dtype[s] != CG_DT_BF16) {
        LLVMBuildStore(b, v, elem_ptr(e, s));
        return;
    }
    /* a NaN becomes 0x7fc00000 first, which rounds to 0x7fc0 either way:
     * one select on the 32-bit lanes, before they are narrowed */
    LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, v, v, "");
    LLVMValueRef u = LLVMBuildSelect(b, nan, u32c(e, 0x7fc00000u),
                                     LLVMBuildBitCast(b, v, e->i32, ""), ""), r;
    if (e->g->sr[s]) { /* + 16 random bits, truncated */
        LLVMValueRef bits = LLVMBuildLShr(b, sr_bits(e, e->srkey[s]), u32c(e, 16), "");
        r = LLVMBuildAdd(b, u, bits, "");
    } else {           /* + 0x7fff + the kept part's lowest bit */
        LLVMValueRef lsb = LLVMBuildAnd(b, LLVMBuildLShr(b, u, u32c(e, 16), ""), u32c(e, 1), "");
        r = LLVMBuildAdd(b, LLVMBuildAdd(b, u, u32c(e, 0x7fff), ""), lsb, "");
    }
    if (e->pair == 1) { /* the even element: the low half of the word */
        e->half[s] = LLVMBuildLShr(b, r, u32c(e, 16), "");
        return;
    }
    if (e->pair == 2) { /* the odd one, and the pair's word */
        LLVMValueRef w = LLVMBuildOr(b, e->half[s], LLVMBuildAnd(b, r, u32c(e, 0xffff0000u), ""), "");
        e->at_e = LLVMBuildNSWAdd(b, e->at_e, i64c(e, -1), ""); /* the pair's address */
        LLVMValueRef st = LLVMBuildStore(b, w, elem_ptr(e, s));
        LLVMSetAlignment(st, 2);
        e->at_e = LLVMBuildNSWAdd(b, e->at_e, i64c(e, 1), "");
        return;
    }
    LLVMValueRef h = LLVMBuildTrunc(b, LLVMBuildLShr(b, r, u32c(e, 16), ""), e->i16, "");
    LLVMBuildStore(b, h, elem_ptr(e, s));
}

static LLVMValueRef compute(emitter *e, int32_t i)
{
    const cg_node *x = &e->g->nodes[i];
    LLVMValueRef A[3] = {NULL, NULL, NULL};
    emitter *E = e;
    if (x->op == CG_LOAD)
        return load_slot(e, x->slot);
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

/* Which nodes have one value along a row of a matrix, whatever the
 * column: row values, and what is made of them and per-step values only,
 * column sums of such values included (every column of the matrix holds the
 * same sum, added in the same order: Adafactor's mean of its row
 * statistics).  A 2-D loop computes them once per row, not per element
 * (phase 1), reading such a column sum at the matrix's first column. */
static void find_rowc(emitter *e)
{
    const cg_graph *g = e->g;
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        int r = x->dom <= CG_DOM_ROW;
        if (!r && x->op != CG_LOAD && !g->ngemm) {
            int f = cg_op_flags((cg_op)x->op);
            r = 1;
            if (f & CG_F_REDUCE)
                r = (f & CG_F_TO_COL) && e->rowc[x->arg[0]];
            else
                for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
                    r &= e->rowc[x->arg[k]];
        }
        e->rowc[i] = (uint8_t)r;
    }
}

/* interp.c's phase(): 1 once per row (2-D element and column loops), 2
 * per element, 0 not in the loop.  (interp.c computes the row-constant
 * values per element: the same values.) */
static int phase(const emitter *e, int32_t i)
{
    int per_row = e->g->two_d && e->loop->kind >= CG_LOOP_COLS;
    switch (e->how[i]) {
    case CG_HOW_ROWWISE: return 1;
    case CG_HOW_RELOAD: return per_row && e->g->nodes[i].dom == CG_DOM_ROW ? 1 : 2;
    case CG_HOW_AXIS:
    case CG_HOW_COMPUTE: return per_row && e->rowc[i] ? 1 : 2;
    default: return 0;
    }
}

static void eval(emitter *e, int ph)
{
    const cg_graph *g = e->g;
    for (int i = 0; i < g->n; i++) {
        if (phase(e, i) != ph)
            continue;
        if (e->how[i] == CG_HOW_RELOAD)
            e->val[i] = load_slot(e, cg_reload_slot(g, i, e->loop));
        else if (e->how[i] == CG_HOW_AXIS)
            e->val[i] = axis_value(e, &g->nodes[i]);
        else
            e->val[i] = compute(e, i);
    }
}

/* the loop's stores, after all of the element's loads */
static void store(emitter *e)
{
    const cg_graph *g = e->g;
    for (int s = 0; s < g->nslots; s++)
        if (cg_loop_stores(g, e->loop, s))
            store_slot(e, s, e->val[g->store[s]]);
    for (int w = 0; w < g->nwork; w++) /* workspace: float32 */
        if (cg_loop_stores_work(g, e->loop, w))
            LLVMBuildStore(e->b, e->val[g->work[w].node], elem_ptr(e, g->work[w].slot));
}

/* the per-step operands, before the loop */
static void uniforms(emitter *e)
{
    const cg_graph *g = e->g;
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (e->how[i] != CG_HOW_UNIFORM)
            continue;
        if (x->op == CG_CONST) {
            e->val[i] = x->boolean ? LLVMConstInt(e->i1, x->value != 0, 0)
                                   : LLVMConstReal(e->f32, (double)(float)x->value);
            continue;
        }
        LLVMValueRef d = LLVMBuildLoad2(e->b, e->f64, gep(e, e->f64, e->u,
                                                          i64c(e, x->uslot)), "");
        e->val[i] = x->boolean ? LLVMBuildFCmp(e->b, LLVMRealUNE, d,
                                               LLVMConstReal(e->f64, 0), "")
                               : LLVMBuildFPTrunc(e->b, d, e->f32, "");
    }
    for (int s = 0; s < g->nslots; s++) /* the stochastic stores' keys */
        if (g->sr[s]) {
            LLVMValueRef d = LLVMBuildLoad2(e->b, e->f64, gep(e, e->f64, e->u,
                                                              i64c(e, g->sru[s])), "");
            e->srkey[s] = LLVMBuildFPToUI(e->b, d, e->i32, "");
        }
}

/* ---- reductions ------------------------------------------------------------- */

/* the reductions loop l accumulates, by their target: tensor sums (into
 * red[]), row sums, column sums (interp.c's accumulates()) */
typedef struct accs {
    int32_t tensor[CG_MAX_REDUCE], row[CG_MAX_AXISRED], col[CG_MAX_AXISRED];
    int nt, nr, nc;
} accs;

static void find_accs(const cg_graph *g, const cg_loop *l, accs *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 0; i < g->n; i++) {
        if (!cg_loop_accumulates(g, l, i))
            continue;
        int to = cg_reduce_dom((cg_op)g->nodes[i].op);
        if (to == CG_DOM_COL)
            a->col[a->nc++] = i;
        else if (to == CG_DOM_ROW)
            a->row[a->nr++] = i;
        else
            a->tensor[a->nt++] = i;
    }
}

static int kind_of(const cg_graph *g, int32_t i)
{
    const cg_node *x = &g->nodes[i];
    int to = cg_reduce_dom((cg_op)x->op);
    return to == CG_DOM_ROW ? g->row_kind[x->slot] : to == CG_DOM_COL
                                                     ? g->col_kind[x->slot]
                                                     : g->reduce_kind[x->slot];
}

/* acc (+) x, in double */
static LLVMValueRef reduce_add(emitter *e, int kind, LLVMValueRef acc, LLVMValueRef x)
{
    if (kind == CG_REDUCE_MAX) {
        LLVMValueRef mx[2] = {acc, x};
        return intrinsic_t(e, "llvm.maximum", e->f64, mx, 2);
    }
    return LLVMBuildFAdd(e->b, acc, x, "");
}

/* *p (+)= x, a lane or an array entry in double */
static void add_into(emitter *e, int kind, LLVMValueRef p, LLVMValueRef x)
{
    LLVMBuildStore(e->b, reduce_add(e, kind, LLVMBuildLoad2(e->b, e->f64, p, ""), x), p);
}

static LLVMValueRef identity(emitter *e, int kind)
{
    return LLVMConstReal(e->f64, cg_reduce_identity(kind));
}

static LLVMValueRef widen(emitter *e, int32_t i)
{
    return LLVMBuildFPExt(e->b, e->val[e->g->nodes[i].arg[0]], e->f64, "");
}

/* ---- flat loops ------------------------------------------------------------- */

static LLVMMetadataRef md_str(emitter *e, const char *s)
{
    return LLVMMDStringInContext2(e->ctx, s, strlen(s));
}

static LLVMMetadataRef md_node(emitter *e, LLVMMetadataRef *ops, size_t n)
{
    return LLVMMDNodeInContext2(e->ctx, ops, n);
}

/* Gives the loop whose latch branch this is the properties props[n]
 * (at most 4).  The loop ID is a self-referential node, as LLVM wants it. */
static void loop_md(emitter *e, LLVMValueRef latch, const LLVMMetadataRef *props, int n)
{
    LLVMMetadataRef self = LLVMTemporaryMDNode(e->ctx, NULL, 0), ops[5] = {self};
    for (int i = 0; i < n && i < 4; i++)
        ops[i + 1] = props[i];
    LLVMMetadataRef id = md_node(e, ops, (size_t)(n < 4 ? n : 4) + 1);
    LLVMMetadataReplaceAllUsesWith(self, id); /* and frees the temporary */
    LLVMSetMetadata(latch, LLVMGetMDKindIDInContext(e->ctx, "llvm.loop", 9),
                    LLVMMetadataAsValue(e->ctx, id));
}

/* llvm.loop.vectorize.width: the target's full width */
static LLVMMetadataRef md_full_width(emitter *e)
{
    LLVMMetadataRef w[2] = {md_str(e, "llvm.loop.vectorize.width"),
                            LLVMValueAsMetadata(u32c(e, e->vwidth))};
    return md_node(e, w, 2);
}

/* The loop over a block's CG_LANES lanes: vectorized at full width, not
 * unrolled first into copies for the SLP vectorizer to pack (which packs
 * them at mixed widths); the vector loop is then unrolled, and the lanes
 * kept in registers. */
static void lane_loop_md(emitter *e, LLVMValueRef latch)
{
    LLVMMetadataRef en[2] = {md_str(e, "llvm.loop.vectorize.enable"),
                             LLVMValueAsMetadata(LLVMConstInt(e->i1, 1, 0))};
    LLVMMetadataRef nu[1] = {md_str(e, "llvm.loop.unroll.disable")};
    LLVMMetadataRef fu[1] = {md_str(e, "llvm.loop.unroll.full")};
    LLVMMetadataRef fv[2] = {md_str(e, "llvm.loop.vectorize.followup_all"),
                             md_node(e, fu, 1)};
    LLVMMetadataRef props[4] = {md_full_width(e), md_node(e, en, 2), md_node(e, nu, 1),
                                md_node(e, fv, 2)};
    loop_md(e, latch, props, 4);
}

/* A loop over float16 elements asks for the full vector width: the
 * vectorizer's cost model would take 4 lanes for fpext/fptrunc half, and
 * narrow the whole loop with them (docs/notes/mixed-precision-ir.md: 2x
 * slower). */
static void full_width(emitter *e, LLVMValueRef latch)
{
    int f16 = 0;
    for (int s = 0; s < e->g->nslots; s++)
        f16 |= e->g->dtype[s] == CG_DT_F16;
    if (!f16)
        return;
    LLVMMetadataRef w = md_full_width(e);
    loop_md(e, latch, &w, 1);
}

static void set_flat_index(emitter *e, LLVMValueRef i)
{
    e->at_e = e->at_row = e->at_col = i;
}

/* A flat loop without reductions: one element per iteration; the loop
 * vectorizer widens it (the arrays are noalias). */
static void emit_plain_loop(emitter *e, LLVMBasicBlockRef entry)
{
    LLVMBuilderRef b = e->b;
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "loop");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "done");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, e->begin, e->end, ""), loop, done);
    LLVMPositionBuilderAtEnd(b, loop);
    LLVMValueRef i = LLVMBuildPhi(b, e->i64, "i");
    set_flat_index(e, i);
    eval(e, 2);
    store(e);
    LLVMValueRef next = LLVMBuildNSWAdd(b, i, i64c(e, 1), "");
    full_width(e, LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, e->end, ""),
                                  loop, done));
    LLVMBasicBlockRef in_b[2] = {entry, loop};
    LLVMValueRef in_v[2] = {e->begin, next};
    LLVMAddIncoming(i, in_v, in_b, 2);
    LLVMPositionBuilderAtEnd(b, done);
    LLVMBuildRetVoid(b);
}

/* Whether a flat loop without sums can take its elements in pairs: every
 * array it reads or writes is bfloat16. */
static int pairable(const emitter *e)
{
    const cg_graph *g = e->g;
    if (g->two_d || e->loop->kind != CG_LOOP_ELEM)
        return 0;
    int any = 0;
    for (int s = 0; s < g->nslots; s++) {
        int lv, k;
        cg_store_loop(g, s, &lv, &k);
        int stored = lv == e->loop->level && k == e->loop->kind;
        if ((g->read >> s & 1) || stored) {
            if (g->dtype[s] != CG_DT_BF16 || g->kind[s] != CG_KIND_ELEM)
                return 0;
            any = 1;
        }
    }
    return any;
}

/* A flat loop over pairs of bfloat16 elements: one 32-bit word of each
 * array holds elements i and i + 1, which widen by a shift and a mask, and
 * whose two rounded halves go back as one word.  The same arithmetic as
 * one element at a time, with a quarter of the shifts and shuffles that
 * widening and narrowing 16-bit lanes costs (the ports the divider shares
 * on Zen 3).  An odd element at the end takes the plain loop's path. */
static void emit_pair_loop(emitter *e, LLVMBasicBlockRef entry)
{
    LLVMBuilderRef b = e->b;
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "pairs");
    LLVMBasicBlockRef last = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "last");
    LLVMBasicBlockRef one = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "one");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "done");
    /* pair_end = begin + (max(end - begin, 0) rounded down to even) */
    LLVMValueRef zero = i64c(e, 0);
    LLVMValueRef n = LLVMBuildSub(b, e->end, e->begin, "");
    n = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, ""), n, zero, "");
    LLVMValueRef pend = LLVMBuildAdd(b, e->begin, LLVMBuildAnd(b, n, i64c(e, -2), ""), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, e->begin, pend, ""), loop, last);
    LLVMPositionBuilderAtEnd(b, loop);
    LLVMValueRef i = LLVMBuildPhi(b, e->i64, "i");
    memset(e->word, 0, sizeof e->word);
    for (e->pair = 1; e->pair <= 2; e->pair++) {
        set_flat_index(e, e->pair == 1 ? i : LLVMBuildNSWAdd(b, i, i64c(e, 1), ""));
        eval(e, 2);
        store(e);
    }
    e->pair = 0;
    LLVMValueRef next = LLVMBuildNSWAdd(b, i, i64c(e, 2), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, pend, ""), loop, last);
    LLVMBasicBlockRef in_b[2] = {entry, loop};
    LLVMValueRef in_v[2] = {e->begin, next};
    LLVMAddIncoming(i, in_v, in_b, 2);
    LLVMPositionBuilderAtEnd(b, last);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, pend, e->end, ""), one, done);
    LLVMPositionBuilderAtEnd(b, one);
    set_flat_index(e, pend);
    eval(e, 2);
    store(e);
    LLVMBuildBr(b, done);
    LLVMPositionBuilderAtEnd(b, done);
    LLVMBuildRetVoid(b);
}

/* a counted loop `for (i = from; i < to; i++)`: loop_open leaves the
 * builder in its body with c->i the index, loop_close after it */
typedef struct counted {
    LLVMBasicBlockRef body, done, pre;
    LLVMValueRef i;
} counted;

static void loop_open(emitter *e, counted *c, LLVMValueRef from, LLVMValueRef to,
                      const char *name)
{
    LLVMBuilderRef b = e->b;
    c->pre = LLVMGetInsertBlock(b);
    c->body = LLVMAppendBasicBlockInContext(e->ctx, e->fn, name);
    c->done = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "after");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, from, to, ""), c->body, c->done);
    LLVMPositionBuilderAtEnd(b, c->body);
    c->i = LLVMBuildPhi(b, e->i64, name);
    LLVMValueRef in[1] = {from};
    LLVMBasicBlockRef from_b[1] = {c->pre};
    LLVMAddIncoming(c->i, in, from_b, 1);
}

static LLVMValueRef loop_close(emitter *e, counted *c, LLVMValueRef to)
{
    LLVMBuilderRef b = e->b;
    LLVMValueRef next = LLVMBuildNSWAdd(b, c->i, i64c(e, 1), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
    LLVMValueRef br = LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, to, ""),
                                      c->body, c->done);
    LLVMValueRef in[1] = {next};
    LLVMBasicBlockRef from_b[1] = {latch};
    LLVMAddIncoming(c->i, in, from_b, 1);
    LLVMPositionBuilderAtEnd(b, c->done);
    return br;
}

static LLVMValueRef lane_slot(emitter *e, LLVMValueRef lanes, int r, LLVMValueRef j)
{
    LLVMValueRef idx = LLVMBuildAdd(e->b, i64c(e, (long long)r * CG_LANES), j, "");
    return gep(e, e->f64, lanes, idx);
}

/* element `at` of a flat loop: its values and stores, and its tensor sums
 * added into lane j */
static void lane_element(emitter *e, const accs *a, const int *kind, LLVMValueRef lanes,
                         LLVMValueRef at, LLVMValueRef j)
{
    set_flat_index(e, at);
    eval(e, 2);
    store(e);
    for (int r = 0; r < a->nt; r++)
        add_into(e, kind[r], lane_slot(e, lanes, r, j), widen(e, a->tensor[r]));
}

/* A flat loop with tensor sums.  Element i of the range adds into lane
 * (i - begin) % CG_LANES of each; the lanes are then added to red[] in
 * lane order.  The order of every addition is fixed by the element's place
 * in its range, not by the vector width, so the JIT and interp.c agree bit
 * for bit, and independent lanes let the sums run at the speed of memory.
 * Blocks of CG_LANES elements run an inner loop over the lanes, which the
 * loop vectorizer takes at full width (lane_loop_md); then the tail of
 * fewer than CG_LANES elements, a copy of the body per lane.  The lanes
 * live in an alloca indexed by constants once the vector loop is unrolled
 * (SROA makes them registers). */
static void emit_lane_loop(emitter *e, const accs *a)
{
    LLVMBuilderRef b = e->b;
    int nr = a->nt;
    int kind[CG_MAX_REDUCE];
    LLVMTypeRef lanes_ty = LLVMArrayType2(e->f64, (unsigned)(nr * CG_LANES));
    LLVMValueRef lanes = LLVMBuildAlloca(b, lanes_ty, "lanes");
    for (int r = 0; r < nr; r++) {
        kind[r] = kind_of(e->g, a->tensor[r]);
        for (int j = 0; j < CG_LANES; j++)
            LLVMBuildStore(b, identity(e, kind[r]), lane_slot(e, lanes, r, i64c(e, j)));
    }
    /* nblk blocks, then the tail from blk_end */
    LLVMValueRef zero = i64c(e, 0);
    LLVMValueRef n = LLVMBuildSub(b, e->end, e->begin, "");
    n = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, ""), n, zero, "");
    LLVMValueRef nblk = LLVMBuildAShr(b, n, i64c(e, 4), "");
    LLVMValueRef blk_end = LLVMBuildAdd(b, e->begin, LLVMBuildShl(b, nblk, i64c(e, 4), ""), "");
    _Static_assert(CG_LANES == 16, "the shifts by 4 above are by log2(CG_LANES)");
    counted blk, ln;
    loop_open(e, &blk, zero, nblk, "blk");
    LLVMValueRef i0 = LLVMBuildNSWAdd(b, e->begin, LLVMBuildShl(b, blk.i, i64c(e, 4), ""), "");
    loop_open(e, &ln, zero, i64c(e, CG_LANES), "lane");
    lane_element(e, a, kind, lanes, LLVMBuildNSWAdd(b, i0, ln.i, ""), ln.i);
    lane_loop_md(e, loop_close(e, &ln, i64c(e, CG_LANES)));
    loop_close(e, &blk, nblk);
    /* the tail: element blk_end + j into lane j */
    LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "tail_end");
    for (int j = 0; j < CG_LANES - 1; j++) {
        LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "tail");
        LLVMValueRef at = LLVMBuildNSWAdd(b, blk_end, i64c(e, j), "");
        LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, at, e->end, ""), body, after);
        LLVMPositionBuilderAtEnd(b, body);
        lane_element(e, a, kind, lanes, at, i64c(e, j));
    }
    LLVMBuildBr(b, after);
    LLVMPositionBuilderAtEnd(b, after);
    /* red[r] (+)= lane 0 (+) lane 1 ... in lane order */
    for (int r = 0; r < nr; r++) {
        LLVMValueRef slot = gep(e, e->f64, e->red, i64c(e, e->g->nodes[a->tensor[r]].slot));
        LLVMValueRef acc = LLVMBuildLoad2(b, e->f64, slot, "");
        for (int j = 0; j < CG_LANES; j++)
            acc = reduce_add(e, kind[r], acc, LLVMBuildLoad2(b, e->f64,
                             lane_slot(e, lanes, r, i64c(e, j)), ""));
        LLVMBuildStore(b, acc, slot);
    }
    LLVMBuildRetVoid(b);
}

/* ---- 2-D loops ------------------------------------------------------------------ */

/* the entry of column sum node i for column index ci (its axis array) */
static LLVMValueRef col_entry(emitter *e, int32_t i, LLVMValueRef ci)
{
    return gep(e, e->f64, e->axis[e->g->nrowred + e->g->nodes[i].slot], ci);
}

/* The row's column entries of each column sum (cg_task's cpart: the
 * task's partial sums, or the matrix's column array), set to the identity
 * at the task's first row and at each matrix's. */
static void col_rows(emitter *e, const accs *a, LLVMValueRef m, LLVMValueRef colbase,
                     LLVMValueRef *colp)
{
    LLVMBuilderRef b = e->b;
    if (!a->nc)
        return;
    LLVMValueRef part = LLVMBuildIsNotNull(b, e->cpart, "");
    for (int r = 0; r < a->nc; r++) { /* one address: no offset from NULL */
        int slot = e->g->nodes[a->col[r]].slot;
        LLVMValueRef arr = e->axis[e->g->nrowred + slot];
        LLVMValueRef own = LLVMBuildMul(b, i64c(e, slot), e->cols, "");
        colp[r] = gep(e, e->f64, LLVMBuildSelect(b, part, e->cpart, arr, ""),
                      LLVMBuildSelect(b, part, own, colbase, ""));
    }
    LLVMValueRef first = LLVMBuildOr(b, LLVMBuildICmp(b, LLVMIntEQ, m, e->begin, ""),
                                     LLVMBuildICmp(b, LLVMIntEQ, LLVMBuildSRem(b, m, e->rows, ""),
                                                   i64c(e, 0), ""), "");
    LLVMBasicBlockRef init = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "colinit");
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "colrow");
    LLVMBuildCondBr(b, first, init, join);
    LLVMPositionBuilderAtEnd(b, init);
    counted c;
    loop_open(e, &c, i64c(e, 0), e->cols, "colzero");
    for (int r = 0; r < a->nc; r++)
        LLVMBuildStore(b, identity(e, kind_of(e->g, a->col[r])),
                       gep(e, e->f64, colp[r], c.i));
    loop_close(e, &c, e->cols);
    LLVMBuildBr(b, join);
    LLVMPositionBuilderAtEnd(b, join);
}

/* column c's entries (col_rows) (+)= the element's summands */
static void add_cols(emitter *e, const accs *a, const LLVMValueRef *colp, LLVMValueRef c)
{
    for (int r = 0; r < a->nc; r++)
        add_into(e, kind_of(e->g, a->col[r]), gep(e, e->f64, colp[r], c),
                 widen(e, a->col[r]));
}

/* A 2-D element loop: rows [begin, end), each row's columns.  Row values
 * are computed once per row; tensor sums take lane c % CG_LANES of column
 * c, over all the task's rows, then the lanes in order; row sums the same
 * within a row, written to the row's entry; column sums add into the
 * column's entry (col_rows), row after row.  The lanes live in allocas
 * indexed by constants only (SROA makes them registers). */
static void emit_rows_loop(emitter *e, const accs *a)
{
    LLVMBuilderRef b = e->b;
    LLVMTypeRef lanes_ty = LLVMArrayType2(e->f64, (unsigned)((a->nt + a->nr + 1) * CG_LANES));
    LLVMValueRef lanes = LLVMBuildAlloca(b, lanes_ty, "lanes");
    for (int r = 0; r < a->nt; r++)
        for (int j = 0; j < CG_LANES; j++)
            LLVMBuildStore(b, identity(e, kind_of(e->g, a->tensor[r])),
                           lane_slot(e, lanes, r, i64c(e, j)));
    counted rows;
    loop_open(e, &rows, e->begin, e->end, "row");
    LLVMValueRef m = rows.i;
    LLVMValueRef colbase = LLVMBuildMul(b, LLVMBuildSDiv(b, m, e->rows, ""), e->cols, "");
    LLVMValueRef rowbase = LLVMBuildMul(b, m, e->cols, "");
    e->at_row = m;
    e->at_col = colbase; /* a row-constant column value's (find_rowc) */
    eval(e, 1);
    for (int r = 0; r < a->nr; r++)
        for (int j = 0; j < CG_LANES; j++)
            LLVMBuildStore(b, identity(e, kind_of(e->g, a->row[r])),
                           lane_slot(e, lanes, a->nt + r, i64c(e, j)));
    LLVMValueRef colp[CG_MAX_AXISRED];
    col_rows(e, a, m, colbase, colp);
    int nl = a->nt + a->nr;
    if (!nl) { /* no sums: one plain loop over the row, which vectorizes */
        counted cols;
        loop_open(e, &cols, i64c(e, 0), e->cols, "col");
        e->at_row = m;
        e->at_e = LLVMBuildAdd(b, rowbase, cols.i, "");
        e->at_col = LLVMBuildAdd(b, colbase, cols.i, "");
        eval(e, 2);
        add_cols(e, a, colp, cols.i);
        store(e);
        full_width(e, loop_close(e, &cols, e->cols));
    } else {
        /* blocks of CG_LANES columns, column c0 + j into lane j (a constant
         * index: SROA keeps the lanes in registers), then the row's tail,
         * column c into lane c - blk_end, chosen by selects */
        LLVMValueRef nblk = LLVMBuildAShr(b, e->cols, i64c(e, 4), "");
        LLVMValueRef blk_end = LLVMBuildShl(b, nblk, i64c(e, 4), "");
        _Static_assert(CG_LANES == 16, "the shifts by 4 above are by log2(CG_LANES)");
        counted blk;
        loop_open(e, &blk, i64c(e, 0), nblk, "blk");
        LLVMValueRef c0 = LLVMBuildShl(b, blk.i, i64c(e, 4), "");
        {
            counted ln;
            loop_open(e, &ln, i64c(e, 0), i64c(e, CG_LANES), "lane");
            LLVMValueRef j = ln.i;
            LLVMValueRef c = LLVMBuildNSWAdd(b, c0, j, "");
            e->at_row = m;
            e->at_e = LLVMBuildAdd(b, rowbase, c, "");
            e->at_col = LLVMBuildAdd(b, colbase, c, "");
            eval(e, 2);
            for (int r = 0; r < nl; r++) {
                int32_t node = r < a->nt ? a->tensor[r] : a->row[r - a->nt];
                add_into(e, kind_of(e->g, node), lane_slot(e, lanes, r, j), widen(e, node));
            }
            add_cols(e, a, colp, c);
            store(e);
            lane_loop_md(e, loop_close(e, &ln, i64c(e, CG_LANES)));
        }
        loop_close(e, &blk, nblk);
        /* the row's tail: columns blk_end + j, j < cols - blk_end, into lane j,
         * a copy of the body per j (a constant lane).  A row shorter than
         * CG_LANES has no blocks: its lanes hold one element each, so its
         * sums are those elements added in order, which the copies also
         * keep as they go (`brief`): the same bits as adding the lanes, as
         * a lane left at the identity changes no sum or maximum. */
        LLVMValueRef ntail = LLVMBuildSub(b, e->cols, blk_end, "");
        for (int r = 0; r < a->nr; r++)
            LLVMBuildStore(b, identity(e, kind_of(e->g, a->row[r])),
                           lane_slot(e, lanes, nl, i64c(e, r)));
        LLVMBasicBlockRef after = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "tail_end");
        for (int j = 0; j < CG_LANES - 1; j++) {
            LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "tail");
            LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, i64c(e, j), ntail, ""), body,
                            after);
            LLVMPositionBuilderAtEnd(b, body);
            LLVMValueRef c = LLVMBuildAdd(b, blk_end, i64c(e, j), "");
            e->at_row = m;
            e->at_e = LLVMBuildAdd(b, rowbase, c, "");
            e->at_col = LLVMBuildAdd(b, colbase, c, "");
            eval(e, 2);
            for (int r = 0; r < nl; r++) {
                int32_t node = r < a->nt ? a->tensor[r] : a->row[r - a->nt];
                int kind = kind_of(e->g, node);
                LLVMValueRef x = widen(e, node);
                add_into(e, kind, lane_slot(e, lanes, r, i64c(e, j)), x);
                if (r >= a->nt)
                    add_into(e, kind, lane_slot(e, lanes, nl, i64c(e, r - a->nt)), x);
            }
            add_cols(e, a, colp, c);
            store(e);
        }
        LLVMBuildBr(b, after);
        LLVMPositionBuilderAtEnd(b, after);
        if (a->nr) { /* the row's sums: the lanes in order, or `brief` */
            LLVMBasicBlockRef full = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "lanes");
            LLVMBasicBlockRef brief = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "brief");
            LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "rowsum");
            LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntEQ, nblk, i64c(e, 0), ""), brief, full);
            LLVMValueRef lv[CG_MAX_AXISRED], bv[CG_MAX_AXISRED];
            LLVMPositionBuilderAtEnd(b, full);
            for (int r = 0; r < a->nr; r++) {
                int kind = kind_of(e->g, a->row[r]);
                LLVMValueRef acc = identity(e, kind);
                for (int l = 0; l < CG_LANES; l++)
                    acc = reduce_add(e, kind, acc, LLVMBuildLoad2(b, e->f64,
                                     lane_slot(e, lanes, a->nt + r, i64c(e, l)), ""));
                lv[r] = acc;
            }
            LLVMBuildBr(b, join);
            LLVMPositionBuilderAtEnd(b, brief);
            for (int r = 0; r < a->nr; r++)
                bv[r] = LLVMBuildLoad2(b, e->f64, lane_slot(e, lanes, nl, i64c(e, r)), "");
            LLVMBuildBr(b, join);
            LLVMPositionBuilderAtEnd(b, join);
            for (int r = 0; r < a->nr; r++) {
                LLVMValueRef phi = LLVMBuildPhi(b, e->f64, "");
                LLVMValueRef v[2] = {lv[r], bv[r]};
                LLVMBasicBlockRef from[2] = {full, brief};
                LLVMAddIncoming(phi, v, from, 2);
                LLVMBuildStore(b, phi, gep(e, e->f64, e->axis[e->g->nodes[a->row[r]].slot], m));
            }
        }
    }
    loop_close(e, &rows, e->end);
    for (int r = 0; r < a->nt; r++) {
        int kind = kind_of(e->g, a->tensor[r]);
        LLVMValueRef slot = i64c(e, e->g->nodes[a->tensor[r]].slot);
        LLVMValueRef acc = LLVMBuildLoad2(b, e->f64, gep(e, e->f64, e->red, slot), "");
        for (int l = 0; l < CG_LANES; l++)
            acc = reduce_add(e, kind, acc, LLVMBuildLoad2(b, e->f64,
                             lane_slot(e, lanes, r, i64c(e, l)), ""));
        LLVMBuildStore(b, acc, gep(e, e->f64, e->red, slot));
    }
    LLVMBuildRetVoid(b);
}

/* Column sums over `nmat` matrices from row `base`: columns [begin, end)
 * of each.  The column loop takes only column sums of row values
 * (graph.c's reduce_loop: Adafactor's mean of its row statistics), which
 * give every column the same sum, added in the same order: each is added
 * once per row into one accumulator and written to the columns after the
 * matrix's last row. */
static void emit_cols_loop(emitter *e, const accs *a)
{
    LLVMBuilderRef b = e->b;
    LLVMValueRef once = LLVMBuildAlloca(b, LLVMArrayType2(e->f64, CG_MAX_AXISRED), "once");
    counted mat;
    loop_open(e, &mat, i64c(e, 0), e->nmat, "mat");
    LLVMValueRef base = LLVMBuildAdd(b, e->base, LLVMBuildMul(b, mat.i, e->rows, ""), "");
    LLVMValueRef colbase = LLVMBuildMul(b, LLVMBuildSDiv(b, base, e->rows, ""),
                                        e->cols, "");
    for (int r = 0; r < a->nc; r++)
        LLVMBuildStore(b, identity(e, kind_of(e->g, a->col[r])),
                       gep(e, e->f64, once, i64c(e, r)));
    LLVMValueRef last = LLVMBuildAdd(b, base, e->rows, "");
    counted rows;
    loop_open(e, &rows, base, last, "row");
    e->at_row = rows.i;
    e->at_col = colbase; /* a row-constant column value's (find_rowc) */
    eval(e, 1);
    for (int r = 0; r < a->nc; r++)
        add_into(e, kind_of(e->g, a->col[r]), gep(e, e->f64, once, i64c(e, r)),
                 widen(e, a->col[r]));
    loop_close(e, &rows, last);
    counted fill;
    loop_open(e, &fill, e->begin, e->end, "fill");
    LLVMValueRef ci = LLVMBuildAdd(b, colbase, fill.i, "");
    for (int r = 0; r < a->nc; r++)
        LLVMBuildStore(b, LLVMBuildLoad2(b, e->f64, gep(e, e->f64, once, i64c(e, r)), ""),
                       col_entry(e, a->col[r], ci));
    loop_close(e, &fill, e->end);
    loop_close(e, &mat, e->nmat);
    LLVMBuildRetVoid(b);
}

/* ---- functions ------------------------------------------------------------------- */

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

/* the inner function's parameters: slots, axis arrays, begin, end, u, red,
 * rows, cols, base, nmat */
static unsigned naxis(const cg_graph *g)
{
    return (unsigned)(g->nrowred + g->ncolred);
}

static void emit_inner(emitter *e)
{
    const cg_graph *g = e->g;
    LLVMBuilderRef b = e->b;
    unsigned ns = (unsigned)g->nslots, na = naxis(g);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "entry");
    for (unsigned s = 0; s < ns; s++)
        e->array[s] = LLVMGetParam(e->fn, s);
    for (unsigned k = 0; k < na; k++)
        e->axis[k] = LLVMGetParam(e->fn, ns + k);
    e->begin = LLVMGetParam(e->fn, ns + na);
    e->end = LLVMGetParam(e->fn, ns + na + 1);
    e->u = LLVMGetParam(e->fn, ns + na + 2);
    e->red = LLVMGetParam(e->fn, ns + na + 3);
    e->rows = LLVMGetParam(e->fn, ns + na + 4);
    e->cols = LLVMGetParam(e->fn, ns + na + 5);
    e->base = LLVMGetParam(e->fn, ns + na + 6);
    e->nmat = LLVMGetParam(e->fn, ns + na + 7);
    e->cpart = LLVMGetParam(e->fn, ns + na + 8);
    if (g->fixed_cols) /* short rows: sizes LLVM can unroll by (kernel.c) */
        e->cols = i64c(e, g->fixed_cols);
    if (g->fixed_rows)
        e->rows = i64c(e, g->fixed_rows);
    if (g->fixed_cols && e->loop->kind == CG_LOOP_COLS) {
        /* a column task of short rows holds every column (batch.c cuts
         * blocks of 256 or more) */
        e->begin = i64c(e, 0);
        e->end = e->cols;
    }
    LLVMPositionBuilderAtEnd(b, entry);
    uniforms(e);
    accs a;
    find_accs(g, e->loop, &a);
    if (e->loop->kind == CG_LOOP_COLS)
        emit_cols_loop(e, &a);
    else if (e->loop->kind == CG_LOOP_ELEM && g->two_d)
        emit_rows_loop(e, &a);
    else if (a.nt)
        emit_lane_loop(e, &a);
    else if (pairable(e))
        emit_pair_loop(e, entry);
    else
        emit_plain_loop(e, entry);
}

/* cg_task as an LLVM struct, NULL if the target lays it out unlike the C
 * compiler did */
static LLVMTypeRef task_type(emitter *e, const cg_target *t, LLVMTypeRef *fields)
{
    LLVMTypeRef f[NFIELDS] = {e->ptr, e->i64, e->i64, e->ptr, e->ptr, e->ptr,
                              e->i64, e->i64, e->i64, e->i64, e->ptr};
    static const size_t offsets[NFIELDS] = {
        offsetof(cg_task, arrays), offsetof(cg_task, begin),
        offsetof(cg_task, end), offsetof(cg_task, u), offsetof(cg_task, red),
        offsetof(cg_task, axis), offsetof(cg_task, rows),
        offsetof(cg_task, cols), offsetof(cg_task, base), offsetof(cg_task, nmat),
        offsetof(cg_task, cpart)};
    memcpy(fields, f, sizeof f);
    LLVMTypeRef ty = LLVMStructTypeInContext(e->ctx, fields, NFIELDS, 0);
    for (unsigned k = 0; k < NFIELDS; k++)
        if (LLVMOffsetOfElement(t->layout, ty, k) != offsets[k])
            return NULL;
    if (LLVMABISizeOfType(t->layout, ty) != sizeof(cg_task))
        return NULL;
    return ty;
}

/* outer: the ABI the batch calls, a loop over the task list that calls
 * `inner` on each task's arrays and range */
static void emit_outer(emitter *e, const cg_target *t, LLVMTypeRef task_ty,
                       const LLVMTypeRef *field_ty, LLVMValueRef inner,
                       LLVMTypeRef inner_ty, const char *fname, LLVMValueRef *args)
{
    const cg_graph *g = e->g;
    LLVMBuilderRef b = e->b;
    unsigned ns = (unsigned)g->nslots, na = naxis(g);
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
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, ntasks, i64c(e, 0), ""), loop, done);
    LLVMPositionBuilderAtEnd(b, loop);
    LLVMValueRef ti = LLVMBuildPhi(b, e->i64, "t");
    LLVMValueRef task = gep(e, task_ty, tasks, ti);
    LLVMValueRef fields[NFIELDS];
    for (unsigned f = 0; f < NFIELDS; f++)
        fields[f] = LLVMBuildLoad2(b, field_ty[f],
                                   LLVMBuildStructGEP2(b, task_ty, task, f, ""), "");
    for (unsigned s = 0; s < ns; s++)
        args[s] = LLVMBuildLoad2(b, e->ptr, gep(e, e->ptr, fields[0], i64c(e, s)), "");
    for (unsigned k = 0; k < na; k++)
        args[ns + k] = LLVMBuildLoad2(b, e->ptr, gep(e, e->ptr, fields[5], i64c(e, k)), "");
    LLVMValueRef rest[9] = {fields[1], fields[2], fields[3], fields[4], fields[6],
                            fields[7], fields[8], fields[9], fields[10]};
    for (unsigned k = 0; k < 9; k++)
        args[ns + na + k] = rest[k];
    LLVMBuildCall2(b, inner_ty, inner, args, ns + na + 9, "");
    LLVMValueRef tnext = LLVMBuildNSWAdd(b, ti, i64c(e, 1), "");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, tnext, ntasks, ""), loop, done);
    LLVMValueRef tin[2] = {i64c(e, 0), tnext};
    LLVMBasicBlockRef tbb[2] = {entry, loop};
    LLVMAddIncoming(ti, tin, tbb, 2);
    LLVMPositionBuilderAtEnd(b, done);
    LLVMBuildRetVoid(b);
}

int cg_emit_module(LLVMContextRef ctx, const cg_target *t, const cg_graph *g,
                   const char *name, LLVMModuleRef *out, char *err)
{
    int rc = JOPT_OK;
    unsigned np = (unsigned)g->nslots + naxis(g) + 9;
    emitter e;
    memset(&e, 0, sizeof e);
    e.ctx = ctx;
    e.g = g;
    e.f32 = LLVMFloatTypeInContext(ctx);
    e.f64 = LLVMDoubleTypeInContext(ctx);
    e.i1 = LLVMInt1TypeInContext(ctx);
    e.i64 = LLVMInt64TypeInContext(ctx);
    e.ptr = LLVMPointerTypeInContext(ctx, 0);
    e.i16 = LLVMInt16TypeInContext(ctx);
    e.i32 = LLVMInt32TypeInContext(ctx);
    e.f16 = LLVMHalfTypeInContext(ctx);
    e.vwidth = (unsigned)atoi(t->vector_width) / 32;
    e.val = cg_calloc((size_t)g->n + 1, sizeof *e.val);
    e.how = cg_malloc((size_t)g->n + 1);
    e.rowc = cg_malloc((size_t)g->n + 1);
    LLVMTypeRef *params = cg_calloc(np, sizeof *params), field_ty[NFIELDS];
    LLVMValueRef *args = cg_calloc(np, sizeof *args);
    if (!e.val || !e.how || !e.rowc || !params || !args) {
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory emitting IR");
        goto done;
    }
    e.mod = LLVMModuleCreateWithNameInContext(name, ctx);
    LLVMSetTarget(e.mod, t->triple);
    LLVMSetModuleDataLayout(e.mod, t->layout);
    e.b = LLVMCreateBuilderInContext(ctx);
    find_rowc(&e);
    LLVMTypeRef task_ty = task_type(&e, t, field_ty);
    if (!task_ty) {
        rc = cg_fail(err, JOPT_ECOMPILE, "internal error: the target lays out "
                     "cg_task unlike the C compiler");
        goto done;
    }
    /* inner: (ptr noalias slots..., ptr noalias axis..., i64 begin, i64 end,
     *         ptr noalias u, ptr noalias red, i64 rows, i64 cols, i64 base,
     *         i64 nmat, ptr noalias cpart) */
    unsigned nptr = (unsigned)g->nslots + naxis(g);
    for (unsigned k = 0; k < np; k++)
        params[k] = k < nptr || k == nptr + 2 || k == nptr + 3 || k == nptr + 8 ? e.ptr
                                                                                : e.i64;
    LLVMTypeRef inner_ty = LLVMFunctionType(LLVMVoidTypeInContext(ctx), params, np, 0);
    for (int li = 0; li < g->nloops; li++) {
        char fname[160], iname[32];
        snprintf(fname, sizeof fname, "%s_%d", name, li);
        snprintf(iname, sizeof iname, "inner_%d", li);
        e.loop = &g->loops[li];
        cg_loop_plan(g, e.loop, e.how);
        e.fn = LLVMAddFunction(e.mod, iname, inner_ty);
        LLVMSetLinkage(e.fn, LLVMInternalLinkage);
        target_attrs(ctx, e.fn, t);
        add_attr(ctx, e.fn, LLVMAttributeFunctionIndex, "alwaysinline");
        for (unsigned k = 0; k < np; k++)
            if (params[k] == e.ptr)
                add_attr(ctx, e.fn, k + 1, "noalias");
        emit_inner(&e);
        emit_outer(&e, t, task_ty, field_ty, e.fn, inner_ty, fname, args);
    }
done:
    if (e.b)
        LLVMDisposeBuilder(e.b);
    if (rc && e.mod)
        LLVMDisposeModule(e.mod);
    else
        *out = e.mod;
    cg_free(args);
    cg_free(e.val);
    cg_free(e.how);
    cg_free(e.rowc);
    cg_free(params);
    return rc;
}
