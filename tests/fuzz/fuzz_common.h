/*
 * fuzz_common.h - what the libFuzzer harnesses share (tests/fuzz/README.md):
 * the spec folder, the reference engine (no LLVM per input: the loaders
 * are the target, not the compiler), and a checkpoint's seal rewritten so
 * that mutations reach the checks behind the checksum.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "jopt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char *const fuzz_dirs[] = {JOPT_SOURCE_DIR "/specs"};

static inline jopt_ctx *fuzz_ctx(void)
{
    jopt_ctx *ctx;
    if (jopt_ctx_new(&ctx) || jopt_ctx_set_spec_path(ctx, fuzz_dirs[0]) ||
        jopt_ctx_set_engine(ctx, JOPT_ENGINE_REFERENCE) ||
        jopt_ctx_set_threads(ctx, 1))
        abort();
    return ctx;
}

/* a copy of data whose last 8 bytes are the FNV-1a of those before, as a
 * checkpoint's (when `seal`), else a plain copy; caller frees */
static inline unsigned char *fuzz_sealed(const uint8_t *data, size_t size,
                                         int seal)
{
    unsigned char *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    memcpy(buf, data, size);
    if (seal && size >= 8) {
        uint64_t h = cg_fnv(CG_FNV_INIT, buf, size - 8);
        memcpy(buf + size - 8, &h, 8);
    }
    return buf;
}

#endif
