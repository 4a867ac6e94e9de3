/*
 * spec.c - finding, reading and checking spec files.
 *
 * A spec is read once in a sandbox to learn its hyperparameter schema
 * (names sorted, so the layout never depends on pairs() order), its state
 * names and its doc line; the Lua state is then closed.  Every later use
 * (check, trace) runs the text again in a fresh sandbox.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sandbox.h"

#define MAX_SPEC_BYTES (1u << 20)
#define MAX_HYPER 256

struct cg_spec {
    char *name, *path, *doc, *src;
    size_t srclen;
    cg_hyper *hyper;
    size_t nhyper;
    double *defaults;
    size_t nvalues;
    char **state;
    size_t nstate;
    char *method;          /* NULL: an update spec */
    cg_vkernel_sig *vk;    /* sorted by name */
    size_t nvk;
    char **named;          /* an update spec's named kernels, sorted */
    size_t nnamed;
    char **inputs;         /* per-element inputs, in the spec's order */
    size_t ninputs;
    int group_steps;       /* steps = "group": t counts the group's steps */
    int shape_check;       /* has check_shape(size) */
    sandbox *checker; /* kept between cg_spec_check calls, or NULL */
};

static void checker_close(cg_spec *s)
{
    if (s->checker) {
        cg_sb_close(s->checker);
        cg_free(s->checker);
        s->checker = NULL;
    }
}

void cg_spec_free(cg_spec *s)
{
    if (!s)
        return;
    checker_close(s);
    for (size_t i = 0; i < s->nhyper; i++) {
        cg_free((char *)s->hyper[i].name);
        for (int k = 0; k < s->hyper[i].nchoices; k++)
            cg_free((char *)s->hyper[i].choices[k]);
        cg_free((void *)s->hyper[i].choices);
    }
    for (size_t i = 0; i < s->nvk; i++) {
        cg_free((char *)s->vk[i].name);
        for (int k = 0; k < s->vk[i].narrays; k++)
            cg_free((char *)s->vk[i].arrays[k]);
        cg_free((void *)s->vk[i].arrays);
        for (int k = 0; k < s->vk[i].nscalars; k++)
            cg_free((char *)s->vk[i].scalars[k]);
        cg_free((void *)s->vk[i].scalars);
    }
    cg_free(s->vk);
    cg_free(s->method);
    for (size_t i = 0; i < s->nnamed; i++)
        cg_free(s->named[i]);
    cg_free(s->named);
    for (size_t i = 0; i < s->ninputs; i++)
        cg_free(s->inputs[i]);
    cg_free(s->inputs);
    for (size_t i = 0; i < s->nstate; i++)
        cg_free(s->state[i]);
    cg_free(s->hyper);
    cg_free(s->state);
    cg_free(s->defaults);
    cg_free(s->name);
    cg_free(s->path);
    cg_free(s->doc);
    cg_free(s->src);
    cg_free(s);
}

const char *cg_spec_name(const cg_spec *s) { return s->name; }
const char *cg_spec_path(const cg_spec *s) { return s->path; }
const char *cg_spec_doc(const cg_spec *s) { return s->doc ? s->doc : ""; }
size_t cg_spec_nhyper(const cg_spec *s) { return s->nhyper; }
const cg_hyper *cg_spec_hyper(const cg_spec *s, size_t i) { return &s->hyper[i]; }
size_t cg_spec_nvalues(const cg_spec *s) { return s->nvalues; }
const double *cg_spec_defaults(const cg_spec *s) { return s->defaults; }
size_t cg_spec_nstate(const cg_spec *s) { return s->nstate; }
const char *cg_spec_state_name(const cg_spec *s, size_t i) { return s->state[i]; }

const char *cg_spec_method(const cg_spec *s) { return s->method; }
size_t cg_spec_nnamed(const cg_spec *s) { return s->nnamed; }
const char *cg_spec_named(const cg_spec *s, size_t i) { return s->named[i]; }
size_t cg_spec_ninputs(const cg_spec *s) { return s->ninputs; }
const char *cg_spec_input(const cg_spec *s, size_t i) { return s->inputs[i]; }
int cg_spec_group_steps(const cg_spec *s) { return s->group_steps; }
int cg_spec_has_shape_check(const cg_spec *s) { return s->shape_check; }

int cg_spec_find_named(const cg_spec *s, const char *name)
{
    for (size_t i = 0; i < s->nnamed; i++)
        if (!strcmp(s->named[i], name))
            return (int)i;
    return -1;
}
size_t cg_spec_nvkernels(const cg_spec *s) { return s->nvk; }
const cg_vkernel_sig *cg_spec_vkernel(const cg_spec *s, size_t i) { return &s->vk[i]; }

