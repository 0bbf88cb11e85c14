/* Process counters and the enrol-to-exit latency histogram. */
#include <math.h>

#include "metrics.h"

nt_metrics_t nt_metrics;

/* Bucket i holds latencies in [2^i, 2^(i+1)) ms; bucket 0 also holds 0. */
void nt_metrics_latency(int64_t ms)
{
    int b = 0;

    if (ms < 0)
        ms = 0;
    while (b < 63 && (ms >> (b + 1)) > 0)
        b++;
    nt_metrics.lat_buckets[b]++;
    nt_metrics.lat_count++;
}

/* Linear interpolation inside the bucket that holds the q-th latency. */
double nt_metrics_latency_quantile(double q)
{
    uint64_t rank, seen = 0;

    if (nt_metrics.lat_count == 0)
        return 0;
    rank = (uint64_t)ceil(q * (double)nt_metrics.lat_count);
    if (rank == 0)
        rank = 1;
    for (int b = 0; b < 64; b++) {
        uint64_t n = nt_metrics.lat_buckets[b];

        if (seen + n >= rank) {
            double lo = b == 0 ? 0 : ldexp(1, b), hi = ldexp(1, b + 1);

            return lo + (hi - lo) * (double)(rank - seen) / (double)n;
        }
        seen += n;
    }
    return 0;
}

void nt_metrics_write(FILE *out)
{
    const nt_metrics_t *m = &nt_metrics;
    uint64_t cum = 0;

#define C(name, field, help)                                                                   \
    fprintf(out, "# HELP nurture_" name " " help "\n# TYPE nurture_" name " counter\n"         \
                 "nurture_" name " %llu\n", (unsigned long long)m->field)
    C("transitions_total", transitions, "Decisions applied that changed a run.");
    C("steps_total", steps, "Plan nodes entered.");
    C("conflicts_total", conflicts, "Decisions refused by a run's state token.");
    C("fenced_total", fenced, "Batches refused by a partition's fencing token.");
    C("events_received_total", events_in, "Events accepted by the API.");
    C("events_applied_total", events_applied, "Events consumed by this worker.");
    C("messages_committed_total", messages_committed, "Messages committed to the outbox.");
    C("messages_dispatched_total", messages_dispatched, "Messages accepted by a channel.");
    C("messages_failed_total", messages_failed, "Messages that failed for good.");
    C("messages_retried_total", messages_retried, "Transient delivery failures retried.");
    C("runs_enrolled_total", runs_enrolled, "Runs enrolled through this process.");
    C("runs_exited_total", runs_exited, "Runs ended by this worker.");
    C("http_requests_total", http_requests, "HTTP requests served.");
    C("http_errors_total", http_errors, "HTTP requests answered with 4xx or 5xx.");
    C("timers_fired_total", timers_fired, "Timers fired.");
#undef C
    fprintf(out, "# HELP nurture_timer_lag_ms_max Worst timer lag (now - due at firing).\n"
                 "# TYPE nurture_timer_lag_ms_max gauge\nnurture_timer_lag_ms_max %lld\n",
            (long long)m->timer_lag_ms_max);
    fprintf(out, "# HELP nurture_enrol_to_exit_ms Real time from enrolment to exit.\n"
                 "# TYPE nurture_enrol_to_exit_ms histogram\n");
    for (int b = 0; b < 40; b++) {
        cum += m->lat_buckets[b];
        fprintf(out, "nurture_enrol_to_exit_ms_bucket{le=\"%.0f\"} %llu\n", ldexp(1, b + 1),
                (unsigned long long)cum);
    }
    fprintf(out, "nurture_enrol_to_exit_ms_bucket{le=\"+Inf\"} %llu\n",
            (unsigned long long)m->lat_count);
    fprintf(out, "nurture_enrol_to_exit_ms_count %llu\n", (unsigned long long)m->lat_count);
}
