/* test_policy.c — layer roles and token selection against hand-computed answers: roles from
 * filter layers and W, budgets (count and fraction), `last` and `softmax_before_last` scores,
 * ties to the lower position, k > N, keep_first/keep_last, window selectors with forced prompt
 * tokens and 2^-age weights, and the GQA head-to-KV-head mapping of the fused logits. */
#include "common.h"
#include "kernels/backend.h"
#include "policy/policy.h"
#include "test_util.h"

#include <limits.h>
#include <math.h>
#include <string.h>

static bool same(const int32_t *a, const int32_t *b, int n) { return !memcmp(a, b, sizeof(int32_t) * (size_t)n); }

/* Window selectors as the reference implementation runs them (window 3, 1 head, a prompt of 6).
 * Decode step 1: the window holds the current token and prompt positions 4 and 5; those two are
 * selected unscored, and every window query's softmax covers candidates 0..3 only (so it stays
 * causal: the 9s at 4 and 5 must not matter); the budget k = 3 leaves k_s = 1 scored token, and
 * k = 2 <= the two window tokens still scores one. Step 3 (= window size): no prompt token is left
 * in the window, so all 6 are candidates. Expected scores are computed here in double precision;
 * the chosen positions by hand from them. */
static void check_window_tail(void) {
    const float lg[3][6] = {{0, 2, 0, 0, 9, 9}, {1, 0, 0, 0, 9, 9}, {0, 0, 0, 3, 9, 9}};
    okv_backend cpu;
    TEST_OK(okv_backend_cpu_init(&cpu, 1, 4, 64));
    TEST_OK(cpu.reserve(&cpu, (okv_attn_shape){1, 1, 4, 1.0f}, 64));
    for (int kind = OKV_SCORE_WINDOW_SUM; kind <= OKV_SCORE_WINDOW_EXP; kind++) {
        for (int step = 1; step <= 3; step += 2) {
            const int tail = step == 1 ? 2 : 0, c = 6 - tail;
            double want[6];
            for (int j = 0; j < c; j++) {
                want[j] = 0;
                for (int q = 0; q < 3; q++) {
                    double z = 0;
                    for (int i = 0; i < c; i++) z += exp(lg[q][i]);
                    want[j] += (kind == OKV_SCORE_WINDOW_EXP ? ldexp(1.0, -q) : 1.0) * exp(lg[q][j]) / z;
                }
            }
            okv_select_args a = {.kind = (okv_score_kind)kind, .k = 3, .n_tail = tail,
                                 .window_logits = &lg[0][0], .n_win = 3, .ages = {0, 1, 2}};
            float score[6];
            okv_select_scores_ref(score, NULL, 1, 6, &a);
            double err = 0;
            for (int j = 0; j < c; j++) err = fmax(err, fabs(score[j] - want[j]));
            TEST_CHECK(err < 1e-6, "window kind %d step %d: scores off by %g", kind, step, err);
            /* uniform: 0.615 0.929 0.315 1.141 at step 1 -> 3; exp: 0.345 0.810 0.195 0.401 -> 1.
             * At step 3 the 9s at 4 and 5 are scored and win, and 3 (uniform) or 1 (exp) is next. */
            const int32_t *expect = kind == OKV_SCORE_WINDOW_SUM ? (int32_t[]){3, 4, 5} : (int32_t[]){1, 4, 5};
            int32_t ref[8], got[8];
            const int nr = okv_select_ref(ref, NULL, 1, 6, &a), ng = cpu.select(&cpu, got, NULL, 1, 6, &a);
            TEST_CHECK(nr == 3 && ng == 3 && same(ref, got, 3) && same(ref, expect, 3),
                       "window kind %d step %d k 3: ref %d (%d %d %d), cpu %d, want %d %d %d", kind, step,
                       nr, ref[0], ref[1], ref[2], ng, expect[0], expect[1], expect[2]);
            if (step == 1) { /* k = 2 <= the window's 2 prompt tokens: one scored token + both */
                a.k = 2;
                const int n2 = okv_select_ref(ref, NULL, 1, 6, &a);
                TEST_CHECK(n2 == 3 && same(ref, expect, 3), "window kind %d, k <= window tokens: %d", kind, n2);
                printf("window kind %d step 1: scores within %.1e of hand values; k 3 and k 2 select "
                       "%d %d %d\n", kind, err, ref[0], ref[1], ref[2]);
            }
        }
    }
    cpu.free(&cpu);
}

