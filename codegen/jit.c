/*
 * jit.c - LLVM's half of the pipeline:
 *
 *   graph --emit--> module --LLVMVerifyModule--> --"default<O3>"-->
 *         --LLJIT (one resource tracker per kernel)--> function pointer
 *
 * LLVM can end the process on bad input (a malformed module, an invalid
 * pipeline, default diagnostics), so: the graph is validated before we
 * get here, every module is verified, the pipeline string is fixed, and a
 * diagnostic handler collects messages.  Callers serialise every call
 * (kernel.c holds a mutex): LLJIT's C API is not safe to compile from two
 * threads at once.
 */
#include <llvm-c/Analysis.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emit.h"

struct cg_llvm {
    LLVMOrcLLJITRef jit;
    LLVMTargetMachineRef tm;
    cg_target target;
    char diag[CG_ERRLEN];
    char orc[CG_ERRLEN]; /* what ORC reported since the compile began */
};

/* ORC reports errors it cannot return (a failed materialization, as when
 * the system refuses executable memory) to the session's reporter, whose
 * default prints "JIT session error: ..." to stderr.  Ours keeps them for
 * the jopt error, as PostgreSQL's llvmjit does. */
static void on_orc_error(void *ctx, LLVMErrorRef e)
{
    cg_llvm *l = ctx;
    char *msg = LLVMGetErrorMessage(e); /* consumes e */
    size_t n = strlen(l->orc);
    snprintf(l->orc + n, sizeof l->orc - n, "%s%s", n ? "; " : "", msg);
    LLVMDisposeErrorMessage(msg);
}

static LLVMOrcExecutionSessionRef session(cg_llvm *l)
{
    return LLVMOrcLLJITGetExecutionSession(l->jit);
}

static void on_diagnostic(LLVMDiagnosticInfoRef info, void *ctx)
{
    cg_llvm *l = ctx;
    if (LLVMGetDiagInfoSeverity(info) != LLVMDSError)
        return;
    char *msg = LLVMGetDiagInfoDescription(info);
    snprintf(l->diag, sizeof l->diag, "%s", msg);
    LLVMDisposeMessage(msg);
}

