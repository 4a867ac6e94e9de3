/*
 * trace.c - runs a spec's update(p, g, s, h, t) on traced values and records
 * the expression graph.
 *
 * p, g, per-element state and t are userdata whose metamethods add graph
 * nodes; hyperparameters are plain Lua values, so `if h.amsgrad then` is
 * decided here, once.  A node that folds to a constant comes back to Lua as
 * a plain number (or boolean), so branches on constants stay Lua branches.
 */
#include <lauxlib.h>
#include <stdarg.h>
#include <string.h>

#include "sandbox.h"

static char TRACER_KEY;
#define TRACED "jopt.traced"
#define SCALAR "jopt.scalar"

typedef struct tracer {
    cg_graph *g;
    const cg_spec *spec;
    const uint8_t *runtime; /* per hyper, or NULL */
    int fresh;
    int active[CG_MAX_SLOTS];   /* by spec state index */
    int slot[CG_MAX_SLOTS];     /* array slot of each active state */
    cg_init init[CG_MAX_SLOTS];
    int32_t cur[CG_MAX_SLOTS];  /* current value node; -1 reads as nil */
    /* traced conditions and the spec line that made each: one the graph
     * never uses was almost surely tested with `if` or `and`/`or` */
    int32_t cond[256];
    int cond_line[256];
    int ncond;
    const cg_vkernel_sig *vk; /* tracing a vector kernel: its arrays */
    int fn_line;              /* where update (or run) starts */
} tracer;

/* the line of the innermost call in the spec's own file (not the
 * prelude's), or 0 */
static int spec_line(lua_State *L, const tracer *tr)
{
    lua_Debug ar;
    const char *path = cg_spec_path(tr->spec);
    for (int level = 1; lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.source[0] == '@' &&
            ar.currentline > 0 && strcmp(ar.source + 1, path) == 0)
            return ar.currentline;
    return 0;
}

static tracer *get_tracer(lua_State *L, const char *what)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &TRACER_KEY);
    tracer *tr = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!tr)
        luaL_error(L, "%s can only be used inside update()", what);
    /* the nodes this call makes belong to this line (for errors found
     * when the graph is finished) */
    tr->g->line = spec_line(L, tr);
    return tr;
}

/* an error about the function the spec gave (update, a kernel's run),
 * after it returned: named by the line it starts on */
static int fn_error(lua_State *L, const tracer *tr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lua_pushfstring(L, "%s:%d: ", cg_spec_path(tr->spec), tr->fn_line);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

static void push_node(lua_State *L, tracer *tr, int32_t n)
{
    const cg_node *x = &tr->g->nodes[n];
    if (x->op == CG_CONST) { /* constants go back to plain Lua values */
        if (x->boolean)
            lua_pushboolean(L, x->value != 0);
        else
            lua_pushnumber(L, x->value);
        return;
    }
    int32_t *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = n;
    luaL_setmetatable(L, TRACED);
}

static int32_t check(lua_State *L, int32_t r, const char *op)
{
    if (r == -1)
        luaL_error(L, "expression graph too large (over %d nodes, a bound "
                      "on compile time) or out of memory", CG_MAX_NODES);
    if (r == -2)
        luaL_error(L, "%s: a truth value where a number is needed, or the "
                      "reverse (conditions come from lt, le, gt, ge, eq, ne)", op);
    if (r == -3)
        luaL_error(L, "%s takes per-step values only, not per-element ones", op);
    if (r == -4)
        luaL_error(L, "%s takes a per-element value", op);
    return r;
}

static int32_t to_node(lua_State *L, tracer *tr, int idx, const char *op)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        return check(L, cg_graph_const(tr->g, lua_tonumber(L, idx)), op);
    case LUA_TBOOLEAN: {
        int32_t v = check(L, cg_graph_const(tr->g, lua_toboolean(L, idx)), op);
        int32_t z = check(L, cg_graph_const(tr->g, 0), op);
        return check(L, cg_graph_op(tr->g, CG_NE, v, z, -1), op);
    }
    default: {
        int32_t *u = luaL_testudata(L, idx, TRACED);
        if (u)
            return *u;
        luaL_error(L, "%s: expected a number or a traced value, got %s", op,
                   luaL_typename(L, idx));
        return -1;
    }
    }
}

