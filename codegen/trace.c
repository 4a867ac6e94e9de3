/*
 * trace.c - runs a spec's update(p, g, s, h, t) (or one of its named
 * kernels, or a closure optimizer's vector kernel) on traced values and
 * records the expression graph.
 *
 * p, g, per-element state, inputs and t are userdata whose metamethods add
 * graph nodes; hyperparameters and the tensor's rank are plain Lua values,
 * so `if h.amsgrad then` and `if dim() > 1 then` are decided here, once.
 * A node that folds to a constant comes back to Lua as a plain number (or
 * boolean), so branches on constants stay Lua branches.
 */
#include <lauxlib.h>
#include <stdarg.h>
#include <string.h>

#include "sandbox.h"

static char TRACER_KEY;
#define TRACED "jopt.traced"
#define DECL "jopt.state"

/* a state declaration other than a number or `unset`: scalar(v),
 * group(v), rows(v), cols(v) */
typedef struct decl {
    int kind;   /* cg_kind, or -1 for a group state */
    int unset;
    int f32;    /* a group state rounded to float32 */
    double init;
} decl;

enum { OFF, IN_SLOT, IN_GROUP }; /* where an active state lives */

typedef struct tracer {
    cg_graph *g;
    const cg_spec *spec;
    const cg_request *req;      /* NULL for a vector kernel */
    int rank;                   /* the tensor's rank as traced */
    int active[CG_MAX_SLOTS];   /* by spec state index: OFF, IN_SLOT, IN_GROUP */
    int slot[CG_MAX_SLOTS];     /* its array slot, or group state index */
    int32_t cur[CG_MAX_SLOTS];  /* current value node; -1 reads as nil */
    int input_slot[CG_MAX_INPUTS]; /* slot of each spec input given, or -1 */
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
        luaL_error(L, "%s can only be used inside update() or a kernel", what);
    return tr;
}

/* the spec line calling the C function running now: the innermost line of
 * the spec's own file, so an op made inside a prelude helper is named by
 * the spec line that called the helper */
static int caller_line(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &TRACER_KEY);
    const tracer *tr = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return tr ? spec_line(L, tr) : 0;
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
        luaL_error(L, "%s: this value does not vary over what %s reduces "
                      "(a per-step value has no sum over the tensor; a per-row "
                      "value has none over axis -1, a per-column one none over "
                      "axis -2: that axis is reduced already)", op, op);
    if (r == -5)
        luaL_error(L, "%s takes a per-tensor value (sum over the tensor first)", op);
    if (r == -8)
        luaL_error(L, "%s", get_tracer(L, op)->g->why);
    return r;
}

static int32_t op(lua_State *L, tracer *tr, cg_op o, int32_t a, int32_t b,
                  int32_t c, const char *name)
{
    return check(L, cg_graph_op(tr->g, o, a, b, c, caller_line(L)), name);
}

