/*
 * options.c - the options string and the hyperparameter codec.
 *
 *   "lr=1e-3 betas=(0.9, 0.999) amsgrad=true milestones=[30,80]"
 *     --cg_opt_next--> items: a name and the text of its values
 *     --codec of the hyperparameter's kind--> a value vector
 *
 * One tokenizer serves optimizers and schedulers (sched_opts.c), so a tuple
 * is written the same way everywhere: "a,b", "(a, b)" or "[a, b]".  The
 * codec holds, per kind of hyperparameter, how a value is read from text,
 * what values are valid, how the spec sees it (cg_hyper_push, for spec.c)
 * and how it is printed; nothing else interprets a value vector's kinds.
 */
#include <ctype.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"

/* ---- the tokenizer --------------------------------------------------------- */

int cg_opt_next(const char **cursor, cg_opt_item *it, char *err)
{
    const char *c = *cursor;
    while (isspace((unsigned char)*c))
        c++;
    if (!*c) {
        *cursor = c;
        return 0;
    }
    memset(it, 0, sizeof *it);
    size_t k = 0;
    int too_long = 0;
    for (; *c && *c != '=' && !isspace((unsigned char)*c); c++)
        if (k + 1 < sizeof it->name)
            it->name[k++] = *c;
        else
            too_long = 1;
    it->name[k] = 0;
    if (too_long)
        return cg_fail(err, JOPT_EINVAL, "option name '%s...' is too long",
                       it->name);
    if (*c != '=')
        return cg_fail(err, JOPT_EINVAL, "option '%s' has no value (write "
                       "%s=VALUE)", it->name, it->name);
    c++;
    /* the value: up to white space, or a list in ( ) or [ ], where white
     * space is allowed and dropped */
    char close = *c == '(' ? ')' : *c == '[' ? ']' : 0;
    if (close)
        c++;
    k = 0;
    for (; *c && (close ? *c != close : !isspace((unsigned char)*c)); c++) {
        if (isspace((unsigned char)*c))
            continue;
        if (k + 1 < sizeof it->text)
            it->text[k++] = *c == ',' ? '\0' : *c;
        else
            too_long = 1;
    }
    it->text[k] = 0;
    if (close && *c++ != close)
        return cg_fail(err, JOPT_EINVAL, "option '%s': missing '%c'", it->name,
                       close);
    if (too_long)
        return cg_fail(err, JOPT_EINVAL, "option '%s': value is too long",
                       it->name);
    /* the values: k bytes with NULs between them */
    it->val[it->nval++] = it->text;
    for (size_t i = 0; i < k; i++)
        if (it->text[i] == '\0') {
            if (it->nval == CG_OPT_MAXVALS)
                return cg_fail(err, JOPT_EINVAL, "option '%s': more than %d "
                               "values", it->name, CG_OPT_MAXVALS);
            it->val[it->nval++] = it->text + i + 1;
        }
    *cursor = c;
    return 1;
}

/* ---- the codec, by kind ---------------------------------------------------- */

static int read_bool(const cg_hyper *h, const char *s, double *v, char *err)
{
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "1"))
        *v = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "0"))
        *v = 0;
    else
        return cg_fail(err, JOPT_EINVAL, "option '%s': cannot read '%s' as a "
                       "boolean (true or false)", h->name, s);
    return JOPT_OK;
}

static void choice_names(const cg_hyper *h, char *buf, size_t cap)
{
    buf[0] = 0;
    for (int k = 0; k < h->nchoices; k++) {
        size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", k ? ", " : "", h->choices[k]);
    }
}

static int read_choice(const cg_hyper *h, const char *s, double *v, char *err)
{
    for (int k = 0; k < h->nchoices; k++)
        if (!strcmp(s, h->choices[k]) ||
            (!strcmp(h->choices[k], "none") && !strcmp(s, "None"))) {
            *v = k;
            return JOPT_OK;
        }
    char names[512];
    choice_names(h, names, sizeof names);
    return cg_fail(err, JOPT_EINVAL, "option '%s': '%s' is not one of %s",
                   h->name, s, names);
}

