/* eval.c — the `omnikv eval` grid (see eval.h). Tested by tests/model/test_passkey_quality.sh. */
#include "eval.h"

#include "../common.h"
#include "../engine/engine.h"
#include "tasks.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

int eval_parse_variants(eval_opts *o, const char *list) {
    o->n_variant = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (o->n_variant == EVAL_MAX) return okv_fail(OKV_ERR_USAGE, "too many variants in '%s' (at most %d)", list, EVAL_MAX);
        eval_variant *v = &o->variant[o->n_variant++];
        memset(v, 0, sizeof *v);
        if (!strcmp(t, "dense")) {
            v->dense = true;
            snprintf(v->name, sizeof v->name, "dense");
            continue;
        }
        char *end;
        v->budget = strtod(t, &end);
        if (*end || !(v->budget > 0))
            return okv_fail(OKV_ERR_USAGE, "variant '%s' is neither 'dense' nor a budget > 0 (a count, or a fraction below 1)", t);
        snprintf(v->name, sizeof v->name, "k=%s", t);
    }
    if (!o->n_variant) return okv_fail(OKV_ERR_USAGE, "no variants given");
    return OKV_OK;
}

/* Greedy decode of up to max_new tokens from the prefilled state; text into out. */
static int decode_greedy(okv_engine *e, const okv_model *m, const float *first_logits, int max_new,
                         float *x, float *logits, char *out, size_t cap) {
    const int V = m->cfg.n_vocab;
    size_t len = 0;
    out[0] = 0;
    const float *lg = first_logits;
    for (int t = 0; t < max_new; t++) {
        int32_t tok = 0;
        for (int v = 1; v < V; v++)
            if (lg[v] > lg[tok]) tok = v;
        if (tokenizer_is_eog(m->tok, tok)) break;
        int n = tokenizer_piece(m->tok, tok, false, out + len, cap - len - 1);
        if (n > 0) len += (size_t)n;
        out[len] = 0;
        if (t + 1 == max_new) break;
        engine_embed(e, &tok, 1, x);
        int st = engine_decode(e, (int[]){0}, 1, x);
        if (st) return st;
        engine_head(e, x, 1, logits);
        lg = logits;
    }
    return OKV_OK;
}

