/*
 * emit_nvptx.c - a finished graph becomes CUDA kernels for one step of a
 * group's tensors (the ABI and the launch order are in cg.h, "GPU
 * kernels"):
 *
 *   graph --plan: which per-step values the host computes (those of
 *          hyperparameters, t and the shape) and which the device does
 *          (those of sums and of scalar and group states)-->
 *   NVPTX module: VALUES per level (a thread per tensor, in double),
 *          GROUP per level with group sums (tensor by tensor in order),
 *          LOOP per loop of the plan (a block per chunk: float4 when the
 *          arrays allow, or tiles whose summands 16 lane threads add in
 *          the CPU's order), COMMIT for group states
 *   --LLVMVerifyModule--> "default<O3>" --> PTX (LLVMAssemblyFile)
 *
 * Each node is one IEEE operation, as in interp.c: every op is its row
 * of ops.h, built by this file's ir_* helpers (min and max as interp.c's
 * compare-and-select, which does not hang on how the back end lowers
 * llvm.maximum).  No fast-math flag, "unsafe-fp-math" attribute, FP
 * fusion option or LLVM command-line option is set, so the NVPTX back end
 * emits .rn adds, subs and muls (which ptxas never contracts into fma),
 * div.rn and sqrt.rn; tests/gpu/test_gpu.c checks the PTX.  A per-step
 * value the device computes takes only correctly rounded operations:
 * pow, exp and log of such a value are refused, since the GPU has no
 * correctly rounded ones and the CPU's libm is the reference.
 *
 * "sim" emits the same kernels for the host: special registers and the
 * barrier come from a trailing context argument, every kernel takes six
 * 8-byte arguments before it, and all memory is address space 0
 * (tests/gpu/fake_cuda.c runs them block by block).
 */
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_int.h"

#define VQ 2 /* float4 groups per thread per step of the vector loop */
#define VSTEP ((long long)CG_GPU_BLOCK * 4 * VQ)
#define SMEM_FLOATS (11 * 1024) /* a sum loop's tiles: with the lanes,
                                   under the 48 KiB of static shared memory */
#define SIM_ARGS 6 /* "sim": arguments of every kernel before the context */
#define MERGE_UNROLL 32 /* sums loaded at once when adding them in order */
#define GRP_GNEW CG_MAX_SLOTS
#define GRP_GRED (2 * CG_MAX_SLOTS)

struct cg_nvptx {
    cg_gpu_info info;
    cg_gpu_launch launch[CG_GPU_MAX_LAUNCH];
    char arch[16];
    char *text;
    int32_t *hnode; /* the node of each host value */
    int32_t *hidx;  /* per node: its index in h[], or -1 */
    int32_t *didx;  /* per node: its index in d[], or -1 */
    uint8_t *dev;   /* per node: a per-step value the device computes */
    uint8_t *need;  /* per node: read by device code */
};

typedef struct nv {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef f32, f64, i1, i32, i64, ptr, gptr, sptr, v4;
    const cg_graph *g;
    const cg_nvptx *p;
    int sim;
    unsigned gas, sas;          /* global and shared address spaces */
    LLVMValueRef simctx;        /* "sim": the kernel's context argument */
    LLVMBasicBlockRef allocas;  /* the current kernel's first block */
    LLVMValueRef fn;            /* the current kernel */
    LLVMValueRef *val;          /* per node: its value here */
    uint8_t *how;               /* the current loop's plan */
    uint64_t ld, st;            /* the current loop's loads and stores */
    LLVMValueRef arr[CG_MAX_SLOTS];
    char diag[CG_ERRLEN];
} nv;

static pthread_once_t nvptx_once = PTHREAD_ONCE_INIT;
static pthread_once_t native_once = PTHREAD_ONCE_INIT;

static void init_nvptx(void)
{
    LLVMInitializeNVPTXTargetInfo();
    LLVMInitializeNVPTXTarget();
    LLVMInitializeNVPTXTargetMC();
    LLVMInitializeNVPTXAsmPrinter();
}

static void init_native(void)
{
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
}

static void on_diagnostic(LLVMDiagnosticInfoRef info, void *arg)
{
    nv *e = arg;
    if (LLVMGetDiagInfoSeverity(info) != LLVMDSError || e->diag[0])
        return;
    char *msg = LLVMGetDiagInfoDescription(info);
    snprintf(e->diag, sizeof e->diag, "%s", msg);
    LLVMDisposeMessage(msg);
}

/* ---- small builders ------------------------------------------------------ */

static LLVMValueRef k64(nv *e, long long v)
{
    return LLVMConstInt(e->i64, (unsigned long long)v, 1);
}

static LLVMValueRef intrinsic(nv *e, const char *name, LLVMTypeRef over,
                              LLVMValueRef *args, unsigned n)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    size_t no = over ? 1 : 0;
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(e->mod, id, &over, no);
    LLVMTypeRef ty = LLVMIntrinsicGetType(e->ctx, id, &over, no);
    return LLVMBuildCall2(e->b, ty, fn, args, n, "");
}

static LLVMValueRef at(nv *e, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx)
{
    return LLVMBuildInBoundsGEP2(e->b, t, base, &idx, 1, "");
}

static LLVMValueRef load(nv *e, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx)
{
    return LLVMBuildLoad2(e->b, t, at(e, t, base, idx), "");
}

static void store(nv *e, LLVMValueRef v, LLVMTypeRef t, LLVMValueRef base,
                  LLVMValueRef idx)
{
    LLVMBuildStore(e->b, v, at(e, t, base, idx));
}

static LLVMValueRef global(nv *e, LLVMValueRef p)
{
    return e->gas ? LLVMBuildAddrSpaceCast(e->b, p, e->gptr, "") : p;
}

static LLVMValueRef smin(nv *e, LLVMValueRef a, LLVMValueRef b)
{
    return LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, a, b, ""), a, b, "");
}

static LLVMBasicBlockRef block(nv *e, const char *name)
{
    return LLVMAppendBasicBlockInContext(e->ctx, e->fn, name);
}

static void go(nv *e, LLVMBasicBlockRef bb)
{
    LLVMPositionBuilderAtEnd(e->b, bb);
}

/* a variable in the kernel's first block (mem2reg makes it a register) */
static LLVMValueRef var(nv *e, LLVMTypeRef t, LLVMValueRef init)
{
    LLVMBuilderRef ab = LLVMCreateBuilderInContext(e->ctx);
    LLVMPositionBuilderAtEnd(ab, e->allocas);
    LLVMValueRef v = LLVMBuildAlloca(ab, t, "");
    LLVMDisposeBuilder(ab);
    LLVMBuildStore(e->b, init, v);
    return v;
}

static LLVMValueRef get(nv *e, LLVMTypeRef t, LLVMValueRef v)
{
    return LLVMBuildLoad2(e->b, t, v, "");
}

/* tid.x, ctaid.x or nctaid.x as i64: the NVVM intrinsic, or "sim"'s
 * context {i32 tid, ctaid, nctaid, pad; void (*barrier)(ctx)} */
static LLVMValueRef sreg(nv *e, int which)
{
    static const char *const names[3] = {"tid.x", "ctaid.x", "nctaid.x"};
    LLVMValueRef v;
    if (e->sim) {
        v = load(e, e->i32, e->simctx, k64(e, which));
    } else {
        char name[64];
        snprintf(name, sizeof name, "llvm.nvvm.read.ptx.sreg.%s", names[which]);
        v = intrinsic(e, name, NULL, NULL, 0);
    }
    return LLVMBuildZExt(e->b, v, e->i64, "");
}

enum { TID, CTAID, NCTAID };

static void barrier(nv *e)
{
    if (!e->sim) {
        intrinsic(e, "llvm.nvvm.barrier0", NULL, NULL, 0);
        return;
    }
    LLVMValueRef f = load(e, e->ptr, e->simctx, k64(e, 2));
    LLVMTypeRef ty = LLVMFunctionType(LLVMVoidTypeInContext(e->ctx), &e->ptr, 1, 0);
    LLVMBuildCall2(e->b, ty, f, &e->simctx, 1, "");
}

/* ---- the arithmetic: ops.h's IR column, in float or double -------------- */

/* interp.c's cg_max_nan and friends: a NaN operand gives a + b, equal
 * operands the one whose sign says (-0 < +0), else the larger/smaller */
