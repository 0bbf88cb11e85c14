/* The worker: owns partitions through leases with fencing tokens, pops due timers and reads
 * events of its partitions in batches, evaluates runs with the engine and applies decisions
 * with one script call per batch; dispatches the outbox to channel plugins and posts their
 * outcomes back as events. */
#ifndef NT_WORKER_H
#define NT_WORKER_H

#include <jansson.h>

#include "config.h"
#include "modules.h"
#include "plans.h"
#include "redis.h"

struct event_base;
typedef struct nt_worker nt_worker_t;

typedef struct nt_worker_deps {
    struct event_base *base;
    const nt_config_t *cfg;
    nt_redis_t *redis;
    nt_plans_t *plans;
    nt_modules_t *mods;
} nt_worker_deps_t;

nt_worker_t *nt_worker_new(const nt_worker_deps_t *deps, char **errmsg);

/* Stop taking new work, finish what is in flight (every batch applied or abandoned to Redis,
 * where it is picked up again), release leases, then call done. */
void nt_worker_stop(nt_worker_t *w, void (*done)(void *arg), void *arg);
void nt_worker_free(nt_worker_t *w);

/* Something new for partition p (an enrolment, an event): look at it now rather than at the
 * next poll. Cheap; ignored for partitions this worker does not own. */
void nt_worker_wake(nt_worker_t *w, unsigned p);

/* The lead's hash was written outside a batch (the lead API, a plugin through the host's
 * update_lead): this worker's messages of that lead still in a channel or waiting for their
 * outcome to be applied drop the lead snapshot they were committed with, so that the outcome
 * is decided on the lead read from Redis and the run's next messages carry the new attributes.
 * Outcomes already in a fetch keep theirs. Cheap: a walk over the partition's messages. */
void nt_worker_lead_changed(nt_worker_t *w, const char *lead_id);

/* {"worker": id, "partitions_owned": n, "partitions": P, "in_flight": n, ...}; new ref. */
json_t *nt_worker_health(const nt_worker_t *w);

/* Post an event for a lead into its partition's stream (used by plugins through the host API
 * and by dispatch). Asynchronous, fire and forget with a log line on failure. */
nt_rc_t nt_worker_post_event(nt_worker_t *w, const char *lead_id, const char *type,
                             const nt_kv_t *attrs, size_t nattrs);

#endif
