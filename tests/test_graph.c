/*
 * test_graph.c - golden tests of graph building, as QBE's tests carry their
 * expected output: each .lua file in tests/graph/ is a spec that ends with
 *
 *   --[[expect
 *   options: lr=0.5            (optional: the options to open it with)
 *   kernel: dot                (optional: a vector kernel, or a named kernel
 *                               of an update spec, not the update)
 *   rank: 2                    (optional: for tensors of that rank)
 *   inputs: hessian            (optional: with these inputs given)
 *   error: f.lua:7: a sum over (or: the message it must fail with, which
 *                               starts with the file and line at fault)
 *   graph NAME update          (else: the printed graph, exactly)
 *   ...
 *   ]]
 *
 * and is opened and printed through jopt.h (jopt_spec_emit "graph"), the
 * form `jopt compile --emit graph` prints.  JOPT_GRAPH_UPDATE=1 rewrites the
 * expected graphs from what the library prints now (then read the diff).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define GRAPH_DIR JOPT_SOURCE_DIR "/tests/graph"

typedef struct golden {
    char path[512];
    char *text;             /* the whole file */
    char *block;            /* where "--[[expect" starts in text */
    char options[512], kernel[128], error[512], rank[16], inputs[128];
    const char *expect;     /* the expected graph (inside text) */
    size_t expect_len;
} golden;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    return buf;
}

/* "key: value" at *p (a line of the block) into buf; advances past it */
static int header(const char **p, const char *key, char *buf, size_t cap)
{
    size_t kl = strlen(key);
    if (strncmp(*p, key, kl) || (*p)[kl] != ':')
        return 0;
    const char *v = *p + kl + 1, *e = strchr(v, '\n');
    while (*v == ' ')
        v++;
    snprintf(buf, cap, "%.*s", (int)(e - v), v);
    *p = e + 1;
    return 1;
}

static void load_golden(golden *g, const char *name)
{
    memset(g, 0, sizeof *g);
    snprintf(g->path, sizeof g->path, "%s/%s", GRAPH_DIR, name);
    g->text = slurp(g->path);
    g->block = strstr(g->text, "--[[expect\n");
    if (!g->block)
        fail_msg("%s: no --[[expect block", name);
    const char *p = g->block + strlen("--[[expect\n");
    while (header(&p, "options", g->options, sizeof g->options) ||
           header(&p, "kernel", g->kernel, sizeof g->kernel) ||
           header(&p, "rank", g->rank, sizeof g->rank) ||
           header(&p, "inputs", g->inputs, sizeof g->inputs) ||
           header(&p, "error", g->error, sizeof g->error))
        ;
    const char *end = strstr(p, "]]");
    if (!end)
        fail_msg("%s: the expect block does not end with ]]", name);
    g->expect = p;
    g->expect_len = (size_t)(end - p);
}

/* rewrites the file with `got` as its expected graph */
static void update_golden(const golden *g, const char *got)
{
    FILE *f = fopen(g->path, "wb");
    assert_non_null(f);
    fwrite(g->text, 1, (size_t)(g->expect - g->text), f);
    fputs(got, f);
    fputs(g->expect + g->expect_len, f);
    assert_int_equal(fclose(f), 0);
}

static int run_one(jopt_ctx *ctx, const char *name)
{
    golden g;
    load_golden(&g, name);
    jopt_spec *spec = NULL;
    const char *got = NULL;
    int rc = jopt_spec_open(ctx, g.path, g.options[0] ? g.options : NULL, &spec);
    if (rc == JOPT_OK && (g.rank[0] || g.inputs[0]))
        rc = jopt_spec_set_variant(spec, g.rank[0] ? atoi(g.rank) : 1,
                                   g.inputs[0] ? g.inputs : NULL);
    if (rc == JOPT_OK)
        rc = jopt_spec_emit(spec, g.kernel[0] ? g.kernel : NULL, "graph", &got);
    int bad = 0;
    if (g.error[0]) {
        /* every spec error names the file and the line at fault */
        char want[600];
        snprintf(want, sizeof want, "%s:", name);
        const char *colon = strncmp(g.error, want, strlen(want)) == 0
                                ? g.error + strlen(want) : NULL;
        if (!colon || !(*colon >= '1' && *colon <= '9')) {
            printf("%s: the expected error must start with %sLINE:\n", name, want);
            bad = 1;
        } else if (rc == JOPT_OK || !strstr(jopt_errmsg(ctx), g.error)) {
            printf("%s: expected an error with \"%s\", got %s: %s\n", name,
                   g.error, rc ? "error" : "success", rc ? jopt_errmsg(ctx) : "");
            bad = 1;
        }
    } else if (rc != JOPT_OK) {
        printf("%s: %s\n", name, jopt_errmsg(ctx));
        bad = 1;
    } else if (strlen(got) != g.expect_len || memcmp(got, g.expect, g.expect_len)) {
        if (getenv("JOPT_GRAPH_UPDATE")) {
            update_golden(&g, got);
            printf("%s: expected graph rewritten\n", name);
        } else {
            printf("%s: the graph differs; expected:\n%.*s--- printed:\n%s", name,
                   (int)g.expect_len, g.expect, got);
            bad = 1;
        }
    }
    jopt_spec_free(spec);
    free(g.text);
    return bad;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_graph_golden_files(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    DIR *dir = opendir(GRAPH_DIR);
    assert_non_null(dir);
    char *names[256];
    size_t n = 0;
    for (struct dirent *e; (e = readdir(dir)) && n < 256;) {
        size_t l = strlen(e->d_name);
        if (l > 4 && !strcmp(e->d_name + l - 4, ".lua"))
            names[n++] = strdup(e->d_name);
    }
    closedir(dir);
    qsort(names, n, sizeof *names, cmp_name);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        bad += run_one(ctx, names[i]);
        free(names[i]);
    }
    jopt_ctx_free(ctx);
    printf("%zu golden graphs, %d wrong\n", n, bad);
    assert_true(n >= 10);
    assert_int_equal(bad, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_graph_golden_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