static LLVMValueRef minmax(nv *e, LLVMValueRef a, LLVMValueRef b, int is_max)
{
    LLVMBuilderRef B = e->b;
    LLVMTypeRef ft = LLVMTypeOf(a);
    LLVMTypeRef it = ft == e->f32 ? e->i32 : e->i64;
    LLVMValueRef uno = LLVMBuildFCmp(B, LLVMRealUNO, a, b, "");
    LLVMValueRef sum = LLVMBuildFAdd(B, a, b, "");
    LLVMValueRef eq = LLVMBuildFCmp(B, LLVMRealOEQ, a, b, "");
    LLVMValueRef neg_a = LLVMBuildICmp(B, LLVMIntSLT, LLVMBuildBitCast(B, a, it, ""),
                                       LLVMConstInt(it, 0, 0), "");
    LLVMValueRef on_eq = is_max ? LLVMBuildSelect(B, neg_a, b, a, "")
                                : LLVMBuildSelect(B, neg_a, a, b, "");
    LLVMValueRef cmp = LLVMBuildFCmp(B, is_max ? LLVMRealOGT : LLVMRealOLT, a, b, "");
    LLVMValueRef pick = LLVMBuildSelect(B, cmp, a, b, "");
    return LLVMBuildSelect(B, uno, sum, LLVMBuildSelect(B, eq, on_eq, pick, ""), "");
}

static LLVMValueRef ir_call(nv *e, const char *name, LLVMValueRef *a, unsigned n)
{
    if (!strcmp(name, "llvm.minimum") || !strcmp(name, "llvm.maximum"))
        return minmax(e, a[0], a[1], name[6] == 'a');
    return intrinsic(e, name, LLVMTypeOf(a[0]), a, n);
}

static LLVMValueRef ir_fcmp(nv *e, LLVMRealPredicate p, LLVMValueRef *a)
{
    return LLVMBuildFCmp(e->b, p, a[0], a[1], "");
}

static LLVMValueRef ir_sign(nv *e, LLVMValueRef *a)
{
    LLVMTypeRef t = LLVMTypeOf(a[0]);
    LLVMValueRef zero = LLVMConstReal(t, 0.0);
    LLVMValueRef pos = LLVMBuildFCmp(e->b, LLVMRealOLT, zero, a[0], "");
    LLVMValueRef neg = LLVMBuildFCmp(e->b, LLVMRealOLT, a[0], zero, "");
    return LLVMBuildFSub(e->b, LLVMBuildUIToFP(e->b, pos, t, ""),
                         LLVMBuildUIToFP(e->b, neg, t, ""), "");
}

/* ATen: |w| < 0.5 ? fma(w, b-a, a) : fma(w-1, b-a, b) */
static LLVMValueRef ir_lerp(nv *e, LLVMValueRef *a)
{
    LLVMTypeRef t = LLVMTypeOf(a[0]);
    LLVMValueRef d = LLVMBuildFSub(e->b, a[1], a[0], "");
    LLVMValueRef w = a[2];
    LLVMValueRef small = LLVMBuildFCmp(e->b, LLVMRealOLT, intrinsic(e, "llvm.fabs", t, &w, 1),
                                       LLVMConstReal(t, 0.5), "");
    LLVMValueRef lo[3] = {w, d, a[0]};
    LLVMValueRef hi[3] = {LLVMBuildFSub(e->b, w, LLVMConstReal(t, 1.0), ""), d, a[1]};
    return LLVMBuildSelect(e->b, small, intrinsic(e, "llvm.fma", t, lo, 3),
                           intrinsic(e, "llvm.fma", t, hi, 3), "");
}

/* c10::BFloat16's rounding on the bits, as emit.c's (a per-step double
 * rounds through float, as cg_eval_double) */
static LLVMValueRef ir_bf16(nv *e, LLVMValueRef *a)
{
    LLVMBuilderRef b = e->b;
    int dbl = LLVMTypeOf(a[0]) == e->f64;
    LLVMValueRef x = dbl ? LLVMBuildFPTrunc(b, a[0], e->f32, "") : a[0];
    LLVMTypeRef i32 = LLVMInt32TypeInContext(LLVMGetTypeContext(e->f32));
    LLVMValueRef u = LLVMBuildBitCast(b, x, i32, "");
    LLVMValueRef odd = LLVMBuildAnd(b, LLVMBuildLShr(b, u, LLVMConstInt(i32, 16, 0), ""),
                                    LLVMConstInt(i32, 1, 0), "");
    LLVMValueRef r = LLVMBuildAdd(b, u, LLVMBuildAdd(b, odd, LLVMConstInt(i32, 0x7fff, 0), ""), "");
    r = LLVMBuildAnd(b, r, LLVMConstInt(i32, 0xffff0000u, 0), "");
    LLVMValueRef nan = LLVMBuildFCmp(b, LLVMRealUNO, x, x, "");
    x = LLVMBuildSelect(b, nan, x, LLVMBuildBitCast(b, r, e->f32, ""), "");
    return dbl ? LLVMBuildFPExt(b, x, e->f64, "") : x;
}

/* a C library function: there is none on the GPU (plan() refuses it) */
static LLVMValueRef ir_libm(nv *e, const char *name, LLVMValueRef *a, unsigned n)
{
    (void)e, (void)name, (void)a, (void)n;
    return NULL;
}

/* op on operands A: float for per-element values, double for per-step
 * ones (f32 then rounds to float and back, as cg_eval_double) */
static LLVMValueRef op_ir(nv *E, cg_op op, LLVMValueRef *A)
{
    if (op == CG_F32 && LLVMTypeOf(A[0]) == E->f64)
        return LLVMBuildFPExt(E->b, LLVMBuildFPTrunc(E->b, A[0], E->f32, ""), E->f64, "");
    switch (op) {
#define NV_OP(id, name, arity, flags, d, f, ir) case CG_##id: return (ir);
        CG_OPS(NV_OP)
#undef NV_OP
    case CG_NOPS: break;
    }
    return NULL;
}

/* a reduction's step: acc + x, or cg_max_nan(acc, x) */
static LLVMValueRef reduce_add(nv *e, LLVMValueRef is_max, LLVMValueRef acc,
                               LLVMValueRef x)
{
    LLVMValueRef add = LLVMBuildFAdd(e->b, acc, x, "");
    if (LLVMIsConstant(is_max))
        return LLVMConstIntGetZExtValue(is_max) ? minmax(e, acc, x, 1) : add;
    return LLVMBuildSelect(e->b, is_max, minmax(e, acc, x, 1), add, "");
}

static LLVMValueRef reduce_identity(nv *e, LLVMValueRef is_max)
{
    if (LLVMIsConstant(is_max))
        return LLVMConstReal(e->f64, LLVMConstIntGetZExtValue(is_max) ? -INFINITY : 0.0);
    return LLVMBuildSelect(e->b, is_max, LLVMConstReal(e->f64, -INFINITY),
                           LLVMConstReal(e->f64, 0.0), "");
}

static LLVMValueRef bool_const(nv *e, int kind_max)
{
    return LLVMConstInt(e->i1, kind_max != 0, 0);
}

/* ---- kernels ----------------------------------------------------------- */

static void annotate(nv *e, LLVMValueRef fn, const char *key, int v)
{
    LLVMMetadataRef md[3] = {
        LLVMValueAsMetadata(fn), LLVMMDStringInContext2(e->ctx, key, strlen(key)),
        LLVMValueAsMetadata(LLVMConstInt(e->i32, (unsigned long long)v, 0))};
    LLVMAddNamedMetadataOperand(e->mod, "nvvm.annotations",
                                LLVMMetadataAsValue(e->ctx, LLVMMDNodeInContext2(e->ctx, md, 3)));
}

/* A kernel of `n` 8-byte arguments (pointers where ptrs has bit i), its
 * first block ready for code; kernel_end closes its allocas block. */
static LLVMBasicBlockRef kernel_new(nv *e, const char *name, unsigned n,
                                    unsigned ptrs, int maxntid, LLVMValueRef *args)
{
    LLVMTypeRef params[SIM_ARGS + 1];
    unsigned np = e->sim ? SIM_ARGS + 1 : n;
    for (unsigned i = 0; i < np; i++)
        params[i] = i < n && !(ptrs >> i & 1) ? e->i64 : e->ptr;
    LLVMTypeRef ty = LLVMFunctionType(LLVMVoidTypeInContext(e->ctx), params, np, 0);
    LLVMValueRef fn = LLVMAddFunction(e->mod, name, ty);
    if (!e->sim) {
        /* a kernel both ways: the calling convention (LLVM >= 19) and the
         * annotation older and newer NVPTX back ends read */
        LLVMSetFunctionCallConv(fn, LLVMPTXKernelCallConv);
        annotate(e, fn, "kernel", 1);
        annotate(e, fn, "maxntidx", maxntid);
    }
    static const char *const attrs[][2] = {
        {"denormal-fp-math", "ieee,ieee"}, {"denormal-fp-math-f32", "ieee,ieee"},
        {"unsafe-fp-math", "false"}, {"no-nans-fp-math", "false"},
        {"no-infs-fp-math", "false"}, {"no-signed-zeros-fp-math", "false"},
        {"approx-func-fp-math", "false"}};
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++)
        LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                                LLVMCreateStringAttribute(e->ctx, attrs[i][0],
                                                          (unsigned)strlen(attrs[i][0]),
                                                          attrs[i][1],
                                                          (unsigned)strlen(attrs[i][1])));
    e->fn = fn;
    e->allocas = block(e, "allocas");
    LLVMBasicBlockRef first = block(e, "entry");
    go(e, first);
    for (unsigned i = 0; i < n; i++)
        args[i] = ptrs >> i & 1 ? global(e, LLVMGetParam(fn, i)) : LLVMGetParam(fn, i);
    e->simctx = e->sim ? LLVMGetParam(fn, SIM_ARGS) : NULL;
    return first;
}