/* the first line of the Lua function at idx (0 if it is not one) */
static int fn_first_line(lua_State *L, int idx)
{
    lua_Debug ar;
    if (!lua_isfunction(L, idx))
        return 0;
    lua_pushvalue(L, idx);
    return lua_getinfo(L, ">S", &ar) && ar.linedefined > 0 ? ar.linedefined : 0;
}

/* Every prelude function and arithmetic metamethod: upvalue 1 is the op. */
static int apply(lua_State *L)
{
    cg_op op = (cg_op)lua_tointeger(L, lua_upvalueindex(1));
    const char *name = cg_op_name(op);
    tracer *tr = get_tracer(L, name);
    int arity = cg_op_arity(op);
    if ((cg_op_flags(op) & CG_F_SELECT) && lua_type(L, 1) == LUA_TBOOLEAN) {
        lua_pushvalue(L, lua_toboolean(L, 1) ? 2 : 3); /* decided here */
        return 1;
    }
    if (lua_gettop(L) < arity)
        return luaL_error(L, "%s takes %d arguments, got %d", name, arity,
                          lua_gettop(L));
    int32_t a[3] = {-1, -1, -1};
    for (int i = 0; i < arity; i++)
        a[i] = to_node(L, tr, i + 1, name);
    int32_t r = check(L, cg_graph_op(tr->g, op, a[0], a[1], a[2]), name);
    const cg_node *x = &tr->g->nodes[r];
    if (x->boolean && x->op != CG_CONST && tr->ncond < 256) {
        tr->cond[tr->ncond] = r;
        tr->cond_line[tr->ncond++] = tr->g->line;
    }
    push_node(L, tr, r);
    return 1;
}

/* Lua cannot see a traced condition's truth: `if gt(g, 0) then` and
 * `lt(g, 0) and a or b` treat it as true and leave it out of the graph. */
static void check_conditions_used(lua_State *L, const tracer *tr)
{
    const cg_graph *g = tr->g;
    for (int c = 0; c < tr->ncond; c++) {
        int32_t n = tr->cond[c];
        int used = 0;
        for (int i = n + 1; i < g->n && !used; i++)
            for (int k = 0; k < 3; k++)
                used |= g->nodes[i].arg[k] == n;
        for (int s = 0; s < g->nslots; s++)
            used |= g->store[s] == n;
        for (int r = 0; r < g->nresult; r++)
            used |= g->result[r] == n;
        if (!used) {
            lua_pushfstring(L, "%s:%d: a condition on traced values is computed "
                            "but never used: `if cond then` and `cond and x or "
                            "y` take a traced value as true; use where(cond, x, y)",
                            cg_spec_path(tr->spec), tr->cond_line[c]);
            lua_error(L);
        }
    }
}

static int unm(lua_State *L)
{
    tracer *tr = get_tracer(L, "-");
    int32_t a = to_node(L, tr, 1, "-");
    push_node(L, tr, check(L, cg_graph_op(tr->g, CG_NEG, a, -1, -1), "-"));
    return 1;
}

static int refuse_compare(lua_State *L)
{
    return luaL_error(L, "<, <=, == and ~= cannot see traced values (Lua turns "
                         "them into booleans): use lt, le, gt, ge, eq, ne");
}

static int refuse_other(lua_State *L)
{
    return luaL_error(L, "this operation is not defined on traced values");
}

static int traced_tostring(lua_State *L)
{
    int32_t *u = luaL_checkudata(L, 1, TRACED);
    lua_pushfstring(L, "traced value #%d", (int)*u);
    return 1;
}

/* scalar(v): a per-tensor scalar state starting at v (in a state table) */
static int make_scalar(lua_State *L)
{
    double v = luaL_checknumber(L, 1);
    double *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = v;
    luaL_setmetatable(L, SCALAR);
    return 1;
}

static void push_op(lua_State *L, cg_op op)
{
    lua_pushinteger(L, op);
    lua_pushcclosure(L, apply, 1);
}

