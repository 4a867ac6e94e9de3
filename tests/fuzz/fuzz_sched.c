/*
 * fuzz_sched.c - the scheduler state loader: byte 0 picks a scheduler
 * (each kind, and a sequential and a chained composite) over a fresh SGD
 * optimizer of two groups; with its top bit set the harness rewrites the
 * checksum.  A state that loads is stepped.  JOPT_FUZZ_SEEDS=DIR writes
 * the seed corpus.
 */
#include <stdio.h>

#include "fuzz_common.h"

static jopt_ctx *ctx;
static float p[8], g[8];

static const char *const kinds[][2] = {
    {"step", "step_size=2 gamma=0.5"},
    {"multistep", "milestones=1,3 gamma=0.5"},
    {"exponential", "gamma=0.9"},
    {"cosine", "T_max=5 eta_min=0.001"},
    {"cosine_warm_restarts", "T_0=2 T_mult=2"},
    {"linear", "start_factor=0.5 total_iters=4"},
    {"constant", "factor=0.5 total_iters=2"},
    {"polynomial", "total_iters=4 power=2"},
    {"onecycle", "max_lr=0.1,0.2 total_steps=10"},
    {"cyclic", "base_lr=0.01 max_lr=0.1 step_size_up=2 mode=exp_range gamma=0.9"},
    {"plateau", "patience=1 cooldown=1"},
    {"sequential", NULL},
    {"chained", NULL},
};
#define NK (sizeof kinds / sizeof kinds[0])

static jopt_sched *make(jopt_optim *opt, size_t k)
{
    jopt_sched *s = NULL, *c[2] = {NULL, NULL};
    if (kinds[k][1])
        return jopt_sched_new(opt, kinds[k][0], kinds[k][1], &s) ? NULL : s;
    if (jopt_sched_new(opt, "linear", "start_factor=0.1 total_iters=2", &c[0]) ||
        jopt_sched_new(opt, "exponential", "gamma=0.9", &c[1]))
        goto fail;
    int64_t milestone = 2;
    if ((kinds[k][0][0] == 's' ? jopt_sched_new_sequential(opt, c, 2, &milestone, &s)
                               : jopt_sched_new_chained(opt, c, 2, &s)) == JOPT_OK)
        return s;
fail:
    jopt_sched_free(c[0]);
    jopt_sched_free(c[1]);
    return NULL;
}

static void drive(jopt_sched *s, size_t k, int steps)
{
    for (int i = 0; i < steps; i++)
        if (k == 10)
            jopt_sched_step_metric(s, 1.0 / (i + 1));
        else
            jopt_sched_step(s);
}

static jopt_optim *optim(void)
{
    static jopt_param params[2] = {{p, g, 4}, {p + 4, g + 4, 4}};
    jopt_group groups[2] = {{params, 1, NULL}, {params + 1, 1, "lr=0.2"}};
    jopt_optim *opt;
    if (jopt_optim_new(ctx, "sgd", groups, 2, "lr=0.1 momentum=0.9", &opt))
        abort();
    return opt;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ctx = fuzz_ctx();
    const char *seeds = getenv("JOPT_FUZZ_SEEDS");
    for (size_t k = 0; seeds && k < NK; k++) {
        jopt_optim *opt = optim();
        jopt_sched *s = make(opt, k);
        if (!s)
            abort();
        drive(s, k, 3);
        size_t len;
        unsigned char *buf;
        if (jopt_sched_state_size(s, &len) || !(buf = malloc(len)) ||
            jopt_sched_save_mem(s, buf, len, &len))
            abort();
        char path[512];
        snprintf(path, sizeof path, "%s/%s", seeds, kinds[k][0]);
        FILE *out = fopen(path, "wb");
        if (!out)
            abort();
        fputc(0x80 | (int)k, out);
        fwrite(buf, 1, len, out);
        fclose(out);
        free(buf);
        jopt_sched_free(s);
        jopt_optim_free(opt);
    }
    if (seeds)
        exit(0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t k = (data[0] & 0x7f) % NK;
    jopt_optim *opt = optim();
    jopt_sched *s = make(opt, k);
    if (!s)
        abort();
    unsigned char *buf = fuzz_sealed(data + 1, size - 1, data[0] & 0x80);
    if (jopt_sched_load_mem(s, buf, size - 1) == JOPT_OK)
        drive(s, k, 2);
    free(buf);
    jopt_sched_free(s);
    jopt_optim_free(opt);
    return 0;
}
