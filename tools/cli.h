/*
 * cli.h - what the jopt command's files share (jopt.c: list, show,
 * compile, bench and main; check.c: check).  The command uses only jopt.h,
 * as any program would.
 */
#ifndef JOPT_CLI_H
#define JOPT_CLI_H

#include "jopt.h"

typedef struct args {
    const char *cmd, *spec, *emit, *kernel;
    char options[4096]; /* the --set items, as an options string */
    int ndim;           /* --shape AxB...: the tensors' shape, or 0 */
    int64_t shape[8];
} args;

/* prints "jopt: ..." to stderr; returns 1 */
int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Opens a.spec with a.options on ctx, failing with its message. */
int open_spec(jopt_ctx *ctx, const args *a, jopt_spec **spec);

/* the spec's vector kernels' names, "a, b, c" ("none" without) */
void kernel_names(jopt_spec *spec, char *buf, size_t cap);

/* whether the spec has a vector kernel of that name */
int has_kernel(jopt_spec *spec, const char *name);

/* check.c */
int cmd_check(const args *a);

#endif /* JOPT_CLI_H */
