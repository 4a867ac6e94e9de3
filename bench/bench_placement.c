/*
 * bench_placement.c - how much the relative placement of an optimizer's
 * arrays moves its memory-only speed.  One fused loop (membw.c's, the JIT's
 * pattern) over Adam's arrays (p, m, v read and written, g read) and over
 * Sophia's (p, m, h read and written, g and the Hessian read), with array k
 * starting at k * (N floats) + offset_k bytes of one fresh mapping, whose
 * pages are touched in address order.  Fastest of --reps passes per layout,
 * in GB/s of the pattern's bytes.
 *
 *   bench_placement [--size 16M] [--reps 10] [OFFSETS ...]
 *   bench_placement --step SPEC[,SPEC...] [--size 16M] [--reps 10] [--threads 1]
 *
 * --step times jopt's own step instead, as a program would lay it out: the
 * parameter and its gradient from aligned_alloc one after the other, then
 * the optimizer, whose first step makes its states (runtime/optim.c's
 * rt_state_alloc places the large ones).  Fastest of --reps steps after
 * that first one, in ms and in GB/s of the update's own pattern.  Run it on
 * two builds of libjopt (LD_LIBRARY_PATH) to compare placements.
 *
 * OFFSETS lists each array's offset in KiB, comma separated, in the order
 * p,g,m,v (Adam) and p,g,hessian,m,h (Sophia): "0,4,8,12,16" is where glibc
 * puts same-sized allocations one after the other (a page apart beyond
 * their size).  With none, a fixed set of layouts (bench/RESULTS.md, "Where
 * the arrays fall").
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* MAP_ANONYMOUS */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench.h"

#define NARR 5

static const char *defaults[] = {
    "0,4,8,12,16",   /* one allocation after another (glibc) */
    "0,8,16,24,32",  /* two pages apart */
    "0,0,0,0,0",     /* exactly N floats apart */
    "0,1,2,3,4",     /* 1 KiB steps */
    "0,16,32,48,64", /* 16 KiB steps */
    "0,4,8,21,42",   /* glibc's p, g and input, state 21 KiB apart */
    "0,4,8,16,32",
};

static double fastest(const b_pattern *pat, float **arr, int64_t n, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = b_now();
        b_membw(pat, arr, 0, n);
        t = b_now() - t;
        best = t < best ? t : best;
    }
    return best;
}

/* slots read (and written) as the pattern's masks say */
static b_pattern pattern(int nslots, uint64_t read, uint64_t written)
{
    b_pattern p = {.nslots = nslots, .passes = 1};
    p.pass_read[0] = read;
    p.pass_written[0] = written;
    for (int a = 0; a < nslots; a++) {
        p.read[a] = read >> a & 1;
        p.written[a] = written >> a & 1;
        p.reads += p.read[a];
        p.writes += p.written[a];
    }
    return p;
}

/* jopt's step of each spec in the comma-separated list, laid out as a
 * program would lay it out (see the top of the file) */
