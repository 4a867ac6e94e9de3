/*
 * sched_int.h - what the scheduler files share: the scheduler object, the log
 * of the optimizer values a call writes (so that a call that fails undoes
 * them), Python's division, and each file's entry points.
 *
 *   sched.c      the public constructors, composites, freeing
 *   sched_opts.c options strings and torch's constructor checks
 *   sched_lr.c   torch's formulas and stepping
 *   sched_io.c   saving and loading a scheduler's state
 */
#ifndef SCHED_INT_H
#define SCHED_INT_H

#include <math.h>

#include "rt.h"

/* integers are kept within 2^53, where doubles hold them exactly and
 * torch's integer arithmetic (2 * T_max, le - 1 - T_max) cannot overflow */
#define MAX_INT_OPTION 9007199254740992LL

typedef enum sched_kind {
    K_STEP, K_MULTISTEP, K_EXPONENTIAL, K_COSINE, K_WARM, K_LINEAR,
    K_CONSTANT, K_POLY, K_ONECYCLE, K_CYCLIC, K_PLATEAU, K_LAMBDA, K_MULT,
    K_SEQUENTIAL, K_CHAINED
} sched_kind;

/* torch's class names, by kind */
extern const char *const rt_sched_class_names[];

/* ---- the scheduler ------------------------------------------------------ */

/* what a step changes: kept to undo a failed call, and saved */
typedef struct sched_state {
    int64_t last_epoch, step_count;
    int64_t T_cur, T_i;           /* warm restarts */
    double best;                  /* plateau */
    int64_t num_bad, cooldown_counter;
} sched_state;

typedef struct phase {
    double end_step;
    int start_lr, end_lr, start_mom, end_mom; /* RT_KEY_ */
} phase;

struct jopt_sched {
    jopt_optim *opt;
    sched_kind kind;
    size_t ngroups;
    int is_initial; /* inside _initial_step */
    int owned;      /* a child of a composite */
    uint64_t hash;  /* of the options it was made with (sched_io.c) */
    sched_state st;
    double *last_lr;  /* ngroups */
    double *base_lrs; /* ngroups */
    /* options, by kind */
    double gamma, factor, start_factor, end_factor, eta_min, power;
    int64_t step_size, T_max, T_0, T_mult, total_iters;
    int64_t *milestones; /* multistep as given; sequential's */
    size_t nmilestones;
    /* onecycle */
    int64_t total_steps;
    double div_factor, final_div_factor;
    phase phases[3];
    int nphases, anneal_cos;
    /* onecycle and cyclic */
    int cycle_momentum, use_beta1;
    double *max_lrs, *base_moms, *max_moms; /* cyclic's, ngroups each */
    double total_size, step_ratio;
    int cyc_mode; /* 0 triangular, 1 triangular2, 2 exp_range */
    /* plateau */
    int mode_max, thr_abs;
    double threshold, eps, *min_lrs;
    int64_t patience, cooldown;
    /* lambda */
    jopt_lr_lambda fn;
    void *user;
    /* composites */
    jopt_sched **children;
    size_t nchildren;
};

/* ---- the optimizer's scheduler keys ------------------------------------- */

/* torch keeps "initial_lr" (and OneCycleLR's keys) in the optimizer's param
 * groups, where every scheduler of the optimizer sees them; so does jopt
 * (rt_group.keys, NaN while unset), and they live as long as the optimizer
 * and are saved with it. */
static inline double key_get(const jopt_sched *s, size_t g, int key)
{
    return s->opt->groups[g].keys[key];
}

static inline int key_has(const jopt_sched *s, size_t g, int key)
{
    return !isnan(key_get(s, g, key));
}

static inline void key_set(jopt_sched *s, size_t g, int key, double v)
{
    s->opt->groups[g].keys[key] = v;
}

/* ---- Python's arithmetic where it raises -------------------------------- */

typedef struct calc {
    const char *err; /* the first exception's message, or NULL */
} calc;

static inline double py_div(calc *c, double a, double b)
{
    if (b == 0) {
        if (!c->err)
            c->err = "float division by zero";
        return NAN;
    }
    return a / b;
}

/* bisect.bisect_right, on the list as given (torch does not sort it) */
static inline size_t bisect_right(const int64_t *a, size_t n, int64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (x < a[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* ---- writing the optimizer: a log to undo ------------------------------- */

enum { P_LR, P_BETA1, P_MOMENTUM };

typedef struct txn_entry {
    size_t group;
    int which;
    double old;
    uint8_t was_runtime; /* a first change switches a folded option to
                            runtime (jopt_option_set): undone too */
} txn_entry;

typedef struct txn {
    jopt_optim *opt;
    const char *fn; /* the public call, for messages */
    txn_entry *e;
    size_t n, cap;
} txn;

/* sched_lr.c: "<fn>: <Class>: <message>" on the optimizer's context */
int rt_sched_fail(txn *t, const jopt_sched *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* sched_lr.c: a group's lr (P_LR), betas[0] or momentum */
double rt_sched_get_param(jopt_optim *opt, size_t g, int which);
/* sched_lr.c: writes one, logged in `t` */
int rt_sched_set_param(txn *t, const jopt_sched *s, size_t g, int which,
                       double v);
/* sched_lr.c: the momentum torch cycles: betas[0] or momentum */
int rt_sched_set_momentum(txn *t, const jopt_sched *s, size_t g, double m);
/* sched_lr.c: puts back every value `t` changed, keeping the message */
void rt_sched_txn_rollback(txn *t);
void rt_sched_txn_done(txn *t);
/* sched_lr.c: every group's lr, into out[ngroups] */
void rt_sched_read_lrs(const jopt_sched *s, double *out);

/* sched_lr.c: LRScheduler._initial_step() */
int rt_sched_initial_step(txn *t, jopt_sched *s);

/* sched_lr.c: the step state of whole trees (last_epoch, counters, last
 * lrs), to put back when a call fails */
typedef struct snapshot {
    sched_state *st;
    double *lr;
    size_t n;
} snapshot;
int rt_sched_snapshot_take(jopt_sched *const *roots, size_t nroots,
                           snapshot *sn);
void rt_sched_snapshot_restore(jopt_sched *const *roots, size_t nroots,
                               snapshot *sn);
void rt_sched_snapshot_free(snapshot *sn);

/* sched_opts.c: the kind named `name` ("step"), or -1; `known` gets the
 * names there are, for the message */
int rt_sched_kind(const char *name, char *known, size_t len);
/* sched_opts.c: reads `text`, the options of s->kind, and checks them in
 * torch's order into `s`; `pre` gets the per-group values the constructor
 * writes before LRScheduler.__init__ (cyclic's base_lr, onecycle's
 * max_lr) */
int rt_sched_options(txn *t, jopt_sched *s, const char *text, double *pre);

/* sched_io.c: the hash of a made scheduler's options (jopt_sched.hash) */
uint64_t rt_sched_options_hash(const jopt_sched *s, const double *pre);

#endif /* SCHED_H */