const cg_vkernel_sig *cg_spec_find_vkernel(const cg_spec *s, const char *name)
{
    for (size_t i = 0; i < s->nvk; i++)
        if (!strcmp(s->vk[i].name, name))
            return &s->vk[i];
    return NULL;
}

const char *cg_spec_text(const cg_spec *s, size_t *len)
{
    *len = s->srclen;
    return s->src;
}

const cg_hyper *cg_spec_find_hyper(const cg_spec *s, const char *name)
{
    for (size_t i = 0; i < s->nhyper; i++)
        if (strcmp(s->hyper[i].name, name) == 0)
            return &s->hyper[i];
    return NULL;
}

/* a Lua string at idx that is a whole C string: no NUL inside, which C
 * would read as its end ("lr\0x" as "lr") */
static const char *whole_string(lua_State *L, int idx)
{
    size_t len;
    const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tolstring(L, idx, &len)
                                                    : NULL;
    return s && strlen(s) == len ? s : NULL;
}

static int has_nul(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TSTRING && !whole_string(L, idx);
}

static int is_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'a' && *s <= 'z') ||
              (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

/* errno's, or NOT_REGULAR for a FIFO, a device, a socket */
#define NOT_REGULAR (-1)

static int read_file(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO: no wait */
    struct stat st;
    if (fd < 0)
        return errno ? errno : ENOENT;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int e = fstat(fd, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? EISDIR : NOT_REGULAR;
        close(fd);
        return e;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno ? errno : EIO;
        close(fd);
        return e;
    }
    char *buf = cg_malloc(MAX_SPEC_BYTES + 1);
    if (!buf) {
        fclose(f);
        return ENOMEM;
    }
    errno = 0;
    size_t n = fread(buf, 1, MAX_SPEC_BYTES + 1, f);
    int bad = ferror(f) ? (errno ? errno : EIO) : 0; /* EISDIR for a folder */
    fclose(f);
    if (bad || n > MAX_SPEC_BYTES) {
        cg_free(buf);
        return bad ? bad : EFBIG;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* Locates the file: a name in the search folders, or a path. */
static int find_spec(const char *const *dirs, size_t ndirs, const char *name,
                     char **path, char **src, size_t *len, char *err)
{
    size_t nl = strlen(name);
    int is_path = strchr(name, '/') || (nl > 4 && !strcmp(name + nl - 4, ".lua"));
    if (is_path) {
        int e = read_file(name, src, len);
        if (e)
            return cg_fail(err, e == ENOMEM ? JOPT_ENOMEM : JOPT_ESPEC,
                           "cannot read spec file '%s': %s", name,
                           e == NOT_REGULAR ? "not a regular file" : strerror(e));
        if (!(*path = cg_strdup(name))) {
            cg_free(*src);
            *src = NULL;
            return cg_fail(err, JOPT_ENOMEM, "spec file '%s': out of memory", name);
        }
        return JOPT_OK;
    }
    if (!is_name(name))
        return cg_fail(err, JOPT_ESPEC,
                       "invalid spec name '%s' (a name is letters, digits and "
                       "'_'; a path contains '/' or ends in .lua)", name);
    char tried[512] = "";
    for (size_t i = 0; i < ndirs; i++) {
        size_t need = strlen(dirs[i]) + nl + 6;
        char *p = cg_malloc(need);
        if (!p)
            return cg_fail(err, JOPT_ENOMEM, "out of memory");
        snprintf(p, need, "%s/%s.lua", dirs[i], name);
        int e = read_file(p, src, len);
        if (e == 0) {
            *path = p;
            return JOPT_OK;
        }
        cg_free(p);
        if (e == ENOMEM)
            return cg_fail(err, JOPT_ENOMEM, "spec '%s': out of memory", name);
        size_t tl = strlen(tried);
        snprintf(tried + tl, sizeof tried - tl, "%s%s", tl ? ", " : "", dirs[i]);
    }
    return cg_fail(err, JOPT_ESPEC, "unknown optimizer spec '%s' (looked in: %s)",
                   name, ndirs ? tried : "no folders");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the string keys of the table at -1, sorted. */
static int sorted_keys(lua_State *L, char ***out, size_t *n, const char *what,
                       const char *path, char *err)
{
    size_t cap = 0, k = 0;
    char **keys = NULL;
    int nul = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        if (!whole_string(L, -1) || !is_name(lua_tostring(L, -1))) {
            nul = has_nul(L, -1);
            lua_pop(L, 1);
            goto bad;
        }
        if (k == cap) {
            cap = cap ? 2 * cap : 16;
            char **nk = cg_realloc(keys, cap * sizeof *nk);
            if (!nk) {
                lua_pop(L, 1);
                goto oom;
            }
            keys = nk;
        }
        if (!(keys[k] = cg_strdup(lua_tostring(L, -1)))) {
            lua_pop(L, 1);
            goto oom;
        }
        k++;
    }
    if (k)
        qsort(keys, k, sizeof *keys, cmp_str);
    *out = keys;
    *n = k;
    return JOPT_OK;
bad:
    for (size_t i = 0; i < k; i++)
        cg_free(keys[i]);
    cg_free(keys);
    return cg_fail(err, JOPT_ESPEC, nul ? "spec %s: a '%s' key contains a NUL "
                   "byte (names are letters, digits and '_')"
                   : "spec %s: '%s' keys must be names", path, what);
oom:
    for (size_t i = 0; i < k; i++)
        cg_free(keys[i]);
    cg_free(keys);
    return cg_fail(err, JOPT_ENOMEM, "out of memory reading spec %s", path);
}

/* `line_search_fn = {"none", "strong_wolfe"}`: the list at -1 of the names a
 * choice allows, its default first. */
static int read_choice(lua_State *L, cg_spec *s, cg_hyper *h, char *err)
{
    lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
    if (len < 1 || len > CG_MAX_CHOICES)
        return cg_fail(err, JOPT_ESPEC, "spec %s: choice '%s' must list 1 to "
                       "%d names", s->path, h->name, CG_MAX_CHOICES);
    char **names = cg_calloc((size_t)len, sizeof *names);
    if (!names)
        return cg_fail(err, JOPT_ENOMEM, "out of memory reading spec %s", s->path);
    h->kind = CG_HYPER_CHOICE;
    h->choices = (const char *const *)names;
    for (int k = 0; k < len; k++) {
        lua_rawgeti(L, -1, k + 1);
        const char *c = whole_string(L, -1);
        int nul = has_nul(L, -1);
        int ok = c && is_name(c);
        for (int j = 0; ok && j < k; j++)
            ok = strcmp(names[j], c) != 0;
        if (ok && !(names[k] = cg_strdup(c))) {
            lua_pop(L, 1);
            return cg_fail(err, JOPT_ENOMEM, "out of memory reading spec %s", s->path);
        }
        lua_pop(L, 1);
        if (!ok)
            return cg_fail(err, JOPT_ESPEC, "spec %s: choice '%s': entry %d %s",
                           s->path, h->name, k + 1, nul ? "contains a NUL byte"
                           : "is not a name, or repeats one");
        h->nchoices = k + 1;
    }
    return JOPT_OK;
}

/* Reads the schema of the `hyper` table at -1. */
static int read_hyper(lua_State *L, cg_spec *s, char *err)
{
    char **names;
    size_t n;
    int rc = sorted_keys(L, &names, &n, "hyper", s->path, err);
    if (rc)
        return rc;
    if (n > MAX_HYPER) {
        for (size_t i = 0; i < n; i++)
            cg_free(names[i]);
        cg_free(names);
        return cg_fail(err, JOPT_ESPEC, "spec %s: more than %d hyperparameters",
                       s->path, MAX_HYPER);
    }
    s->hyper = cg_calloc(n ? n : 1, sizeof *s->hyper);
    s->defaults = cg_calloc(n * CG_MAX_TUPLE + 1, sizeof *s->defaults);
    if (!s->hyper || !s->defaults) {
        for (size_t i = 0; i < n; i++)
            cg_free(names[i]);
        cg_free(names);
        return cg_fail(err, JOPT_ENOMEM, "out of memory reading spec %s", s->path);
    }
    for (size_t i = 0; i < n; i++)
        for (int k = 0; cg_prec_options[k]; k++)
            if (!strcmp(names[i], cg_prec_options[k])) {
                /* the runtime would take the user's value: the spec's
                 * could never be set */
                rc = cg_fail(err, JOPT_ESPEC, "spec %s: hyperparameter '%s': the name "
                             "is jopt's own option (dtype, grad_dtype, state_dtype, "
                             "stochastic_rounding, seed), which no spec may take",
                             s->path, names[i]);
                for (size_t j = 0; j < n; j++)
                    cg_free(names[j]);
                cg_free(names);
                return rc;
            }
    int off = 0;
    for (size_t i = 0; i < n; i++) {
        cg_hyper *h = &s->hyper[i];
        h->name = names[i];
        h->offset = off;
        h->len = 1;
        s->nhyper = i + 1;
        cg_sb_rawfield(L, -1, names[i]);
        switch (lua_type(L, -1)) {
        case LUA_TNUMBER:
            h->kind = CG_HYPER_NUMBER;
            h->integer = lua_isinteger(L, -1);
            s->defaults[off] = lua_tonumber(L, -1);
            break;
        case LUA_TBOOLEAN:
            h->kind = CG_HYPER_BOOL;
            s->defaults[off] = lua_toboolean(L, -1);
            break;
        case LUA_TTABLE: {
            cg_sb_push_none(L);
            int is_none = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
            if (is_none) { /* torch's None: the method derives a value */
                h->kind = CG_HYPER_NUMBER;
                h->optional = 1;
                s->defaults[off] = NAN;
                break;
            }
            lua_rawgeti(L, -1, 1);
            int is_choice = lua_type(L, -1) == LUA_TSTRING;
            lua_pop(L, 1);
            if (is_choice) {
                if ((rc = read_choice(L, s, h, err)))
                    goto fail;
                s->defaults[off] = 0;
                break;
            }
            lua_Integer len = (lua_Integer)lua_rawlen(L, -1);
            if (len < 1 || len > CG_MAX_TUPLE)
                goto bad;
            h->kind = CG_HYPER_NUMBER;
            h->len = (int)len;
            h->tuple = 1;
            for (int k = 0; k < h->len; k++) {
                lua_rawgeti(L, -1, k + 1);
                cg_sb_push_none(L);
                int none = lua_rawequal(L, -1, -2);
                lua_pop(L, 1);
                if (!none && lua_type(L, -1) != LUA_TNUMBER) {
                    lua_pop(L, 1);
                    goto bad;
                }
                /* an element that may be None (Adafactor's eps[0]) */
                h->optional |= none;
                s->defaults[off + k] = none ? NAN : lua_tonumber(L, -1);
                lua_pop(L, 1);
            }
            break;
        }
        default:
            goto bad;
        }
        lua_pop(L, 1);
        off += h->len;
        continue;
    bad:
        rc = cg_fail(err, JOPT_ESPEC,
                     "spec %s: hyperparameter '%s' must be a number, a "
                     "boolean, none, a list of 1 to %d numbers (or none) or a list of "
                     "1 to %d names (a choice)",
                     s->path, h->name, CG_MAX_TUPLE, CG_MAX_CHOICES);
    fail:
        lua_pop(L, 1);
        for (size_t j = i + 1; j < n; j++)
            cg_free(names[j]);
        cg_free(names);
        return rc;
    }
    cg_free(names);
    s->nvalues = (size_t)off;
    return JOPT_OK;
}

/* `runtime = {"lr", "betas"}`: hyperparameters the spec uses only in
 * arithmetic, which may therefore be passed per step instead of folded;
 * `infinite = {"step_sizes"}`: numbers that may be +-inf (an absent bound),
 * where every other number must be finite; `optional = {"eps"}`: numbers
 * that may be None (torch's Optional[float]) although their default is a
 * number; h.eps == none tests it.  The list at -1 is `field`. */
static int read_hyper_list(lua_State *L, cg_spec *s, const char *field,
                           char *err)
{
    if (lua_isnil(L, -1))
        return JOPT_OK;
    if (!lua_istable(L, -1))
        return cg_fail(err, JOPT_ESPEC, "spec %s: '%s' must be a list of "
                       "hyperparameter names", s->path, field);
    int optional = !strcmp(field, "optional");
    for (lua_Integer i = 1;; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            return JOPT_OK;
        }
        const char *name = whole_string(L, -1);
        cg_hyper *h = name ? (cg_hyper *)cg_spec_find_hyper(s, name) : NULL;
        if (!h || h->kind != CG_HYPER_NUMBER || (optional && h->tuple)) {
            int rc = cg_fail(err, JOPT_ESPEC, "spec %s: %s entry %lld %s",
                             s->path, field, (long long)i, has_nul(L, -1)
                             ? "contains a NUL byte"
                             : optional ? "is not a numeric, non-tuple hyperparameter"
                                        : "is not a numeric hyperparameter");
            lua_pop(L, 1);
            return rc;
        }
        if (optional)
            h->optional = 1;
        else if (field[0] == 'r')
            h->runtime_ok = 1;
        else
            h->infinite = 1;
        lua_pop(L, 1);
    }
}

/* a default must be a value the options could set: finite, unless listed
 * in `infinite` (NaN is None, for an optional number only) */
static int check_defaults(cg_spec *s, char *err)
{
    for (size_t i = 0; i < s->nhyper; i++) {
        const cg_hyper *h = &s->hyper[i];
        for (int k = 0; h->kind == CG_HYPER_NUMBER && k < h->len; k++) {
            double v = s->defaults[h->offset + k];
            if ((isinf(v) && !h->infinite) || (isnan(v) && !h->optional))
                return cg_fail(err, JOPT_ESPEC, "spec %s: hyperparameter '%s' "
                               "defaults to %g; a number must be finite (list "
                               "it in `infinite` if it may be +-inf)", s->path,
                               h->name, v);
        }
    }
    return JOPT_OK;
}

/* "y x g": names separated by spaces, at most `max`, distinct */
static int split_names(const char *text, char ***out, int *n, int max)
{
    char **names = cg_calloc((size_t)max + 1, sizeof *names);
    if (!names)
        return JOPT_ENOMEM;
    int k = 0;
    for (const char *c = text;;) {
        while (*c == ' ')
            c++;
        if (!*c)
            break;
        const char *e = c;
        while (*e && *e != ' ')
            e++;
        int nomem = k < max && !(names[k] = cg_strndup(c, (size_t)(e - c)));
        int ok = k < max && !nomem && is_name(names[k]);
        for (int j = 0; ok && j < k; j++)
            ok = strcmp(names[j], names[k]) != 0;
        if (!ok) {
            for (int j = 0; j <= k && j < max; j++)
                cg_free(names[j]);
            cg_free(names);
            return nomem ? JOPT_ENOMEM : JOPT_ESPEC;
        }
        k++;
        c = e;
    }
    *out = names;
    *n = k;
    return JOPT_OK;
}

/* One entry of `kernels` (the table at -1):
 * { arrays = "y x", scalars = "a", run = function (v, a) ... end } */
static int read_vkernel(lua_State *L, cg_spec *s, cg_vkernel_sig *k, char *err)
{
    if (!lua_istable(L, -1))
        return cg_fail(err, JOPT_ESPEC, "spec %s: kernel '%s' must be a table "
                       "{ arrays = \"...\", scalars = \"...\", run = function }",
                       s->path, k->name);
    cg_sb_rawfield(L, -1, "run");
    int ok = lua_isfunction(L, -1);
    lua_pop(L, 1);
    if (!ok)
        return cg_fail(err, JOPT_ESPEC, "spec %s: kernel '%s': 'run' must be a "
                       "function", s->path, k->name);
    const char *field[2] = {"arrays", "scalars"};
    for (int f = 0; f < 2; f++) {
        cg_sb_rawfield(L, -1, field[f]);
        int nul = has_nul(L, -1);
        const char *text = whole_string(L, -1) ? lua_tostring(L, -1)
                           : f == 1 && lua_isnil(L, -1) ? "" : NULL;
        char **names = NULL;
        int n = 0, max = f == 0 ? CG_MAX_SLOTS : CG_MAX_UNIFORMS / 16;
        int rc = text ? split_names(text, &names, &n, max) : JOPT_ESPEC;
        lua_pop(L, 1);
        if (rc == JOPT_ENOMEM)
            return cg_fail(err, rc, "out of memory reading spec %s", s->path);
        if (nul)
            return cg_fail(err, JOPT_ESPEC, "spec %s: kernel '%s': '%s' contains "
                           "a NUL byte", s->path, k->name, field[f]);
        if (rc || (f == 0 && n == 0)) {
            cg_free(names); /* "": no names, but the list (fuzz_spec found it) */
            return cg_fail(err, JOPT_ESPEC, "spec %s: kernel '%s': '%s' must be "
                           "a string of distinct names separated by spaces (at "
                           "most %d%s)", s->path, k->name, field[f], max,
                           f == 0 ? ", at least one" : "");
        }
        if (f == 0) {
            k->arrays = (const char *const *)names;
            k->narrays = n;
        } else {
            k->scalars = (const char *const *)names;
            k->nscalars = n;
        }
    }
    return JOPT_OK;
}

/* `method` and `kernels`: a closure optimizer's driver and vector kernels */
static int read_method(lua_State *L, cg_spec *s, char *err)
{
    cg_sb_rawfield(L, -1, "method");
    int t = lua_type(L, -1);
    if (has_nul(L, -1)) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ESPEC, "spec %s: 'method' contains a NUL byte",
                       s->path);
    }
    if (t == LUA_TSTRING && !(s->method = cg_strdup(lua_tostring(L, -1)))) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    lua_pop(L, 1);
    if (t != LUA_TSTRING && t != LUA_TNIL)
        return cg_fail(err, JOPT_ESPEC, "spec %s: 'method' must be a string",
                       s->path);
    cg_sb_rawfield(L, -1, "kernels");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return s->method ? cg_fail(err, JOPT_ESPEC, "spec %s: a spec with a "
                                   "method needs a 'kernels' table", s->path)
                         : JOPT_OK;
    }
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ESPEC, "spec %s: 'kernels' must be a table",
                       s->path);
    }
    char **names;
    size_t n;
    int rc = sorted_keys(L, &names, &n, "kernels", s->path, err);
    if (rc) {
        lua_pop(L, 1);
        return rc;
    }
    if (!s->method) { /* an update spec's named kernels: functions */
        s->named = names;
        s->nnamed = n;
        for (size_t i = 0; i < n && rc == JOPT_OK; i++) {
            cg_sb_rawfield(L, -1, names[i]);
            if (!lua_isfunction(L, -1))
                rc = cg_fail(err, JOPT_ESPEC, "spec %s: kernel '%s' must be a "
                             "function (p, s, h, t) returning the parameter's "
                             "new value", s->path, names[i]);
            if (rc == JOPT_OK && !strcmp(names[i], "update"))
                rc = cg_fail(err, JOPT_ESPEC, "spec %s: a kernel cannot be "
                             "named 'update'", s->path);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        return rc;
    }
    if (!(s->vk = cg_calloc(n + 1, sizeof *s->vk))) {
        for (size_t i = 0; i < n; i++)
            cg_free(names[i]);
        cg_free(names);
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) { /* the names are owned by s->vk now */
        s->vk[i].name = names[i];
        s->nvk = i + 1;
    }
    cg_free(names);
    for (size_t i = 0; i < n && rc == JOPT_OK; i++) {
        cg_sb_rawfield(L, -1, s->vk[i].name);
        rc = read_vkernel(L, s, &s->vk[i], err);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

/* `inputs = {"hessian"}`: per-element inputs besides the gradient, and
 * `steps = "group"`: t counts the group's steps, not the tensor's */
static int read_inputs(lua_State *L, cg_spec *s, char *err)
{
    cg_sb_rawfield(L, -1, "steps");
    int t = lua_type(L, -1);
    const char *steps = t == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int ok = t == LUA_TNIL ||
             (steps && (!strcmp(steps, "group") || !strcmp(steps, "tensor")));
    s->group_steps = steps && !strcmp(steps, "group");
    lua_pop(L, 1);
    if (!ok)
        return cg_fail(err, JOPT_ESPEC, "spec %s: 'steps' must be \"tensor\" "
                       "(t counts each tensor's steps, as torch) or \"group\" "
                       "(the group's)", s->path);
    cg_sb_rawfield(L, -1, "inputs");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return JOPT_OK;
    }
    lua_Integer n = lua_istable(L, -1) ? (lua_Integer)lua_rawlen(L, -1) : -1;
    if (n < 0 || n > CG_MAX_INPUTS) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ESPEC, "spec %s: 'inputs' must be a list of at "
                       "most %d names", s->path, CG_MAX_INPUTS);
    }
    if (!(s->inputs = cg_calloc((size_t)n + 1, sizeof *s->inputs))) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    int rc = JOPT_OK;
    for (lua_Integer i = 1; i <= n && rc == JOPT_OK; i++) {
        lua_rawgeti(L, -1, i);
        const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        int good = name && is_name(name);
        for (size_t j = 0; good && j < s->ninputs; j++)
            good = strcmp(s->inputs[j], name) != 0;
        if (!good)
            rc = cg_fail(err, JOPT_ESPEC, "spec %s: input %lld is not a name, "
                         "or repeats one", s->path, (long long)i);
        else if (!(s->inputs[s->ninputs] = cg_strdup(name)))
            rc = cg_fail(err, JOPT_ENOMEM, "out of memory");
        else
            s->ninputs++;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return rc;
}

