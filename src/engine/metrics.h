/* metrics.h — the engine's decode counters, listed once: X(name, type, what). okv_metrics (the
 * engine's, engine.h) and okv_result_metrics (a request's share, io/requests.h) are built from
 * this list, and every copy, difference or sum of them walks it. */
#ifndef OKV_METRICS_H
#define OKV_METRICS_H

#define OKV_METRICS_FIELDS(X) \
    X(steps, uint64_t, "decode steps (one token for every active slot)") \
    X(rows_dense, uint64_t, "KV rows read by dense and wait layers") \
    X(rows_filter, uint64_t, "KV rows read by filter layers") \
    X(rows_sparse, uint64_t, "KV rows read by sparse layers (selected + tail)") \
    X(bytes_kv, uint64_t, "KV bytes read by attention") \
    X(bytes_weights, uint64_t, "weight bytes read (once per step)") \
    X(t_select, double, "seconds in score + top-k") \
    X(t_attn_dense, double, "dense / wait / filter attention") \
    X(t_attn_sparse, double, "sparse attention (and waiting for its gather)") \
    X(t_matmul, double, "projections, MLP, head") \
    X(t_other, double, "norms, rope, kv stores")

#endif