static void kernel_end(nv *e, LLVMBasicBlockRef first)
{
    LLVMBasicBlockRef here = LLVMGetInsertBlock(e->b);
    go(e, e->allocas);
    LLVMBuildBr(e->b, first);
    go(e, here);
}

/* a tensor record's field k (8 bytes each) */
static LLVMValueRef field(nv *e, LLVMValueRef rec, int k, LLVMTypeRef t)
{
    return load(e, t, rec, k64(e, k));
}

static LLVMValueRef record(nv *e, LLVMValueRef tl, LLVMValueRef i)
{
    long long stride = CG_GPU_REC_HEAD + e->g->nslots;
    return at(e, e->i64, tl, LLVMBuildMul(e->b, i, k64(e, stride), ""));
}

static LLVMValueRef array(nv *e, LLVMValueRef rec, int slot)
{
    return global(e, field(e, rec, CG_GPU_REC_HEAD + slot, e->ptr));
}

/* a per-step value stored as a double (0 or 1 for a truth value) as the
 * code that reads it wants it: double, or i1 */
static LLVMValueRef from_double(nv *e, const cg_node *x, LLVMValueRef d)
{
    return x->boolean ? LLVMBuildFCmp(e->b, LLVMRealUNE, d, LLVMConstReal(e->f64, 0), "") : d;
}

static LLVMValueRef to_double(nv *e, LLVMValueRef v)
{
    return LLVMTypeOf(v) == e->i1 ? LLVMBuildUIToFP(e->b, v, e->f64, "") : v;
}

/* per-step node i from memory, in double (or i1): a constant, or its
 * host value h[], or its device value d[] */
static LLVMValueRef stored_value(nv *e, int32_t i, LLVMValueRef h, LLVMValueRef d)
{
    const cg_node *x = &e->g->nodes[i];
    if (x->op == CG_CONST)
        return x->boolean ? LLVMConstInt(e->i1, x->value != 0, 0) : LLVMConstReal(e->f64, x->value);
    if (e->p->dev[i])
        return from_double(e, x, load(e, e->f64, d, k64(e, e->p->didx[i])));
    return from_double(e, x, load(e, e->f64, h, k64(e, e->p->hidx[i])));
}

/* ---- VALUES: a thread per tensor --------------------------------------- */

/* base[0] (+) base[stride] (+) ... (+) base[(n - 1) stride], in that order,
 * from the identity: MERGE_UNROLL loads in flight at a time, the adds in
 * order (a chunk's sums into the tensor's, a tensor's into the group's) */
static LLVMValueRef ordered_sum(nv *e, LLVMValueRef base, long long stride, LLVMValueRef n,
                                int is_max)
{
    LLVMBuilderRef B = e->b;
    LLVMValueRef mx = bool_const(e, is_max);
    LLVMValueRef acc = var(e, e->f64, reduce_identity(e, mx));
    LLVMValueRef cv = var(e, e->i64, k64(e, 0));
    LLVMBasicBlockRef head = block(e, "mhead"), body = block(e, "mbody"),
                      thead = block(e, "mthead"), tbody = block(e, "mtbody"),
                      done = block(e, "mdone");
    LLVMBuildBr(B, head);
    go(e, head);
    LLVMValueRef c = get(e, e->i64, cv);
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLE, LLVMBuildAdd(B, c, k64(e, MERGE_UNROLL), ""),
                                     n, ""), body, thead);
    go(e, body);
    {
        LLVMValueRef x[MERGE_UNROLL];
        LLVMValueRef at0 = LLVMBuildMul(B, c, k64(e, stride), "");
        for (int k = 0; k < MERGE_UNROLL; k++)
            x[k] = load(e, e->f64, base, LLVMBuildAdd(B, at0, k64(e, k * stride), ""));
        LLVMValueRef a = get(e, e->f64, acc);
        for (int k = 0; k < MERGE_UNROLL; k++)
            a = reduce_add(e, mx, a, x[k]);
        LLVMBuildStore(B, a, acc);
        LLVMBuildStore(B, LLVMBuildAdd(B, c, k64(e, MERGE_UNROLL), ""), cv);
        LLVMBuildBr(B, head);
    }
    go(e, thead);
    LLVMValueRef ct = get(e, e->i64, cv);
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, ct, n, ""), tbody, done);
    go(e, tbody);
    {
        LLVMValueRef x = load(e, e->f64, base, LLVMBuildMul(B, ct, k64(e, stride), ""));
        LLVMBuildStore(B, reduce_add(e, mx, get(e, e->f64, acc), x), acc);
        LLVMBuildStore(B, LLVMBuildAdd(B, ct, k64(e, 1), ""), cv);
        LLVMBuildBr(B, thead);
    }
    go(e, done);
    return get(e, e->f64, acc);
}

/* the tensor's sum `slot` over its chunks, in chunk order */
static LLVMValueRef merge_sums(nv *e, LLVMValueRef partial, LLVMValueRef chunk0,
                               LLVMValueRef nch, int slot, int is_max)
{
    LLVMValueRef first = LLVMBuildAdd(e->b, LLVMBuildMul(e->b, chunk0, k64(e, CG_MAX_REDUCE), ""),
                                      k64(e, slot), "");
    return ordered_sum(e, at(e, e->f64, partial, first), CG_MAX_REDUCE, nch, is_max);
}

static int last_level(const cg_graph *g) { return g->nlevels - 1; }

/* the value of per-step node i in the VALUES kernel of `level` (double or
 * i1): computed here, or from memory */
static LLVMValueRef value_at(nv *e, int32_t i, int level, LLVMValueRef h, LLVMValueRef d)
{
    const cg_node *x = &e->g->nodes[i];
    if (e->p->dev[i] && x->level == level && e->val[i])
        return e->val[i];
    return stored_value(e, i, h, d);
}

