/*
 * sandbox.c - the Lua state a spec runs in (see sandbox.h).
 *
 * Lua's count hook never fires inside C library functions, so those that
 * can run unbounded (pattern matching, string.rep, table.move) are left
 * out; everything else is bounded by the three budgets.  A tripped budget
 * stays tripped: the hook raises again at once, and pcall re-raises, so a
 * spec cannot swallow the error.
 */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sandbox.h"

static char ENV_KEY;   /* registry key of the environment table */
static char UNSET_KEY; /* ... and of the `unset` sentinel */
static char NONE_KEY;  /* ... and of `none`, torch's None for an option */
#define SB_C_MARGIN (1u << 20)

/* Outside cg_sb_pcall a failed allocation would make Lua panic (and abort),
 * so there a failure of the context's allocator (jopt_ctx_new_ex) is served
 * from a reserve taken when the state is made, and remembered: the
 * operation then fails with JOPT_ENOMEM all the same (cg_sb_nomem). */
static int in_reserve(const sandbox *sb, const void *p)
{
    return sb->reserve && (const char *)p >= sb->reserve &&
           (const char *)p < sb->reserve + SB_RESERVE;
}

static void *reserve_take(sandbox *sb, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!sb->reserve || n > SB_RESERVE - sb->reserve_used)
        return NULL;
    void *p = sb->reserve + sb->reserve_used;
    sb->reserve_used += n;
    sb->reserve_live++;
    sb->reserve_hit = 1;
    return p;
}

static void release(sandbox *sb, void *ptr, size_t osize)
{
    if (in_reserve(sb, ptr)) {
        if (--sb->reserve_live == 0)
            sb->reserve_used = 0;
    } else if (ptr) {
        cg_mem_call(sb->alloc, ptr, osize, 0);
    }
}

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    sandbox *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        release(sb, ptr, osize);
        sb->mem -= old;
        return NULL;
    }
    /* Outside cg_sb_pcall jopt's own C side gets a margin over the spec's
     * cap, for the same reason as the reserve. */
    size_t cap = sb->in_lua ? SB_MEM_LIMIT : SB_MEM_LIMIT + SB_C_MARGIN;
    if (nsize > old && ((sb->in_lua && (sb->tripped == SB_MEM ||
                                        sb->tripped == SB_NOMEM)) ||
                        sb->mem + (nsize - old) > cap)) {
        if (sb->L && sb->in_lua && sb->tripped == SB_OK) /* not while made */
            sb->tripped = SB_MEM;
        return NULL;
    }
    void *p;
    if (in_reserve(sb, ptr)) { /* out of the reserve as soon as it can */
        if (nsize <= old)
            return ptr;
        p = cg_mem_call(sb->alloc, NULL, 0, nsize);
        if (p) {
            memcpy(p, ptr, old);
            release(sb, ptr, osize);
        }
    } else {
        p = cg_mem_call(sb->alloc, ptr, osize, nsize);
    }
    if (!p) { /* counted by cg_mem_call */
        if (sb->L && sb->in_lua) {
            sb->tripped = SB_NOMEM; /* a spec's pcall cannot swallow it */
        } else if (sb->L && (p = reserve_take(sb, nsize)) && ptr) {
            memcpy(p, ptr, old < nsize ? old : nsize);
            release(sb, ptr, osize);
        }
        if (!p)
            return NULL;
    }
    sb->mem = sb->mem - old + nsize;
    return p;
}

int cg_sb_nomem(sandbox *sb, int rc, char *err)
{
    if (rc == JOPT_OK && sb->reserve_hit)
        return cg_fail(err, JOPT_ENOMEM, "spec %s: out of memory", sb->path);
    return rc;
}

static long long elapsed_ns(const sandbox *sb)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - sb->start.tv_sec) * 1000000000LL +
           (now.tv_nsec - sb->start.tv_nsec);
}