void cg_trace_open_lib(lua_State *L)
{
    /* every op ops.h marks as a prelude function, by its name */
    static const cg_op prelude[] = {
#define PRELUDE_OP(id, name, arity, flags, d, f, ir) CG_##id,
        CG_OPS(PRELUDE_OP)
#undef PRELUDE_OP
    };
    for (size_t i = 0; i < sizeof prelude / sizeof prelude[0]; i++) {
        if (!(cg_op_flags(prelude[i]) & CG_F_PRELUDE))
            continue;
        push_op(L, prelude[i]);
        lua_setfield(L, -2, cg_op_name(prelude[i]));
    }
    luaL_newmetatable(L, SCALAR);
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    lua_pushcfunction(L, make_scalar);
    lua_setfield(L, -2, "scalar");
    static const struct {
        const char *name;
        cg_op op;
    } arith[] = {{"__add", CG_ADD}, {"__sub", CG_SUB}, {"__mul", CG_MUL},
                 {"__div", CG_DIV}, {"__pow", CG_POW}};
    luaL_newmetatable(L, TRACED);
    for (size_t i = 0; i < sizeof arith / sizeof arith[0]; i++) {
        push_op(L, arith[i].op);
        lua_setfield(L, -2, arith[i].name);
    }
    lua_pushcfunction(L, unm);
    lua_setfield(L, -2, "__unm");
    const char *compare[] = {"__lt", "__le", "__eq"};
    for (size_t i = 0; i < 3; i++) {
        lua_pushcfunction(L, refuse_compare);
        lua_setfield(L, -2, compare[i]);
    }
    const char *other[] = {"__mod", "__idiv", "__band", "__bor", "__bxor",
                           "__shl", "__shr", "__bnot", "__concat", "__len",
                           "__call", "__index", "__newindex"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        lua_pushcfunction(L, refuse_other);
        lua_setfield(L, -2, other[i]);
    }
    lua_pushcfunction(L, traced_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* ---- the state proxy `s` ------------------------------------------------ */

/* a name from the spec (s.name, v.name): a string without a NUL byte,
 * which C would read as its end (s['m\0x'] as s.m) */
static const char *check_name(lua_State *L, int idx)
{
    size_t len;
    const char *k = luaL_checklstring(L, idx, &len);
    if (strlen(k) != len)
        luaL_error(L, "names contain no NUL byte (got '%s\\0...')", k);
    return k;
}

static int state_index_of(lua_State *L, tracer *tr)
{
    const char *k = check_name(L, 2);
    size_t n = cg_spec_nstate(tr->spec);
    for (size_t i = 0; i < n; i++)
        if (strcmp(cg_spec_state_name(tr->spec, i), k) == 0) {
            if (!tr->active[i])
                luaL_error(L, "state '%s' is not kept with these "
                              "hyperparameters (its initial value is false)", k);
            return (int)i;
        }
    luaL_error(L, "unknown state '%s' (declare it in the spec's state table)", k);
    return -1;
}

static int state_get(lua_State *L)
{
    tracer *tr = get_tracer(L, "s");
    int i = state_index_of(L, tr);
    if (tr->cur[i] < 0)
        lua_pushnil(L);
    else
        push_node(L, tr, tr->cur[i]);
    return 1;
}

static int state_set(lua_State *L)
{
    tracer *tr = get_tracer(L, "s");
    int i = state_index_of(L, tr);
    if (lua_isnil(L, 3))
        return luaL_error(L, "state '%s' cannot be set to nil", lua_tostring(L, 2));
    int32_t v = to_node(L, tr, 3, lua_tostring(L, 2));
    if (tr->g->nodes[v].boolean)
        return luaL_error(L, "state '%s' must be a number, not a truth value",
                          lua_tostring(L, 2));
    if (tr->g->scalar[tr->slot[i]]) {
        if (tr->g->nodes[v].varying)
            return luaL_error(L, "state '%s' is a per-tensor scalar: it takes "
                              "a per-step value, not a per-element one",
                              lua_tostring(L, 2));
        /* stored in float32, as torch's 0-dim tensors: later reads see the
         * rounded value, as torch's .item() does */
        v = check(L, cg_graph_op(tr->g, CG_F32, v, -1, -1), "f32");
    }
    tr->cur[i] = v;
    return 0;
}

/* Reads the spec's state table (at index `st`) for these hyperparameters
 * (at index `h`) and lays out the arrays. */
static void layout_state(lua_State *L, sandbox *sb, tracer *tr, int st, int h)
{
    cg_graph *g = tr->g;
    g->nslots = 2;
    size_t n = cg_spec_nstate(tr->spec);
    for (size_t i = 0; i < n; i++) {
        const char *name = cg_spec_state_name(tr->spec, i);
        lua_getfield(L, st, name);
        if (lua_isfunction(L, -1)) {
            lua_pushvalue(L, h);
            lua_call(L, 1, 1);
        }
        tr->cur[i] = -1;
        if (lua_isnil(L, -1) || (lua_isboolean(L, -1) && !lua_toboolean(L, -1))) {
            lua_pop(L, 1);
            continue;
        }
        cg_sb_push_unset(sb);
        int unset = lua_rawequal(L, -1, -2);
        lua_pop(L, 1);
        double *scalar = luaL_testudata(L, -1, SCALAR);
        if (!unset && !scalar && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "state '%s': initial value must be a number, "
                          "scalar(number), unset or false, got %s", name,
                          luaL_typename(L, -1));
        int s = g->nslots++;
        int k = g->nstate++;
        tr->active[i] = 1;
        tr->slot[i] = s;
        tr->init[i] = unset ? CG_INIT_UNSET : CG_INIT_CONST;
        g->scalar[s] = scalar != NULL;
        g->state[k] = (int)i;
        g->init[k] = tr->init[i];
        g->init_value[k] = unset ? 0 : scalar ? *scalar : lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (!(unset && tr->fresh))
            tr->cur[i] = check(L, scalar ? cg_graph_scalar(g, s)
                                         : cg_graph_load(g, s), name);
    }
}

/* Hyperparameters passed at run time become traced per-step values in h:
 * h's values live in the upvalue of its __index, a tuple's behind its own
 * proxy (spec.c). */
static void trace_runtime_hypers(lua_State *L, tracer *tr, int h)
{
    if (!tr->runtime)
        return;
    lua_getmetatable(L, h);
    lua_getfield(L, -1, "__index");
    lua_getupvalue(L, -1, 1);                 /* h's values */
    for (size_t i = 0; i < cg_spec_nhyper(tr->spec); i++) {
        const cg_hyper *hy = cg_spec_hyper(tr->spec, i);
        if (!tr->runtime[i] || !hy->runtime_ok)
            continue;
        if (hy->tuple) {
            lua_getfield(L, -1, hy->name);    /* the tuple's proxy */
            lua_getmetatable(L, -1);
            lua_getfield(L, -1, "__index");   /* its values */
            for (int k = 0; k < hy->len; k++) {
                push_node(L, tr, check(L, cg_graph_hyper(tr->g, hy->offset + k), hy->name));
                lua_rawseti(L, -2, k + 1);
            }
            lua_pop(L, 3);
        } else {
            push_node(L, tr, check(L, cg_graph_hyper(tr->g, hy->offset), hy->name));
            lua_setfield(L, -2, hy->name);
        }
    }
    lua_pop(L, 3);
}

/* The protected body: stack holds the spec table (1) and h (2). */
static int trace_main(lua_State *L)
{
    tracer *tr = get_tracer(L, "trace");
    sandbox *sb = lua_touserdata(L, 3);
    trace_runtime_hypers(L, tr, 2);
    lua_getfield(L, 1, "state");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    layout_state(L, sb, tr, 4, 2);
    lua_getfield(L, 1, "update");                          /* 5 */
    tr->fn_line = fn_first_line(L, -1);
    push_node(L, tr, check(L, cg_graph_load(tr->g, 0), "p"));
    push_node(L, tr, check(L, cg_graph_load(tr->g, 1), "g"));
    lua_newtable(L);                                       /* s */
    lua_pushcfunction(L, state_get);
    cg_sb_set_proxy(L, state_set);
    lua_pushvalue(L, 2);
    push_node(L, tr, check(L, cg_graph_step(tr->g), "t"));
    lua_call(L, 5, 1);
    tr->g->line = tr->fn_line;
    if (lua_isnil(L, -1))
        return fn_error(L, tr, "update() must return the new parameter value");
    if (lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TBOOLEAN &&
        !luaL_testudata(L, -1, TRACED))
        return fn_error(L, tr, "update() result: expected a number or a "
                        "traced value, got %s", luaL_typename(L, -1));
    tr->g->store[0] = to_node(L, tr, -1, "update() result");
    if (tr->g->nodes[tr->g->store[0]].boolean)
        return fn_error(L, tr, "update() must return a number, not a truth value");
    size_t n = cg_spec_nstate(tr->spec);
    for (size_t i = 0; i < n; i++) {
        if (!tr->active[i])
            continue;
        if (tr->cur[i] < 0)
            return fn_error(L, tr, "state '%s' starts unset but update() does "
                            "not set it on a parameter's first step",
                            cg_spec_state_name(tr->spec, i));
        const cg_node *x = &tr->g->nodes[tr->cur[i]];
        if (!((x->op == CG_LOAD || x->op == CG_SCALAR) && x->slot == tr->slot[i]))
            tr->g->store[tr->slot[i]] = tr->cur[i];
    }
    check_conditions_used(L, tr);
    return 0;
}

/* Runs `body` in a fresh sandbox of the spec with h built from `values`,
 * then finishes the graph; tr->g is freed on failure, else moved to out. */
static int run_trace(tracer *tr, const double *values, lua_CFunction body,
                     cg_graph **out, char *err)
{
    if (!(tr->g = cg_graph_new()))
        return cg_fail(err, JOPT_ENOMEM, "out of memory");
    sandbox sb;
    int rc = cg_spec_enter(&sb, tr->spec, values, err);
    if (rc) {
        cg_graph_free(tr->g);
        return rc;
    }
    lua_State *L = sb.L;
    lua_pushlightuserdata(L, tr);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &TRACER_KEY);
    lua_pushcfunction(L, body);
    lua_insert(L, -3);
    lua_pushlightuserdata(L, &sb);
    rc = cg_sb_pcall(&sb, 3, 0, err);
    cg_sb_close(&sb);
    if (rc == JOPT_EINVAL) /* require_that while tracing: a spec bug */
        rc = JOPT_ESPEC;
    if (rc == JOPT_OK) { /* sums: the body is emitted 16 times */
        const cg_graph *g = tr->g;
        int nred = 0, nvar = 0, over = -1;
        for (int i = 0; i < g->n; i++) {
            nred += (cg_op_flags((cg_op)g->nodes[i].op) & CG_F_REDUCE) != 0;
            if (g->nodes[i].varying && ++nvar == CG_MAX_NODES_REDUCE + 1)
                over = i;
        }
        if (nred && over >= 0)
            rc = cg_fail(err, JOPT_ESPEC, "%s:%d: expression graph too large "
                         "for a kernel with sums (over %d per-element nodes, a "
                         "bound on compile time)", cg_spec_path(tr->spec),
                         g->nodes[over].line, CG_MAX_NODES_REDUCE);
    }
    if (rc == JOPT_OK && (rc = cg_graph_finish(tr->g, err)) == JOPT_ESPEC) {
        /* name the operation at fault: the spec's line that made it */
        const cg_graph *g = tr->g;
        int line = g->fault >= 0 ? g->nodes[g->fault].line : 0;
        char msg[CG_ERRLEN];
        snprintf(msg, sizeof msg, "%s", err);
        if (line > 0)
            cg_fail(err, rc, "%s:%d: %s", cg_spec_path(tr->spec), line, msg);
        else
            cg_fail(err, rc, "spec %s: %s", cg_spec_path(tr->spec), msg);
    }
    if (rc) {
        cg_graph_free(tr->g);
        return rc;
    }
    *out = tr->g;
    return JOPT_OK;
}

int cg_trace(const cg_spec *spec, const double *values,
             const uint8_t *runtime, int fresh, cg_graph **out, char *err)
{
    tracer tr;
    memset(&tr, 0, sizeof tr);
    tr.spec = spec;
    tr.runtime = runtime;
    tr.fresh = fresh;
    return run_trace(&tr, values, trace_main, out, err);
}

/* ---- vector kernels ------------------------------------------------------ */

static int vk_index_of(lua_State *L, const tracer *tr)
{
    const char *k = check_name(L, 2);
    for (int i = 0; i < tr->vk->narrays; i++)
        if (!strcmp(tr->vk->arrays[i], k))
            return i;
    luaL_error(L, "kernel '%s' has no array '%s' (its arrays: list them in "
                  "'arrays')", tr->vk->name, k);
    return -1;
}

static int vk_get(lua_State *L)
{
    tracer *tr = get_tracer(L, "v");
    push_node(L, tr, tr->cur[vk_index_of(L, tr)]);
    return 1;
}

static int vk_set(lua_State *L)
{
    tracer *tr = get_tracer(L, "v");
    int i = vk_index_of(L, tr);
    int32_t v = to_node(L, tr, 3, lua_tostring(L, 2));
    if (tr->g->nodes[v].boolean)
        return luaL_error(L, "array '%s' must be set to a number, not a truth "
                             "value", lua_tostring(L, 2));
    tr->cur[i] = v;
    return 0;
}

/* The protected body: the spec table (1), h (2), the sandbox (3). */
static int vk_main(lua_State *L)
{
    tracer *tr = get_tracer(L, "trace");
    const cg_vkernel_sig *vk = tr->vk;
    cg_graph *g = tr->g;
    g->nslots = vk->narrays;
    for (int i = 0; i < vk->narrays; i++)
        tr->cur[i] = check(L, cg_graph_load(g, i), vk->arrays[i]);
    lua_getfield(L, 1, "kernels");
    lua_getfield(L, -1, vk->name);
    lua_getfield(L, -1, "run");
    tr->fn_line = fn_first_line(L, -1);
    int base = lua_gettop(L) - 1;
    lua_newtable(L);                                  /* v */
    lua_pushcfunction(L, vk_get);
    cg_sb_set_proxy(L, vk_set);
    luaL_checkstack(L, vk->nscalars + 8, "kernel scalars");
    for (int k = 0; k < vk->nscalars; k++)
        push_node(L, tr, check(L, cg_graph_hyper(g, k), "scalar"));
    lua_call(L, 1 + vk->nscalars, LUA_MULTRET);
    int nres = lua_gettop(L) - base;
    g->line = tr->fn_line;
    if (nres > CG_MAX_RESULTS)
        return fn_error(L, tr, "kernel '%s' returns %d results (at most %d)",
                        vk->name, nres, CG_MAX_RESULTS);
    for (int r = 0; r < nres; r++) {
        int t = lua_type(L, base + 1 + r);
        if (t != LUA_TNUMBER && t != LUA_TBOOLEAN &&
            !luaL_testudata(L, base + 1 + r, TRACED))
            return fn_error(L, tr, "kernel '%s': result %d: expected a number "
                            "or a traced value, got %s", vk->name, r + 1,
                            luaL_typename(L, base + 1 + r));
        int32_t x = to_node(L, tr, base + 1 + r, "kernel result");
        const cg_node *n = &g->nodes[x];
        if (n->varying || n->boolean)
            return fn_error(L, tr, "kernel '%s': result %d is %s; a kernel returns "
                            "per-call numbers (sum(...), maxall(...) and what "
                            "is computed from them)", vk->name, r + 1,
                            n->boolean ? "a truth value" : "per element");
        g->result[r] = x;
    }
    g->nresult = nres;
    for (int i = 0; i < vk->narrays; i++) {
        const cg_node *x = &g->nodes[tr->cur[i]];
        if (!(x->op == CG_LOAD && x->slot == i))
            g->store[i] = tr->cur[i];
    }
    check_conditions_used(L, tr);
    return 0;
}

int cg_trace_vkernel(const cg_spec *spec, const char *name, cg_graph **out,
                     char *err)
{
    tracer tr;
    memset(&tr, 0, sizeof tr);
    tr.spec = spec;
    if (!(tr.vk = cg_spec_find_vkernel(spec, name)))
        return cg_fail(err, JOPT_ESPEC, "spec %s has no kernel '%s'",
                       cg_spec_path(spec), name);
    return run_trace(&tr, cg_spec_defaults(spec), vk_main, out, err);
}