static int read_number(const cg_hyper *h, const char *s, double *v, char *err)
{
    if (h->optional && (!strcmp(s, "None") || !strcmp(s, "none"))) {
        *v = NAN; /* torch's None: the method derives the value */
        return JOPT_OK;
    }
    char *end;
    *v = strtod(s, &end);
    /* "nan" and "inf" (and "1e400", which is inf) read here; the spec's
     * check then refuses them in torch's words where torch does, and
     * cg_hyper_check refuses the rest.  NaN is None for an optional
     * number, so there None is written None. */
    if (end == s || *end != 0 || (h->optional && isnan(*v)))
        return cg_fail(err, JOPT_EINVAL, "option '%s': cannot read '%s' as %s",
                       h->name, s, h->optional ? "a number or None" : "a number");
    return JOPT_OK;
}

static int read_value(const cg_hyper *h, const char *s, double *v, char *err)
{
    switch (h->kind) {
    case CG_HYPER_BOOL: return read_bool(h, s, v, err);
    case CG_HYPER_CHOICE: return read_choice(h, s, v, err);
    case CG_HYPER_NUMBER: break;
    }
    return read_number(h, s, v, err);
}

int cg_hyper_check(const cg_hyper *h, double v, const char *where, char *err)
{
    switch (h->kind) {
    case CG_HYPER_BOOL:
        if (v != 0 && v != 1)
            return cg_fail(err, JOPT_EINVAL, "%s: option '%s' is a boolean: "
                           "give 0 or 1, not %g", where, h->name, v);
        break;
    case CG_HYPER_CHOICE:
        if (!(v >= 0 && v < h->nchoices && v == (int)v))
            return cg_fail(err, JOPT_EINVAL, "%s: option '%s' is a choice: give "
                           "the index of one of its %d names, not %g", where,
                           h->name, h->nchoices, v);
        break;
    case CG_HYPER_NUMBER:
        if (isnan(v) && !h->optional)
            return cg_fail(err, JOPT_EINVAL, "%s: option '%s' must be a "
                           "number, not NaN", where, h->name);
        if (isinf(v) && !h->infinite)
            return cg_fail(err, JOPT_EINVAL, "%s: option '%s' must be finite, "
                           "not %g", where, h->name, v);
        break;
    }
    return JOPT_OK;
}