/* <name>_v<L>(tl, ntl, partial, grp, gargs) */
static void emit_values(nv *e, int level, const char *name)
{
    const cg_graph *g = e->g;
    const cg_nvptx *p = e->p;
    LLVMBuilderRef B = e->b;
    LLVMValueRef a[5];
    LLVMBasicBlockRef first = kernel_new(e, name, 5, 1u | 4u | 8u | 16u, CG_GPU_VBLOCK, a);
    LLVMValueRef tl = a[0], ntl = a[1], partial = a[2], grp = a[3], gargs = a[4];
    LLVMBasicBlockRef body = block(e, "body"), done = block(e, "done");
    LLVMValueRef t = LLVMBuildAdd(B, LLVMBuildMul(B, sreg(e, CTAID), k64(e, CG_GPU_VBLOCK), ""),
                                  sreg(e, TID), "");
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, t, ntl, ""), body, done);
    go(e, body);
    LLVMValueRef rec = record(e, tl, t);
    LLVMValueRef numel = field(e, rec, 0, e->i64), chunk0 = field(e, rec, 1, e->i64);
    LLVMValueRef pos = field(e, rec, 2, e->i64);
    LLVMValueRef h = global(e, field(e, rec, 3, e->ptr)), d = global(e, field(e, rec, 4, e->ptr));
    LLVMValueRef nch = LLVMBuildSDiv(B, LLVMBuildAdd(B, numel, k64(e, CG_CHUNK - 1), ""),
                                     k64(e, CG_CHUNK), "");
    memset(e->val, 0, (size_t)g->n * sizeof *e->val);
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (!p->dev[i] || !p->need[i] || x->level != level)
            continue;
        LLVMValueRef v;
        switch ((cg_op)x->op) {
        case CG_SCALAR: {
            LLVMValueRef s = array(e, rec, x->slot);
            v = g->kind[x->slot] == CG_KIND_SCALAR64
                    ? load(e, e->f64, s, k64(e, 0))
                    : LLVMBuildFPExt(B, load(e, e->f32, s, k64(e, 0)), e->f64, "");
            break;
        }
        case CG_GSTATE: v = load(e, e->f64, grp, k64(e, x->slot)); break;
        case CG_GSUM: case CG_GMAX:
            v = load(e, e->f64, grp, k64(e, GRP_GRED + x->slot));
            break;
        case CG_SUM: case CG_MAXALL:
            v = merge_sums(e, partial, chunk0, nch, x->slot,
                           g->reduce_kind[x->slot] == CG_REDUCE_MAX);
            break;
        default: {
            LLVMValueRef A[3] = {NULL, NULL, NULL};
            for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
                A[k] = value_at(e, x->arg[k], level, h, d);
            v = op_ir(e, (cg_op)x->op, A);
        }
        }
        e->val[i] = v;
        store(e, to_double(e, v), e->f64, d, k64(e, p->didx[i]));
    }
    /* the operands of the group's sums of this level */
    for (int r = 0; r < g->ngred; r++)
        if (p->info.gred_level[r] == level)
            store(e, to_double(e, value_at(e, g->gred_arg[r], level, h, d)), e->f64, gargs,
                  LLVMBuildAdd(B, LLVMBuildMul(B, pos, k64(e, g->ngred), ""), k64(e, r), ""));
    if (level == last_level(g)) {
        /* new scalar states, after every read of the old ones */
        for (int s = 0; s < g->nslots; s++) {
            int k = g->kind[s];
            if (g->store[s] < 0 || (k != CG_KIND_SCALAR && k != CG_KIND_SCALAR64))
                continue;
            LLVMValueRef v = to_double(e, value_at(e, g->store[s], level, h, d));
            if (k == CG_KIND_SCALAR)
                store(e, LLVMBuildFPTrunc(B, v, e->f32, ""), e->f32, array(e, rec, s), k64(e, 0));
            else
                store(e, v, e->f64, array(e, rec, s), k64(e, 0));
        }
        /* the group's new states, from its first tensor */
        int any = 0;
        for (int s = 0; s < g->ngstate; s++)
            any |= g->gstore[s] >= 0;
        if (any) {
            LLVMBasicBlockRef wr = block(e, "gnew"), after = block(e, "after");
            LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntEQ, pos, k64(e, 0), ""), wr, after);
            go(e, wr);
            for (int s = 0; s < g->ngstate; s++)
                if (g->gstore[s] >= 0)
                    store(e, to_double(e, value_at(e, g->gstore[s], level, h, d)), e->f64, grp,
                          k64(e, GRP_GNEW + g->gstate[s]));
            LLVMBuildBr(B, after);
            go(e, after);
        }
    }
    LLVMBuildBr(B, done);
    go(e, done);
    LLVMBuildRetVoid(B);
    kernel_end(e, first);
}

/* <name>_g<L>(grp, gargs, ntensors): thread k adds the k-th group sum of
 * the level over the tensors in order */
static void emit_group(nv *e, int level, const char *name)
{
    const cg_graph *g = e->g;
    LLVMBuilderRef B = e->b;
    LLVMValueRef a[3];
    LLVMBasicBlockRef first = kernel_new(e, name, 3, 1u | 2u, 32, a);
    LLVMValueRef grp = a[0], gargs = a[1], nt = a[2];
    LLVMValueRef tid = sreg(e, TID);
    int k = 0;
    for (int r = 0; r < g->ngred; r++) {
        if (e->p->info.gred_level[r] != level)
            continue;
        LLVMBasicBlockRef body = block(e, "sum"), next = block(e, "next");
        LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntEQ, tid, k64(e, k++), ""), body, next);
        go(e, body);
        LLVMValueRef acc = ordered_sum(e, at(e, e->f64, gargs, k64(e, r)), g->ngred, nt,
                                       g->gred_kind[r] == CG_REDUCE_MAX);
        store(e, acc, e->f64, grp, k64(e, GRP_GRED + r));
        LLVMBuildBr(B, next);
        go(e, next);
    }
    LLVMBuildRetVoid(B);
    kernel_end(e, first);
}

/* <name>_c(grp): the group's new states replace the old */
static void emit_commit(nv *e, const char *name)
{
    const cg_graph *g = e->g;
    LLVMValueRef a[1];
    LLVMBasicBlockRef first = kernel_new(e, name, 1, 1u, 64, a);
    LLVMBasicBlockRef body = block(e, "body"), done = block(e, "done");
    LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntEQ, sreg(e, TID), k64(e, 0), ""), body, done);
    go(e, body);
    for (int s = 0; s < g->ngstate; s++)
        if (g->gstore[s] >= 0)
            store(e, load(e, e->f64, a[0], k64(e, GRP_GNEW + g->gstate[s])), e->f64, a[0],
                  k64(e, g->gstate[s]));
    LLVMBuildBr(e->b, done);
    go(e, done);
    LLVMBuildRetVoid(e->b);
    kernel_end(e, first);
}

/* ---- LOOP: a block per chunk ------------------------------------------- */

/* the tensor sums loop l accumulates (emit.c's find_accs, 1-D) */
static int loop_sums(const cg_graph *g, const cg_loop *l, int32_t *node)
{
    int n = 0;
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if ((x->op == CG_SUM || x->op == CG_MAXALL) && x->level == l->level + 1)
            node[n++] = i;
    }
    return n;
}

/* One element: ld[s] its value of each slot the loop reads; fills st[s]
 * for each slot it writes.  Values stored by an earlier loop are read
 * back from their arrays, not recomputed (as emit.c). */
static void element(nv *e, const cg_loop *l, LLVMValueRef *ld, LLVMValueRef *st)
{
    const cg_graph *g = e->g;
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (e->how[i] == CG_HOW_RELOAD) {
            e->val[i] = ld[cg_reload_slot(g, i, l)];
        } else if (e->how[i] == CG_HOW_COMPUTE) {
            if (x->op == CG_LOAD) {
                e->val[i] = ld[x->slot];
            } else {
                LLVMValueRef A[3] = {NULL, NULL, NULL};
                for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
                    A[k] = e->val[x->arg[k]];
                e->val[i] = op_ir(e, (cg_op)x->op, A);
            }
        }
    }
    for (int s = 0; s < g->nslots; s++)
        if (e->st >> s & 1)
            st[s] = e->val[g->store[s]];
}

static void load_scalars(nv *e, LLVMValueRef idx, LLVMValueRef *ld)
{
    for (int s = 0; s < e->g->nslots; s++)
        if (e->ld >> s & 1)
            ld[s] = load(e, e->f32, e->arr[s], idx);
}

static void store_scalars(nv *e, LLVMValueRef idx, LLVMValueRef *st)
{
    for (int s = 0; s < e->g->nslots; s++)
        if (e->st >> s & 1)
            store(e, st[s], e->f32, e->arr[s], idx);
}

/* The aligned body of a loop without sums: VQ float4 groups per thread,
 * all loads first, then the elements, then the stores. */
static void vector_body(nv *e, const cg_loop *l, LLVMValueRef base, LLVMValueRef tid)
{
    const cg_graph *g = e->g;
    LLVMValueRef vec[VQ][CG_MAX_SLOTS], idx[VQ];
    LLVMValueRef st[VQ][4][CG_MAX_SLOTS], ld[CG_MAX_SLOTS];
    for (int q = 0; q < VQ; q++) {
        idx[q] = LLVMBuildAdd(e->b, base, LLVMBuildAdd(e->b, k64(e, (long long)q * CG_GPU_BLOCK * 4),
                                                       LLVMBuildShl(e->b, tid, k64(e, 2), ""), ""), "");
        for (int s = 0; s < g->nslots; s++)
            if (e->ld >> s & 1) {
                vec[q][s] = LLVMBuildLoad2(e->b, e->v4, at(e, e->f32, e->arr[s], idx[q]), "");
                LLVMSetAlignment(vec[q][s], 16);
            }
    }
    for (int q = 0; q < VQ; q++)
        for (int j = 0; j < 4; j++) {
            for (int s = 0; s < g->nslots; s++)
                if (e->ld >> s & 1)
                    ld[s] = LLVMBuildExtractElement(e->b, vec[q][s],
                                                    LLVMConstInt(e->i32, (unsigned)j, 0), "");
            element(e, l, ld, st[q][j]);
        }
    for (int q = 0; q < VQ; q++)
        for (int s = 0; s < g->nslots; s++) {
            if (!(e->st >> s & 1))
                continue;
            LLVMValueRef v = LLVMGetUndef(e->v4);
            for (int j = 0; j < 4; j++)
                v = LLVMBuildInsertElement(e->b, v, st[q][j][s],
                                           LLVMConstInt(e->i32, (unsigned)j, 0), "");
            LLVMValueRef s_ = LLVMBuildStore(e->b, v, at(e, e->f32, e->arr[s], idx[q]));
            LLVMSetAlignment(s_, 16);
        }
}

/* A loop without sums over [start, end): float4 steps of VSTEP elements
 * while every array is 16-byte aligned, then (or from the start when one
 * is not) one element per thread per step. */
