/* test_kernels.c — every CPU op, on every vector path this CPU supports (kernels/cpu_isa.h),
 * against its kernels/ref.c reference over ragged shapes with stated tolerances; type helpers,
 * converters, quantizers and top-k against hand values; decode attention bitwise independent of
 * view splits. Prints each check and its worst error; non-zero on failure. */
#include "kernels/backend.h"
#include "kernels/cpu_isa.h"
#include "common.h"
#include "test_rand.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_fail, n_checks;
static char path_tag[16]; /* "[avx2] " while one vector path's ops are under test */

static void report(int ok, const char *what, const char *detail) {
    n_checks++;
    if (!ok) n_fail++;
    printf("%s  %s%-58s %s\n", ok ? "ok  " : "FAIL", path_tag, what, detail);
}

/* ---- data -------------------------------------------------------------------------------------- */

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    OKV_ASSERT(p);
    return p;
}

/* ---- comparisons -------------------------------------------------------------------------------- */

/* Elementwise |got - ref| <= atol + rtol*|ref|; returns the worst error as a fraction of the
 * tolerance and stores the worst absolute error. */
static double elem_err(const float *got, const float *ref, int64_t n, double atol, double rtol, double *worst_abs) {
    double worst = 0.0, wa = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - ref[i]);
        const double r = e / (atol + rtol * fabs(ref[i]));
        if (!(r <= worst)) worst = r; /* NaN counts as a failure */
        if (e > wa) wa = e;
    }
    *worst_abs = wa;
    return worst;
}

static int bits_equal(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

/* ---- types, converters, quantizers ---------------------------------------------------------------- */

static void test_types(void) {
    int ok = sizeof(okv_block_q4_0) == 18 && sizeof(okv_block_q4_1) == 20 && sizeof(okv_block_q8_0) == 34 &&
             sizeof(okv_block_q8_1) == 36;
    /* the GGUF block sizes of the other types, from the format's own table */
    ok &= okv_type_block_bytes(OKV_TYPE_Q5_0) == 22 && okv_type_block_bytes(OKV_TYPE_Q5_1) == 24 &&
          okv_type_block_bytes(OKV_TYPE_IQ4_NL) == 18 && okv_type_block_bytes(OKV_TYPE_Q2_K) == 84 &&
          okv_type_block_bytes(OKV_TYPE_Q3_K) == 110 && okv_type_block_bytes(OKV_TYPE_Q4_K) == 144 &&
          okv_type_block_bytes(OKV_TYPE_Q5_K) == 176 && okv_type_block_bytes(OKV_TYPE_Q6_K) == 210 &&
          okv_type_block_bytes(OKV_TYPE_Q8_K) == 292 && okv_type_block_elems(OKV_TYPE_Q4_K) == 256;
    ok &= okv_type_block_bytes(OKV_TYPE_Q4_0) == 18 && okv_type_block_bytes(OKV_TYPE_Q4_1) == 20 &&
          okv_type_block_bytes(OKV_TYPE_Q8_0) == 34 && okv_type_block_bytes(OKV_TYPE_Q8_1) == 36 &&
          okv_type_block_bytes(OKV_TYPE_F32) == 4 && okv_type_block_bytes(OKV_TYPE_F16) == 2 &&
          okv_type_block_bytes(OKV_TYPE_BF16) == 2 && okv_type_block_bytes((okv_type)4) == 0;
    ok &= okv_type_block_elems(OKV_TYPE_Q4_1) == 32 && okv_type_block_elems(OKV_TYPE_F16) == 1 &&
          okv_type_block_elems((okv_type)5) == 0;
    ok &= okv_type_row_bytes(OKV_TYPE_Q4_1, 576) == 360 && okv_type_row_bytes(OKV_TYPE_Q8_0, 576) == 612 &&
          okv_type_row_bytes(OKV_TYPE_F16, 7) == 14;
    const okv_type all[] = {OKV_TYPE_F32, OKV_TYPE_F16, OKV_TYPE_BF16, OKV_TYPE_Q4_0,
                            OKV_TYPE_Q4_1, OKV_TYPE_Q8_0, OKV_TYPE_Q8_1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        ok &= okv_type_from_name(okv_type_name(all[i])) == (int)all[i];
    ok &= okv_type_from_name("q4_1") == OKV_TYPE_Q4_1 && okv_type_from_name("iq4_xs") == -1 &&
          okv_type_from_name(NULL) == -1 && okv_type_name((okv_type)23) == NULL;
    ok &= okv_type_is_weight(OKV_TYPE_Q4_1) && !okv_type_is_weight(OKV_TYPE_Q8_1) &&
          okv_type_is_weight(OKV_TYPE_BF16) && !okv_type_is_weight((okv_type)5);
    ok &= okv_act_type_for(OKV_TYPE_Q4_1) == OKV_TYPE_Q8_1 && okv_act_type_for(OKV_TYPE_Q4_0) == OKV_TYPE_Q8_0 &&
          okv_act_type_for(OKV_TYPE_Q8_0) == OKV_TYPE_Q8_0 && okv_act_type_for(OKV_TYPE_F16) == OKV_TYPE_F16;
    /* ggml's vec_dot_type of each: q5_0 and iq4_nl take q8_0, q5_1 takes q8_1 */
    ok &= okv_type_is_weight(OKV_TYPE_Q5_0) && okv_type_is_weight(OKV_TYPE_Q5_1) &&
          okv_type_is_weight(OKV_TYPE_IQ4_NL) && !okv_type_is_weight(OKV_TYPE_Q8_K);
    ok &= okv_act_type_for(OKV_TYPE_Q5_0) == OKV_TYPE_Q8_0 && okv_act_type_for(OKV_TYPE_Q5_1) == OKV_TYPE_Q8_1 &&
          okv_act_type_for(OKV_TYPE_IQ4_NL) == OKV_TYPE_Q8_0;
    ok &= okv_type_from_name("iq4_nl") == OKV_TYPE_IQ4_NL && okv_type_from_name("q5_1") == OKV_TYPE_Q5_1;
    /* ggml's names, also of the types omnikv does not read */
    ok &= !strcmp(okv_ggml_type_name(16), "iq2_xxs") && !strcmp(okv_ggml_type_name(23), "iq4_xs") &&
          !strcmp(okv_ggml_type_name(30), "bf16") && !strcmp(okv_ggml_type_name(15), "q8_k") &&
          !strcmp(okv_ggml_type_name(39), "mxfp4") && okv_ggml_type_name(40) == NULL;
    char list[256];
    okv_weight_type_list(list, sizeof list);
    ok &= strstr(list, "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0") == list && strstr(list, "iq4_nl") &&
          strstr(list, "bf16") && !strstr(list, "q8_1") && !strstr(list, "q8_k");
    report(ok, "type sizes, names, weight flags, activation partners", list);
}

static float f_from_bits(uint32_t u) {
    union { uint32_t u; float f; } c = {.u = u};
    return c.f;
}
static uint32_t bits_of(float f) {
    union { float f; uint32_t u; } c = {.f = f};
    return c.u;
}

static void test_converters(void) {
    static const struct { float f; uint16_t h; } to_h[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000}, {0.1f, 0x2e66},
        {65504.0f, 0x7bff}, {65519.0f, 0x7bff}, {65520.0f, 0x7c00}, {1e10f, 0x7c00}, {-1e10f, 0xfc00},
        {INFINITY, 0x7c00}, {-INFINITY, 0xfc00},
        {0x1p-14f, 0x0400}, {0x1p-24f, 0x0001}, {0x1p-25f, 0x0000}, {0x1.8p-25f, 0x0001},
        {0x1.8p-24f, 0x0002}, {0x1.ffcp-15f, 0x0400}, {0x3ffp-24f, 0x03ff},
        {1.0f + 0x1p-11f, 0x3c00}, {1.0f + 0x3p-11f, 0x3c02}, {1.0f + 0x1p-10f, 0x3c01},
        {0x1p-26f, 0x0000}, {-0x1p-24f, 0x8001},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof to_h / sizeof to_h[0]; i++) {
        if (okv_f32_to_fp16(to_h[i].f) != to_h[i].h) {
            printf("      f32->f16(%a) = 0x%04x, want 0x%04x\n", to_h[i].f, okv_f32_to_fp16(to_h[i].f), to_h[i].h);
            bad++;
        }
    }
    const uint16_t hn = okv_f32_to_fp16(NAN);
    bad += (hn & 0x7c00) != 0x7c00 || (hn & 0x03ff) == 0;
    static const struct { uint16_t h; float f; } to_f[] = {
        {0x0001, 0x1p-24f}, {0x03ff, 0x3ffp-24f}, {0x0400, 0x1p-14f}, {0x7bff, 65504.0f},
        {0x3c00, 1.0f}, {0x3555, 0.333251953125f}, {0xc000, -2.0f}, {0x7c00, INFINITY}, {0xfc00, -INFINITY},
    };
    for (size_t i = 0; i < sizeof to_f / sizeof to_f[0]; i++) bad += okv_fp16_to_f32(to_f[i].h) != to_f[i].f;
    bad += bits_of(okv_fp16_to_f32(0x8000)) != 0x80000000u || !isnan(okv_fp16_to_f32(0x7e00));
    /* Every finite or infinite half survives f16 -> f32 -> f16. */
    int rt_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x03ff)) continue;
        rt_bad += okv_f32_to_fp16(okv_fp16_to_f32((uint16_t)h)) != h;
    }
    char det[128];
    snprintf(det, sizeof det, "%d hand values wrong, %d of 63488 halves fail the round trip", bad, rt_bad);
    report(bad == 0 && rt_bad == 0, "fp16 converters: edge cases and exhaustive round trip", det);

    static const struct { float f; uint16_t b; } to_b[] = {
        {1.0f, 0x3f80}, {-1.0f, 0xbf80}, {0.0f, 0x0000}, {1.0f + 0x1p-8f, 0x3f80}, {1.0f + 0x3p-8f, 0x3f82},
        {1.0f + 0x1p-7f, 0x3f81}, {INFINITY, 0x7f80}, {-INFINITY, 0xff80}, {0x1.fffffep127f, 0x7f80},
        {0x1p-133f, 0x0001}, {3.140625f, 0x4049},
    };
    bad = 0;
    for (size_t i = 0; i < sizeof to_b / sizeof to_b[0]; i++) bad += okv_f32_to_bf16(to_b[i].f) != to_b[i].b;
    const uint16_t bn = okv_f32_to_bf16(f_from_bits(0x7f800001u)); /* signalling NaN stays a NaN */
    bad += (bn & 0x7f80) != 0x7f80 || (bn & 0x7f) == 0;
    bad += okv_bf16_to_f32(0x3f81) != 1.0078125f || okv_bf16_to_f32(0xc049) != -3.140625f;
    snprintf(det, sizeof det, "%d hand values wrong", bad);
    report(bad == 0, "bf16 converters: ties to even, overflow, NaN, subnormal", det);
}