int eval_run(const okv_model *m, const okv_run_config *rc, const eval_opts *o, FILE *samples,
             FILE *summary) {
    if (strcmp(o->task, "passkey"))
        return okv_fail(OKV_ERR_USAGE, "unknown task '%s' (known: passkey)", o->task);
    bool sparse = false;
    for (int v = 0; v < o->n_variant; v++) sparse |= !o->variant[v].dense;
    okv_run_config erc = *rc;
    int max_ctx = 0;
    for (int c = 0; c < o->n_ctx; c++) max_ctx = OKV_MAX(max_ctx, o->ctx[c]);
    erc.max_context_len = max_ctx + 64;
    if (sparse) {
        if (erc.n_filter_layers == 0)
            return okv_fail(OKV_ERR_USAGE, "OmniKV variants need filter layers; set do_select_layers (e.g. --set do_select_layers=2,8,18) or use a config preset");
        erc.policy = POLICY_OMNIKV;
    }
    const int dim = m->cfg.dim, V = m->cfg.n_vocab;
    okv_engine e;
    int st = engine_init(&e, m, &erc, 0, m->cfg.n_layers, 1);
    if (st) return st;
    float *x = calloc((size_t)erc.prefill_chunk * dim, sizeof(float));
    float *first = calloc((size_t)V, sizeof(float)), *logits = calloc((size_t)V, sizeof(float));
    int32_t *ids = calloc((size_t)erc.max_context_len, sizeof(int32_t));
    double *score = calloc((size_t)o->n_ctx * o->n_variant, sizeof(double));
    int *n_scored = calloc((size_t)o->n_ctx * o->n_variant, sizeof(int));
    char text[512];
    OKV_ASSERT(x && first && logits && ids && score && n_scored);
    int n_depth = o->n_depth ? o->n_depth : 1;
    for (int c = 0; c < o->n_ctx && !st; c++) {
        double t0 = okv_now_s();
        for (int d = 0; d < n_depth && !st; d++) {
            for (int i = 0; i < o->count && !st; i++) {
                uint64_t seed = o->seed + (uint64_t)c * 1000003 + (uint64_t)d * 10007 + (uint64_t)i;
                double depth = o->n_depth ? o->depth[d] : -1.0;
                task_sample s;
                if ((st = task_passkey(m->tok, o->ctx[c], depth, seed, &s))) break;
                int n = tokenizer_encode(m->tok, s.prompt, strlen(s.prompt), true, false, ids, erc.max_context_len);
                if (n <= 0 || n + s.max_new_tokens >= erc.max_context_len) {
                    st = okv_fail(OKV_ERR_INTERNAL, "sample encoded to %d tokens", n);
                    task_sample_free(&s);
                    break;
                }
                if ((st = engine_seq_start(&e, 0, n))) break;
                for (int pos = 0; pos < n && !st; pos += erc.prefill_chunk) {
                    int k = OKV_MIN(erc.prefill_chunk, n - pos);
                    engine_embed(&e, ids + pos, k, x);
                    st = engine_prefill(&e, 0, pos, k, x);
                    if (pos + k == n) engine_head(&e, x + (size_t)(k - 1) * dim, 1, first);
                }
                for (int v = 0; v < o->n_variant && !st; v++) {
                    const eval_variant *var = &o->variant[v];
                    okv_run_config vb = erc;
                    vb.num_selected = var->budget;
                    engine_seq_rewind(&e, 0, n);
                    engine_seq_set_budget(&e, 0, var->dense ? n : config_budget(&vb, n));
                    if ((st = decode_greedy(&e, m, first, s.max_new_tokens, x, logits, text, sizeof text))) break;
                    double sc = task_score_first_int(text, s.answer);
                    score[c * o->n_variant + v] += sc;
                    n_scored[c * o->n_variant + v]++;
                    if (samples) {
                        cJSON *j = cJSON_CreateObject();
                        cJSON_AddStringToObject(j, "task", o->task);
                        cJSON_AddNumberToObject(j, "ctx", o->ctx[c]);
                        cJSON_AddNumberToObject(j, "prompt_tokens", n);
                        cJSON_AddNumberToObject(j, "depth", s.depth);
                        cJSON_AddNumberToObject(j, "sample", i);
                        cJSON_AddStringToObject(j, "variant", var->name);
                        cJSON_AddNumberToObject(j, "budget", var->dense ? n : config_budget(&vb, n));
                        cJSON_AddStringToObject(j, "answer", s.answer);
                        cJSON_AddStringToObject(j, "output", text);
                        cJSON_AddNumberToObject(j, "score", sc);
                        char *line = cJSON_PrintUnformatted(j);
                        fprintf(samples, "%s\n", line);
                        fflush(samples);
                        free(line);
                        cJSON_Delete(j);
                    }
                }
                engine_seq_end(&e, 0);
                task_sample_free(&s);
            }
        }
        OKV_INFO("eval: ctx %d done in %.1f s", o->ctx[c], okv_now_s() - t0);
    }
    if (!st && summary) {
        fprintf(summary, "%-8s %8s", "task", "ctx");
        for (int v = 0; v < o->n_variant; v++) fprintf(summary, " %10s", o->variant[v].name);
        fprintf(summary, "   (accuracy %%, %d samples per cell)\n", o->count * n_depth);
        for (int c = 0; c < o->n_ctx; c++) {
            fprintf(summary, "%-8s %8d", o->task, o->ctx[c]);
            for (int v = 0; v < o->n_variant; v++) {
                int k = c * o->n_variant + v;
                fprintf(summary, " %10.1f", n_scored[k] ? score[k] / n_scored[k] : 0.0);
            }
            fprintf(summary, "\n");
        }
        fflush(summary);
    }
    free(x);
    free(first);
    free(logits);
    free(ids);
    free(score);
    free(n_scored);
    engine_free(&e);
    return st;
}