static void plain_body(nv *e, const cg_loop *l, LLVMValueRef start, LLVMValueRef end,
                       LLVMValueRef tid, LLVMBasicBlockRef after)
{
    LLVMBuilderRef B = e->b;
    LLVMValueRef bits = k64(e, 0);
    for (int s = 0; s < e->g->nslots; s++)
        if ((e->ld | e->st) >> s & 1)
            bits = LLVMBuildOr(B, bits, LLVMBuildPtrToInt(B, e->arr[s], e->i64, ""), "");
    LLVMValueRef aligned = LLVMBuildICmp(B, LLVMIntEQ, LLVMBuildAnd(B, bits, k64(e, 15), ""),
                                         k64(e, 0), "");
    LLVMBasicBlockRef entry = LLVMGetInsertBlock(B);
    LLVMBasicBlockRef vhead = block(e, "vhead"), vbody = block(e, "vbody"),
                      thead = block(e, "thead"), tcheck = block(e, "tcheck"),
                      tbody = block(e, "tbody"), done = block(e, "pdone");
    LLVMBuildCondBr(B, aligned, vhead, thead);

    go(e, vhead);
    LLVMValueRef base = LLVMBuildPhi(B, e->i64, "base");
    LLVMValueRef fits = LLVMBuildICmp(B, LLVMIntSLE, LLVMBuildAdd(B, base, k64(e, VSTEP), ""),
                                      end, "");
    LLVMBuildCondBr(B, fits, vbody, thead);
    go(e, vbody);
    vector_body(e, l, base, tid);
    LLVMValueRef next = LLVMBuildAdd(B, base, k64(e, VSTEP), "");
    LLVMBasicBlockRef vend = LLVMGetInsertBlock(B);
    LLVMBuildBr(B, vhead);
    LLVMValueRef bv[2] = {start, next};
    LLVMBasicBlockRef bb[2] = {entry, vend};
    LLVMAddIncoming(base, bv, bb, 2);

    go(e, thead);
    LLVMValueRef tb = LLVMBuildPhi(B, e->i64, "tb");
    LLVMValueRef tv[2] = {start, base};
    LLVMBasicBlockRef tbb[2] = {entry, vhead};
    LLVMAddIncoming(tb, tv, tbb, 2);
    LLVMValueRef i0 = LLVMBuildAdd(B, tb, tid, "");
    LLVMBuildBr(B, tcheck);
    go(e, tcheck);
    LLVMValueRef i = LLVMBuildPhi(B, e->i64, "i");
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, i, end, ""), tbody, done);
    go(e, tbody);
    LLVMValueRef ld[CG_MAX_SLOTS], st[CG_MAX_SLOTS];
    load_scalars(e, i, ld);
    element(e, l, ld, st);
    store_scalars(e, i, st);
    LLVMValueRef inext = LLVMBuildAdd(B, i, k64(e, CG_GPU_BLOCK), "");
    LLVMBasicBlockRef tend = LLVMGetInsertBlock(B);
    LLVMBuildBr(B, tcheck);
    LLVMValueRef iv[2] = {i0, inext};
    LLVMBasicBlockRef ib[2] = {thead, tend};
    LLVMAddIncoming(i, iv, ib, 2);
    go(e, done);
    LLVMBuildBr(B, after);
}

/* elements per thread per tile of a loop with nr sums: two tiles of
 * nr * TILE floats fit in SMEM_FLOATS */
static int tile_k(int nr)
{
    int k = SMEM_FLOATS / (2 * nr * CG_GPU_BLOCK);
    return k > 4 ? 4 : k < 1 ? 1 : k;
}

/* an i64 table lookup: vals[idx] for idx < n (a select chain) */
static LLVMValueRef pick_i64(nv *e, LLVMValueRef idx, const long long *vals, int n)
{
    LLVMValueRef v = k64(e, vals[0]);
    for (int k = 1; k < n; k++)
        v = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntEQ, idx, k64(e, k), ""),
                            k64(e, vals[k]), v, "");
    return v;
}

/* A loop with sums over [start, end) of chunk c (CG_CHUNK elements from a
 * multiple of 16, so its lanes are the CPU task's).  The chunk goes in
 * tiles of K elements per thread (strided, so loads coalesce); each
 * element's summands go to shared memory.  After a barrier, thread
 * 16 r + l (r < nr) adds the tile's elements l, l + 16, l + 32, ... of sum
 * r into its lane, in element order: lane l of sum r sees exactly the
 * summands the CPU's lane l sees, in the same order, because tiles start
 * at multiples of 16 from the chunk's start.  Two tile buffers, so the
 * other threads go on with the next tile while the lanes add.  At the end
 * the lanes meet in shared memory, and thread r adds them in lane order
 * into partial[c][slot] (starting from 0 or -inf, as the CPU's task
 * does). */
