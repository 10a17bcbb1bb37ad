/* cpu_isa.h — which vector path the CPU backend's kernels take: AVX-512 (with VNNI), AVX2 or
 * generic C, all compiled into every x86-64 build and chosen when a CPU backend is built.
 * Tested by tests/unit/test_kernels.c (every path the CPU has) and tests/e2e/test_isa_qemu.sh. */
#ifndef OKV_CPU_ISA_H
#define OKV_CPU_ISA_H

#include <stdbool.h>

typedef enum okv_cpu_isa {
    OKV_CPU_ISA_AUTO = 0,    /* the fastest path this CPU supports */
    OKV_CPU_ISA_AVX512 = 1,  /* avx512f, avx512bw, avx512vl, avx512vnni, avx2, fma, f16c */
    OKV_CPU_ISA_AVX2 = 2,    /* avx2, fma, f16c */
    OKV_CPU_ISA_GENERIC = 3, /* plain C: any CPU */
} okv_cpu_isa;

const char *okv_cpu_isa_name(okv_cpu_isa isa); /* "auto", "avx512", "avx2", "generic" */
int okv_cpu_isa_from_name(const char *name);   /* the okv_cpu_isa, or -1 */
/* The path is in this build and the CPU (and OS) report every feature it needs. */
bool okv_cpu_isa_supported(okv_cpu_isa isa);
/* The path CPU backends built from now on take (the cpu_isa key; default auto). A path the CPU
 * lacks fails at okv_backend_cpu_init with a usage error. */
void okv_cpu_isa_request(okv_cpu_isa isa);

#endif
