/*
 * sandbox.h - a Lua 5.4 state in which an untrusted spec runs: a capped
 * allocator, an instruction and a wall-clock budget that stay tripped once
 * hit, and an environment holding only safe parts of base, math, string and
 * table.  Private to codegen.
 */
#ifndef CG_SANDBOX_H
#define CG_SANDBOX_H

#include <lua.h>
#include <time.h>

#include "cg_int.h"

#define SB_MEM_LIMIT (32u << 20)       /* bytes */
#define SB_INSTR_LIMIT 20000000L       /* VM instructions */
#define SB_TIME_LIMIT_NS 2000000000LL  /* 2 s */

#define SB_RESERVE (64u << 10)        /* bytes for jopt's C side (sandbox.c) */

/* SB_NOMEM: the context's allocator failed (not the spec's cap) */
typedef enum sb_trip { SB_OK, SB_INSTR, SB_TIME, SB_MEM, SB_NOMEM } sb_trip;

typedef struct sandbox {
    lua_State *L;
    size_t mem;
    long instr;
    struct timespec start;
    sb_trip tripped;
    int in_lua;               /* inside cg_sb_pcall: the memory cap is hard */
    int invalid;              /* require_that() refused a value */
    char message[CG_ERRLEN];  /* its message */
    const char *path;
    const cg_allocator *alloc; /* the context's, current when opened */
    char *reserve;             /* SB_RESERVE bytes, see sb_alloc */
    size_t reserve_used;
    int reserve_live;          /* blocks in it; 0 empties it */
    int reserve_hit;           /* one was taken: the operation fails */
} sandbox;

/* Opens the state and builds the environment (left in the registry). */
int cg_sb_open(sandbox *sb, const char *path, char *err);
void cg_sb_close(sandbox *sb);
/* rc, or JOPT_ENOMEM when jopt's C side ran out of memory in the state
 * since it was opened (served from its reserve so that Lua did not panic) */
int cg_sb_nomem(sandbox *sb, int rc, char *err);
/* Restarts the instruction and time budgets, for a sandbox that is used
 * again (a spec's checker). */
void cg_sb_reset_budgets(sandbox *sb);

/* Loads `src` as text chunk named by the path, with the sandbox environment
 * as _ENV, and runs it: on success the spec's table is on the stack. */
int cg_sb_run_spec(sandbox *sb, const char *src, size_t len, char *err);

/* lua_pcall with the sandbox's error reporting: JOPT_OK, or JOPT_EINVAL for
 * a require_that() failure, JOPT_ESPEC (or JOPT_ENOMEM) otherwise, with the
 * message in err. */
int cg_sb_pcall(sandbox *sb, int nargs, int nresults, char *err);

/* Pushes t[k] of the table at `idx` without metamethods: C code outside
 * a protected call must never run the spec's Lua code. */
void cg_sb_rawfield(lua_State *L, int idx, const char *k);

/* Pushes the sandbox environment table. */
void cg_sb_push_env(sandbox *sb);

/* Makes the table just below the top of the stack a proxy: a locked
 * metatable whose __index is the value at the top (popped) and whose
 * __newindex is `set`.  For the read-only `h` and the state proxy `s`. */
void cg_sb_set_proxy(lua_State *L, lua_CFunction set);

/* Pushes the `unset` sentinel a spec's state table may name. */
void cg_sb_push_unset(sandbox *sb);
/* Whether the value at idx is the `unset` sentinel. */
int cg_sb_is_unset(lua_State *L, int idx);
/* Pushes `none`, the default of an optional number (torch's None). */
void cg_sb_push_none(lua_State *L);

/* trace.c: sets the tracing prelude (sqrt, fma, where, ...) into the table
 * at the top of the stack. */
void cg_trace_open_lib(lua_State *L);

/* trace.c: require_that(cond, message) on a traced per-step condition
 * while tracing: a requirement of the step, checked before it runs. */
int cg_trace_require_step(lua_State *L);

/* spec.c: opens a sandbox for `spec`, runs it, and leaves the spec's table
 * and the hyperparameter table `h` built from `values` on the stack. */
int cg_spec_enter(sandbox *sb, const cg_spec *spec, const double *values,
               char *err);

/* options.c: pushes value v of hyperparameter h as the spec sees it (a
 * number, an integer, a boolean, a choice's name, or `none`). */
void cg_hyper_push(lua_State *L, const cg_hyper *h, double v);

#endif /* CG_SANDBOX_H */