static void reduce_body(nv *e, const cg_loop *l, int li, const int32_t *sums, int nr,
                        LLVMValueRef start, LLVMValueRef end, LLVMValueRef tid,
                        LLVMValueRef c, LLVMValueRef partial, LLVMBasicBlockRef after)
{
    const cg_graph *g = e->g;
    LLVMBuilderRef B = e->b;
    int K = tile_k(nr);
    long long tile = (long long)K * CG_GPU_BLOCK, slots[CG_MAX_REDUCE], maxmask = 0;
    for (int q = 0; q < nr; q++) {
        slots[q] = g->nodes[sums[q]].slot;
        if (g->reduce_kind[slots[q]] == CG_REDUCE_MAX)
            maxmask |= 1ll << q;
    }
    char gname[32];
    LLVMTypeRef tile_ty = LLVMArrayType2(e->f32, (uint64_t)(2 * nr * tile));
    snprintf(gname, sizeof gname, "tiles_%d", li);
    LLVMValueRef tiles = LLVMAddGlobalInAddressSpace(e->mod, tile_ty, gname, e->sas);
    LLVMSetInitializer(tiles, LLVMGetUndef(tile_ty));
    LLVMSetLinkage(tiles, LLVMInternalLinkage);
    LLVMSetAlignment(tiles, 16);
    LLVMTypeRef lane_ty = LLVMArrayType2(e->f64, (uint64_t)(nr * CG_LANES));
    snprintf(gname, sizeof gname, "lanes_%d", li);
    LLVMValueRef lanes = LLVMAddGlobalInAddressSpace(e->mod, lane_ty, gname, e->sas);
    LLVMSetInitializer(lanes, LLVMGetUndef(lane_ty));
    LLVMSetLinkage(lanes, LLVMInternalLinkage);
    LLVMSetAlignment(lanes, 16);

    LLVMValueRef is_lane = LLVMBuildICmp(B, LLVMIntSLT, tid, k64(e, (long long)CG_LANES * nr), "");
    LLVMValueRef r = LLVMBuildLShr(B, tid, k64(e, 4), "");
    LLVMValueRef ln = LLVMBuildAnd(B, tid, k64(e, CG_LANES - 1), "");
    LLVMValueRef r_in = smin(e, r, k64(e, nr - 1)); /* a valid index for every thread */
    LLVMValueRef my_max = LLVMBuildICmp(B, LLVMIntNE, LLVMBuildAnd(B, LLVMBuildLShr(B, k64(e, maxmask), r_in, ""),
                                                                   k64(e, 1), ""), k64(e, 0), "");
    LLVMValueRef acc = var(e, e->f64, reduce_identity(e, my_max));
    LLVMValueRef tbv = var(e, e->i64, start);
    LLVMValueRef bufv = var(e, e->i64, k64(e, 0));
    LLVMValueRef kv = var(e, e->i64, k64(e, 0));
    LLVMValueRef jv = var(e, e->i64, k64(e, 0));

    LLVMBasicBlockRef loop = block(e, "tile"), body = block(e, "tbody"),
                      fast = block(e, "fast"), slow = block(e, "slow"),
                      scheck = block(e, "scheck"), selem = block(e, "selem"),
                      snext = block(e, "snext"), join = block(e, "join"),
                      lcheck = block(e, "lcheck"), ladd = block(e, "ladd"),
                      tnext = block(e, "tnext"), fin = block(e, "fin"),
                      wlane = block(e, "wlane"), fbar = block(e, "fbar"),
                      comb = block(e, "comb"), done = block(e, "rdone");
    LLVMBuildBr(B, loop);
    go(e, loop);
    LLVMValueRef tb = get(e, e->i64, tbv);
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, tb, end, ""), body, fin);

    go(e, body);
    LLVMValueRef count = smin(e, k64(e, tile), LLVMBuildSub(B, end, tb, ""));
    LLVMValueRef buf = get(e, e->i64, bufv);
    LLVMValueRef bufbase = LLVMBuildMul(B, buf, k64(e, nr * tile), ""); /* tiles[buf][r][pos] */
    LLVMValueRef ld[CG_MAX_SLOTS], st[CG_MAX_SLOTS];
    LLVMBuildStore(B, k64(e, 0), kv);
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntEQ, count, k64(e, tile), ""), fast, slow);

    /* a whole tile: all loads, then the elements, stores and summands */
    go(e, fast);
    {
        LLVMValueRef lds[4][CG_MAX_SLOTS], pos[4], idx[4];
        for (int k = 0; k < K; k++) {
            pos[k] = LLVMBuildAdd(B, k64(e, (long long)k * CG_GPU_BLOCK), tid, "");
            idx[k] = LLVMBuildAdd(B, tb, pos[k], "");
            load_scalars(e, idx[k], lds[k]);
        }
        for (int k = 0; k < K; k++) {
            element(e, l, lds[k], st);
            store_scalars(e, idx[k], st);
            for (int q = 0; q < nr; q++) {
                LLVMValueRef o = LLVMBuildAdd(B, bufbase, LLVMBuildAdd(B, k64(e, q * tile), pos[k], ""), "");
                store(e, e->val[g->nodes[sums[q]].arg[0]], e->f32, tiles, o);
            }
        }
        LLVMBuildBr(B, join);
    }
    /* the chunk's last, partial tile: each element checked */
    go(e, slow);
    LLVMBuildBr(B, scheck);
    go(e, scheck);
    LLVMValueRef k = get(e, e->i64, kv);
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, k, k64(e, K), ""), selem, join);
    go(e, selem);
    {
        LLVMValueRef pos = LLVMBuildAdd(B, LLVMBuildMul(B, k, k64(e, CG_GPU_BLOCK), ""), tid, "");
        LLVMValueRef idx = LLVMBuildAdd(B, tb, pos, "");
        LLVMBasicBlockRef in = block(e, "sin");
        LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, idx, end, ""), in, snext);
        go(e, in);
        load_scalars(e, idx, ld);
        element(e, l, ld, st);
        store_scalars(e, idx, st);
        for (int q = 0; q < nr; q++) {
            LLVMValueRef o = LLVMBuildAdd(B, bufbase, LLVMBuildAdd(B, k64(e, q * tile), pos, ""), "");
            store(e, e->val[g->nodes[sums[q]].arg[0]], e->f32, tiles, o);
        }
        LLVMBuildBr(B, snext);
    }
    go(e, snext);
    LLVMBuildStore(B, LLVMBuildAdd(B, k, k64(e, 1), ""), kv);
    LLVMBuildBr(B, scheck);

    /* the lanes add the tile's summands in element order */
    go(e, join);
    barrier(e);
    LLVMBuildStore(B, k64(e, 0), jv);
    LLVMBuildCondBr(B, is_lane, lcheck, tnext);
    go(e, lcheck);
    LLVMValueRef j = get(e, e->i64, jv);
    LLVMValueRef p = LLVMBuildAdd(B, LLVMBuildShl(B, j, k64(e, 4), ""), ln, "");
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, p, count, ""), ladd, tnext);
    go(e, ladd);
    {
        LLVMValueRef o = LLVMBuildAdd(B, bufbase,
                                      LLVMBuildAdd(B, LLVMBuildMul(B, r_in, k64(e, tile), ""), p, ""), "");
        LLVMValueRef x = LLVMBuildFPExt(B, load(e, e->f32, tiles, o), e->f64, "");
        LLVMBuildStore(B, reduce_add(e, my_max, get(e, e->f64, acc), x), acc);
        LLVMBuildStore(B, LLVMBuildAdd(B, j, k64(e, 1), ""), jv);
        LLVMBuildBr(B, lcheck);
    }
    go(e, tnext);
    LLVMBuildStore(B, LLVMBuildAdd(B, tb, k64(e, tile), ""), tbv);
    LLVMBuildStore(B, LLVMBuildXor(B, buf, k64(e, 1), ""), bufv);
    LLVMBuildBr(B, loop);

    /* the chunk's sums: its lanes in lane order */
    go(e, fin);
    LLVMBuildCondBr(B, is_lane, wlane, fbar);
    go(e, wlane);
    store(e, get(e, e->f64, acc), e->f64, lanes,
          LLVMBuildAdd(B, LLVMBuildShl(B, r_in, k64(e, 4), ""), ln, ""));
    LLVMBuildBr(B, fbar);
    go(e, fbar);
    barrier(e);
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, tid, k64(e, nr), ""), comb, done);
    go(e, comb);
    {
        LLVMValueRef mx = LLVMBuildICmp(B, LLVMIntNE, LLVMBuildAnd(B, LLVMBuildLShr(B, k64(e, maxmask), tid, ""),
                                                                   k64(e, 1), ""), k64(e, 0), "");
        LLVMValueRef sum = reduce_identity(e, mx);
        for (int q = 0; q < CG_LANES; q++)
            sum = reduce_add(e, mx, sum,
                             load(e, e->f64, lanes,
                                  LLVMBuildAdd(B, LLVMBuildShl(B, tid, k64(e, 4), ""), k64(e, q), "")));
        LLVMValueRef o = LLVMBuildAdd(B, LLVMBuildMul(B, c, k64(e, CG_MAX_REDUCE), ""),
                                      pick_i64(e, tid, slots, nr), "");
        store(e, sum, e->f64, partial, o);
        LLVMBuildBr(B, done);
    }
    /* the lanes of this chunk are read before the next chunk's tiles */
    go(e, done);
    barrier(e);
    LLVMBuildBr(B, after);
}

/* <name>_l<i>(tl, ct, nchunks, chunk, partial): block b does chunks b,
 * b + grid, ... */
static void emit_loop(nv *e, int li, const char *name)
{
    const cg_graph *g = e->g;
    const cg_loop *l = &g->loops[li];
    LLVMBuilderRef B = e->b;
    cg_loop_plan(g, l, e->how);
    e->ld = e->st = 0;
    for (int i = 0; i < g->n; i++) {
        if (e->how[i] == CG_HOW_COMPUTE && g->nodes[i].op == CG_LOAD)
            e->ld |= 1ull << g->nodes[i].slot;
        if (e->how[i] == CG_HOW_RELOAD)
            e->ld |= 1ull << cg_reload_slot(g, i, l);
    }
    for (int s = 0; s < g->nslots; s++) {
        int lv, kind;
        cg_store_loop(g, s, &lv, &kind);
        if (lv == l->level && kind == l->kind)
            e->st |= 1ull << s;
    }
    int32_t sums[CG_MAX_REDUCE];
    int nr = loop_sums(g, l, sums);
    LLVMValueRef a[5];
    LLVMBasicBlockRef first = kernel_new(e, name, 5, 1u | 2u | 16u, CG_GPU_BLOCK, a);
    LLVMValueRef tl = a[0], ct = a[1], nchunks = a[2], chunk = a[3], partial = a[4];
    LLVMBasicBlockRef head = block(e, "chunk"), body = block(e, "body"),
                      next = block(e, "next"), exit = block(e, "exit");
    LLVMValueRef tid = sreg(e, TID), grid = sreg(e, NCTAID);
    LLVMValueRef cv = var(e, e->i64, sreg(e, CTAID));
    LLVMBuildBr(B, head);
    go(e, head);
    LLVMValueRef c = get(e, e->i64, cv);
    LLVMBuildCondBr(B, LLVMBuildICmp(B, LLVMIntSLT, c, nchunks, ""), body, exit);
    go(e, body);
    LLVMValueRef c2 = LLVMBuildShl(B, c, k64(e, 1), "");
    LLVMValueRef t = load(e, e->i64, ct, c2);
    LLVMValueRef start = load(e, e->i64, ct, LLVMBuildAdd(B, c2, k64(e, 1), ""));
    LLVMValueRef rec = record(e, tl, t);
    LLVMValueRef n = field(e, rec, 0, e->i64);
    LLVMValueRef h = global(e, field(e, rec, 3, e->ptr)), d = global(e, field(e, rec, 4, e->ptr));
    for (int s = 0; s < g->nslots; s++)
        e->arr[s] = (e->ld | e->st) >> s & 1 ? array(e, rec, s) : NULL;
    LLVMValueRef end = smin(e, LLVMBuildAdd(B, start, chunk, ""), n);
    /* the loop's per-step operands, rounded to float once per chunk */
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (e->how[i] != CG_HOW_UNIFORM)
            continue;
        if (x->op == CG_CONST)
            e->val[i] = x->boolean ? LLVMConstInt(e->i1, x->value != 0, 0)
                                   : LLVMConstReal(e->f32, (double)(float)x->value);
        else {
            LLVMValueRef v = stored_value(e, i, h, d);
            e->val[i] = x->boolean ? v : LLVMBuildFPTrunc(B, v, e->f32, "");
        }
    }
    if (nr)
        reduce_body(e, l, li, sums, nr, start, end, tid, c, partial, next);
    else
        plain_body(e, l, start, end, tid, next);
    go(e, next);
    LLVMBuildStore(B, LLVMBuildAdd(B, c, grid, ""), cv);
    LLVMBuildBr(B, head);
    go(e, exit);
    LLVMBuildRetVoid(B);
    kernel_end(e, first);
}

