/*
 * report.c - what bench_optim prints and writes: one table per optimizer
 * (medians, spread, GB/s and the share of the memory-only roof), a CSV with
 * every row, and a hand-written SVG of throughput against size with the
 * memory-only line (one panel per optimizer).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

b_row *b_results_add(b_results *r)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 256;
        b_row *rows = realloc(r->rows, cap * sizeof *rows);
        if (!rows)
            return NULL;
        r->rows = rows;
        r->cap = cap;
    }
    b_row *row = &r->rows[r->n++];
    memset(row, 0, sizeof *row);
    return row;
}

void b_results_free(b_results *r)
{
    free(r->rows);
    memset(r, 0, sizeof *r);
}

const char *b_fmt_time(double s, char *buf, size_t len)
{
    if (s < 1e-3)
        snprintf(buf, len, "%.1f us", s * 1e6);
    else if (s < 1)
        snprintf(buf, len, "%.2f ms", s * 1e3);
    else
        snprintf(buf, len, "%.2f s", s);
    return buf;
}

static double gbps(const b_row *r) { return r->med > 0 ? r->bytes / r->med * 1e-9 : 0; }

int b_write_csv(const b_results *r, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "optimizer,case,numel,ntensors,threads,impl,reps,inner,median_s,"
               "min_s,max_s,bytes_per_step,gbps,elems_per_s,roof_s,roof_share,note\n");
    for (size_t i = 0; i < r->n; i++) {
        const b_row *x = &r->rows[i];
        fprintf(f, "\"%s\",%s,%lld,%d,%d,%s,%d,%d,%.9g,%.9g,%.9g,%.0f,%.4g,%.4g,%.9g,%.4g,\"%s\"\n",
                x->optimizer, x->casename, (long long)x->numel, x->ntensors,
                x->threads, x->impl, x->reps, x->inner, x->med, x->min, x->max,
                x->bytes, gbps(x), x->med > 0 ? (double)x->numel / x->med : 0,
                x->roof, x->roof > 0 && x->med > 0 ? x->roof / x->med : 0,
                x->note);
    }
    return fclose(f) ? -1 : 0;
}

/* ---- tables ---------------------------------------------------------------- */

static const b_row *find(const b_results *r, const char *opt, const char *cs,
                         int threads, const char *impl)
{
    for (size_t i = 0; i < r->n; i++) {
        const b_row *x = &r->rows[i];
        if (!strcmp(x->optimizer, opt) && !strcmp(x->casename, cs) &&
            x->threads == threads && !strcmp(x->impl, impl))
            return x;
    }
    return NULL;
}

/* "12.3 (93%)" or "-" */
static const char *cell(const b_row *x, char *buf, size_t len)
{
    if (!x || x->med <= 0)
        snprintf(buf, len, "-");
    else if (x->roof > 0)
        snprintf(buf, len, "%.1f (%3.0f%%)", gbps(x), 100 * x->roof / x->med);
    else
        snprintf(buf, len, "%.1f", gbps(x));
    return buf;
}

static int seen_before(const b_results *r, size_t i, int by_case)
{
    for (size_t j = 0; j < i; j++)
        if (!strcmp(r->rows[j].optimizer, r->rows[i].optimizer) &&
            (!by_case || !strcmp(r->rows[j].casename, r->rows[i].casename)))
            return 1;
    return 0;
}