static int read_spec_table(lua_State *L, cg_spec *s, char *err)
{
    int rc = read_method(L, s, err);
    if (rc == JOPT_OK)
        rc = read_inputs(L, s, err);
    if (rc)
        return rc;
    cg_sb_rawfield(L, -1, "update");
    int ok = s->method ? lua_isnil(L, -1) : lua_isfunction(L, -1);
    lua_pop(L, 1);
    if (!ok)
        return cg_fail(err, JOPT_ESPEC, s->method
                       ? "spec %s: a spec with a method has kernels, not an 'update'"
                       : "spec %s: 'update' must be a function", s->path);
    const char *checks[2] = {"check", "check_shape"};
    for (int c = 0; c < 2; c++) {
        cg_sb_rawfield(L, -1, checks[c]);
        ok = lua_isnil(L, -1) || lua_isfunction(L, -1);
        if (c == 1)
            s->shape_check = lua_isfunction(L, -1);
        lua_pop(L, 1);
        if (!ok)
            return cg_fail(err, JOPT_ESPEC, "spec %s: '%s' must be a function",
                           s->path, checks[c]);
    }
    cg_sb_rawfield(L, -1, "doc");
    if (lua_type(L, -1) == LUA_TSTRING && !(s->doc = cg_strdup(lua_tostring(L, -1)))) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    lua_pop(L, 1);
    cg_sb_rawfield(L, -1, "hyper");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ESPEC, "spec %s: 'hyper' must be a table",
                       s->path);
    }
    rc = read_hyper(L, s, err);
    lua_pop(L, 1);
    if (rc)
        return rc;
    cg_sb_rawfield(L, -1, "runtime");
    rc = read_hyper_list(L, s, "runtime", err);
    lua_pop(L, 1);
    if (rc)
        return rc;
    cg_sb_rawfield(L, -1, "optional");
    rc = read_hyper_list(L, s, "optional", err);
    lua_pop(L, 1);
    if (rc)
        return rc;
    cg_sb_rawfield(L, -1, "infinite");
    rc = read_hyper_list(L, s, "infinite", err);
    lua_pop(L, 1);
    if (rc || (rc = check_defaults(s, err)))
        return rc;
    cg_sb_rawfield(L, -1, "state");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return JOPT_OK;
    }
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ESPEC, "spec %s: 'state' must be a table",
                       s->path);
    }
    rc = sorted_keys(L, &s->state, &s->nstate, "state", s->path, err);
    lua_pop(L, 1);
    if (rc == JOPT_OK && s->nstate > CG_MAX_SLOTS - 2)
        return cg_fail(err, JOPT_ESPEC, "spec %s: more than %d states",
                       s->path, CG_MAX_SLOTS - 2);
    return rc;
}