static int32_t to_node(lua_State *L, tracer *tr, int idx, const char *what)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        return check(L, cg_graph_const(tr->g, lua_tonumber(L, idx)), what);
    case LUA_TBOOLEAN: {
        int32_t v = check(L, cg_graph_const(tr->g, lua_toboolean(L, idx)), what);
        int32_t z = check(L, cg_graph_const(tr->g, 0), what);
        return op(L, tr, CG_NE, v, z, -1, what);
    }
    default: {
        int32_t *u = luaL_testudata(L, idx, TRACED);
        if (u)
            return *u;
        luaL_error(L, "%s: expected a number or a traced value, got %s", what,
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

/* remembers a traced condition, to check that the graph uses it */
static void note_condition(lua_State *L, tracer *tr, int32_t r)
{
    const cg_node *x = &tr->g->nodes[r];
    if (x->boolean && x->op != CG_CONST && tr->ncond < 256) {
        tr->cond[tr->ncond] = r;
        tr->cond_line[tr->ncond++] = caller_line(L);
    }
}

/* Every prelude function and arithmetic metamethod: upvalue 1 is the op. */
static int apply(lua_State *L)
{
    cg_op o = (cg_op)lua_tointeger(L, lua_upvalueindex(1));
    const char *name = cg_op_name(o);
    tracer *tr = get_tracer(L, name);
    int arity = cg_op_arity(o);
    if ((cg_op_flags(o) & CG_F_SELECT) && lua_type(L, 1) == LUA_TBOOLEAN) {
        lua_pushvalue(L, lua_toboolean(L, 1) ? 2 : 3); /* decided here */
        return 1;
    }
    if (lua_gettop(L) != arity) /* an extra one would be dropped */
        return luaL_error(L, "%s takes %d argument%s, got %d", name, arity,
                          arity == 1 ? "" : "s", lua_gettop(L));
    int32_t a[3] = {-1, -1, -1};
    for (int i = 0; i < arity; i++)
        a[i] = to_node(L, tr, i + 1, name);
    int32_t r = op(L, tr, o, a[0], a[1], a[2], name);
    note_condition(L, tr, r);
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
        for (int s = 0; s < g->ngstate; s++)
            used |= g->gstore[s] == n;
        for (int r = 0; r < g->nresult; r++)
            used |= g->result[r] == n;
        for (int r = 0; r < g->nguard; r++)
            used |= g->guard[r] == n;
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
    push_node(L, tr, op(L, tr, CG_NEG, a, -1, -1, "-"));
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

static void push_op(lua_State *L, cg_op o)
{
    lua_pushinteger(L, o);
    lua_pushcclosure(L, apply, 1);
}

/* ---- the tensor: dim(), numel(), size(k), input(name) ------------------------ */

/* The rank the kernel is traced for: looking at it makes the kernel one
 * for tensors of that rank only. */
static int look_at_rank(tracer *tr)
{
    tr->g->rank = tr->rank;
    return tr->rank;
}

static int t_dim(lua_State *L)
{
    tracer *tr = get_tracer(L, "dim()");
    lua_pushinteger(L, look_at_rank(tr));
    return 1;
}

static int t_numel(lua_State *L)
{
    tracer *tr = get_tracer(L, "numel()");
    push_node(L, tr, check(L, cg_graph_leaf(tr->g, CG_SHAPE, CG_DOM_TENSOR, 0), "numel"));
    return 1;
}

/* axis k (negative from the end, as torch) as a count from the end: 1 for
 * the last */
static int from_end(lua_State *L, tracer *tr, lua_Integer k, const char *fn)
{
    int rank = look_at_rank(tr);
    lua_Integer e = k < 0 ? -k : rank - k;
    if (e < 1 || e > rank)
        luaL_error(L, "%s: axis %d: the tensor has %d dimension%s", fn, (int)k,
                   rank, rank == 1 ? "" : "s");
    return (int)e;
}

/* The sizes, outermost first as torch's p.shape, as plain numbers: the
 * kernel is then one for tensors of this shape only. */
static int t_shape(lua_State *L)
{
    tracer *tr = get_tracer(L, "shape()");
    int rank = look_at_rank(tr);
    if (!tr->req || !tr->req->shape)
        return luaL_error(L, "shape(): this kernel is traced without the "
                             "tensor's sizes (give them: jopt_spec_set_shape, "
                             "jopt show or compile --shape 7x9)");
    tr->g->shaped = 1;
    luaL_checkstack(L, rank, "shape()");
    for (int d = rank - 1; d >= 0; d--)
        lua_pushinteger(L, (lua_Integer)tr->req->shape[d]);
    return rank;
}

/* transpose(x): x as a view, its rows as columns; matmul(a, b): the
 * matrix product, a GEMM (matrix.c) */
static int t_transpose(lua_State *L)
{
    tracer *tr = get_tracer(L, "transpose");
    int32_t a = to_node(L, tr, 1, "transpose");
    push_node(L, tr, check(L, cg_matrix_transpose(tr->g, a, caller_line(L)), "transpose"));
    return 1;
}

static int t_matmul(lua_State *L)
{
    tracer *tr = get_tracer(L, "matmul");
    if (!tr->req)
        return luaL_error(L, "matmul: a vector kernel has no matrices");
    int32_t a = to_node(L, tr, 1, "matmul"), b = to_node(L, tr, 2, "matmul");
    push_node(L, tr, check(L, cg_matrix_matmul(tr->g, a, b, caller_line(L)), "matmul"));
    return 1;
}

static int t_size(lua_State *L)
{
    tracer *tr = get_tracer(L, "size()");
    int e = from_end(L, tr, luaL_checkinteger(L, 1), "size");
    push_node(L, tr, check(L, cg_graph_leaf(tr->g, CG_SHAPE, CG_DOM_TENSOR, e), "size"));
    return 1;
}

static int t_input(lua_State *L)
{
    tracer *tr = get_tracer(L, "input()");
    const char *name = luaL_checkstring(L, 1);
    for (size_t i = 0; i < cg_spec_ninputs(tr->spec); i++)
        if (!strcmp(cg_spec_input(tr->spec, i), name)) {
            if (tr->input_slot[i] < 0)
                lua_pushnil(L); /* not given this step */
            else
                push_node(L, tr, check(L, cg_graph_leaf(tr->g, CG_LOAD, CG_DOM_ELEM,
                                                        tr->input_slot[i]), name));
            return 1;
        }
    return luaL_error(L, "input('%s'): the spec declares no such input (list "
                         "it in 'inputs')", name);
}

/* ---- requirements of a step: require_that on a traced condition ------------- */

/* an error at the spec's line: the caller of the prelude's require_that */
static int spec_error(lua_State *L, const char *msg)
{
    luaL_where(L, 2);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

int cg_trace_require_step(lua_State *L)
{
    tracer *tr = get_tracer(L, "require_that on a traced value");
    int32_t c = to_node(L, tr, 1, "require_that");
    const char *msg = luaL_checkstring(L, 2);
    const cg_node *x = &tr->g->nodes[c];
    if (!x->boolean)
        return spec_error(L, "require_that needs a condition (lt, le, gt, ge, eq, "
                             "ne), not a number");
    if (cg_dom_varying(x->dom))
        return spec_error(L, "require_that takes a per-step condition (on t, the "
                             "options, group state, sizes), not a per-element one");
    cg_graph *g = tr->g;
    if (g->nguard == CG_MAX_GUARDS)
        return spec_error(L, "more than 16 requirements in one kernel");
    lua_Debug ar;
    int line = lua_getstack(L, 2, &ar) && lua_getinfo(L, "l", &ar) ? ar.currentline : 0;
    char buf[CG_ERRLEN];
    int at = snprintf(buf, sizeof buf, "%s:%d: ", cg_spec_path(tr->spec), line);
    snprintf(buf + at, sizeof buf - (size_t)at, "%s", msg);
    if (!(g->guard_msg[g->nguard] = cg_strdup(buf)))
        return luaL_error(L, "out of memory");
    g->guard_text[g->nguard] = at;
    g->guard_line[g->nguard] = line;
    g->guard[g->nguard++] = c;
    return 0;
}

/* ---- reductions: sum, mean, amax, maxall --------------------------------------- */

enum { R_SUM, R_MEAN, R_MAX };

/* x reduced over `axis` (nil: the tensor; -1 and -2, or their positive
 * names: the last two axes; "group": the tensors of the group) */
static int reduce(lua_State *L, int kind, const char *fn)
{
    tracer *tr = get_tracer(L, fn);
    int32_t x = to_node(L, tr, 1, fn);
    int dom = tr->g->nodes[x].dom;
    int32_t r;
    if (lua_isnoneornil(L, 2)) {
        if (!cg_dom_varying(dom))
            luaL_error(L, "%s: a per-step value has no %s over the tensor", fn, fn);
        r = op(L, tr, kind == R_MAX ? CG_MAXALL : CG_SUM, x, -1, -1, fn);
        if (kind == R_MEAN) { /* over the elements, rows or columns */
            int32_t n = check(L, cg_graph_leaf(tr->g, CG_SHAPE, CG_DOM_TENSOR, 0), fn);
            if (dom != CG_DOM_ELEM) {
                int32_t d = check(L, cg_graph_leaf(tr->g, CG_SHAPE, CG_DOM_TENSOR,
                                                   dom == CG_DOM_ROW ? 1 : 2), fn);
                n = op(L, tr, CG_DIV, n, d, -1, fn);
            }
            r = op(L, tr, CG_DIV, r, n, -1, fn);
        }
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        if (strcmp(lua_tostring(L, 2), "group") || kind == R_MEAN)
            luaL_error(L, "%s: the axis must be a number, or \"group\" (for sum "
                          "and amax)", fn);
        if (cg_dom_varying(dom)) /* over each tensor, then over the group */
            x = op(L, tr, kind == R_MAX ? CG_MAXALL : CG_SUM, x, -1, -1, fn);
        r = op(L, tr, kind == R_MAX ? CG_GMAX : CG_GSUM, x, -1, -1, fn);
    } else {
        int e = from_end(L, tr, luaL_checkinteger(L, 2), fn);
        if (e > 2)
            luaL_error(L, "%s: axis %d: only the last two axes (-1 and -2) can "
                          "be reduced", fn, (int)lua_tointeger(L, 2));
        if (tr->rank < 2)
            luaL_error(L, "%s over an axis needs a tensor of 2 or more "
                          "dimensions: check dim() first", fn);
        if (!cg_dom_varying(dom))
            luaL_error(L, "%s over an axis takes a per-element (or per-row or "
                          "per-column) value", fn);
        cg_op o = e == 1 ? (kind == R_MAX ? CG_RMAX : CG_RSUM)
                         : (kind == R_MAX ? CG_CMAX : CG_CSUM);
        r = op(L, tr, o, x, -1, -1, fn);
        if (kind == R_MEAN)
            r = op(L, tr, CG_DIV, r, check(L, cg_graph_leaf(tr->g, CG_SHAPE,
                                                            CG_DOM_TENSOR, e), fn),
                   -1, fn);
    }
    push_node(L, tr, r);
    return 1;
}

static int t_sum(lua_State *L) { return reduce(L, R_SUM, "sum"); }
static int t_mean(lua_State *L) { return reduce(L, R_MEAN, "mean"); }
static int t_amax(lua_State *L) { return reduce(L, R_MAX, "amax"); }

/* ---- state declarations: scalar(v), group(v), rows(v), cols(v) ----------------- */

static int make_decl(lua_State *L, int kind, const char *fn)
{
    decl d = {kind, 0, 0, 0};
    if (lua_type(L, 1) == LUA_TNUMBER)
        d.init = lua_tonumber(L, 1);
    else if ((kind == CG_KIND_ROW || kind == CG_KIND_COL) && cg_sb_is_unset(L, 1))
        d.unset = 1;
    else
        luaL_error(L, "%s(v): v is a number%s", fn,
                   kind == CG_KIND_ROW || kind == CG_KIND_COL ? " or unset" : "");
    const char *prec = luaL_optstring(L, 2, NULL);
    if (prec) {
        if (kind == CG_KIND_SCALAR && !strcmp(prec, "double"))
            d.kind = CG_KIND_SCALAR64;
        else if (kind == -1 && !strcmp(prec, "float"))
            d.f32 = 1;
        else if (!(kind == CG_KIND_SCALAR && !strcmp(prec, "float")) &&
                 !(kind == -1 && !strcmp(prec, "double")))
            luaL_error(L, "%s(v, precision): precision is \"float\" or \"double\"", fn);
    }
    decl *u = lua_newuserdatauv(L, sizeof *u, 0);
    *u = d;
    luaL_setmetatable(L, DECL);
    return 1;
}

static int d_scalar(lua_State *L) { return make_decl(L, CG_KIND_SCALAR, "scalar"); }
static int d_group(lua_State *L) { return make_decl(L, -1, "group"); }
static int d_rows(lua_State *L) { return make_decl(L, CG_KIND_ROW, "rows"); }
static int d_cols(lua_State *L) { return make_decl(L, CG_KIND_COL, "cols"); }

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
    static const luaL_Reg fns[] = {
        {"dim", t_dim}, {"numel", t_numel}, {"size", t_size}, {"input", t_input},
        {"shape", t_shape}, {"transpose", t_transpose}, {"matmul", t_matmul},
        {"sum", t_sum}, {"mean", t_mean}, {"amax", t_amax}, {"maxall", t_amax},
        {"scalar", d_scalar}, {"group", d_group}, {"rows", d_rows}, {"cols", d_cols},
        {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    luaL_newmetatable(L, DECL);
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
    static const struct {
        const char *name;
        cg_op op;
    } arith[] = {{"__add", CG_ADD}, {"__sub", CG_SUB}, {"__mul", CG_MUL},
                 {"__div", CG_DIV}, {"__pow", CG_POW}, {"__mod", CG_MOD}};
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
    const char *other[] = {"__idiv", "__band", "__bor", "__bxor",
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
            if (tr->active[i] == OFF)
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
    const char *name = lua_tostring(L, 2);
    if (lua_isnil(L, 3))
        return luaL_error(L, "state '%s' cannot be set to nil", name);
    int32_t v = to_node(L, tr, 3, name);
    const cg_node *x = &tr->g->nodes[v];
    if (x->boolean)
        return luaL_error(L, "state '%s' must be a number, not a truth value", name);
    if (tr->active[i] == IN_GROUP) {
        if (x->dom != CG_DOM_GROUP)
            return luaL_error(L, "state '%s' is per group: it takes a value "
                              "that is the same for every tensor of the group "
                              "(hyperparameters, group states and sums, and t "
                              "with steps = \"group\")", name);
        if (tr->g->gstate_f32[tr->slot[i]])
            v = op(L, tr, CG_F32, v, -1, -1, "f32");
    } else {
        int kind = tr->g->kind[tr->slot[i]];
        int want = kind == CG_KIND_ROW ? CG_DOM_ROW : kind == CG_KIND_COL ? CG_DOM_COL
                   : kind == CG_KIND_ELEM ? CG_DOM_ELEM : CG_DOM_TENSOR;
        if (cg_dom_join(x->dom, want) != want)
            return luaL_error(L, "state '%s' is %s: it takes %s", name,
                              want == CG_DOM_TENSOR ? "a per-tensor scalar"
                              : want == CG_DOM_ROW ? "per row" : "per column",
                              want == CG_DOM_TENSOR ? "a per-step value, not a "
                                                      "per-element one"
                              : "a per-step or per-row (column) value");
        /* stored in float32, as torch's 0-dim tensors: later reads see the
         * rounded value, as torch's .item() does */
        if (kind == CG_KIND_SCALAR)
            v = op(L, tr, CG_F32, v, -1, -1, "f32");
    }
    tr->cur[i] = v;
    return 0;
}

/* Reads the spec's state table (at index `st`) for these hyperparameters
 * (at index `h`) and lays out the arrays and group states. */
static void layout_state(lua_State *L, sandbox *sb, tracer *tr, int st, int h)
{
    cg_graph *g = tr->g;
    int fresh = tr->req && tr->req->fresh;
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
        decl *d = luaL_testudata(L, -1, DECL), plain = {CG_KIND_ELEM, unset, 0, 0};
        if (!unset && !d && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "state '%s': initial value must be a number, unset, "
                          "false, scalar(v), group(v), rows(v) or cols(v), got %s",
                          name, luaL_typename(L, -1));
        if (!d) {
            plain.init = unset ? 0 : lua_tonumber(L, -1);
            d = &plain;
        }
        lua_pop(L, 1);
        if (d->kind == -1) { /* per group */
            if (g->ngstate == CG_MAX_GSTATE)
                luaL_error(L, "more than %d group states", CG_MAX_GSTATE);
            int k = g->ngstate++;
            tr->active[i] = IN_GROUP;
            tr->slot[i] = k;
            g->gstate[k] = (int)i;
            g->gstate_f32[k] = (uint8_t)d->f32;
            g->ginit[k] = d->init;
            /* read by the spec's state index: the group keeps them so */
            tr->cur[i] = check(L, cg_graph_leaf(g, CG_GSTATE, CG_DOM_GROUP, (int)i), name);
            continue;
        }
        if ((d->kind == CG_KIND_ROW || d->kind == CG_KIND_COL) && look_at_rank(tr) < 2)
            luaL_error(L, "state '%s' is per %s: the tensor needs 2 or more "
                          "dimensions (choose it in a state function with dim())",
                          name, d->kind == CG_KIND_ROW ? "row" : "column");
        if (g->nslots == CG_MAX_SLOTS - CG_MAX_INPUTS)
            luaL_error(L, "more than %d states", CG_MAX_SLOTS - CG_MAX_INPUTS - 2);
        int s = g->nslots++;
        int k = g->nstate++;
        tr->active[i] = IN_SLOT;
        tr->slot[i] = s;
        g->kind[s] = (uint8_t)d->kind;
        if (d->kind == CG_KIND_ELEM && tr->req) { /* state_dtype: per-element states */
            g->dtype[s] = tr->req->state_dtype;
            g->sr[s] = tr->req->stochastic && g->dtype[s] == CG_DT_BF16;
        }
        g->state[k] = (int)i;
        g->init[k] = d->unset ? CG_INIT_UNSET : CG_INIT_CONST;
        g->init_value[k] = d->init;
        if (!(d->unset && fresh)) {
            int scalar = d->kind == CG_KIND_SCALAR || d->kind == CG_KIND_SCALAR64;
            int dom = d->kind == CG_KIND_ROW ? CG_DOM_ROW : d->kind == CG_KIND_COL
                      ? CG_DOM_COL : CG_DOM_ELEM;
            tr->cur[i] = check(L, scalar ? cg_graph_leaf(g, CG_SCALAR, CG_DOM_TENSOR, s)
                                         : cg_graph_leaf(g, CG_LOAD, dom, s), name);
        }
    }
    /* the inputs given this step follow the states */
    for (size_t i = 0; i < cg_spec_ninputs(tr->spec); i++) {
        tr->input_slot[i] = -1;
        if (!tr->req || !(tr->req->inputs >> i & 1))
            continue;
        int s = g->nslots++;
        g->kind[s] = CG_KIND_INPUT;
        g->input[g->ninput++] = (int)i;
        tr->input_slot[i] = s;
    }
}

/* Hyperparameters passed at run time become traced per-step values in h:
 * h's values live in the upvalue of its __index, a tuple's behind its own
 * proxy (spec.c). */
static void trace_runtime_hypers(lua_State *L, tracer *tr, int h)
{
    const uint8_t *runtime = tr->req ? tr->req->runtime : NULL;
    if (!runtime)
        return;
    lua_getmetatable(L, h);
    lua_getfield(L, -1, "__index");
    lua_getupvalue(L, -1, 1);                 /* h's values */
    for (size_t i = 0; i < cg_spec_nhyper(tr->spec); i++) {
        const cg_hyper *hy = cg_spec_hyper(tr->spec, i);
        if (!runtime[i] || !hy->runtime_ok)
            continue;
        if (hy->tuple) {
            lua_getfield(L, -1, hy->name);    /* the tuple's proxy */
            lua_getmetatable(L, -1);
            lua_getfield(L, -1, "__index");   /* its values */
            for (int k = 0; k < hy->len; k++) {
                push_node(L, tr, check(L, cg_graph_leaf(tr->g, CG_HYPER, CG_DOM_GROUP,
                                                        hy->offset + k), hy->name));
                lua_rawseti(L, -2, k + 1);
            }
            lua_pop(L, 3);
        } else {
            push_node(L, tr, check(L, cg_graph_leaf(tr->g, CG_HYPER, CG_DOM_GROUP,
                                                    hy->offset), hy->name));
            lua_setfield(L, -2, hy->name);
        }
    }
    lua_pop(L, 3);
}

/* what the update (or a named kernel) left in s: stores of changed states */
static int collect_state(lua_State *L, tracer *tr, int fresh)
{
    cg_graph *g = tr->g;
    size_t n = cg_spec_nstate(tr->spec);
    for (size_t i = 0; i < n; i++) {
        if (tr->active[i] == OFF)
            continue;
        if (tr->cur[i] < 0) {
            if (fresh)
                return fn_error(L, tr, "state '%s' starts unset but update() "
                                "does not set it on a parameter's first step",
                                cg_spec_state_name(tr->spec, i));
            continue;
        }
        const cg_node *x = &g->nodes[tr->cur[i]];
        if (tr->active[i] == IN_GROUP) {
            if (!(x->op == CG_GSTATE && x->slot == (int)i))
                g->gstore[tr->slot[i]] = tr->cur[i];
        } else if (!((x->op == CG_LOAD || x->op == CG_SCALAR) && x->slot == tr->slot[i])) {
            g->store[tr->slot[i]] = tr->cur[i];
        }
    }
    return 0;
}

/* The protected body: stack holds the spec table (1) and h (2). */
static int trace_main(lua_State *L)
{
    tracer *tr = get_tracer(L, "trace");
    sandbox *sb = lua_touserdata(L, 3);
    const char *named = tr->req->named;
    trace_runtime_hypers(L, tr, 2);
    lua_getfield(L, 1, "state");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    layout_state(L, sb, tr, 4, 2);
    if (named) {                                           /* 5 */
        lua_getfield(L, 1, "kernels");
        lua_getfield(L, -1, named);
        lua_remove(L, -2);
    } else {
        lua_getfield(L, 1, "update");
    }
    tr->fn_line = fn_first_line(L, -1);
    cg_graph *g = tr->g;
    g->dtype[0] = tr->req->dtype;
    g->dtype[1] = tr->req->grad_dtype;
    g->sr[0] = tr->req->stochastic && g->dtype[0] == CG_DT_BF16;
    push_node(L, tr, check(L, cg_graph_leaf(g, CG_LOAD, CG_DOM_ELEM, 0), "p"));
    int nargs = 4;
    if (!named) {
        int32_t grad = check(L, cg_graph_leaf(g, CG_LOAD, CG_DOM_ELEM, 1), "g");
        if (tr->req->grad_scale) { /* unscaled in float, written back (torch) */
            int32_t scale = check(L, cg_graph_leaf(g, CG_GSCALE, CG_DOM_GROUP, 0), "g");
            grad = g->store[1] = op(L, tr, CG_DIV, grad, scale, -1, "g");
        }
        push_node(L, tr, grad);
        nargs++;
    }
    lua_newtable(L);                                       /* s */
    lua_pushcfunction(L, state_get);
    cg_sb_set_proxy(L, state_set);
    lua_pushvalue(L, 2);
    int tdom = cg_spec_group_steps(tr->spec) ? CG_DOM_GROUP : CG_DOM_TENSOR;
    push_node(L, tr, check(L, cg_graph_leaf(tr->g, CG_STEP, tdom, -1), "t"));
    int base = lua_gettop(L) - nargs - 1;
    lua_call(L, nargs, LUA_MULTRET);
    const char *fn = named ? "a kernel" : "update()";
    int nres = lua_gettop(L) - base;
    if (nres > 1) /* a second value would be lost */
        return fn_error(L, tr, "%s returns %d values; it returns one, the new "
                        "parameter value (states are set through s)", fn, nres);
    if (nres == 0)
        lua_pushnil(L);
    if (lua_isnil(L, -1))
        return fn_error(L, tr, "%s must return the new parameter value", fn);
    if (lua_type(L, -1) != LUA_TNUMBER && lua_type(L, -1) != LUA_TBOOLEAN &&
        !luaL_testudata(L, -1, TRACED))
        return fn_error(L, tr, "%s result: expected a number or a traced "
                        "value, got %s", fn, luaL_typename(L, -1));
    tr->g->store[0] = to_node(L, tr, -1, named ? "the kernel's result"
                                                : "update() result");
    if (tr->g->nodes[tr->g->store[0]].boolean)
        return fn_error(L, tr, "%s must return a number, not a truth value", fn);
    if (tr->g->nodes[tr->g->store[0]].op == CG_LOAD && tr->g->nodes[tr->g->store[0]].slot == 0)
        tr->g->store[0] = -1; /* unchanged */
    collect_state(L, tr, tr->req->fresh && !named);
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
    const int64_t *shape = tr->req ? tr->req->shape : NULL;
    if (shape) { /* for shape() and matrices; the key, if they are used */
        memcpy(tr->g->shape, shape, (size_t)tr->rank * sizeof *shape);
        if (tr->rank == 2)
            cg_matrix_tensor(tr->g, shape[1], shape[0]);
    }
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
    rc = cg_sb_nomem(&sb, rc, err);
    cg_sb_close(&sb);
    if (rc == JOPT_EINVAL) /* require_that while tracing: a spec bug */
        rc = JOPT_ESPEC;
    if (rc == JOPT_OK) { /* a bound on compile time for loops with sums */
        const cg_graph *g = tr->g;
        int nred = 0, nvar = 0, over = -1;
        for (int i = 0; i < g->n; i++) {
            nred += (cg_op_flags((cg_op)g->nodes[i].op) & CG_F_REDUCE) != 0;
            if (cg_dom_varying(g->nodes[i].dom) && ++nvar == CG_MAX_NODES_REDUCE + 1)
                over = i;
        }
        if (nred && over >= 0)
            rc = cg_fail(err, JOPT_ESPEC, "%s:%d: expression graph too large "
                         "for a kernel with sums (over %d per-element nodes, a "
                         "bound on compile time)", cg_spec_path(tr->spec),
                         g->nodes[over].line, CG_MAX_NODES_REDUCE);
    }
    if (rc == JOPT_OK)
        rc = cg_graph_finish(tr->g, cg_spec_path(tr->spec), err);
    if (rc) {
        cg_graph_free(tr->g);
        return rc;
    }
    *out = tr->g;
    return JOPT_OK;
}

int cg_trace(const cg_spec *spec, const cg_request *req, cg_graph **out,
             char *err)
{
    tracer tr;
    memset(&tr, 0, sizeof tr);
    tr.spec = spec;
    tr.req = req;
    tr.rank = req->rank > 0 ? req->rank : 1;
    if (req->named && cg_spec_find_named(spec, req->named) < 0)
        return cg_fail(err, JOPT_EINVAL, "spec %s has no kernel '%s'",
                       cg_spec_path(spec), req->named);
    return run_trace(&tr, req->values, trace_main, out, err);
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
        tr->cur[i] = check(L, cg_graph_leaf(g, CG_LOAD, CG_DOM_ELEM, i), vk->arrays[i]);
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
        push_node(L, tr, check(L, cg_graph_leaf(g, CG_HYPER, CG_DOM_GROUP, k), "scalar"));
    lua_call(L, 1 + vk->nscalars, LUA_MULTRET);
    int nres = lua_gettop(L) - base;
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
        if (cg_dom_varying(n->dom) || n->boolean)
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
    tr.rank = 1;
    if (!(tr.vk = cg_spec_find_vkernel(spec, name)))
        return cg_fail(err, JOPT_ESPEC, "spec %s has no kernel '%s'",
                       cg_spec_path(spec), name);
    return run_trace(&tr, cg_spec_defaults(spec), vk_main, out, err);
}
