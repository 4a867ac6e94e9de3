/*
 * test_validation.c - every hyperparameter error torch.optim's constructors
 * raise, with torch's message.  tests/torch/validation_messages.txt was
 * written by the fixture recorder from torch 2.13 itself: one line per bad
 * value, "spec<TAB>options<TAB>message".  jopt must refuse each with
 * JOPT_EINVAL and that message, both as the optimizer's defaults and as a
 * group's options, and must leave nothing behind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static void expect_refused(jopt_ctx *ctx, const char *spec, const char *defaults,
                           const char *group_options, const char *message)
{
    float p[4] = {1, 2, 3, 4}, g[4] = {0};
    jopt_param param = {p, g, 4};
    jopt_group group = {&param, 1, group_options};
    jopt_optim *opt = NULL;
    int rc = jopt_optim_new(ctx, spec, &group, 1, defaults, &opt);
    if (rc != JOPT_EINVAL || !strstr(jopt_errmsg(ctx), message))
        fail_msg("%s \"%s\" / group \"%s\": got %d \"%s\", want JOPT_EINVAL "
                 "with \"%s\"", spec, defaults ? defaults : "",
                 group_options ? group_options : "", rc, jopt_errmsg(ctx), message);
    assert_null(opt);
    assert_true(p[0] == 1 && p[3] == 4);
}

static void test_validation_torch_messages(void **state)
{
    (void)state;
    FILE *f = fopen(JOPT_SOURCE_DIR "/tests/torch/validation_messages.txt", "r");
    assert_non_null(f);
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *spec = line, *options = strchr(spec, '\t');
        assert_non_null(options);
        *options++ = 0;
        char *message = strchr(options, '\t');
        assert_non_null(message);
        *message++ = 0;
        expect_refused(ctx, spec, options, NULL, message);
        expect_refused(ctx, spec, NULL, options, message);
        n++;
    }
    fclose(f);
    jopt_ctx_free(ctx);
    print_message("%d torch validation errors reproduced\n", n);
    assert_true(n >= 60);
}

/* the defaults themselves pass every spec's check */
static void test_validation_defaults_accepted(void **state)
{
    (void)state;
    static const char *const specs[] = {"sgd", "adam", "adamw", "adadelta",
                                        "adagrad", "adamax", "asgd", "nadam",
                                        "radam", "rmsprop", "rprop", "lion", "lamb"};
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float p[4] = {0}, g[4] = {0};
    jopt_param param = {p, g, 4};
    jopt_group group = {&param, 1, NULL};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        jopt_optim *opt;
        T_OK(ctx, jopt_optim_new(ctx, specs[i], &group, 1, NULL, &opt));
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
        jopt_optim_free(opt);
    }
    jopt_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation_torch_messages),
        cmocka_unit_test(test_validation_defaults_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
