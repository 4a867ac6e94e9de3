/*
 * emit.h - the LLVM side of codegen: the host target, and the emitter that
 * turns a finished graph into a module.  Private to codegen; the only
 * header besides jit.c's own code that includes LLVM.
 */
#ifndef CG_EMIT_H
#define CG_EMIT_H

#include <llvm-c/Core.h>
#include <llvm-c/Target.h>

#include "cg_int.h"

typedef struct cg_target {
    char *triple;
    char *cpu;
    char *features;
    const char *vector_width; /* "512" with AVX-512, else "256" */
    LLVMTargetDataRef layout;
} cg_target;

/* Builds the kernel module for `g` in `ctx`, its entry point named `name`
 * (see emit.c for the ABI).  The caller owns *out. */
int cg_emit_module(LLVMContextRef ctx, const cg_target *t, const cg_graph *g,
                   const char *name, LLVMModuleRef *out, char *err);

#endif /* CG_EMIT_H */