/* IQ4_NL's step: the distance from x to the nearest table entry under block b's stored scale
 * (codes are chosen with the unrounded scale, so the f16 rounding of d is allowed on top). */
static double iq4nl_step(const uint8_t *row, int b, float x) {
    const float d = okv_fp16_to_f32(((const okv_block_iq4_nl *)row)[b].d);
    double best = INFINITY;
    for (int k = 0; k < 16; k++) best = fmin(best, fabs((double)d * okv_iq4nl_values[k] - x));
    return best + fabs(d) * 127.0 * 0x1p-11 + 1e-30;
}

/* Quantize/dequantize round trips within the step of each format, plus one hand-made block. */
static void test_quant_ref(void) {
    const int n = 32 * 37;
    float *x = xmalloc(n * sizeof(float)), *y = xmalloc(n * sizeof(float));
    uint8_t *q = xmalloc(okv_type_row_bytes(OKV_TYPE_F32, n));
    fill(x, n, 1.0f);
    for (int j = 0; j < 32; j++) x[j] = 0.0f; /* an all-zero block */
    const okv_type ts[] = {OKV_TYPE_Q8_0, OKV_TYPE_Q8_1, OKV_TYPE_Q4_0, OKV_TYPE_Q4_1, OKV_TYPE_Q5_0,
                           OKV_TYPE_Q5_1, OKV_TYPE_IQ4_NL, OKV_TYPE_F16, OKV_TYPE_BF16};
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        okv_type t = ts[k];
        okv_quant_row_ref(q, x, t, n);
        okv_dequant_row_ref(y, q, t, n);
        double worst = 0.0;
        int s_bad = 0;
        for (int b = 0; b < n / 32; b++) {
            const float *xb = x + b * 32;
            float amax = 0, mn = xb[0], mx = xb[0];
            for (int j = 0; j < 32; j++) {
                amax = fmaxf(amax, fabsf(xb[j]));
                mn = fminf(mn, xb[j]);
                mx = fmaxf(mx, xb[j]);
            }
            for (int j = 0; j < 32; j++) {
                /* The largest rounding each format allows, slightly widened for its f16 scales. */
                double tol;
                if (t == OKV_TYPE_Q8_0 || t == OKV_TYPE_Q8_1) tol = 0.57 * amax / 127.0;
                else if (t == OKV_TYPE_Q4_0) tol = 1.01 * amax / 8.0;
                else if (t == OKV_TYPE_Q4_1) tol = 0.51 * (mx - mn) / 15.0 + 0.001 * (fabsf(mn) + fabsf(mx));
                else if (t == OKV_TYPE_Q5_0) tol = 1.01 * amax / 16.0; /* -max clamps to code 31 */
                else if (t == OKV_TYPE_Q5_1) tol = 0.51 * (mx - mn) / 31.0 + 0.001 * (fabsf(mn) + fabsf(mx));
                else if (t == OKV_TYPE_IQ4_NL) tol = iq4nl_step(q, b, xb[j]);
                else if (t == OKV_TYPE_F16) tol = fabsf(xb[j]) * 0x1p-11 + 0x1p-25;
                else tol = fabsf(xb[j]) * 0x1p-8;
                const double e = fabs((double)y[b * 32 + j] - xb[j]);
                if (e > 0 && e / tol > worst) worst = tol > 0 ? e / tol : INFINITY;
            }
            if (t == OKV_TYPE_Q8_1) {
                const okv_block_q8_1 *blk = (const okv_block_q8_1 *)q + b;
                int sum = 0;
                for (int j = 0; j < 32; j++) sum += blk->qs[j];
                const float want = okv_fp16_to_f32(okv_f32_to_fp16((float)sum * (amax / 127.0f)));
                s_bad += okv_fp16_to_f32(blk->s) != want;
            }
        }
        char what[96], det[96];
        snprintf(what, sizeof what, "quant/dequant ref %s, %d blocks, error vs format step", okv_type_name(t), n / 32);
        snprintf(det, sizeof det, "worst %.3f of step%s", worst, s_bad ? ", bad s" : "");
        report(worst <= 1.0 && s_bad == 0, what, det);
    }
    /* Hand block: x_j = j - 16 gives amax 16, multiplier 127/16 = 7.9375 exactly, so
     * q_j = rint(7.9375*(j-16)) and d = f16(16/127). Half-way cases (j-16 = +-8: 63.5) go to even. */
    float hb[32];
    for (int j = 0; j < 32; j++) hb[j] = (float)(j - 16);
    okv_block_q8_1 blk;
    okv_quant_row_ref(&blk, hb, OKV_TYPE_Q8_1, 32);
    int bad = blk.d != okv_f32_to_fp16(16.0f / 127.0f);
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        bad += blk.qs[j] != (int8_t)rint(7.9375 * (j - 16));
        sum += blk.qs[j];
    }
    bad += blk.qs[8] != -64 || blk.qs[24] != 64; /* -63.5 -> -64, 63.5 -> 64 */
    bad += blk.s != okv_f32_to_fp16((float)sum * (16.0f / 127.0f));
    report(bad == 0, "q8_1 hand block: scale, half-to-even rounding, s", bad ? "mismatch" : "exact");
    free(x);
    free(y);
    free(q);
}

/* Root-mean-square dequantization error of type t over n values of x. */
static double rms_error(const float *x, int n, okv_type t) {
    uint8_t *q = xmalloc((size_t)n * 4);
    float *y = xmalloc((size_t)n * sizeof(float));
    okv_quant_row_ref(q, x, t, n);
    okv_dequant_row_ref(y, q, t, n);
    double e = 0;
    for (int i = 0; i < n; i++) e += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
    free(q);
    free(y);
    return sqrt(e / n);
}

/* Hand-made blocks of the 5-bit types and IQ4_NL: bytes written from the layout in types.h, the
 * dequantized values and the dot with an all-ones Q8 block worked out by hand, and the
 * quantizer reproducing the bytes from the values (each is on its format's grid). */
