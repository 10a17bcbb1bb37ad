/* cmd_inspect.c — `omnikv inspect`: a model file's summary and derived configuration, and
 * `omnikv gen-model`. Tested by tests/e2e/test_run_batch.sh. */
#include "cli.h"

#include "../engine/engine.h"
#include "../engine/runner.h"
#include "../engine/sampler.h"
#include "../io/requests.h"
#include "../model/genmodel.h"
#include "../model/gguf.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void help_inspect(FILE *f) {
    fprintf(f,
        "usage: omnikv inspect MODEL   (or -m MODEL, as the other commands take it)\n"
        "\n"
        "  MODEL        a .gguf file (prints its header, metadata and tensors, then the derived\n"
        "               model configuration) or a Hugging Face directory (the configuration)\n"
        "  -h, --help   this text\n");
}

static const char *rope_scaling_name(rope_scaling_kind k) {
    switch (k) {
    case ROPE_SCALING_NONE: return "none";
    case ROPE_SCALING_LINEAR: return "linear";
    case ROPE_SCALING_LLAMA3: return "llama3";
    case ROPE_SCALING_DYNAMIC: return "dynamic";
    case ROPE_SCALING_YARN: return "yarn";
    }
    return "?";
}

static void print_model_config(const okv_model *m, FILE *f) {
    const okv_model_config *c = &m->cfg;
    fprintf(f, "model config:\n");
    fprintf(f, "  arch              %s\n", c->arch);
    fprintf(f, "  name              %s\n", c->name[0] ? c->name : "(none)");
    fprintf(f, "  layers            %d\n", c->n_layers);
    fprintf(f, "  dim               %d\n", c->dim);
    fprintf(f, "  ffn_dim           %d\n", c->ffn_dim);
    fprintf(f, "  heads             %d (kv heads %d, head_dim %d)\n", c->n_heads, c->n_kv_heads,
            c->head_dim);
    fprintf(f, "  vocab             %d\n", c->n_vocab);
    fprintf(f, "  ctx_train         %d\n", c->ctx_train);
    fprintf(f, "  norm_eps          %g\n", (double)c->norm_eps);
    fprintf(f, "  rope              theta %g, %d dims, scaling %s", (double)c->rope_theta,
            c->rope_dim, rope_scaling_name(c->rope_scaling));
    if (c->rope_scaling != ROPE_SCALING_NONE)
        fprintf(f, " (factor %g, original context %d)", (double)c->rope_factor, c->rope_orig_ctx);
    if (m->rope_factors.data) fprintf(f, ", per-frequency factors from rope_freqs.weight");
    fprintf(f, "\n");
    fprintf(f, "  tied embeddings   %s\n", c->tied_embeddings ? "yes" : "no");
    fprintf(f, "  qkv bias          %s\n", c->qkv_bias ? "yes" : "no");
    if (c->sliding_window) fprintf(f, "  sliding window    %d\n", c->sliding_window);
    uint64_t wb = model_layer_bytes(m, 0, c->n_layers);
    fprintf(f, "  layer weights     %.1f MiB\n", (double)wb / (1024.0 * 1024.0));
    uint64_t kv_tok = 2ull * c->n_layers * c->n_kv_heads * c->head_dim * 2;
    fprintf(f, "  KV per token      %llu bytes (f16, all layers)\n", (unsigned long long)kv_tok);
    if (m->tok) {
        static const char *const chat[] = {"none", "chatml", "llama3"};
        chat_kind ck = tokenizer_chat_kind(m->tok);
        fprintf(f, "  tokenizer         %d tokens, bos %d, eos %d, chat template %s\n",
                tokenizer_n_vocab(m->tok), (int)tokenizer_bos(m->tok), (int)tokenizer_eos(m->tok),
                ck >= CHAT_NONE && ck <= CHAT_LLAMA3 ? chat[ck] : "?");
    }
}