static int time_steps(const char *list, int64_t n, int reps, int threads)
{
    char specs[512];
    snprintf(specs, sizeof specs, "%s", list);
    printf("bench_placement: jopt's step on one tensor of %lld floats, %d thread%s, "
           "fastest of %d steps\n", (long long)n, threads, threads == 1 ? "" : "s", reps);
    printf("%-20s %12s %12s\n", "spec", "ms", "GB/s");
    for (char *save = NULL, *spec = strtok_r(specs, ",", &save); spec;
         spec = strtok_r(NULL, ",", &save)) {
        jopt_ctx *ctx = NULL;
        jopt_spec *sp = NULL;
        jopt_optim *opt = NULL;
        b_pattern pat;
        float *p = b_alloc(n), *g = b_alloc(n);
        int rc = !p || !g || jopt_ctx_new(&ctx) || jopt_ctx_set_threads(ctx, threads) ||
                 jopt_spec_open(ctx, spec, NULL, &sp) || b_pattern_of(sp, &pat);
        if (!rc) {
            b_fill(p, n, 1);
            b_fill(g, n, 2);
            jopt_param prm = {p, g, n};
            jopt_group grp = {&prm, 1, NULL};
            rc = jopt_optim_new(ctx, spec, &grp, 1, NULL, &opt) ||
                 jopt_step(opt, NULL, NULL, NULL);
        }
        if (rc) {
            fprintf(stderr, "bench_placement: %s: %s\n", spec,
                    ctx ? jopt_errmsg(ctx) : "out of memory");
        } else {
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                double t = b_now();
                jopt_step(opt, NULL, NULL, NULL);
                t = b_now() - t;
                best = t < best ? t : best;
            }
            printf("%-20s %12.2f %12.1f\n", spec, best * 1e3,
                   b_pattern_bytes(&pat) * (double)n / best * 1e-9);
        }
        jopt_optim_free(opt);
        jopt_spec_free(sp);
        jopt_ctx_free(ctx);
        free(p);
        free(g);
        if (rc)
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int64_t n = 16 << 20;
    int reps = 10, threads = 1, nlay = 0; /* the OFFSETS, moved to argv[1..] */
    const char *step = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--step") && i + 1 < argc) {
            step = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            char *end;
            n = strtoll(argv[++i], &end, 10);
            if (n < 0 || n > ((int64_t)1 << 36)) /* before the shift */
                n = 0;
            n <<= *end == 'M' ? 20 : *end == 'K' ? 10 : 0;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: bench_placement [--size N[K|M]] [--reps R] "
                            "[OFFSETS ...]\n"
                            "       bench_placement --step SPEC[,SPEC...] [--size N[K|M]] "
                            "[--reps R] [--threads T]\n");
            return 2;
        } else {
            argv[1 + nlay++] = argv[i]; /* i >= 1 + nlay: already read */
        }
    }
    if (n < 1024 || reps < 1 || threads < 1) {
        fprintf(stderr, "bench_placement: --size at least 1K, --reps and --threads "
                        "at least 1\n");
        return 2;
    }
    if (step)
        return time_steps(step, n, reps, threads);
    const char **layouts = nlay ? (const char **)argv + 1 : defaults;
    if (!nlay)
        nlay = (int)(sizeof defaults / sizeof *defaults);

    size_t slot = (size_t)n * sizeof(float) + ((size_t)1 << 20); /* 1 MiB room */
    size_t total = NARR * slot;
    char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    if (base == MAP_FAILED) {
        perror("bench_placement: mmap");
        return 1;
    }
    memset(base, 0, total);
    /* p g m v | p g hessian m h */
    b_pattern adam = pattern(4, 0xF, 0xD), sophia = pattern(5, 0x1F, 0x19);
    printf("bench_placement: %lld floats per array, fastest of %d passes\n",
           (long long)n, reps);
    printf("%-24s %12s %12s\n", "offsets (KiB)", "adam GB/s", "sophia GB/s");
    for (int l = 0; l < nlay; l++) {
        /* five offsets, none below the one before: array k then starts
         * after array k - 1 ends, in the slot's 1 MiB of room */
        long off[NARR] = {0};
        const char *s = layouts[l];
        int got = 0;
        for (; got < NARR && *s; got++) {
            char *end;
            off[got] = strtol(s, &end, 10);
            if (end == s || off[got] < (got ? off[got - 1] : 0) || off[got] >= 1024)
                break;
            s = *end == ',' ? end + 1 : end;
        }
        if (got < NARR || *s) {
            fprintf(stderr, "bench_placement: '%s': five offsets in KiB, in [0, 1024), "
                            "each at least the one before\n", layouts[l]);
            return 2;
        }
        float *arr[NARR];
        for (int k = 0; k < NARR; k++)
            arr[k] = (float *)(void *)(base + (size_t)k * (size_t)n * sizeof(float) +
                                       (size_t)off[k] * 1024);
        double ta = fastest(&adam, arr, n, reps), ts = fastest(&sophia, arr, n, reps);
        printf("%-24s %12.1f %12.1f\n", layouts[l],
               b_pattern_bytes(&adam) * (double)n / ta * 1e-9,
               b_pattern_bytes(&sophia) * (double)n / ts * 1e-9);
    }
    munmap(base, total);
    return 0;
}