static void test_quant_hand_blocks(void) {
    int bad = 0;
    float x[32], y[32];
    /* Q5_0: codes j, d = 0.5 -> x_j = (j - 16) / 2. Code j's nibble is j & 15 (qs[j] for j < 16,
     * the high nibble of qs[j-16] after), its bit 4 is bit j of qh: set for j >= 16. */
    okv_block_q5_0 h0 = {.d = 0x3800, .qh = {0, 0, 0xff, 0xff}}, q0;
    for (int j = 0; j < 16; j++) h0.qs[j] = (uint8_t)(j | j << 4);
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.5f;
    okv_dequant_row_ref(y, &h0, OKV_TYPE_Q5_0, 32);
    bad += memcmp(x, y, sizeof x) != 0;
    okv_quant_row_ref(&q0, x, OKV_TYPE_Q5_0, 32); /* d = max/-16 = -8/-16 */
    bad += memcmp(&q0, &h0, sizeof h0) != 0;
    okv_block_q8_0 ones0 = {.d = 0x3c00};
    for (int j = 0; j < 32; j++) ones0.qs[j] = 1;
    bad += okv_vec_dot_ref(&h0, OKV_TYPE_Q5_0, &ones0, 32) != -8.0f; /* 0.5 * sum(j - 16) */
    /* Q5_1: codes j, d = 0.25, m = -1 -> x_j = j/4 - 1; min -1, max 6.75, (max-min)/31 = 0.25. */
    okv_block_q5_1 h1 = {.d = 0x3400, .m = 0xbc00, .qh = {0, 0, 0xff, 0xff}}, q1;
    for (int j = 0; j < 16; j++) h1.qs[j] = (uint8_t)(j | j << 4);
    for (int j = 0; j < 32; j++) x[j] = (float)j * 0.25f - 1.0f;
    okv_dequant_row_ref(y, &h1, OKV_TYPE_Q5_1, 32);
    bad += memcmp(x, y, sizeof x) != 0;
    okv_quant_row_ref(&q1, x, OKV_TYPE_Q5_1, 32);
    bad += memcmp(&q1, &h1, sizeof h1) != 0;
    okv_block_q8_1 ones1 = {.d = 0x3c00, .s = 0x5000}; /* s = 32 */
    for (int j = 0; j < 32; j++) ones1.qs[j] = 1;
    bad += okv_vec_dot_ref(&h1, OKV_TYPE_Q5_1, &ones1, 32) != 92.0f; /* 0.25 * 496 - 32 */
    /* IQ4_NL: codes j & 15, d = 0.5 -> x_j = table[j & 15] / 2; the table sums to -94, so the dot
     * with ones is 0.5 * 2 * -94. The search's multiplier -127/max = 2 fits these exactly. */
    okv_block_iq4_nl hn = {.d = 0x3800}, qn;
    for (int j = 0; j < 16; j++) hn.qs[j] = (uint8_t)(j | j << 4);
    for (int j = 0; j < 32; j++) x[j] = (float)okv_iq4nl_values[j & 15] * 0.5f;
    okv_dequant_row_ref(y, &hn, OKV_TYPE_IQ4_NL, 32);
    bad += memcmp(x, y, sizeof x) != 0;
    okv_quant_row_ref(&qn, x, OKV_TYPE_IQ4_NL, 32);
    bad += memcmp(&qn, &hn, sizeof hn) != 0;
    bad += okv_vec_dot_ref(&hn, OKV_TYPE_IQ4_NL, &ones0, 32) != -94.0f;
    /* A zero block: scale 0, every code the entry nearest 0 (index 8), as ggml writes it. */
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    okv_quant_row_ref(&qn, x, OKV_TYPE_IQ4_NL, 32);
    bad += qn.d != 0 || qn.qs[0] != 0x88 || qn.qs[15] != 0x88;
    char det[64];
    snprintf(det, sizeof det, "%d mismatches", bad);
    report(bad == 0, "q5_0, q5_1, iq4_nl hand blocks: dequant, quant, dot with ones", det);

    /* IQ4_NL's scale search earns its keep: on smooth random data its error is below Q4_0's. */
    const int n = 32 * 512;
    float *r = xmalloc(n * sizeof(float));
    fill(r, n, 1.0f);
    const double e_nl = rms_error(r, n, OKV_TYPE_IQ4_NL), e_40 = rms_error(r, n, OKV_TYPE_Q4_0);
    const double e_50 = rms_error(r, n, OKV_TYPE_Q5_0), e_51 = rms_error(r, n, OKV_TYPE_Q5_1);
    snprintf(det, sizeof det, "rms iq4_nl %.4f q4_0 %.4f q5_0 %.4f q5_1 %.4f", e_nl, e_40, e_50, e_51);
    report(e_nl < e_40 && e_50 < 0.6 * e_40 && e_51 < e_50, "rms error: iq4_nl < q4_0, q5_1 < q5_0 < 0.6 q4_0", det);
    free(r);
}

/* The offset m of block b of a Q4_1 or Q5_1 row (both keep it right after d). */
static float block_m(okv_type wt, const uint8_t *row, int b) {
    const uint8_t *blk = row + (size_t)b * okv_type_block_bytes(wt);
    uint16_t m;
    memcpy(&m, blk + 2, 2);
    return okv_fp16_to_f32(m);
}

/* The Q4_1/Q5_1 offset term m * s takes s rounded to f16: what that rounding may move. */
static double q8_1_sum_rounding(okv_type wt, okv_type at, const uint8_t *wq, const uint8_t *xq, int n) {
    double r = 0;
    if (at == OKV_TYPE_Q8_1)
        for (int b = 0; b < n / 32; b++)
            r += fabs(block_m(wt, wq, b) * okv_fp16_to_f32(((const okv_block_q8_1 *)xq)[b].s)) * 0x1p-10;
    return r;
}

/* The bound on |dot(wq, xq) - dot(wd, x)| that the activation's rounding allows: per block,
 * sum|w| times half its step (q8_0/q8_1: amax/127, with 14% for d's own f16 rounding; q8_k: d,
 * kept in f32), plus, for q8_1, m times the f16 rounding of the block sum s; f16/bf16: each
 * product's relative rounding. */
static double act_rounding_bound(okv_type wt, okv_type at, const uint8_t *wq, const uint8_t *xq,
                                 const float *wd, const float *x, int n) {
    double bound = 0;
    if (at == OKV_TYPE_Q8_K) {
        for (int b = 0; b < n / 256; b++) {
            double wsum = 0;
            for (int e = 0; e < 256; e++) wsum += fabs(wd[256 * b + e]);
            bound += wsum * 0.5 * fabs(((const okv_block_q8_k *)xq)[b].d) * 1.0001;
        }
    } else if (at == OKV_TYPE_Q8_0 || at == OKV_TYPE_Q8_1) {
        for (int b = 0; b < n / 32; b++) {
            float amax = 0;
            double wsum = 0;
            for (int j = 0; j < 32; j++) {
                amax = fmaxf(amax, fabsf(x[b * 32 + j]));
                wsum += fabs(wd[b * 32 + j]);
            }
            bound += wsum * 0.57 * amax / 127.0;
        }
    } else if (at == OKV_TYPE_F16 || at == OKV_TYPE_BF16) {
        for (int i = 0; i < n; i++) bound += fabs(wd[i] * x[i]) * (at == OKV_TYPE_F16 ? 0x1p-11 : 0x1p-8);
    }
    return bound + q8_1_sum_rounding(wt, at, wq, xq, n);
}

/* Every weight type's dot against its activation type (llama.cpp's pairing, q8_k for the
 * K-quants) compared with (a) the same math in f32 on the dequantized operands (only float
 * rounding may differ: 1e-6 of sum|w*x|, plus the f16 rounding of q8_1's s) and (b) the dot with
 * the unquantized activations, within act_rounding_bound plus the same 1e-6. */
static void test_vec_dot_ref(void) {
    const okv_type ws[] = {OKV_TYPE_Q4_0, OKV_TYPE_Q4_1, OKV_TYPE_Q8_0, OKV_TYPE_Q5_0, OKV_TYPE_Q5_1,
                           OKV_TYPE_IQ4_NL, OKV_TYPE_F16, OKV_TYPE_BF16, OKV_TYPE_F32, OKV_TYPE_Q2_K,
                           OKV_TYPE_Q3_K, OKV_TYPE_Q4_K, OKV_TYPE_Q5_K, OKV_TYPE_Q6_K};
    for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++) {
        const okv_type wt = ws[k], at = okv_act_type_for(wt);
        const int blk = at == OKV_TYPE_Q8_K ? 256 : 32;
        double worst_a = 0, worst_b = 0;
        for (int trial = 0; trial < 40; trial++) {
            const int n = blk * (1 + (int)(rng_u32() % (blk == 256 ? 16 : 48)));
            float *w = xmalloc(n * sizeof(float)), *x = xmalloc(n * sizeof(float));
            float *wd = xmalloc(n * sizeof(float)), *xd = xmalloc(n * sizeof(float));
            uint8_t *wq = xmalloc((size_t)n * 4), *xq = xmalloc((size_t)n * 4);
            fill(w, n, 0.5f);
            fill(x, n, 2.0f);
            okv_quant_row_ref(wq, w, wt, n);
            okv_quant_row_ref(xq, x, at, n);
            okv_dequant_row_ref(wd, wq, wt, n);
            okv_dequant_row_ref(xd, xq, at, n);
            const double got = okv_vec_dot_ref(wq, wt, xq, n);
            double dq = 0, mag = 1e-30, exact = 0;
            for (int i = 0; i < n; i++) {
                dq += (double)wd[i] * xd[i];
                mag += fabs((double)wd[i] * xd[i]);
                exact += (double)wd[i] * x[i];
            }
            const double tol_a = 1e-6 * mag + q8_1_sum_rounding(wt, at, wq, xq, n);
            const double tol_b = 1e-6 * mag + act_rounding_bound(wt, at, wq, xq, wd, x, n);
            worst_a = fmax(worst_a, fabs(got - dq) / tol_a);
            worst_b = fmax(worst_b, fabs(got - exact) / tol_b);
            free(w); free(x); free(wd); free(xd); free(wq); free(xq);
        }
        char what[96], det[96];
        snprintf(what, sizeof what, "vec_dot_ref %s x %s vs dequantized f32 / vs unquantized x", okv_type_name(wt),
                 okv_type_name(at));
        snprintf(det, sizeof det, "worst %.3f / %.3f of tolerance", worst_a, worst_b);
        report(worst_a <= 1.0 && worst_b <= 1.0, what, det);
    }
}

/* ---- matmul -------------------------------------------------------------------------------------- */

static okv_backend cpu1, cpu2, cpu3;

/* How far a dot with activations rounded to the weight's partner type may be from the dot with
 * the exact activations: per block, sum|w| times the largest rounding (0.57 of the Q8 step
 * d = amax/127: half a step plus the f16 rounding of d; q8_k keeps d in f32: half a step), for Q4_1/Q5_1 also m times the f16
 * rounding of s, and for f16/bf16 partners |w| times half an ulp of x (f16 subnormals included);
 * plus 2e-6 of sum|w*x|. */