static int llvm_error(char *err, LLVMErrorRef e, const char *what)
{
    char *msg = LLVMGetErrorMessage(e);
    int rc = cg_fail(err, JOPT_ECOMPILE, "%s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return rc;
}

/* llvm_error with what the session reported meanwhile, and the likely
 * cause when it is one jopt can name */
static int jit_error(cg_llvm *l, char *err, LLVMErrorRef e, const char *what)
{
    char *msg = LLVMGetErrorMessage(e);
    const char *o = l->orc;
    const char *cause =
        strstr(o, "Permission denied") || strstr(o, "Operation not permitted")
            ? ": the system refused executable memory for the kernel (a "
              "policy that forbids mapping memory executable: SELinux "
              "execmem, PaX MPROTECT, a seccomp filter); the reference "
              "engine, JOPT_ENGINE_REFERENCE, needs none"
        : strstr(o, "Cannot allocate memory") ? ": out of memory for the kernel's code"
                                              : "";
    int rc = cg_fail(err, JOPT_ECOMPILE, "%s: %s%s%s%s%s", what, msg,
                     o[0] ? " (JIT session error: " : "", o, o[0] ? ")" : "",
                     cause);
    LLVMDisposeErrorMessage(msg);
    return rc;
}

void cg_llvm_free(cg_llvm *l)
{
    if (!l)
        return;
    if (l->jit)
        LLVMOrcDisposeLLJIT(l->jit);
    if (l->tm)
        LLVMDisposeTargetMachine(l->tm);
    if (l->target.layout)
        LLVMDisposeTargetData(l->target.layout);
    LLVMDisposeMessage(l->target.triple);
    LLVMDisposeMessage(l->target.cpu);
    LLVMDisposeMessage(l->target.features);
    cg_free(l);
}

int cg_llvm_new(cg_llvm **out, char *err)
{
    if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter())
        return cg_fail(err, JOPT_ECOMPILE, "LLVM has no native target");
    int rc = JOPT_OK;
    char *msg = NULL;
    LLVMErrorRef e;
    LLVMTargetRef target;
    LLVMOrcJITTargetMachineBuilderRef jtmb;
    cg_llvm *l = cg_calloc(1, sizeof *l);
    if (!l)
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    cg_target *t = &l->target;
    t->triple = LLVMGetDefaultTargetTriple();
    t->cpu = LLVMGetHostCPUName();
    t->features = LLVMGetHostCPUFeatures();
    t->vector_width = strstr(t->features, "+avx512f") ? "512" : "256";
    if (LLVMGetTargetFromTriple(t->triple, &target, &msg)) {
        rc = cg_fail(err, JOPT_ECOMPILE, "LLVM target %s: %s", t->triple, msg);
        goto fail;
    }
    l->tm = LLVMCreateTargetMachine(target, t->triple, t->cpu, t->features,
                                    LLVMCodeGenLevelAggressive, LLVMRelocPIC,
                                    LLVMCodeModelJITDefault);
    if (!l->tm) {
        rc = cg_fail(err, JOPT_ECOMPILE, "cannot create an LLVM target machine");
        goto fail;
    }
    t->layout = LLVMCreateTargetDataLayout(l->tm);
    if ((e = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb))) {
        rc = llvm_error(err, e, "detecting the host for LLJIT");
        goto fail;
    }
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
    if ((e = LLVMOrcCreateLLJIT(&l->jit, builder))) { /* takes the builder */
        l->jit = NULL;
        rc = llvm_error(err, e, "creating LLJIT");
        goto fail;
    }
    LLVMOrcExecutionSessionSetErrorReporter(session(l), on_orc_error, l);
    *out = l;
    return JOPT_OK;
fail:
    LLVMDisposeMessage(msg);
    cg_llvm_free(l);
    return rc;
}

/* emit + verify + O3, in a context of its own (an LLVM context keeps
 * every constant and type it has seen: one per module frees them with the
 * module); the caller owns *out and *tsc */
static int build(cg_llvm *l, const cg_graph *g, const char *name,
                 LLVMOrcThreadSafeContextRef *tsc, LLVMModuleRef *out, char *err)
{
    LLVMModuleRef mod = NULL;
    char *msg = NULL;
    LLVMErrorRef e;
    *tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(*tsc);
    LLVMContextSetDiagnosticHandler(ctx, on_diagnostic, l);
    l->diag[0] = 0;
    int rc = cg_emit_module(ctx, &l->target, g, name, &mod, err);
    if (rc)
        goto fail;
    if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
        rc = cg_fail(err, JOPT_ECOMPILE, "internal error: invalid IR: %s", msg);
        goto fail;
    }
    LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
    LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
    e = LLVMRunPasses(mod, "default<O3>", l->tm, opts);
    LLVMDisposePassBuilderOptions(opts);
    if (e) {
        rc = llvm_error(err, e, "optimising");
        goto fail;
    }
    if (l->diag[0]) {
        rc = cg_fail(err, JOPT_ECOMPILE, "LLVM: %s", l->diag);
        goto fail;
    }
    LLVMDisposeMessage(msg);
    *out = mod;
    return JOPT_OK;
fail:
    LLVMDisposeMessage(msg);
    if (mod)
        LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(*tsc);
    *tsc = NULL;
    return rc;
}

