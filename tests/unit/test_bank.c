/* test_bank.c — the Context Bank: rows stored through kv_store at prefill read back bit-exact
 * through bank views (the token-major layout of bank.h, checked by hand offsets); a capacity
 * that cannot fit fails with the bytes needed and available; where the machine allows, the
 * binding is confirmed with hwloc's own query of the area; the NUMA node picked near each PCI
 * device agrees with the kernel's /sys/bus/pci/devices/<id>/numa_node. */
#include "bank/bank.h"
#include "common.h"
#include "test_util.h"

#include <dirent.h>
#include <hwloc.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    okv_log_init(0);
    okv_backend be;
    TEST_OK(okv_backend_ref_init(&be));
    /* Two groups: layers 4..6 and 9..9, kv_dim 8, 2 slots, 10 rows, f16. */
    const int first[2] = {4, 9}, cnt[2] = {3, 1}, kv_dim = 8, slots = 2, rows = 10;
    okv_bank b;
    TEST_OK(bank_init(&b, 2, first, cnt, kv_dim, OKV_TYPE_F16, slots, rows, NULL));
    TEST_CHECK(b.bytes == (size_t)(3 + 1) * 2 * kv_dim * 2 * slots * rows, "bank bytes %zu", b.bytes);
    char desc[256];
    bank_describe(&b, desc, sizeof desc);
    printf("%s\n", desc);

    /* Write K/V of every (group, layer, slot, row) with distinct values, then read back. */
    float src[2][8];
    for (int g = 0; g < 2; g++)
        for (int l = first[g]; l < first[g] + cnt[g]; l++)
            for (int s = 0; s < slots; s++)
                for (int r = 0; r < rows; r++) {
                    for (int i = 0; i < kv_dim; i++) {
                        src[0][i] = (float)(l * 1000 + s * 100 + r) + 0.125f * i;
                        src[1][i] = -src[0][i];
                    }
                    int64_t stride;
                    uint16_t *k = bank_layer_base(&b, g, l, s, &stride);
                    int32_t row = r;
                    be.kv_store(&be, k, OKV_TYPE_F16, stride, &row, src[0], 1, kv_dim);
                    be.kv_store(&be, k + kv_dim, OKV_TYPE_F16, stride, &row, src[1], 1, kv_dim);
                }
    int bad = 0;
    for (int g = 0; g < 2; g++) {
        uint16_t *base = (uint16_t *)b.groups[g].base;
        for (int l = first[g]; l < first[g] + cnt[g]; l++)
            for (int s = 0; s < slots; s++) {
                int32_t idx[3] = {1, 4, 9};
                okv_kv_view v = bank_view(&b, g, l, s, idx, 3);
                for (int j = 0; j < 3; j++) {
                    int r = idx[j];
                    /* token-major: row (s, r) of the group, then layer offset, K then V */
                    const uint16_t *want = base + ((size_t)s * rows + r) * b.groups[g].row_elems +
                                           (size_t)(l - first[g]) * 2 * kv_dim;
                    const uint16_t *k = (const uint16_t *)v.k + (size_t)r * v.stride;
                    const uint16_t *vv = (const uint16_t *)v.v + (size_t)r * v.stride;
                    bad += k != want || vv != want + kv_dim;
                    for (int i = 0; i < kv_dim; i++) {
                        uint16_t e = okv_f32_to_fp16((float)(l * 1000 + s * 100 + r) + 0.125f * i);
                        uint16_t ev = okv_f32_to_fp16(-((float)(l * 1000 + s * 100 + r) + 0.125f * i));
                        bad += k[i] != e || vv[i] != ev;
                    }
                }
            }
    }
    TEST_CHECK(bad == 0, "%d bank values or addresses differ from the stored rows", bad);
    printf("bank round trip: %d layers x %d slots x %d rows, %d mismatches (bit-exact required)\n", 4,
           slots, rows, bad);

    /* Binding: hwloc's view of the area agrees with what the bank reports. */
    if (b.bound) {
        hwloc_nodeset_t where = hwloc_bitmap_alloc();
        hwloc_membind_policy_t pol;
        TEST_CHECK(hwloc_get_area_membind(b.topo, b.mem, b.bytes, where, &pol, HWLOC_MEMBIND_BYNODESET) == 0,
                   "hwloc_get_area_membind failed");
        TEST_CHECK(hwloc_bitmap_isset(where, (unsigned)b.numa_node), "bank is not on node %d", b.numa_node);
        printf("bank bound to NUMA node %d (hwloc confirms, policy %d)\n", b.numa_node, (int)pol);
        hwloc_bitmap_free(where);
    } else {
        printf("memory binding is not supported here; the bank uses unbound memory\n");
    }
    bank_free(&b);
    bank_free(&b); /* safe twice */

    /* Placement near a GPU: for every PCI device the kernel lists, the NUMA node bank_init would
     * pick must be the one /sys says the device sits on (-1 there: no locality, and the bank
     * goes with the rank's cores); a bank asked to sit near a device without locality says so. */
    DIR *dir = opendir("/sys/bus/pci/devices");
    int n_dev = 0, agree = 0, n_nodes = 0;
    for (int i = 0; i < 1024; i++) {
        char p[64];
        snprintf(p, sizeof p, "/sys/devices/system/node/node%d", i);
        n_nodes += test_file_exists(p);
    }
    const char *no_locality = NULL;
    for (struct dirent *d; dir && (d = readdir(dir));) {
        if (d->d_name[0] == '.') continue;
        char p[512];
        snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/numa_node", d->d_name);
        FILE *f = fopen(p, "r");
        int sys_node = -1;
        if (!f || fscanf(f, "%d", &sys_node) != 1) sys_node = -1;
        if (f) fclose(f);
        const int ours = bank_numa_of_pci(d->d_name);
        /* a one-node machine gives every device the whole machine: no locality either way */
        const bool same = ours == sys_node || (n_nodes <= 1 && ours == -1);
        TEST_CHECK(same, "PCI device %s: bank placement picks NUMA node %d, /sys says %d", d->d_name,
                   ours, sys_node);
        n_dev++;
        agree += same;
        if (ours == -1 && !no_locality) no_locality = strdup(d->d_name);
    }
    if (dir) closedir(dir);
    printf("bank placement near a PCI device: %d of %d devices on the NUMA node /sys gives (%d "
           "node(s) here)\n", agree, n_dev, n_nodes);
    if (no_locality) {
        TEST_OK(bank_init(&b, 2, first, cnt, kv_dim, OKV_TYPE_F16, slots, rows, no_locality));
        bank_describe(&b, desc, sizeof desc);
        TEST_CHECK(!b.bound || strstr(desc, "no NUMA locality"), "bank near %s: %s", no_locality, desc);
        printf("bank near %s: %s\n", no_locality, desc);
        bank_free(&b);
        free((void *)no_locality);
    }

    /* Capacity: 1e6 slots x 1e6 rows cannot fit; the message names both sizes. */
    const int big_first[1] = {0}, big_cnt[1] = {8};
    int st = bank_init(&b, 1, big_first, big_cnt, 1024, OKV_TYPE_F16, 1000000, 1000000, NULL);
    TEST_CHECK(st == OKV_ERR_NOMEM, "huge bank accepted (status %d)", st);
    TEST_CHECK(strstr(okv_last_error(), "needs") && strstr(okv_last_error(), "bytes"),
               "capacity message lacks sizes: %s", okv_last_error());
    printf("capacity error: %s\n", okv_last_error());
    be.free(&be);
    return test_summary();
}
