/* planner.c — stage planning: per-layer costs from the cost model, a dynamic program over
 * boundary positions (balance first, index-set-free boundaries preferred), hand partitions and
 * the per-stage memory estimate. Tested by tests/unit/test_planner.c (alignment, balance against
 * brute force, hand-partition and rank-count errors). */
#include "planner.h"

#include "../src/common.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int planner_parse_stages(const char *spec, int n_layers, int *first, int cap, int *n) {
    *n = 0;
    const char *p = spec;
    int next = 0;
    while (*p) {
        char *end;
        errno = 0;
        long a = strtol(p, &end, 10);
        if (end == p || errno || a < 0)
            return okv_fail(OKV_ERR_USAGE, "stages '%s': expected a layer range such as 0-7 at "
                            "'%s'", spec, p);
        long b = a;
        p = end;
        if (*p == '-') {
            p++;
            errno = 0;
            b = strtol(p, &end, 10);
            if (end == p || errno || b < a)
                return okv_fail(OKV_ERR_USAGE, "stages '%s': the range starting at %ld needs an end "
                                ">= its start", spec, a);
            p = end;
        }
        if (a != next)
            return okv_fail(OKV_ERR_USAGE, "stages '%s': stage %d starts at layer %ld, but must "
                            "start at layer %d (stages are contiguous from layer 0)", spec, *n, a,
                            next);
        if (*n == cap)
            return okv_fail(OKV_ERR_USAGE, "stages '%s': more than %d stages", spec, cap);
        first[(*n)++] = (int)a;
        next = (int)b + 1;
        if (*p == ',') {
            p++;
            if (!*p) return okv_fail(OKV_ERR_USAGE, "stages '%s' ends with a comma", spec);
        } else if (*p) {
            return okv_fail(OKV_ERR_USAGE, "stages '%s': unexpected '%c'", spec, *p);
        }
    }
    if (*n == 0) return okv_fail(OKV_ERR_USAGE, "stages is empty: give ranges such as 0-7,8-15");
    first[*n] = next;
    if (n_layers >= 0 && next != n_layers)
        return okv_fail(OKV_ERR_USAGE, "stages '%s' covers layers 0-%d, but the model has %d "
                        "layers (0-%d)", spec, next - 1, n_layers, n_layers - 1);
    return OKV_OK;
}

int planner_boundary_groups(int n_layers, const okv_role *role, const int *group, int b,
                            int *groups, int cap) {
    int n = 0;
    if (b <= 0 || b >= n_layers) return 0;
    /* Only the group of layer b can continue across b: groups are contiguous layer runs. */
    int g = group[b];
    if (g < 0 || role[b] == ROLE_FILTER) return 0;
    for (int l = b; l < n_layers && group[l] == g; l++)
        if (role[l] == ROLE_SPARSE) {
            if (n < cap) groups[n] = g;
            n = 1;
            break;
        }
    return n;
}

static size_t kv_row_bytes(const pipe_cost_model *cm) {
    return okv_type_row_bytes(cm->kv_type, cm->kv_dim) * 2;
}

/* KV rows layer l reads per sequence in one decode step. */
static double layer_rows(const pipe_cost_model *cm, int l) {
    return cm->role[l] == ROLE_SPARSE ? (double)(OKV_MIN(cm->k, cm->ctx) + cm->gen)
                                      : (double)(cm->ctx + cm->gen);
}

/* Bytes layer l reads in one decode step of a micro-batch. */
static double layer_read(const pipe_cost_model *cm, int l) {
    return (double)cm->weight_bytes[l] + layer_rows(cm, l) * (double)cm->step_batch * (double)kv_row_bytes(cm);
}

/* Layer l's cost per step: measured seconds when the model has them, else bytes read. */
static double layer_cost(const pipe_cost_model *cm, int l) {
    if (!cm->matmul_s) return layer_read(cm, l);
    return cm->matmul_s[l] + layer_rows(cm, l) * (double)cm->step_batch * cm->row_s;
}

static double head_cost(const pipe_cost_model *cm) {
    return cm->matmul_s ? cm->head_s : (double)cm->head_bytes;
}

static double stage_cost(const pipe_cost_model *cm, const double *prefix, int a, int b) {
    double c = prefix[b] - prefix[a];
    if (b == cm->n_layers) c += head_cost(cm);
    return c;
}

/* Whether a boundary before layer b carries no index set. */
static bool boundary_free(const pipe_cost_model *cm, int b) {
    int g;
    return planner_boundary_groups(cm->n_layers, cm->role, cm->group, b, &g, 1) == 0;
}

typedef struct dp_cell {
    double worst, sumsq;
    int from; /* -1: unreachable */
} dp_cell;

static bool better(double w1, double s1, double w2, double s2) {
    double tol = 1e-9 * fmax(fabs(w1), fabs(w2));
    if (w1 < w2 - tol) return true;
    if (w1 > w2 + tol) return false;
    return s1 < s2 - 1e-9 * fmax(fabs(s1), fabs(s2));
}