void b_print_tables(const b_results *r, FILE *out)
{
    for (size_t i = 0; i < r->n; i++) {
        const b_row *o = &r->rows[i], *m = NULL;
        if (seen_before(r, i, 0))
            continue;
        for (size_t j = i; j < r->n && !m; j++)
            if (!strcmp(r->rows[j].optimizer, o->optimizer) &&
                !strcmp(r->rows[j].impl, "membw"))
                m = &r->rows[j];
        if (!m)
            continue;
        fprintf(out, "\n%s  (pattern %s, %.0f B/element; GB/s counts those bytes; "
                     "(%%) = share of the memory-only roof)\n",
                o->optimizer, m->note, m->bytes / (double)m->numel);
        fprintf(out, "%-15s %3s %8s | %-11s %-8s %-12s | %-12s %-12s %-12s | %8s %8s\n",
                "case", "thr", "roof", "jit time", "spread", "jit GB/s", "hand GB/s",
                "unfused", "reference", "jit/unf", "jit/hand");
        for (size_t j = i; j < r->n; j++) {
            const b_row *c = &r->rows[j];
            if (strcmp(c->optimizer, o->optimizer) || seen_before(r, j, 1))
                continue;
            for (int t = 1; t <= 2; t++) {
                const b_row *mem = find(r, o->optimizer, c->casename, t, "membw");
                const b_row *jit = find(r, o->optimizer, c->casename, t, "jit");
                const b_row *hand = find(r, o->optimizer, c->casename, t, "hand");
                const b_row *unf = find(r, o->optimizer, c->casename, t, "unfused");
                const b_row *ref = find(r, o->optimizer, c->casename, t, "reference");
                if (!jit)
                    continue;
                char tb[32], sp[32], a[32], b[32], d[32], e[32], u[16], h[16];
                snprintf(sp, sizeof sp, "-%.0f/+%.0f%%", 100 * (1 - jit->min / jit->med),
                         100 * (jit->max / jit->med - 1));
                snprintf(u, sizeof u, "%s", unf ? "" : "-");
                if (unf)
                    snprintf(u, sizeof u, "%.1fx", unf->med / jit->med);
                snprintf(h, sizeof h, "%s", hand ? "" : "-");
                if (hand)
                    snprintf(h, sizeof h, "%.2fx", hand->med / jit->med);
                char roof[16] = "-";
                if (jit->roof > 0)
                    snprintf(roof, sizeof roof, "%.1f", jit->bytes / jit->roof * 1e-9);
                fprintf(out, "%-15s %3d %8s | %-11s %-8s %-12s | %-12s %-12s %-12s | %8s %8s\n",
                        c->casename, t, roof, b_fmt_time(jit->med, tb, sizeof tb), sp,
                        cell(jit, a, sizeof a), cell(hand, b, sizeof b),
                        cell(unf, d, sizeof d), cell(ref, e, sizeof e), u, h);
                (void)mem;
            }
        }
    }
}

/* ---- SVG -------------------------------------------------------------------- */

typedef struct series {
    const char *impl;
    int threads;
    const char *color;
    const char *dash;
    double width;
    const char *label;
} series;

static const series all_series[] = {
    {"membw", 1, "#888888", "6,4", 1.5, "memory-only, 1 thread"},
    {"membw", 2, "#000000", "6,4", 1.5, "memory-only, 2 threads"},
    {"jit", 1, "#4a90d9", "", 2.0, "jopt JIT, 1 thread"},
    {"jit", 2, "#0b3d91", "", 2.5, "jopt JIT, 2 threads"},
    {"hand", 1, "#2ca02c", "", 1.5, "hand-written fused, 1 thread"},
    {"unfused", 1, "#ff7f0e", "", 1.5, "unfused (op per loop), 1 thread"},
    {"reference", 1, "#d62728", "", 1.5, "reference interpreter, 1 thread"},
};
#define NSERIES (sizeof all_series / sizeof all_series[0])