int cg_spec_read(const char *const *dirs, size_t ndirs, const char *name,
                 char **path, char **text, size_t *len, char *err)
{
    *path = *text = NULL;
    return find_spec(dirs, ndirs, name, path, text, len, err);
}

int cg_spec_parse(char *path, char *text, size_t len, cg_spec **out, char *err)
{
    cg_spec *s = cg_calloc(1, sizeof *s);
    if (!s) {
        cg_free(path);
        cg_free(text);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    s->path = path;
    s->src = text;
    s->srclen = len;
    /* the name is the file's base name without .lua */
    const char *base = strrchr(s->path, '/');
    base = base ? base + 1 : s->path;
    size_t bl = strlen(base);
    if (bl > 4 && !strcmp(base + bl - 4, ".lua"))
        bl -= 4;
    s->name = cg_strndup(base, bl);
    if (!s->name) {
        cg_spec_free(s);
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    }
    sandbox sb;
    int rc = cg_sb_open(&sb, s->path, err);
    if (rc == JOPT_OK) {
        rc = cg_sb_run_spec(&sb, s->src, s->srclen, err);
        if (rc == JOPT_OK)
            rc = read_spec_table(sb.L, s, err);
        rc = cg_sb_nomem(&sb, rc, err);
        cg_sb_close(&sb);
    }
    if (rc == JOPT_EINVAL) /* require_that at load time is a spec bug */
        rc = JOPT_ESPEC;
    if (rc) {
        cg_spec_free(s);
        return rc;
    }
    *out = s;
    return JOPT_OK;
}

int cg_spec_load(const char *const *dirs, size_t ndirs, const char *name,
                 cg_spec **out, char *err)
{
    char *path, *text;
    size_t len;
    int rc = cg_spec_read(dirs, ndirs, name, &path, &text, &len, err);
    return rc ? rc : cg_spec_parse(path, text, len, out, err);
}

/* h.name: upvalue 1 holds the values; unknown names are errors */
static int h_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    if (!lua_isnil(L, -1))
        return 1;
    if (has_nul(L, 2))
        return luaL_error(L, "hyperparameter names contain no NUL byte");
    return luaL_error(L, "unknown hyperparameter '%s'", luaL_tolstring(L, 2, NULL));
}

