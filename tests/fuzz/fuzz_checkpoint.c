/*
 * fuzz_checkpoint.c - the optimizer's checkpoint loader: byte 0 picks one
 * of a few optimizers that have state (Adam with amsgrad over two groups,
 * SGD with an unset momentum buffer, ASGD's scalar state, LAMB's sums,
 * Rprop, L-BFGS with history, CG); with its top bit set the harness
 * rewrites the checksum, so that mutations reach the checks behind it.
 * A checkpoint that loads is stepped once, then the optimizer is put back
 * from its own checkpoint.  JOPT_FUZZ_SEEDS=DIR writes the seed corpus.
 */
#include <stdio.h>

#include "fuzz_common.h"

#define N 13

typedef struct fixture {
    const char *spec, *options;
    int two_groups;
    float p[N], g[N];
    jopt_optim *opt;
    unsigned char *saved;
    size_t len;
} fixture;

static fixture fx[] = {
    {.spec = "adam", .options = "amsgrad=true weight_decay=0.01", .two_groups = 1},
    {.spec = "sgd", .options = "momentum=0.9 nesterov=true", .two_groups = 0},
    {.spec = "asgd", .options = "t0=1", .two_groups = 0},
    {.spec = "lamb", .options = NULL, .two_groups = 1},
    {.spec = "rprop", .options = NULL, .two_groups = 0},
    {.spec = "lbfgs", .options = "line_search_fn=strong_wolfe history_size=3", .two_groups = 0},
    {.spec = "cg", .options = NULL, .two_groups = 0},
};
#define NFX (sizeof fx / sizeof fx[0])
static jopt_ctx *ctx;

static int closure(void *user, double *loss)
{
    fixture *f = user;
    double l = 0;
    for (int i = 0; i < N; i++) {
        f->g[i] = 2 * (f->p[i] - 1) * (float)(i + 1);
        l += (double)(f->p[i] - 1) * (f->p[i] - 1) * (i + 1);
    }
    *loss = l;
    return 0;
}

static void step(fixture *f)
{
    jopt_step(f->opt, closure, f, NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ctx = fuzz_ctx();
    for (size_t k = 0; k < NFX; k++) {
        fixture *f = &fx[k];
        for (int i = 0; i < N; i++)
            f->p[i] = (float)i / N - 0.5f;
        jopt_param params[2] = {{f->p, f->g, 6}, {f->p + 6, f->g + 6, N - 6}};
        jopt_param whole = {f->p, f->g, N};
        jopt_group groups[2] = {{params, 1, NULL}, {params + 1, 1, "lr=0.01"}};
        jopt_group one = {&whole, 1, NULL};
        if (jopt_optim_new(ctx, f->spec, f->two_groups ? groups : &one,
                           f->two_groups ? 2 : 1, f->options, &f->opt))
            abort();
        jopt_sched *s; /* scheduler keys in the checkpoint */
        if (k == 0 && jopt_sched_new(f->opt, "onecycle", "max_lr=0.1 total_steps=10", &s) == JOPT_OK)
            jopt_sched_free(s);
        for (int i = 0; i < 3; i++)
            step(f);
        if (jopt_state_size(f->opt, &f->len) || !(f->saved = malloc(f->len)) ||
            jopt_state_save_mem(f->opt, f->saved, f->len, &f->len))
            abort();
    }
    const char *seeds = getenv("JOPT_FUZZ_SEEDS");
    for (size_t k = 0; seeds && k < NFX; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", seeds, fx[k].spec);
        FILE *out = fopen(path, "wb");
        if (!out)
            abort();
        fputc(0x80 | (int)k, out);
        fwrite(fx[k].saved, 1, fx[k].len, out);
        fclose(out);
    }
    if (seeds)
        exit(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fixture *f = &fx[(data[0] & 0x7f) % NFX];
    unsigned char *buf = fuzz_sealed(data + 1, size - 1, data[0] & 0x80);
    if (jopt_state_load_mem(f->opt, buf, size - 1) == JOPT_OK) {
        /* a loaded budget of 1e15 iterations is valid, and slow */
        double it = 0, ev = 0;
        jopt_option_get(f->opt, 0, "max_iter", &it);
        jopt_option_get(f->opt, 0, "max_eval", &ev);
        if (it <= 100 && !(ev > 1000))
            step(f);
        if (jopt_state_load_mem(f->opt, f->saved, f->len))
            abort(); /* its own checkpoint must load */
    }
    free(buf);
    return 0;
}
