/*
 * ops.h - the expression graph's operations, as one table.
 *
 * Every file that needs the list expands CG_OPS with its own X: the enum
 * (cg_int.h), names, arities and type rules (graph.c), the prelude a spec
 * sees (trace.c), the reference semantics (interp.c) and the LLVM IR
 * (emit.c).  Adding an op is one line here; a backend that lacks it does
 * not compile.  One copy lives outside the library on purpose: the
 * benchmark's unfused kernel (bench/graph_text.c) reads the printed graph
 * through jopt.h alone and spells the ops again; bench_smoke fails on an op
 * it does not know.
 *
 *   X(ID, name, arity, flags, double, float, ir)
 *
 * bf16 rounds to the nearest bfloat16, ties to even (c10::BFloat16's
 * rounding), and keeps the result in a float: what a bfloat16 op's result
 * is once read back, exactly.  transpose and matmul are built by matrix.c;
 * matmul runs as a GEMM between the loops (batch.c), never in them.
 *
 * Leaves: CONST, t (the step count), LOAD (an array's element), SCALAR (a
 * tensor's scalar state), GSTATE (a group's state), HYPER (a value passed
 * per step), SHAPE (a size of the tensor), GSCALE (the step's gradient
 * scale: loss scaling divides the gradient by it before update() sees it).  Reductions (sum, maxall, the
 * row, column and group ones) are built by trace.c from sum(x [, axis]),
 * mean(...), amax(...); the others are prelude functions by their name.
 *
 * mod is Lua's `%` (floor modulo) on per-step values.  atan2 is the C
 * library's (atan2f per element): the JIT calls the very function the
 * interpreter does, so they agree; it is not correctly rounded, and neither
 * is the reference's (ATen's vectorized atan2).
 *
 * name     how the spec's prelude and the printed graph call it
 * flags    CG_F_* below
 * double   its value on per-step operands a, b, c (interp.c, folding)
 * float    its value on per-element operands a, b, c (interp.c); the
 *          JIT must give the same bits
 * ir       the LLVM value for per-element operands A[0..2], built by the
 *          emitter E (emit.c's helpers ir_*); NULL for ops that are never
 *          per element
 *
 * No fast-math anywhere: each op is one IEEE operation (fma: one rounding;
 * lerp: ATen's two-branch formula; min/max: NaN-propagating, -0 < +0).
 */
#ifndef CG_OPS_H
#define CG_OPS_H

enum {
    CG_F_LEAF = 1,      /* no operands: a constant, t, an array, a value */
    CG_F_PRELUDE = 2,   /* a prelude function of that name */
    CG_F_UNIFORM = 4,   /* per-step operands only (pow, exp, log) */
    CG_F_BOOL = 8,      /* its result is a truth value */
    CG_F_BOOLARGS = 16, /* its operands are truth values */
    CG_F_SELECT = 32,   /* where(c, x, y): c a truth value, x and y alike */
    CG_F_REDUCE = 64,   /* a reduction: over the tensor, unless one of: */
    CG_F_TO_ROW = 128,  /*   over the last axis: one value per row */
    CG_F_TO_COL = 256,  /*   over the second-to-last: one per column */
    CG_F_TO_GROUP = 512, /*  over the tensors of a group: per group */
    CG_F_MAX = 1024,    /* a reduction taking the maximum, not the sum */
    CG_F_MATRIX = 2048  /* a matrix op (matrix.c): transpose, matmul */
};

#define CG_R (CG_F_REDUCE)
#define CG_RM (CG_F_REDUCE | CG_F_MAX)

#define CG_PB (CG_F_PRELUDE | CG_F_BOOL)
#define CG_PL (CG_F_PRELUDE | CG_F_BOOL | CG_F_BOOLARGS)

