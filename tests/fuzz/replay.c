/*
 * replay.c - runs a harness on files, without libFuzzer: the seed corpus
 * and every crash the fuzzers found (tests/fuzz/crashes/) replay as
 * ordinary ctest tests, in every build, so each crash stays fixed.
 *   replay_<harness> FILE_OR_FOLDER...
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    for (size_t r; buf && (r = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += r;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    if (!buf)
        return 1;
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    LLVMFuzzerInitialize(&argc, &argv);
    int bad = 0, files = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0)
            continue; /* a folder with no crashes yet */
        if (!S_ISDIR(st.st_mode)) {
            bad |= run_file(argv[i]);
            files++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        char *names[4096];
        size_t k = 0;
        for (struct dirent *e; d && (e = readdir(d)) && k < 4096;)
            if (e->d_name[0] != '.')
                names[k++] = strdup(e->d_name);
        if (d)
            closedir(d);
        qsort(names, k, sizeof *names, cmp);
        for (size_t j = 0; j < k; j++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[i], names[j]);
            bad |= run_file(path);
            files++;
            free(names[j]);
        }
    }
    printf("replayed %d inputs\n", files);
    return bad;
}
