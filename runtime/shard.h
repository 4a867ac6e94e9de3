/*
 * shard.h - an optimizer sharded across processes (ZeRO stage 1): which
 * process holds which tensor, how the processes agree before each
 * collective call, and the exchange of gradients, group reductions and
 * parameters (docs/distributed.md).
 *
 *   shard.c       construction, the partition, votes, checkpoint pieces
 *   shard_step.c  jopt_step and jopt_optim_call on a sharded optimizer
 */
#ifndef RT_SHARD_H
#define RT_SHARD_H

#include "rt.h"

/* levels a vote counts group-reduction records for (cg_layout.glevels) */
#define RT_SHARD_LEVELS 32
#define RT_SHARD_MSG 256

/* What a process says before a collective call: its status and message
 * (an error found before any exchange), which call it makes, and digests
 * of what every process must agree on.  Exchanged whole; every process
 * reaches the same verdict from the same votes. */
typedef struct rt_vote {
    int32_t rank, size;
    int32_t status;       /* JOPT_OK, or this process's error */
    int32_t op;           /* RT_OP_* */
    uint64_t name;        /* the named kernel's hash, or 0 */
    uint64_t spec;        /* the spec's name and text */
    uint64_t layout;      /* groups, their tensors and sizes, shapes */
    uint64_t values;      /* every group's hyperparameters and step */
    uint64_t present;     /* which tensors have a gradient this step */
    uint64_t ngroups, ntensors, numel;
    uint32_t glevels;     /* levels with group reductions here */
    uint32_t gsync;       /* a kernel here keeps group state */
    uint32_t nrec[RT_SHARD_LEVELS]; /* group-reduction records per level */
    uint64_t extra[4];    /* the call's own (a checkpoint's shard id) */
    char msg[RT_SHARD_MSG];
} rt_vote;

enum { RT_OP_NEW = 1, RT_OP_STEP, RT_OP_CALL, RT_OP_SAVE, RT_OP_LOAD };

/* one tensor's part of a step's group reductions at one level */
typedef struct rt_grec {
    uint32_t tensor, mask;
    uint8_t kind[CG_MAX_REDUCE];
    double v[CG_MAX_REDUCE];
} rt_grec;

typedef struct rt_shard {
    jopt_comm comm;
    int rank, size;
    size_t ntensors;      /* every group's parameters, group by group */
    size_t *first;        /* per group: the index of its parameter 0 */
    int *owner;           /* per tensor: the process that holds it */
    uint64_t partition;   /* digest of the sizes and owners */
    rt_vote *votes;       /* size of them */
    /* the exchange: windows of `window` floats per process */
    int64_t window;
    float *sendbuf, *recvbuf;          /* size * window floats */
    size_t *scount, *sdispl, *rcount, *rdispl; /* per process, bytes */
    unsigned char *detail;             /* size * detail_len bytes */
    size_t detail_len;
    /* a step's lists: tensors that step (or whose parameters change), by
     * holder; per holder its tensors in order and their offsets */
    uint32_t *list;       /* ntensors */
    size_t *list_at;      /* size + 1: where each holder's tensors start */
    int64_t *len;         /* size: elements each holder steps */
    /* group reductions: the calls' tensors, and records */
    uint32_t *call_tensor; /* ntensors */
    rt_grec *rec, *rec_all; /* ntensors each: this process's, everyone's */
    const rt_grec **at;     /* ntensors: a level's record of each tensor */
    size_t *cur_i;          /* size: a walk's place in each holder's list */
    int64_t *cur_off;
    double *gbuf;           /* (size + 1) x ngroups x (nstate + 1): group
                               states after a step */
    const rt_vote *agreed;  /* this step's votes */
    uint64_t bytes_sent, exchanges;
    uint64_t saves;         /* jopt_state_save calls agreed on */
    int last;               /* what the transport's last call returned */
} rt_shard;

/* shard.c */
void rt_shard_free(rt_shard *sh);
/* The process's vote for `op` on `opt` (every digest filled in). */
void rt_shard_vote(const jopt_optim *opt, int op, rt_vote *v);
/* Exchanges the votes (sh->votes) and reaches the verdict: JOPT_OK when
 * every process is fine and agrees, else the same status and message on
 * every process (a process's error, or what differs, named with a second
 * exchange where a digest alone cannot say which).  JOPT_ECOMM when the
 * transport fails. */
int rt_shard_agree(jopt_ctx *ctx, rt_shard *sh, jopt_optim *opt,
                   const char *fn, rt_vote *mine);
/* A vote on a collective call that has no other exchange to make: `op`
 * with this process's `status` (its message from ctx->err), and `id` that
 * every process must give alike (a checkpoint's) unless 0. */
int rt_shard_gate(jopt_optim *opt, const char *fn, int op, int status,
                  uint64_t id);
/* sh->comm's allgatherv with equal counts, and its alltoallv, counted;
 * non-zero when the transport failed */
int rt_shard_allgather(rt_shard *sh, const void *send, size_t len, void *recv);
int rt_shard_allgatherv(rt_shard *sh, const void *send, const size_t *counts,
                        void *recv);
int rt_shard_alltoallv(rt_shard *sh, const void *send, void *recv);
/* JOPT_ECOMM with a message naming the call; the message alone */
void rt_shard_comm_text(const rt_shard *sh, const char *what, char *buf,
                       size_t cap);
int rt_shard_comm_failed(jopt_optim *opt, const char *fn, const char *what);
/* a tensor by global index */
rt_param *rt_shard_param(jopt_optim *opt, size_t t, size_t *group);

/* checkpoints (shard.c): a sharded optimizer's file is its checkpoint in
 * a header of RT_SHARD_HEAD bytes and a checksum.  rt_shard_put writes the
 * header; rt_shard_open checks a file against the optimizer and gives the
 * checkpoint inside (a file without the header: as it is, for an
 * unsharded checkpoint) and the id that every process's file of one save
 * shares (an unsharded file's hash). */
#define RT_SHARD_HEAD 40
void rt_shard_put(const jopt_optim *opt, rt_out *o);
int rt_shard_open(jopt_optim *opt, const char *fn, const void **buf,
                  size_t *len, uint64_t *id);

/* shard.c: whether a tensor takes part in `op`: a gradient for a step,
 * state for a named kernel (p->step counts on every process) */
int rt_shard_takes_part(const rt_param *p, int op);

/* shard_step.c: jopt_step and jopt_optim_call; `status` is what the call
 * found before (a bad kernel name), which the vote tells the others */
int rt_shard_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                  double *loss);
int rt_shard_call(jopt_optim *opt, const char *kernel, int named, int status);

#endif /* RT_SHARD_H */
