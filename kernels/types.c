/* types.c — sizes and names of the tensor element types of types.h.
 * Block sizes and name round-trips are checked by tests/unit/test_kernels.c. */
#include "types.h"

#include <stdio.h>
#include <string.h>

typedef struct type_info {
    const char *name;
    int block_elems;
    size_t block_bytes;
    int is_weight;
} type_info;

static const type_info *type_get(okv_type t) {
    static const type_info f32 = {"f32", 1, 4, 1};
    static const type_info f16 = {"f16", 1, 2, 1};
    static const type_info bf16 = {"bf16", 1, 2, 1};
    static const type_info q4_0 = {"q4_0", OKV_QK, sizeof(okv_block_q4_0), 1};
    static const type_info q4_1 = {"q4_1", OKV_QK, sizeof(okv_block_q4_1), 1};
    static const type_info q8_0 = {"q8_0", OKV_QK, sizeof(okv_block_q8_0), 1};
    static const type_info q8_1 = {"q8_1", OKV_QK, sizeof(okv_block_q8_1), 0};
    static const type_info q5_0 = {"q5_0", OKV_QK, sizeof(okv_block_q5_0), 1};
    static const type_info q5_1 = {"q5_1", OKV_QK, sizeof(okv_block_q5_1), 1};
    static const type_info iq4_nl = {"iq4_nl", OKV_QK, sizeof(okv_block_iq4_nl), 1};
    static const type_info q2_k = {"q2_k", OKV_QK_K, sizeof(okv_block_q2_k), 1};
    static const type_info q3_k = {"q3_k", OKV_QK_K, sizeof(okv_block_q3_k), 1};
    static const type_info q4_k = {"q4_k", OKV_QK_K, sizeof(okv_block_q4_k), 1};
    static const type_info q5_k = {"q5_k", OKV_QK_K, sizeof(okv_block_q5_k), 1};
    static const type_info q6_k = {"q6_k", OKV_QK_K, sizeof(okv_block_q6_k), 1};
    static const type_info q8_k = {"q8_k", OKV_QK_K, sizeof(okv_block_q8_k), 0};
    switch (t) {
    case OKV_TYPE_F32: return &f32;
    case OKV_TYPE_F16: return &f16;
    case OKV_TYPE_BF16: return &bf16;
    case OKV_TYPE_Q4_0: return &q4_0;
    case OKV_TYPE_Q4_1: return &q4_1;
    case OKV_TYPE_Q8_0: return &q8_0;
    case OKV_TYPE_Q8_1: return &q8_1;
    case OKV_TYPE_Q5_0: return &q5_0;
    case OKV_TYPE_Q5_1: return &q5_1;
    case OKV_TYPE_IQ4_NL: return &iq4_nl;
    case OKV_TYPE_Q2_K: return &q2_k;
    case OKV_TYPE_Q3_K: return &q3_k;
    case OKV_TYPE_Q4_K: return &q4_k;
    case OKV_TYPE_Q5_K: return &q5_k;
    case OKV_TYPE_Q6_K: return &q6_k;
    case OKV_TYPE_Q8_K: return &q8_k;
    default: return NULL;
    }
}

int okv_type_block_elems(okv_type t) {
    const type_info *ti = type_get(t);
    return ti ? ti->block_elems : 0;
}

size_t okv_type_block_bytes(okv_type t) {
    const type_info *ti = type_get(t);
    return ti ? ti->block_bytes : 0;
}

size_t okv_type_row_bytes(okv_type t, int64_t n) {
    const type_info *ti = type_get(t);
    if (!ti) return 0;
    return (size_t)(n / ti->block_elems) * ti->block_bytes;
}

const char *okv_type_name(okv_type t) {
    const type_info *ti = type_get(t);
    return ti ? ti->name : NULL;
}

int okv_type_from_name(const char *name) {
    static const okv_type all[] = {OKV_TYPE_F32,  OKV_TYPE_F16,  OKV_TYPE_BF16,  OKV_TYPE_Q4_0,
                                   OKV_TYPE_Q4_1, OKV_TYPE_Q8_0, OKV_TYPE_Q8_1,  OKV_TYPE_Q5_0,
                                   OKV_TYPE_Q5_1, OKV_TYPE_Q2_K, OKV_TYPE_Q3_K,  OKV_TYPE_Q4_K,
                                   OKV_TYPE_Q5_K, OKV_TYPE_Q6_K, OKV_TYPE_Q8_K, OKV_TYPE_IQ4_NL};
    if (!name) return -1;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, type_get(all[i])->name)) return (int)all[i];
    return -1;
}

const int8_t okv_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};

int okv_type_is_weight(okv_type t) {
    const type_info *ti = type_get(t);
    return ti ? ti->is_weight : 0;
}

const char *okv_ggml_type_name(uint32_t t) {
    /* ggml's type numbers; 4, 5 and 31-33, 36-38 are layouts ggml has since removed. */
    static const char *const names[] = {
        "f32",     "f16",     "q4_0",    "q4_1",   "q4_2",     "q4_3",     "q5_0",     "q5_1",
        "q8_0",    "q8_1",    "q2_k",    "q3_k",   "q4_k",     "q5_k",     "q6_k",     "q8_k",
        "iq2_xxs", "iq2_xs",  "iq3_xxs", "iq1_s",  "iq4_nl",   "iq3_s",    "iq2_s",    "iq4_xs",
        "i8",      "i16",     "i32",     "i64",    "f64",      "iq1_m",    "bf16",     "q4_0_4_4",
        "q4_0_4_8", "q4_0_8_8", "tq1_0", "tq2_0",  "iq4_nl_4_4", "iq4_nl_4_8", "iq4_nl_8_8", "mxfp4",
    };
    return t < sizeof names / sizeof names[0] ? names[t] : NULL;
}

const char *okv_weight_type_list(char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (int t = 0; t < OKV_TYPE_COUNT; t++) {
        if (!okv_type_is_weight((okv_type)t)) continue;
        const int w = snprintf(buf + n, cap - n, "%s%s", n ? ", " : "", okv_type_name((okv_type)t));
        if (w < 0 || (size_t)w >= cap - n) break;
        n += (size_t)w;
    }
    return buf;
}
