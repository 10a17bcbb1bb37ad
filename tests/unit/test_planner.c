/* test_planner.c — the stage planner: hand-partition parsing and its errors, rank-count errors,
 * which boundaries carry an index set, alignment to groups (and when balance overrides it),
 * balance against a brute-force search over every split (bytes and measured seconds), the memory
 * estimate and step time, the cost model builder that start-up and `plan` share (hand-computed
 * bytes of a shape), the transport choice, and nccl's check for two ranks of a node on one GPU. */
#include "common.h"
#include "pipeline/costs.h"
#include "pipeline/planner.h"
#include "pipeline/transport.h"
#include "model/genmodel.h"
#include "policy/policy.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A cost model over a layer plan with every weight `w` bytes and a negligible KV cache. */
typedef struct fixture {
    okv_run_config rc;
    okv_layer_plan lp;
    uint64_t wb[64];
    pipe_cost_model cm;
} fixture;

static void fixture_init(fixture *f, int n_layers, const char *filters, int wait) {
    memset(f, 0, sizeof *f);
    config_defaults(&f->rc);
    if (filters) TEST_OK(config_set(&f->rc, "do_select_layers", filters));
    f->rc.num_wait_load_layers = wait;
    TEST_OK(policy_plan_init(&f->lp, &f->rc, n_layers));
    for (int l = 0; l < n_layers; l++) f->wb[l] = 1000;
    f->cm = (pipe_cost_model){.n_layers = n_layers, .role = f->lp.role, .group = f->lp.group,
                              .weight_bytes = f->wb, .kv_dim = 8, .kv_type = OKV_TYPE_F16,
                              .batch = 1, .step_batch = 1, .ctx = 0, .gen = 0, .k = 0,
                              .real_offload = true};
}

static void fixture_free(fixture *f) { policy_plan_free(&f->lp); }

static bool firsts_are(const pipe_plan *p, const int *want, int n) {
    if (p->n_stages != n) return false;
    for (int i = 0; i <= n; i++)
        if (p->first[i] != want[i]) return false;
    return true;
}