void cg_format_number(double v, char *buf, size_t cap)
{
    if (v == floor(v) && fabs(v) < 1e15) { /* 50, not 5e+01 */
        snprintf(buf, cap, "%.0f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        if (strtod(buf, NULL) == v || isnan(v))
            return;
    }
}

void cg_hyper_format(const cg_hyper *h, const double *v, char *buf, size_t cap)
{
    buf[0] = 0;
    for (int k = 0; k < h->len; k++) {
        size_t l = strlen(buf);
        char one[64];
        if (h->kind == CG_HYPER_BOOL)
            snprintf(one, sizeof one, "%s", v[k] != 0 ? "true" : "false");
        else if (h->kind == CG_HYPER_CHOICE)
            snprintf(one, sizeof one, "%s",
                     v[k] >= 0 && v[k] < h->nchoices ? h->choices[(int)v[k]] : "?");
        else if (h->optional && isnan(v[k]))
            snprintf(one, sizeof one, "None");
        else
            cg_format_number(v[k], one, sizeof one);
        snprintf(buf + l, cap - l, "%s%s", k ? "," : "", one);
    }
}

void cg_hyper_push(lua_State *L, const cg_hyper *h, double v)
{
    switch (h->kind) {
    case CG_HYPER_BOOL:
        lua_pushboolean(L, v != 0);
        return;
    case CG_HYPER_CHOICE: /* values were checked */
        lua_pushstring(L, h->choices[v >= 0 && v < h->nchoices ? (int)v : 0]);
        return;
    case CG_HYPER_NUMBER:
        break;
    }
    if (h->optional && isnan(v))
        cg_sb_push_none(L);
    else if (h->integer && !h->tuple && fabs(v) < 9e15 &&
             v == (double)(lua_Integer)v)
        lua_pushinteger(L, (lua_Integer)v);
    else
        lua_pushnumber(L, v);
}

/* ---- options strings ------------------------------------------------------- */

static int unknown(const cg_spec *spec, const char *name, char *err)
{
    char known[512] = "";
    for (size_t i = 0; i < cg_spec_nhyper(spec); i++) {
        size_t l = strlen(known);
        snprintf(known + l, sizeof known - l, "%s%s", i ? ", " : "",
                 cg_spec_hyper(spec, i)->name);
    }
    return cg_fail(err, JOPT_EINVAL, "unknown option '%s' for spec '%s' "
                   "(known: %s)", name, cg_spec_name(spec), known);
}

int cg_options_parse(const cg_spec *spec, const char *text, double *values,
                     char *err)
{
    return cg_options_parse_skip(spec, text, values, NULL, err);
}

static int skipped(const char *const *skip, const char *name)
{
    for (; skip && *skip; skip++)
        if (!strcmp(*skip, name))
            return 1;
    return 0;
}

const char *const cg_prec_options[] = {"dtype", "grad_dtype", "state_dtype",
                                       "stochastic_rounding", "seed", NULL};

int cg_options_parse_skip(const cg_spec *spec, const char *text, double *values,
                          const char *const *skip, char *err)
{
    if (!text)
        return JOPT_OK;
    size_t nv = cg_spec_nvalues(spec);
    double *v = cg_malloc((nv + 1) * sizeof *v);
    unsigned char *seen = cg_calloc(cg_spec_nhyper(spec) + 1, 1);
    cg_opt_item *it = cg_malloc(sizeof *it);
    int rc = JOPT_OK;
    if (!v || !seen || !it) {
        rc = cg_fail(err, JOPT_ENOMEM, "out of memory");
        goto done;
    }
    memcpy(v, values, nv * sizeof *v);
    for (const char *c = text; (rc = cg_opt_next(&c, it, err)) == 1;) {
        if (skipped(skip, it->name))
            continue;
        const cg_hyper *h = cg_spec_find_hyper(spec, it->name);
        if (!h) {
            rc = unknown(spec, it->name, err);
            goto done;
        }
        if (seen[h - cg_spec_hyper(spec, 0)]++) {
            rc = cg_fail(err, JOPT_EINVAL, "option '%s' given twice", it->name);
            goto done;
        }
        if (it->nval != h->len) {
            rc = cg_fail(err, JOPT_EINVAL, "option '%s' takes %d value%s, got "
                         "%d", it->name, h->len, h->len > 1 ? "s" : "", it->nval);
            goto done;
        }
        for (int k = 0; k < h->len; k++)
            if ((rc = read_value(h, it->val[k], &v[h->offset + k], err)))
                goto done;
    }
    if (rc == JOPT_OK)
        memcpy(values, v, nv * sizeof *v);
done:
    cg_free(v);
    cg_free(seen);
    cg_free(it);
    return rc;
}

int cg_option_offset(const cg_spec *spec, const char *name,
                     const cg_hyper **hyper, char *err)
{
    char base[CG_OPT_NAME];
    const char *br = strchr(name, '[');
    size_t bl = br ? (size_t)(br - name) : strlen(name);
    if (bl >= sizeof base) {
        cg_fail(err, JOPT_EINVAL, "option name '%.40s...' is too long", name);
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
            cg_fail(err, JOPT_EINVAL, "option '%s': index out of range (%s has "
                    "%d value%s, indexed from 0)", name, base, h->len,
                    h->len > 1 ? "s" : "");
            return -1;
        }
    } else if (h->len > 1) {
        cg_fail(err, JOPT_EINVAL, "option '%s' is a tuple of %d: name one "
                "element, as %s[0]", name, h->len, name);
        return -1;
    }
    *hyper = h;
    return h->offset + (int)idx;
}