#define CG_OPS(X)                                                              \
    X(CONST, "const", 0, CG_F_LEAF, 0, 0, NULL)                                \
    X(STEP, "t", 0, CG_F_LEAF, 0, 0, NULL)                                     \
    X(LOAD, "load", 0, CG_F_LEAF, 0, 0, NULL)                                  \
    X(SCALAR, "scalar", 0, CG_F_LEAF, 0, 0, NULL)                              \
    X(GSTATE, "gstate", 0, CG_F_LEAF, 0, 0, NULL)                              \
    X(HYPER, "hyper", 0, CG_F_LEAF, 0, 0, NULL)                                \
    X(SHAPE, "size", 0, CG_F_LEAF, 0, 0, NULL)                                 \
    X(GSCALE, "grad_scale", 0, CG_F_LEAF, 0, 0, NULL)                          \
    X(NEG, "neg", 1, 0, -a, -a, LLVMBuildFNeg(E->b, A[0], ""))                 \
    X(ABS, "abs", 1, CG_F_PRELUDE, fabs(a), fabsf(a),                          \
      ir_call(E, "llvm.fabs", A, 1))                                           \
    X(SQRT, "sqrt", 1, CG_F_PRELUDE, sqrt(a), sqrtf(a),                        \
      ir_call(E, "llvm.sqrt", A, 1))                                           \
    X(SIGN, "sign", 1, CG_F_PRELUDE, (double)(0 < a) - (double)(a < 0),        \
      (float)(0 < a) - (float)(a < 0), ir_sign(E, A))                          \
    X(EXP, "exp", 1, CG_F_PRELUDE | CG_F_UNIFORM, exp(a), NAN, NULL)           \
    X(LOG, "log", 1, CG_F_PRELUDE | CG_F_UNIFORM, log(a), NAN, NULL)           \
    X(NOT, "not_", 1, CG_PL, a == 0, a == 0, LLVMBuildNot(E->b, A[0], ""))     \
    X(F32, "f32", 1, CG_F_PRELUDE, (double)(float)a, a, A[0])                  \
    X(BF16, "bf16", 1, CG_F_PRELUDE, (double)cg_bf16f((float)a), cg_bf16f(a),  \
      ir_bf16(E, A))                                                           \
    X(ADD, "add", 2, 0, a + b, a + b, LLVMBuildFAdd(E->b, A[0], A[1], ""))     \
    X(SUB, "sub", 2, 0, a - b, a - b, LLVMBuildFSub(E->b, A[0], A[1], ""))     \
    X(MUL, "mul", 2, 0, a * b, a * b, LLVMBuildFMul(E->b, A[0], A[1], ""))     \
    X(DIV, "div", 2, 0, a / b, a / b, LLVMBuildFDiv(E->b, A[0], A[1], ""))     \
    X(POW, "pow", 2, CG_F_PRELUDE | CG_F_UNIFORM, pow(a, b), NAN, NULL)        \
    X(MOD, "mod", 2, CG_F_UNIFORM, cg_mod(a, b), NAN, NULL)                    \
    X(ATAN2, "atan2", 2, CG_F_PRELUDE, atan2(a, b), atan2f(a, b),              \
      ir_libm(E, "atan2f", A, 2))                                              \
    X(MIN, "min", 2, CG_F_PRELUDE, cg_min_nan(a, b), cg_min_nanf(a, b),        \
      ir_call(E, "llvm.minimum", A, 2))                                        \
    X(MAX, "max", 2, CG_F_PRELUDE, cg_max_nan(a, b), cg_max_nanf(a, b),        \
      ir_call(E, "llvm.maximum", A, 2))                                        \
    X(LT, "lt", 2, CG_PB, a < b, a < b, ir_fcmp(E, LLVMRealOLT, A))            \
    X(LE, "le", 2, CG_PB, a <= b, a <= b, ir_fcmp(E, LLVMRealOLE, A))          \
    X(GT, "gt", 2, CG_PB, a > b, a > b, ir_fcmp(E, LLVMRealOGT, A))            \
    X(GE, "ge", 2, CG_PB, a >= b, a >= b, ir_fcmp(E, LLVMRealOGE, A))          \
    X(EQ, "eq", 2, CG_PB, a == b, a == b, ir_fcmp(E, LLVMRealOEQ, A))          \
    X(NE, "ne", 2, CG_PB, a != b, a != b, ir_fcmp(E, LLVMRealUNE, A))          \
    X(AND, "and_", 2, CG_PL, a != 0 && b != 0, a != 0 && b != 0,               \
      LLVMBuildAnd(E->b, A[0], A[1], ""))                                      \
    X(OR, "or_", 2, CG_PL, a != 0 || b != 0, a != 0 || b != 0,                 \
      LLVMBuildOr(E->b, A[0], A[1], ""))                                       \
    X(FMA, "fma", 3, CG_F_PRELUDE, fma(a, b, c), fmaf(a, b, c),                \
      ir_call(E, "llvm.fma", A, 3))                                            \
    X(LERP, "lerp", 3, CG_F_PRELUDE, cg_lerp(a, b, c), cg_lerpf(a, b, c),      \
      ir_lerp(E, A))                                                           \
    X(WHERE, "where", 3, CG_F_PRELUDE | CG_F_SELECT, a != 0 ? b : c,           \
      a != 0 ? b : c, LLVMBuildSelect(E->b, A[0], A[1], A[2], ""))             \
    X(SUM, "sum", 1, CG_R, NAN, NAN, NULL)                                     \
    X(MAXALL, "maxall", 1, CG_RM, NAN, NAN, NULL)                              \
    X(RSUM, "rowsum", 1, CG_R | CG_F_TO_ROW, NAN, NAN, NULL)                   \
    X(RMAX, "rowmax", 1, CG_RM | CG_F_TO_ROW, NAN, NAN, NULL)                  \
    X(CSUM, "colsum", 1, CG_R | CG_F_TO_COL, NAN, NAN, NULL)                   \
    X(CMAX, "colmax", 1, CG_RM | CG_F_TO_COL, NAN, NAN, NULL)                  \
    X(GSUM, "groupsum", 1, CG_R | CG_F_TO_GROUP, NAN, NAN, NULL)               \
    X(GMAX, "groupmax", 1, CG_RM | CG_F_TO_GROUP, NAN, NAN, NULL)              \
    X(TRANSPOSE, "transpose", 1, CG_F_MATRIX, NAN, NAN, NULL)                  \
    X(MATMUL, "matmul", 2, CG_F_MATRIX, NAN, NAN, NULL)

#endif /* CG_OPS_H */