static sandbox *get_sb(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

static void hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    sandbox *sb = get_sb(L);
    sb->instr += 1000;
    if (sb->tripped == SB_OK && sb->instr > SB_INSTR_LIMIT)
        sb->tripped = SB_INSTR;
    if (sb->tripped == SB_OK && elapsed_ns(sb) > SB_TIME_LIMIT_NS)
        sb->tripped = SB_TIME;
    if (sb->tripped != SB_OK)
        luaL_error(L, "sandbox limit exceeded");
}

/* pcall that cannot swallow a tripped budget */
static int safe_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    sandbox *sb = get_sb(L);
    if (sb->tripped != SB_OK || sb->invalid || status == LUA_ERRMEM)
        return lua_error(L);
    lua_pushboolean(L, status == LUA_OK);
    lua_insert(L, 1);
    return lua_gettop(L);
}

/* setmetatable that keeps specs inside the budgets: Lua runs __gc with
 * hooks off, and a C function as a metamethod (__index = table.concat) can
 * loop inside C where the count hook never fires. */
static int safe_setmetatable(lua_State *L)
{
    if (lua_istable(L, 2)) {
        /* checks a copy, and installs the copy locked: changing the
         * caller's table afterwards cannot slip a metamethod past */
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
            if (strcmp(k, "__gc") == 0 || strcmp(k, "__close") == 0)
                return luaL_error(L, "setmetatable: %s is not allowed in a spec", k);
            if (lua_iscfunction(L, -1))
                return luaL_error(L, "setmetatable: a library function cannot "
                                     "be the metamethod %s in a spec", k);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
        lua_replace(L, 2);
    }
    lua_pushvalue(L, lua_upvalueindex(1)); /* the library's setmetatable */
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* the C half of require_that: records a refused value and raises */
static int refuse(lua_State *L)
{
    sandbox *sb = get_sb(L);
    const char *msg = luaL_checkstring(L, 1);
    sb->invalid = 1;
    snprintf(sb->message, sizeof sb->message, "%s", msg);
    return lua_error(L);
}

/* ---- what a spec sees must not depend on the process -------------------
 * Lua seeds its string hash per state and tables live at addresses that
 * vary between runs, so pairs() order, tostring of a table and
 * string.format's %p differ from process to process; a spec that built
 * its update in pairs() order gave a different kernel in each.  In the
 * sandbox, next() and pairs() go in key order (numbers by value, then
 * strings by bytes, then false, true) and refuse keys that have no such
 * order (tables, functions: their order would be their addresses);
 * tostring and format print "table", not "table: 0x55..."; %p is refused. */

static int key_rank(lua_State *L, int idx)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: return 0;
    case LUA_TSTRING: return 1;
    case LUA_TBOOLEAN: return 2;
    default: return -1;
    }
}

/* whether key a sorts before key b (both of a rank >= 0) */
static int key_less(lua_State *L, int a, int b)
{
    int ra = key_rank(L, a), rb = key_rank(L, b);
    if (ra != rb)
        return ra < rb;
    if (ra == 0)
        return lua_compare(L, a, b, LUA_OPLT); /* numbers: no metamethod */
    if (ra == 2)
        return !lua_toboolean(L, a) && lua_toboolean(L, b);
    size_t la, lb;
    const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
    int c = memcmp(sa, sb, la < lb ? la : lb);
    return c < 0 || (c == 0 && la < lb);
}

static sandbox *get_sb(lua_State *L);

/* next(t, k) in key order: the least key greater than k (the least key
 * for nil), by one pass over t, charged to the instruction budget */
static int sorted_next(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    luaL_checkstack(L, 6, "next");
    sandbox *sb = get_sb(L);
    int have = 0; /* the best key so far is at 3 */
    long n = 0;
    lua_pushnil(L); /* 3: best */
    lua_pushnil(L); /* 4: the walk's key */
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        n++;
        if (key_rank(L, 4) < 0)
            return luaL_error(L, "next/pairs: a key of type %s has no order "
                              "that is the same in every process (use number "
                              "or string keys)", luaL_typename(L, 4));
        if ((lua_isnil(L, 2) || key_less(L, 2, 4)) &&
            (!have || key_less(L, 4, 3))) {
            lua_pushvalue(L, 4);
            lua_replace(L, 3);
            have = 1;
        }
    }
    sb->instr += n;
    if (sb->tripped == SB_OK && sb->instr > SB_INSTR_LIMIT)
        sb->tripped = SB_INSTR;
    if (sb->tripped != SB_OK)
        return luaL_error(L, "sandbox limit exceeded");
    if (!have) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 3);
    lua_rawget(L, 1);
    return 2;
}