static double act_bound(okv_type wt, const uint8_t *wrow, const float *wd, const float *x, int n,
                        double mag) {
    double bound = 2e-6 * mag;
    const okv_type at = okv_act_type_for(wt);
    if (at == OKV_TYPE_Q8_0 || at == OKV_TYPE_Q8_1 || at == OKV_TYPE_Q8_K) {
        const int blk = at == OKV_TYPE_Q8_K ? 256 : 32;
        for (int b = 0; b < n / blk; b++) {
            float amax = 0;
            double wsum = 0;
            for (int j = 0; j < blk; j++) {
                amax = fmaxf(amax, fabsf(x[b * blk + j]));
                wsum += fabs(wd[b * blk + j]);
            }
            bound += wsum * (at == OKV_TYPE_Q8_K ? 0.5001 : 0.57) * amax / 127.0;
            if (at == OKV_TYPE_Q8_1)
                bound += fabs(block_m(wt, wrow, b)) * 32.0 * amax * 0x1p-10;
        }
    } else if (at != OKV_TYPE_F32) {
        for (int i = 0; i < n; i++)
            bound += at == OKV_TYPE_F16 ? fabs(wd[i]) * (fabs(x[i]) * 0x1p-11 + 0x1p-25) : fabs(wd[i] * x[i]) * 0x1p-8;
    }
    return bound;
}

typedef struct mm_stats {
    double worst, worst_abs, worst_q; /* vs ref / sum|w*x|, vs ref absolute, vs exact / act_bound */
    int cases, thread_diff;
} mm_stats;

/* One shape: the 2-thread matmul against okv_matmul_ref, normalised per output by sum_i |w_i x_i|,
 * and against the f32 dot of the dequantized weights with the unquantized x, within act_bound;
 * every fourth case also bitwise against 3 threads (rows never depend on the split). */
static void matmul_case(okv_type wt, int n_in, int n_out, int n_tok, mm_stats *st) {
    const size_t wrow = okv_type_row_bytes(wt, n_in);
    float *wf = xmalloc((size_t)n_out * n_in * sizeof(float));
    uint8_t *w = xmalloc((size_t)n_out * wrow);
    float *x = xmalloc((size_t)n_tok * n_in * sizeof(float));
    float *yr = xmalloc((size_t)n_tok * n_out * sizeof(float));
    float *y1 = xmalloc((size_t)n_tok * n_out * sizeof(float));
    float *y2 = xmalloc((size_t)n_tok * n_out * sizeof(float));
    float *wd = xmalloc((size_t)n_in * sizeof(float));
    fill(wf, (int64_t)n_out * n_in, 0.5f);
    fill(x, (int64_t)n_tok * n_in, 2.0f);
    for (int o = 0; o < n_out; o++) okv_quant_row_ref(w + o * wrow, wf + (size_t)o * n_in, wt, n_in);
    okv_matmul_ref(yr, w, wt, x, n_tok, n_in, n_out);
    cpu2.matmul(&cpu2, y1, w, wt, x, n_tok, n_in, n_out);
    if (st->cases % 4 == 0) {
        cpu3.matmul(&cpu3, y2, w, wt, x, n_tok, n_in, n_out);
        st->thread_diff += !bits_equal(y1, y2, (size_t)n_tok * n_out * sizeof(float));
    }
    for (int o = 0; o < n_out; o++) {
        okv_dequant_row_ref(wd, w + o * wrow, wt, n_in);
        for (int t = 0; t < n_tok; t++) {
            const float *xt = x + (size_t)t * n_in;
            double mag = 1e-30, exact = 0;
            for (int i = 0; i < n_in; i++) {
                mag += fabs((double)wd[i] * xt[i]);
                exact += (double)wd[i] * xt[i];
            }
            const float got = y1[(size_t)t * n_out + o];
            const double e = fabs((double)got - yr[(size_t)t * n_out + o]);
            st->worst = isnan(got) ? INFINITY : fmax(st->worst, e / mag);
            st->worst_abs = fmax(st->worst_abs, e);
            st->worst_q = fmax(st->worst_q, fabs(got - exact) / act_bound(wt, w + o * wrow, wd, xt, n_in, mag));
        }
    }
    st->cases++;
    free(wf); free(w); free(x); free(yr); free(y1); free(y2); free(wd);
}

/* Against the reference: within 2e-6 of sum|w*x| (the integer sums are exact; only the f32
 * summation order differs) and the same bits with 2 and 3 threads; against the exact activations:
 * within act_bound. */
static void matmul_report(okv_type wt, const mm_stats *st, const char *shapes) {
    const double tol = 2e-6;
    char what[128], det[128];
    snprintf(what, sizeof what, "matmul %s: cpu vs ref, %d shapes (%s)", okv_type_name(wt), st->cases, shapes);
    snprintf(det, sizeof det, "worst %.2e of sum|w*x| (tol %.0e), abs %.2e; threads 2 vs 3 differ in %d",
             st->worst, tol, st->worst_abs, st->thread_diff);
    report(st->worst <= tol && st->thread_diff == 0, what, det);
    snprintf(what, sizeof what, "matmul %s: cpu vs dequantized-W f32 dot with unquantized x", okv_type_name(wt));
    snprintf(det, sizeof det, "worst %.3f of the activation-rounding bound", st->worst_q);
    report(st->worst_q <= 1.0, what, det);
}

static void test_matmul(void) {
    const okv_type ws[] = {OKV_TYPE_Q4_1, OKV_TYPE_Q4_0, OKV_TYPE_Q8_0, OKV_TYPE_Q5_0, OKV_TYPE_Q5_1,
                           OKV_TYPE_IQ4_NL, OKV_TYPE_F16, OKV_TYPE_BF16, OKV_TYPE_F32};
    const int toks[] = {1, 2, 3, 4, 5, 8, 17, 37};
    const int ins_q[] = {32, 96, 576, 1536};
    const int ins_f[] = {1, 17, 33, 100, 576};
    const int outs[] = {1, 7, 16, 33, 100};
    for (size_t k = 0; k < sizeof ws / sizeof ws[0]; k++) {
        const okv_type wt = ws[k];
        const int quant = okv_type_block_elems(wt) > 1;
        const int *ins = quant ? ins_q : ins_f;
        const int n_ins = quant ? 4 : 5;
        mm_stats st = {0};
        for (int a = 0; a < n_ins; a++)
            for (size_t b = 0; b < sizeof outs / sizeof outs[0]; b++)
                for (size_t c = 0; c < sizeof toks / sizeof toks[0]; c++)
                    if (!(ins[a] >= 1536 && toks[c] > 5)) matmul_case(wt, ins[a], outs[b], toks[c], &st);
        matmul_report(wt, &st, "tok 1..37, out 1..100");
    }
}

/* ---- K-quants ------------------------------------------------------------------------------------ */

static const okv_type kq_types[] = {OKV_TYPE_Q2_K, OKV_TYPE_Q3_K, OKV_TYPE_Q4_K, OKV_TYPE_Q5_K, OKV_TYPE_Q6_K};
#define N_KQ ((int)(sizeof kq_types / sizeof kq_types[0]))

/* One hand-built super-block per type, set field by field from the layouts in
 * kernels/ref_kquant.c, and elements whose values were worked out by hand (the high bits of
 * the 6-bit scales, the high bits of q and the mins included). */