int b_write_svg(const b_results *r, const char *path, const char *title)
{
    const char *opts[32];
    int nopt = 0;
    for (size_t i = 0; i < r->n && nopt < 32; i++)
        if (!strcmp(r->rows[i].impl, "membw")) {
            int dup = 0;
            for (int k = 0; k < nopt; k++)
                dup |= !strcmp(opts[k], r->rows[i].optimizer);
            if (!dup)
                opts[nopt++] = r->rows[i].optimizer;
        }
    if (!nopt)
        return -1;
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const int pw = 420, ph = 280, cols = 2, ml = 55, mt = 30, mb = 40, mr = 15;
    int rows = (nopt + cols - 1) / cols, top = 70;
    int W = cols * (pw + ml + mr) + 20, H = top + rows * (ph + mt + mb) + 40;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">%s</text>\n",
            title);
    /* legend */
    for (size_t s = 0; s < NSERIES; s++) {
        int lx = 10 + (int)(s % 4) * 230, ly = 38 + (int)(s / 4) * 16;
        fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" "
                   "stroke-width=\"%.1f\" stroke-dasharray=\"%s\"/>"
                   "<text x=\"%d\" y=\"%d\">%s</text>\n",
                lx, ly, lx + 24, ly, all_series[s].color, all_series[s].width,
                all_series[s].dash, lx + 30, ly + 4, all_series[s].label);
    }
    const double x0 = 12, x1 = 26; /* log2 of 4K and 64M */
    for (int k = 0; k < nopt; k++) {
        int ox = 10 + (k % cols) * (pw + ml + mr) + ml;
        int oy = top + (k / cols) * (ph + mt + mb) + mt;
        double ymax = 1;
        for (size_t i = 0; i < r->n; i++) {
            const b_row *x = &r->rows[i];
            if (!strcmp(x->optimizer, opts[k]) && x->med > 0 &&
                x->bytes / x->med * 1e-9 > ymax)
                ymax = x->bytes / x->med * 1e-9;
        }
        double step = ymax > 200 ? 50 : ymax > 100 ? 20 : ymax > 40 ? 10 : ymax > 20 ? 5 : 2;
        ymax = ceil(ymax * 1.05 / step) * step;
        fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"12\" font-weight=\"bold\">%s</text>\n",
                ox, oy - 8, opts[k]);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                   "stroke=\"#444\"/>\n", ox, oy, pw, ph);
        for (double y = 0; y <= ymax + 1e-9; y += step) {
            double py = oy + ph - y / ymax * ph;
            fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                       "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                    ox, py, ox + pw, py, ox - 4, py + 4, y);
        }
        for (int e = 12; e <= 26; e += 2) {
            double px = ox + (e - x0) / (x1 - x0) * pw;
            const char *lab[] = {"4K", "16K", "64K", "256K", "1M", "4M", "16M", "64M"};
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#eee\"/>"
                       "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                    px, oy, px, oy + ph, px, oy + ph + 14, lab[(e - 12) / 2]);
        }
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">elements "
                   "(triangles: ResNet-50's 161 tensors; squares: one tensor of "
                   "the same size)</text>\n", ox + pw / 2, oy + ph + 30);
        fprintf(f, "<text transform=\"translate(%d,%d) rotate(-90)\" "
                   "text-anchor=\"middle\">GB/s (pattern bytes)</text>\n",
                ox - 40, oy + ph / 2);
        for (size_t s = 0; s < NSERIES; s++) {
            const series *se = &all_series[s];
            /* pass 0: the line over the sizes; pass 1: the model's markers */
            for (int pass = 0; pass < 2; pass++) {
                int started = 0;
                for (size_t i = 0; i < r->n; i++) {
                    const b_row *x = &r->rows[i];
                    if (strcmp(x->optimizer, opts[k]) || strcmp(x->impl, se->impl) ||
                        x->threads != se->threads || x->med <= 0 ||
                        (strncmp(x->casename, "n=", 2) != 0) != pass)
                        continue;
                    double lx = log2((double)x->numel);
                    if (lx < x0 - 0.01 || lx > x1 + 0.01)
                        continue;
                    double px = ox + (lx - x0) / (x1 - x0) * pw;
                    double py = oy + ph - x->bytes / x->med * 1e-9 / ymax * ph;
                    if (pass == 1) {
                        if (!strcmp(x->casename, "resnet50"))
                            fprintf(f, "<path d=\"M%.1f,%.1f l5,8 l-10,0 z\" fill=\"%s\"/>\n",
                                    px, py - 5, se->color);
                        else
                            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" "
                                       "fill=\"none\" stroke=\"%s\"/>\n",
                                    px - 3.5, py - 3.5, se->color);
                        continue;
                    }
                    if (!started)
                        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" "
                                   "stroke-width=\"%.1f\" stroke-dasharray=\"%s\" points=\"",
                                se->color, se->width, se->dash);
                    fprintf(f, "%.1f,%.1f ", px, py);
                    started = 1;
                }
                if (started)
                    fprintf(f, "\"/>\n");
            }
        }
    }
    fprintf(f, "</svg>\n");
    return fclose(f) ? -1 : 0;
}