/* pairs(t): t's __pairs if it has one (Lua 5.4's rule), else sorted_next */
static int sorted_pairs(lua_State *L)
{
    luaL_checkany(L, 1);
    if (luaL_getmetafield(L, 1, "__pairs") != LUA_TNIL) {
        lua_pushvalue(L, 1);
        lua_call(L, 1, 3);
        return 3;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_pushcfunction(L, sorted_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/* the value at idx as text without an address: a __tostring if it has
 * one, else its type's name for a table, function, userdata or thread */
static const char *plain_tostring(lua_State *L, int idx)
{
    int t = lua_type(L, idx);
    if (t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER ||
        t == LUA_TSTRING || luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        if (t != LUA_TNIL && t != LUA_TBOOLEAN && t != LUA_TNUMBER &&
            t != LUA_TSTRING)
            lua_pop(L, 1); /* the __tostring pushed */
        return luaL_tolstring(L, idx, NULL);
    }
    lua_pushstring(L, lua_typename(L, t));
    return lua_tostring(L, -1);
}

static int safe_tostring(lua_State *L)
{
    luaL_checkany(L, 1);
    plain_tostring(L, 1);
    return 1;
}

/* string.format without %p, and %s of a table printed without its address */
static int safe_format(lua_State *L)
{
    size_t len;
    const char *f = luaL_checklstring(L, 1, &len);
    for (size_t i = 0; i + 1 < len; i++)
        if (f[i] == '%') {
            size_t j = i + 1;
            while (j < len && strchr("-+ #0123456789.", f[j]))
                j++;
            if (j < len && f[j] == 'p')
                return luaL_error(L, "string.format: %%p prints an address, "
                                  "which differs between processes: not in a "
                                  "spec");
            i = j;
        }
    int n = lua_gettop(L);
    for (int i = 2; i <= n; i++) {
        int t = lua_type(L, i);
        if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA ||
            t == LUA_TLIGHTUSERDATA || t == LUA_TTHREAD) {
            plain_tostring(L, i);
            lua_replace(L, i);
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    return 1;
}

static const char *const base_names[] = {
    "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget",
    "rawlen", "select", "tonumber", "tostring", "type", "getmetatable",
    "setmetatable", "_VERSION", NULL};
static const char *const math_names[] = {
    "abs", "ceil", "cos", "exp", "floor", "fmod", "huge", "log", "max",
    "maxinteger", "min", "mininteger", "modf", "pi", "sin", "sqrt", "tan",
    "tointeger", "type", "ult", "acos", "asin", "atan", NULL};
static const char *const string_names[] = {
    "byte", "char", "format", "len", "lower", "reverse", "sub", "upper", NULL};
/* insert, remove, sort and concat loop in C over a length a Lua __len can
 * make enormous, where the count hook cannot stop them: left out */
static const char *const table_names[] = {"pack", "unpack", NULL};

/* copies the named fields of the table at -1 into a new table at -1 */
static void copy_fields(lua_State *L, const char *const *names)
{
    lua_newtable(L);
    for (; *names; names++) {
        lua_getfield(L, -2, *names);
        lua_setfield(L, -2, *names);
    }
    lua_remove(L, -2);
}

static const char prelude[] =
    "local format, refuse, type, error, require_step = ...\n"
    "-- a plain condition is decided now; a traced per-step one (in update)\n"
    "-- becomes a requirement checked at every step, before anything changes\n"
    "function require_that(ok, fmt, ...)\n"
    "  if type(ok) == 'userdata' then return require_step(ok, format(fmt, ...)) end\n"
    "  if not ok then refuse(format(fmt, ...)) end\n"
    "end\n"
    "function clamp(x, lo, hi) return min(max(x, lo), hi) end  -- torch.clamp\n"
    "-- torch.optim's common checks, with its messages\n"
    "function require_lr(h) require_that(0 <= h.lr, 'Invalid learning rate: %s', h.lr) end\n"
    "function require_eps(h) require_that(0 <= h.eps, 'Invalid epsilon value: %s', h.eps) end\n"
    "function require_weight_decay(h)\n"
    "  require_that(0 <= h.weight_decay, 'Invalid weight_decay value: %s', h.weight_decay)\n"
    "end\n"
    "function require_betas(h)\n"
    "  for i = 1, 2 do\n"
    "    local b = h.betas[i]\n"
    "    require_that(0 <= b and b < 1, 'Invalid beta parameter at index %d: %s', i - 1, b)\n"
    "  end\n"
    "end\n"
    "unset = setmetatable({}, {__tostring = function() return 'unset' end,\n"
    "                          __metatable = 'locked'})\n"
    "none = setmetatable({}, {__tostring = function() return 'None' end,\n"
    "                         __metatable = 'locked'})\n";

static int build_env(lua_State *L)
{
    luaL_openlibs(L);
    lua_newtable(L); /* env */
    lua_pushglobaltable(L);
    copy_fields(L, base_names);
    lua_pushnil(L);
    while (lua_next(L, -2)) { /* env gets the base functions */
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_settable(L, -5);
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, safe_pcall);
    lua_setfield(L, -2, "pcall");
    lua_pushcfunction(L, sorted_next);
    lua_setfield(L, -2, "next");
    lua_pushcfunction(L, sorted_pairs);
    lua_setfield(L, -2, "pairs");
    lua_pushcfunction(L, safe_tostring);
    lua_setfield(L, -2, "tostring");
    lua_getglobal(L, "setmetatable");
    lua_pushcclosure(L, safe_setmetatable, 1);
    lua_setfield(L, -2, "setmetatable");
    const struct {
        const char *name;
        const char *const *names;
    } libs[] = {{"math", math_names},
                {"string", string_names},
                {"table", table_names}};
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        lua_getglobal(L, libs[i].name);
        copy_fields(L, libs[i].names);
        if (i == 1) { /* format without addresses */
            lua_getfield(L, -1, "format");
            lua_pushcclosure(L, safe_format, 1);
            lua_setfield(L, -2, "format");
        }
        if (i == 1) { /* ("x"):upper() must see the filtered table only */
            lua_pushliteral(L, "");
            lua_getmetatable(L, -1);
            lua_pushvalue(L, -3);
            lua_setfield(L, -2, "__index");
            lua_pop(L, 2);
        }
        lua_setfield(L, -2, libs[i].name);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    /* the prelude, run in the environment */
    if (luaL_loadbufferx(L, prelude, sizeof prelude - 1, "=prelude", "t"))
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_setupvalue(L, -2, 1);
    lua_getfield(L, -2, "string");
    lua_getfield(L, -1, "format");
    lua_remove(L, -2);
    lua_pushcfunction(L, refuse);
    lua_getfield(L, -4, "type");
    lua_getfield(L, -5, "error");
    lua_pushcfunction(L, cg_trace_require_step);
    lua_call(L, 5, 0);
    lua_getfield(L, -1, "unset");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &UNSET_KEY);
    lua_getfield(L, -1, "none");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &NONE_KEY);
    cg_trace_open_lib(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ENV_KEY);
    /* drop the unfiltered globals: nothing can reach them any more */
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, -4);
    }
    lua_pop(L, 1);
    return 0;
}

