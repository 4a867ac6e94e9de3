/*
 * fuzz_options.c - the options parser: byte 0 picks a spec (or, with its
 * top bit, a scheduler kind), the rest is an options string.  Optimizer
 * options go through cg_options_parse and the spec's check(), then build
 * an optimizer (the finite and kind checks); scheduler options build a
 * scheduler over a fresh SGD optimizer.
 */
#include "fuzz_common.h"

static jopt_ctx *ctx;
static float p[16], g[16];

static const char *const specs[] = {"adam", "lbfgs", "rprop", "cg", "sgd",
                                    "asgd", "adagrad", "nadam"};
static const char *const kinds[] = {
    "step", "multistep", "exponential", "cosine", "cosine_warm_restarts",
    "linear", "constant", "polynomial", "onecycle", "cyclic", "plateau"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    ctx = fuzz_ctx();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *text = malloc(size);
    if (!text)
        abort();
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    jopt_param params[2] = {{p, g, 8}, {p + 8, g + 8, 8}};
    jopt_optim *opt = NULL;
    if (data[0] & 0x80) {
        jopt_group group = {params, 2, "lr=0.1"};
        jopt_group two[2] = {{params, 1, NULL}, {params + 1, 1, "lr=0.2"}};
        int ngroups = data[0] & 0x40 ? 2 : 1;
        if (jopt_optim_new(ctx, "sgd", ngroups == 2 ? two : &group, ngroups,
                           "momentum=0.9", &opt) == JOPT_OK) {
            jopt_sched *s = NULL;
            const char *kind = kinds[(data[0] & 0x3f) % (sizeof kinds / sizeof kinds[0])];
            if (jopt_sched_new(opt, kind, text, &s) == JOPT_OK) {
                for (int i = 0; i < 3; i++)
                    jopt_sched_step(s);
                jopt_sched_free(s);
            }
        }
    } else {
        const char *spec = specs[data[0] % (sizeof specs / sizeof specs[0])];
        jopt_group group = {params, 2, text};
        if (jopt_optim_new(ctx, spec, &group, 1, NULL, &opt) == JOPT_OK) {
            jopt_options_set(opt, 0, text);
            double v;
            jopt_option_get(opt, 0, "lr", &v);
        }
        jopt_spec *sp;
        if (jopt_spec_open(ctx, spec, text, &sp) == JOPT_OK) {
            char buf[256];
            for (size_t i = 0; i < jopt_spec_nhyper(sp); i++)
                jopt_spec_format(sp, i, buf, sizeof buf);
            jopt_spec_free(sp);
        }
    }
    jopt_optim_free(opt);
    free(text);
    return 0;
}
