/* Process counters and the enrol-to-exit latency histogram, shown at /metrics (Prometheus
 * text) and read by tools/bench. Single-threaded: plain integers. */
#ifndef NT_METRICS_H
#define NT_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef struct nt_metrics {
    uint64_t transitions;      /* decisions applied that changed a run */
    uint64_t steps;            /* nodes entered */
    uint64_t conflicts;        /* decisions refused by the state token */
    uint64_t fenced;           /* batches refused by the fencing token */
    uint64_t events_in;        /* events accepted by the API */
    uint64_t events_applied;   /* events consumed by workers */
    uint64_t messages_committed;
    uint64_t messages_dispatched;
    uint64_t messages_failed;
    uint64_t messages_retried;
    uint64_t runs_enrolled;
    uint64_t runs_exited;
    uint64_t http_requests;
    uint64_t http_errors;      /* 4xx and 5xx */
    int64_t timer_lag_ms_max;  /* now - due at firing, worst seen */
    uint64_t timer_lag_ms_sum;
    uint64_t timers_fired;
    uint64_t lat_buckets[64];  /* enrol-to-exit real ms, log2 buckets: [2^i, 2^(i+1)) */
    uint64_t lat_count;
} nt_metrics_t;

extern nt_metrics_t nt_metrics;

/* Record an enrol-to-exit latency in real ms. */
void nt_metrics_latency(int64_t ms);

/* Approximate quantile (0..1) of the latency histogram, in ms (upper edge of the bucket,
 * interpolated). 0 when empty. */
double nt_metrics_latency_quantile(double q);

/* Write Prometheus text exposition (counters above plus gauges passed by the caller). */
void nt_metrics_write(FILE *out);

#endif