int cg_sb_open(sandbox *sb, const char *path, char *err)
{
    memset(sb, 0, sizeof *sb);
    sb->path = path;
    sb->alloc = cg_mem_current();
    clock_gettime(CLOCK_MONOTONIC, &sb->start);
    if (!(sb->reserve = cg_malloc(SB_RESERVE)))
        return cg_fail(err, JOPT_ENOMEM, "spec %s: out of memory", path);
    lua_State *L = lua_newstate(sb_alloc, sb);
    if (!L) {
        cg_sb_close(sb);
        return cg_fail(err, JOPT_ENOMEM, "spec %s: cannot create Lua state",
                       path);
    }
    sb->L = L;
    lua_pushcfunction(L, build_env);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        int rc = cg_fail(err, JOPT_ENOMEM, "spec %s: cannot set up sandbox: %s",
                         path, lua_tostring(L, -1));
        cg_sb_close(sb);
        return rc;
    }
    lua_sethook(L, hook, LUA_MASKCOUNT, 1000);
    return JOPT_OK;
}

void cg_sb_reset_budgets(sandbox *sb)
{
    sb->instr = 0;
    clock_gettime(CLOCK_MONOTONIC, &sb->start);
}

void cg_sb_close(sandbox *sb)
{
    if (sb->L)
        lua_close(sb->L);
    sb->L = NULL;
    cg_free(sb->reserve);
    sb->reserve = NULL;
}

