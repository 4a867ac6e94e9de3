/*
 * consumer.c - a program built against an installed jopt, as a user would
 * build one: one Adam step over a small buffer, with the specs found where
 * they were installed.  Prints OK, or what went wrong (exit 1).
 *
 *   cmake -S tests/consumer -B build-consumer -DCMAKE_PREFIX_PATH=PREFIX
 *   cc consumer.c $(pkg-config --cflags --libs jopt)   # PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
 */
#include <stdio.h>

#include "jopt.h"

int main(void)
{
    float w[5] = {1, -2, 3, -4, 5}, g[5] = {0.5f, 0.5f, -0.5f, -0.5f, 1};
    jopt_param params[] = {{w, g, 5}};
    jopt_group groups[] = {{params, 1, NULL}};
    jopt_ctx *ctx;
    jopt_optim *opt = NULL;
    if (jopt_ctx_new(&ctx) != JOPT_OK) {
        fprintf(stderr, "consumer: jopt_ctx_new failed\n");
        return 1;
    }
    if (jopt_optim_new(ctx, "adam", groups, 1, "lr=0.1", &opt) != JOPT_OK ||
        jopt_step(opt, NULL, NULL, NULL) != JOPT_OK) {
        fprintf(stderr, "consumer: %s\n", jopt_errmsg(ctx));
        jopt_optim_free(opt);
        jopt_ctx_free(ctx);
        return 1;
    }
    /* Adam's first step moves each weight by lr against its gradient's sign */
    int ok = w[0] < 1 && w[0] > 0.89f && w[2] > 3 && w[4] < 5;
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    if (!ok) {
        fprintf(stderr, "consumer: the step did not move the weights as Adam "
                        "does (w[0] = %g)\n", (double)w[0]);
        return 1;
    }
    puts("OK");
    return 0;
}
