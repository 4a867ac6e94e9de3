/*
 * consumer_mpi.c - a program built against an installed jopt with MPI
 * (jopt_mpi.h), as a user would build one: one sharded Adam step on every
 * process of MPI_COMM_WORLD; every process must end with the same
 * weights.  Rank 0 prints OK, or a process says what went wrong (exit 1).
 *
 *   cmake -S tests/consumer -B build-consumer -DCMAKE_PREFIX_PATH=PREFIX
 *   cc consumer_mpi.c $(pkg-config --cflags --libs jopt-mpi)
 *   mpiexec -n 2 ./consumer_mpi
 */
#include <stdio.h>
#include <string.h>

#include "jopt_mpi.h"

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    float w1[5] = {1, -2, 3, -4, 5}, w2[3] = {1, 2, 3};
    float g1[5] = {0.5f, 0.5f, -0.5f, -0.5f, 1}, g2[3] = {1, -1, 1};
    g2[0] += (float)rank; /* each process its own gradient */
    jopt_param params[] = {{w1, g1, 5}, {w2, g2, 3}};
    jopt_group groups[] = {{params, 2, NULL}};
    jopt_ctx *ctx;
    jopt_optim *opt = NULL;
    int ok = jopt_ctx_new(&ctx) == JOPT_OK;
    if (ok && (jopt_mpi_optim_new(ctx, "adam", groups, 1, "lr=0.1", MPI_COMM_WORLD,
                                  &opt) != JOPT_OK ||
               jopt_step(opt, NULL, NULL, NULL) != JOPT_OK)) {
        fprintf(stderr, "consumer_mpi: rank %d: %s\n", rank, jopt_errmsg(ctx));
        ok = 0;
    }
    float first[8];
    memcpy(first, w1, sizeof w1);
    memcpy(first + 5, w2, sizeof w2);
    MPI_Bcast(first, 8, MPI_FLOAT, 0, MPI_COMM_WORLD);
    if (ok && (memcmp(first, w1, sizeof w1) || memcmp(first + 5, w2, sizeof w2) ||
               !(w1[0] < 1 && w2[0] < 1))) {
        fprintf(stderr, "consumer_mpi: rank %d's weights are not rank 0's, or "
                        "did not move\n", rank);
        ok = 0;
    }
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    if (ok && rank == 0)
        printf("OK\n");
    MPI_Finalize();
    return ok ? 0 : 1;
}
