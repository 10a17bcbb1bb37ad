/* bank.c — Context Bank allocation (hwloc, bound to the NUMA node of the rank's cores), row
 * addressing and views. Tested by tests/unit/test_bank.c (round trip, capacity error, binding
 * checked with hwloc_get_area_membind). */
#include "bank.h"

#include "../src/common.h"

#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Bytes of memory on the NUMA nodes in set (0 when hwloc does not know). */
static uint64_t nodeset_memory(hwloc_topology_t topo, hwloc_const_nodeset_t set) {
    uint64_t total = 0;
    hwloc_obj_t node = NULL;
    while ((node = hwloc_get_next_obj_by_type(topo, HWLOC_OBJ_NUMANODE, node)))
        if (hwloc_bitmap_isset(set, node->os_index)) total += node->attr->numanode.local_memory;
    return total;
}

/* The NUMA nodes nearest PCI device busid ("domain:bus:dev.fn") into nodes: those of its
 * first non-I/O ancestor. 0 when the topology (loaded with I/O objects) lacks the device or
 * gives it no locality narrower than the whole machine. */
static int pci_nodes(hwloc_topology_t topo, const char *busid, hwloc_nodeset_t nodes) {
    hwloc_obj_t dev = hwloc_get_pcidev_by_busidstring(topo, busid);
    hwloc_obj_t anc = dev ? hwloc_get_non_io_ancestor_obj(topo, dev) : NULL;
    if (!anc || !anc->nodeset || hwloc_bitmap_iszero(anc->nodeset) ||
        hwloc_bitmap_isequal(anc->nodeset, hwloc_topology_get_topology_nodeset(topo)))
        return 0;
    hwloc_bitmap_copy(nodes, anc->nodeset);
    return 1;
}