/* The best split into P stages with internal boundaries where ok[b]; false when none exists. */
static bool split(const pipe_cost_model *cm, const double *prefix, const bool *ok, int P,
                  int *first, double *worst) {
    const int L = cm->n_layers;
    dp_cell *dp = malloc(sizeof *dp * (size_t)(P + 1) * (size_t)(L + 1));
    OKV_ASSERT(dp);
    for (size_t i = 0; i < (size_t)(P + 1) * (size_t)(L + 1); i++) dp[i].from = -1;
#define CELL(s, j) dp[(size_t)(s) * (size_t)(L + 1) + (size_t)(j)]
    CELL(0, 0) = (dp_cell){0.0, 0.0, 0};
    for (int s = 1; s <= P; s++)
        for (int j = s; j <= L; j++) {
            if (j < L && !ok[j]) continue;
            dp_cell best = {0.0, 0.0, -1};
            for (int i = s - 1; i < j; i++) {
                const dp_cell *prev = &CELL(s - 1, i);
                if (prev->from < 0) continue;
                double c = stage_cost(cm, prefix, i, j);
                double w = fmax(prev->worst, c), sq = prev->sumsq + c * c;
                if (best.from < 0 || better(w, sq, best.worst, best.sumsq))
                    best = (dp_cell){w, sq, i};
            }
            CELL(s, j) = best;
        }
    bool found = CELL(P, L).from >= 0;
    if (found) {
        *worst = CELL(P, L).worst;
        first[P] = L;
        for (int s = P, j = L; s > 0; s--) {
            j = CELL(s, j).from;
            first[s - 1] = j;
        }
    }
#undef CELL
    free(dp);
    return found;
}

void planner_estimate(const pipe_cost_model *cm, pipe_plan *out) {
    const size_t row = kv_row_bytes(cm);
    out->n_layers = cm->n_layers;
    out->aligned = true;
    out->bottleneck = 0.0;
    for (int s = 0; s < out->n_stages; s++) {
        pipe_stage_est *e = &out->est[s];
        memset(e, 0, sizeof *e);
        int a = out->first[s], b = out->first[s + 1];
        for (int l = a; l < b; l++) {
            okv_role r = cm->role[l];
            e->n_role[r]++;
            e->weight_bytes += cm->weight_bytes[l];
            policy_kv_bytes(r, cm->real_offload, (uint64_t)cm->batch, (uint64_t)cm->ctx,
                            (uint64_t)cm->gen, row, &e->kv_bytes, &e->bank_bytes);
            if (r == ROLE_SPARSE && cm->real_offload) {
                e->gather_bytes += (uint64_t)cm->step_batch * (uint64_t)OKV_MIN(cm->k, cm->ctx) * row;
                e->pf_stage_bytes = (uint64_t)(cm->ctx + cm->gen) * row;
            }
            e->read_bytes += (uint64_t)layer_read(cm, l);
            if (cm->matmul_s) e->step_s += layer_cost(cm, l);
        }
        if (s == 0) {
            e->weight_bytes += cm->embed_bytes;
        }
        if (s == out->n_stages - 1) {
            e->weight_bytes += cm->head_bytes - (s == 0 ? cm->head_shared_bytes : 0);
            e->read_bytes += cm->head_bytes;
            if (cm->matmul_s) e->step_s += cm->head_s;
        }
        if (s > 0) {
            int g;
            e->n_cross = planner_boundary_groups(cm->n_layers, cm->role, cm->group, a, &g, 1);
            if (e->n_cross) out->aligned = false;
        }
        out->bottleneck = fmax(out->bottleneck, cm->matmul_s ? e->step_s : (double)e->read_bytes);
    }
}

static int check_ranks(const pipe_cost_model *cm, int n_ranks) {
    if (n_ranks < 1) return okv_fail(OKV_ERR_USAGE, "a pipeline needs at least 1 rank, not %d", n_ranks);
    if (n_ranks > cm->n_layers)
        return okv_fail(OKV_ERR_USAGE, "cannot split the model's %d layers over %d ranks: every "
                        "stage needs at least one layer; use at most %d ranks", cm->n_layers,
                        n_ranks, cm->n_layers);
    if (n_ranks > OKV_MAX_STAGES)
        return okv_fail(OKV_ERR_USAGE, "%d ranks is more than the %d pipeline stages supported",
                        n_ranks, OKV_MAX_STAGES);
    return OKV_OK;
}

