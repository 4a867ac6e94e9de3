/*
 * options.c - the options string: "lr=1e-3 betas=0.9,0.999 amsgrad=true".
 *
 * Items are separated by white space; a tuple's values by commas, optionally
 * in parentheses ("betas=(0.9, 0.999)"); booleans are true/false (or
 * True/False, 1/0).  Parsing overlays a copy and only then the caller's
 * vector, so a bad string changes nothing.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

#define MAX_TUPLE 8

static void known_names(const cg_spec *spec, char *buf, size_t len)
{
    buf[0] = 0;
    for (size_t i = 0; i < cg_spec_nhyper(spec); i++) {
        size_t l = strlen(buf);
        snprintf(buf + l, len - l, "%s%s", i ? ", " : "", cg_spec_hyper(spec, i)->name);
    }
}

static int unknown(const cg_spec *spec, const char *name, char *err)
{
    char known[512];
    known_names(spec, known, sizeof known);
    snprintf(err, CG_ERRLEN, "unknown option '%s' for spec '%s' (known: %s)",
             name, cg_spec_name(spec), known);
    return JOPT_EINVAL;
}

static int parse_value(const cg_hyper *h, const char *s, double *v, char *err)
{
    if (h->kind == CG_HYPER_BOOL) {
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "1"))
            *v = 1;
        else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "0"))
            *v = 0;
        else
            goto bad;
        return JOPT_OK;
    }
    if (h->kind == CG_HYPER_CHOICE) {
        char names[512] = "";
        for (int k = 0; k < h->nchoices; k++) {
            if (!strcmp(s, h->choices[k]) ||
                (!strcmp(h->choices[k], "none") && !strcmp(s, "None"))) {
                *v = k;
                return JOPT_OK;
            }
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", k ? ", " : "",
                     h->choices[k]);
        }
        snprintf(err, CG_ERRLEN, "option '%s': '%s' is not one of %s", h->name,
                 s, names);
        return JOPT_EINVAL;
    }
    if (h->optional && (!strcmp(s, "None") || !strcmp(s, "none"))) {
        *v = NAN; /* torch's None: the method derives the value */
        return JOPT_OK;
    }
    char *end;
    *v = strtod(s, &end);
    if (end != s && *end == 0)
        return JOPT_OK;
bad:
    snprintf(err, CG_ERRLEN, "option '%s': cannot read '%s' as %s", h->name, s,
             h->kind == CG_HYPER_BOOL ? "a boolean (true or false)"
             : h->optional            ? "a number or None"
                                      : "a number");
    return JOPT_EINVAL;
}

/* value text: up to white space, or a parenthesised list; *too_long is
 * set when it does not fit in buf */
static const char *scan_value(const char *c, char *buf, size_t len,
                              int *too_long)
{
    size_t k = 0;
    int paren = *c == '(';
    *too_long = 0;
    if (paren)
        c++;
    while (*c && (paren ? *c != ')' : !isspace((unsigned char)*c))) {
        if (!isspace((unsigned char)*c)) {
            if (k + 1 < len)
                buf[k++] = *c;
            else
                *too_long = 1;
        }
        c++;
    }
    buf[k] = 0;
    if (paren) {
        if (*c != ')')
            return NULL;
        c++;
    }
    return c;
}

int rt_options_parse(const cg_spec *spec, const char *text, double *values,
                     char *err)
{
    if (!text)
        return JOPT_OK;
    size_t nv = cg_spec_nvalues(spec);
    double *v = malloc((nv + 1) * sizeof *v);
    unsigned char *seen = calloc(cg_spec_nhyper(spec) + 1, 1);
    int rc = JOPT_OK;
    if (!v || !seen) {
        rc = JOPT_ENOMEM;
        snprintf(err, CG_ERRLEN, "out of memory");
        goto done;
    }
    memcpy(v, values, nv * sizeof *v);
    for (const char *c = text;;) {
        while (isspace((unsigned char)*c))
            c++;
        if (!*c)
            break;
        char name[64], val[256];
        size_t k = 0;
        int too_long = 0;
        while (*c && *c != '=' && !isspace((unsigned char)*c))
            if (k + 1 < sizeof name)
                name[k++] = *c++;
            else
                too_long = 1, c++;
        name[k] = 0;
        if (too_long) {
            snprintf(err, CG_ERRLEN, "option name '%s...' is too long", name);
            rc = JOPT_EINVAL;
            goto done;
        }
        if (*c != '=') {
            snprintf(err, CG_ERRLEN, "option '%s' has no value (write %s=VALUE)",
                     name, name);
            rc = JOPT_EINVAL;
            goto done;
        }
        c = scan_value(c + 1, val, sizeof val, &too_long);
        if (!c || too_long) {
            snprintf(err, CG_ERRLEN, "option '%s': %s", name,
                     c ? "value is too long" : "missing ')'");
            rc = JOPT_EINVAL;
            goto done;
        }
        const cg_hyper *h = cg_spec_find_hyper(spec, name);
        if (!h) {
            rc = unknown(spec, name, err);
            goto done;
        }
        size_t hi = (size_t)(h - cg_spec_hyper(spec, 0));
        if (seen[hi]++) {
            snprintf(err, CG_ERRLEN, "option '%s' given twice", name);
            rc = JOPT_EINVAL;
            goto done;
        }
        int n = 0;
        for (char *item = val, *next; item; item = next, n++) {
            next = strchr(item, ',');
            if (next)
                *next++ = 0;
            if (n >= h->len) {
                n++;
                break;
            }
            if ((rc = parse_value(h, item, &v[h->offset + n], err)))
                goto done;
        }
        if (n != h->len) {
            snprintf(err, CG_ERRLEN, "option '%s' takes %d value%s, got %d%s",
                     name, h->len, h->len > 1 ? "s" : "", n,
                     n > h->len ? " or more" : "");
            rc = JOPT_EINVAL;
            goto done;
        }
    }
    memcpy(values, v, nv * sizeof *v);
done:
    free(v);
    free(seen);
    return rc;
}

int rt_option_offset(const cg_spec *spec, const char *name,
                     const cg_hyper **hyper, char *err)
{
    char base[64];
    const char *br = strchr(name, '[');
    size_t bl = br ? (size_t)(br - name) : strlen(name);
    if (bl >= sizeof base) {
        snprintf(err, CG_ERRLEN, "option name '%.40s...' is too long", name);
        return -1;
    }
    memcpy(base, name, bl);
    base[bl] = 0;
    const cg_hyper *h = cg_spec_find_hyper(spec, base);
    if (!h)
        return unknown(spec, base, err), -1;
    long idx = 0;
    if (br) {
        char *end;
        idx = strtol(br + 1, &end, 10);
        if (end == br + 1 || strcmp(end, "]") != 0 || idx < 0 || idx >= h->len) {
            snprintf(err, CG_ERRLEN, "option '%s': index out of range (%s has "
                     "%d value%s, indexed from 0)", name, base, h->len,
                     h->len > 1 ? "s" : "");
            return -1;
        }
    } else if (h->len > 1) {
        snprintf(err, CG_ERRLEN, "option '%s' is a tuple of %d: name one "
                 "element, as %s[0]", name, h->len, name);
        return -1;
    }
    *hyper = h;
    return h->offset + (int)idx;
}
