/* bank.h — the Context Bank: host memory holding the prompt KV of a stage's sparse layers, one
 * token-major row per (group, sequence slot, prompt token), allocated once with hwloc and bound
 * to the NUMA node nearest the rank's GPU, or of the rank's cores. Tested by tests/unit/test_bank.c.
 *
 * Row layout (elements of kv_type): for each sparse layer of the group on this stage, in layer
 * order: K[n_kv_heads][head_dim] then V[n_kv_heads][head_dim]. A selected token is therefore one
 * contiguous read of row_elems elements for the whole group. Element e of a row sits at byte
 * okv_type_row_bytes(type, e): 2e for f16, 4e for f32, and for q8_0 (kv_dim a multiple of 32)
 * every head is whole 34-byte blocks of 32 elements, so a row takes row_elems / 32 * 34 bytes
 * and the staged gather copies it whole like any other. */
#ifndef OKV_BANK_H
#define OKV_BANK_H

#include "../kernels/backend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct okv_bank_group {
    int first_layer, n_layers; /* sparse layers of this group held here (contiguous) */
    int64_t row_elems;         /* n_layers * 2 * kv_dim */
    uint8_t *base;             /* [max_slots][max_rows][row_elems] in the bank's type */
} okv_bank_group;

typedef struct okv_bank {
    okv_type type;
    int kv_dim;
    int max_slots, max_rows;
    int n_groups;
    okv_bank_group *groups; /* [n_groups] */
    void *mem;              /* one hwloc allocation */
    size_t bytes;
    int numa_node;          /* where it landed (-1 unknown) */
    bool bound;             /* membind succeeded and was verified */
    char near[96];          /* why those nodes: "nearest the GPU at <bus id>" or the rank's cores */
    void *topo;             /* hwloc_topology_t */
    okv_backend *registered; /* the backend the memory is registered (pinned) with, or NULL */
    /* accounting */
    uint64_t rows_written, rows_read, bytes_read; /* rows_read counts (row, layer) pairs */
} okv_bank;

/* group_first/group_n: per group, the first sparse layer and how many follow (n = 0: none here).
 * near_pci: the PCI bus id of the rank's GPU (okv_backend.pci_bus_id), whose nearest NUMA
 * node(s) get the memory; NULL or "" (or a device without locality): the node(s) of the rank's
 * cores. Fails with OKV_ERR_NOMEM naming the bytes needed and the bytes available on the node. */
int bank_init(okv_bank *b, int n_groups, const int *group_first, const int *group_n, int kv_dim,
              okv_type type, int max_slots, int max_rows, const char *near_pci);
/* The first NUMA node nearest PCI device busid as bank_init finds it, or -1 (no such device, or
 * no locality narrower than the machine). */
int bank_numa_of_pci(const char *busid);
void bank_free(okv_bank *b);

/* The view of one layer's K/V for a slot: rows are prompt positions; idx/n as in okv_kv_view. */
okv_kv_view bank_view(const okv_bank *b, int group, int layer, int slot, const int32_t *idx, int n);
/* Pointer to K of (group, layer, slot, row 0) and the row stride, for kv_store. */
void *bank_layer_base(const okv_bank *b, int group, int layer, int slot, int64_t *stride);
/* Registers the bank's memory with a backend so its ops may read rows in place and gather them
 * (bank_free unregisters). */
int bank_register(okv_bank *b, okv_backend *be);
/* Bytes of one row of a group (every sparse layer's K and V of one token). */
size_t bank_group_row_bytes(const okv_bank *b, int group);
/* Row 0 of (group, slot): rows of prompt positions follow bank_group_row_bytes apart. */
uint8_t *bank_slot_rows(const okv_bank *b, int group, int slot);
/* Issues on stream the copy of (group, slot)'s rows idx[0..n) (backend memory) into dst, n rows
 * of bank_group_row_bytes in backend memory, and counts them as read. */
void bank_gather(okv_bank *b, okv_backend *be, int group, int slot, const int32_t *idx, int n,
                 void *dst, int stream);
/* Bytes of one prompt token over every group (what a selected token costs to read). */
size_t bank_token_bytes(const okv_bank *b);
/* As bank_gather, through the row cache: rows whose index is among old_idx[0..n_old) (the set the
 * previous gather left in old) are copied from old, and *hits (backend memory) counts them. */
void bank_gather_cached(okv_bank *b, okv_backend *be, int group, int slot, const int32_t *idx,
                        int n, void *dst, const void *old, const int32_t *old_idx, int n_old,
                        uint64_t *hits, int stream);
/* Where the bank lives, for the start-up log: groups, NUMA node, binding (the bytes a run holds
 * are engine_memory's, counted as the planner counts them). */
void bank_describe(const okv_bank *b, char *buf, size_t cap);

#endif