/* ---- the plan: host values, device values, launches -------------------- */

static int is_dev_leaf(int op)
{
    return op == CG_SCALAR || op == CG_GSTATE || (cg_op_flags((cg_op)op) & CG_F_REDUCE);
}

static int plan(cg_nvptx *p, const cg_graph *g, const char *where, char *err)
{
    int n = g->n;
    uint8_t *how = cg_malloc((size_t)n + 1), *shp = cg_calloc((size_t)n + 1, 1);
    if (!how || !shp) {
        cg_free(how);
        cg_free(shp);
        return cg_fail(err, JOPT_ENOMEM, "out of memory planning GPU kernels");
    }
    int rc = JOPT_OK;
    if (g->nresult)
        rc = cg_fail(err, JOPT_EDEVICE, "%s: vector kernels (closure optimizers) do not "
                     "run on the GPU", where);
    else if (g->two_d)
        rc = cg_fail(err, JOPT_EDEVICE, "%s: per-row or per-column values (row or "
                     "column sums, state per row or column) do not run on the GPU "
                     "yet; use this spec on the CPU", where);
    else if (g->ngemm)
        rc = cg_fail(err, JOPT_EDEVICE, "%s: matrix products (matmul) do not run on "
                     "the GPU; use this spec on the CPU", where);
    for (int s = 0; s < CG_MAX_SLOTS && rc == JOPT_OK; s++)
        if (g->dtype[s] != CG_DT_F32 || g->sr[s])
            rc = cg_fail(err, JOPT_EDEVICE, "%s: bfloat16 and float16 arrays do not "
                         "run on the GPU yet: its optimizers take float32 only", where);
    for (int i = 0; i < n && rc == JOPT_OK; i++)
        if (g->nodes[i].op == CG_ATAN2 || g->nodes[i].op == CG_GSCALE)
            rc = cg_fail(err, JOPT_EDEVICE, "%s:%d: %s does not run on the GPU (%s); "
                         "use this spec on the CPU", where, g->nodes[i].line,
                         cg_op_name((cg_op)g->nodes[i].op), g->nodes[i].op == CG_ATAN2
                         ? "no C library there" : "no loss scaling there");
    for (int i = 0; i < n && rc == JOPT_OK; i++) {
        const cg_node *x = &g->nodes[i];
        p->hidx[i] = p->didx[i] = -1;
        if (cg_dom_varying(x->dom))
            continue;
        p->dev[i] = (uint8_t)is_dev_leaf(x->op);
        shp[i] = x->op == CG_SHAPE;
        for (int k = 0; k < cg_op_arity((cg_op)x->op) && !is_dev_leaf(x->op); k++) {
            p->dev[i] |= p->dev[x->arg[k]];
            shp[i] |= shp[x->arg[k]];
        }
        if (p->dev[i] && (x->op == CG_EXP || x->op == CG_LOG || x->op == CG_POW ||
                               x->op == CG_MOD))
            rc = cg_fail(err, JOPT_EDEVICE, "%s:%d: %s of a value that depends on a sum "
                         "or on state kept on the GPU: the GPU computes such values "
                         "only with correctly rounded operations (+ - * / sqrt fma, "
                         "min, max, comparisons), so it would not match the CPU; use "
                         "this spec on the CPU", where, x->line, cg_op_name((cg_op)x->op));
    }
    /* what device code reads: the loops' per-step operands, the group
     * sums' operands, new scalar and group states, and what those read */
    for (int li = 0; li < g->nloops && rc == JOPT_OK; li++) {
        cg_loop_plan(g, &g->loops[li], how);
        for (int i = 0; i < n; i++)
            if (how[i] == CG_HOW_UNIFORM && g->nodes[i].op != CG_CONST)
                p->need[i] = 1;
    }
    for (int r = 0; r < g->ngred; r++)
        p->need[g->gred_arg[r]] = 1;
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] >= 0 && (g->kind[s] == CG_KIND_SCALAR || g->kind[s] == CG_KIND_SCALAR64))
            p->need[g->store[s]] = 1;
    for (int s = 0; s < g->ngstate; s++)
        if (g->gstore[s] >= 0)
            p->need[g->gstore[s]] = 1;
    for (int i = n - 1; i >= 0; i--) {
        const cg_node *x = &g->nodes[i];
        if (!p->need[i] || !p->dev[i] || is_dev_leaf(x->op))
            continue;
        for (int k = 0; k < cg_op_arity((cg_op)x->op); k++)
            p->need[x->arg[k]] = 1;
    }
    cg_gpu_info *in = &p->info;
    for (int i = 0; i < n && rc == JOPT_OK; i++) {
        const cg_node *x = &g->nodes[i];
        if (!p->need[i] || x->op == CG_CONST || cg_dom_varying(x->dom))
            continue;
        if (p->dev[i]) {
            p->didx[i] = in->nd++;
        } else {
            p->hnode[in->nh] = i;
            p->hidx[i] = in->nh++;
            in->h_shape |= shp[i];
        }
    }
    in->nlevels = g->nlevels;
    in->nslots = g->nslots;
    in->ngred = g->ngred;
    for (int r = 0; r < g->ngred; r++) {
        in->gred_kind[r] = g->gred_kind[r];
        in->gred_level[r] = g->nodes[g->gred_arg[r]].level;
    }
    /* the launches, level by level */
    int any_scalar = 0, any_gstore = 0;
    for (int s = 0; s < g->nslots; s++)
        any_scalar |= g->store[s] >= 0 && (g->kind[s] == CG_KIND_SCALAR ||
                                           g->kind[s] == CG_KIND_SCALAR64);
    for (int s = 0; s < g->ngstate; s++)
        any_gstore |= g->gstore[s] >= 0;
    for (int lv = 0; lv < g->nlevels && rc == JOPT_OK; lv++) {
        int values = lv == g->nlevels - 1 && (any_scalar || any_gstore), group = 0;
        for (int i = 0; i < n; i++)
            values |= p->dev[i] && p->need[i] && g->nodes[i].level == lv;
        for (int r = 0; r < g->ngred; r++)
            group |= in->gred_level[r] == lv;
        values |= group;
        if (values)
            p->launch[in->nlaunch++] = (cg_gpu_launch){CG_GPU_VALUES, lv, 0, ""};
        if (group)
            p->launch[in->nlaunch++] = (cg_gpu_launch){CG_GPU_GROUP, lv, 0, ""};
        for (int li = 0; li < g->nloops; li++) {
            if (g->loops[li].level != lv)
                continue;
            int32_t sums[CG_MAX_REDUCE];
            cg_gpu_launch *la = &p->launch[in->nlaunch++];
            *la = (cg_gpu_launch){CG_GPU_LOOP, lv, loop_sums(g, &g->loops[li], sums) > 0, ""};
            snprintf(la->name, sizeof la->name, "jopt_l%d", li);
        }
    }
    if (any_gstore)
        p->launch[in->nlaunch++] = (cg_gpu_launch){CG_GPU_COMMIT, g->nlevels - 1, 0, ""};
    for (int k = 0; k < in->nlaunch; k++) {
        cg_gpu_launch *la = &p->launch[k];
        if (la->kind == CG_GPU_VALUES)
            snprintf(la->name, sizeof la->name, "jopt_v%d", la->level);
        else if (la->kind == CG_GPU_GROUP)
            snprintf(la->name, sizeof la->name, "jopt_g%d", la->level);
        else if (la->kind == CG_GPU_COMMIT)
            snprintf(la->name, sizeof la->name, "jopt_c");
    }
    for (int li = 0; li < g->nloops; li++) {
        cg_loop_plan(g, &g->loops[li], how);
        for (int i = 0; i < n; i++)
            if (how[i] == CG_HOW_COMPUTE && g->nodes[i].op == CG_LOAD)
                in->loads |= 1ull << g->nodes[i].slot;
    }
    for (int s = 0; s < g->nslots; s++)
        if (g->store[s] >= 0 && g->kind[s] != CG_KIND_SCALAR && g->kind[s] != CG_KIND_SCALAR64)
            in->stores |= 1ull << s;
    in->launch = p->launch;
    cg_free(how);
    cg_free(shp);
    return rc;
}

/* ---- lowering ------------------------------------------------------------ */

