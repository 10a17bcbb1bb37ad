/* preset.c — the run-config preset of a model (a JSON file in configs/): the one whose
 * model_shape names a shape with the model's dimensions. Commands run without -c use it. Tested
 * by tests/e2e/test_day_one.sh (eval and plan without -c on SmolLM2). */
#include "cli.h"

#include "../model/genmodel.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static const char *preset_dir(void) {
    const char *env = getenv("OMNIKV_CONFIGS");
    return env && *env ? env : OMNIKV_PRESET_DIR;
}

/* Whether a shape's dimensions are the model's (names and context lengths may differ). */
static bool same_dims(const okv_model_config *a, const okv_model_config *b) {
    return a->n_layers == b->n_layers && a->dim == b->dim && a->ffn_dim == b->ffn_dim &&
           a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->n_vocab == b->n_vocab;
}

bool preset_find(const okv_model_config *cfg, const char *shape, char *path, size_t cap) {
    DIR *d = opendir(preset_dir());
    if (!d) return false;
    char (*names)[256] = NULL;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 6 || len >= 256 || strcmp(e->d_name + len - 5, ".json")) continue;
        char (*grown)[256] = realloc(names, sizeof *names * (size_t)(n + 1));
        OKV_ASSERT(grown);
        names = grown;
        snprintf(names[n++], sizeof *names, "%s", e->d_name);
    }
    closedir(d);
    /* Directory order is arbitrary; the first match in name order is the same on every host. */
    qsort(names, (size_t)n, sizeof *names, (int (*)(const void *, const void *))strcmp);
    bool found = false;
    for (int i = 0; i < n && !found; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", preset_dir(), names[i]);
        okv_run_config rc;
        config_defaults(&rc);
        okv_model_config sc;
        if (config_load_json(&rc, p) || !rc.model_shape[0]) continue;
        if (shape) found = !strcmp(shape, rc.model_shape);
        else found = genmodel_shape(rc.model_shape, &sc) == OKV_OK && same_dims(cfg, &sc);
        if (found) snprintf(path, cap, "%s", p);
    }
    okv_clear_error();
    free(names);
    return found;
}