static void test_kquant_hand_blocks(void) {
    float y[256];
    int bad = 0;
    okv_block_q2_k q2;
    memset(&q2, 0, sizeof q2);
    q2.d = 0x3c00;     /* 1.0 */
    q2.dmin = 0x3800;  /* 0.5 */
    q2.scales[0] = 0x23; /* s 3, m 2 */
    q2.scales[13] = 0xf5; /* s 5, m 15 */
    q2.qs[50] = 0x30;  /* element 128 + 32*2 + 18 = 210: q 3 */
    okv_dequant_row_ref(y, &q2, OKV_TYPE_Q2_K, 256);
    bad += y[0] != -1.0f || y[210] != 7.5f || y[208] != -7.5f || y[64] != 0.0f;

    okv_block_q3_k q3;
    memset(&q3, 0, sizeof q3);
    q3.d = 0x3800;              /* 0.5 */
    q3.scales[0] = 8;           /* value 0: low bits 8 ... */
    q3.scales[8] = 2;           /* ... high bits 2: 40 - 32 = 8 */
    q3.scales[1] = 5 << 4;      /* value 9: 5 - 32 = -27 */
    q3.qs[0] = 1;               /* element 0: low bits 1 */
    q3.hmask[0] = 1;            /* and bit 2 set: q 5 */
    q3.qs[54] = 3;              /* element 150 = 128 + 22: low bits 3 */
    q3.hmask[22] = 0x10;        /* bit 2 from hmask bit 150/32 = 4: q 7 */
    okv_dequant_row_ref(y, &q3, OKV_TYPE_Q3_K, 256);
    /* element 1: q 0 -> -4 at scale 8; element 40: every unset scale is 0 - 32 */
    bad += y[0] != 4.0f || y[1] != -16.0f || y[150] != -40.5f || y[40] != 64.0f;

    okv_block_q4_k q4;
    memset(&q4, 0, sizeof q4);
    q4.d = 0x3c00;
    q4.dmin = 0x3800;
    q4.scales[0] = 1;             /* s0 = 1 */
    q4.scales[4] = 2;             /* m0 = 2 */
    q4.scales[9] = 5 | (2 << 4);  /* s5 low bits 5, m5 low bits 2 */
    q4.scales[1] |= 2 << 6;       /* s5 high bits 2: 37 */
    q4.scales[5] |= 3 << 6;       /* m5 high bits 3: 50 */
    q4.qs[0] = 0x0f;              /* element 0: 15 */
    q4.qs[67] = 0x70;             /* element 128 + 32 + 3 = 163 (sub-block 5): 7 */
    okv_dequant_row_ref(y, &q4, OKV_TYPE_Q4_K, 256);
    bad += y[0] != 14.0f || y[163] != 234.0f || y[131] != 0.0f || y[32] != 0.0f;

    okv_block_q5_k q5;
    memset(&q5, 0, sizeof q5);
    q5.d = q4.d;
    q5.dmin = q4.dmin;
    memcpy(q5.scales, q4.scales, 12);
    q5.qs[0] = 0x0f;
    q5.qs[67] = 0x70;
    q5.qh[3] = 1 << 5; /* bit 4 of element 163 (= 32*5 + 3): q 23 */
    okv_dequant_row_ref(y, &q5, OKV_TYPE_Q5_K, 256);
    bad += y[0] != 14.0f || y[163] != 826.0f || y[3] != -1.0f;

    okv_block_q6_k q6;
    memset(&q6, 0, sizeof q6);
    q6.d = 0x3400; /* 0.25 */
    q6.scales[0] = 2;
    q6.scales[6] = 4;
    q6.scales[11] = -3;
    q6.ql[0] = 0x0f;  /* element 0: low 15 */
    q6.qh[0] = 2;     /* high 2: q 47 -> 15 */
    q6.ql[116] = 0x05; /* element 128 + 52 = 180: low 5 */
    q6.qh[52] = 0x0c;  /* qh[32 + 20] bits 2-3: high 3: q 53 -> 21 */
    q6.ql[36] = 0xa0;  /* element 100: ql[36] high nibble 10 */
    q6.qh[4] = 0x40;   /* qh[4] bits 6-7: high 1: q 26 -> -6 */
    okv_dequant_row_ref(y, &q6, OKV_TYPE_Q6_K, 256);
    bad += y[0] != 7.5f || y[180] != -15.75f || y[100] != -6.0f || y[240] != 0.0f;

    /* Q8_K: the first element of largest magnitude sets the scale (-127 here, so iscale = 1 and
     * q = x rounded half to even), later ones of equal magnitude keep their sign. */
    float x[256];
    x[0] = -127.0f;
    x[1] = 127.0f;
    for (int e = 2; e < 256; e++) x[e] = (float)(e % 64) - 31.5f;
    okv_block_q8_k q8;
    okv_quant_row_ref(&q8, x, OKV_TYPE_Q8_K, 256);
    bad += q8.d != 1.0f || q8.qs[0] != -127 || q8.qs[1] != 127;
    for (int e = 2; e < 256; e++) bad += q8.qs[e] != (int8_t)rint(x[e]);
    bad += q8.qs[31] != 0 || q8.qs[30] != -2 || q8.qs[34] != 2; /* -0.5, -1.5, 2.5 */
    for (int j = 0; j < 16; j++) {
        int s = 0;
        for (int l = 0; l < 16; l++) s += q8.qs[16 * j + l];
        bad += q8.bsums[j] != s;
    }
    /* a positive maximum gives a negative d: x0 = 3 -> q -127, d = 1/(-127/3) */
    memset(x, 0, sizeof x);
    x[0] = 3.0f;
    x[1] = -1.0f;
    okv_quant_row_ref(&q8, x, OKV_TYPE_Q8_K, 256);
    bad += q8.qs[0] != -127 || q8.qs[1] != 42 || q8.d != 1.0f / (-127.0f / 3.0f) || q8.bsums[0] != -85;
    char det[64];
    snprintf(det, sizeof det, "%d values wrong", bad);
    report(bad == 0, "K-quant hand blocks (q2_k..q6_k dequant, q8_k quant)", det);
}

/* Round trips: the RMS error of each type relative to the RMS of the data (uniform values with
 * rare 8x outliers, 64 super-blocks), within a bound 1.1-1.3x what llama.cpp's reference
 * quantizers reach on such data; an all-zero super-block stays exactly zero. */
static void test_kquant_round_trip(void) {
    const double bound[N_KQ] = {0.40, 0.30, 0.11, 0.055, 0.028};
    const int n = 256 * 64;
    float *x = xmalloc(n * sizeof(float)), *y = xmalloc(n * sizeof(float));
    uint8_t *q = xmalloc((size_t)n * 2);
    fill(x, n, 1.0f);
    for (int e = 0; e < 256; e++) x[256 + e] = 0.0f;
    for (int k = 0; k < N_KQ; k++) {
        const okv_type t = kq_types[k];
        okv_quant_row_ref(q, x, t, n);
        okv_dequant_row_ref(y, q, t, n);
        double se = 0, sx = 0;
        int zero_bad = 0;
        for (int i = 0; i < n; i++) {
            se += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
            sx += (double)x[i] * x[i];
        }
        for (int e = 0; e < 256; e++) zero_bad += y[256 + e] != 0.0f;
        const double rel = sqrt(se / sx);
        char what[96], det[96];
        snprintf(what, sizeof what, "quant/dequant ref %s, 64 super-blocks, RMS error / RMS x", okv_type_name(t));
        snprintf(det, sizeof det, "%.4f (bound %.3f)%s", rel, bound[k], zero_bad ? ", zero block not zero" : "");
        report(rel <= bound[k] && zero_bad == 0, what, det);
    }
    free(x);
    free(y);
    free(q);
}

/* Each path's K-quant matmul over rows of 256..4096, ragged row counts and 1..14 tokens, by
 * matmul_case's rules. */
static void test_matmul_kquant(void) {
    const int ins[] = {256, 512, 768, 1536, 4096};
    const int outs[] = {1, 7, 16, 33, 100};
    const int toks[] = {1, 2, 3, 4, 5, 7, 9, 14}; /* token tiles of 8: every remainder 1..7 */
    for (int k = 0; k < N_KQ; k++) {
        mm_stats st = {0};
        for (int a = 0; a < 5; a++)
            for (int b = 0; b < 5; b++)
                for (int c = 0; c < 8; c++)
                    if (!(ins[a] >= 1536 && (toks[c] > 5 || outs[b] > 33)))
                        matmul_case(kq_types[k], ins[a], outs[b], toks[c], &st);
        matmul_report(kq_types[k], &st, "in 256..4096, tok 1..14");
    }
}

/* ---- elementwise ----------------------------------------------------------------------------------- */

static void test_elementwise(void) {
    const int toks[] = {1, 2, 5, 37};
    const int dims[] = {1, 15, 16, 64, 576, 1000};
    double worst = 0, wa = 0, e_abs;
    for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 6; b++) {
            const int n_tok = toks[a], dim = dims[b];
            float *x = xmalloc((size_t)n_tok * dim * 4), *w = xmalloc((size_t)dim * 4);
            float *yr = xmalloc((size_t)n_tok * dim * 4), *yc = xmalloc((size_t)n_tok * dim * 4);
            fill(x, (int64_t)n_tok * dim, 3.0f);
            fill(w, dim, 1.0f);
            okv_rmsnorm_ref(yr, x, w, n_tok, dim, 1e-5f);
            memcpy(yc, x, (size_t)n_tok * dim * 4);
            cpu2.rmsnorm(&cpu2, yc, yc, w, n_tok, dim, 1e-5f); /* in place, as allowed */
            worst = fmax(worst, elem_err(yc, yr, (int64_t)n_tok * dim, 1e-7, 1e-6, &e_abs));
            wa = fmax(wa, e_abs);
            free(x); free(w); free(yr); free(yc);
        }
    char det[128];
    snprintf(det, sizeof det, "worst %.3f of tol (atol 1e-7 + rtol 1e-6), abs %.2e", worst, wa);
    report(worst <= 1.0, "rmsnorm: cpu vs ref, tok 1..37, dim 1..1000, in place", det);

    worst = wa = 0;
    const int hds[] = {64, 128, 6};
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 3; b++) {
            const int n_tok = toks[a], hd = hds[b], nh = 3 + a, nf = b == 2 ? 2 : hd / 2 - (a == 1 ? 4 : 0);
            float *x = xmalloc((size_t)n_tok * nh * hd * 4), *xc = xmalloc((size_t)n_tok * nh * hd * 4);
            float *inv = xmalloc((size_t)nf * 4);
            int32_t *pos = xmalloc((size_t)n_tok * 4);
            fill(x, (int64_t)n_tok * nh * hd, 2.0f);
            memcpy(xc, x, (size_t)n_tok * nh * hd * 4);
            for (int i = 0; i < nf; i++) inv[i] = powf(10000.0f, -2.0f * i / hd);
            for (int t = 0; t < n_tok; t++) pos[t] = (int32_t)(rng_u32() % 40000);
            okv_rope_ref(x, pos, n_tok, nh, hd, inv, nf);
            cpu2.rope(&cpu2, xc, pos, n_tok, nh, hd, inv, nf);
            worst = fmax(worst, elem_err(xc, x, (int64_t)n_tok * nh * hd, 1e-6, 1e-6, &e_abs));
            wa = fmax(wa, e_abs);
            free(x); free(xc); free(inv); free(pos);
        }
    snprintf(det, sizeof det, "worst %.3f of tol (atol 1e-6 + rtol 1e-6), abs %.2e", worst, wa);
    report(worst <= 1.0, "rope: cpu vs ref, head_dim 6/64/128, partial rotation", det);

    worst = wa = 0;
    double w_add = 0;
    const int64_t ns[] = {1, 15, 16, 17, 1536, 20000, 100003};
    for (int a = 0; a < 7; a++) {
        const int64_t n = ns[a];
        float *g = xmalloc(n * 4), *u = xmalloc(n * 4), *r = xmalloc(n * 4), *c = xmalloc(n * 4);
        for (int64_t i = 0; i < n; i++) g[i] = rng_uniform(-30.0f, 30.0f);
        if (n > 2) g[0] = -120.0f, g[1] = 95.0f;
        fill(u, n, 2.0f);
        okv_swiglu_ref(r, g, u, n);
        memcpy(c, g, n * 4);
        cpu2.swiglu(&cpu2, c, c, u, n); /* out aliases gate */
        worst = fmax(worst, elem_err(c, r, n, 1e-30, 4e-6, &e_abs));
        wa = fmax(wa, e_abs);
        memcpy(c, u, n * 4);
        memcpy(r, u, n * 4);
        okv_add_ref(r, g, n);
        cpu2.add(&cpu2, c, g, n);
        w_add += !bits_equal(c, r, n * 4);
        free(g); free(u); free(r); free(c);
    }
    snprintf(det, sizeof det, "worst %.3f of tol (rtol 4e-6), abs %.2e", worst, wa);
    report(worst <= 1.0, "swiglu: cpu vs ref, n 1..100003, gate in [-120, 95], aliased", det);
    report(w_add == 0, "add: cpu vs ref, bit-exact, n 1..100003", w_add ? "differs" : "identical");
}