static char *copy_text(const char *head, const char *s, size_t n, size_t *len)
{
    size_t hl = strlen(head);
    char *t = cg_malloc(hl + n + 1);
    if (t) {
        memcpy(t, head, hl);
        memcpy(t + hl, s, n);
        t[hl + n] = 0;
        *len = hl + n;
    }
    return t;
}

/* verify, O3, then PTX text (or host IR text for "sim") */
static int lower(nv *e, cg_nvptx *p, LLVMTargetMachineRef tm, char *err)
{
    char *msg = NULL;
    int rc = JOPT_OK;
    if (LLVMVerifyModule(e->mod, LLVMReturnStatusAction, &msg)) {
        rc = cg_fail(err, JOPT_ECOMPILE, "internal error: invalid GPU IR: %s", msg);
        goto done;
    }
    LLVMDisposeMessage(msg);
    msg = NULL;
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMErrorRef le = LLVMRunPasses(e->mod, "default<O3>", tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    if (le) {
        char *m = LLVMGetErrorMessage(le);
        rc = cg_fail(err, JOPT_ECOMPILE, "GPU: optimising: %s", m);
        LLVMDisposeErrorMessage(m);
        goto done;
    }
    if (e->sim) {
        char *ir = LLVMPrintModuleToString(e->mod);
        p->text = copy_text("; jopt-sim\n", ir, strlen(ir), &p->info.len);
        LLVMDisposeMessage(ir);
    } else {
        LLVMMemoryBufferRef buf = NULL;
        if (LLVMTargetMachineEmitToMemoryBuffer(tm, e->mod, LLVMAssemblyFile, &msg, &buf)) {
            rc = cg_fail(err, JOPT_ECOMPILE, "GPU: emitting PTX: %s", msg);
            goto done;
        }
        p->text = copy_text("", LLVMGetBufferStart(buf), LLVMGetBufferSize(buf), &p->info.len);
        LLVMDisposeMemoryBuffer(buf);
    }
    if (!p->text)
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory");
    else if (e->diag[0])
        rc = cg_fail(err, JOPT_ECOMPILE, "GPU: LLVM: %s", e->diag);
done:
    LLVMDisposeMessage(msg);
    return rc;
}

static LLVMTargetMachineRef target_machine(const char *triple, const char *cpu, char *err)
{
    char *msg = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
        cg_fail(err, JOPT_ECOMPILE, "GPU: LLVM has no target %s: %s", triple, msg);
        LLVMDisposeMessage(msg);
        return NULL;
    }
    /* default TargetOptions: FP fusion "standard" (only what the IR says,
     * and it says none), no unsafe math */
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, "",
                                                      LLVMCodeGenLevelAggressive,
                                                      LLVMRelocDefault, LLVMCodeModelDefault);
    if (!tm)
        cg_fail(err, JOPT_ECOMPILE, "GPU: LLVM cannot make a target machine for %s %s",
                triple, cpu);
    return tm;
}

static int emit_module(nv *e, LLVMTargetMachineRef tm, cg_nvptx *p, const char *triple,
                       char *err)
{
    const cg_graph *g = e->g;
    e->ctx = LLVMContextCreate();
    LLVMContextSetDiagnosticHandler(e->ctx, on_diagnostic, e);
    e->mod = LLVMModuleCreateWithNameInContext("jopt_gpu", e->ctx);
    LLVMSetTarget(e->mod, triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(e->mod, layout);
    LLVMDisposeTargetData(layout);
    e->b = LLVMCreateBuilderInContext(e->ctx);
    e->f32 = LLVMFloatTypeInContext(e->ctx);
    e->f64 = LLVMDoubleTypeInContext(e->ctx);
    e->i1 = LLVMInt1TypeInContext(e->ctx);
    e->i32 = LLVMInt32TypeInContext(e->ctx);
    e->i64 = LLVMInt64TypeInContext(e->ctx);
    e->ptr = LLVMPointerTypeInContext(e->ctx, 0);
    e->gptr = LLVMPointerTypeInContext(e->ctx, e->gas);
    e->sptr = LLVMPointerTypeInContext(e->ctx, e->sas);
    e->v4 = LLVMVectorType(e->f32, 4);
    int li = 0;
    for (int k = 0; k < p->info.nlaunch; k++) {
        const cg_gpu_launch *la = &p->launch[k];
        switch (la->kind) {
        case CG_GPU_VALUES: emit_values(e, la->level, la->name); break;
        case CG_GPU_GROUP: emit_group(e, la->level, la->name); break;
        case CG_GPU_LOOP: emit_loop(e, li++, la->name); break;
        default: emit_commit(e, la->name);
        }
    }
    int rc = lower(e, p, tm, err);
    LLVMDisposeBuilder(e->b);
    LLVMDisposeModule(e->mod);
    LLVMContextDispose(e->ctx);
    (void)g;
    return rc;
}

void cg_nvptx_free(cg_nvptx *p)
{
    if (!p)
        return;
    cg_free(p->text);
    cg_free(p->hnode);
    cg_free(p->hidx);
    cg_free(p->didx);
    cg_free(p->dev);
    cg_free(p->need);
    cg_free(p);
}

const cg_gpu_info *cg_nvptx_info(const cg_nvptx *p) { return &p->info; }

int cg_nvptx_compile(const cg_graph *g, const char *arch, const char *where,
                     cg_nvptx **out, char *err)
{
    int sim = !strcmp(arch, "sim");
    if (!sim && (strncmp(arch, "sm_", 3) || strlen(arch) < 5 || strlen(arch) > 8 ||
                 strspn(arch + 3, "0123456789a") != strlen(arch + 3)))
        return cg_fail(err, JOPT_EINVAL, "GPU: '%s' is not an NVIDIA architecture "
                       "(sm_80, sm_90, ...)", arch);
    size_t n = (size_t)g->n + 1;
    cg_nvptx *p = cg_calloc(1, sizeof *p);
    nv e;
    memset(&e, 0, sizeof e);
    if (p) {
        p->hnode = cg_malloc(n * sizeof *p->hnode);
        p->hidx = cg_malloc(n * sizeof *p->hidx);
        p->didx = cg_malloc(n * sizeof *p->didx);
        p->dev = cg_calloc(n, 1);
        p->need = cg_calloc(n, 1);
    }
    e.val = cg_calloc(n, sizeof *e.val);
    e.how = cg_malloc(n);
    int rc = !p || !p->hnode || !p->hidx || !p->didx || !p->dev || !p->need || !e.val ||
                     !e.how
                 ? cg_fail(err, JOPT_ENOMEM, "out of memory")
                 : plan(p, g, where, err);
    if (rc)
        goto done;
    snprintf(p->arch, sizeof p->arch, "%s", arch);
    p->info.arch = p->arch;
    e.g = g;
    e.p = p;
    e.sim = sim;
    e.gas = sim ? 0 : 1;
    e.sas = sim ? 0 : 3;
    pthread_once(&nvptx_once, init_nvptx);
    char *host = NULL;
    if (sim) {
        pthread_once(&native_once, init_native);
        host = LLVMGetDefaultTargetTriple();
    }
    const char *triple = sim ? host : "nvptx64-nvidia-cuda";
    LLVMTargetMachineRef tm = target_machine(triple, sim ? "generic" : arch, err);
    if (!tm)
        rc = JOPT_ECOMPILE;
    else
        rc = emit_module(&e, tm, p, triple, err);
    if (tm)
        LLVMDisposeTargetMachine(tm);
    LLVMDisposeMessage(host);
    p->info.text = p->text;
done:
    cg_free(e.val);
    cg_free(e.how);
    if (rc) {
        cg_nvptx_free(p);
        return rc;
    }
    *out = p;
    return JOPT_OK;
}

void cg_nvptx_host_values(const cg_nvptx *p, const cg_graph *g, const cg_env_host *env,
                          double *h, double *val)
{
    for (int i = 0; i < g->n; i++) {
        const cg_node *x = &g->nodes[i];
        if (cg_dom_varying(x->dom) || p->dev[i])
            continue;
        switch ((cg_op)x->op) {
        case CG_CONST: val[i] = x->value; break;
        case CG_STEP: val[i] = env->t; break;
        case CG_HYPER: val[i] = env->values[x->slot]; break;
        case CG_SHAPE:
            val[i] = x->slot == 0 ? (double)env->numel
                     : x->slot <= env->rank ? (double)env->shape[x->slot - 1] : NAN;
            break;
        default:
            val[i] = cg_eval_double((cg_op)x->op, x->arg[0] >= 0 ? val[x->arg[0]] : 0,
                                    x->arg[1] >= 0 ? val[x->arg[1]] : 0,
                                    x->arg[2] >= 0 ? val[x->arg[2]] : 0);
        }
    }
    for (int j = 0; j < p->info.nh; j++)
        h[j] = val[p->hnode[j]];
}
