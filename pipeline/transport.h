/* transport.h — how a stage-boundary message moves between two ranks: one interface, three
 * implementations. The control part (msg.h) always travels through MPI on the host; the hidden
 * states travel as the transport chooses: in the same host MPI message (mpi), from device memory
 * through CUDA-aware MPI (mpi-cuda), or with NCCL send/recv (nccl). Every operation is
 * non-blocking; completion is polled so a rank waiting for its neighbour leaves the cores to the
 * ranks that compute. Tested by tests/mpi/test_pipeline.sh (mpi over shared memory and TCP) and
 * tests/unit/test_planner.c (the auto choice); mpi-cuda and nccl are built when CUDA / NCCL are
 * found and need GPUs to run. */
#ifndef OKV_TRANSPORT_H
#define OKV_TRANSPORT_H

#include "../src/config.h"

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One message buffer with its in-flight operation (requests are MPI_REQUEST_NULL when idle). The control part is built and read in wire;
 * received hidden states are read from data. */
typedef struct pipe_buf {
    uint8_t *wire;       /* host: [ctrl_cap] control part; mpi appends the hidden states */
    size_t ctrl_cap, data_cap;
    void *dev;           /* device transports: [data_cap] device staging */
    float *host_data;    /* device transports: [data_cap] received hidden states (host) */
    MPI_Request rq[2];   /* control (and, for mpi-cuda, data) */
    void *event;         /* nccl: completion of the queued device work */
    int phase;           /* per-transport progress of the operation */
    bool active;         /* an operation is in flight */
    bool recv;           /* ... and it is a receive */
    /* set when a receive completes */
    size_t got_ctrl;     /* control bytes that arrived */
    size_t got_data;     /* hidden-state bytes that arrived */
    float *data;         /* received hidden states in host memory (NULL: none) */
    int peer;            /* the rank the operation is with */
} pipe_buf;

typedef struct pipe_transport pipe_transport;
struct pipe_transport {
    okv_transport_kind kind;
    const char *name;
    MPI_Comm comm;
    void *state;
    int (*buf_init)(pipe_transport *t, pipe_buf *b, size_t ctrl_cap, size_t data_cap);
    void (*buf_free)(pipe_transport *t, pipe_buf *b);
    /* Sends b's control part (ctrl_bytes, built in b->wire) and data_bytes of hidden states
     * from host memory x to peer. */
    void (*send)(pipe_transport *t, pipe_buf *b, size_t ctrl_bytes, const float *x,
                 size_t data_bytes, int peer, int tag);
    /* Posts a receive of the next message from peer. */
    void (*recv)(pipe_transport *t, pipe_buf *b, int peer, int tag);
    /* Progresses b's operation; *done once it completed (a receive has got_ctrl and data set). */
    int (*test)(pipe_transport *t, pipe_buf *b, bool *done);
    void (*free)(pipe_transport *t);
};

/* What this run can use, for the choice below. */
typedef struct pipe_transport_caps {
    bool device_compute; /* the compute backend keeps hidden states in device memory */
    bool gpus;           /* every rank has a GPU */
    bool cuda_aware;     /* MPIX_Query_cuda_support() reported CUDA-aware MPI */
    bool nccl;           /* built with NCCL */
    bool cuda;           /* built with the CUDA runtime */
} pipe_transport_caps;

/* The transport to use: `auto` takes mpi while hidden states live in host memory (the CPU
 * backend: a device hop would only add two copies), else nccl, else mpi-cuda, else mpi. An
 * explicit request that cannot work fails with OKV_ERR_USAGE saying why. */
int pipe_transport_choose(okv_transport_kind want, const pipe_transport_caps *caps,
                          okv_transport_kind *out);
/* Probes this rank's capabilities (GPU count, MPIX_Query_cuda_support) on comm. */
void pipe_transport_probe(MPI_Comm comm, int gpu, pipe_transport_caps *caps);

/* Sets up the chosen transport on comm (collective: NCCL builds its communicator here). */
int pipe_transport_init(pipe_transport *t, okv_transport_kind kind, MPI_Comm comm, int gpu);
void pipe_transport_free(pipe_transport *t);

/* Polls until b's operation completes: yields the core, then sleeps in short naps, so waiting
 * ranks do not starve computing ones on a shared node. */
void pipe_wait(pipe_transport *t, pipe_buf *b);

/* Implementations (transport_mpi.c, transport_mpi_cuda.c, transport_nccl.c). */
int pipe_transport_mpi_init(pipe_transport *t, MPI_Comm comm);
int pipe_transport_mpi_cuda_init(pipe_transport *t, MPI_Comm comm, int gpu);
int pipe_transport_nccl_init(pipe_transport *t, MPI_Comm comm, int gpu);

#endif
