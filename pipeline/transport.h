/* transport.h — how a stage-boundary message moves between two ranks: one interface, three
 * implementations. The control part (msg.h) always travels through MPI on the host; the payload
 * (hidden states) travels as the transport chooses: in the same host MPI message (mpi), as an MPI
 * message of its own from host or device memory (mpi-cuda: CUDA-aware MPI), or with NCCL
 * send/recv on a communicator and stream of its own per link (nccl). A send names the memory kind
 * its payload lives in and a buffer says the kind receives deliver into, so device activations
 * go from GPU to GPU with no host bounce. Every operation is non-blocking; pipe_wait polls with a
 * deadline, so a silent peer ends the job instead of hanging it. Tested by
 * tests/unit/test_transport.c (memory kinds), tests/mpi/test_pipeline.sh (mpi over shared memory
 * and TCP), tests/mpi/test_two_hosts.sh (two
 * network namespaces, a cut link) and tests/unit/test_planner.c (the auto choice, GPU sharing);
 * mpi-cuda and nccl are built when CUDA / NCCL are found and need a GPU per rank to run. */
#ifndef OKV_TRANSPORT_H
#define OKV_TRANSPORT_H

#include "../kernels/backend.h"
#include "../src/config.h"

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One message buffer with its in-flight operation (requests are MPI_REQUEST_NULL when idle). The
 * control part is serialised into and read from wire. Received payloads are delivered in memory
 * of the buffer's kind (`into`, fixed at buf_init): data points at them once a receive completes. */
typedef struct pipe_buf {
    uint8_t *wire;       /* host: [ctrl_cap] control part; mpi appends the payload */
    size_t ctrl_cap, data_cap;
    okv_mem_kind into;   /* where received payloads land */
    void *dev;           /* [data_cap] device memory (mpi: the backend's, for `into` device) */
    void *host;          /* device transports: [data_cap] pinned host staging */
    MPI_Request rq[2];   /* control (and, for mpi-cuda, payload) */
    void *event;         /* nccl: completion of the queued device work */
    int phase;           /* per-transport progress of the operation */
    bool active;         /* an operation is in flight */
    bool recv;           /* ... and it is a receive */
    int peer;            /* the rank the operation is with */
    /* set when a receive completes */
    size_t got_ctrl;     /* control bytes that arrived */
    size_t got_data;     /* payload bytes that arrived */
    void *data;          /* the payload, in memory of kind `into` (NULL: none) */
} pipe_buf;

typedef struct pipe_transport pipe_transport;
struct pipe_transport {
    okv_transport_kind kind;
    const char *name;
    MPI_Comm comm;
    int rank;
    double timeout_s;    /* pipe_wait's deadline; 0 = none */
    okv_backend *be;     /* moves payloads between host and backend memory where mpi needs it */
    void *state;
    /* Sets b up for control parts of up to ctrl_cap bytes and payloads of up to data_cap bytes,
     * received into memory of kind `into`. */
    int (*buf_init)(pipe_transport *t, pipe_buf *b, size_t ctrl_cap, size_t data_cap,
                    okv_mem_kind into);
    void (*buf_free)(pipe_transport *t, pipe_buf *b);
    /* Sends b's control part (ctrl_bytes, serialised in b->wire) and data_bytes of payload at x,
     * which lives in memory of kind `where`, to peer. x must hold its final values (the
     * backend's work on it synchronised) and may be reused as soon as send returns: the transport
     * copies it into b's own memory first (device to device for device memory). */
    void (*send)(pipe_transport *t, pipe_buf *b, size_t ctrl_bytes, const void *x,
                 okv_mem_kind where, size_t data_bytes, int peer, int tag);
    /* Posts a receive of the next message from peer. */
    void (*recv)(pipe_transport *t, pipe_buf *b, int peer, int tag);
    /* Progresses b's operation; *done once it completed (a receive has got_ctrl, got_data and
     * data set). A failure of the link (an NCCL asynchronous error) returns a status. */
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
/* Probes this rank's capabilities (GPU count, MPIX_Query_cuda_support) on comm (collective, with
 * pipe_wait_coll's deadline timeout_s). */
void pipe_transport_probe(MPI_Comm comm, int gpu, double timeout_s, pipe_transport_caps *caps);

/* Sets up the chosen transport on comm (collective: nccl checks that no two ranks of a node
 * share a GPU and builds its link communicators here). be (may be NULL while payloads stay in
 * host memory) moves mpi's payloads between host and backend memory; timeout_s is pipe_wait's
 * deadline (run-config key peer_timeout_s, 0 = none). */
int pipe_transport_init(pipe_transport *t, okv_transport_kind kind, MPI_Comm comm, int gpu,
                        okv_backend *be, double timeout_s);
void pipe_transport_free(pipe_transport *t);

/* Polls until b's operation completes: yields the core, then sleeps in short naps, so waiting
 * ranks do not starve computing ones on a shared node. When t->timeout_s passes first, or the
 * link reports an error, the rank prints one rank-tagged sentence naming the peer and the wait
 * (`what`, e.g. "boundary message", and seqno, the message's number on its link) and aborts the
 * job. */
void pipe_wait(pipe_transport *t, pipe_buf *b, const char *what, int64_t seqno);
/* The same deadline for a non-blocking collective of comm (start-up, shutdown): `what` names the
 * step ("the stage plan from rank 0"). */
void pipe_wait_coll(MPI_Comm comm, MPI_Request *rq, double timeout_s, const char *what);
/* Prints the sentence for a peer that stayed silent and aborts the job. */
_Noreturn void pipe_peer_lost(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Finds two ranks of one node on one GPU: node[r] identifies rank r's node (equal values: the
 * same node), bus[r] is the PCI bus id of its GPU ("" = none). Returns 1 with the first such pair
 * in *a < *b, else 0. nccl needs one GPU per rank. */
int pipe_gpu_shared(const int *node, const char (*bus)[32], int n, int *a, int *b);

/* Implementations (transport_mpi.c, transport_mpi_cuda.c, transport_nccl.c). */
int pipe_transport_mpi_init(pipe_transport *t, MPI_Comm comm);
int pipe_transport_mpi_cuda_init(pipe_transport *t, MPI_Comm comm, int gpu);
int pipe_transport_nccl_init(pipe_transport *t, MPI_Comm comm, int gpu);

#endif