static int topo_load(hwloc_topology_t *topo, bool io) {
    if (hwloc_topology_init(topo)) return -1;
    if (io) hwloc_topology_set_io_types_filter(*topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    if (hwloc_topology_load(*topo)) {
        hwloc_topology_destroy(*topo);
        return -1;
    }
    return 0;
}

int bank_numa_of_pci(const char *busid) {
    hwloc_topology_t topo;
    if (topo_load(&topo, true)) return -1;
    hwloc_nodeset_t nodes = hwloc_bitmap_alloc();
    const int node = pci_nodes(topo, busid, nodes) ? hwloc_bitmap_first(nodes) : -1;
    hwloc_bitmap_free(nodes);
    hwloc_topology_destroy(topo);
    return node;
}

int bank_init(okv_bank *b, int n_groups, const int *group_first, const int *group_n, int kv_dim,
              okv_type type, int max_slots, int max_rows, const char *near_pci) {
    memset(b, 0, sizeof *b);
    b->type = type;
    b->kv_dim = kv_dim;
    b->max_slots = max_slots;
    b->max_rows = max_rows;
    b->n_groups = n_groups;
    b->numa_node = -1;
    b->groups = calloc((size_t)(n_groups > 0 ? n_groups : 1), sizeof *b->groups);
    OKV_ASSERT(b->groups);
    OKV_ASSERT(okv_kv_type_ok(type) && kv_dim % okv_type_block_elems(type) == 0);
    size_t total = 0;
    for (int g = 0; g < n_groups; g++) {
        okv_bank_group *G = &b->groups[g];
        G->first_layer = group_first[g];
        G->n_layers = group_n[g];
        G->row_elems = (int64_t)G->n_layers * 2 * kv_dim;
        total += bank_group_row_bytes(b, g) * (size_t)max_slots * (size_t)max_rows;
    }
    b->bytes = total;
    if (total == 0) return OKV_OK;

    const bool gpu = near_pci && near_pci[0];
    hwloc_topology_t topo;
    if (topo_load(&topo, gpu)) {
        bank_free(b);
        return okv_fail(OKV_ERR_INTERNAL, "hwloc could not read the machine topology");
    }
    b->topo = topo;
    /* The node(s) nearest the rank's GPU (rows cross PCIe to it every step), else those local
     * to the cores this rank is bound to (all cores when unbound). */
    hwloc_cpuset_t cpus = hwloc_bitmap_alloc();
    hwloc_nodeset_t nodes = hwloc_bitmap_alloc();
    if (gpu && pci_nodes(topo, near_pci, nodes)) {
        snprintf(b->near, sizeof b->near, "nearest the GPU at %s", near_pci);
    } else {
        if (hwloc_get_cpubind(topo, cpus, HWLOC_CPUBIND_PROCESS) != 0)
            hwloc_bitmap_copy(cpus, hwloc_topology_get_topology_cpuset(topo));
        hwloc_cpuset_to_nodeset(topo, cpus, nodes);
        snprintf(b->near, sizeof b->near, gpu ? "of the rank's cores: hwloc gives the GPU at %s no "
                 "NUMA locality" : "of the rank's cores", near_pci);
    }
    /* Virtual machines may report less node memory than the machine has (memory hot-plug), so
     * the hard limit is what the system has available; past the node's size we only warn. */
    uint64_t local = nodeset_memory(topo, nodes), avail = okv_meminfo_bytes("MemAvailable");
    if (local && total > local)
        OKV_WARN("the Context Bank (%.2f GiB) is larger than the memory hwloc reports for this "
                 "rank's NUMA node(s) (%.2f GiB); part of it may live on remote memory",
                 total / 1073741824.0, local / 1073741824.0);
    if (avail && total > avail) {
        hwloc_bitmap_free(cpus);
        hwloc_bitmap_free(nodes);
        size_t need = total;
        bank_free(b);
        return okv_fail(OKV_ERR_NOMEM,
                        "the Context Bank needs %zu bytes (%.2f GiB) but only %llu bytes (%.2f GiB) "
                        "are available; lower max_context_len or max_batch, or use more pipeline "
                        "ranks",
                        need, need / 1073741824.0, (unsigned long long)avail,
                        avail / 1073741824.0);
    }
    b->mem = hwloc_alloc_membind(topo, total, nodes, HWLOC_MEMBIND_BIND,
                                 HWLOC_MEMBIND_BYNODESET | HWLOC_MEMBIND_NOCPUBIND);
    if (b->mem) {
        b->bound = true;
    } else {
        /* Binding is not supported everywhere (containers); plain memory still works. */
        b->mem = hwloc_alloc(topo, total);
    }
    if (!b->mem) {
        hwloc_bitmap_free(cpus);
        hwloc_bitmap_free(nodes);
        size_t need = total;
        bank_free(b);
        return okv_fail(OKV_ERR_NOMEM,
                        "the Context Bank needs %zu bytes (%.2f GiB) and the allocation failed; "
                        "lower max_context_len or max_batch, or use more pipeline ranks",
                        need, need / 1073741824.0);
    }
    /* Sparse layers read scattered rows, each from a different 4 KiB page at small budgets:
     * huge pages (where the kernel offers them on request) spare a TLB miss per row. */
    madvise(b->mem, total, MADV_HUGEPAGE);
    if (b->bound) {
        hwloc_nodeset_t where = hwloc_bitmap_alloc();
        hwloc_membind_policy_t pol;
        if (hwloc_get_area_membind(topo, b->mem, total, where, &pol, HWLOC_MEMBIND_BYNODESET) == 0 &&
            hwloc_bitmap_isincluded(where, nodes))
            b->numa_node = hwloc_bitmap_first(where);
        else
            b->bound = false;
        hwloc_bitmap_free(where);
    }
    hwloc_bitmap_free(cpus);
    hwloc_bitmap_free(nodes);
    uint8_t *p = b->mem;
    for (int g = 0; g < n_groups; g++) {
        b->groups[g].base = p;
        p += bank_group_row_bytes(b, g) * (size_t)max_slots * (size_t)max_rows;
    }
    return OKV_OK;
}

void bank_free(okv_bank *b) {
    if (!b) return;
    if (b->registered && b->mem) b->registered->host_unregister(b->registered, b->mem);
    if (b->mem && b->topo) hwloc_free(b->topo, b->mem, b->bytes);
    if (b->topo) hwloc_topology_destroy(b->topo);
    free(b->groups);
    memset(b, 0, sizeof *b);
}

int bank_register(okv_bank *b, okv_backend *be) {
    if (!b->bytes || b->registered) return OKV_OK;
    int st = be->host_register(be, b->mem, b->bytes);
    if (st) {
        okv_error_prefix("registering the Context Bank (%.2f GiB) with the %s backend: ",
                         b->bytes / 1073741824.0, be->name);
        return st;
    }
    b->registered = be;
    return OKV_OK;
}

size_t bank_group_row_bytes(const okv_bank *b, int group) {
    return okv_type_row_bytes(b->type, b->groups[group].row_elems);
}

uint8_t *bank_slot_rows(const okv_bank *b, int group, int slot) {
    OKV_ASSERT(slot >= 0 && slot < b->max_slots);
    return b->groups[group].base + (size_t)slot * b->max_rows * bank_group_row_bytes(b, group);
}

void bank_gather(okv_bank *b, okv_backend *be, int group, int slot, const int32_t *idx, int n,
                 void *dst, int stream) {
    const size_t row = bank_group_row_bytes(b, group);
    be->gather_rows(be, dst, bank_slot_rows(b, group, slot), row, row, idx, n, stream);
    b->rows_read += (uint64_t)n * (uint64_t)b->groups[group].n_layers; /* per layer, as in place */
    b->bytes_read += (uint64_t)n * row;
}

void bank_gather_cached(okv_bank *b, okv_backend *be, int group, int slot, const int32_t *idx,
                        int n, void *dst, const void *old, const int32_t *old_idx, int n_old,
                        uint64_t *hits, int stream) {
    const size_t row = bank_group_row_bytes(b, group);
    be->gather_rows_cached(be, dst, bank_slot_rows(b, group, slot), row, row, idx, n, old, old_idx,
                           n_old, hits, stream);
    b->rows_read += (uint64_t)n * (uint64_t)b->groups[group].n_layers;
    b->bytes_read += (uint64_t)n * row;
}

void *bank_layer_base(const okv_bank *b, int group, int layer, int slot, int64_t *stride) {
    const okv_bank_group *G = &b->groups[group];
    OKV_ASSERT(layer >= G->first_layer && layer < G->first_layer + G->n_layers);
    OKV_ASSERT(slot >= 0 && slot < b->max_slots);
    const size_t off = okv_type_row_bytes(b->type, (int64_t)slot * b->max_rows * G->row_elems +
                                                       (int64_t)(layer - G->first_layer) * 2 * b->kv_dim);
    *stride = G->row_elems;
    return G->base + off;
}

okv_kv_view bank_view(const okv_bank *b, int group, int layer, int slot, const int32_t *idx, int n) {
    int64_t stride;
    uint8_t *k = bank_layer_base(b, group, layer, slot, &stride);
    okv_kv_view v = {
        .type = b->type,
        .k = k,
        .v = k + okv_type_row_bytes(b->type, b->kv_dim),
        .stride = stride,
        .idx = idx,
        .n = n,
    };
    return v;
}

size_t bank_token_bytes(const okv_bank *b) {
    size_t bytes = 0;
    for (int g = 0; g < b->n_groups; g++) bytes += bank_group_row_bytes(b, g);
    return bytes;
}

void bank_describe(const okv_bank *b, char *buf, size_t cap) {
    if (!b->bytes) {
        snprintf(buf, cap, "no sparse layers here");
        return;
    }
    snprintf(buf, cap, "%s rows, %zu bytes per token, %d group(s), %s", okv_type_name(b->type),
             bank_token_bytes(b), b->n_groups,
             b->bound ? "bound to NUMA node" : "not NUMA-bound (binding unsupported)");
    size_t len = strlen(buf);
    if (b->bound) snprintf(buf + len, cap - len, " %d (%s)", b->numa_node, b->near);
    len = strlen(buf);
    if (b->registered)
        snprintf(buf + len, cap - len, ", registered with the %s backend", b->registered->name);
}