static int tuple_len(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    return 1;
}

static int h_newindex(lua_State *L)
{
    return luaL_error(L, "hyperparameters are read-only (assigning '%s')",
                      luaL_tolstring(L, 2, NULL));
}

/* Pushes h: an empty proxy over the values, as are its tuples, so that a
 * spec cannot change a value the kernel is specialised to. */
static void push_h(lua_State *L, const cg_spec *s, const double *values)
{
    lua_newtable(L);                                /* h */
    lua_createtable(L, 0, (int)s->nhyper);          /* its values */
    for (size_t i = 0; i < s->nhyper; i++) {
        const cg_hyper *h = &s->hyper[i];
        const double *v = values + h->offset;
        if (h->tuple) {
            lua_newtable(L);
            lua_createtable(L, h->len, 0);
            for (int k = 0; k < h->len; k++) {
                if (h->optional && isnan(v[k]))
                    cg_sb_push_none(L);
                else
                    lua_pushnumber(L, v[k]);
                lua_rawseti(L, -2, k + 1);
            }
            cg_sb_set_proxy(L, h_newindex);
            lua_getmetatable(L, -1); /* #h.betas: the tuple's length */
            lua_pushinteger(L, h->len);
            lua_pushcclosure(L, tuple_len, 1);
            lua_setfield(L, -2, "__len");
            lua_pop(L, 1);
        } else {
            cg_hyper_push(L, h, v[0]);
        }
        lua_setfield(L, -2, h->name);
    }
    lua_pushcclosure(L, h_index, 1);
    cg_sb_set_proxy(L, h_newindex);
}