void cg_sb_rawfield(lua_State *L, int idx, const char *k)
{
    idx = lua_absindex(L, idx);
    lua_pushstring(L, k);
    lua_rawget(L, idx);
}

void cg_sb_push_env(sandbox *sb)
{
    lua_rawgetp(sb->L, LUA_REGISTRYINDEX, &ENV_KEY);
}

void cg_sb_set_proxy(lua_State *L, lua_CFunction set)
{
    lua_createtable(L, 0, 3);
    lua_insert(L, -2);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, set);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

void cg_sb_push_unset(sandbox *sb)
{
    lua_rawgetp(sb->L, LUA_REGISTRYINDEX, &UNSET_KEY);
}

int cg_sb_is_unset(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &UNSET_KEY);
    int is = lua_rawequal(L, idx, -1);
    lua_pop(L, 1);
    return is;
}

void cg_sb_push_none(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &NONE_KEY);
}

/* Lua's position prefix ("path:12:") names the file when the error comes
 * from the spec's own code; errors raised from C lack it, so add it. */
static int spec_error(char *err, const sandbox *sb, const char *msg)
{
    if (strncmp(msg, sb->path, strlen(sb->path)) == 0)
        return cg_fail(err, JOPT_ESPEC, "%s", msg);
    return cg_fail(err, JOPT_ESPEC, "spec %s: %s", sb->path, msg);
}

/* The message handler: every error names the spec's file and line.  Lua
 * adds "path:line:" to errors raised in the spec's code; this adds the
 * line of the innermost call in the spec's file to the rest: error(x, 0),
 * error({}), error(nil), error(42), and errors from C called by the
 * prelude ("prelude:8: ..."). */
static int msgh(lua_State *L)
{
    sandbox *sb = get_sb(L);
    if (sb->tripped != SB_OK) /* cg_sb_pcall words the limit */
        return 1;
    if (lua_type(L, 1) != LUA_TSTRING && lua_type(L, 1) != LUA_TNUMBER) {
        lua_pushfstring(L, "error object is %s%s, not a string",
                        lua_isnil(L, 1) ? "" : "a ",
                        lua_isnil(L, 1) ? "nil" : luaL_typename(L, 1));
        lua_replace(L, 1);
    } else if (lua_type(L, 1) == LUA_TNUMBER) {
        lua_pushfstring(L, "error object is a number (%s), not a string",
                        lua_tostring(L, 1)); /* a copy: not 1 itself */
        lua_replace(L, 1);
    }
    const char *msg = lua_tostring(L, 1);
    size_t pl = strlen(sb->path);
    if (strncmp(msg, sb->path, pl) == 0 && msg[pl] == ':')
        return 1; /* already "path:line: ..." */
    if (strncmp(msg, "prelude:", 8) == 0) { /* the prelude's line is ours */
        const char *rest = strchr(msg + 8, ':');
        msg = rest && rest[1] == ' ' ? rest + 2 : msg;
    }
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.source[0] == '@' &&
            ar.currentline > 0 && strcmp(ar.source + 1, sb->path) == 0) {
            lua_pushfstring(L, "%s:%d: %s", sb->path, ar.currentline, msg);
            return 1;
        }
    return 1;
}