int cg_llvm_compile(cg_llvm *l, const cg_graph *g, const char *name,
                    cg_kernel_fn *fn, void **tracker, char *err)
{
    LLVMModuleRef mod;
    LLVMOrcThreadSafeContextRef tsc;
    LLVMErrorRef e;
    int rc = build(l, g, name, &tsc, &mod, err);
    if (rc)
        return rc;
    l->orc[0] = 0;
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(l->jit);
    LLVMOrcResourceTrackerRef rt = LLVMOrcJITDylibCreateResourceTracker(jd);
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc); /* the module keeps it alive */
    if ((e = LLVMOrcLLJITAddLLVMIRModuleWithRT(l->jit, rt, tsm))) {
        /* the JIT took the module, even on failure */
        rc = jit_error(l, err, e, "adding the kernel to the JIT");
        goto fail;
    }
    for (int li = 0; li < g->nloops; li++) {
        char fname[160];
        snprintf(fname, sizeof fname, "%s_%d", name, li);
        LLVMOrcExecutorAddress addr = 0;
        if ((e = LLVMOrcLLJITLookup(l->jit, &addr, fname))) {
            rc = jit_error(l, err, e, "compiling the kernel");
            goto fail;
        }
        if (!addr) {
            rc = cg_fail(err, JOPT_ECOMPILE, "kernel %s has no address", fname);
            goto fail;
        }
        fn[li] = (cg_kernel_fn)(uintptr_t)addr;
    }
    *tracker = rt;
    return JOPT_OK;
fail:
    cg_llvm_remove(l, rt);
    return rc;
}

void cg_llvm_remove(cg_llvm *l, void *tracker)
{
    if (!tracker)
        return;
    LLVMErrorRef e = LLVMOrcResourceTrackerRemove(tracker);
    if (e)
        LLVMConsumeError(e);
    LLVMOrcReleaseResourceTracker(tracker);
    /* the kernel's symbol names are dead now: drop them from the pool,
     * or a long run that compiles and drops kernels keeps every name */
    LLVMOrcSymbolStringPoolClearDeadEntries(
        LLVMOrcExecutionSessionGetSymbolStringPool(session(l)));
}

/* the module's machine code; emitting it changes the module, so from a
 * clone (caller frees *text) */
static int module_asm(cg_llvm *l, LLVMModuleRef mod, char **text, char *err)
{
    LLVMModuleRef clone = LLVMCloneModule(mod);
    LLVMMemoryBufferRef buf = NULL;
    char *msg = NULL;
    int rc = JOPT_OK;
    if (LLVMTargetMachineEmitToMemoryBuffer(l->tm, clone, LLVMAssemblyFile,
                                            &msg, &buf)) {
        rc = cg_fail(err, JOPT_ECOMPILE, "emitting assembly: %s", msg);
        goto done;
    }
    size_t n = LLVMGetBufferSize(buf);
    if (!(*text = cg_malloc(n + 1))) {
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(*text, LLVMGetBufferStart(buf), n);
    (*text)[n] = 0;
done:
    if (buf)
        LLVMDisposeMemoryBuffer(buf);
    LLVMDisposeMessage(msg);
    LLVMDisposeModule(clone);
    return rc;
}

int cg_llvm_text(cg_llvm *l, const cg_graph *g, const char *what, char **text,
                 char *err)
{
    int as_asm = strcmp(what, "asm") == 0;
    if (!as_asm && strcmp(what, "ir") != 0)
        return cg_fail(err, JOPT_EINVAL, "unknown output '%s' (ir or asm)", what);
    LLVMModuleRef mod;
    LLVMOrcThreadSafeContextRef tsc;
    int rc = build(l, g, "jopt_kernel", &tsc, &mod, err);
    if (rc)
        return rc;
    if (as_asm) {
        rc = module_asm(l, mod, text, err);
    } else {
        char *s = LLVMPrintModuleToString(mod);
        if (!(*text = cg_strdup(s)))
            rc = cg_fail(err, JOPT_ENOMEM, "out of memory");
        LLVMDisposeMessage(s);
    }
    LLVMDisposeModule(mod);
    LLVMOrcDisposeThreadSafeContext(tsc);
    return rc;
}