/* push_h allocates: run it protected, so that a spec that used up its
 * memory gets an error rather than a Lua panic */
static int push_h_main(lua_State *L)
{
    const cg_spec *s = lua_touserdata(L, 1);
    const double *values = lua_touserdata(L, 2);
    lua_settop(L, 0);
    push_h(L, s, values);
    return 1;
}

static int push_h_protected(sandbox *sb, const cg_spec *s, const double *values,
                            char *err)
{
    lua_State *L = sb->L;
    if (!lua_checkstack(L, 8))
        return cg_fail(err, JOPT_ESPEC, "spec %s: Lua stack exhausted", s->path);
    lua_pushcfunction(L, push_h_main);
    lua_pushlightuserdata(L, (void *)s);
    lua_pushlightuserdata(L, (void *)values);
    return cg_sb_pcall(sb, 2, 1, err);
}

int cg_spec_enter(sandbox *sb, const cg_spec *s, const double *values, char *err)
{
    int rc = cg_sb_open(sb, s->path, err);
    if (rc)
        return rc;
    rc = cg_sb_run_spec(sb, s->src, s->srclen, err);
    if (rc) {
        cg_sb_close(sb);
        return rc == JOPT_EINVAL ? JOPT_ESPEC : rc;
    }
    if ((rc = push_h_protected(sb, s, values, err))) {
        cg_sb_close(sb);
        return rc == JOPT_EINVAL ? JOPT_ESPEC : rc;
    }
    return JOPT_OK;
}