int cmd_inspect(args *a) {
    const char *path = NULL;
    for (a->i = 2; a->i < a->argc; a->i++) {
        const char *v = NULL;
        if (opt(a, "-m", "--model", &v)) {
            if (a->missing) return OKV_ERR_USAGE;
            if (path) return unknown_arg(a);
            path = v;
            continue;
        }
        if (a->argv[a->i][0] == '-' || path) return unknown_arg(a);
        path = a->argv[a->i];
    }
    if (!path) return okv_fail(OKV_ERR_USAGE, "inspect: give the MODEL to inspect");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return okv_fail(OKV_ERR_INPUT, "cannot open model '%s': %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        gguf_file g;
        memset(&g, 0, sizeof g);
        int st = gguf_open(&g, path);
        if (st) {
            gguf_close(&g);
            return st;
        }
        gguf_print_summary(&g, stdout);
        gguf_close(&g);
    }
    okv_model m;
    model_load_opts mo = {.layer_begin = 0, .layer_end = -1, .need_embed = true,
                          .need_head = true, .need_tokenizer = true};
    int st = model_load(&m, path, &mo);
    if (st) {
        /* The configuration is still worth showing when only the tokenizer is unusable. */
        char why[1024];
        snprintf(why, sizeof why, "%s", okv_last_error());
        model_free(&m);
        mo.need_tokenizer = false;
        if (model_load(&m, path, &mo)) {
            model_free(&m);
            okv_fail(OKV_ERR_INPUT, "%s", why);
            return OKV_ERR_INPUT;
        }
        OKV_WARN("%s", why);
    }
    print_model_config(&m, stdout);
    model_free(&m);
    return OKV_OK;
}

void help_gen(FILE *f) {
    int n;
    const char *const *names = genmodel_shape_names(&n);
    fprintf(f,
        "usage: omnikv gen-model --shape NAME [--layers N] [--type T] [--seed S] -o FILE.gguf\n"
        "\n"
        "  --shape NAME     model shape (required):");
    for (int i = 0; i < n; i++) fprintf(f, " %s", names[i]);
    char list[256];
    fprintf(f,
        "\n"
        "  --layers N       layer count instead of the shape's (default: the shape's)\n"
        "  --type T         weight type: %s (default f16);\n"
        "                   with a K-quant, tensors whose rows are not a multiple of 256 are\n"
        "                   written as q8_0\n"
        "  --seed S         seed of the random weights (default 0)\n"
        "  -o, --output F   the GGUF file to write (required)\n"
        "  -h, --help       this text\n",
        okv_weight_type_list(list, sizeof list));
}

int cmd_gen_model(args *a) {
    const char *shape = NULL, *out = NULL, *type_name = "f16";
    long layers = 0;
    uint64_t seed = 0;
    for (a->i = 2; a->i < a->argc; a->i++) {
        const char *v = NULL;
        int st = OKV_OK;
        if (opt(a, NULL, "--shape", &v)) shape = v;
        else if (opt(a, NULL, "--layers", &v)) st = v ? parse_count(a, "--layers", v, 1, &layers) : 0;
        else if (opt(a, NULL, "--type", &v)) type_name = v;
        else if (opt(a, NULL, "--seed", &v)) st = v ? parse_u64(a, "--seed", v, &seed) : 0;
        else if (opt(a, "-o", "--output", &v)) out = v;
        else return unknown_arg(a);
        if (a->missing) return OKV_ERR_USAGE;
        if (st) return st;
    }
    if (!shape || !out)
        return okv_fail(OKV_ERR_USAGE, "gen-model: --shape NAME and -o FILE.gguf are required");
    if (layers > 1024)
        return okv_fail(OKV_ERR_USAGE, "gen-model: --layers %ld is above the limit of 1024",
                        layers);
    int t = okv_type_from_name(type_name);
    if (t < 0 || !okv_type_is_weight((okv_type)t)) {
        char list[256];
        return okv_fail(OKV_ERR_USAGE, "gen-model: --type '%s' is not a weight type; use one of %s",
                        type_name, okv_weight_type_list(list, sizeof list));
    }
    double t0 = okv_now_s();
    int st = genmodel_write(out, shape, (int)layers, (okv_type)t, seed);
    if (!st) OKV_INFO("wrote %s (shape %s, %s) in %.1f s", out, shape, type_name, okv_now_s() - t0);
    return st;
}
