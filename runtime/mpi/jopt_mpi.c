/*
 * jopt_mpi.c - jopt_comm over MPI: the two collectives a sharded optimizer
 * needs (runtime/shard*.c), on a duplicate of the caller's communicator
 * with MPI_ERRORS_RETURN.  The only code of jopt that includes mpi.h; it
 * sees jopt through jopt.h alone.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "jopt_mpi.h"

typedef struct mpi_comm {
    MPI_Comm comm;
    int size;
    int *counts, *displs, *rcounts, *rdispls; /* in bytes, as MPI's ints */
    char err[MPI_MAX_ERROR_STRING + 32];
} mpi_comm;

/* sizes in bytes as MPI's int counts and displacements; 0, or an MPI
 * error class if one does not fit */
static int to_int(int n, const size_t *c, const size_t *d, int *ci, int *di)
{
    size_t at = 0;
    for (int r = 0; r < n; r++) {
        size_t disp = d ? d[r] : at;
        if (c[r] > INT_MAX || disp > INT_MAX)
            return MPI_ERR_COUNT;
        ci[r] = (int)c[r];
        di[r] = (int)disp;
        at += c[r];
    }
    return MPI_SUCCESS;
}

static int mpi_allgatherv(void *user, const void *send, const size_t *counts,
                          void *recv)
{
    mpi_comm *m = user;
    int rank, rc;
    MPI_Comm_rank(m->comm, &rank);
    if ((rc = to_int(m->size, counts, NULL, m->counts, m->displs)))
        return rc;
    /* MPI wants a send buffer even for 0 bytes */
    static const char none;
    return MPI_Allgatherv(counts[rank] ? send : &none, m->counts[rank], MPI_BYTE,
                          recv, m->counts, m->displs, MPI_BYTE, m->comm);
}

static int mpi_alltoallv(void *user, const void *send, const size_t *scounts,
                         const size_t *sdispls, void *recv,
                         const size_t *rcounts, const size_t *rdispls)
{
    mpi_comm *m = user;
    int rc;
    if ((rc = to_int(m->size, scounts, sdispls, m->counts, m->displs)) ||
        (rc = to_int(m->size, rcounts, rdispls, m->rcounts, m->rdispls)))
        return rc;
    return MPI_Alltoallv(send, m->counts, m->displs, MPI_BYTE, recv, m->rcounts,
                         m->rdispls, MPI_BYTE, m->comm);
}

static void mpi_release(void *user)
{
    mpi_comm *m = user;
    int done = 0;
    MPI_Finalized(&done);
    if (!done)
        MPI_Comm_free(&m->comm);
    free(m->counts);
    free(m->displs);
    free(m->rcounts);
    free(m->rdispls);
    free(m);
}

static const char *mpi_errstr(void *user, int code)
{
    mpi_comm *m = user;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        len = 0;
    text[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    memcpy(m->err, "MPI: ", 5);
    memcpy(m->err + 5, text, strlen(text) + 1);
    return m->err;
}

JOPT_API int jopt_mpi_comm(MPI_Comm comm, jopt_comm *out)
{
    if (!out)
        return JOPT_EINVAL;
    mpi_comm *m = calloc(1, sizeof *m);
    if (!m)
        return JOPT_ENOMEM;
    int rank = 0;
    if (MPI_Comm_dup(comm, &m->comm) != MPI_SUCCESS) {
        free(m);
        return JOPT_ECOMM;
    }
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &rank);
    MPI_Comm_size(m->comm, &m->size);
    size_t n = (size_t)m->size;
    m->counts = calloc(n, sizeof(int));
    m->displs = calloc(n, sizeof(int));
    m->rcounts = calloc(n, sizeof(int));
    m->rdispls = calloc(n, sizeof(int));
    if (!m->counts || !m->displs || !m->rcounts || !m->rdispls) {
        mpi_release(m);
        return JOPT_ENOMEM;
    }
    *out = (jopt_comm){rank, m->size, m, mpi_allgatherv, mpi_alltoallv,
                       mpi_release, mpi_errstr, 0};
    return JOPT_OK;
}

/* a transport whose collectives fail, so that a process whose
 * communicator could not be made still votes (and fails) with the others
 * as far as it can, and the caller reads why in jopt_errmsg */
static int fail_allgatherv(void *user, const void *send, const size_t *counts,
                           void *recv)
{
    (void)user, (void)send, (void)counts, (void)recv;
    return MPI_ERR_COMM;
}

static int fail_alltoallv(void *user, const void *send, const size_t *scounts,
                          const size_t *sdispls, void *recv,
                          const size_t *rcounts, const size_t *rdispls)
{
    (void)user, (void)send, (void)scounts, (void)sdispls, (void)recv;
    (void)rcounts, (void)rdispls;
    return MPI_ERR_COMM;
}

static const char *fail_errstr(void *user, int code)
{
    (void)user, (void)code;
    return "MPI_Comm_dup of the caller's communicator failed, or memory ran out";
}

JOPT_API int jopt_mpi_optim_new(jopt_ctx *ctx, const char *spec,
                                const jopt_group *groups, size_t ngroups,
                                const char *defaults, MPI_Comm comm,
                                jopt_optim **out)
{
    jopt_comm c;
    if (jopt_mpi_comm(comm, &c) != JOPT_OK) {
        int rank = 0, size = 1;
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &size);
        c = (jopt_comm){rank, size, NULL, fail_allgatherv, fail_alltoallv, NULL,
                        fail_errstr, 0};
    }
    return jopt_optim_new_sharded(ctx, spec, groups, ngroups, defaults, &c, out);
}
