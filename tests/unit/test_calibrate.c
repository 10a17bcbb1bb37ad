/* test_calibrate.c — calibration finds planted filter layers. A generated 12-layer model is
 * edited so the residual stream never changes (attn_output and ffn_down are zero) and layers
 * share their Q/K projections within planted groups {2..5}, {6..8}, {9..11} (layers 0 and 1 have
 * their own): attention patterns then repeat inside a group and differ across groups, so the
 * only good 3-filter choice by total mass is {2, 6, 9}; by needle mass the groups that attend to
 * the needle keep their leaders. Also checks calib_choose on hand-made matrices (with and without
 * layer weights) and the answer marking on hand-built token sequences. */
#include "common.h"
#include "model/genmodel.h"
#include "model/gguf.h"
#include "policy/calibrate.h"
#include "test_util.h"

#include <cjson/cJSON.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int leader(int l) { return l < 2 ? l : l < 6 ? 2 : l < 9 ? 6 : 9; }

static const gguf_tensor_info *tensor(const gguf_file *f, int layer, const char *what) {
    char name[64];
    snprintf(name, sizeof name, "blk.%d.%s.weight", layer, what);
    const gguf_tensor_info *t = gguf_find_tensor(f, name);
    if (!t) {
        fprintf(stderr, "FAIL: generated model lacks %s\n", name);
        exit(1);
    }
    return t;
}

