/*
 * fuzz_spec.c - the spec loader: a spec's text is parsed in the sandbox
 * (cg_spec_parse), its check() run on its defaults, and every kernel it
 * declares traced and printed as a graph (the steady and fresh update,
 * or each vector kernel): the sandbox, the tracer and graph validation.
 * No LLVM: the graph printer stops before the JIT.
 */
#include "fuzz_common.h"

static cg_jit *jit;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char err[CG_ERRLEN];
    if (cg_jit_new(&jit, err))
        abort();
    return 0;
}

static void emit(const cg_request *req)
{
    char err[CG_ERRLEN], *text = NULL;
    if (cg_emit_text(jit, req, "graph", &text, err) == JOPT_OK)
        cg_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* cg_spec_parse takes both, as cg_malloc blocks (cg_mem.h) */
    char *path = cg_strdup("fuzz.lua"), *text = cg_malloc(size + 1);
    if (!path || !text)
        abort();
    memcpy(text, data, size);
    text[size] = 0;
    char err[CG_ERRLEN];
    cg_spec *spec;
    if (cg_spec_parse(path, text, size, &spec, err) != JOPT_OK)
        return 0;
    const double *values = cg_spec_defaults(spec);
    if (cg_spec_check(spec, values, err) == JOPT_OK) {
        if (cg_spec_method(spec)) {
            for (size_t i = 0; i < cg_spec_nvkernels(spec); i++) {
                cg_request req = {.spec = spec,
                                  .vkernel = cg_spec_vkernel(spec, i)->name};
                emit(&req);
            }
        } else {
            cg_request req = {.spec = spec, .values = values};
            emit(&req);
            req.fresh = 1;
            emit(&req);
        }
    }
    cg_spec_free(spec);
    return 0;
}
