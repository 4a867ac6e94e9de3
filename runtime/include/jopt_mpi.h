/*
 * jopt_mpi.h - jopt's sharded optimizer over MPI: data-parallel training
 * across processes and machines, each process holding the optimizer state
 * of only some of the tensors (ZeRO stage 1; jopt.h, "Optimizer state
 * sharded across processes", and docs/distributed.md).
 *
 * Link libjopt_mpi and libjopt (CMake: jopt::jopt_mpi from
 * find_package(jopt COMPONENTS mpi); pkg-config: jopt-mpi), with MPI.
 * Built only where jopt's build found MPI.
 */
#ifndef JOPT_MPI_H
#define JOPT_MPI_H

#include <mpi.h>

#include "jopt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills *out with a transport over `comm`: jopt_comm's collectives as
 * MPI_Allgatherv and MPI_Alltoallv on a duplicate of `comm` (so that
 * jopt's messages never meet yours), whose errors return to jopt instead
 * of aborting the job.  Collective over `comm` (MPI_Comm_dup).  The
 * optimizer that takes it calls its release, which frees the duplicate;
 * free the optimizer before MPI_Finalize.  Returns JOPT_OK, or
 * JOPT_ECOMM (MPI failed) or JOPT_ENOMEM with nothing to release.  For
 * jopt_optim_new_sharded, after changing what you will (buffer_bytes). */
JOPT_API int jopt_mpi_comm(MPI_Comm comm, jopt_comm *out);

/* jopt_optim_new_sharded over the processes of `comm` (jopt.h): every
 * process of `comm` calls it with the same spec, groups, sizes and
 * options.  A failure on any process fails it on every process with the
 * same status and message (jopt_errmsg(ctx)). */
JOPT_API int jopt_mpi_optim_new(jopt_ctx *ctx, const char *spec,
                                const jopt_group *groups, size_t ngroups,
                                const char *defaults, MPI_Comm comm,
                                jopt_optim **out);

#ifdef __cplusplus
}
#endif
#endif /* JOPT_MPI_H */