int main(void) {
    okv_log_init(0);
    okv_run_config c;
    config_defaults(&c);

    /* Roles: 10 layers, filters {2, 6}, W = 1. */
    c.policy = POLICY_OMNIKV;
    c.n_filter_layers = 2;
    c.filter_layers[0] = 2;
    c.filter_layers[1] = 6;
    c.num_wait_load_layers = 1;
    okv_layer_plan p;
    TEST_OK(policy_plan_init(&p, &c, 10));
    const okv_role want[10] = {ROLE_DENSE, ROLE_DENSE, ROLE_FILTER, ROLE_WAIT, ROLE_SPARSE,
                               ROLE_SPARSE, ROLE_FILTER, ROLE_WAIT, ROLE_SPARSE, ROLE_SPARSE};
    const int want_g[10] = {-1, -1, 0, 0, 0, 0, 1, 1, 1, 1};
    for (int l = 0; l < 10; l++) {
        TEST_CHECK(p.role[l] == want[l], "layer %d role %s, expected %s", l,
                   policy_role_name(p.role[l]), policy_role_name(want[l]));
        TEST_CHECK(p.group[l] == want_g[l], "layer %d group %d, expected %d", l, p.group[l], want_g[l]);
    }
    policy_plan_free(&p);
    /* W larger than the gap: wait layers stop at the next filter layer. */
    c.num_wait_load_layers = 5;
    TEST_OK(policy_plan_init(&p, &c, 10));
    TEST_CHECK(p.role[5] == ROLE_WAIT && p.role[6] == ROLE_FILTER && p.role[9] == ROLE_WAIT,
               "W=5 roles wrong");
    policy_plan_free(&p);
    /* The largest W the config takes (INT_MAX) means every layer waits; f + W must not wrap. */
    c.num_wait_load_layers = INT_MAX;
    TEST_OK(policy_plan_init(&p, &c, 10));
    for (int l = 3; l < 10; l++)
        TEST_CHECK(l == 6 ? p.role[l] == ROLE_FILTER : p.role[l] == ROLE_WAIT,
                   "W=INT_MAX: layer %d is %s", l, policy_role_name(p.role[l]));
    policy_plan_free(&p);
    c.num_wait_load_layers = 1;
    /* Out-of-range filter layer is rejected naming the value. */
    c.filter_layers[1] = 12;
    TEST_CHECK(policy_plan_init(&p, &c, 10) == OKV_ERR_USAGE && strstr(okv_last_error(), "12"),
               "filter layer 12 of 10 accepted: %s", okv_last_error());
    policy_plan_free(&p);
    c.filter_layers[1] = 6;
    /* Dense policy: every layer dense. */
    c.policy = POLICY_DENSE;
    TEST_OK(policy_plan_init(&p, &c, 10));
    for (int l = 0; l < 10; l++) TEST_CHECK(p.role[l] == ROLE_DENSE, "dense policy layer %d not dense", l);
    policy_plan_free(&p);
    c.policy = POLICY_OMNIKV;

    /* Budgets. */
    c.num_selected = 2048;
    TEST_CHECK(config_budget(&c, 8000) == 2048, "count budget");
    c.num_selected = 0.25;
    TEST_CHECK(config_budget(&c, 1000) == 250, "fraction budget %d", config_budget(&c, 1000));
    c.num_selected = 0.067;
    TEST_CHECK(config_budget(&c, 2000) == 134, "0.067 of 2000 = %d, expected 134", config_budget(&c, 2000));
    TEST_CHECK(config_budget(&c, 10) == 0, "0.067 of 10 tokens is none, as in the reference");
    /* min_selected_tokens floors k: 0.067 of 2000 is 134 < 256; of 8192 it is 548 > 256. */
    c.min_selected = 256;
    TEST_CHECK(config_budget(&c, 2000) == 256, "floored 0.067 of 2000 = %d, expected 256", config_budget(&c, 2000));
    TEST_CHECK(config_budget(&c, 8192) == 548, "0.067 of 8192 = %d, expected 548", config_budget(&c, 8192));
    c.num_selected = 100;
    TEST_CHECK(config_budget(&c, 8192) == 256, "a count below the floor is raised to it");
    c.min_selected = 0;

    /* `last`: scores = max over heads of logits. 2 heads, 6 candidates. */
    okv_selector_scratch ss;
    TEST_OK(selector_scratch_init(&ss, 64));
    const float lg[2][6] = {{0.1f, 3.0f, 0.2f, 0.5f, 2.0f, -1.0f}, {0.0f, 0.0f, 4.0f, 0.6f, 0.0f, 2.5f}};
    float score[6];
    selector_scores(SELECTOR_LAST, &lg[0][0], 2, 6, NULL, NULL, 0, score);
    const float want_last[6] = {0.1f, 3.0f, 4.0f, 0.6f, 2.0f, 2.5f};
    for (int j = 0; j < 6; j++) TEST_CHECK(score[j] == want_last[j], "last score %d", j);
    int32_t out[64];
    int n = selector_pick(&(okv_selection){.k = 3}, &ss, score, 6, out);
    TEST_CHECK(n == 3 && same(out, (int32_t[]){1, 2, 5}, 3), "top-3 of last: %d %d %d", out[0], out[1], out[2]);
    /* k > N: everything, ascending. */
    n = selector_pick(&(okv_selection){.k = 100}, &ss, score, 6, out);
    TEST_CHECK(n == 6 && same(out, (int32_t[]){0, 1, 2, 3, 4, 5}, 6), "k > N must select all");
    /* Ties go to the lower position. */
    const float tie[7] = {1, 5, 5, 2, 5, 5, 0};
    n = selector_pick(&(okv_selection){.k = 3}, &ss, tie, 7, out);
    TEST_CHECK(n == 3 && same(out, (int32_t[]){1, 2, 4}, 3), "ties: got %d %d %d", out[0], out[1], out[2]);
    /* keep_first / keep_last take budget first. */
    c.keep_first = 1;
    c.keep_last = 1;
    c.selector = SELECTOR_SOFTMAX_BEFORE_LAST;
    okv_selection kept = policy_selection(&c, 6);
    TEST_CHECK(kept.keep_first == 1 && kept.keep_last == 1 && kept.selector == c.selector,
               "policy_selection copies the run's selector settings");
    kept.k = 3;
    n = selector_pick(&kept, &ss, score, 6, out);
    TEST_CHECK(n == 3 && same(out, (int32_t[]){0, 2, 5}, 3), "keep_first/last: %d %d %d", out[0], out[1], out[2]);
    /* keep_first / keep_last beyond the prompt mean all of it: the lowest positions win. */
    kept.keep_first = 0;
    kept.keep_last = INT_MAX;
    n = selector_pick(&kept, &ss, score, 6, out);
    TEST_CHECK(n == 3 && same(out, (int32_t[]){0, 1, 2}, 3), "keep_last=INT_MAX: %d %d %d", out[0],
               out[1], out[2]);
    kept.keep_first = INT_MAX;
    kept.keep_last = 0;
    n = selector_pick(&kept, &ss, score, 6, out);
    TEST_CHECK(n == 3 && same(out, (int32_t[]){0, 1, 2}, 3), "keep_first=INT_MAX: %d %d %d", out[0],
               out[1], out[2]);
    c.keep_first = c.keep_last = 0;
    c.selector = SELECTOR_LAST;

    /* softmax_before_last: hand-computed per-head softmax, then max. */
    selector_scores(SELECTOR_SOFTMAX_BEFORE_LAST, &lg[0][0], 2, 6, NULL, NULL, 0, score);
    for (int j = 0; j < 6; j++) {
        double best = 0;
        for (int h = 0; h < 2; h++) {
            double z = 0;
            for (int i = 0; i < 6; i++) z += exp(lg[h][i]);
            best = fmax(best, exp(lg[h][j]) / z);
        }
        TEST_CHECK(fabs(score[j] - best) < 1e-6, "softmax_before_last score %d: %g vs %g", j, score[j], best);
    }

    /* Window selectors: 2 queries (ages 0 and 1), 1 head, 4 candidates. */
    const float win[2][1][4] = {{{0, 0, 0, 2}}, {{3, 0, 0, 0}}};
    const int ages[2] = {0, 1};
    for (int sel = SELECTOR_UNIFORM; sel <= SELECTOR_EXP; sel++) {
        selector_scores((okv_selector)sel, NULL, 1, 4, &win[0][0][0], ages, 2, score);
        for (int j = 0; j < 4; j++) {
            double s0 = exp(win[0][0][j]) / (3 + exp(2.0));
            double s1 = exp(win[1][0][j]) / (3 + exp(3.0));
            double w1 = sel == SELECTOR_EXP ? 0.5 : 1.0;
            TEST_CHECK(fabs(score[j] - (s0 + w1 * s1)) < 1e-6, "window selector %d score %d", sel, j);
        }
    }
    selector_scratch_free(&ss);
    check_window_tail();

    /* GQA: 4 query heads over 2 KV heads; head h must score against KV head h/2. The fused logits
     * of attn_decode are compared with hand-computed dot products. */
    okv_backend be;
    TEST_OK(okv_backend_cpu_init(&be, 2, 4, 64));
    enum { HD = 4, NKV = 2, NH = 4, R = 3 };
    uint16_t k16[R][NKV][HD], v16[R][NKV][HD];
    float q[NH][HD], att[NH * HD], logits[NH][R];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < NKV; h++)
            for (int d = 0; d < HD; d++) {
                k16[r][h][d] = okv_f32_to_fp16((float)(r + 1) * (h ? -1.0f : 1.0f) * (d == r ? 1.0f : 0.25f));
                v16[r][h][d] = okv_f32_to_fp16(0.5f);
            }
    for (int h = 0; h < NH; h++)
        for (int d = 0; d < HD; d++) q[h][d] = (float)(h + 1) * (d % 2 ? 1.0f : 0.5f);
    okv_kv_view view = {.type = OKV_TYPE_F16, .k = k16, .v = v16, .stride = NKV * HD, .n = R};
    okv_attn_shape shp = {.n_heads = NH, .n_kv_heads = NKV, .head_dim = HD, .scale = 0.5f};
    be.attn_decode(&be, att, &q[0][0], &view, 1, shp, &logits[0][0]);
    for (int h = 0; h < NH; h++)
        for (int r = 0; r < R; r++) {
            double dot = 0;
            for (int d = 0; d < HD; d++) dot += q[h][d] * okv_fp16_to_f32(k16[r][h / 2][d]);
            TEST_CHECK(fabs(logits[h][r] - 0.5 * dot) < 1e-4, "GQA logit head %d row %d: %g vs %g", h,
                       r, logits[h][r], 0.5 * dot);
        }
    be.free(&be);
    return test_summary();
}