/* The checker keeps the spec's table at stack index 1. */
static int checker_open(cg_spec *s, char *err)
{
    sandbox *sb = cg_calloc(1, sizeof *sb);
    if (!sb)
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    int rc = cg_sb_open(sb, s->path, err);
    if (rc) {
        cg_free(sb);
        return rc;
    }
    rc = cg_sb_run_spec(sb, s->src, s->srclen, err);
    if (rc) {
        cg_sb_close(sb);
        cg_free(sb);
        return rc == JOPT_EINVAL ? JOPT_ESPEC : rc;
    }
    s->checker = sb;
    return JOPT_OK;
}

int cg_spec_check(cg_spec *s, const double *values, char *err)
{
    if (!s->checker) {
        int rc = checker_open(s, err);
        if (rc)
            return rc;
    }
    sandbox *sb = s->checker;
    lua_State *L = sb->L;
    cg_sb_reset_budgets(sb);
    lua_settop(L, 1);
    cg_sb_rawfield(L, 1, "check");
    if (!lua_isfunction(L, -1)) {
        lua_settop(L, 1);
        return JOPT_OK;
    }
    int rc = push_h_protected(sb, s, values, err);
    if (rc == JOPT_OK)
        rc = cg_sb_pcall(sb, 1, 0, err);
    lua_settop(L, 1);
    rc = cg_sb_nomem(sb, rc, err);
    /* a refused value leaves the state sound; anything else (a limit, an
     * error in check) may not: start afresh next time */
    if (rc != JOPT_OK && !(rc == JOPT_EINVAL && sb->tripped == SB_OK))
        checker_close(s);
    else
        sb->invalid = 0;
    return rc;
}