int main(void) {
    okv_log_init(0);
    /* calib_choose on a hand-made 6-layer matrix: groups {1,2,3} and {4,5} cover each other fully,
     * everything else covers nothing; W = 0, dense cost 0.25. Best 2 filters: {1, 4}, loss 0.25
     * (layer 0 runs dense; 2, 3, 5 lose nothing). */
    double cov[36] = {0};
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 6; b++) {
            int ga = a == 0 ? 0 : a < 4 ? 1 : 2, gb = b == 0 ? 0 : b < 4 ? 1 : 2;
            cov[a * 6 + b] = ga == gb ? 1.0 : 0.0;
        }
    int f2[2];
    double loss = calib_choose(cov, NULL, 6, 2, 0, 0.25, f2);
    TEST_CHECK(f2[0] == 1 && f2[1] == 4 && loss == 0.25, "hand matrix: chose {%d, %d} loss %g, expected {1, 4} loss 0.25",
               f2[0], f2[1], loss);
    /* W = 1: each filter needs a wait layer and then a sparse layer, so in 6 layers only {0, 3}
     * fits (sparse layers 2 and 5, both fully lost: loss 2), and 3 filters cannot fit at all. */
    loss = calib_choose(cov, NULL, 6, 2, 1, 0.25, f2);
    TEST_CHECK(f2[0] == 0 && f2[1] == 3 && loss == 2.0, "W=1: chose {%d, %d} loss %g, expected {0, 3} loss 2",
               f2[0], f2[1], loss);
    int f3[3];
    TEST_CHECK(isinf(calib_choose(cov, NULL, 6, 3, 1, 0.25, f3)), "3 filters with W=1 cannot fit 6 layers");
    /* Weights: in 5 layers (W = 0, one filter, dense cost 0.25), filter 1 covers layers 2 and 3
     * but not 4, filter 3 covers 4. Unweighted, 3 wins (0.75 of dense cost against 0.25 + 1 lost
     * layer); when layer 4 pays nothing to the needle (weight 0), filter 1 wins with 0.25. */
    double c5[25] = {0}, w5[5] = {1, 1, 1, 1, 0};
    c5[1 * 5 + 2] = c5[1 * 5 + 3] = c5[3 * 5 + 4] = 1.0;
    int f1;
    loss = calib_choose(c5, NULL, 5, 1, 0, 0.25, &f1);
    TEST_CHECK(f1 == 3 && fabs(loss - 0.75) < 1e-12, "unweighted: chose %d loss %g, expected 3 loss 0.75", f1, loss);
    loss = calib_choose(c5, w5, 5, 1, 0, 0.25, &f1);
    TEST_CHECK(f1 == 1 && fabs(loss - 0.25) < 1e-12, "weighted: chose %d loss %g, expected 1 loss 0.25", f1, loss);

    char base[256], planted[256];
    snprintf(base, sizeof base, "/tmp/omnikv-calib-base-%d.gguf", (int)getpid());
    snprintf(planted, sizeof planted, "/tmp/omnikv-calib-planted-%d.gguf", (int)getpid());
    TEST_OK(genmodel_write(base, "tiny", 12, OKV_TYPE_F32, 11));
    gguf_file f;
    TEST_OK(gguf_open(&f, base));
    uint8_t *copy = malloc(f.size);
    memcpy(copy, f.map, f.size);
    for (int l = 0; l < 12; l++) {
        static const char *const zero[2] = {"attn_output", "ffn_down"};
        for (int i = 0; i < 2; i++) {
            const gguf_tensor_info *t = tensor(&f, l, zero[i]);
            memset(copy + ((const uint8_t *)t->data - f.map), 0, t->nbytes);
        }
        static const char *const qk[2] = {"attn_q", "attn_k"};
        for (int i = 0; i < 2; i++) {
            const gguf_tensor_info *src = tensor(&f, leader(l), qk[i]), *dst = tensor(&f, l, qk[i]);
            const float *s = src->data;
            float *d = (float *)(copy + ((const uint8_t *)dst->data - f.map));
            /* scaled up so attention is peaked enough for a top-k to hold most of the mass */
            for (uint64_t j = 0; j < src->nbytes / 4; j++) d[j] = 40.0f * s[j];
        }
    }
    FILE *out = fopen(planted, "wb");
    TEST_CHECK(out && fwrite(copy, 1, f.size, out) == f.size && fclose(out) == 0, "cannot write %s", planted);
    free(copy);
    gguf_close(&f);
    unlink(base);

    okv_model m;
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true, .need_head = true,
                          .need_tokenizer = true};
    TEST_OK(model_load(&m, planted, &mo));
    unlink(planted);
    /* The needle: the answer's tokens are marked wherever they occur, and nowhere else. */
    int32_t pat[32], ids[64];
    int np = tokenizer_encode(m.tok, "73519", 5, false, false, pat, 32);
    TEST_CHECK(np > 0 && 2 * np + 3 <= 64, "cannot encode the answer (%d tokens)", np);
    int n_ids = 0;
    ids[n_ids++] = pat[0] == 1 ? 2 : 1;
    for (int i = 0; i < np; i++) ids[n_ids++] = pat[i];
    ids[n_ids++] = pat[0] == 1 ? 2 : 1;
    for (int i = 0; i < np; i++) ids[n_ids++] = pat[i];
    ids[n_ids++] = pat[0] == 1 ? 2 : 1;
    bool mark[64];
    const char *answer = "73519";
    int marked = calib_mark_answers(m.tok, &answer, 1, ids, n_ids, mark);
    int wrong = 0;
    for (int i = 0; i < n_ids; i++) wrong += mark[i] != (i % (np + 1) != 0);
    TEST_CHECK(marked == 2 * np && !wrong, "answer marks: %d marked (expected %d), %d wrong", marked, 2 * np, wrong);
    const char *absent = "zzqq";
    TEST_CHECK(calib_mark_answers(m.tok, &absent, 1, ids, n_ids, mark) == 0, "an absent answer was marked");

    calib_opts o = {.task = "passkey", .objective = CALIB_OBJECTIVE_NEEDLE, .n_prompts = 3, .ctx = 400,
                    .steps = 4, .budget = 0.2, .n_filters = 3, .wait = 1, .dense_cost = 0.25, .seed = 5,
                    .threads = 2};
    calib_result r;
    TEST_OK(calib_run(&m, &o, &r));
    double in_n = 0, across_n = 0, w_sum = 0;
    int n_in_n = 0, n_across_n = 0;
    for (int a = 0; a < 12; a++) {
        w_sum += r.weight[a];
        for (int b = a + 1; b < 12; b++) {
            if (leader(a) == leader(b)) in_n += r.cover[a * 12 + b], n_in_n++;
            else across_n += r.cover[a * 12 + b], n_across_n++;
        }
    }
    printf("needle objective: coverage within planted groups %.3f, across %.3f; weights sum %.3f\n",
           in_n / n_in_n, across_n / n_across_n, w_sum);
    printf("needle objective: layer weights");
    for (int a = 0; a < 12; a++) printf(" %.2f", r.weight[a]);
    printf("; chose {%d, %d, %d}, loss %.3f\n", r.filters[0], r.filters[1], r.filters[2], r.loss);
    TEST_CHECK(fabs(w_sum - 12.0) < 1e-9, "needle weights sum to %g, expected the layer count 12", w_sum);
    TEST_CHECK(in_n / n_in_n > across_n / n_across_n + 0.3, "planted structure not visible in the needle matrix");
    /* The groups that attend to the needle ({6..8} and {9..11} here) get their planted leaders;
     * the first filter may sit anywhere that leaves no needle-attending layer to a wrong one. */
    TEST_CHECK(r.filters[1] == 6 && r.filters[2] == 9, "needle objective chose {%d, %d, %d}: expected "
               "6 and 9 for the needle-attending groups", r.filters[0], r.filters[1], r.filters[2]);
    calib_result_free(&r);
    o.objective = CALIB_OBJECTIVE_MASS;
    TEST_OK(calib_run(&m, &o, &r));
    double in = 0, across = 0;
    int n_in = 0, n_across = 0;
    for (int a = 0; a < 12; a++)
        for (int b = a + 1; b < 12; b++) {
            double c = r.cover[a * 12 + b];
            if (leader(a) == leader(b)) in += c, n_in++;
            else across += c, n_across++;
        }
    printf("coverage: mean within planted groups %.3f, across groups %.3f (%d samples)\n", in / n_in,
           across / n_across, r.samples);
    printf("chosen filter layers: {%d, %d, %d} (planted {2, 6, 9}), loss %.3f\n", r.filters[0],
           r.filters[1], r.filters[2], r.loss);
    TEST_CHECK(r.filters[0] == 2 && r.filters[1] == 6 && r.filters[2] == 9,
               "calibration chose {%d, %d, %d}, not the planted {2, 6, 9}", r.filters[0], r.filters[1],
               r.filters[2]);
    TEST_CHECK(in / n_in > across / n_across + 0.3, "planted structure not visible in the matrix");

    /* The outputs: fragment parses as a run config, CSV has 13 lines, PNG has the PNG signature. */
    char frag[256], csv[256], png[256];
    snprintf(frag, sizeof frag, "/tmp/omnikv-calib-%d.json", (int)getpid());
    snprintf(csv, sizeof csv, "/tmp/omnikv-calib-%d.csv", (int)getpid());
    snprintf(png, sizeof png, "/tmp/omnikv-calib-%d.png", (int)getpid());
    TEST_OK(calib_write_fragment(&r, &o, frag));
    TEST_OK(calib_write_csv(&r, csv));
    TEST_OK(calib_write_png(&r, png));
    char *txt = test_read_file(frag, NULL);
    cJSON *j = cJSON_Parse(txt);
    cJSON *sel = j ? cJSON_GetObjectItem(j, "do_select_layers") : NULL;
    TEST_CHECK(cJSON_IsString(sel) && !strcmp(sel->valuestring, "2,6,9"), "fragment lacks the filters: %s", txt);
    okv_run_config rc;
    config_defaults(&rc);
    TEST_CHECK(sel && config_set(&rc, "do_select_layers", sel->valuestring) == OKV_OK &&
                   rc.n_filter_layers == 3 && rc.filter_layers[2] == 9,
               "fragment's filter list does not load as a run config");
    cJSON_Delete(j);
    free(txt);
    size_t n;
    char *c = test_read_file(csv, &n);
    int lines = 0;
    for (size_t i = 0; i < n; i++) lines += c[i] == '\n';
    TEST_CHECK(lines == 14, "CSV has %d lines, expected 14 (header, 12 layers, weights)", lines);
    free(c);
    char *p = test_read_file(png, &n);
    TEST_CHECK(n > 8 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8), "PNG signature missing");
    free(p);
    unlink(frag);
    unlink(csv);
    unlink(png);
    calib_result_free(&r);
    model_free(&m);
    return test_summary();
}
