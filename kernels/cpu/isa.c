/* isa.c — the CPU backend's choice of vector path: what this CPU reports, what cpu_isa asks for,
 * and the per-path entry points. Every path the CPU has runs tests/unit/test_kernels.c; the
 * choice on a CPU without AVX-512 is checked by tests/e2e/test_isa_qemu.sh. */
#include "cpu.h"
#include "common.h"

#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define CPU_PATH_ENTRY(ISA, path)                                                                  \
    {                                                                                              \
        .isa = ISA, .act_row_bytes = cpu_act_row_bytes_##path, .pf_floats = cpu_pf_floats_##path,  \
        .attn_reserve = cpu_attn_reserve_##path,                                                   \
        .ops = {.matmul = cpu_matmul_##path, .rmsnorm = cpu_rmsnorm_##path,                        \
                .rope = cpu_rope_##path, .swiglu = cpu_swiglu_##path, .add = cpu_add_##path,       \
                .embed = cpu_embed_##path, .kv_store = cpu_kv_store_##path,                        \
                .attn_prefill = cpu_attn_prefill_##path, .attn_decode = cpu_attn_decode_##path,    \
                .attn_logits = cpu_attn_logits_##path},                                            \
    }

/* CMakeLists.txt compiles the AVX paths only for x86-64. */
static const cpu_path paths[] = {
#if defined(__x86_64__)
    CPU_PATH_ENTRY(OKV_CPU_ISA_AVX512, avx512),
    CPU_PATH_ENTRY(OKV_CPU_ISA_AVX2, avx2),
#endif
    CPU_PATH_ENTRY(OKV_CPU_ISA_GENERIC, generic),
};
#define N_PATHS ((int)(sizeof paths / sizeof *paths))

static const char *const isa_names[] = {"auto", "avx512", "avx2", "generic"};

/* What each path's compile flags (CMakeLists.txt) let the compiler use. */
static const char *const isa_needs[] = {
    "", "avx512f, avx512bw, avx512vl, avx512vnni, avx2, fma and f16c", "avx2, fma and f16c", ""};

static okv_cpu_isa requested = OKV_CPU_ISA_AUTO;
static const cpu_path *logged; /* the last choice logged */

const char *okv_cpu_isa_name(okv_cpu_isa isa) {
    return isa >= 0 && isa <= OKV_CPU_ISA_GENERIC ? isa_names[isa] : "?";
}

int okv_cpu_isa_from_name(const char *name) {
    for (int i = 0; i <= OKV_CPU_ISA_GENERIC; i++)
        if (!strcmp(name, isa_names[i])) return i;
    return -1;
}

static const cpu_path *path_of(okv_cpu_isa isa) {
    for (int i = 0; i < N_PATHS; i++)
        if (paths[i].isa == isa) return &paths[i];
    return NULL;
}

#if defined(__x86_64__)
/* F16C from CPUID leaf 1 (ECX bit 29): clang's __builtin_cpu_supports does not know it. */
static bool cpu_has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

/* __builtin_cpu_supports also checks that the OS saves the AVX and AVX-512 registers. */
bool okv_cpu_isa_supported(okv_cpu_isa isa) {
    if (!path_of(isa)) return false;
#if defined(__x86_64__)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      cpu_has_f16c();
    if (isa == OKV_CPU_ISA_AVX2) return avx2;
    if (isa == OKV_CPU_ISA_AVX512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#endif
    return true;
}

void okv_cpu_isa_request(okv_cpu_isa isa) {
    OKV_ASSERT(isa >= OKV_CPU_ISA_AUTO && isa <= OKV_CPU_ISA_GENERIC);
    requested = isa;
}

const cpu_path *cpu_path_choose(void) {
    const cpu_path *p = NULL;
    if (requested == OKV_CPU_ISA_AUTO) {
        for (int i = 0; i < N_PATHS && !p; i++)
            if (okv_cpu_isa_supported(paths[i].isa)) p = &paths[i];
    } else if (okv_cpu_isa_supported(requested)) {
        p = path_of(requested);
    } else {
        if (path_of(requested))
            okv_fail(OKV_ERR_USAGE, "cpu_isa=%s needs a CPU with %s, which this one lacks; use "
                     "cpu_isa=auto", isa_names[requested], isa_needs[requested]);
        else
            okv_fail(OKV_ERR_USAGE, "cpu_isa=%s is not in this build (it is not for x86-64); use "
                     "cpu_isa=auto", isa_names[requested]);
        return NULL;
    }
    if (p != logged)
        OKV_INFO("CPU kernels: %s path (%s)", isa_names[p->isa],
                 requested == OKV_CPU_ISA_AUTO ? "cpu_isa=auto: the fastest this CPU supports"
                                               : "forced by cpu_isa / OMNIKV_CPU_ISA");
    logged = p;
    return p;
}