/* check_shape's argument: the sizes, outermost first, as torch's p.size() */
static int push_size_main(lua_State *L)
{
    const int64_t *shape = lua_touserdata(L, 1);
    int rank = (int)lua_tointeger(L, 2);
    lua_settop(L, 0);
    lua_createtable(L, rank, 0);
    for (int d = 0; d < rank; d++) {
        lua_pushinteger(L, (lua_Integer)shape[rank - 1 - d]);
        lua_rawseti(L, -2, d + 1);
    }
    return 1;
}

int cg_spec_check_shape(cg_spec *s, const int64_t *shape, int rank, char *err)
{
    if (!s->shape_check)
        return JOPT_OK;
    if (!s->checker) {
        int rc = checker_open(s, err);
        if (rc)
            return rc;
    }
    sandbox *sb = s->checker;
    lua_State *L = sb->L;
    cg_sb_reset_budgets(sb);
    lua_settop(L, 1);
    cg_sb_rawfield(L, 1, "check_shape");
    int rc = JOPT_OK;
    if (!lua_checkstack(L, 8))
        rc = cg_fail(err, JOPT_ESPEC, "spec %s: Lua stack exhausted", s->path);
    if (rc == JOPT_OK) {
        lua_pushcfunction(L, push_size_main);
        lua_pushlightuserdata(L, (void *)shape);
        lua_pushinteger(L, rank);
        rc = cg_sb_pcall(sb, 2, 1, err);
    }
    if (rc == JOPT_OK)
        rc = cg_sb_pcall(sb, 1, 0, err);
    lua_settop(L, 1);
    rc = cg_sb_nomem(sb, rc, err);
    if (rc != JOPT_OK && !(rc == JOPT_EINVAL && sb->tripped == SB_OK))
        checker_close(s);
    else
        sb->invalid = 0;
    return rc;
}