static void test_embed_kv_store(void) {
    const okv_type ts[] = {OKV_TYPE_F32, OKV_TYPE_F16,  OKV_TYPE_BF16, OKV_TYPE_Q4_0, OKV_TYPE_Q4_1,
                           OKV_TYPE_Q8_0, OKV_TYPE_Q5_0, OKV_TYPE_Q5_1, OKV_TYPE_IQ4_NL};
    int bad = 0;
    for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
        const int dim = 96, nv = 50, nt = 13;
        const size_t row = okv_type_row_bytes(ts[k], dim);
        float *tf = xmalloc((size_t)nv * dim * 4);
        uint8_t *tab = xmalloc((size_t)nv * row);
        fill(tf, (int64_t)nv * dim, 1.0f);
        for (int v = 0; v < nv; v++) okv_quant_row_ref(tab + v * row, tf + v * dim, ts[k], dim);
        int32_t ids[13];
        for (int t = 0; t < nt; t++) ids[t] = (int32_t)(rng_u32() % nv);
        float *a = xmalloc((size_t)nt * dim * 4), *b = xmalloc((size_t)nt * dim * 4);
        okv_embed_ref(a, tab, ts[k], ids, nt, dim);
        cpu2.embed(&cpu2, b, tab, ts[k], ids, nt, dim);
        bad += !bits_equal(a, b, (size_t)nt * dim * 4);
        free(tf); free(tab); free(a); free(b);
    }
    report(bad == 0, "embed: cpu vs ref, all weight types, bit-exact", bad ? "differs" : "identical");

    bad = 0;
    const okv_type kt[] = {OKV_TYPE_F16, OKV_TYPE_F32, OKV_TYPE_Q8_0, OKV_TYPE_Q4_0};
    for (int k = 0; k < 4; k++)
        for (int nt = 1; nt <= 37; nt += 9) {
            /* q8_0 and q4_0 rows are whole blocks; the others also take a ragged row */
            const int q8 = okv_kv_type_int(kt[k]);
            const int row_elems = 3 * 64 + (k == 1 ? 5 : 0), stride = row_elems + (q8 ? 64 : 40), nrows = 64;
            const size_t bytes = okv_type_row_bytes(kt[k], (int64_t)nrows * stride);
            uint8_t *a = xmalloc(bytes), *b = xmalloc(bytes);
            memset(a, 0x5a, bytes);
            memset(b, 0x5a, bytes);
            float *src = xmalloc((size_t)nt * row_elems * 4);
            fill(src, (int64_t)nt * row_elems, 100.0f);
            src[0] = 1e-6f, src[1] = 70000.0f; /* a subnormal half and an overflow */
            if (q8 && nt > 1) { /* an all-zero block, and a block where x/d lands on halves (ties to even) */
                memset(src + row_elems, 0, OKV_QK * sizeof(float));
                for (int j = 0; j < OKV_QK; j++) src[row_elems + OKV_QK + j] = j == 0 ? 127.0f : (float)(j % 9) - 4.5f;
            }
            int32_t rows[37];
            for (int t = 0; t < nt; t++) rows[t] = (t * 7 + 3) % nrows;
            okv_kv_store_ref(a, kt[k], stride, rows, src, nt, row_elems);
            cpu2.kv_store(&cpu2, b, kt[k], stride, rows, src, nt, row_elems);
            bad += !bits_equal(a, b, bytes);
            free(a); free(b); free(src);
        }
    report(bad == 0, "kv_store: cpu vs ref, f16/f32/q8_0/q4_0, scattered rows, bit-exact", bad ? "differs" : "identical");
}

/* ---- attention ------------------------------------------------------------------------------------ */

typedef struct kv_cache {
    okv_type type;
    void *k, *v;
    int64_t stride;
    int rows;
    float vmax;
} kv_cache;

/* The KV types the attention tests run over (kt indexes it). */
static const okv_type kv_types[] = {OKV_TYPE_F16, OKV_TYPE_F32, OKV_TYPE_Q8_0, OKV_TYPE_Q4_0};
#define N_KV_TYPES 4

/* Rows padded past n_kv * hd (by a block for q8_0 and q4_0, whose offsets are whole blocks). */
static kv_cache cache_make(okv_type t, int rows, int n_kv, int hd) {
    kv_cache c = {t, NULL, NULL, (int64_t)n_kv * hd + (okv_kv_type_int(t) ? OKV_QK : 8), rows, 0};
    c.k = xmalloc(okv_type_row_bytes(t, (int64_t)rows * c.stride));
    c.v = xmalloc(okv_type_row_bytes(t, (int64_t)rows * c.stride));
    float *tmp = xmalloc((size_t)c.stride * 4);
    for (int r = 0; r < rows; r++) {
        for (int w = 0; w < 2; w++) {
            fill(tmp, c.stride, w == 0 ? 1.5f : 1.0f);
            if (w == 1)
                for (int64_t i = 0; i < c.stride; i++) c.vmax = fmaxf(c.vmax, fabsf(tmp[i]));
            int32_t row = r;
            okv_kv_store_ref(w == 0 ? c.k : c.v, t, c.stride, &row, tmp, 1, (int)c.stride);
        }
    }
    free(tmp);
    return c;
}

static void cache_free(kv_cache *c) {
    free(c->k);
    free(c->v);
}

static okv_kv_view cache_view(const kv_cache *c, const int32_t *idx, int n) {
    return (okv_kv_view){c->type, c->k, c->v, c->stride, idx, n};
}

static okv_kv_view cache_view_from(const kv_cache *c, int first_row, int n) {
    const size_t off = okv_type_row_bytes(c->type, (int64_t)first_row * c->stride);
    return (okv_kv_view){c->type, (const uint8_t *)c->k + off, (const uint8_t *)c->v + off, c->stride, NULL, n};
}

static const int shapes[][3] = {{4, 4, 64}, {6, 2, 128}, {9, 3, 64}, {8, 2, 128}, {12, 3, 64}, {5, 5, 128}};

static void test_attn_decode(void) {
    const int ctxs[] = {1, 2, 17, 255, 256, 257, 1000, 3000};
    double worst = 0, worst_l = 0, wa = 0;
    int cases = 0, q8_diff = 0;
    for (int kt = 0; kt < N_KV_TYPES; kt++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (size_t ci = 0; ci < sizeof ctxs / sizeof ctxs[0]; ci++) {
                const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2], N = ctxs[ci];
                const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                const int tail = (int)(ci % 3);
                kv_cache c = cache_make(kv_types[kt], N + tail + 5, KV, hd);
                /* An index set with gaps (every row kept with probability ~0.6, at least one),
                 * then a contiguous tail of generated rows. */
                int32_t *idx = xmalloc((size_t)N * 4);
                int m = 0;
                for (int r = 0; r < N; r++)
                    if (rng_u32() % 5 < 3 || (m == 0 && r == N - 1)) idx[m++] = r;
                okv_kv_view views[2] = {cache_view(&c, idx, m), cache_view_from(&c, N, tail)};
                float *q = xmalloc((size_t)H * hd * 4), *or = xmalloc((size_t)H * hd * 4), *oc = xmalloc((size_t)H * hd * 4);
                float *lr = xmalloc((size_t)H * m * 4), *lc = xmalloc((size_t)H * m * 4);
                fill(q, (int64_t)H * hd, 1.0f);
                okv_attn_decode_ref(or, q, views, 2, s, lr);
                cpu2.attn_decode(&cpu2, oc, q, views, 2, s, lc);
                worst = fmax(worst, elem_err(oc, or, (int64_t)H * hd, 1e-5 * c.vmax, 0, &wa));
                double lmax = 1e-30, le = 0;
                for (int i = 0; i < H * m; i++) {
                    lmax = fmax(lmax, fabs(lr[i]));
                    le = fmax(le, fabs((double)lc[i] - lr[i]));
                }
                worst_l = fmax(worst_l, le / lmax);
                /* q8_0/q4_0 K: both take the same integer block dots with the same f32 steps */
                if (okv_kv_type_int(kv_types[kt])) q8_diff += !bits_equal(lc, lr, (size_t)H * m * 4);
                cases++;
                free(idx); free(q); free(or); free(oc); free(lr); free(lc);
                cache_free(&c);
            }
    char det[200];
    snprintf(det, sizeof det, "out worst %.3f of 1e-5*max|v|; logits worst %.2e of max|logit| (tol 1e-6); q8_0/q4_0 logits not bit-exact in %d cases",
             worst, worst_l, q8_diff);
    char what[128];
    snprintf(what, sizeof what, "attn_decode: cpu vs ref, %d cases (GQA 1/3/4, ctx 1..3000, f16/f32/q8_0/q4_0, gaps+tail)", cases);
    report(worst <= 1.0 && worst_l <= 1e-6 && q8_diff == 0, what, det);
}