int planner_plan(const pipe_cost_model *cm, int n_ranks, double slack, pipe_plan *out) {
    memset(out, 0, sizeof *out);
    int st = check_ranks(cm, n_ranks);
    if (st) return st;
    const int L = cm->n_layers;
    double *prefix = malloc(sizeof(double) * (size_t)(L + 1));
    bool *any = malloc(sizeof(bool) * (size_t)(L + 1));
    bool *free_b = malloc(sizeof(bool) * (size_t)(L + 1));
    OKV_ASSERT(prefix && any && free_b);
    prefix[0] = 0.0;
    for (int l = 0; l < L; l++) prefix[l + 1] = prefix[l] + layer_cost(cm, l);
    /* The embedding reads one row per token: negligible next to a layer, so stage 0 pays none. */
    for (int b = 0; b <= L; b++) {
        any[b] = true;
        free_b[b] = boundary_free(cm, b);
    }
    int first_any[OKV_MAX_STAGES + 1], first_free[OKV_MAX_STAGES + 1];
    double worst_any = 0.0, worst_free = 0.0;
    bool ok_any = split(cm, prefix, any, n_ranks, first_any, &worst_any);
    bool ok_free = split(cm, prefix, free_b, n_ranks, first_free, &worst_free);
    OKV_ASSERT(ok_any);
    bool use_free = ok_free && worst_free <= worst_any * (1.0 + slack);
    out->n_stages = n_ranks;
    memcpy(out->first, use_free ? first_free : first_any, sizeof(int) * (size_t)(n_ranks + 1));
    free(prefix);
    free(any);
    free(free_b);
    planner_estimate(cm, out);
    return OKV_OK;
}

int planner_hand(const pipe_cost_model *cm, const char *spec, int n_ranks, pipe_plan *out) {
    memset(out, 0, sizeof *out);
    int st = check_ranks(cm, n_ranks);
    if (st) return st;
    int n = 0;
    if ((st = planner_parse_stages(spec, cm->n_layers, out->first, OKV_MAX_STAGES, &n))) return st;
    if (n != n_ranks)
        return okv_fail(OKV_ERR_USAGE, "stages '%s' names %d stages, but %d ranks run; give one "
                        "range per rank", spec, n, n_ranks);
    out->n_stages = n;
    out->hand = true;
    planner_estimate(cm, out);
    return OKV_OK;
}

void planner_fmt_bytes(double bytes, char *buf, size_t cap) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) {
        bytes /= 1024.0;
        u++;
    }
    if (u == 0) snprintf(buf, cap, "%.0f B", bytes);
    else snprintf(buf, cap, "%.1f %s", bytes, unit[u]);
}

/* Roles of layers [a, b) run-length coded: "D2 F W S5". */
static void roles_text(const pipe_cost_model *cm, int a, int b, char *buf, size_t cap) {
    static const char letter[] = {'D', 'F', 'W', 'S'};
    size_t n = 0;
    buf[0] = 0;
    for (int l = a; l < b;) {
        int r = l;
        while (r < b && cm->role[r] == cm->role[l]) r++;
        int w = r - l > 1 ? snprintf(buf + n, cap - n, "%s%c%d", n ? " " : "", letter[cm->role[l]], r - l)
                          : snprintf(buf + n, cap - n, "%s%c", n ? " " : "", letter[cm->role[l]]);
        if (w < 0 || (size_t)w >= cap - n) break;
        n += (size_t)w;
        l = r;
    }
}

void planner_print(const pipe_plan *p, const pipe_cost_model *cm, FILE *f) {
    fprintf(f, "stage plan: %d layers over %d rank(s), %s%s\n", p->n_layers, p->n_stages,
            p->hand ? "hand partition" : "planner",
            p->aligned ? ", no index set crosses a boundary"
                       : ", index sets cross some boundaries (marked >)");
    fprintf(f, "  roles: D dense, F filter, W wait, S sparse; bytes for %d sequence(s) of %lld + "
            "%lld tokens, k = %lld, %d per step\n", cm->batch, (long long)cm->ctx,
            (long long)cm->gen, (long long)cm->k, cm->step_batch);
    fprintf(f, "  %-5s %-9s %-28s %11s %11s %11s %12s%s\n", "rank", "layers", "roles", "weights",
            "KV cache", "bank", "read/step", cm->matmul_s ? "   ms/step" : "");
    for (int s = 0; s < p->n_stages; s++) {
        const pipe_stage_est *e = &p->est[s];
        char layers[32], roles[256], w[32], kv[32], bank[32], rd[32];
        snprintf(layers, sizeof layers, "%s%d-%d", e->n_cross ? ">" : "", p->first[s],
                 p->first[s + 1] - 1);
        roles_text(cm, p->first[s], p->first[s + 1], roles, sizeof roles);
        planner_fmt_bytes((double)e->weight_bytes, w, sizeof w);
        planner_fmt_bytes((double)e->kv_bytes, kv, sizeof kv);
        planner_fmt_bytes((double)e->bank_bytes, bank, sizeof bank);
        planner_fmt_bytes((double)e->read_bytes, rd, sizeof rd);
        fprintf(f, "  %-5d %-9s %-28s %11s %11s %11s %12s", s, layers, roles, w, kv, bank, rd);
        if (cm->matmul_s) fprintf(f, " %9.3f", 1e3 * e->step_s);
        fputc('\n', f);
    }
}