static void test_parse(void) {
    int first[OKV_MAX_STAGES + 1], n = 0;
    TEST_OK(planner_parse_stages("0-7,8-17,18-29", 30, first, OKV_MAX_STAGES, &n));
    TEST_CHECK(n == 3 && first[0] == 0 && first[1] == 8 && first[2] == 18 && first[3] == 30,
               "0-7,8-17,18-29: %d stages from %d, %d, %d to %d", n, first[0], first[1], first[2], first[3]);
    TEST_OK(planner_parse_stages("0-3,4,5-7", 8, first, OKV_MAX_STAGES, &n));
    TEST_CHECK(n == 3 && first[1] == 4 && first[2] == 5 && first[3] == 8, "a single-layer stage");
    TEST_OK(planner_parse_stages("0-3,4-9", -1, first, OKV_MAX_STAGES, &n));
    TEST_CHECK(n == 2 && first[2] == 10, "without a layer count only the syntax is checked");
    struct { const char *spec, *says; } bad[] = {
        {"1-7,8-29", "start at layer 0"},   {"0-7,9-29", "start at layer 8"},
        {"0-7,7-29", "start at layer 8"},   {"0-7,8-17", "covers layers 0-17"},
        {"0-7,", "ends with a comma"},       {"a-b", "expected a layer range"},
        {"0-7;8-29", "unexpected ';'"},      {"0-3,4-2", "end >= its start"},
        {"", "empty"},                       {"0-31", "covers layers 0-31"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        okv_clear_error();
        int st = planner_parse_stages(bad[i].spec, 30, first, OKV_MAX_STAGES, &n);
        TEST_CHECK(st == OKV_ERR_USAGE && strstr(okv_last_error(), bad[i].says),
                   "'%s' must be rejected saying '%s', got %d: %s", bad[i].spec, bad[i].says, st,
                   okv_last_error());
    }
    /* The run-config key takes the syntax, the run checks it against the model. */
    okv_run_config rc;
    config_defaults(&rc);
    TEST_CHECK(config_set(&rc, "stages", "0-3,4-7") == OKV_OK && !strcmp(rc.stages, "0-3,4-7"),
               "config key stages");
    TEST_CHECK(config_set(&rc, "stages", "0-3,5-7") == OKV_ERR_USAGE, "config key stages with a gap");
    TEST_CHECK(config_set(&rc, "transport", "nccl") == OKV_OK && rc.transport == TRANSPORT_NCCL,
               "config key transport");
    TEST_CHECK(config_set(&rc, "transport", "carrier-pigeon") == OKV_ERR_USAGE, "bad transport");
    TEST_CHECK(config_set(&rc, "micro_batches", "-1") == OKV_ERR_USAGE, "micro_batches < 0");
}

static void test_errors(void) {
    fixture f;
    fixture_init(&f, 4, NULL, 1);
    pipe_plan p;
    okv_clear_error();
    TEST_CHECK(planner_plan(&f.cm, 5, PLANNER_ALIGN_SLACK, &p) == OKV_ERR_USAGE &&
                   strstr(okv_last_error(), "4 layers over 5 ranks") &&
                   strstr(okv_last_error(), "at most 4 ranks"),
               "more ranks than layers: %s", okv_last_error());
    TEST_CHECK(planner_plan(&f.cm, 0, PLANNER_ALIGN_SLACK, &p) == OKV_ERR_USAGE, "zero ranks");
    TEST_OK(planner_plan(&f.cm, 4, PLANNER_ALIGN_SLACK, &p));
    int one_each[] = {0, 1, 2, 3, 4};
    TEST_CHECK(firsts_are(&p, one_each, 4), "as many ranks as layers: one layer each");
    okv_clear_error();
    TEST_CHECK(planner_hand(&f.cm, "0-1,2-3", 3, &p) == OKV_ERR_USAGE &&
                   strstr(okv_last_error(), "names 2 stages, but 3 ranks"),
               "hand partition with the wrong stage count: %s", okv_last_error());
    TEST_CHECK(planner_hand(&f.cm, "0-1,2-4", 2, &p) == OKV_ERR_USAGE, "hand partition past the model");
    TEST_OK(planner_hand(&f.cm, "0,1-3", 2, &p));
    TEST_CHECK(p.hand && p.first[1] == 1 && p.est[1].weight_bytes == 3000,
               "hand partition is kept as given (stage 1 holds %llu bytes)",
               (unsigned long long)p.est[1].weight_bytes);
    fixture_free(&f);
}

static void test_boundaries(void) {
    /* Roles D D F W S F W S: groups 0 = {2,3,4}, 1 = {5,6,7}. */
    fixture f;
    fixture_init(&f, 8, "2,5", 1);
    int want[9] = {0, 0, 0, 1, 1, 0, 1, 1, 0}; /* crossing groups at boundary b */
    int want_g[9] = {-1, -1, -1, 0, 0, -1, 1, 1, -1};
    for (int b = 0; b <= 8; b++) {
        int g = -1;
        int n = planner_boundary_groups(8, f.lp.role, f.lp.group, b, &g, 1);
        TEST_CHECK(n == want[b] && (!n || g == want_g[b]), "boundary %d: %d crossing (group %d), "
                   "expected %d (group %d)", b, n, g, want[b], want_g[b]);
    }
    fixture_free(&f);
    /* W = 3 leaves group 0 without sparse layers: nothing crosses inside it. */
    fixture_init(&f, 8, "2,5", 3);
    int g;
    TEST_CHECK(planner_boundary_groups(8, f.lp.role, f.lp.group, 3, &g, 1) == 0,
               "a group of wait layers only carries no index set");
    fixture_free(&f);
}

static void test_alignment(void) {
    fixture f;
    pipe_plan p;
    /* Groups of four layers: the balanced split is also the aligned one. */
    fixture_init(&f, 16, "4,8,12", 1);
    TEST_OK(planner_plan(&f.cm, 4, PLANNER_ALIGN_SLACK, &p));
    int w4[] = {0, 4, 8, 12, 16};
    TEST_CHECK(firsts_are(&p, w4, 4) && p.aligned, "16 layers, filters 4,8,12, 4 ranks: stages at "
               "%d,%d,%d,%d", p.first[0], p.first[1], p.first[2], p.first[3]);
    fixture_free(&f);

    /* One filter at 5 of 12: the aligned cut (5|7) is 17% worse than the best (6|6). */
    fixture_init(&f, 12, "5", 1);
    TEST_OK(planner_plan(&f.cm, 2, 0.10, &p));
    TEST_CHECK(p.first[1] == 6 && !p.aligned && p.est[1].n_cross == 1,
               "slack 0.10: balance wins, cut at %d (aligned %d)", p.first[1], p.aligned);
    TEST_OK(planner_plan(&f.cm, 2, 0.20, &p));
    TEST_CHECK(p.first[1] == 5 && p.aligned, "slack 0.20: the group boundary wins, cut at %d",
               p.first[1]);
    fixture_free(&f);

    /* Cuts among the dense layers before the first filter carry nothing. */
    fixture_init(&f, 8, "6", 1);
    TEST_OK(planner_plan(&f.cm, 2, 0.0, &p));
    TEST_CHECK(p.first[1] == 4 && p.aligned, "a cut inside the dense prefix is free (cut at %d)",
               p.first[1]);
    fixture_free(&f);

    /* More ranks than groups: boundaries must fall inside groups. */
    fixture_init(&f, 8, "2,5", 1);
    TEST_OK(planner_plan(&f.cm, 8, PLANNER_ALIGN_SLACK, &p));
    TEST_CHECK(!p.aligned && p.est[4].n_cross == 1 && p.est[5].n_cross == 0,
               "one layer per rank: stage 4 receives an index set, stage 5 (a filter) none");
    fixture_free(&f);
}

/* The smallest possible largest stage over every split of costs c[0..L) into P stages. */
static double brute(const double *c, int L, int P, int start) {
    if (P == 1) {
        double s = 0;
        for (int l = start; l < L; l++) s += c[l];
        return s;
    }
    double best = INFINITY, s = 0;
    for (int end = start + 1; end <= L - (P - 1); end++) {
        s += c[end - 1];
        best = fmin(best, fmax(s, brute(c, L, P - 1, end)));
    }
    return best;
}

static void test_balance(void) {
    srand(7);
    int worse = 0, cases = 0;
    for (int rep = 0; rep < 300; rep++) {
        int L = 2 + rand() % 11, P = 1 + rand() % (L < 5 ? L : 5);
        fixture f;
        fixture_init(&f, L, NULL, 1);
        double c[64];
        for (int l = 0; l < L; l++) {
            f.wb[l] = 1 + (uint64_t)(rand() % 1000);
            c[l] = (double)f.wb[l];
        }
        f.cm.head_bytes = (uint64_t)(rand() % 500);
        c[L - 1] += (double)f.cm.head_bytes;
        pipe_plan p;
        TEST_OK(planner_plan(&f.cm, P, 0.0, &p));
        double want = brute(c, L, P, 0);
        cases++;
        if (fabs(p.bottleneck - want) > 1e-6 * want) {
            worse++;
            if (worse < 5)
                fprintf(stderr, "L %d P %d: planner's largest stage %.0f, best %.0f\n", L, P,
                        p.bottleneck, want);
        }
        int covered = 0;
        for (int s = 0; s < P; s++) {
            TEST_CHECK(p.first[s + 1] > p.first[s], "stage %d is empty", s);
            covered += p.first[s + 1] - p.first[s];
        }
        TEST_CHECK(covered == L && p.first[0] == 0, "the stages cover the layers");
        fixture_free(&f);
    }
    TEST_CHECK(worse == 0, "planner matched the brute-force optimum in %d of %d cases",
               cases - worse, cases);
    printf("balance: %d random splits, largest stage equal to the brute-force optimum in %d\n",
           cases, cases - worse);
}

/* Measured costs (seconds) replace bytes: the planner balances them, brute force agrees, and a
 * stage's step time is its layers' matmul seconds plus rows x row_s, plus the head's. */
static void test_measured(void) {
    fixture f;
    fixture_init(&f, 8, NULL, 1);
    double ms[8];
    for (int l = 0; l < 8; l++) ms[l] = 1e-3;
    f.cm.head_bytes = 10; /* by bytes the head is nothing ... */
    f.cm.matmul_s = ms;
    f.cm.head_s = 2e-3; /* ... by time it is two layers */
    pipe_plan p;
    TEST_OK(planner_plan(&f.cm, 2, 0.0, &p));
    TEST_CHECK(p.first[1] == 5 && fabs(p.est[0].step_s - 5e-3) < 1e-12 && fabs(p.est[1].step_s - 5e-3) < 1e-12,
               "a head worth two layers moves the cut from 4 to 5 (cut %d, %.4f / %.4f s)",
               p.first[1], p.est[0].step_s, p.est[1].step_s);
    f.cm.matmul_s = NULL;
    TEST_OK(planner_plan(&f.cm, 2, 0.0, &p));
    TEST_CHECK(p.first[1] == 4 && p.est[0].step_s == 0.0, "by bytes the cut is at 4 (%d)", p.first[1]);
    fixture_free(&f);

    fixture_init(&f, 8, "2,5", 1); /* D D F W S F W S */
    f.cm.ctx = 100, f.cm.gen = 10, f.cm.k = 20, f.cm.batch = 3, f.cm.step_batch = 2;
    f.cm.matmul_s = ms, f.cm.head_s = 2e-3, f.cm.row_s = 1e-6;
    TEST_OK(planner_hand(&f.cm, "0-3,4-7", 2, &p));
    const double want0 = 4e-3 + 4 * 110 * 2 * 1e-6, want1 = 4e-3 + 2e-3 + (2 * 110 + 2 * 30) * 2 * 1e-6;
    TEST_CHECK(fabs(p.est[0].step_s - want0) < 1e-12 && fabs(p.est[1].step_s - want1) < 1e-12 &&
               fabs(p.bottleneck - want1) < 1e-12,
               "step seconds: layers, 2 sequences x (110 dense | k + gen sparse) rows, head "
               "(%.6f / %.6f, want %.6f / %.6f)", p.est[0].step_s, p.est[1].step_s, want0, want1);
    fixture_free(&f);

    srand(11);
    int worse = 0;
    for (int rep = 0; rep < 200; rep++) {
        int L = 2 + rand() % 11, P = 1 + rand() % (L < 5 ? L : 5);
        fixture_init(&f, L, NULL, 1);
        double c[64], s[64];
        for (int l = 0; l < L; l++) {
            f.wb[l] = 1 + (uint64_t)(rand() % 1000); /* bytes disagree with the seconds */
            c[l] = s[l] = (1 + rand() % 1000) * 1e-6;
        }
        f.cm.matmul_s = s;
        f.cm.head_s = (rand() % 500) * 1e-6;
        c[L - 1] += f.cm.head_s;
        TEST_OK(planner_plan(&f.cm, P, 0.0, &p));
        double want = brute(c, L, P, 0);
        if (fabs(p.bottleneck - want) > 1e-9 * want) worse++;
        fixture_free(&f);
    }
    TEST_CHECK(worse == 0, "measured costs: the planner missed the brute-force optimum in %d of 200 "
               "cases", worse);
}

static void test_estimate(void) {
    fixture f;
    fixture_init(&f, 8, "2,5", 1); /* D D F W S F W S */
    f.cm.ctx = 100;
    f.cm.gen = 10;
    f.cm.k = 20;
    f.cm.batch = 3;
    f.cm.step_batch = 2;
    f.cm.head_bytes = 500;
    f.cm.embed_bytes = 700;
    pipe_plan p;
    TEST_OK(planner_hand(&f.cm, "0-3,4-7", 2, &p));
    const uint64_t row = 2 * 8 * 2; /* K and V, kv_dim 8, f16 */
    const pipe_stage_est *a = &p.est[0], *b = &p.est[1];
    TEST_CHECK(a->weight_bytes == 4000 + 700 && b->weight_bytes == 4000 + 500,
               "weights with embedding and head: %llu, %llu", (unsigned long long)a->weight_bytes,
               (unsigned long long)b->weight_bytes);
    TEST_CHECK(a->bank_bytes == 0 && b->bank_bytes == 2 * 3 * 100 * row, "bank: sparse layers 4 "
               "and 7 hold 3 x 100 rows each (%llu)", (unsigned long long)b->bank_bytes);
    TEST_CHECK(a->kv_bytes == 4 * 3 * 110 * row && b->kv_bytes == (2 * 3 * 110 + 2 * 3 * 10) * row,
               "KV: full caches for D/F/W, tails for S (%llu, %llu)",
               (unsigned long long)a->kv_bytes, (unsigned long long)b->kv_bytes);
    TEST_CHECK(b->read_bytes == 4000 + 500 + (2 * 110 + 2 * 30) * 2 * row,
               "read per step: weights, head, 2 x 110 dense rows and 2 x (k + gen) sparse rows");
    TEST_CHECK(b->gather_bytes == 2 * 2 * 20 * row, "gather: k rows of 2 sparse layers for 2 "
               "sequences");
    TEST_CHECK(a->pf_stage_bytes == 0 && b->pf_stage_bytes == 110 * row, "prefill staging: one "
               "sparse layer's 110 rows, on the stage with sparse layers only (%llu)",
               (unsigned long long)b->pf_stage_bytes);
    TEST_CHECK(b->n_cross == 1 && !p.aligned && b->n_role[ROLE_SPARSE] == 2 && b->n_role[ROLE_FILTER] == 1,
               "stage 1 receives group 0's index set");
    fixture_free(&f);
}

static void test_gpu_shared(void) {
    /* ranks 0-1 on node 0, ranks 2-4 on node 2; the same bus id on two nodes is two GPUs */
    const int node[5] = {0, 0, 2, 2, 2};
    const char distinct[5][32] = {"0000:01:00.0", "0000:02:00.0", "0000:01:00.0", "0000:02:00.0",
                                  "0000:03:00.0"};
    const char shared[5][32] = {"0000:01:00.0", "0000:02:00.0", "0000:01:00.0", "0000:03:00.0",
                                "0000:01:00.0"};
    const char none[5][32] = {"", "", "", "", ""};
    int a = -1, b = -1;
    TEST_CHECK(!pipe_gpu_shared(node, distinct, 5, &a, &b), "one GPU per rank on each node");
    TEST_CHECK(pipe_gpu_shared(node, shared, 5, &a, &b) && a == 2 && b == 4,
               "ranks 2 and 4 of node 2 share bus 0000:01:00.0 (found %d and %d)", a, b);
    TEST_CHECK(!pipe_gpu_shared(node, none, 5, &a, &b), "ranks without a GPU share nothing");
}

static void test_transport_choice(void) {
    okv_transport_kind k;
    pipe_transport_caps cpu = {0}, gpu_nccl = {.device_compute = true, .gpus = true, .nccl = true,
                                               .cuda = true};
    pipe_transport_caps gpu_aware = {.device_compute = true, .gpus = true, .cuda = true,
                                     .cuda_aware = true};
    pipe_transport_caps host_compute = {.gpus = true, .nccl = true, .cuda = true, .cuda_aware = true};
    TEST_CHECK(pipe_transport_choose(TRANSPORT_AUTO, &cpu, &k) == OKV_OK && k == TRANSPORT_MPI, "auto on CPU");
    TEST_CHECK(pipe_transport_choose(TRANSPORT_AUTO, &host_compute, &k) == OKV_OK && k == TRANSPORT_MPI,
               "auto with hidden states in host memory stays on mpi");
    TEST_CHECK(pipe_transport_choose(TRANSPORT_AUTO, &gpu_nccl, &k) == OKV_OK && k == TRANSPORT_NCCL,
               "auto with device compute and NCCL");
    TEST_CHECK(pipe_transport_choose(TRANSPORT_AUTO, &gpu_aware, &k) == OKV_OK && k == TRANSPORT_MPI_CUDA,
               "auto with device compute and CUDA-aware MPI");
    okv_clear_error();
    TEST_CHECK(pipe_transport_choose(TRANSPORT_NCCL, &cpu, &k) == OKV_ERR_USAGE &&
                   strstr(okv_last_error(), "nccl"), "nccl without NCCL: %s", okv_last_error());
    pipe_transport_caps no_aware = {.gpus = true, .cuda = true};
    okv_clear_error();
    TEST_CHECK(pipe_transport_choose(TRANSPORT_MPI_CUDA, &no_aware, &k) == OKV_ERR_USAGE &&
                   strstr(okv_last_error(), "not CUDA-aware"), "mpi-cuda on a plain MPI: %s",
               okv_last_error());
    TEST_CHECK(pipe_transport_choose(TRANSPORT_MPI_CUDA, &gpu_aware, &k) == OKV_OK &&
                   k == TRANSPORT_MPI_CUDA, "mpi-cuda where it works");
    TEST_CHECK(pipe_transport_choose(TRANSPORT_MPI, &gpu_nccl, &k) == OKV_OK && k == TRANSPORT_MPI,
               "mpi is always available");
}

/* pipe_costs_init on the tiny shape in f16 (dim 64, ffn 128, 4 heads and 2 KV heads of 16, vocab
 * 512, untied): per layer 2 bytes x (64x64 q + 32x64 k + 32x64 v + 64x64 o + 3 x 128x64 FFN) + two
 * f32 norms of 64 = 74240 bytes; embedding 2 x 512 x 64 = 65536; head 65536 + 256 (its norm). */
static void test_costs_builder(void) {
    okv_model m;
    memset(&m, 0, sizeof m);
    TEST_OK(genmodel_shape("tiny", &m.cfg));
    okv_run_config rc;
    config_defaults(&rc);
    TEST_OK(config_set(&rc, "do_select_layers", "1"));
    TEST_OK(config_set(&rc, "num_of_selected_tokens", "0.25"));
    pipe_costs c;
    TEST_OK(pipe_costs_init(&c, &m, OKV_TYPE_F16, &rc, 5, 2, 1000, 16, NULL));
    bool same = true;
    for (int l = 0; l < 4; l++) same &= c.weight_bytes[l] == 74240;
    TEST_CHECK(same && c.cm.embed_bytes == 65536 && c.cm.head_bytes == 65792,
               "tiny f16: layer %llu (want 74240), embed %llu (65536), head %llu (65792)",
               (unsigned long long)c.weight_bytes[0], (unsigned long long)c.cm.embed_bytes,
               (unsigned long long)c.cm.head_bytes);
    TEST_CHECK(c.cm.k == 250 && c.cm.step_batch == 3 && c.cm.kv_dim == 32 && c.cm.dim == 64 &&
               c.cm.role[1] == ROLE_FILTER && !c.cm.matmul_s,
               "k %lld (want 250 of 1000), step batch %d (want 3 of 5 in 2), kv_dim %d, dim %d",
               (long long)c.cm.k, c.cm.step_batch, c.cm.kv_dim, c.cm.dim);
    pipe_costs_free(&c);
    /* A budget larger than the prompt selects the prompt; a prompt past 2^31 tokens keeps a
     * count budget as it is. With rates, a layer costs its bytes at its type's rate. */
    TEST_OK(config_set(&rc, "num_of_selected_tokens", "2048"));
    pipe_rates r = {.s_per_row = 1e-8};
    r.s_per_byte[OKV_TYPE_F16] = 1e-9;
    TEST_OK(pipe_costs_init(&c, &m, OKV_TYPE_F16, &rc, 1, 1, 100, 0, &r));
    TEST_CHECK(c.cm.k == 100 && c.cm.matmul_s && fabs(c.cm.matmul_s[0] - 74240e-9) < 1e-15 &&
               fabs(c.cm.head_s - 65792e-9) < 1e-15 && c.cm.row_s == 1e-8,
               "k %lld (want 100), layer %.3g s (want 7.424e-05), head %.4g s (want 6.579e-05)",
               (long long)c.cm.k, c.cm.matmul_s ? c.cm.matmul_s[0] : -1.0, c.cm.head_s);
    pipe_costs_free(&c);
    TEST_OK(pipe_costs_init(&c, &m, OKV_TYPE_F16, &rc, 1, 1, (int64_t)1 << 33, 0, NULL));
    TEST_CHECK(c.cm.k == 2048, "a 2^33-token prompt keeps k = 2048, not %lld", (long long)c.cm.k);
    pipe_costs_free(&c);
}

int main(void) {
    okv_log_init(0);
    test_parse();
    test_errors();
    test_boundaries();
    test_alignment();
    test_balance();
    test_estimate();
    test_measured();
    test_costs_builder();
    test_transport_choice();
    test_gpu_shared();
    return test_summary();
}