/* The same rows, split into views in different ways, must give bitwise the same output, on any
 * thread count; view 0's logits must equal the dense logits of those rows. */
static void test_attn_decode_invariance(void) {
    const int ctxs[] = {1, 7, 256, 700, 3000};
    int bad = 0, cases = 0;
    for (int kt = 0; kt < N_KV_TYPES; kt++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (size_t ci = 0; ci < sizeof ctxs / sizeof ctxs[0]; ci++) {
                const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2], N = ctxs[ci], T = 3;
                const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                kv_cache c = cache_make(kv_types[kt], N + T, KV, hd);
                /* The tail also lives in a separate buffer with a different stride. */
                kv_cache tc = cache_make(c.type, T, KV, hd);
                const okv_type t = c.type;
                for (int r = 0; r < T; r++) {
                    const size_t to = okv_type_row_bytes(t, r * tc.stride), co = okv_type_row_bytes(t, (N + r) * c.stride);
                    memcpy((uint8_t *)tc.k + to, (uint8_t *)c.k + co, okv_type_row_bytes(t, (int64_t)KV * hd));
                    memcpy((uint8_t *)tc.v + to, (uint8_t *)c.v + co, okv_type_row_bytes(t, (int64_t)KV * hd));
                }
                int32_t *all = xmalloc((size_t)(N + T) * 4);
                for (int r = 0; r < N + T; r++) all[r] = r;
                const size_t ob = (size_t)H * hd * 4;
                float *q = xmalloc(ob), *dense = xmalloc(ob), *o = xmalloc(ob);
                float *ld = xmalloc((size_t)H * (N + T) * 4), *l = xmalloc((size_t)H * (N + T) * 4);
                fill(q, (int64_t)H * hd, 1.0f);
                okv_kv_view one = cache_view(&c, NULL, N + T);
                cpu2.attn_decode(&cpu2, dense, q, &one, 1, s, ld);

                okv_kv_view v1[2] = {cache_view(&c, all, N), cache_view(&tc, NULL, T)};
                cpu2.attn_decode(&cpu2, o, q, v1, 2, s, l);
                int ok = bits_equal(o, dense, ob);
                for (int h = 0; h < H; h++) ok &= bits_equal(l + (size_t)h * N, ld + (size_t)h * (N + T), (size_t)N * 4);

                const int a = N / 3, b = N / 3 + 1 < N ? N / 3 + 1 : N;
                okv_kv_view v2[5] = {cache_view(&c, all, a), cache_view_from(&c, a, b - a), cache_view(&c, all, 0),
                                     cache_view(&c, all + b, N - b), cache_view_from(&tc, 0, T)};
                cpu1.attn_decode(&cpu1, o, q, v2, 5, s, NULL);
                ok &= bits_equal(o, dense, ob);
                cpu3.attn_decode(&cpu3, o, q, v1, 2, s, NULL);
                ok &= bits_equal(o, dense, ob);
                okv_kv_view single = cache_view(&c, all, N + T);
                cpu3.attn_decode(&cpu3, o, q, &single, 1, s, NULL);
                ok &= bits_equal(o, dense, ob);
                bad += !ok;
                cases++;
                free(all); free(q); free(dense); free(o); free(ld); free(l);
                cache_free(&c);
                cache_free(&tc);
            }
    char what[128], det[64];
    snprintf(what, sizeof what, "attn_decode bitwise (f16/f32/q8_0/q4_0): dense == idx{0..N-1}+tail == 5 views, 1/2/3 threads");
    snprintf(det, sizeof det, "%d of %d cases differ", bad, cases);
    report(bad == 0, what, det);
}

/* The reference's logits against q8_0 and q4_0 K rows, against okv_vec_dot_ref (the weight-dot
 * reference, written apart and tested above against the dequantized f32 dot) of each K row with
 * the query head rounded to q8_0: llama.cpp's ggml_vec_dot_q8_0_q8_0 / ggml_vec_dot_q4_0_q8_0.
 * Only the summation (f32 fma in block order vs double) may differ: 1e-6 of sum |block terms|. */
static void test_attn_logits_int_ref(void) {
    const okv_type ts[] = {OKV_TYPE_Q8_0, OKV_TYPE_Q4_0};
    for (int k = 0; k < 2; k++) {
        double worst = 0;
        for (int trial = 0; trial < 20; trial++) {
            const int KV = 1 + trial % 3, H = KV * (1 + trial % 4), hd = trial % 2 ? 128 : 64, N = 37;
            const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
            kv_cache c = cache_make(ts[k], N, KV, hd);
            float *q = xmalloc((size_t)H * hd * 4), *l = xmalloc((size_t)H * N * 4), *qd = xmalloc((size_t)hd * 4);
            float *kd = xmalloc((size_t)hd * 4);
            okv_block_q8_0 *qq = xmalloc(okv_type_row_bytes(OKV_TYPE_Q8_0, hd));
            fill(q, (int64_t)H * hd, 2.0f);
            okv_attn_logits_ref(l, q, cache_view(&c, NULL, N), s);
            for (int h = 0; h < H; h++) {
                okv_quant_row_ref(qq, q + (int64_t)h * hd, OKV_TYPE_Q8_0, hd);
                okv_dequant_row_ref(qd, qq, OKV_TYPE_Q8_0, hd);
                for (int j = 0; j < N; j++) {
                    const uint8_t *kr = (const uint8_t *)c.k + okv_type_row_bytes(ts[k], (int64_t)j * c.stride + (int64_t)(h / (H / KV)) * hd);
                    const double want = s.scale * okv_vec_dot_ref(kr, ts[k], qq, hd);
                    okv_dequant_row_ref(kd, kr, ts[k], hd);
                    double mag = 1e-30;
                    for (int d = 0; d < hd; d++) mag += fabs((double)kd[d] * qd[d]);
                    worst = fmax(worst, fabs(l[(int64_t)h * N + j] - want) / (1e-6 * s.scale * mag));
                }
            }
            free(q); free(l); free(qd); free(kd); free(qq);
            cache_free(&c);
        }
        char what[96], det[64];
        snprintf(what, sizeof what, "attn_logits_ref %s K: vs vec_dot_ref with the query rounded to q8_0", okv_type_name(ts[k]));
        snprintf(det, sizeof det, "worst %.3f of 1e-6 sum|k*q|", worst);
        report(worst <= 1.0, what, det);
    }
}

static void test_attn_logits(void) {
    double worst = 0;
    int cases = 0, q8_diff = 0;
    for (int kt = 0; kt < N_KV_TYPES; kt++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int N = 1; N <= 3000; N = N * 5 + 2) {
                const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2];
                const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                kv_cache c = cache_make(kv_types[kt], 2 * N, KV, hd);
                int32_t *idx = xmalloc((size_t)N * 4);
                for (int i = 0; i < N; i++) idx[i] = 2 * i + (int)(rng_u32() & 1);
                okv_kv_view v = cache_view(&c, idx, N);
                float *q = xmalloc((size_t)H * hd * 4), *lr = xmalloc((size_t)H * N * 4), *lc = xmalloc((size_t)H * N * 4);
                fill(q, (int64_t)H * hd, 1.0f);
                okv_attn_logits_ref(lr, q, v, s);
                cpu2.attn_logits(&cpu2, lc, q, v, s);
                double lmax = 1e-30, e = 0;
                for (int i = 0; i < H * N; i++) {
                    lmax = fmax(lmax, fabs(lr[i]));
                    e = fmax(e, fabs((double)lc[i] - lr[i]));
                }
                worst = fmax(worst, e / lmax);
                if (okv_kv_type_int(kv_types[kt])) q8_diff += !bits_equal(lc, lr, (size_t)H * N * 4);
                cases++;
                free(idx); free(q); free(lr); free(lc);
                cache_free(&c);
            }
    char what[96], det[96];
    snprintf(what, sizeof what, "attn_logits: cpu vs ref, %d cases (f16/f32/q8_0/q4_0), index sets with gaps", cases);
    snprintf(det, sizeof det, "worst %.2e of max|logit| (tol 1e-6); q8_0/q4_0 not bit-exact in %d cases", worst, q8_diff);
    report(worst <= 1e-6 && q8_diff == 0, what, det);
}