int cg_sb_pcall(sandbox *sb, int nargs, int nresults, char *err)
{
    lua_State *L = sb->L;
    int base = lua_gettop(L) - nargs; /* the function */
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    unsigned long failed = cg_mem_failures();
    if (sb->tripped == SB_NOMEM) /* the last call's; this one may fit */
        sb->tripped = SB_OK;
    sb->in_lua = 1;
    int status = lua_pcall(L, nargs, nresults, base);
    sb->in_lua = 0;
    lua_remove(L, base);
    if (status == LUA_OK && sb->tripped == SB_OK && !sb->invalid)
        return JOPT_OK;
    if (cg_mem_failures() != failed) { /* whatever the spec made of it */
        if (status != LUA_OK)
            lua_pop(L, 1);
        return cg_fail(err, JOPT_ENOMEM, "spec %s: out of memory", sb->path);
    }
    if (lua_type(L, -1) != LUA_TSTRING) { /* error({}), error(p): say what */
        lua_pushfstring(L, "error object is a %s, not a string",
                        luaL_typename(L, -1));
        lua_remove(L, -2);
    }
    const char *msg = lua_tostring(L, -1);
    int rc;
    switch (sb->tripped) {
    case SB_INSTR:
        rc = cg_fail(err, JOPT_ESPEC,
                     "spec %s: instruction limit exceeded (%ld Lua "
                     "instructions): does it loop forever?",
                     sb->path, SB_INSTR_LIMIT);
        break;
    case SB_TIME:
        rc = cg_fail(err, JOPT_ESPEC, "spec %s: time limit exceeded (%g s)",
                     sb->path, SB_TIME_LIMIT_NS / 1e9);
        break;
    case SB_MEM:
        rc = cg_fail(err, JOPT_ESPEC,
                     "spec %s: memory limit exceeded (%u MiB)", sb->path,
                     SB_MEM_LIMIT >> 20);
        break;
    default:
        if (sb->invalid)
            rc = cg_fail(err, JOPT_EINVAL, "%s", sb->message);
        else if (status == LUA_ERRMEM)
            rc = cg_fail(err, JOPT_ENOMEM, "spec %s: out of memory", sb->path);
        else
            rc = spec_error(err, sb, msg);
    }
    lua_pop(L, 1);
    return rc;
}

int cg_sb_run_spec(sandbox *sb, const char *src, size_t len, char *err)
{
    lua_State *L = sb->L;
    char chunkname[512];
    snprintf(chunkname, sizeof chunkname, "@%s", sb->path);
    unsigned long failed = cg_mem_failures();
    int status = luaL_loadbufferx(L, src, len, chunkname, "t");
    if (status != LUA_OK) {
        int rc = status == LUA_ERRMEM && cg_mem_failures() != failed
                     ? cg_fail(err, JOPT_ENOMEM, "spec %s: out of memory", sb->path)
                 : status == LUA_ERRMEM
                     ? cg_fail(err, JOPT_ESPEC, "spec %s: memory limit exceeded",
                               sb->path)
                 : !strcmp(lua_tostring(L, -1), "C stack overflow")
                     /* the parser's depth limit: Lua gives no line */
                     ? cg_fail(err, JOPT_ESPEC, "spec %s: nested too deeply for Lua's "
                               "parser (about 200 levels of parentheses, calls, tables "
                               "or blocks)", sb->path)
                     : spec_error(err, sb, lua_tostring(L, -1));
        lua_pop(L, 1);
        return rc;
    }
    cg_sb_push_env(sb);
    lua_setupvalue(L, -2, 1);
    int rc = cg_sb_pcall(sb, 0, 1, err);
    if (rc != JOPT_OK)
        return rc;
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return cg_fail(err, JOPT_ESPEC, "spec %s: must return a table",
                       sb->path);
    }
    return JOPT_OK;
}
