/* SPDX-License-Identifier: MIT */
/* Smallest use of an installed libclopt_mpi: compiles against clopt_mpi.h (and so <mpi.h>
 * and clopt.h), links libclopt_mpi, libclopt and MPI, and checks a few calls that need
 * neither MPI_Init nor a device, so it runs as a plain process (no mpirun). */
#include <clopt_mpi.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    int bad = 0;
    clopt_mpi_options o;
    memset(&o, 0xff, sizeof o);
    clopt_mpi_options_init(&o);
    bad |= o.struct_size != sizeof o || o.grad_mode != CLOPT_MPI_GRAD_ENGINE ||
           o.reduce_op != CLOPT_MPI_SUM || o.ordered_sum != 1 || o.shard_tensors != 0;
    /* this module's statuses, and clopt's through it */
    const char *name = clopt_mpi_status_name((clopt_status)CLOPT_MPI_ERR_REMOTE);
    bad |= strcmp(name, "CLOPT_MPI_ERR_REMOTE") != 0;
    bad |= strcmp(clopt_mpi_status_str(CLOPT_SUCCESS), clopt_status_str(CLOPT_SUCCESS)) != 0;
    /* MPI itself is linked (MPI_Initialized may be called before MPI_Init) */
    int initialized = -1;
    bad |= MPI_Initialized(&initialized) != MPI_SUCCESS || initialized != 0;
    /* a collective entry point resolves (void (*)(void): any function pointer type) */
    void (*volatile create)(void) = (void (*)(void))clopt_mpi_optimizer_create;
    bad |= create == NULL;
    printf("consumer_mpi: %s (%s)\n", bad ? "FAILED" : "ok",
           clopt_mpi_status_str((clopt_status)CLOPT_MPI_ERR_REMOTE));
    return bad;
}