static void test_attn_prefill(void) {
    const int nqs[] = {1, 5, 37, 100};
    const int pos0s[] = {0, 3, 70};
    double worst = 0, wa = 0;
    int cases = 0, thread_diff = 0;
    for (int kt = 0; kt < N_KV_TYPES; kt++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 3; b++) {
                    const int H = shapes[si][0], KV = shapes[si][1], hd = shapes[si][2];
                    const int nq = nqs[a], p0 = pos0s[b];
                    const okv_attn_shape s = {H, KV, hd, 1.0f / sqrtf((float)hd)};
                    kv_cache c = cache_make(kv_types[kt], p0 + nq + 2, KV, hd);
                    okv_kv_view v = cache_view(&c, NULL, p0 + nq + (a & 1) * 2);
                    const size_t ob = (size_t)nq * H * hd * 4;
                    float *q = xmalloc(ob), *or = xmalloc(ob), *oc = xmalloc(ob), *o1 = xmalloc(ob);
                    fill(q, (int64_t)nq * H * hd, 2.0f);
                    okv_attn_prefill_ref(or, q, nq, p0, v, s);
                    cpu2.attn_prefill(&cpu2, oc, q, nq, p0, v, s);
                    cpu1.attn_prefill(&cpu1, o1, q, nq, p0, v, s);
                    thread_diff += !bits_equal(oc, o1, ob);
                    double e_abs;
                    worst = fmax(worst, elem_err(oc, or, (int64_t)nq * H * hd, 1e-5 * c.vmax, 0, &e_abs));
                    wa = fmax(wa, e_abs);
                    cases++;
                    free(q); free(or); free(oc); free(o1);
                    cache_free(&c);
                }
    char what[128], det[128];
    snprintf(what, sizeof what, "attn_prefill: cpu vs ref, %d cases (n_q 1..100, pos0 0..70, f16/f32/q8_0/q4_0)", cases);
    snprintf(det, sizeof det, "worst %.3f of 1e-5*max|v| (abs %.2e); 1 vs 2 threads differ in %d", worst, wa, thread_diff);
    report(worst <= 1.0 && thread_diff == 0, what, det);
}

/* ---- top-k ------------------------------------------------------------------------------------------ */

static void test_topk(void) {
    const float sc[10] = {1, 3, 3, 2, 5, 5, 0, 3, NAN, 5};
    float sf[10];
    int32_t si[10], out[10];
    int ok = okv_topk(out, sc, 10, 4, sf, si) == 4 && out[0] == 1 && out[1] == 4 && out[2] == 5 && out[3] == 9;
    ok &= okv_topk(out, sc, 10, 0, sf, si) == 0;
    ok &= okv_topk(out, sc, 10, 25, sf, si) == 10 && out[0] == 0 && out[9] == 9;
    ok &= okv_topk(out, sc, 10, 9, sf, si) == 9 && out[8] == 9 && out[7] == 7; /* NaN (index 8) is last */
    ok &= okv_topk_ref(out, sc, 10, 4) == 4 && out[0] == 1 && out[3] == 9;
    report(ok, "topk hand case: ties to lower index, NaN last, k=0, k>n", ok ? "as expected" : "wrong");

    int bad = 0, cases = 0;
    const int ns[] = {1, 2, 3, 10, 100, 1000, 5000};
    for (int a = 0; a < 7; a++)
        for (int rep = 0; rep < 12; rep++) {
            const int n = ns[a];
            float *s = xmalloc((size_t)n * 4), *f = xmalloc((size_t)n * 4);
            int32_t *ii = xmalloc((size_t)n * 4), *o1 = xmalloc((size_t)n * 4), *o2 = xmalloc((size_t)n * 4);
            /* Few distinct values for many ties; some runs sorted or reversed. */
            for (int i = 0; i < n; i++) s[i] = rep % 3 == 0 ? (float)(rng_u32() % 7) : rng_uniform(-1, 1);
            if (rep == 4)
                for (int i = 0; i < n; i++) s[i] = (float)i;
            if (rep == 5)
                for (int i = 0; i < n; i++) s[i] = (float)-i;
            if (rep == 6)
                for (int i = 0; i < n; i++) s[i] = 1.0f;
            const int k = rep == 7 ? n : rep == 8 ? n - 1 : rep == 9 ? 1 : (int)(rng_u32() % (unsigned)(n + 2));
            const int k1 = okv_topk(o1, s, n, k, f, ii), k2 = okv_topk_ref(o2, s, n, k);
            bad += k1 != k2 || !bits_equal(o1, o2, (size_t)k1 * 4);
            cases++;
            free(s); free(f); free(ii); free(o1); free(o2);
        }
    char det[64];
    snprintf(det, sizeof det, "%d of %d differ", bad, cases);
    report(bad == 0, "topk vs full-sort ref: n 1..5000, ties, sorted/reversed/constant", det);
}

/* The backends under test take the vector path isa; returns non-zero when they cannot be built. */
static int cpu_backends_init(okv_cpu_isa isa) {
    okv_cpu_isa_request(isa);
    if (okv_backend_cpu_init(&cpu1, 1, 64, 4096) || okv_backend_cpu_init(&cpu2, 2, 64, 4096) ||
        okv_backend_cpu_init(&cpu3, 3, 64, 4096)) {
        fprintf(stderr, "test_kernels: %s\n", okv_last_error());
        return 1;
    }
    return 0;
}

static void cpu_backends_free(void) {
    cpu1.free(&cpu1);
    cpu2.free(&cpu2);
    cpu3.free(&cpu3);
}

/* Names round-trip; the generic path is always there; a forced path the CPU lacks is a usage
 * error naming it; each path fills the table with its own ops. */
static void test_isa_choice(void) {
    int ok = okv_cpu_isa_supported(OKV_CPU_ISA_GENERIC) && okv_cpu_isa_from_name("avx3") == -1;
    for (int i = OKV_CPU_ISA_AUTO; i <= OKV_CPU_ISA_GENERIC; i++)
        ok &= okv_cpu_isa_from_name(okv_cpu_isa_name((okv_cpu_isa)i)) == i;
    report(ok, "cpu_isa names round-trip; generic always supported", "");
    void (*seen[4])(okv_backend *, float *, const void *, okv_type, const float *, int, int, int) = {0};
    int n_seen = 0, distinct = 1;
    char det[160] = "";
    for (int i = OKV_CPU_ISA_AVX512; i <= OKV_CPU_ISA_GENERIC; i++) {
        okv_backend be;
        okv_cpu_isa_request((okv_cpu_isa)i);
        const int st = okv_backend_cpu_init(&be, 1, 1, 64);
        if (okv_cpu_isa_supported((okv_cpu_isa)i)) {
            distinct &= st == OKV_OK;
            for (int j = 0; j < n_seen; j++) distinct &= be.matmul != seen[j];
            seen[n_seen++] = be.matmul;
        } else {
            const int named = strstr(okv_last_error(), okv_cpu_isa_name((okv_cpu_isa)i)) != NULL;
            snprintf(det, sizeof det, "%s refused: %s", okv_cpu_isa_name((okv_cpu_isa)i), okv_last_error());
            report(st == OKV_ERR_USAGE && named && be.state == NULL,
                   "a forced path this CPU lacks is a usage error naming it", det);
        }
        be.free(&be);
    }
    okv_cpu_isa_request(OKV_CPU_ISA_AUTO);
    snprintf(det, sizeof det, "%d paths", n_seen);
    report(distinct, "each supported path builds a backend with its own matmul", det);
}

int main(void) {
    okv_log_init(0);
    okv_backend bad;
    report(okv_backend_cpu_init(&bad, 0, 1, 1) == OKV_ERR_USAGE && bad.state == NULL,
           "cpu init rejects 0 threads and leaves no state", "");
    bad.free(&bad);
    okv_backend ref;
    okv_backend_ref_init(&ref);
    report(ref.matmul && ref.attn_decode && ref.free && !strcmp(ref.name, "ref"), "ref backend table is filled", "");
    ref.free(&ref);

    test_types();
    test_converters();
    test_quant_ref();
    test_quant_hand_blocks();
    test_vec_dot_ref();
    test_kquant_hand_blocks();
    test_kquant_round_trip();
    test_topk();
    test_isa_choice();
    test_attn_logits_int_ref();

    for (int i = OKV_CPU_ISA_AVX512; i <= OKV_CPU_ISA_GENERIC; i++) {
        const okv_cpu_isa isa = (okv_cpu_isa)i;
        if (!okv_cpu_isa_supported(isa)) {
            printf("skip  [%s] this CPU lacks the path's instructions: its ops are not tested here\n",
                   okv_cpu_isa_name(isa));
            continue;
        }
        snprintf(path_tag, sizeof path_tag, "[%s] ", okv_cpu_isa_name(isa));
        if (cpu_backends_init(isa)) return 1;
        test_matmul();
        test_matmul_kquant();
        test_elementwise();
        test_embed_kv_store();
        test_attn_decode();
        test_attn_decode_invariance();
        test_attn_logits();
        test_attn_prefill();
        cpu_backends_free();
        path_tag[0] = 0;
    }
    printf("%d checks, %d failed\n", n_checks, n_fail);
    return n_fail ? 1 : 0;
}
